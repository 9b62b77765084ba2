"""Schedules against Optax, torch.optim.lr_scheduler and values written out by hand."""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from gradtx.schedules import (
    as_schedule,
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    harmonic_decay_schedule,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    step_decay_schedule,
    warmup_cosine_decay_schedule,
)

LAST_STEP = 300  # past every boundary used below
STEPS = np.arange(LAST_STEP + 1)
TORCH_LAST_STEP = 150  # past every torch milestone below


def gradtx_values(schedule, steps=STEPS):
    """Our schedule at each of ``steps``, fed int32 step counts one at a time (as an optimizer does).

    The schedules of the tables below are all evaluated at every step of ``STEPS`` under a single
    ``jit(vmap(...))`` (one compile instead of dozens); any other schedule is called eagerly.
    """
    table = _jitted_table()
    if id(schedule) in table:
        return table[id(schedule)][np.asarray(steps)]
    return np.array([schedule(jnp.int32(t)) for t in steps])


@functools.cache
def _jitted_table():
    schedules = [ours for _, ours, _ in OPTAX_PAIRS] + [ours for _, ours, _ in CLOSED_FORMS]
    schedules += [ours for _, ours, *_ in TORCH_PAIRS]
    evaluate_all = jax.jit(lambda steps: [jax.vmap(schedule)(steps) for schedule in schedules])
    values = evaluate_all(jnp.asarray(STEPS, dtype=jnp.int32))
    return {id(schedule): np.asarray(value) for schedule, value in zip(schedules, values, strict=True)}


def optax_values(schedule, steps=STEPS):
    """Optax's schedule at each step.

    Fed int64 steps: with int32 counts some Optax schedules compute ``count / n`` in float32.
    """
    values = schedule(jnp.asarray(steps, dtype=jnp.int64))
    return np.broadcast_to(np.asarray(values, dtype=np.float64), steps.shape)


class _LearningRateHolder(torch.optim.Optimizer):
    """The one parameter group a torch LR scheduler reads and writes, and nothing else.

    ``Optimizer.__init__`` is skipped on purpose: its first call imports ``torch._dynamo``
    (about 3 s), and a scheduler only touches ``param_groups``, so the rates are those a real
    ``torch.optim.SGD(params, lr=lr)`` would get.
    """

    def __init__(self, lr):  # no super().__init__(): see above
        self.defaults = {"lr": lr}
        self.param_groups = [{"params": [], "lr": lr}]
        self.state = {}

    def step(self, closure=None):
        del closure


