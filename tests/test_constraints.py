"""keep_params_nonnegative, centralize and normalize_by_update_norm against Optax in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_problem import initial_params, max_relative_error, run_gradtx

import gradtx

STEPS = 150


def random_tree(seed, shapes=((3, 4), (4,), (), (2, 3, 5))):
    rng = np.random.default_rng(seed)
    return {f"leaf{i}": jnp.asarray(rng.normal(size=shape)) for i, shape in enumerate(shapes)}


CASES = {
    "centralize_sgd": (
        lambda: gradtx.chain(gradtx.centralize(), gradtx.sgd(0.3)),
        lambda: optax.chain(optax.centralize(), optax.sgd(0.3)),
    ),
    "normalize_by_update_norm": (
        lambda: gradtx.chain(gradtx.normalize_by_update_norm(scale_factor=-0.05)),
        lambda: optax.chain(optax.normalize_by_update_norm(scale_factor=-0.05)),
    ),
    "normalize_then_adam": (
        lambda: gradtx.chain(gradtx.normalize_by_update_norm(2.0, eps=1e-3), gradtx.adam(0.01)),
        lambda: optax.chain(optax.normalize_by_update_norm(2.0, eps=1e-3), optax.adam(0.01)),
    ),
    "sgd_then_keep_nonnegative": (
        lambda: gradtx.chain(gradtx.sgd(0.5), gradtx.keep_params_nonnegative()),
        lambda: optax.chain(optax.sgd(0.5), optax.keep_params_nonnegative()),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_over_150_steps(name):
    make_gradtx, make_optax = CASES[name]
    start = initial_params()
    if "nonnegative" in name:
        start = jax.tree.map(jnp.abs, start)
    ours = run_gradtx(make_gradtx(), STEPS, start)
    theirs = run_gradtx(make_optax(), STEPS, start)
    assert max_relative_error(ours, theirs) < 1e-8
    if "nonnegative" in name:
        assert all(bool(jnp.all(leaf >= 0)) for step in ours for leaf in jax.tree.leaves(step))
        # The constraint is active: some parameter sits exactly at zero.
        assert any(bool(jnp.any(leaf == 0)) for leaf in jax.tree.leaves(ours[-1]))


@pytest.mark.parametrize("seed", range(2))
def test_single_updates_match_optax_on_random_trees(seed):
    grads, params = random_tree(seed), jax.tree.map(jnp.abs, random_tree(seed + 100))
    pairs = [
        (gradtx.centralize(), optax.centralize()),
        (gradtx.normalize_by_update_norm(), optax.normalize_by_update_norm()),
        (gradtx.keep_params_nonnegative(), optax.keep_params_nonnegative()),
    ]
    for ours, theirs in pairs:
        got, _ = ours.update(grads, ours.init(params), params)
        want, _ = theirs.update(grads, theirs.init(params), params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_centralize_rule():
    g = jnp.arange(24.0).reshape(2, 3, 4) ** 2
    out, _ = gradtx.centralize().update({"w": g, "b": jnp.arange(3.0), "s": jnp.asarray(2.0)}, gradtx.EmptyState())
    np.testing.assert_allclose(jnp.mean(out["w"], axis=(1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(out["w"] - g, -jnp.mean(g, axis=(1, 2), keepdims=True) * jnp.ones_like(g))
    assert jnp.array_equal(out["b"], jnp.arange(3.0)) and out["s"] == 2.0


def test_normalize_gives_a_step_of_length_scale_factor_and_keeps_dtypes():
    tree = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.full((2,), 4.0, jnp.float32)}
    out, _ = gradtx.normalize_by_update_norm(scale_factor=3.0, eps=0.0).update(tree, gradtx.EmptyState())
    assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
    np.testing.assert_allclose(float(gradtx.global_norm(out)), 3.0, rtol=1e-2)


def test_keep_params_nonnegative_moves_negative_params_to_zero():
    params = {"w": jnp.array([1.0, 0.5, -2.0, 0.0])}
    updates = {"w": jnp.array([-2.0, 0.1, 0.5, -0.0])}
    out, _ = gradtx.keep_params_nonnegative().update(updates, gradtx.EmptyState(), params)
    new = gradtx.apply_updates(params, out)
    np.testing.assert_array_equal(new["w"], [0.0, 0.6, 0.0, 0.0])


def test_errors():
    with pytest.raises(ValueError, match="needs the parameters"):
        gradtx.keep_params_nonnegative().update({"w": jnp.ones(2)}, gradtx.EmptyState())
    with pytest.raises(ValueError, match=r"\['w'\]"):
        gradtx.keep_params_nonnegative().update({"w": jnp.ones(2)}, gradtx.EmptyState(), {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="eps"):
        gradtx.normalize_by_update_norm(eps=-1.0)
