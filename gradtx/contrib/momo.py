"""MoMo: momentum methods with a Polyak-type step size built from the loss value and a lower bound."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import Params, PyTree, ScalarOrSchedule, value_at
from gradtx.contrib.parameter_free import _scalar_dtype, _vdot
from gradtx.extra_args import GradientTransformationExtraArgs
from gradtx.tree_utils import (
    check_float_leaves,
    check_trees_match,
    saturating_increment,
    tree_sum_of_squares,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import (
    check_decay,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)

# Below this squared norm of the momentum no step is taken (Optax's threshold, float64's epsilon).
_TINY_NORM = float(np.finfo(np.float64).eps)


def _loss_value(value, name: str):
    if value is None:
        raise ValueError(f"{name} needs the loss: call update(updates, state, params, value=loss).")
    return value


class MomoState(NamedTuple):
    """State of ``momo``: ``exp_avg`` the momentum ``d``, ``barf`` the averaged loss ``f_bar``,
    ``gamma`` the averaged ``<g, w>``, ``lb`` the loss lower bound in use, ``count`` the step count."""

    exp_avg: PyTree
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


def _proximal_step(direction, params, tau, alpha, weight_decay):
    """``w_{k+1} - w_k`` for ``w_{k+1} = (w_k - tau d_k) / (1 + alpha lambda)`` (the paper's decay)."""
    shrink = 1 + alpha * weight_decay
    # Written as a difference of two terms, not (w - tau d) / shrink - w, to avoid cancellation.
    return jax.tree.map(
        lambda dk, p: (-(alpha * weight_decay / shrink) * p - (tau / shrink) * dk).astype(p.dtype), direction, params
    )


@check_schedule_arguments
def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: float = 0.9,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformationExtraArgs:
    """MoMo (Schaipp et al. 2023): SGD with momentum and the step ``min(alpha_k, Polyak step)``.

    With ``f_k`` the loss passed as ``value=`` and ``f_*`` the lower bound; at ``k = 1`` the
    averages start at ``d_1 = g_1``, ``f_bar_1 = f_1``, ``gamma_1 = <g_1, w_1>``:

    .. math::
        d_k = \\beta d_{k-1} + (1-\\beta) g_k, \\quad
        \\bar f_k = \\beta \\bar f_{k-1} + (1-\\beta) f_k, \\quad
        \\gamma_k = \\beta \\gamma_{k-1} + (1-\\beta) \\langle g_k, w_k \\rangle

        \\tau_k = \\min\\Big(\\alpha_k, \\frac{\\big((1+\\alpha_k\\lambda)(\\bar f_k - f_* - \\gamma_k)
        + \\langle d_k, w_k\\rangle\\big)_+}{\\|d_k\\|^2}\\Big), \\qquad
        w_{k+1} = \\frac{w_k - \\tau_k d_k}{1 + \\alpha_k \\lambda}

    With ``adapt_lower_bound`` the bound ``f_*`` is estimated on the fly (Schaipp et al.,
    Section 5): reset to ``max(cap / (2(1+alpha lambda)), lower_bound)`` when
    ``cap = (1+alpha lambda)(f_bar - gamma) + <d, w>`` falls below ``(1+alpha lambda) f_*``, then
    updated to ``max(f_bar + <d, w> - gamma - tau ||d||^2 / 2, lower_bound)``.
    No step is taken while ``||d_k||^2`` is below float64's epsilon.

    Args:
      learning_rate: ``alpha_k``, the largest step (a float or schedule). Default 1.0.
      beta: momentum ``beta`` in [0, 1). Default 0.9.
      lower_bound: ``f_*``, a lower bound of the loss (0 suits most losses). Default 0.
      weight_decay: ``lambda`` >= 0. Default 0.
      adapt_lower_bound: estimate ``f_*`` online, as above. Default False.

    State: ``MomoState(exp_avg, barf, gamma, lb, count)``. Needs ``params`` and ``value=``.

    Matches ``optax.contrib.momo`` when ``weight_decay == 0``. With weight decay this follows
    the paper and the authors' ``momo.Momo``: the whole step ``w - tau d`` is divided by
    ``1 + alpha lambda``; Optax divides only ``w`` (its step is ``w / (1 + alpha lambda) - tau d``).

    References:
      Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for Adaptive Learning
      Rates", ICML 2024, arXiv:2305.07583.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_decay(beta, "beta")
    check_non_negative(weight_decay, "weight_decay")

    def init_fn(params: Params) -> MomoState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        return MomoState(tree_zeros_like(params), zero, zero, jnp.asarray(lower_bound, dtype), zero_step_count())

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        check_state_type(state, MomoState, "momo")
        del extra_args
        if params is None:
            raise ValueError("momo needs the parameters: call update(updates, state, params, value=loss).")
        value = _loss_value(value, "momo")
        check_trees_match(updates, state.exp_avg, name="updates", reference_name="momo state")
        dtype = state.barf.dtype
        bt = jnp.where(state.count == 0, 0.0, beta)
        barf = (bt * state.barf + (1 - bt) * jnp.asarray(value, dtype)).astype(dtype)
        exp_avg = jax.tree.map(lambda m, g: (bt * m + (1 - bt) * g).astype(m.dtype), state.exp_avg, updates)
        gamma = (bt * state.gamma + (1 - bt) * _vdot(updates, params)).astype(dtype)
        norm_sq = tree_sum_of_squares(exp_avg)
        inner = _vdot(exp_avg, params)
        alpha = value_at(learning_rate, state.count)
        shrink = 1 + alpha * weight_decay
        lb = state.lb
        if adapt_lower_bound:
            cap = shrink * (barf - gamma) + inner
            lb = jnp.where(cap < shrink * lb, jnp.maximum(cap / (2 * shrink), lower_bound), lb)
        t1 = jnp.maximum(shrink * (barf - lb - gamma) + inner, 0.0) / norm_sq
        t1 = jnp.where(norm_sq <= _TINY_NORM, 0.0, t1)
        tau = jnp.minimum(alpha, t1)
        new_updates = _proximal_step(exp_avg, params, tau, alpha, weight_decay)
        if adapt_lower_bound:
            lb = jnp.maximum(barf + inner - gamma - 0.5 * tau * norm_sq, lower_bound)
        else:
            lb = state.lb
        return new_updates, MomoState(exp_avg, barf, gamma, jnp.asarray(lb, dtype), saturating_increment(state.count))

    return GradientTransformationExtraArgs(init_fn, update_fn)


class MomoAdamState(NamedTuple):
    """State of ``momo_adam``: ``exp_avg`` and ``exp_avg_sq`` Adam's moments, ``barf`` the averaged
    loss, ``gamma`` the averaged ``<g, w>``, ``lb`` the lower bound in use, ``count`` the step count."""

    exp_avg: PyTree
    exp_avg_sq: PyTree
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


@check_schedule_arguments
def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformationExtraArgs:
    """MoMo-Adam (Schaipp et al. 2023): Adam with the step ``min(alpha_k / c_k, Polyak step)``.

    With ``c_k = 1 - beta_1^k``, averages starting at zero and ``D_k = epsilon + sqrt(v_k / (1 -
    beta_2^k))``:

    .. math::
        d_k = \\beta_1 d_{k-1} + (1-\\beta_1) g_k, \\quad
        v_k = \\beta_2 v_{k-1} + (1-\\beta_2) g_k^2, \\quad
        \\bar f_k = \\beta_1 \\bar f_{k-1} + (1-\\beta_1) f_k, \\quad
        \\gamma_k = \\beta_1 \\gamma_{k-1} + (1-\\beta_1) \\langle g_k, w_k \\rangle

        \\tau_k = \\min\\Big(\\frac{\\alpha_k}{c_k}, \\frac{\\big((1+\\alpha_k\\lambda)(\\bar f_k - c_k f_*
        - \\gamma_k) + \\langle d_k, w_k\\rangle\\big)_+}{\\langle d_k, d_k / D_k \\rangle}\\Big), \\qquad
        w_{k+1} = \\frac{w_k - \\tau_k d_k / D_k}{1 + \\alpha_k \\lambda}

    ``adapt_lower_bound`` estimates ``f_*`` as in ``momo`` with the ``c_k`` factors of the paper.

    Args:
      learning_rate: ``alpha_k`` (a float or schedule). Default 1e-2.
      b1, b2: ``beta_1``, ``beta_2`` in [0, 1). Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0. Default 1e-8.
      lower_bound: ``f_*``. Default 0.
      weight_decay: ``lambda`` >= 0. Default 0.
      adapt_lower_bound: estimate ``f_*`` online. Default False.

    State: ``MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, lb, count)``. Needs ``params`` and
    ``value=``.

    Matches ``optax.contrib.momo_adam`` when ``weight_decay == 0``. With weight decay this is the
    paper's proximal step, as in the authors' ``MomoAdam(divide=True)``: Optax's step is
    ``w / (1 + alpha lambda) - tau d / D``, without dividing ``tau d / D``.

    References:
      Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for Adaptive Learning
      Rates", ICML 2024, arXiv:2305.07583.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_positive(eps, "eps")
    check_non_negative(weight_decay, "weight_decay")

    def init_fn(params: Params) -> MomoAdamState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        zeros = tree_zeros_like(params)
        return MomoAdamState(zeros, zeros, zero, zero, jnp.asarray(lower_bound, dtype), zero_step_count())

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        check_state_type(state, MomoAdamState, "momo_adam")
        del extra_args
        if params is None:
            raise ValueError("momo_adam needs the parameters: call update(updates, state, params, value=loss).")
        value = _loss_value(value, "momo_adam")
        check_trees_match(updates, state.exp_avg, name="updates", reference_name="momo_adam state")
        dtype = state.barf.dtype
        count = saturating_increment(state.count)
        barf = (b1 * state.barf + (1 - b1) * jnp.asarray(value, dtype)).astype(dtype)
        exp_avg = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, updates)
        debias2 = jnp.asarray(1 - b2**count, dtype)
        precond = jax.tree.map(lambda v: eps + jnp.sqrt(v / debias2), exp_avg_sq)
        direction = jax.tree.map(jnp.divide, exp_avg, precond)
        norm_sq = _vdot(exp_avg, direction)
        gamma = (b1 * state.gamma + (1 - b1) * _vdot(updates, params)).astype(dtype)
        inner = _vdot(exp_avg, params)
        alpha = value_at(learning_rate, state.count)
        debias1 = jnp.asarray(1 - b1**count, dtype)
        shrink = 1 + alpha * weight_decay
        lb = state.lb
        if adapt_lower_bound:
            cap = shrink * (barf - gamma) + inner
            lb = jnp.where(cap < shrink * debias1 * lb, jnp.maximum(cap / (2 * debias1 * shrink), lower_bound), lb)
        t1 = jnp.maximum(shrink * (barf - debias1 * lb - gamma) + inner, 0.0) / norm_sq
        t1 = jnp.where(norm_sq <= _TINY_NORM, 0.0, t1)
        tau = jnp.minimum(alpha / debias1, t1)
        new_updates = _proximal_step(direction, params, tau, alpha, weight_decay)
        if adapt_lower_bound:
            lb = jnp.maximum((barf + inner - gamma - 0.5 * tau * norm_sq) / debias1, lower_bound)
        else:
            lb = state.lb
        new_state = MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, jnp.asarray(lb, dtype), count)
        return new_updates, new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)
