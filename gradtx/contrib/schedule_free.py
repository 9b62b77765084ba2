"""Schedule-free learning: momentum replaced by interpolation and online averaging.

The base optimizer moves the sequence ``z``; the evaluation point ``x`` is a running weighted
average of ``z``, and gradients are taken at ``y``, an interpolation of the two. No decaying
learning-rate schedule is needed (Defazio et al. 2024).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, OptState, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import chain
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
from gradtx.momentum import sgd
from gradtx.regularization import add_decayed_weights
from gradtx.rms import scale_by_rms
from gradtx.scaling import scale_by_learning_rate
from gradtx.schedules import linear_schedule
from gradtx.tree_utils import check_float_leaves, check_trees_match, keep_dtype, saturating_increment, tree_cast
from gradtx.validation import (
    check_closed_unit,
    check_decay,
    check_greater_than,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)


class ScheduleFreeState(NamedTuple):
    """State of ``schedule_free``.

    ``b1``: the interpolation weight ``beta``; ``weight_sum``: ``sum_i gamma_max,i^p``;
    ``step_count``: the step ``t`` (starts at 1, the index at which ``learning_rate`` is read);
    ``max_lr``: ``max_{i <= t} gamma_i``; ``base_optimizer_state``; ``z``: the base sequence.
    Field names are Optax's.
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: OptState
    z: Params


def _scalar_dtype(params: PyTree) -> Any:
    """The narrowest real float dtype among the leaves (Optax: "lowest"), for the scalar state."""
    dtypes = [jnp.finfo(jnp.result_type(leaf)).dtype for leaf in jax.tree.leaves(params)]
    return min(dtypes, key=lambda d: np.dtype(d).itemsize) if dtypes else jnp.result_type(float)


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    """The averaged point ``x = (y - (1 - beta) z) / beta`` at which to evaluate the model.

    ``params`` are the training parameters ``y``; ``state`` is a ``ScheduleFreeState``.
    Matches ``optax.contrib.schedule_free_eval_params`` and ``schedulefree``'s ``optimizer.eval()``
    (Defazio et al. 2024).
    """
    b1 = getattr(state, "b1", None)
    z = getattr(state, "z", None)
    if b1 is None or z is None:
        raise ValueError(
            f"schedule_free_eval_params expects a ScheduleFreeState (with fields b1 and z), got "
            f"{type(state).__name__}."
        )
    return jax.tree.map(lambda y, zi: keep_dtype((y - (1 - b1) * zi) / b1, jnp.result_type(y)), params, z)


