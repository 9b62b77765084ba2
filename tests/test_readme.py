"""The README's example runs as written and trains."""

import pathlib
import re

import jax.numpy as jnp

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
