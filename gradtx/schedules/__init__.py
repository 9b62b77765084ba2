"""Schedules: functions ``step -> value`` for any hyperparameter that accepts a float.

A schedule is called with the step count ``t`` (an int32 array, ``t = 0`` on the first update)
and returns a scalar. Every hyperparameter documented as ``ScalarOrSchedule`` accepts either.

The schedules are pure ``jax.numpy`` functions of ``t``: they run under ``jit`` and ``vmap``
with a traced step count, and they also accept an array of step counts, which they map elementwise.
They compute in JAX's default float dtype (float32, or float64 with ``jax_enable_x64``), so their
value is a float32-or-wider array even when every argument is a Python number. A negative step
count (which ``join_schedules`` produces internally before a piece starts) is treated as ``t = 0``.

Every schedule takes its end values exactly (``linear_schedule(0.0, 0.1, 300)`` is ``0.0`` at step
0 and ``0.1`` from step 300 on), never leaves the range its end values span, and gives the same
values jitted and eager: a value between two ends is their convex combination, clipped, and a
fraction of a phase is computed as XLA computes it under ``jit`` (see ``gradtx.schedules._steps``).
They equal Optax's namesakes to rounding; Optax's own can leave the range by an ulp under ``jit``
(``optax.linear_schedule(0.0, 0.1, 300)`` jitted is ``-6e-9`` at step 0 in float32).

Arguments that count steps (``transition_steps``, ``decay_steps``, boundaries, ...) must be
integers; they and the Python-number rates and exponents are checked when the schedule is built,
and a ``ValueError`` names the offending argument. Values to be scheduled (``init_value``,
``end_value``, ...) may be numbers or arrays and are not checked: a schedule may drive any
hyperparameter, not only a learning rate.

The package mirrors ``optax.schedules``: ``gradtx.schedules.inject_hyperparams`` and its
relatives are ``gradtx.inject_hyperparams`` (defined in ``gradtx.hyperparams``).
"""

from __future__ import annotations

from typing import Any

from gradtx.base import Schedule
from gradtx.schedules.decay import (
    as_schedule,
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    harmonic_decay_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    step_decay_schedule,
)
from gradtx.schedules.interpolate import (
    cosine_onecycle_schedule,
    linear_onecycle_schedule,
    piecewise_interpolate_schedule,
)
from gradtx.schedules.stateful import StatefulSchedule, WrappedSchedule, WrappedScheduleState
from gradtx.schedules.warmup import (
    join_schedules,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)

_FROM_HYPERPARAMS = (
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
)

__all__ = [
    "Schedule",
    "StatefulSchedule",
    "WrappedSchedule",
    "WrappedScheduleState",
    "as_schedule",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "harmonic_decay_schedule",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "step_decay_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]


def __getattr__(name: str) -> Any:
    # gradtx.hyperparams imports this package, so its names are looked up on first use.
    if name in _FROM_HYPERPARAMS:
        from gradtx import hyperparams

        return getattr(hyperparams, name)
    raise AttributeError(f"module 'gradtx.schedules' has no attribute {name!r}")
