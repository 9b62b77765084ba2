"""Long runs: saturating step counters, finite bias correction, and 100,000 float32 steps at extreme scales."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.numerics import apply_if_finite

INT32_MAX = int(np.iinfo(np.int32).max)


def _float_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in _float_leaves(tree))


def test_saturating_increment_stops_at_int32_max():
    count = jnp.asarray(INT32_MAX - 2, jnp.int32)
    values = []
    for _ in range(4):
        count = jax.jit(gradtx.saturating_increment)(count)
        values.append(int(count))
    assert values == [INT32_MAX - 1, INT32_MAX, INT32_MAX, INT32_MAX]


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_bias_correction_is_finite_at_the_saturated_count(dtype):
    # The moving average of a constant 0.25 started at zero is 0.25 (1 - decay^t); debiased, 0.25.
    correct = jax.jit(gradtx.bias_correction)
    for decay in [0.0, 0.5, 0.9, 0.999, 0.99999, 0.999999]:
        for count in [1, 2, 1000, INT32_MAX - 1, INT32_MAX]:
            moment = jnp.full((3,), 0.25 * (1 - decay**count), dtype)
            corrected = correct(moment, decay, jnp.asarray(count, jnp.int32))
            assert corrected.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(corrected))), (decay, count)
            # Within the moment's own rounding (float16 subnormals carry few digits).
            rtol = 0.1 if dtype == jnp.float16 else 0.01
            np.testing.assert_allclose(np.asarray(corrected, np.float64), 0.25, rtol=rtol)
            if count >= INT32_MAX - 1:
                # decay^t has underflowed to 0: the correction is exactly 1.
                np.testing.assert_array_equal(np.asarray(corrected), np.asarray(moment))


# Every transform that keeps an int32 step counter, alone or inside a chain.
COUNTED = {
    "adam": lambda: gradtx.adam(1e-3),
    "nadam": lambda: gradtx.nadam(1e-3),
    "adamw_schedule": lambda: gradtx.adamw(lambda t: 1e-3 * (1.5 + jnp.sin(t)), weight_decay=lambda t: 1e-4 * 0.5**t),
    "adamax": lambda: gradtx.adamax(1e-3),
    "amsgrad": lambda: gradtx.amsgrad(1e-3, debias_before_max=False),
    "rmsprop_debiased": lambda: gradtx.rmsprop(1e-3, centered=True, momentum=0.9, bias_correction=True),
    "adadelta": lambda: gradtx.adadelta(),
    "heavy_ball": lambda: gradtx.sgd(0.1, momentum=0.9, velocity_form=True),
    "ema": lambda: gradtx.chain(gradtx.ema(0.99), gradtx.scale(-0.1)),
    "apply_if_finite_adam": lambda: apply_if_finite(gradtx.adam(1e-3), 3),
}


@pytest.mark.parametrize("name", sorted(COUNTED))
def test_counters_saturate_and_updates_stay_finite_at_int32_max(name):
    optimizer = COUNTED[name]()
    params = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3), "b": jnp.ones((), jnp.bfloat16)}

    @jax.jit
    def run_from_near_max(params):
        state = optimizer.init(params)
        # Every int32 leaf of the state is a counter: put them all two steps before the maximum.
        state = jax.tree.map(
            lambda x: jnp.full_like(x, INT32_MAX - 2) if jnp.result_type(x) == jnp.int32 else x, state
        )

        def step(_, carry):
            params, state = carry
            grads = jax.tree.map(lambda w: (jnp.cos(w) + 0.5).astype(w.dtype), params)
            updates, state = optimizer.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, 5, step, (params, state))

    new_params, state = run_from_near_max(params)
    counters = [x for x in jax.tree.leaves(state) if jnp.result_type(x) == jnp.int32]
    if name != "apply_if_finite_adam":
        assert counters and all(int(c) == INT32_MAX for c in counters)
    else:
        # notfinite_count was reset by the finite steps; the inner counters saturated.
        assert sorted(int(c) for c in counters)[-2:] == [INT32_MAX, INT32_MAX]
    assert _all_finite((new_params, state))
    assert bool(jnp.all(new_params["w"] != params["w"]))


def test_adam_at_int32_max_steps_without_bias_correction():
    # At t = int32 max, 1 - beta^t = 1: the update is exactly m / (sqrt(v) + eps).
    optimizer = gradtx.scale_by_adam()
    params = jnp.ones(3, jnp.float32)
    state = optimizer.init(params)._replace(step_count=jnp.asarray(INT32_MAX, jnp.int32))
    grads = jnp.array([1.0, -2.0, 0.0], jnp.float32)
    updates, state = jax.jit(optimizer.update)(grads, state)
    m, v = 0.1 * grads, 0.001 * grads**2
    np.testing.assert_allclose(updates, m / (jnp.sqrt(v) + 1e-8), rtol=1e-6)
    assert int(state.step_count) == INT32_MAX


LONG_RUN_OPTIMIZERS = {
    "adam": lambda: gradtx.adam(1e-3),
    "adagrad": lambda: gradtx.adagrad(1e-2),
    "rmsprop": lambda: gradtx.rmsprop(1e-3),
    "adadelta": lambda: gradtx.adadelta(),
}
LONG_RUN_STEPS = 100_000
SIGNS = jnp.array([1.0, -1.0, 1.0, -1.0], jnp.float32)


def _long_run(optimizer, magnitude):
    # Half the entries of w get +magnitude, half -magnitude; b gets +magnitude. float32 throughout.
    params = {"w": jnp.zeros(4, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    grads = {"w": magnitude * SIGNS, "b": jnp.asarray(magnitude, jnp.float32)}

    @jax.jit
    def run(params):
        def step(_, carry):
            params, state = carry
            updates, state = optimizer.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, LONG_RUN_STEPS, step, (params, optimizer.init(params)))

    return grads, run(params)


@pytest.mark.parametrize("magnitude", [1e-30, 1e30], ids=["tiny", "huge"])
@pytest.mark.parametrize("name", sorted(LONG_RUN_OPTIMIZERS))
def test_hundred_thousand_float32_steps_at_extreme_gradient_scales(name, magnitude):
    grads, (params, state) = _long_run(LONG_RUN_OPTIMIZERS[name](), np.float32(magnitude))
    assert all(x.dtype == jnp.float32 for x in _float_leaves((params, state)))
    assert _all_finite(params), params
    assert _all_finite(state), state
    # Every method still moves each weight downhill, however small or large the gradient.
    for w, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(np.sign(np.asarray(w)), -np.sign(np.asarray(g)))


def test_adam_recovers_after_a_burst_of_huge_gradients():
    # 1e30 gradients for 100 steps, then ordinary ones: were g^2 to overflow, nu would be inf for
    # good and Adam would never move again; here nu decays (b2 = 0.9 makes that quick) and Adam
    # ends near the minimum of (w - 3)^2 / 2.
    optimizer = gradtx.adam(0.05, b2=0.9)
    params = jnp.zeros((), jnp.float32)

    @jax.jit
    def run(params):
        def step(index, carry):
            params, state = carry
            grads = jnp.where(index < 100, jnp.float32(1e30), params - 3.0)
            updates, state = optimizer.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, 3000, step, (params, optimizer.init(params)))

    params, state = run(params)
    assert _all_finite(state)
    assert abs(float(params) - 3.0) < 0.1
