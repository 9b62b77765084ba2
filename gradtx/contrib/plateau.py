"""Reduce-on-plateau: scale the updates down when a monitored loss stops improving."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree as gtree
from gradtx.base import Params
from gradtx.extra_args import GradientTransformationExtraArgs
from gradtx.tree_utils import check_updates_match_params, saturating_increment
from gradtx.validation import check_non_negative, check_schedule_arguments, check_state_type


class ReduceLROnPlateauState(NamedTuple):
    """State of ``reduce_on_plateau``.

    ``scale``: the factor applied to the updates; ``best_value``: the best averaged loss so far;
    ``plateau_count``: consecutive averages without improvement; ``cooldown_count``: averages
    left in the cool-down; ``count``: values accumulated into ``avg_value``, their running mean.
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array
    avg_value: jax.Array


def _float_dtype(params: Params, handler: str):
    return gtree.dtype(params, handler) if jax.tree.leaves(params) else jnp.float32


@check_schedule_arguments
def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformationExtraArgs:
    """Multiplies the updates by a scale that drops by ``factor`` when the loss plateaus.

    The loss passed as ``value=`` is averaged over ``accumulation_size`` calls; then, with ``a``
    that average and ``b`` the best one so far:

    .. math::
        \\text{improved} \\iff a < (1 - r_{tol})\\, b - a_{tol}, \\qquad
        b \\leftarrow a \\text{ if improved}, \\qquad
        p \\leftarrow 0 \\text{ if improved else } p + 1

        p = \\text{patience} \\;\\Rightarrow\\; s \\leftarrow \\max(s \\cdot \\text{factor}, s_{min}),
        \\; p \\leftarrow 0, \\; \\text{cool-down} \\leftarrow \\text{cooldown}

    During a cool-down ``p`` stays 0 and each average decrements the cool-down counter (the best
    value is still tracked). Every call returns ``u = s g``. Place it last in a chain (after
    ``scale_by_learning_rate``) so that ``s`` multiplies the learning rate.

    Args:
      factor: in (0, 1), ``s <- s * factor``. Default 0.1.
      patience: averages without improvement before a reduction. Default 10.
      rtol: relative tolerance in [0, 1]. Default 1e-4.
      atol: absolute tolerance >= 0. Default 0. (``rtol`` and ``atol`` cannot both be 0.)
      cooldown: averages to wait after a reduction before counting again. Default 0.
      accumulation_size: loss values averaged per decision (1: each value decides; use more for
        noisy minibatch losses). Default 1.
      min_scale: the floor ``s_min`` of the scale. Default 0.

    State: ``ReduceLROnPlateauState(scale, best_value, plateau_count, cooldown_count, count,
    avg_value)``. Needs ``value=``.

    Matches ``optax.contrib.reduce_on_plateau`` (and Keras' ``ReduceLROnPlateau``:
    ``patience=p`` reduces after ``p`` bad averages). ``torch.optim.lr_scheduler.ReduceLROnPlateau``
    reduces after ``patience + 1`` bad epochs, so its ``patience=p - 1`` is this ``patience=p``.
    There is no paper; the rule is the common training heuristic.
    """
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must be in (0, 1), got {factor!r}.")
    check_non_negative(rtol, "rtol")
    check_non_negative(atol, "atol")
    if rtol == 0.0 and atol == 0.0:
        raise ValueError(f"At least one of rtol and atol must be > 0, got rtol={rtol!r} and atol={atol!r}.")
    if rtol > 1.0:
        raise ValueError(f"rtol must be <= 1, got {rtol!r}.")
    check_non_negative(patience, "patience")
    check_non_negative(cooldown, "cooldown")
    check_non_negative(min_scale, "min_scale")

    def init_fn(params: Params) -> ReduceLROnPlateauState:
        high = _float_dtype(params, "highest")
        zero = jnp.zeros([], jnp.int32)
        return ReduceLROnPlateauState(
            scale=jnp.ones([], _float_dtype(params, "lowest")),
            best_value=jnp.asarray(jnp.inf, high),
            plateau_count=zero,
            cooldown_count=zero,
            count=zero,
            avg_value=jnp.zeros([], high),
        )

    def decide(state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
        improved = state.avg_value < (1 - rtol) * state.best_value - atol
        best = jnp.where(improved, state.avg_value, state.best_value).astype(state.best_value.dtype)
        bad = jnp.where(improved, 0, saturating_increment(state.plateau_count))
        cooling = state.cooldown_count > 0
        reduce = jnp.logical_and(~cooling, bad == patience)
        scale = jnp.where(
            cooling, state.scale, jnp.maximum(jnp.where(reduce, state.scale * factor, state.scale), min_scale)
        ).astype(state.scale.dtype)
        plateau = jnp.where(cooling | reduce, 0, bad).astype(jnp.int32)
        cooldown_count = jnp.where(cooling, state.cooldown_count - 1, jnp.where(reduce, cooldown, 0)).astype(jnp.int32)
        return ReduceLROnPlateauState(
            scale, best, plateau, cooldown_count, jnp.zeros([], jnp.int32), jnp.zeros_like(state.avg_value)
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        check_state_type(state, ReduceLROnPlateauState, "reduce_on_plateau")
        check_updates_match_params(updates, params, "reduce_on_plateau")
        del params, extra_args
        if value is None:
            raise ValueError("reduce_on_plateau needs the loss: call update(updates, state, params, value=loss).")
        count = saturating_increment(state.count)
        avg = ((state.count * state.avg_value + jnp.asarray(value).astype(state.avg_value.dtype)) / count).astype(
            state.avg_value.dtype
        )
        state = state._replace(avg_value=avg, count=count)
        state = jax.lax.cond(count == accumulation_size, decide, lambda s: s, state)
        updates = jax.tree.map(lambda g: state.scale * g, updates)
        return updates, state

    return GradientTransformationExtraArgs(init_fn, update_fn)
