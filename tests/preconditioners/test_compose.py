"""Shampoo, SOAP and PSGD-Kron compose with the rest of gradtx.

Each preconditioner, built with ``start``-free settings so that it preconditions from the first
steps, is checked inside ``masked`` (the masked-in leaves get exactly the updates of the
preconditioner run on them alone), ``inject_hyperparams`` (a learning rate injected as a
hyperparameter gives the numbers of the fixed one), ``quantized_state`` (its per-parameter moments
are stored in 8 bits while the Kronecker factors, whose shapes are not the parameters', stay in
float32; training still follows the float32 run), a checkpoint (saved after 3 steps and resumed, the
next steps are bit-identical), and ZeRO-1 sharding over 8 CPU devices (in a subprocess: the
sharded state gives the single-device trajectory up to float32 rounding of reordered sums).
K-FAC's compositions are in test_kfac.py (it needs its layer tags).
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from test_distributed import eight_device_results  # noqa: E402
from test_lowbit_guarantees import mlp_data, mlp_loss, mlp_params  # noqa: E402

STEPS = 6

BUILDERS = {
    "shampoo": lambda learning_rate=3e-2: gradtx.shampoo(
        learning_rate, block_size=32, start_preconditioning_step=1, preconditioning_compute_steps=2
    ),
    "soap": lambda learning_rate=3e-2: gradtx.soap(learning_rate, precondition_frequency=2),
    "psgd_kron": lambda learning_rate=3e-2: gradtx.psgd_kron(
        learning_rate, preconditioner_update_probability=1.0, key=0
    ),
}


def fit(transform, params, state=None, steps=STEPS):
    x, y = mlp_data()

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
        updates, state = transform.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    state = transform.init(params) if state is None else state
    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return params, state, losses


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_masked_leaves_get_the_preconditioner_alone(name):
    params = mlp_params()
    mask = {"w1": True, "b1": False, "w2": True}
    grads = jax.grad(mlp_loss)(params, *mlp_data())
    masked = gradtx.masked(BUILDERS[name](), mask)
    updates, _ = jax.jit(masked.update)(grads, masked.init(params), params)
    alone = BUILDERS[name]()
    sub = {"w1": params["w1"], "w2": params["w2"]}
    sub_updates, _ = jax.jit(alone.update)({"w1": grads["w1"], "w2": grads["w2"]}, alone.init(sub), sub)
    np.testing.assert_allclose(updates["w1"], sub_updates["w1"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(updates["w2"], sub_updates["w2"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(updates["b1"], grads["b1"])  # masked out: passed through


@pytest.mark.parametrize("name", list(BUILDERS))
def test_injected_learning_rate_equals_the_fixed_one(name):
    fixed, _, fixed_losses = fit(BUILDERS[name](3e-2), mlp_params())
    injected, state, injected_losses = fit(gradtx.inject_hyperparams(BUILDERS[name])(learning_rate=3e-2), mlp_params())
    np.testing.assert_allclose(injected_losses, fixed_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(injected), jax.tree.leaves(fixed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(3e-2)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_quantized_moments_follow_the_float32_run(name):
    low_bit = gradtx.quantized_state(BUILDERS[name](), bits=8, min_size=256, block_size=64)
    _, state, losses = fit(low_bit, mlp_params(), steps=12)
    _, _, reference = fit(BUILDERS[name](), mlp_params(), steps=12)
    quantized = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, gradtx.QuantizedArray))
        if isinstance(node, gradtx.QuantizedArray)
    ]
    assert quantized, "no per-parameter state leaf was quantized"
    assert losses[-1] < 0.9 * losses[0]
    assert abs(losses[-1] - reference[-1]) < 0.05 * reference[-1]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_checkpoint_resumes_bit_for_bit(name, tmp_path):
    transform = BUILDERS[name]()
    params, state, _ = fit(transform, mlp_params(), steps=3)
    gradtx.save_state(tmp_path / "state.npz", (params, state))
    restored = gradtx.load_state(tmp_path / "state.npz", (params, transform.init(params)))
    straight = fit(transform, params, state, steps=3)
    resumed = fit(transform, *restored, steps=3)
    assert_trees_equal(straight[:2], resumed[:2])


def run_zero1_checks() -> None:
    from jax.sharding import AxisType

    from gradtx.distributed import replicate, shard_batch, zero1

    assert jax.device_count() == 8, jax.devices()
    x, y = mlp_data()

    def relative_difference(a, b):
        return max(
            float(np.max(np.abs(np.asarray(u) - np.asarray(v)) / (1e-3 + np.abs(np.asarray(v)))))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        )

    results = {}
    for name, build in BUILDERS.items():
        transform = build()

        def train(transform, params, state, x, y):
            @jax.jit
            def step(params, state, x, y):
                updates, state = transform.update(jax.grad(mlp_loss)(params, x, y), state, params)
                return gradtx.apply_updates(params, updates), state

            trajectory = []
            for _ in range(STEPS):
                params, state = step(params, state, x, y)
                trajectory.append(params)
            return trajectory

        params = mlp_params()
        reference = train(transform, params, transform.init(params), jnp.asarray(x), jnp.asarray(y))
        # Auto (GSPMD) axes: under Explicit axes the matrix roots' while loops meet carries of
        # different shardings, which these preconditioners do not handle yet.
        mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
        with jax.set_mesh(mesh):
            replicated = replicate(params, mesh)
            sharded = zero1(transform, mesh, "data")
            state = jax.jit(sharded.init)(replicated)
            trained = train(sharded, replicated, state, *shard_batch((x, y), mesh, "data"))
        results[name] = {
            "first_step": relative_difference(trained[0], reference[0]),
            "last_step": relative_difference(trained[-1], reference[-1]),
            "loss_ratio": float(mlp_loss(trained[-1], x, y) / mlp_loss(params, x, y)),
        }
    print("RESULTS " + json.dumps(results), flush=True)


@pytest.fixture(scope="module")
def zero1_results():
    return eight_device_results(__file__, "zero1")


@pytest.mark.parametrize("name", list(BUILDERS))
def test_zero1_sharded_state_trains_like_one_device(zero1_results, name):
    result = zero1_results[name]
    assert result["first_step"] < 1e-5
    assert result["loss_ratio"] < 0.95
    if name != "soap":
        assert result["last_step"] < 1e-3
    # SOAP is left out of the trajectory check: the right factor G^T G of the 16 x 64 weight has
    # rank 16, so its eigenbasis is arbitrary in a 48-dimensional null space, and Adam there divides
    # gradients of order 1e-9 by their own size. The all-reduce of the sharded gradient sums in
    # another order, picks another null-space basis and moves those coordinates by O(lr) from the
    # second step on; replicated parameters with a sharded batch and no zero1 part the same way.


if __name__ == "__main__" and sys.argv[1:2] == ["zero1"]:
    run_zero1_checks()