@check_schedule_arguments
def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Makes ``base_optimizer`` schedule-free (Defazio et al. 2024, Algorithm 1).

    With ``Delta_t`` the base optimizer's update at ``y_t`` (``-gamma_t g_t`` for SGD):

    .. math::
        z_{t+1} = z_t + \\Delta_t, \\qquad
        c_{t+1} = \\frac{\\gamma_{\\max,t}^{p}}{\\sum_{i \\le t} \\gamma_{\\max,i}^{p}}, \\qquad
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

        y_{t+1} = \\beta x_{t+1} + (1 - \\beta) z_{t+1}

    where ``gamma_max,t = max_{i <= t} gamma_i`` and ``gamma_t = learning_rate(t)`` for
    ``t = 1, 2, ...``. The parameters are ``y``; ``x`` is recovered from ``y`` and ``z``
    (``x = (y - (1-beta) z) / beta``), so only ``z`` is stored. Evaluate the model at
    :func:`schedule_free_eval_params`. The base optimizer should have no momentum (``b1=0`` for
    Adam): the interpolation replaces it.

    Args:
      base_optimizer: the transformation giving ``Delta_t`` (learning rate included).
      learning_rate: ``gamma_t`` for the averaging weights, a float or a schedule (with warmup,
        without decay); read at ``t = 1, 2, ...``.
      b1: ``beta`` in (0, 1]. Default 0.9.
      weight_lr_power: ``p`` >= 0. Default 2.
      state_dtype: dtype of ``z`` (default: the parameters').

    State: ``ScheduleFreeState(b1, weight_sum, step_count, max_lr, base_optimizer_state, z)``.
    Matches ``optax.contrib.schedule_free``.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", 2024,
      arXiv:2405.15682.
    """
    check_greater_than(b1, 0.0, "b1")
    check_closed_unit(b1, "b1")
    check_non_negative(weight_lr_power, "weight_lr_power")
    if not callable(learning_rate):
        check_non_negative(learning_rate, "learning_rate")
    base_optimizer = with_extra_args_support(base_optimizer)

    def init_fn(params: Params) -> ScheduleFreeState:
        check_float_leaves(params, allow_complex=True)
        dtype = _scalar_dtype(params)
        # A copy, so that z and the params are distinct buffers (both may be donated to jit).
        z = jax.tree.map(lambda p: jnp.array(p, copy=True), tree_cast(params, state_dtype))
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScheduleFreeState, "schedule_free")
        if params is None:
            raise ValueError("schedule_free needs the parameters: call update(updates, state, params).")
        check_trees_match(updates, state.z, name="updates", reference_name="schedule_free z")
        dtype = state.max_lr.dtype
        lr = jnp.asarray(value_at(learning_rate, state.step_count), dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        # Why: while every gamma so far is 0 the weights are 0/0; Algorithm 1 then keeps x (c = 0).
        ck = jnp.where(weight_sum == 0, jnp.zeros_like(weight), weight / jnp.where(weight_sum == 0, 1, weight_sum))
        base_updates, base_state = base_optimizer.update(updates, state.base_optimizer_state, params, **extra_args)
        z = jax.tree.map(lambda zi, u: keep_dtype(zi + u, jnp.result_type(zi)), state.z, base_updates)
        beta = state.b1

        def new_y(y, z_old, z_new):
            x_old = (y - (1 - beta) * z_old) / beta
            x = (1 - ck) * x_old + ck * z_new
            return keep_dtype(beta * x + (1 - beta) * z_new - y, jnp.result_type(y))

        new_updates = jax.tree.map(new_y, params, state.z, z)
        return new_updates, ScheduleFreeState(
            state.b1, weight_sum, saturating_increment(state.step_count), max_lr, base_state, z
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _warmup(learning_rate: float, warmup_steps: int | None) -> tuple[ScalarOrSchedule, ScalarOrSchedule]:
    """``gamma_t = lr min(1, t / W)`` as read by the weights (at t) and by the base optimizer (at its count t-1)."""
    if warmup_steps is None:
        return learning_rate, learning_rate
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
        raise ValueError(f"warmup_steps must be a positive int or None, got {warmup_steps!r}.")
    schedule = linear_schedule(0.0, learning_rate, warmup_steps)
    # Why the shift: the base optimizer counts from 0, the averaging weights from 1; both must see
    # the same gamma_t in step t (Algorithm 1 of the paper, schedulefree's (k+1)/warmup_steps).
    return schedule, lambda count: schedule(count + 1)


@check_schedule_arguments
def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schedule-free SGD (Defazio et al. 2024): :func:`schedule_free` around plain SGD.

    .. math::
        z_{t+1} = z_t - \\gamma_t (g_t + \\lambda y_t), \\qquad
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \\qquad
        y_{t+1} = \\beta x_{t+1} + (1 - \\beta) z_{t+1}

    with ``g_t`` the gradient at ``y_t``, ``gamma_t = learning_rate * min(1, t / warmup_steps)``
    and ``c_{t+1}`` as in :func:`schedule_free`.

    Args:
      learning_rate: peak ``gamma`` >= 0. Default 1.0.
      warmup_steps: length ``W`` of the linear warmup, or None (default) for none.
      b1: ``beta`` in (0, 1]. Default 0.9.
      weight_decay: ``lambda`` (coupled, added to the gradient) or None (default) for none.
      weight_lr_power: ``p``. Default 2.
      state_dtype: dtype of ``z``.

    State: ``ScheduleFreeState`` whose ``base_optimizer_state`` is the SGD chain's.
    Matches ``schedulefree.SGDScheduleFree(lr, momentum=b1, weight_decay, warmup_steps)`` and, without
    warmup, ``optax.contrib.schedule_free_sgd``. With warmup, Optax's SGD reads its schedule one step
    behind the averaging weights (``z`` moves with ``gamma_{t-1}``, a zero first step); here both use
    ``gamma_t`` as in the paper. ``schedule_free(sgd(s), s)`` with ``s`` the warmup schedule gives
    Optax's numbers.

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", 2024,
      arXiv:2405.15682.
    """
    check_non_negative(learning_rate, "learning_rate")
    if weight_decay is not None:
        check_non_negative(weight_decay, "weight_decay")
    weight_lr, step_lr = _warmup(learning_rate, warmup_steps)
    optimizer = sgd(step_lr)
    if weight_decay is not None:
        optimizer = chain(add_decayed_weights(weight_decay), optimizer)
    return schedule_free(optimizer, weight_lr, b1, weight_lr_power, state_dtype)


@check_schedule_arguments
def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schedule-free AdamW (Defazio et al. 2024): :func:`schedule_free` around momentum-free AdamW.

    .. math::
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\qquad
        z_{t+1} = z_t - \\gamma_t \\left( \\frac{g_t}{\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon}
        + \\lambda y_t \\right)

    then ``x`` and ``y`` as in :func:`schedule_free` (``beta = b1``), with
    ``gamma_t = learning_rate * min(1, t / warmup_steps)``.

    Args:
      learning_rate: peak ``gamma`` >= 0. Default 0.0025.
      warmup_steps: length of the linear warmup, or None (default).
      b1: ``beta`` in (0, 1]. Default 0.9.
      b2: ``beta_2`` in [0, 1). Default 0.999.
      eps: ``epsilon`` > 0. Default 1e-8.
      weight_decay: decoupled ``lambda`` >= 0 (applied at ``y``). Default 0.
      weight_lr_power: ``p``. Default 2.
      state_dtype: dtype of ``z``.

    State: ``ScheduleFreeState`` over ``(RmsState, AddDecayedWeightsState, ScaleByScheduleState)``.
    Matches ``schedulefree.AdamWScheduleFree(lr, betas=(b1, b2), eps, weight_decay, warmup_steps)``
    and, without warmup, ``optax.contrib.schedule_free_adamw`` (with warmup Optax's base optimizer
    reads the schedule one step late, see :func:`schedule_free_sgd`).

    References:
      Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", 2024,
      arXiv:2405.15682.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_decay(b2, "b2")
    check_positive(eps, "eps")
    check_non_negative(weight_decay, "weight_decay")
    weight_lr, step_lr = _warmup(learning_rate, warmup_steps)
    optimizer = chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(step_lr),
    )
    return schedule_free(optimizer, weight_lr, b1, weight_lr_power, state_dtype)


__all__ = [
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
]
