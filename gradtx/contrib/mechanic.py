"""Mechanic: a learning-rate tuner that wraps any optimizer and learns the scale of its updates."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params, PyTree
from gradtx.contrib.parameter_free import _scalar_dtype, _vdot
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_global_norm, zero_step_count
from gradtx.validation import check_non_negative, check_positive, check_schedule_arguments, check_state_type


class MechanicState(NamedTuple):
    """State of ``mechanize``.

    ``base_optimizer_state``: the wrapped optimizer's state; ``count``: the step count; ``r``,
    ``m``, ``v``, ``s``: one entry per beta (reward, gradient-size bound, second moment, scale);
    ``x0``: the reference point ``w_0`` (the parameters at the first update).
    """

    base_optimizer_state: OptState
    count: jax.Array
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: PyTree


@check_schedule_arguments
def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: float = 1e-2,
    eps: float = 1e-8,
    s_init: float = 1e-6,
    num_betas: int = 6,
) -> GradientTransformationExtraArgs:
    """Mechanic (Cutkosky, Defazio & Mehta 2023): learns a global scale ``s`` for a base optimizer.

    The base optimizer's updates ``u_t`` are summed into ``Delta_t = sum_{k<=t} u_k`` and the
    parameters are ``w_t = w_0 + (sum_i s_{t,i}) Delta_t``. With ``betas_i = 1 - 10^{-i}``
    (``i = 1..num_betas``) and ``S = sum_i s_{t-1,i}``:

    .. math::
        \\tilde g_t = g_t + \\lambda S \\frac{\\|g_t\\|}{\\|w_t\\| + \\epsilon} w_t, \\qquad
        h_t = \\langle \\tilde g_t, \\Delta_{t-1} \\rangle, \\qquad
        \\bar h_{t,i} = \\mathrm{clip}(h_t, -m_{t-1,i}, m_{t-1,i})

        m_{t,i} = \\max(\\beta_i m_{t-1,i}, |h_t| + \\epsilon), \\qquad
        v_{t,i} = \\beta_i^2 v_{t-1,i} + h_t^2, \\qquad
        r_{t,i} = \\beta_i r_{t-1,i} + \\bar h_{t,i} s_{t-1,i}

        s_{t,i} = \\frac{\\frac{s_{init}}{n} m_{t,i} + \\max(0, r_{t,i})}{\\sqrt{v_{t,i}} + \\epsilon},
        \\qquad w_{t+1} = w_0 + \\Big(\\sum_i s_{t,i}\\Big) \\Delta_t

    ``Delta_{t-1}`` is recomputed as ``(w_t - w_0) / (S + epsilon)`` (the memory-light variant),
    and ``w_0`` is taken at the first update, so parameters loaded after ``init`` are the start.
    The clipping of ``h`` is the authors' later addition (not in the paper), kept as in their
    Optax implementation. The returned update is ``w_{t+1} - w_t``.

    Args:
      base_optimizer: the optimizer whose updates are scaled (its learning rate, or schedule peak,
        set to 1 or any constant).
      weight_decay: ``lambda`` >= 0, Mechanic's own decay on ``g`` (not the base optimizer's).
        Default 1e-2.
      eps: ``epsilon`` > 0. Default 1e-8.
      s_init: ``s_init`` > 0, the initial scale of each of the ``n`` betas. Default 1e-6.
      num_betas: ``n`` >= 1. Default 6.

    State: ``MechanicState(base_optimizer_state, count, r, m, v, s, x0)``. Needs ``params``;
    extra keyword arguments go to the base optimizer.

    Matches ``optax.contrib.mechanize`` (written by the paper's authors).

    References:
      Cutkosky, Defazio & Mehta, "Mechanic: A Learning Rate Tuner", NeurIPS 2023,
      arXiv:2306.00144.
    """
    check_non_negative(weight_decay, "weight_decay")
    check_positive(eps, "eps")
    check_positive(s_init, "s_init")
    if not isinstance(num_betas, int) or isinstance(num_betas, bool) or num_betas < 1:
        raise ValueError(f"num_betas must be an int >= 1, got {num_betas!r}.")
    base_optimizer = with_extra_args_support(base_optimizer)

    def init_fn(params: Params) -> MechanicState:
        dtype = _scalar_dtype(params)
        zeros = jnp.zeros([num_betas], dtype)
        return MechanicState(
            base_optimizer.init(params), zero_step_count(), zeros, zeros, zeros, jnp.full([num_betas], s_init, dtype),
            params,
        )

    def update_fn(updates, state, params=None, **extra_args: Any):
        check_state_type(state, MechanicState, "mechanize")
        if params is None:
            raise ValueError("mechanize needs the parameters: call update(updates, state, params).")
        check_trees_match(updates, state.x0, name="updates", reference_name="mechanic state")
        base_updates, base_state = base_optimizer.update(updates, state.base_optimizer_state, params, **extra_args)
        x0 = jax.lax.cond(state.count == 0, lambda: params, lambda: state.x0)
        s_sum = jnp.sum(state.s)
        decay_scale = weight_decay * s_sum * tree_global_norm(updates) / (tree_global_norm(params) + eps)
        decayed = jax.tree.map(lambda g, p: g + decay_scale * p, updates, params)
        delta_prev = jax.tree.map(lambda p, p0: (p0 - p) / (s_sum + eps), params, x0)
        # Optax's updates carry the descent sign (u = -lr d), so Delta accumulates -u.
        delta = jax.tree.map(jnp.subtract, delta_prev, base_updates)
        h = _vdot(decayed, delta_prev)
        dtype = state.s.dtype
        betas = jnp.asarray([1.0 - 0.1**i for i in range(1, num_betas + 1)], dtype)
        clipped_h = jax.lax.clamp(-state.m, jnp.full_like(state.m, h), state.m)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = betas**2 * state.v + h**2
        r = betas * state.r + clipped_h * state.s
        wealth = (s_init / num_betas) * m + jnp.maximum(0.0, r)
        s = wealth / (jnp.sqrt(v) + eps)
        total = jnp.sum(s)
        new_updates = jax.tree.map(lambda p0, dl, p: (p0 - total * dl) - p, x0, delta, params)
        return new_updates, MechanicState(base_state, saturating_increment(state.count), r, m, v, s, x0)

    return GradientTransformationExtraArgs(init_fn, update_fn)
