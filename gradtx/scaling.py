"""Scaling by constants, learning rates and schedules."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import EmptyState, GradientTransformation, Params, ScalarOrSchedule, value_at
from gradtx.tree_utils import cast_like, check_updates_match_params, saturating_increment, zero_step_count
from gradtx.validation import check_empty_state, check_non_negative, check_state_type

ScaleState = EmptyState  # Optax's name for the state of ``scale`` with a number


def scale(step_size: ScalarOrSchedule) -> GradientTransformation:
    """``u_t <- alpha_t g_t`` for a number, an array or a schedule ``alpha``.

    State: ``EmptyState()`` for a number or an array, as ``optax.scale`` (which takes no
    schedule); for a schedule this is ``scale_by_schedule(step_size)``, with its
    ``ScaleByScheduleState(step_count)``, evaluated at ``t = 0`` on the first update.
    Matches ``optax.scale``.
    """
    if callable(step_size):
        return scale_by_schedule(step_size)

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "scale")
        check_updates_match_params(updates, params, "scale")
        return jax.tree.map(lambda g: g * jnp.asarray(step_size, jnp.result_type(g)), updates), state

    return GradientTransformation(init_fn, update_fn)


class ScaleByScheduleState(NamedTuple):
    """State of ``scale_by_schedule``: the number of updates applied so far (``count`` in Optax)."""

    step_count: jax.Array

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


def scale_by_schedule(step_size_fn) -> GradientTransformation:
    """``u_t <- alpha(t) g_t`` with ``t = 0`` on the first update. Matches ``optax.scale_by_schedule``.

    State: ``ScaleByScheduleState(step_count)``, an int32 that saturates at its maximum.
    """

    def init_fn(params: Params) -> ScaleByScheduleState:
        del params
        return ScaleByScheduleState(zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_state_type(state, ScaleByScheduleState, "scale_by_schedule")
        check_updates_match_params(updates, params, "scale_by_schedule")
        step_size = step_size_fn(state.step_count)
        updates = jax.tree.map(lambda g: _scaled(g, step_size), updates)
        return updates, ScaleByScheduleState(saturating_increment(state.step_count))

    return GradientTransformation(init_fn, update_fn)


def _scaled(g: jax.Array, step_size: Any) -> jax.Array:
    """``g * step_size`` in ``g``'s dtype; with ``lax.mul`` for arrays (``*`` traces as a nested jit)."""
    factor = cast_like(step_size, g)
    return jax.lax.mul(g, factor) if isinstance(g, jax.Array) else g * factor


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> GradientTransformation:
    """``u_t <- -eta_t g_t`` (descent), or ``+eta_t g_t`` with ``flip_sign=False``.

    Args:
      learning_rate: ``eta``, a float, an array or a schedule ``t -> eta_t``; must be >= 0
        when given as a number.
      flip_sign: negate, so that ``apply_updates`` descends. Default True.

    State: ``ScaleByScheduleState(step_count)`` whether ``learning_rate`` is fixed or scheduled,
    so that swapping one for the other keeps the state's type.
    Matches ``optax.scale_by_learning_rate`` in value.
    """
    check_non_negative(learning_rate, "learning_rate")
    sign = -1.0 if flip_sign else 1.0
    return scale_by_schedule(lambda step_count: sign * value_at(learning_rate, step_count))
