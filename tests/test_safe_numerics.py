"""safe_norm, safe_root_mean_squares, safe_increment and global_norm against Optax and float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

NORM_CASES = [
    # (shape, ord, axis, keepdims)
    ((5,), None, None, False),
    ((5,), 1, None, False),
    ((5,), np.inf, None, True),
    ((3, 4), None, None, False),
    ((3, 4), "fro", None, True),
    ((3, 4), None, 1, False),
    ((3, 4), 2, 0, True),
    ((2, 3, 4), None, (1, 2), False),
    ((2, 3, 4), "fro", (0, 2), True),
]


@pytest.mark.parametrize("shape, ord, axis, keepdims", NORM_CASES)
@pytest.mark.parametrize("min_norm", [0.0, 0.5, 100.0])
def test_safe_norm_value_and_gradient_match_optax(shape, ord, axis, keepdims, min_norm):
    rng = np.random.default_rng(0)
    for x in (jnp.asarray(rng.normal(size=shape)), jnp.zeros(shape)):
        ours = lambda v: gradtx.safe_norm(v, min_norm, ord, axis, keepdims)
        theirs = lambda v: optax.safe_norm(v, min_norm, ord, axis, keepdims)
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-14)
        reference = np.maximum(np.linalg.norm(np.asarray(x), ord=ord, axis=axis, keepdims=keepdims), min_norm)
        np.testing.assert_allclose(ours(x), reference, rtol=1e-14)
        grad_ours = jax.grad(lambda v: jnp.sum(ours(v)))(x)
        grad_theirs = jax.grad(lambda v: jnp.sum(theirs(v)))(x)
        assert bool(jnp.all(jnp.isfinite(grad_ours)))
        np.testing.assert_allclose(grad_ours, grad_theirs, rtol=1e-13, atol=1e-15)


def test_safe_norm_gradient_at_zero_is_zero_where_the_naive_one_is_nan():
    x = jnp.zeros(3)
    naive = jax.grad(lambda v: jnp.maximum(jnp.linalg.norm(v), 1e-6))(x)
    assert bool(jnp.all(jnp.isnan(naive)))
    np.testing.assert_array_equal(jax.grad(lambda v: gradtx.safe_norm(v, 1e-6))(x), jnp.zeros(3))
    # Above the bound the gradient is x / ||x||.
    x = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(jax.grad(lambda v: gradtx.safe_norm(v, 1e-6))(x), x / 5.0, rtol=1e-15)


@pytest.mark.parametrize("min_rms", [0.0, 0.3, 10.0])
@pytest.mark.parametrize("shape", [(7,), (3, 4), ()])
def test_safe_root_mean_squares_matches_optax(min_rms, shape):
    rng = np.random.default_rng(1)
    for x in (jnp.asarray(rng.normal(size=shape)), jnp.zeros(shape), jnp.asarray(rng.normal(size=shape) * (1 + 2j))):
        np.testing.assert_allclose(
            gradtx.safe_root_mean_squares(x, min_rms), optax.safe_root_mean_squares(x, min_rms), rtol=1e-14
        )
        np.testing.assert_allclose(
            gradtx.safe_root_mean_squares(x, min_rms),
            max(np.sqrt(np.mean(np.abs(np.asarray(x)) ** 2)), min_rms),
            rtol=1e-14,
        )
        if not jnp.iscomplexobj(x):
            ours = jax.grad(lambda v: gradtx.safe_root_mean_squares(v, min_rms))(x)
            theirs = jax.grad(lambda v: optax.safe_root_mean_squares(v, min_rms))(x)
            assert bool(jnp.all(jnp.isfinite(ours)))
            np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.int32, jnp.int64, jnp.uint8, jnp.float16, jnp.float32, jnp.float64])
def test_safe_increment_saturates_at_the_dtype_maximum(dtype):
    info = jnp.iinfo(dtype) if jnp.issubdtype(dtype, jnp.integer) else jnp.finfo(dtype)
    for value in (0, 5, info.max):
        count = jnp.asarray(value, dtype)
        ours = gradtx.safe_increment(count)
        assert ours.dtype == count.dtype
        assert ours == optax.safe_increment(count)
        assert jax.jit(gradtx.safe_int32_increment)(count) == ours
    assert gradtx.safe_increment(jnp.asarray(info.max, dtype)) == info.max
    assert gradtx.safe_int32_increment is gradtx.safe_increment is gradtx.saturating_increment


def test_safe_increment_rejects_bool():
    with pytest.raises(ValueError, match="bool"):
        gradtx.safe_increment(jnp.asarray(True))


def test_global_norm_of_mixed_dtypes():
    rng = np.random.default_rng(2)
    values = {"f64": rng.normal(size=(4, 3)), "f32": rng.normal(size=(5,)) * 1e3, "bf16": rng.normal(size=(6,)),
              "f16": np.full((300,), 20.0), "c128": rng.normal(size=(2,)) + 1j * rng.normal(size=(2,))}
    dtypes = {"f64": jnp.float64, "f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16, "c128": jnp.complex128}
    tree = {k: jnp.asarray(v, dtypes[k]) for k, v in values.items()}
    exact = np.sqrt(sum(np.sum(np.abs(np.asarray(x, np.complex128)) ** 2) for x in jax.tree.leaves(tree)))
    ours = gradtx.global_norm(tree)
    assert ours.dtype == jnp.float64
    # Each leaf's squares sum in its own dtype, at least float32: float32 rounding is the error.
    np.testing.assert_allclose(ours, exact, rtol=1e-6)
    wide = jax.tree.map(lambda x: x.astype(jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64), tree)
    np.testing.assert_allclose(gradtx.global_norm(wide), exact, rtol=1e-14)
    np.testing.assert_allclose(optax.tree.norm(wide), exact, rtol=1e-14)
    # float16 alone: 300 * 20^2 = 120000 overflows a float16 sum (max 65504); gradtx sums in float32.
    f16 = {"x": tree["f16"]}
    np.testing.assert_allclose(gradtx.global_norm(f16), np.sqrt(120000.0), rtol=1e-6)
    assert not np.isfinite(float(optax.tree.norm(f16)))
    np.testing.assert_allclose(gradtx.global_norm(jax.tree.map(lambda x: x.astype(jnp.float64), tree["f64"])),
                               optax.tree.norm(tree["f64"]), rtol=1e-15)
    assert gradtx.global_norm is gradtx.tree_global_norm


GUARDED = {
    "adam": lambda guard: gradtx.adam(1e-3, overflow_guard=guard),
    "adamw": lambda guard: gradtx.adamw(1e-3, overflow_guard=guard),
    "rmsprop": lambda guard: gradtx.rmsprop(1e-3, overflow_guard=guard),
    "rmsprop_torch": lambda guard: gradtx.rmsprop(1e-3, decay=0.99, eps_in_sqrt=False, overflow_guard=guard),
    "adagrad": lambda guard: gradtx.adagrad(1e-3, overflow_guard=guard),
}


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_overflow_guard_clips_huge_float32_gradients_and_passes_non_finite_ones(name):
    # g = 1e30: g^2 overflows float32. With the guard the state stays finite and the step is the
    # one for g = sqrt(M)/2; without it (Optax's arithmetic) the state holds inf. Ordinary
    # gradients and non-finite ones give the same numbers either way, bit for bit.
    params = {"w": jnp.zeros(6, jnp.float32)}
    huge = {"w": jnp.array([1e30, -1e30, 2.0, -0.5, 0.0, -0.0], jnp.float32)}
    bound = np.float32(np.sqrt(np.finfo(np.float32).max) / 2)
    clipped = {"w": jnp.array([bound, -bound, 2.0, -0.5, 0.0, -0.0], jnp.float32)}
    bad = {"w": jnp.array([np.inf, -np.inf, np.nan, 1.0, -1.0, 0.0], jnp.float32)}
    guarded, unguarded = GUARDED[name](True), GUARDED[name](False)
    step = lambda t, g: jax.jit(t.update)(g, t.init(params), params)  # noqa: E731
    updates, state = step(guarded, huge)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
    for a, b in zip(jax.tree.leaves((updates, state)), jax.tree.leaves(step(unguarded, clipped))):
        np.testing.assert_array_equal(a, b)
    unguarded_state = jax.tree.leaves(step(unguarded, huge)[1])
    if name == "adagrad":  # its running sum saturates at M instead of reaching inf
        assert float(unguarded_state[0][0]) == np.finfo(np.float32).max
    else:
        assert not all(bool(jnp.all(jnp.isfinite(x))) for x in unguarded_state)
    for grads in (clipped, bad):
        ours, theirs = step(guarded, grads), step(unguarded, grads)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            np.testing.assert_array_equal(a, b)
            assert np.array_equal(np.signbit(np.asarray(a)), np.signbit(np.asarray(b)))
    assert not bool(jnp.all(jnp.isfinite(step(guarded, bad)[0]["w"][:3])))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
def test_saturate_is_min_with_the_largest_value_nan_included(dtype):
    from gradtx.tree_utils import saturate

    big = float(jnp.finfo(dtype).max)
    x = jnp.array([np.nan, np.inf, -np.inf, big, -big, 1.5, 0.0, -0.0], dtype)
    ours = np.asarray(jax.jit(saturate)(x).astype(jnp.float64))
    expected = np.minimum(np.asarray(x.astype(jnp.float64)), big)
    np.testing.assert_array_equal(ours, expected)  # NaN at the same place, -inf kept, +inf -> M
    assert np.array_equal(np.signbit(ours), np.signbit(expected))


@pytest.mark.parametrize("overflow_guard", [True, False])
def test_donated_adagrad_step_reads_the_stored_sum_and_copies_nothing(overflow_guard):
    """Step time: XLA must not recompute the new sum from the old one (which forces a copy of the state)."""
    transform = gradtx.adagrad(1e-3, overflow_guard=overflow_guard)
    params = {"w": jax.ShapeDtypeStruct((4096,), jnp.float32)}
    state = jax.eval_shape(transform.init, params)

    def step(params, state, grads):
        updates, state = transform.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    entry = hlo[hlo.index("ENTRY") :]
    assert " copy(" not in entry
    assert sum(" fusion(" in line and "f32[4096]" in line.split("=")[1] for line in entry.splitlines()) == 2