def torch_values(make_scheduler, lr, num_steps=TORCH_LAST_STEP):
    """The learning rate torch uses at updates 0..num_steps, one ``scheduler.step()`` per update."""
    optimizer = _LearningRateHolder(lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(num_steps + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(lrs)


def harmonic_as_optax(scale, steps_per_stage, offset, num_stages):
    """``a / (k + b)`` as an Optax piecewise-constant schedule: the jump ``(k-1+b)/(k+b)`` at
    stage ``k`` telescopes to ``b / (k + b)`` times the first value ``a / b``."""
    return optax.piecewise_constant_schedule(
        scale / offset,
        {k * steps_per_stage: (k - 1 + offset) / (k + offset) for k in range(1, num_stages + 1)},
    )


# (id, gradtx schedule, optax schedule)
OPTAX_PAIRS = [
    ("constant", constant_schedule(0.3), optax.constant_schedule(0.3)),
    (
        "piecewise",
        piecewise_constant_schedule(0.5, {90: 0.2, 30: 0.1, 60: 0.5}),
        optax.piecewise_constant_schedule(0.5, {90: 0.2, 30: 0.1, 60: 0.5}),
    ),
    (
        "piecewise_at_zero",
        piecewise_constant_schedule(2.0, {0: 0.5, 1: 3.0, 200: 0.0}),
        optax.piecewise_constant_schedule(2.0, {0: 0.5, 1: 3.0, 200: 0.0}),
    ),
    ("piecewise_none", piecewise_constant_schedule(0.7), optax.piecewise_constant_schedule(0.7)),
    (
        "step_decay",
        step_decay_schedule(0.1, 0.1, 30),
        optax.exponential_decay(0.1, 30, 0.1, staircase=True),
    ),
    (
        "harmonic",
        harmonic_decay_schedule(1.0, 5, 10.0),
        harmonic_as_optax(1.0, 5, 10.0, LAST_STEP // 5),
    ),
    (
        "harmonic_per_step",
        harmonic_decay_schedule(0.5, 1, 2.0),
        harmonic_as_optax(0.5, 1, 2.0, LAST_STEP),
    ),
    ("linear", linear_schedule(1.0, 0.01, 100), optax.linear_schedule(1.0, 0.01, 100)),
    (
        "linear_begin",
        linear_schedule(0.1, 0.001, 50, transition_begin=20),
        optax.linear_schedule(0.1, 0.001, 50, transition_begin=20),
    ),
    ("linear_up", linear_schedule(0.0, 1.0, 7), optax.linear_schedule(0.0, 1.0, 7)),
    ("linear_zero_steps", linear_schedule(0.4, 0.1, 0), optax.linear_schedule(0.4, 0.1, 0)),
    (
        "polynomial",
        polynomial_schedule(1.0, 0.0, 2, 100),
        optax.polynomial_schedule(1.0, 0.0, 2, 100),
    ),
    (
        "polynomial_sqrt_begin",
        polynomial_schedule(0.3, 0.01, 0.5, 120, transition_begin=40),
        optax.polynomial_schedule(0.3, 0.01, 0.5, 120, transition_begin=40),
    ),
    (
        "polynomial_cubic_up",
        polynomial_schedule(0.01, 2.0, 3.0, 64, transition_begin=3),
        optax.polynomial_schedule(0.01, 2.0, 3.0, 64, transition_begin=3),
    ),
    (
        "polynomial_zero_steps",
        polynomial_schedule(0.4, 0.1, 2, 0),
        optax.polynomial_schedule(0.4, 0.1, 2, 0),
    ),
    ("exponential", exponential_decay(1.0, 10, 0.9), optax.exponential_decay(1.0, 10, 0.9)),
    (
        "exponential_staircase_begin",
        exponential_decay(0.5, 25, 0.5, transition_begin=13, staircase=True),
        optax.exponential_decay(0.5, 25, 0.5, transition_begin=13, staircase=True),
    ),
    (
        "exponential_floor",
        exponential_decay(1.0, 7, 0.8, transition_begin=5, end_value=0.05),
        optax.exponential_decay(1.0, 7, 0.8, transition_begin=5, end_value=0.05),
    ),
    (
        "exponential_ceiling",
        exponential_decay(0.01, 10, 1.5, staircase=True, end_value=0.3),
        optax.exponential_decay(0.01, 10, 1.5, staircase=True, end_value=0.3),
    ),
    (
        "exponential_zero_steps",
        exponential_decay(0.2, 0, 0.5),
        optax.exponential_decay(0.2, 0, 0.5),
    ),
    ("cosine", cosine_decay_schedule(1.0, 100), optax.cosine_decay_schedule(1.0, 100)),
    (
        "cosine_alpha_exponent",
        cosine_decay_schedule(0.3, 150, alpha=0.1, exponent=2.0),
        optax.cosine_decay_schedule(0.3, 150, alpha=0.1, exponent=2.0),
    ),
    ("cosine_one_step", cosine_decay_schedule(0.3, 1), optax.cosine_decay_schedule(0.3, 1)),
    (
        "warmup_cosine",
        warmup_cosine_decay_schedule(0.0, 1.0, 10, 110),
        optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110),
    ),
    (
        "warmup_cosine_end_exponent",
        warmup_cosine_decay_schedule(0.01, 0.5, 30, 200, end_value=0.02, exponent=1.5),
        optax.warmup_cosine_decay_schedule(0.01, 0.5, 30, 200, end_value=0.02, exponent=1.5),
    ),
    (
        "warmup_cosine_no_warmup",
        warmup_cosine_decay_schedule(0.0, 0.8, 0, 90, end_value=0.1),
        optax.warmup_cosine_decay_schedule(0.0, 0.8, 0, 90, end_value=0.1),
    ),
    (
        "join",
        join_schedules(
            [linear_schedule(0.0, 1.0, 40), cosine_decay_schedule(1.0, 60, alpha=0.1), 0.05],
            [40, 100],
        ),
        optax.join_schedules(
            [
                optax.linear_schedule(0.0, 1.0, 40),
                optax.cosine_decay_schedule(1.0, 60, alpha=0.1),
                optax.constant_schedule(0.05),
            ],
            [40, 100],
        ),
    ),
    (
        "join_single",
        join_schedules([exponential_decay(1.0, 3, 0.5)], []),
        optax.join_schedules([optax.exponential_decay(1.0, 3, 0.5)], []),
    ),
]

GRADTX_SCHEDULES = [pytest.param(ours, id=name) for name, ours, _ in OPTAX_PAIRS]


@pytest.mark.parametrize("ours, theirs", [pytest.param(ours, theirs, id=name) for name, ours, theirs in OPTAX_PAIRS])
def test_matches_optax(ours, theirs):
    # atol: under jit a schedule that starts at 0 may start at ~1e-17 (see test_jit_eager...).
    np.testing.assert_allclose(gradtx_values(ours), optax_values(theirs), rtol=1e-12, atol=1e-16)


# (id, schedule, {step: value written out by hand})
CLOSED_FORMS = [
    (
        # eta_t = 1 / (floor(t / 5) + 10)
        "harmonic_lectures",
        harmonic_decay_schedule(1.0, 5),
        {
            0: 0.1,
            4: 0.1,
            5: 1 / 11,
            9: 0.09090909090909091,
            10: 0.08333333333333333,
            14: 1 / 12,
            15: 0.07692307692307693,
            49: 0.05263157894736842,
            50: 0.05,
            95: 0.03448275862068966,
        },
    ),
    (
        # eta_t = 2 / (t + 1)
        "harmonic_per_step",
        harmonic_decay_schedule(2.0, 1, offset=1.0),
        {0: 2.0, 1: 1.0, 2: 2 / 3, 3: 0.5, 7: 0.25, 99: 0.02},
    ),
    (
        # eps_t = (1 - t/100) 0.1 + (t/100) 0.001, then 0.001
        "linear_lectures",
        linear_schedule(0.1, 0.001, 100),
        {0: 0.1, 1: 0.09901, 25: 0.07525, 50: 0.0505, 99: 0.00199, 100: 0.001, 101: 0.001, 250: 0.001},
    ),
    (
        "linear_begin",
        linear_schedule(1.0, 0.0, 10, transition_begin=5),
        {0: 1.0, 5: 1.0, 6: 0.9, 10: 0.5, 14: 0.1, 15: 0.0, 40: 0.0},
    ),
    (
        "piecewise",
        piecewise_constant_schedule(0.5, {30: 0.1, 60: 0.5}),
        {0: 0.5, 29: 0.5, 30: 0.05, 59: 0.05, 60: 0.025, 200: 0.025},
    ),
    (
        # divide by 10 every 30 steps
        "step_decay",
        step_decay_schedule(1.0, 0.1, 30),
        {0: 1.0, 29: 1.0, 30: 0.1, 59: 0.1, 60: 0.01, 89: 0.01, 90: 0.001},
    ),
    (
        # (1 - t/10)^2
        "polynomial",
        polynomial_schedule(1.0, 0.0, 2, 10),
        {0: 1.0, 3: 0.49, 5: 0.25, 9: 0.01, 10: 0.0, 11: 0.0},
    ),
    (
        # 2 * 0.5^(t/10)
        "exponential",
        exponential_decay(2.0, 10, 0.5),
        {0: 2.0, 5: math.sqrt(2), 10: 1.0, 15: math.sqrt(2) / 2, 20: 0.5, 30: 0.25},
    ),
    (
        "exponential_staircase_begin",
        exponential_decay(2.0, 10, 0.5, transition_begin=5, staircase=True),
        {0: 2.0, 14: 2.0, 15: 1.0, 24: 1.0, 25: 0.5},
    ),
    (
        "exponential_floor",
        exponential_decay(1.0, 1, 0.5, end_value=0.2),
        {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.2, 10: 0.2},
    ),
    (
        # (1 + cos(pi t / 100)) / 2
        "cosine",
        cosine_decay_schedule(1.0, 100),
        {0: 1.0, 25: 0.5 + math.sqrt(2) / 4, 50: 0.5, 75: 0.5 - math.sqrt(2) / 4, 100: 0.0, 150: 0.0},
    ),
    (
        "cosine_alpha",
        cosine_decay_schedule(2.0, 100, alpha=0.1),
        {0: 2.0, 50: 1.1, 100: 0.2, 101: 0.2, 300: 0.2},
    ),
    (
        "cosine_squared",
        cosine_decay_schedule(1.0, 100, exponent=2.0),
        {0: 1.0, 50: 0.25, 100: 0.0},
    ),
    (
        "warmup_cosine",
        warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1),
        {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.55, 110: 0.1, 300: 0.1},
    ),
    (
        # As in Optax, end_value is ignored when peak_value == 0 (Optax divides by the peak).
        "warmup_cosine_zero_peak",
        warmup_cosine_decay_schedule(0.2, 0.0, 10, 20, end_value=0.5),
        {0: 0.2, 5: 0.1, 10: 0.0, 15: 0.0, 20: 0.0, 30: 0.0},
    ),
    (
        "join",
        join_schedules([0.5, linear_schedule(1.0, 0.0, 4), 0.25], [3, 5]),
        {0: 0.5, 2: 0.5, 3: 1.0, 4: 0.75, 5: 0.25, 100: 0.25},
    ),
    (
        "join_equal_boundaries",
        join_schedules([0.5, 1.0, 0.25], [3, 3]),
        {0: 0.5, 2: 0.5, 3: 0.25, 9: 0.25},
    ),
]


@pytest.mark.parametrize("schedule, table", [pytest.param(s, table, id=name) for name, s, table in CLOSED_FORMS])
def test_closed_form_values(schedule, table):
    np.testing.assert_allclose(gradtx_values(schedule, list(table)), list(table.values()), rtol=1e-14, atol=1e-16)


lr_scheduler = torch.optim.lr_scheduler

# (id, gradtx schedule, torch scheduler factory, base lr, last step compared)
TORCH_PAIRS = [
    (
        "StepLR",
        step_decay_schedule(0.1, 0.1, 30),
        lambda opt: lr_scheduler.StepLR(opt, step_size=30, gamma=0.1),
        0.1,
        TORCH_LAST_STEP,
    ),
    (
        "StepLR_via_exponential",
        exponential_decay(0.3, 7, 0.5, staircase=True),
        lambda opt: lr_scheduler.StepLR(opt, step_size=7, gamma=0.5),
        0.3,
        TORCH_LAST_STEP,
    ),
    (
        "MultiStepLR",
        piecewise_constant_schedule(0.1, {30: 0.1, 80: 0.1, 120: 0.1}),
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[30, 80, 120], gamma=0.1),
        0.1,
        TORCH_LAST_STEP,
    ),
    (
        "MultiStepLR_gamma",
        piecewise_constant_schedule(0.4, {1: 0.5, 2: 0.5, 50: 0.5}),
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[1, 2, 50], gamma=0.5),
        0.4,
        TORCH_LAST_STEP,
    ),
    (
        "ExponentialLR",
        exponential_decay(0.1, 1, 0.97),
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.97),
        0.1,
        TORCH_LAST_STEP,
    ),
    (
        "LinearLR",
        linear_schedule(0.1, 0.001, 50),
        lambda opt: lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.01, total_iters=50),
        0.1,
        TORCH_LAST_STEP,
    ),
    (
        "PolynomialLR",
        polynomial_schedule(0.1, 0.0, 2.0, 60),
        lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=60, power=2.0),
        0.1,
        TORCH_LAST_STEP,
    ),
    (
        "LambdaLR_harmonic",
        harmonic_decay_schedule(1.0, 5, 10.0),
        lambda opt: lr_scheduler.LambdaLR(opt, lambda t: 10.0 / (t // 5 + 10.0)),
        0.1,
        TORCH_LAST_STEP,
    ),
    (
        # Torch's cosine keeps oscillating past T_max, ours holds eta_min: compare up to T_max.
        "CosineAnnealingLR",
        cosine_decay_schedule(0.1, 100, alpha=0.01),
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=0.001),
        0.1,
        100,
    ),
    (
        "CosineAnnealingLR_to_zero",
        cosine_decay_schedule(0.5, 40),
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=40),
        0.5,
        40,
    ),
]


