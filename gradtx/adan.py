"""Adan (Xie et al.): adaptive Nesterov momentum estimated from gradient differences.

Follows the paper's Algorithm 1 and the authors' code where ``optax.adan`` departs from them; the
docstrings say where.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.adam import _adaptive_step
from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import MaskOrFn, chain, masked
from gradtx.momentum import bias_correction
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    abs_sq,
    cast_like,
    check_float_leaves,
    check_trees_match,
    clip_for_square,
    moving_average,
    saturating_increment,
    tree_real_zeros_like,
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


class ScaleByAdanState(NamedTuple):
    """State of ``scale_by_adan`` (Optax's fields): moments ``m``, ``v``, ``n``, last gradient ``g``, count ``t``."""

    m: PyTree
    v: PyTree
    n: PyTree
    g: PyTree
    t: jax.Array


@check_schedule_arguments
def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """Adan scaling: Nesterov momentum estimated from the gradient difference, no extra gradient.

    With ``d_t = g_t - g_{t-1}`` (``d_1 = 0``):

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) d_t

        n_t = \\beta_3 n_{t-1} + (1-\\beta_3) |g_t + \\beta_2 d_t|^2, \\qquad
        u_t = \\frac{\\hat m_t + \\beta_2 \\hat v_t}{\\sqrt{\\hat n_t + \\epsilon_{root}} + \\epsilon}

    where hats divide by ``1 - beta^t`` (the authors' code). In the paper's notation the decays
    are ``1 - beta`` (its ``beta_1 = 0.02`` is ``b1 = 0.98``) and the weight of ``d_t`` is its
    ``1 - beta_2``, i.e. ``b2`` here.

    Args:
      b1, b2, b3: decays in [0, 1). Defaults 0.98, 0.92, 0.99.
      eps: ``epsilon`` > 0 outside the root. Default 1e-8.
      eps_root: ``epsilon_root`` >= 0 inside the root. Default 0.

    State: ``ScaleByAdanState(m, v, n, g, t)``. Complex leaves use ``|g + b2 d|^2`` (real ``n``);
    Optax's Adan rejects them.

    Differs from ``optax.scale_by_adan`` (0.2.8), which weighs ``d_t`` by ``1 - b2`` (0.08)
    instead of ``b2`` (0.92) in ``n_t`` and ``u_t``, unlike the paper's Algorithm 1 and the
    authors' code (Optax pull request 1715). Identical on the first step, where ``d_1 = 0``.
    Reference: Xie et al., "Adan: adaptive Nesterov momentum algorithm for faster optimizing deep
    models", TPAMI 2024 (arXiv:2208.06677).
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_decay(b3, "b3")
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")

    def init_fn(params: Params) -> ScaleByAdanState:
        check_float_leaves(params, allow_complex=True)
        zeros = tree_zeros_like(params)
        return ScaleByAdanState(zeros, zeros, tree_real_zeros_like(params), zeros, zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByAdanState, "scale_by_adan")
        del params, extra_args
        check_trees_match(updates, state.m, name="updates", reference_name="adan state")
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        updates = jax.tree.map(clip_for_square, updates, state.n)
        first = state.t == 0
        diffs = jax.tree.map(lambda g, prev: jnp.where(first, jnp.zeros_like(g), g - prev), updates, state.g)
        m = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.m)
        v = jax.tree.map(lambda d, v: moving_average(d, v, b2), diffs, state.v)
        n = jax.tree.map(
            lambda g, d, n: moving_average(abs_sq(g + cast_like(b2, d) * d), n, b3), updates, diffs, state.n
        )
        t = saturating_increment(state.t)
        m_hat, v_hat, n_hat = bias_correction(m, b1, t), bias_correction(v, b2, t), bias_correction(n, b3, t)
        numerators = jax.tree.map(lambda a, b: a + cast_like(b2, b) * b, m_hat, v_hat)
        return _adaptive_step(numerators, n_hat, updates, eps, eps_root), ScaleByAdanState(m, v, n, updates, t)

    return GradientTransformation(init_fn, update_fn)


class ProximalDecayState(NamedTuple):
    """State of Adan's proximal weight decay: the step count, for scheduled ``eta`` and ``lambda``."""

    count: jax.Array


def _proximal_weight_decay(learning_rate: ScalarOrSchedule, weight_decay: ScalarOrSchedule) -> GradientTransformation:
    """``u <- (u - eta lambda w) / (1 + eta lambda)``, i.e. ``w_t = (w_{t-1} + u) / (1 + eta lambda)``."""

    def init_fn(params: Params) -> ProximalDecayState:
        del params
        return ProximalDecayState(zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("adan(weight_decay > 0) needs the parameters: call update(grads, state, params).")
        check_trees_match(updates, params, name="updates", reference_name="params")
        shrink = value_at(learning_rate, state.count) * value_at(weight_decay, state.count)
        new_updates = jax.tree.map(
            lambda u, w: (u - cast_like(shrink, u) * w) / (1 + cast_like(shrink, u)), updates, params
        )
        return new_updates, ProximalDecayState(saturating_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn | None = None,
    *,
    no_prox: bool = False,
) -> GradientTransformation:
    """Adan with the paper's proximal weight decay.

    .. math::
        w_t = \\frac{w_{t-1} - \\eta_t u_t}{1 + \\eta_t \\lambda_t}
        \\quad\\text{or, with no\\_prox,}\\quad w_t = w_{t-1} - \\eta_t (u_t + \\lambda_t w_{t-1})

    with ``u_t`` from ``scale_by_adan``. The arguments and defaults are ``optax.adan``'s, plus
    ``no_prox`` (the authors' name for the decoupled, AdamW-style decay).

    Differs from ``optax.adan`` (0.2.8) in two places, both following Algorithm 1 of the paper and
    the authors' code: the gradient-difference weight (see ``scale_by_adan``), and weight decay,
    which Optax applies in the ``no_prox`` form. ``mask`` selects the decayed leaves.
    Reference: Xie et al., arXiv:2208.06677 (TPAMI 2024).
    """
    check_non_negative(learning_rate, "learning_rate")
    check_non_negative(weight_decay, "weight_decay")
    if no_prox:
        return chain(
            scale_by_adan(b1, b2, b3, eps, eps_root),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    decay = _proximal_weight_decay(learning_rate, weight_decay)
    return chain(
        scale_by_adan(b1, b2, b3, eps, eps_root),
        scale_by_learning_rate(learning_rate),
        decay if mask is None else masked(decay, mask),
    )
