"""The README's example runs as written and trains."""

import pathlib
import re

import jax
import jax.numpy as jnp

import gradtx

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_example_runs_and_descends():
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## Example\s+```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    x = jnp.linspace(-1, 1, 24).reshape(8, 3)
    y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3
    params, state = namespace["params"], namespace["state"]
    first = float(namespace["loss"](params, x, y))
    for _ in range(300):
        params, state = namespace["step"](params, state, x, y)
    assert float(namespace["loss"](params, x, y)) < 0.05 * first


def test_readme_fused_example_matches_adam():
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## Performance.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    model = {"w": jnp.zeros((512, 512)), "b": jnp.zeros(512)}
    x, y = jnp.ones((8, 512)), jnp.zeros((8, 512))
    optimizer = gradtx.adam(1e-3)
    state = optimizer.init(model)
    for _ in range(3):
        grads = jax.grad(namespace["loss_fn"])(model, x, y)
        updates, state = optimizer.update(grads, state, model)
        model = gradtx.apply_updates(model, updates)
    for name in ("w", "b"):
        assert jnp.allclose(namespace["model"][name], model[name], rtol=1e-6, atol=1e-9)


def test_readme_results_are_between_the_benchmark_markers():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from run_all import BEGIN, END, replace_between_markers
    finally:
        sys.path.pop(0)
    text = (ROOT / "README.md").read_text()
    assert "python benchmarks/run_all.py" in text
    replaced = replace_between_markers(text, "| new | table |")
    assert replaced.count(BEGIN) == 1 and replaced.count(END) == 1
    assert "| new | table |" in replaced and replaced.split(END)[1] == text.split(END)[1]
