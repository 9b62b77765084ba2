"""Optax's small public helpers under their Optax names, side by side with Optax in float64.

``selective_transform``, ``unitwise_clip``, ``scale_by_rss``, ``init_empty_state``, the moment helpers
``update_moment`` / ``update_moment_per_elem_norm`` / ``update_infinity_moment`` and the protocol types.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_problem import initial_params, max_relative_error, run_gradtx

import gradtx


def test_scale_by_rss_matches_optax_for_200_steps():
    for kwargs in [{}, {"initial_accumulator_value": 0.0, "eps": 1e-5}]:
        ours = run_gradtx(gradtx.chain(gradtx.scale_by_rss(**kwargs), gradtx.scale(-0.3)), 200)
        theirs = run_gradtx(optax.chain(optax.scale_by_rss(**kwargs), optax.scale(-0.3)), 200)
        assert max_relative_error(ours, theirs) < 1e-12
    state = gradtx.scale_by_rss().init(initial_params())
    assert isinstance(state, gradtx.ScaleByRssState) and state._fields == optax.ScaleByRssState._fields
    assert list(inspect.signature(gradtx.scale_by_rss).parameters) == list(
        inspect.signature(optax.scale_by_rss).parameters
    )


def test_scale_by_rss_on_complex_and_zero_gradients():
    grads = {"z": jnp.array([1.0 + 2.0j, 0.0, -0.5j]), "r": jnp.zeros(2)}
    params = jax.tree.map(jnp.zeros_like, grads)
    for tx in [gradtx.scale_by_rss(initial_accumulator_value=0.0), optax.scale_by_rss(initial_accumulator_value=0.0)]:
        updates, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["z"], grads["z"] / jnp.sqrt(jnp.abs(grads["z"]) ** 2 + 1e-7), rtol=1e-12)
        np.testing.assert_array_equal(updates["r"], 0.0)  # s = 0: the update is 0, not nan


NESTED_PARAMS = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, "emb": jnp.arange(4.0), "s": jnp.array(2.0)}
MASKS = [
    {"dense": {"w": False, "b": True}, "emb": True, "s": False},
    {"dense": True, "emb": False, "s": False},  # a prefix mask freezes a whole subtree
    True,
    False,
    np.array(True),
]


@pytest.mark.parametrize("mask", MASKS, ids=range(len(MASKS)))
def test_selective_transform_matches_optax_for_100_steps(mask):
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), NESTED_PARAMS) for _ in range(100)]

    def trajectory(lib):
        tx = lib.selective_transform(lib.adam(0.05), freeze_mask=mask)
        params, state = NESTED_PARAMS, tx.init(NESTED_PARAMS)
        step = jax.jit(tx.update)
        for g in grads:
            updates, state = step(g, state, params)
            params = lib.apply_updates(params, updates)
        return params

    ours, theirs = trajectory(gradtx), trajectory(optax)
    for a, b, p, frozen in zip(
        jax.tree.leaves(ours), jax.tree.leaves(theirs), jax.tree.leaves(NESTED_PARAMS), frozen_leaves(mask)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        assert np.array_equal(a, p) == frozen


def frozen_leaves(mask):
    full = jax.tree.map(lambda m, p: jax.tree.map(lambda _: bool(m), p), mask, NESTED_PARAMS)
    return jax.tree.leaves(full)


def test_selective_transform_is_keyword_only_and_checks_structure():
    with pytest.raises(TypeError):
        gradtx.selective_transform(gradtx.sgd(1.0), {"a": True})
    tx = gradtx.selective_transform(gradtx.sgd(1.0), freeze_mask={"a": True})
    params = {"a": jnp.zeros(1), "b": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"the mask has no entry for the leaf at \[.b.\]"):
        tx.update(params, tx.init(params), params)


def test_unitwise_clip_matches_optax_and_adaptive_grad_clip():
    rng = np.random.default_rng(1)
    grad = jnp.asarray(rng.normal(size=(5, 3)))
    g_norm = gradtx.unitwise_norm(grad)
    max_norm = jnp.asarray(rng.uniform(0.5, 3.0, size=(1, 3))) * jnp.ones((5, 3))
    ours = gradtx.unitwise_clip(g_norm, max_norm, grad)
    np.testing.assert_allclose(ours, optax.transforms.unitwise_clip(g_norm, max_norm, grad), rtol=1e-15)
    clipped = g_norm >= max_norm
    assert clipped.any() and (~clipped).any()
    np.testing.assert_allclose(gradtx.unitwise_norm(ours)[clipped], max_norm[clipped], rtol=1e-12)
    np.testing.assert_array_equal(ours[~clipped], grad[~clipped])
    # div_eps guards a zero norm: a zero gradient with max_norm 0 stays zero.
    np.testing.assert_array_equal(gradtx.unitwise_clip(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2)), 0.0)
    # The step adaptive_grad_clip takes, written with it.
    params = jnp.asarray(rng.normal(size=(5, 3)))
    max_norm = 0.4 * jnp.maximum(gradtx.unitwise_norm(params), 1e-3)
    tx = gradtx.adaptive_grad_clip(0.4)
    expected = gradtx.unitwise_clip(g_norm, max_norm, grad)
    np.testing.assert_allclose(tx.update(grad, tx.init(params), params)[0], expected)
    with pytest.raises(ValueError, match="one shape"):
        gradtx.unitwise_clip(jnp.ones(3), jnp.ones(2), jnp.ones(3))


def test_moment_helpers_match_optax():
    rng = np.random.default_rng(2)
    updates = {"a": jnp.asarray(rng.normal(size=(3,))), "b": jnp.asarray(rng.normal(size=(2, 2)))}
    moments = jax.tree.map(lambda u: jnp.abs(u) + 0.5, updates)
    pairs = [
        (gradtx.update_moment(updates, moments, 0.9, 1), optax.update_moment(updates, moments, 0.9, 1)),
        (gradtx.update_moment(updates, moments, 0.99, 2), optax.update_moment(updates, moments, 0.99, 2)),
        (
            gradtx.update_moment_per_elem_norm(updates, moments, 0.9, 2),
            optax.update_moment_per_elem_norm(updates, moments, 0.9, 2),
        ),
        (
            gradtx.update_infinity_moment(updates, moments, 0.9, 1e-8),
            optax.update_infinity_moment(updates, moments, 0.9, 1e-8),
        ),
    ]
    for ours, theirs in pairs:
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-15)


def test_init_empty_state_and_protocol_types():
    assert gradtx.init_empty_state({"w": jnp.ones(2)}) == gradtx.EmptyState()
    tx = gradtx.GradientTransformation(gradtx.init_empty_state, lambda u, s, p=None: (u, s))
    assert tx.update(1.0, tx.init(None)) == (1.0, gradtx.EmptyState())
    for name in ["TransformInitFn", "TransformUpdateFn", "TransformUpdateExtraArgsFn", "MaskOrFn"]:
        assert hasattr(gradtx, name) and name in gradtx.__all__
    assert "extra_args" not in inspect.signature(gradtx.TransformUpdateFn.__call__).parameters
    assert "extra_args" in inspect.signature(gradtx.TransformUpdateExtraArgsFn.__call__).parameters
