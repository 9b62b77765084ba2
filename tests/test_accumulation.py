"""Gradient accumulation: k micro-batches equal one big batch, and the inner update runs once per k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import softmax_problem as sp

import gradtx
from gradtx.accumulation import AccumulationState, accumulate_gradients

K = 4
ROUNDS = 5


def batch_loss(params, x, y):
    """The softmax problem's loss on the rows (x, y): a mean over the batch, plus the L2 term."""
    log_probs = jax.nn.log_softmax(x @ params["w"] + params["b"])
    nll = -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))
    return nll + 0.5 * sp.L2 * jnp.sum(params["w"] ** 2)


def test_k_micro_batches_equal_one_big_batch():
    optimizer = gradtx.adamw(0.05, weight_decay=1e-2)
    accumulated = accumulate_gradients(optimizer, K)
    micro_x, micro_y = sp.X.reshape(K, -1, sp.NUM_FEATURES), sp.Y.reshape(K, -1)
    grad = jax.grad(batch_loss)

    @jax.jit
    def big_step(params, state):
        updates, state = optimizer.update(grad(params, sp.X, sp.Y), state, params)
        return gradtx.apply_updates(params, updates), state

    @jax.jit
    def micro_step(params, state, x, y):
        updates, state = accumulated.update(grad(params, x, y), state, params)
        return gradtx.apply_updates(params, updates), state

    big, big_state = sp.initial_params(), optimizer.init(sp.initial_params())
    micro, micro_state = sp.initial_params(), accumulated.init(sp.initial_params())
    for _ in range(ROUNDS):
        big, big_state = big_step(big, big_state)
        start = micro
        for j in range(K):
            micro, micro_state = micro_step(micro, micro_state, micro_x[j], micro_y[j])
            if j < K - 1:  # parameters do not move inside a round, exactly
                assert all(np.array_equal(micro[name], start[name]) for name in micro)
        for name in big:
            np.testing.assert_allclose(micro[name], big[name], rtol=1e-12, atol=1e-15)
    assert int(micro_state.inner_state[0].step_count) == ROUNDS  # Adam's own counter: once per round


def test_inner_update_runs_once_per_round():
    executed = []

    def counting(inner):
        def update(updates, state, params=None):
            jax.debug.callback(lambda: executed.append(1))  # runs only when this branch executes
            return inner.update(updates, state, params)

        return gradtx.GradientTransformation(inner.init, update)

    accumulated = accumulate_gradients(counting(gradtx.sgd(0.1, momentum=0.9)), 3)
    params = sp.initial_params()
    state = accumulated.init(params)
    step = jax.jit(accumulated.update)
    outputs = []
    for _ in range(7):
        updates, state = step(sp.grad(params), state, params)
        outputs.append(updates)
    jax.effects_barrier()
    assert len(executed) == 2  # micro-steps 3 and 6 of 7
    assert isinstance(state, AccumulationState) and int(state.micro_step) == 1
    for index, updates in enumerate(outputs):
        moved = any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))
        assert moved == (index in (2, 5))


def test_one_micro_batch_is_the_inner_transform_and_dtypes():
    assert sp.max_relative_error(
        sp.run_gradtx(accumulate_gradients(gradtx.sgd(0.1, momentum=0.9), 1), 5),
        sp.run_gradtx(gradtx.sgd(0.1, momentum=0.9), 5),
    ) < 1e-14  # the same arithmetic, up to how XLA fuses it
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = accumulate_gradients(gradtx.sgd(0.1), 2, accumulator_dtype=jnp.float32).init(params)
    assert state.gradient_sum["w"].dtype == jnp.float32
    updates, state = accumulate_gradients(gradtx.sgd(0.1), 2, accumulator_dtype=jnp.float32).update(
        {"w": jnp.full(3, 0.1, jnp.bfloat16)}, state, params
    )
    assert updates["w"].dtype == jnp.bfloat16 and state.gradient_sum["w"].dtype == jnp.float32
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_micro_batches"):
            accumulate_gradients(gradtx.sgd(0.1), bad)


# --- MultiSteps, apply_every and the skip rules, side by side with Optax -------------------------------------------

import functools  # noqa: E402

import optax  # noqa: E402

from gradtx.accumulation import MultiSteps, MultiStepsState, apply_every, skip_large_updates, skip_not_finite  # noqa: E402

MINI_STEPS = 100