@pytest.mark.parametrize(
    "ours, make_scheduler, lr, last_step",
    [pytest.param(*rest, id=name) for name, *rest in TORCH_PAIRS],
)
def test_matches_torch_lr_scheduler(ours, make_scheduler, lr, last_step):
    expected = torch_values(make_scheduler, lr, last_step)
    # Torch updates most rates recursively (lr_t = lr_{t-1} * ratio), which accumulates rounding;
    # over these horizons it stays within 1e-14 of the closed form.
    np.testing.assert_allclose(gradtx_values(ours, np.arange(last_step + 1)), expected, rtol=1e-12, atol=1e-17)


def test_cosine_annealing_lr_diverges_after_t_max():
    expected = torch_values(lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=10), 1.0, 20)
    assert expected[20] == pytest.approx(1.0)
    assert cosine_decay_schedule(1.0, 10)(jnp.int32(20)) == 0.0


@pytest.mark.parametrize("schedule", GRADTX_SCHEDULES)
def test_jit_eager_and_vmap_agree(schedule):
    steps = [0, 59, 60, 101, LAST_STEP]
    eager = np.array([schedule(jnp.int32(t)) for t in steps])
    np.testing.assert_array_equal([schedule(t) for t in steps[:2]], eager[:2])  # Python ints
    # gradtx_values runs jit(vmap(schedule)). Compiled code may differ by a few ulps: XLA
    # vectorises cos and turns x / c into x * (1/c) with fused multiply-adds.
    np.testing.assert_allclose(gradtx_values(schedule, steps), eager, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("schedule", [p for p in GRADTX_SCHEDULES if p.id != "constant"])
def test_returns_float_scalar(schedule):
    step_count = jax.ShapeDtypeStruct((), jnp.int32)
    value = jax.eval_shape(schedule, step_count)
    assert value.shape == () and value.dtype == jnp.float64
    with jax.enable_x64(False):
        value32 = jax.eval_shape(schedule, step_count)
    assert value32.shape == () and value32.dtype == jnp.float32


@pytest.mark.parametrize("x64", [True, False])
def test_stages_change_on_time_under_jit(x64):
    # Under jit, XLA computes t / 49 as t * (1/49), and 49 * (1/49) < 1: a float floor would
    # switch stage one step late (optax's staircase exponential_decay does, for these N).
    stages = np.arange(6)
    schedules = []
    for every in (49, 103):
        schedules += [
            step_decay_schedule(1.0, 0.5, every),
            exponential_decay(1.0, every, 0.5, staircase=True),
            harmonic_decay_schedule(2.0, every, offset=1.0),
        ]
    with jax.enable_x64(x64):
        evaluate_all = jax.jit(lambda ts: [jax.vmap(s)(ts) for s in schedules])
        before, after = [], []
        for every in (49, 103):
            before.append(evaluate_all(jnp.asarray((stages * every - 1).clip(0), dtype=jnp.int32)))
            after.append(evaluate_all(jnp.asarray(stages * every, dtype=jnp.int32)))
    stage_before = (stages - 1).clip(0)
    for k, every in enumerate((49, 103)):
        for values, stage in ((before[k], stage_before), (after[k], stages)):
            step_decay, staircase, harmonic = values[3 * k : 3 * k + 3]
            np.testing.assert_allclose(step_decay, 0.5**stage, rtol=1e-6, err_msg=f"N={every}")
            np.testing.assert_allclose(staircase, 0.5**stage, rtol=1e-6, err_msg=f"N={every}")
            np.testing.assert_allclose(harmonic, 2 / (stage + 1), rtol=1e-6, err_msg=f"N={every}")


@pytest.mark.parametrize("x64", [True, False])
def test_polynomial_ends_exactly_under_jit(x64):
    # A fractional power of 1 - t/T can go NaN at t = T under jit (optax's does for T = 7, 30).
    totals = (7, 30)
    with jax.enable_x64(x64):
        sqrt_decays = [polynomial_schedule(1.0, 0.0, 0.5, total) for total in totals]
        linear_decays = [linear_schedule(0.3, 0.003, total) for total in totals]
        evaluate_all = jax.jit(
            lambda: [
                jax.vmap(s)(jnp.array([0, total, total + 5], dtype=jnp.int32))
                for total, s in zip(totals + totals, sqrt_decays + linear_decays, strict=True)
            ]
        )
        values = evaluate_all()
    for sqrt_decay, linear_decay in zip(values[:2], values[2:], strict=True):
        np.testing.assert_allclose(sqrt_decay[0], 1.0, rtol=1e-6)
        assert sqrt_decay[1] == 0.0 and sqrt_decay[2] == 0.0
        np.testing.assert_array_equal(linear_decay[1:], np.asarray(0.003, dtype=linear_decay.dtype))


def test_int_values_give_float_schedules():
    assert linear_schedule(1, 0, 4)(jnp.int32(1)) == 0.75
    assert harmonic_decay_schedule(1, 1, offset=1)(jnp.int32(1)) == 0.5
    assert step_decay_schedule(8, 0.5, 1)(jnp.int32(3)).dtype == jnp.float64


def test_other_step_count_dtypes():
    schedule = step_decay_schedule(1.0, 0.5, 49)
    for step_count in (jnp.uint32(49), jnp.int64(49), 49.0, jnp.float32(49.0)):
        assert schedule(step_count) == 0.5
    assert schedule(jnp.uint32(48)) == 1.0
    assert schedule(jnp.int32(-3)) == 1.0  # negative counts act as 0


def test_schedule_drives_an_optax_optimizer():
    # The schedule is evaluated at Optax's int32 step count inside a jitted update.
    optimizer = optax.sgd(step_decay_schedule(0.1, 0.1, 2))
    params = jnp.zeros(())
    state = optimizer.init(params)
    step = jax.jit(optimizer.update)
    seen = []
    for _ in range(5):
        updates, state = step(jnp.ones(()), state, params)
        seen.append(-float(updates))
    np.testing.assert_allclose(seen, [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-12)


def test_as_schedule():
    schedule = linear_schedule(1.0, 0.0, 2)
    assert as_schedule(schedule) is schedule
    assert as_schedule(0.25)(jnp.int32(5)) == 0.25


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: piecewise_constant_schedule(1.0, {10: -0.1}), r"boundaries_and_scales\[10\] must be >= 0"),
        (lambda: piecewise_constant_schedule(1.0, {-1: 0.1}), r"boundary -1 .* must be >= 0"),
        (lambda: piecewise_constant_schedule(1.0, {2.5: 0.1}), r"boundary 2.5 .* integer"),
        (lambda: step_decay_schedule(1.0, 0.0, 10), r"factor must be > 0"),
        (lambda: step_decay_schedule(1.0, 0.1, 0), r"every_steps must be > 0"),
        (lambda: harmonic_decay_schedule(1.0, 0), r"steps_per_stage must be > 0"),
        (lambda: harmonic_decay_schedule(1.0, 5, offset=0.0), r"offset must be > 0"),
        (lambda: harmonic_decay_schedule(1.0, 5.0), r"steps_per_stage must be an integer"),
        (lambda: linear_schedule(1.0, 0.0, -1), r"transition_steps must be >= 0"),
        (lambda: linear_schedule(1.0, 0.0, 10, transition_begin=-5), r"transition_begin must be >= 0"),
        (lambda: linear_schedule(1.0, 0.0, 100.0), r"transition_steps must be an integer"),
        (lambda: polynomial_schedule(1.0, 0.0, 0.0, 10), r"power must be > 0"),
        (lambda: polynomial_schedule(1.0, 0.0, -1, 10), r"power must be > 0"),
        (lambda: exponential_decay(1.0, -1, 0.5), r"transition_steps must be >= 0"),
        (lambda: exponential_decay(1.0, 10, 0.0), r"decay_rate must be > 0"),
        (lambda: exponential_decay(1.0, 10, -0.5), r"decay_rate must be > 0"),
        (lambda: exponential_decay(1.0, 10, 0.5, transition_begin=-1), r"transition_begin must be >= 0"),
        (lambda: cosine_decay_schedule(1.0, 0), r"decay_steps must be > 0"),
        (lambda: cosine_decay_schedule(1.0, 10, exponent=0.0), r"exponent must be > 0"),
        (lambda: warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), r"warmup_steps must be >= 0"),
        (lambda: warmup_cosine_decay_schedule(0.0, 1.0, 10, 10), r"decay_steps .* must be > warmup_steps"),
        (lambda: warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, exponent=-1), r"exponent must be > 0"),
        (lambda: join_schedules([], []), r"at least one schedule"),
        (lambda: join_schedules([0.1, 0.2], []), r"one step fewer"),
        (lambda: join_schedules([0.1, 0.2, 0.3], [20, 10]), r"non-decreasing"),
        (lambda: join_schedules([0.1, 0.2], [-1]), r"boundaries\[0\] must be >= 0"),
    ],
)
def test_invalid_arguments_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_accepts_numpy_and_jax_integer_steps():
    schedule = linear_schedule(1.0, 0.0, np.int64(4), transition_begin=jnp.asarray(2))
    assert schedule(jnp.int32(4)) == 0.5


