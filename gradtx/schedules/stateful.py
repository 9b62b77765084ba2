"""Stateful schedules: values that depend on a state updated at every step, not only on the count."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

from gradtx.base import Schedule
from gradtx.tree_utils import saturating_increment, zero_step_count

ScheduleState = Any


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule with a state: ``init() -> state``, ``update(state, **extra_args) -> state`` and
    ``schedule(state, **extra_args) -> value``.

    ``inject_hyperparams`` keeps the state in ``hyperparams_states`` and, at each update, uses the
    value ``schedule(state_t, **extra_args)`` and stores ``update(state_t, **extra_args)``, with the
    ``extra_args`` given to the update (a loss, for a schedule that reacts to it). Any object
    with these three methods qualifies, Optax's stateful schedules included.

    The same protocol as ``optax.schedules.StatefulSchedule``.
    """

    def init(self) -> ScheduleState:
        """The state before the first update."""

    def update(self, state: ScheduleState, **extra_args: Any) -> ScheduleState:
        """The state after one more update."""

    def __call__(self, state: ScheduleState, **extra_args: Any) -> jax.typing.ArrayLike:
        """The value to use at the update that starts from ``state``."""


class WrappedScheduleState(NamedTuple):
    """State of a ``WrappedSchedule``.

    count: int32 number of updates so far; the schedule is evaluated at it.
    """

    count: jax.Array


class WrappedSchedule:
    """A plain schedule ``t -> value`` as a ``StatefulSchedule`` whose state is the step count.

    ``init() = WrappedScheduleState(0)``, ``update(state) = WrappedScheduleState(count + 1)``
    (saturating at the int32 maximum) and ``wrapped(state) = schedule_fn(state.count)``, so
    ``eta_t = schedule_fn(t)`` at update ``t``.

    Matches ``optax.schedules.WrappedSchedule``: ``inject_hyperparams`` wraps every plain
    schedule it is given in one, and its state is what ``hyperparams_states`` holds for it.
    """

    def __init__(self, schedule_fn: Schedule) -> None:
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=zero_step_count())

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        del extra_args
        return WrappedScheduleState(count=saturating_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> jax.typing.ArrayLike:
        del extra_args
        return self.schedule_fn(state.count)
