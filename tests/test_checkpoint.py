"""Checkpoints: exact round trips, helpful errors, and training resumed in a new process bit for bit.

Run as a script, this file is the worker that resumes training in a fresh process:
``python tests/test_checkpoint.py CHECKPOINT OUTPUT X64``.
"""

import os
import subprocess
import sys

import jax

if __name__ == "__main__":  # the worker matches the parent's float64 setting before any array exists
    jax.config.update("jax_enable_x64", sys.argv[3] == "1")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gradtx  # noqa: E402
from gradtx.checkpoint import load_state, save_state  # noqa: E402
from gradtx.hyperparams import inject_hyperparams  # noqa: E402
from gradtx.schedules import cosine_decay_schedule  # noqa: E402

HALF = 50


def problem():
    """A float32 softmax regression, an optimizer with a rich state, and its jitted step."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 10)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, size=64))
    params = {"w": jnp.asarray(0.1 * rng.normal(size=(10, 4)), jnp.float32), "b": jnp.zeros(4, jnp.bfloat16)}
    optimizer = gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        inject_hyperparams(gradtx.adamw)(
            learning_rate=cosine_decay_schedule(0.05, 2 * HALF), b1=0.9, mu_dtype=jnp.bfloat16, weight_decay=1e-3
        ),
    )

    def loss(params):
        logits = x @ params["w"] + params["b"].astype(jnp.float32)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        return gradtx.apply_updates(params, updates), state

    return params, optimizer, step


def train(params, state, step, num_steps):
    for _ in range(num_steps):
        params, state = step(params, state)
    return params, state


def assert_bitwise_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves_with_path(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for (path, x), y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        assert x.tobytes() == y.tobytes(), f"{jax.tree_util.keystr(path)} differs"


def worker_env():
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python_path = os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": python_path}


def test_resuming_in_a_new_process_is_bit_for_bit(tmp_path):
    params, optimizer, step = problem()
    halfway = train(params, optimizer.init(params), step, HALF)
    save_state(tmp_path / "halfway.npz", halfway)
    x64 = "1" if jax.config.jax_enable_x64 else "0"
    worker = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path / "halfway.npz"), str(tmp_path / "resumed.npz"), x64],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env(),
    )
    straight = train(params, optimizer.init(params), step, 2 * HALF)  # while the worker runs
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr[-3000:]
    resumed = load_state(tmp_path / "resumed.npz", like=straight)
    assert_bitwise_equal(resumed, straight)
    assert int(resumed[1][1].count) == 2 * HALF


def test_round_trip_keeps_every_dtype_and_sharding(tmp_path):
    params = {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(3, 2), "b": jnp.asarray([1.5, -2.25], jnp.bfloat16)}
    optimizer = gradtx.chain(
        gradtx.masked(gradtx.adam(1e-3, mu_dtype=jnp.bfloat16), {"w": True, "b": False}),
        inject_hyperparams(gradtx.sgd)(0.1, momentum=0.9),
    )
    state = optimizer.init(params)
    _, state = jax.jit(optimizer.update)(jax.tree.map(lambda p: p * 0.5, params), state, params)
    tree = {"params": params, "state": state, "key": jax.random.key(7), "int8": jnp.arange(3, dtype=jnp.int8)}
    save_state(tmp_path / "ckpt", tree)
    assert os.listdir(tmp_path) == ["ckpt"]  # written under a temporary name, then renamed
    restored = load_state(tmp_path / "ckpt", like=jax.eval_shape(lambda: tree))
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    assert np.array_equal(jax.random.key_data(restored.pop("key")), jax.random.key_data(tree.pop("key")))
    assert_bitwise_equal(restored, tree)
    assert restored["state"][0].inner_state[0].mu["w"].dtype == jnp.bfloat16
    placed = load_state(tmp_path / "ckpt", like={**tree, "key": jax.random.key(0)})
    assert placed["int8"].sharding == tree["int8"].sharding


def test_mismatches_name_the_leaf(tmp_path):
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    state = gradtx.adam(1e-3).init(params)
    save_state(tmp_path / "adam.npz", state)
    with pytest.raises(ValueError, match="leaves"):
        load_state(tmp_path / "adam.npz", like=gradtx.sgd(0.1, momentum=0.9).init(params))
    with pytest.raises(ValueError, match=r"\['w'\].*\(3, 2\)|\['w'\].*\[3, 2\]"):
        load_state(tmp_path / "adam.npz", like=gradtx.adam(1e-3).init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)}))
    narrower = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    with pytest.raises(ValueError, match="float32"):
        load_state(tmp_path / "adam.npz", like=gradtx.adam(1e-3).init(narrower))
    renamed = {"kernel": params["w"], "b": params["b"]}
    with pytest.raises(ValueError, match="kernel"):
        load_state(tmp_path / "adam.npz", like=gradtx.adam(1e-3).init(renamed))
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not written by gradtx.save_state"):
        load_state(tmp_path / "plain.npz", like=state)


def test_orbax_format(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    params = {"w": jnp.arange(4.0, dtype=jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    state = gradtx.adam(1e-2).init(params)
    _, state = gradtx.adam(1e-2).update(params, state, params)
    save_state(tmp_path / "orbax", state, format="orbax")
    assert_bitwise_equal(load_state(tmp_path / "orbax", like=state, format="orbax"), state)


def flax_train_state_problem():
    """A Flax TrainState with a gradtx optimizer, its jitted step, and a fresh state to load into."""
    train_state = pytest.importorskip("flax.training.train_state")
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)
    y = jnp.asarray(rng.normal(size=32), jnp.float32)
    params = {"w": jnp.asarray(0.1 * rng.normal(size=5), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(cosine_decay_schedule(0.05, 40)))

    def apply_fn(p, x):
        return x @ p["w"] + p["b"]

    def create():
        return train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=tx)

    @jax.jit
    def step(state):
        grads = jax.grad(lambda p: jnp.mean((state.apply_fn(p, x) - y) ** 2))(state.params)
        return state.apply_gradients(grads=grads)

    return create, step


@pytest.mark.parametrize("step_dtype", [None, jnp.int32, jnp.int64])
@pytest.mark.parametrize("fmt", ["npz", "orbax"])
def test_flax_train_state_resumes_from_a_fresh_create_bit_for_bit(tmp_path, fmt, step_dtype):
    if fmt == "orbax":
        pytest.importorskip("orbax.checkpoint")
    create, step = flax_train_state_problem()
    saved = create()
    for _ in range(5):
        saved = step(saved)
    if step_dtype is not None:
        # int32 is what a jitted step produces without jax_enable_x64 (the checkpoint).
        saved = saved.replace(step=jnp.asarray(saved.step, step_dtype))
    save_state(tmp_path / "ckpt", saved, format=fmt)

    fresh = create()  # step is the Python int 0
    assert isinstance(fresh.step, int)
    restored = load_state(tmp_path / "ckpt", fresh, format=fmt)
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    assert_bitwise_equal(restored, saved)
    # A fresh state whose step is a strongly typed int64 array also loads; the step keeps its value.
    typed = fresh.replace(step=jnp.asarray(0, jnp.int64))
    restored_typed = load_state(tmp_path / "ckpt", typed, format=fmt)
    assert int(restored_typed.step) == 5 and restored_typed.step.dtype == jnp.int64
    assert_bitwise_equal(restored_typed.params, saved.params)

    straight, resumed = saved, restored
    for _ in range(5):
        straight, resumed = step(straight), step(resumed)
    assert_bitwise_equal(resumed.params, straight.params)
    assert_bitwise_equal(resumed.opt_state, straight.opt_state)


def test_loosely_typed_like_still_refuses_another_kind(tmp_path):
    save_state(tmp_path / "f.npz", {"step": jnp.asarray(3, jnp.int32), "x": jnp.ones(2, jnp.float32)})
    with pytest.raises(ValueError, match=r"\['step'\].*int32"):
        load_state(tmp_path / "f.npz", {"step": 0.0, "x": jnp.ones(2, jnp.float32)})
    # A strongly typed integer leaf of another width loads only if every value fits exactly.
    save_state(tmp_path / "big.npz", {"step": jnp.asarray(2**40, jnp.int64), "x": jnp.ones(2, jnp.float32)})
    with pytest.raises(ValueError, match=r"\['step'\].*int64"):
        load_state(tmp_path / "big.npz", {"step": jnp.asarray(0, jnp.int32), "x": jnp.ones(2, jnp.float32)})


if __name__ == "__main__":
    checkpoint, output = sys.argv[1], sys.argv[2]
    params, optimizer, step = problem()
    resumed = load_state(checkpoint, like=(params, optimizer.init(params)))
    save_state(output, train(*resumed, step, HALF))