def run_with_gradients(optimizer, gradient_at, num_steps=MINI_STEPS, has_updated=None):
    """Trajectory, states and has_updated flags; ``gradient_at(t, params)`` may inject NaNs."""
    params = sp.initial_params()
    state = optimizer.init(params)
    step = jax.jit(optimizer.update)
    trajectory, states, flags = [], [], []
    for t in range(num_steps):
        updates, state = step(gradient_at(t, params), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        trajectory.append(params)
        states.append(state)
        if has_updated is not None:
            flags.append(bool(has_updated(state)))
    return trajectory, states, flags


def clean_gradient(t, params):
    del t
    return sp.grad(params)


MULTI_STEPS_CASES = {
    "adam_k4": dict(k=4, inner="adam"),
    "adam_k4_float64_accumulator": dict(k=4, inner="adam", accumulator_dtype=jnp.float64),
    "sgd_momentum_k3_sum": dict(k=3, inner="sgd", use_grad_mean=False),
    "adam_schedule": dict(k="schedule", inner="adam"),
}


@pytest.mark.parametrize("case", sorted(MULTI_STEPS_CASES))
def test_multi_steps_matches_optax(case):
    options = dict(MULTI_STEPS_CASES[case])
    k, inner = options.pop("k"), options.pop("inner")
    make = {"adam": lambda m: m.adam(0.02), "sgd": lambda m: m.sgd(0.1, momentum=0.9)}[inner]
    schedule = (lambda step: 2 + step % 3) if k == "schedule" else k
    ours = MultiSteps(make(gradtx), every_k_schedule=schedule, **options)
    theirs = optax.MultiSteps(make(optax), every_k_schedule=schedule, **options)
    a, a_states, a_flags = run_with_gradients(ours, clean_gradient, has_updated=ours.has_updated)
    b, b_states, b_flags = run_with_gradients(theirs, clean_gradient, has_updated=theirs.has_updated)
    assert sp.max_relative_error(a, b) < 1e-8
    assert a_flags == b_flags and sum(a_flags) >= MINI_STEPS // 4
    assert [int(s.gradient_step) for s in a_states] == [int(s.gradient_step) for s in b_states]
    assert [int(s.mini_step) for s in a_states] == [int(s.mini_step) for s in b_states]
    for name in ("w", "b"):
        np.testing.assert_allclose(a_states[-1].acc_grads[name], b_states[-1].acc_grads[name], rtol=1e-8, atol=1e-12)


def with_nans(t, params):
    """The clean gradient, with a NaN or an inf in one leaf on a few steps."""
    grads = sp.grad(params)
    if t in (5, 17, 18, 40):
        grads = dict(grads, w=grads["w"].at[0, 0].set(jnp.nan))
    if t == 63:
        grads = dict(grads, b=grads["b"].at[1].set(jnp.inf))
    return grads


def rescaled(t, params):
    """The clean gradient times 0.5, 1 or 2, so that its norm moves across the skip threshold."""
    return jax.tree.map(lambda g: (0.5, 1.0, 2.0)[t % 3] * g, sp.grad(params))


@pytest.mark.parametrize(
    "rule, gradient_at",
    [
        ("skip_not_finite", with_nans),
        ("skip_large_updates", rescaled),
    ],
)
def test_multi_steps_skip_rules_match_optax(rule, gradient_at):
    ours_rule, theirs_rule = {
        "skip_not_finite": (skip_not_finite, optax.skip_not_finite),
        "skip_large_updates": (
            functools.partial(skip_large_updates, max_squared_norm=0.3),
            functools.partial(optax.skip_large_updates, max_squared_norm=0.3),
        ),
    }[rule]
    ours = MultiSteps(gradtx.adam(0.02), 4, should_skip_update_fn=ours_rule)
    theirs = optax.MultiSteps(optax.adam(0.02), 4, should_skip_update_fn=theirs_rule)
    a, a_states, a_flags = run_with_gradients(ours, gradient_at, has_updated=ours.has_updated)
    b, b_states, b_flags = run_with_gradients(theirs, gradient_at, has_updated=theirs.has_updated)
    assert all(bool(jnp.all(jnp.isfinite(p["w"]))) for p in a)
    assert sp.max_relative_error(a, b) < 1e-8
    assert a_flags == b_flags
    skipped = [bool(s.skip_state["should_skip"]) for s in a_states]
    assert skipped == [bool(s.skip_state["should_skip"]) for s in b_states]
    assert 0 < sum(skipped) < 3 * MINI_STEPS // 4
    if rule == "skip_not_finite":
        assert [t for t, s in enumerate(skipped) if s] == [5, 17, 18, 40, 63]
        assert [int(s.skip_state["num_not_finite"]) for s in a_states][5] == 1
    else:
        for x, y in zip(a_states, b_states):
            np.testing.assert_allclose(x.skip_state["norm_squared"], y.skip_state["norm_squared"], rtol=1e-10)
    # A skipped mini-step changes nothing else: the counters stand still.
    t = skipped.index(True)
    assert int(a_states[t].mini_step) == int(a_states[t - 1].mini_step)


def test_multi_steps_interface_and_inner_runs_once_per_round():
    executed = []

    def counting(inner):
        def update(updates, state, params=None):
            jax.debug.callback(lambda: executed.append(1))
            return inner.update(updates, state, params)

        return gradtx.GradientTransformation(inner.init, update)

    multi = MultiSteps(counting(gradtx.sgd(0.1, momentum=0.9)), every_k_schedule=3)
    transform = multi.gradient_transformation()
    assert isinstance(transform, gradtx.GradientTransformationExtraArgs)
    assert isinstance(transform, gradtx.GradientTransformation)
    assert multi.inner_opt.init is not None
    params = sp.initial_params()
    state = transform.init(params)
    assert isinstance(state, MultiStepsState)
    assert MultiStepsState._fields == optax.MultiStepsState._fields
    assert state.acc_grads["w"].dtype == jnp.float32  # Optax's default accumulator
    assert not bool(multi.has_updated(state))
    step = jax.jit(transform.update)
    flags = []
    for _ in range(7):
        _, state = step(sp.grad(params), state, params)
        flags.append(bool(multi.has_updated(state)))
    jax.effects_barrier()
    assert len(executed) == 2
    assert flags == [False, False, True, False, False, True, False]
    # Inside a chain, with extra arguments forwarded to an inner transform that takes them.
    chained = gradtx.chain(gradtx.clip(1.0), MultiSteps(gradtx.adam(0.1), 2).gradient_transformation())
    _, chained_state = chained.update(sp.grad(params), chained.init(params), params, value=jnp.asarray(1.0))
    assert int(chained_state[1].mini_step) == 1


def test_apply_every_matches_optax():
    for k in (1, 3):
        ours = gradtx.chain(gradtx.trace(0.5), apply_every(k), gradtx.scale(-0.05))
        theirs = optax.chain(optax.trace(0.5), optax.apply_every(k), optax.scale(-0.05))
        a, b = sp.run_gradtx(ours, MINI_STEPS), sp.run_gradtx(theirs, MINI_STEPS)
        assert sp.max_relative_error(a, b) < 1e-8
    # Parameters move only on every third step, by the sum of three gradients.
    state = apply_every(3).init({"w": jnp.zeros(2)})
    outputs = []
    for t in range(6):
        updates, state = apply_every(3).update({"w": jnp.full(2, float(t))}, state)
        outputs.append(float(updates["w"][0]))
    assert outputs == [0.0, 0.0, 3.0, 0.0, 0.0, 12.0]


def test_multi_steps_bad_input():
    for bad in (0, -2):
        with pytest.raises(ValueError, match="every_k_schedule must be >= 1"):
            MultiSteps(gradtx.sgd(0.1), every_k_schedule=bad)
    for bad in (2.5, True):
        with pytest.raises(TypeError, match="every_k_schedule"):
            MultiSteps(gradtx.sgd(0.1), every_k_schedule=bad)
    for bad in (0, 1.5):
        with pytest.raises((ValueError, TypeError), match="k must be"):
            apply_every(bad)
    params = sp.initial_params()
    with pytest.raises(ValueError, match="every_k_schedule must be >= 1"):
        multi = MultiSteps(gradtx.sgd(0.1), every_k_schedule=lambda step: 0)
        multi.update(sp.grad(params), multi.init(params), params)
    multi = MultiSteps(gradtx.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (jnp.zeros(2, bool), ()))
    with pytest.raises(ValueError, match="scalar bool"):
        multi.update(sp.grad(params), multi.init(params), params)
    multi = MultiSteps(gradtx.sgd(0.1), 2)
    with pytest.raises(ValueError, match=r"\['w'\]"):
        multi.update({"b": params["b"], "w": params["w"][:2]}, multi.init(params), params)
