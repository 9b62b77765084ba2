"""Momentum: heavy-ball and Nesterov in both of the lectures' forms, moving averages, and SGD.

The lectures write heavy-ball momentum two ways.

* Accumulate, then scale (torch.optim.SGD and Optax):  ``b <- g + mu b``, ``w <- w - eta_t b``.
  This is ``trace`` followed by ``scale_by_learning_rate``.
* Velocity form (Sutskever et al. 2013):  ``v <- mu v - eta_t g``, ``w <- w + v``.
  This is ``heavy_ball``. The learning rate sits inside the velocity, so a step size changed
  by a schedule only affects new gradients, while the first form rescales the whole history.

For a constant ``eta`` the two are the same iteration with ``v = -eta b``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import chain
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    keep_dtype,
    leaf_dtype,
    saturating_increment,
    tree_cast,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import check_closed_unit, check_decay, check_non_negative, check_state_type


def bias_correction(moment: PyTree, decay: Any, step_count: jax.Array) -> PyTree:
    """``m_hat = m / (1 - decay^t)``: removes the bias of a moving average started at zero.

    ``decay^t`` is evaluated in float32 or wider (in bfloat16 it rounds to 1 within a few
    hundred steps and the division would blow up); the quotient keeps the moment's dtype.
    """
    power_dtype = jnp.promote_types(jnp.result_type(decay), jnp.float32)
    correction = 1 - jnp.asarray(decay, power_dtype) ** jnp.asarray(step_count).astype(power_dtype)

    corrections = {}

    def divide(m):
        # Why float32 or wider for the division: 1 - 0.99999 is a float16 subnormal, which the
        # CPU flushes to 0, so m / (1 - beta^t) became inf. float32 and float64 are unchanged.
        dtype = leaf_dtype(m)
        wide = jnp.promote_types(dtype, jnp.float32)
        if wide not in corrections:  # one conversion per dtype, not one per leaf
            corrections[wide] = keep_dtype(correction, wide)
        if wide == dtype:
            return jax.lax.div(m, corrections[wide])
        return keep_dtype(keep_dtype(m, wide) / corrections[wide], dtype)

    return jax.tree.map(divide, moment)


def _add_scaled(g: jax.Array, mu: Any, b: jax.Array) -> jax.Array:
    """``g + mu b``, ``mu`` cast like ``b``; in lax when the dtypes agree (a jnp operator traces as a
    nested jit, which costs trace time on every leaf)."""
    if leaf_dtype(g) == leaf_dtype(b):
        return jax.lax.add(g, jax.lax.mul(cast_like(mu, b), b))
    return g + cast_like(mu, b) * b


class TraceState(NamedTuple):
    """State of ``trace``: the step count and the momentum buffer ``b`` (Optax's ``trace``)."""

    step_count: jax.Array
    trace: PyTree

    @property
    def count(self) -> jax.Array:
        """Alias of ``step_count``, the name Optax uses for step counters."""
        return self.step_count


def trace(
    decay: ScalarOrSchedule, nesterov: bool = False, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Heavy-ball momentum in accumulate-then-scale form.

    .. math::
        b_t = g_t + \\mu_t b_{t-1}, \\qquad
        u_t = b_t \\ (\\text{heavy ball}), \\quad u_t = g_t + \\mu_t b_t \\ (\\text{Nesterov})

    with ``b_0 = 0``. Followed by ``scale_by_learning_rate`` this is ``torch.optim.SGD(momentum=mu,
    nesterov=...)`` (dampening 0) and ``optax.trace``.

    Args:
      decay: the momentum ``mu`` in [0, 1], or a schedule ``t -> mu_t``. ``mu = 1`` is allowed, as in
        Optax: ``b_t`` is then the plain sum of all gradients.
      nesterov: use the reformulated Nesterov update ``g + mu b`` (Sutskever et al. 2013).
      accumulator_dtype: dtype of ``b``; default the parameter's dtype.

    State: ``TraceState(step_count, trace=b)``.
    """
    check_closed_unit(decay, "decay")

    def init_fn(params: Params) -> TraceState:
        check_float_leaves(params, allow_complex=True)
        return TraceState(zero_step_count(), tree_zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, TraceState, "trace")
        check_trees_match(updates, state.trace, name="updates", reference_name="trace state", context="trace")
        mu = value_at(decay, state.step_count)
        new_trace = jax.tree.map(lambda g, b: _add_scaled(g, mu, b), updates, state.trace)
        if nesterov:
            updates = jax.tree.map(lambda g, b: _add_scaled(g, mu, b), updates, new_trace)
        else:
            updates = new_trace
        return updates, TraceState(saturating_increment(state.step_count), tree_cast(new_trace, accumulator_dtype))

    return GradientTransformation(init_fn, update_fn)


class HeavyBallState(NamedTuple):
    """State of ``heavy_ball``: the step count and the velocity ``v``."""

    step_count: jax.Array
    velocity: PyTree

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


def heavy_ball(
    learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule, nesterov: bool = False
) -> GradientTransformation:
    """Heavy-ball momentum in the lectures' velocity form, learning rate inside the velocity.

    .. math::
        v_t = \\mu v_{t-1} - \\eta_t g_t, \\qquad
        u_t = v_t \\ (\\text{heavy ball}), \\quad u_t = \\mu v_t - \\eta_t g_t \\ (\\text{Nesterov})

    With ``nesterov=True`` this is the reformulated Nesterov update: if the look-ahead form
    ``v_t = mu v_{t-1} - eta grad f(w_{t-1} + mu v_{t-1})``, ``w_t = w_{t-1} + v_t`` is written
    in the variable ``w~ = w + mu v``, the gradient is taken at the current ``w~`` and
    ``w~_t = w~_{t-1} + mu v_t - eta g_t``. To run the look-ahead form literally, evaluate
    the gradient at ``nesterov_lookahead(params, state, mu)`` and use ``nesterov=False``.

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      momentum: ``mu`` in [0, 1) or a schedule.
      nesterov: see above.

    State: ``HeavyBallState(step_count, velocity=v)``.
    Equals ``trace`` + ``scale_by_learning_rate`` for a constant ``eta``; differs under a schedule.
    Reference: Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and
    momentum in deep learning", ICML 2013.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_decay(momentum, "momentum")

    def init_fn(params: Params) -> HeavyBallState:
        check_float_leaves(params, allow_complex=True)
        return HeavyBallState(zero_step_count(), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, HeavyBallState, "heavy_ball")
        check_trees_match(
            updates, state.velocity, name="updates", reference_name="velocity state", context="heavy_ball"
        )
        eta = value_at(learning_rate, state.step_count)
        mu = value_at(momentum, state.step_count)
        velocity = jax.tree.map(lambda v, g: cast_like(mu, v) * v - cast_like(eta, v) * g, state.velocity, updates)
        if nesterov:
            updates = jax.tree.map(lambda v, g: cast_like(mu, v) * v - cast_like(eta, v) * g, velocity, updates)
        else:
            updates = velocity
        return updates, HeavyBallState(saturating_increment(state.step_count), velocity)

    return GradientTransformation(init_fn, update_fn)


def nesterov_lookahead(params: Params, state: HeavyBallState, momentum: Any) -> Params:
    """The look-ahead point ``w + mu v`` where the lectures' Nesterov method takes its gradient."""
    mu = value_at(momentum, state.step_count)
    return jax.tree.map(lambda w, v: w + cast_like(mu, w) * v, params, state.velocity)


class EmaState(NamedTuple):
    """State of ``ema``: the step count (Optax's ``count``) and the moving average ``m``."""

    step_count: jax.Array
    ema: PyTree

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


def ema(decay: ScalarOrSchedule, debias: bool = True, accumulator_dtype: Any = None) -> GradientTransformation:
    """Exponential moving average of the updates, optionally debiased.

    .. math::
        m_t = \\beta m_{t-1} + (1 - \\beta) g_t, \\qquad
        u_t = m_t / (1 - \\beta^t) \\ (\\text{debias}), \\ \\text{else } u_t = m_t

    Args:
      decay: ``beta`` in [0, 1) or a schedule (debiasing then uses the current ``beta_t``).
      debias: divide by ``1 - beta^t``. Default True.
      accumulator_dtype: dtype of ``m``; default the parameter's dtype.

    State: ``EmaState(step_count, ema=m)``. Matches ``optax.ema``.
    """
    check_decay(decay, "decay")

    def init_fn(params: Params) -> EmaState:
        check_float_leaves(params, allow_complex=True)
        return EmaState(zero_step_count(), tree_zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, EmaState, "ema")
        check_trees_match(updates, state.ema, name="updates", reference_name="ema state", context="ema")
        beta = value_at(decay, state.step_count)
        step_count = saturating_increment(state.step_count)
        average = jax.tree.map(lambda g, m: cast_like(beta, m) * m + cast_like(1 - beta, m) * g, updates, state.ema)
        updates = bias_correction(average, beta, step_count) if debias else average
        return updates, EmaState(step_count, tree_cast(average, accumulator_dtype))

    return GradientTransformation(init_fn, update_fn)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    velocity_form: bool = False,
) -> GradientTransformation:
    """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    .. math::
        \\text{plain:} \\quad w_t = w_{t-1} - \\eta_t g_t

        \\text{momentum:} \\quad b_t = \\mu b_{t-1} + g_t, \\quad
        w_t = w_{t-1} - \\eta_t b_t \\quad (\\text{Nesterov: } w_t = w_{t-1} - \\eta_t (g_t + \\mu b_t))

        \\text{velocity form:} \\quad v_t = \\mu v_{t-1} - \\eta_t g_t, \\quad w_t = w_{t-1} + v_t

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      momentum: ``mu`` in [0, 1), a schedule, or None for plain SGD. Default None.
      nesterov: Nesterov momentum (reformulated form). Default False.
      accumulator_dtype: dtype of the momentum buffer (accumulate form only).
      velocity_form: put the learning rate inside the velocity (``heavy_ball``). Same iterates
        for a constant learning rate; under a schedule, past velocity keeps its old step size.

    Defaults and arguments match ``optax.sgd``; with ``momentum`` it matches
    ``torch.optim.SGD(lr, momentum, nesterov=...)`` (dampening 0, weight_decay 0) step for step.

    Example::

        optimizer = gradtx.sgd(0.1, momentum=0.9, nesterov=True)
        state = optimizer.init(params)
        updates, state = optimizer.update(grads, state)
        params = gradtx.apply_updates(params, updates)
    """
    check_non_negative(learning_rate, "learning_rate")
    if momentum is None:
        plain = scale_by_learning_rate(learning_rate)

        def init_fn(params: Params) -> OptState:
            # Why: the step count is the only state, so nothing else would notice an integer leaf,
            # and apply_updates would then truncate every step of it to zero.
            check_float_leaves(params, allow_complex=True)
            return plain.init(params)

        return chain(GradientTransformation(init_fn, plain.update))
    check_decay(momentum, "momentum")
    if velocity_form:
        return chain(heavy_ball(learning_rate, momentum, nesterov=nesterov))
    return chain(
        trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype),
        scale_by_learning_rate(learning_rate),
    )
