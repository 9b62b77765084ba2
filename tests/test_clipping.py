"""clip_by_block_rms and the per-example (DP-SGD) clips against Optax and written-out rules, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_problem import initial_params, max_relative_error, run_gradtx

import gradtx


def per_example_grads(seed, batch=6, shapes=((3, 4), (4,), (2, 2, 3))):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.1, 3.0, size=batch)  # some examples clipped, some not
    return [jnp.asarray(rng.normal(size=(batch, *s)) * scales.reshape(-1, *([1] * len(s)))) for s in shapes]


def test_clip_by_block_rms_matches_optax_over_150_steps():
    ours = run_gradtx(gradtx.chain(gradtx.clip_by_block_rms(0.02), gradtx.sgd(0.5)), 150, initial_params())
    theirs = run_gradtx(optax.chain(optax.clip_by_block_rms(0.02), optax.sgd(0.5)), 150, initial_params())
    assert max_relative_error(ours, theirs) < 1e-8


@pytest.mark.parametrize("threshold", [1e-3, 0.5, 1.0, 10.0])
def test_clip_by_block_rms_rule(threshold):
    rng = np.random.default_rng(0)
    tree = {"w": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.asarray(rng.normal(size=(3,)) * 0.1),
            "z": jnp.zeros(4), "c": jnp.asarray(2.0 + 1.0j) * jnp.ones(2)}
    got, _ = gradtx.clip_by_block_rms(threshold).update(tree, gradtx.EmptyState())
    want, _ = optax.clip_by_block_rms(threshold).update(tree, optax.EmptyState())
    for key, g in tree.items():
        rms = np.sqrt(np.mean(np.abs(np.asarray(g)) ** 2))
        np.testing.assert_allclose(got[key], np.asarray(g) / max(1.0, rms / threshold), rtol=1e-14)
        np.testing.assert_allclose(got[key], want[key], rtol=1e-14)
        assert np.sqrt(np.mean(np.abs(np.asarray(got[key])) ** 2)) <= threshold * (1 + 1e-12) or rms <= threshold


@pytest.mark.parametrize("clip_norm", [0.0, 0.3, 1.25, 4.0, np.inf])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_example_global_norm_clip_matches_optax_and_the_rule(seed, clip_norm):
    grads = per_example_grads(seed)
    total, clipped = gradtx.per_example_global_norm_clip(grads, clip_norm)
    want_total, want_clipped = optax.per_example_global_norm_clip(grads, clip_norm)
    assert int(clipped) == int(want_clipped)
    for a, b in zip(total, want_total):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    # The rule, example by example.
    flat = np.concatenate([np.asarray(g).reshape(g.shape[0], -1) for g in grads], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    factors = np.minimum(1.0, clip_norm / norms)
    np.testing.assert_allclose(np.concatenate([np.ravel(t) for t in total]), factors @ flat, rtol=1e-13, atol=1e-14)
    assert int(clipped) == int(np.sum(norms > clip_norm))


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("clip_norm", [0.0, 0.7, 3.0, np.inf])
def test_per_example_layer_norm_clip_matches_optax_and_the_rule(uniform, clip_norm):
    grads = {"dense": per_example_grads(2)[0], "bias": per_example_grads(2)[1], "conv": per_example_grads(2)[2]}
    total, clipped = gradtx.per_example_layer_norm_clip(grads, clip_norm, uniform)
    want_total, want_clipped = optax.per_example_layer_norm_clip(grads, clip_norm, uniform)
    assert jax.tree.structure(total) == jax.tree.structure(grads) == jax.tree.structure(clipped)
    sizes = {k: np.prod(g.shape[1:]) for k, g in grads.items()}
    for key, g in grads.items():
        np.testing.assert_allclose(total[key], want_total[key], rtol=1e-13, atol=1e-14)
        assert int(clipped[key]) == int(want_clipped[key])
        bound = clip_norm / np.sqrt(3) if uniform else clip_norm * np.sqrt(sizes[key] / sum(sizes.values()))
        flat = np.asarray(g).reshape(g.shape[0], -1)
        factors = np.minimum(1.0, bound / np.linalg.norm(flat, axis=1))
        np.testing.assert_allclose(np.ravel(total[key]), factors @ flat, rtol=1e-13, atol=1e-14)


def test_one_leaf_layer_clip_is_the_global_clip_and_both_jit():
    grads = per_example_grads(3)[:1]
    layer = jax.jit(gradtx.per_example_layer_norm_clip, static_argnums=2)(grads, 1.5, True)
    whole = jax.jit(gradtx.per_example_global_norm_clip)(grads, 1.5)
    np.testing.assert_allclose(layer[0][0], whole[0][0], rtol=1e-14)
    assert int(layer[1][0]) == int(whole[1])


def test_per_example_errors_name_the_leaf():
    good = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"\['b'\].*scalar"):
        gradtx.per_example_global_norm_clip({"a": good, "b": jnp.asarray(1.0)}, 1.0)
    with pytest.raises(ValueError, match=r"\['b'\].*\(5, 3\)"):
        gradtx.per_example_layer_norm_clip({"a": good, "b": jnp.ones((5, 3))}, 1.0)
    with pytest.raises(ValueError, match="l2_norm_clip"):
        gradtx.per_example_global_norm_clip([good], -1.0)
    with pytest.raises(ValueError, match="global_l2_norm_clip"):
        gradtx.per_example_layer_norm_clip([good], -1.0)
    with pytest.raises(ValueError, match="without leaves"):
        gradtx.per_example_global_norm_clip({}, 1.0)
    with pytest.raises(ValueError, match="threshold"):
        gradtx.clip_by_block_rms(0.0)
