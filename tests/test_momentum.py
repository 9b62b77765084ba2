"""The lectures' two momentum forms, Nesterov's two forms, moving averages and bias correction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

# An ill-conditioned quadratic f(w) = 1/2 w^T A w - b^T w.
A = jnp.diag(jnp.array([1.0, 10.0, 50.0], dtype=jnp.float64))
B = jnp.array([1.0, -2.0, 0.5], dtype=jnp.float64)
quadratic_grad = lambda w: A @ w - B
W0 = jnp.array([3.0, -1.0, 2.0], dtype=jnp.float64)


def run(optimizer, steps, grad_fn=quadratic_grad, w=W0):
    state = optimizer.init(w)
    out = []
    for _ in range(steps):
        updates, state = optimizer.update(grad_fn(w), state, w)
        w = gradtx.apply_updates(w, updates)
        out.append(w)
    return jnp.stack(out)


def test_forms_agree_for_constant_learning_rate():
    accumulate = run(gradtx.sgd(0.02, momentum=0.9), 60)
    velocity = run(gradtx.sgd(0.02, momentum=0.9, velocity_form=True), 60)
    np.testing.assert_allclose(velocity, accumulate, rtol=1e-12, atol=1e-14)


def test_forms_differ_under_a_schedule_and_each_matches_its_formula():
    lr = lambda t: 0.02 * 0.5 ** (t // 10)  # halve every 10 steps
    mu, steps = 0.9, 40
    accumulate = run(gradtx.sgd(lr, momentum=mu), steps)
    velocity = run(gradtx.sgd(lr, momentum=mu, velocity_form=True), steps)

    # Accumulate-then-scale: b <- g + mu b; w <- w - lr_t b.
    w, b, expected_accumulate = W0, jnp.zeros(3), []
    for t in range(steps):
        b = quadratic_grad(w) + mu * b
        w = w - lr(t) * b
        expected_accumulate.append(w)
    # Velocity: v <- mu v - lr_t g; w <- w + v.
    w, v, expected_velocity = W0, jnp.zeros(3), []
    for t in range(steps):
        v = mu * v - lr(t) * quadratic_grad(w)
        w = w + v
        expected_velocity.append(w)

    np.testing.assert_allclose(accumulate, jnp.stack(expected_accumulate), rtol=1e-12)
    np.testing.assert_allclose(velocity, jnp.stack(expected_velocity), rtol=1e-12)
    # Same for the first 10 steps (constant rate), different once the rate has changed.
    np.testing.assert_allclose(accumulate[:10], velocity[:10], rtol=1e-12)
    assert float(jnp.max(jnp.abs(accumulate[15:] - velocity[15:]))) > 1e-3


def test_nesterov_lookahead_form_equals_reformulated_form_after_change_of_variables():
    lr, mu, steps = 0.015, 0.9, 80
    # Lecture form: gradient at the look-ahead point w + mu v, then v <- mu v - lr g, w <- w + v.
    optimizer = gradtx.heavy_ball(lr, mu)
    w = W0
    state = optimizer.init(w)
    lookahead_iterates = []
    for _ in range(steps):
        g = quadratic_grad(gradtx.nesterov_lookahead(w, state, mu))
        updates, state = optimizer.update(g, state)
        w = gradtx.apply_updates(w, updates)
        lookahead_iterates.append(gradtx.nesterov_lookahead(w, state, mu))  # w~ = w + mu v
    reformulated = run(gradtx.sgd(lr, momentum=mu, nesterov=True), steps)
    reformulated_velocity = run(gradtx.sgd(lr, momentum=mu, nesterov=True, velocity_form=True), steps)
    np.testing.assert_allclose(jnp.stack(lookahead_iterates), reformulated, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(reformulated_velocity, reformulated, rtol=1e-11, atol=1e-13)
    # And Nesterov is not heavy ball.
    assert float(jnp.max(jnp.abs(run(gradtx.sgd(lr, momentum=mu), steps) - reformulated))) > 1e-3


def test_ema_debiased_equals_formula():
    grads = [jnp.asarray(x, jnp.float64) for x in [1.0, 3.0, -2.0, 0.5]]
    optimizer = gradtx.ema(0.8)
    state = optimizer.init(grads[0])
    m = 0.0
    for t, g in enumerate(grads, start=1):
        out, state = optimizer.update(g, state)
        m = 0.8 * m + 0.2 * float(g)
        assert float(out) == pytest.approx(m / (1 - 0.8**t), rel=1e-14)
    assert float(state.ema) == pytest.approx(m, rel=1e-14)


def test_bias_correction_formula_and_float32_power():
    moment = {"a": jnp.ones(2, jnp.bfloat16)}
    out = gradtx.bias_correction(moment, 0.999, jnp.asarray(3, jnp.int32))
    assert out["a"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["a"], np.float32), 1 / (1 - 0.999**3), rtol=1e-2)


def test_step_counter_saturates():
    top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
    assert int(gradtx.saturating_increment(top)) == np.iinfo(np.int32).max
    assert int(gradtx.saturating_increment(jnp.asarray(5, jnp.int32))) == 6
    optimizer = gradtx.adam(1e-3)
    params = jnp.ones(3, jnp.float32)
    state = optimizer.init(params)
    state = (state[0]._replace(step_count=top), state[1])
    updates, state = jax.jit(optimizer.update)(params, state)
    assert int(state[0].step_count) == np.iinfo(np.int32).max
    assert bool(jnp.all(jnp.isfinite(updates)))