@pytest.mark.parametrize("x64", [True, False])
def test_lengths_beyond_int32(x64):
    # decay_steps, boundaries and transition_begin past 2**31 used to overflow the int32 step count.
    long = 2**40
    with jax.enable_x64(x64):
        last = jnp.int32(2**31 - 1)
        cosine = cosine_decay_schedule(1.0, long)
        expected = 0.5 * (1 + math.cos(math.pi * (2**31 - 1) / long))
        for value in (cosine(last), jax.jit(cosine)(last)):
            np.testing.assert_allclose(value, expected, rtol=1e-6)
        assert float(join_schedules([1.0, 2.0], [long])(last)) == 1.0
        assert float(exponential_decay(1.0, 10, 0.5, transition_begin=long)(last)) == 1.0
        assert float(piecewise_constant_schedule(1.0, {long: 0.5})(last)) == 1.0
        assert float(warmup_cosine_decay_schedule(0.0, 1.0, 10, long)(jnp.int32(10))) == 1.0


def test_every_optax_schedules_name_with_its_arguments_and_defaults():
    import gradtx

    for name in sorted(n for n in dir(optax.schedules) if not n.startswith("_")):
        theirs = getattr(optax.schedules, name)
        ours = getattr(gradtx.schedules, name)
        assert ours is getattr(gradtx, name, ours), name  # flat at the top level too
        if inspect.isfunction(theirs):
            spell = lambda f: [(p.name, p.default, p.kind) for p in inspect.signature(f).parameters.values()]
            assert spell(ours) == spell(theirs), name
