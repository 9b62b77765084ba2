"""DP-SGD: the same key gives Optax's noise; without noise it is clipped averaged SGD exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from softmax_problem import L2, X, Y, initial_params

import gradtx
from gradtx import contrib

STEPS = 100


def _example_loss(params, x, y):
    log_probs = jax.nn.log_softmax(x @ params["w"] + params["b"])
    return -log_probs[y] + 0.5 * L2 * jnp.sum(params["w"] ** 2)


per_example_grads = jax.jit(jax.vmap(jax.grad(_example_loss), in_axes=(None, 0, 0)))


def _run(optimizer, num_steps=STEPS):
    params = initial_params()
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(per_example_grads(params, X, Y), state, params)
        return gradtx.apply_updates(params, updates), state

    trajectory = []
    for _ in range(num_steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def _gap(a, b):
    return max(
        max(float(jnp.max(jnp.abs(x[k] - y[k]))) / float(jnp.max(jnp.abs(y[k]))) for k in y) for x, y in zip(a, b)
    )


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": 0.9}, {"momentum": 0.8, "nesterov": True}],
)
def test_dpsgd_same_seed_same_trajectory_as_optax(kwargs):
    ours = _run(contrib.dpsgd(0.5, l2_norm_clip=2.5, noise_multiplier=1.1, seed=3, **kwargs))
    with pytest.warns(DeprecationWarning):
        theirs_tx = optax.contrib.dpsgd(0.5, l2_norm_clip=2.5, noise_multiplier=1.1, seed=3, **kwargs)
    theirs = _run(theirs_tx)
    assert _gap(ours, theirs) < 1e-10


def test_aggregate_same_key_same_noise():
    grads = per_example_grads(initial_params(), X, Y)
    key = jax.random.key(7)
    ours = contrib.differentially_private_aggregate(1.0, 0.7, key)
    theirs = optax.contrib.differentially_private_aggregate(1.0, 0.7, key)
    ours_state, theirs_state = ours.init(None), theirs.init(None)
    ours_update, theirs_update = jax.jit(ours.update), jax.jit(theirs.update)
    for _ in range(3):
        a, ours_state = ours_update(grads, ours_state)
        b, theirs_state = theirs_update(grads, theirs_state)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15)


def test_without_noise_is_clipped_mean_exactly():
    """noise_multiplier = 0: the mean of per-example gradients clipped to norm C (Abadi et al., Alg. 1)."""
    grads = per_example_grads(initial_params(), X, Y)
    clip = 2.6
    updates, _ = contrib.differentially_private_aggregate(clip, 0.0, 0).update(grads, DPState(jax.random.key(0)))
    norms = np.sqrt(sum(np.sum(np.asarray(g).reshape(len(Y), -1) ** 2, axis=1) for g in grads.values()))
    assert np.any(norms > clip) and np.any(norms < clip)  # both branches of the clipping
    for k, g in grads.items():
        g = np.asarray(g)
        expected = np.mean(g * np.minimum(1.0, clip / norms).reshape((-1,) + (1,) * (g.ndim - 1)), axis=0)
        np.testing.assert_allclose(updates[k], expected, rtol=1e-12, atol=1e-15)


DPState = contrib.DifferentiallyPrivateAggregateState


def test_noise_statistics():
    """With zero gradients the output is N(0, (sigma C / B)^2) per coordinate, independent across steps."""
    batch, clip, sigma = 8, 2.0, 1.5
    zeros = {"w": jnp.zeros((batch, 50, 40)), "b": jnp.zeros((batch, 40))}
    tx = contrib.differentially_private_aggregate(clip, sigma, jax.random.key(1))
    update = jax.jit(tx.update)
    first, state = update(zeros, tx.init(None))
    second, _ = update(zeros, state)
    samples = np.concatenate([np.ravel(first["w"]), np.ravel(first["b"])])
    std = sigma * clip / batch
    assert abs(samples.mean()) < 4 * std / np.sqrt(samples.size)
    assert abs(samples.std() / std - 1) < 0.05
    assert abs(np.corrcoef(np.ravel(first["w"]), np.ravel(second["w"]))[0, 1]) < 0.05


def test_key_forms_and_errors():
    grads = per_example_grads(initial_params(), X, Y)
    a, _ = contrib.differentially_private_aggregate(1.0, 1.0, 5).update(grads, DPState(jax.random.key(5)))
    tx = contrib.differentially_private_aggregate(1.0, 1.0, seed=5)
    b, _ = tx.update(grads, tx.init(None))
    legacy = contrib.differentially_private_aggregate(1.0, 1.0, jax.random.PRNGKey(5))
    c, _ = legacy.update(grads, legacy.init(None))
    np.testing.assert_array_equal(a["w"], b["w"])
    np.testing.assert_array_equal(a["w"], c["w"])
    with pytest.warns(UserWarning, match="no key"):
        contrib.differentially_private_aggregate(1.0, 1.0)
    with pytest.raises(ValueError, match="only one of key and seed"):
        contrib.differentially_private_aggregate(1.0, 1.0, 1, seed=2)
    with pytest.raises(ValueError, match="l2_norm_clip"):
        contrib.differentially_private_aggregate(-1.0, 1.0, 0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        contrib.dpsgd(0.1, 1.0, -1.0, seed=0)
