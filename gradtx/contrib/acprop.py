"""ACProp: AdaBelief's centred second moment, used one step late (asynchronously)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import bias_correction
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    moving_average,
    saturating_increment,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import check_decay, check_non_negative, check_schedule_arguments, check_state_type


class ScaleByBeliefState(NamedTuple):
    """State of ``scale_by_acprop``: step ``count``, first moment ``mu`` and centred second moment ``nu``
    (Optax's ``ScaleByBeliefState`` fields)."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_acprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    center_on_previous_mu: bool = False,
) -> GradientTransformation:
    """ACProp scaling (Zhuang et al. 2021): the denominator uses only information before step ``t``.

    .. math::
        u_t = \\frac{g_t}{\\sqrt{s_{t-1} / (1-\\beta_2^{t-1})} + \\epsilon} \\quad (u_1 = g_1 / (1 + \\epsilon))

        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2) (g_t - m_t)^2 + \\epsilon_{root}

    (``m_{t-1}`` in place of ``m_t``, Optax's code, with ``center_on_previous_mu=True``).

    Args:
      b1: ``beta_1`` in [0, 1). Default 0.9.
      b2: ``beta_2`` in [0, 1). Default 0.999.
      eps: ``epsilon`` >= 0 outside the root. Default 1e-16.
      eps_root: ``epsilon_root`` >= 0 added to ``s``. Default 1e-16.
      center_on_previous_mu: False (default) centres ``g_t`` on ``m_t``, as the paper
        (Algorithm 2), Optax's own docstring and the authors' code (``juntang-zhuang/ACProp-Optimizer``)
        do; True centres on ``m_{t-1}``, as Optax's code does (Optax's numbers). ``g_t - m_t = beta_1 (g_t - m_{t-1})``,
        so Optax's ``s`` is ``1 / beta_1^2`` (1.23) times the paper's and its steps 0.9 times as long.

    State: ``ScaleByBeliefState(count, mu=m, nu=s)``.
    Matches the authors' ``ACProp(rectify=False)`` by default; with ``center_on_previous_mu=True``
    it matches ``optax.contrib.scale_by_acprop`` (their experiments' setting; their ``eps``, added
    to ``s`` every step, is ``eps_root`` here, and the outer ``eps`` as well).

    References:
      Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan, "Momentum Centering and Asynchronous Update
      for Adaptive Gradient Methods", NeurIPS 2021, arXiv:2110.05454.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_non_negative(eps, "eps")
    check_non_negative(eps_root, "eps_root")

    def init_fn(params: Params) -> ScaleByBeliefState:
        check_float_leaves(params)
        return ScaleByBeliefState(zero_step_count(), tree_zeros_like(params), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByBeliefState, "scale_by_acprop")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="acprop state")
        mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, m, s: cast_like(b2, s) * s + cast_like(1 - b2, s) * jnp.square(g - m) + cast_like(eps_root, s),
            updates, state.mu if center_on_previous_mu else mu, state.nu,
        )
        first = state.count == 0
        # The previous s, debiased at its own step; on the first step there is none and the scale is 1.
        previous = bias_correction(state.nu, b2, jnp.where(first, 1, state.count))
        new_updates = jax.tree.map(
            lambda g, s: g / (jnp.sqrt(jnp.where(first, jnp.ones_like(s), s)) + cast_like(eps, s)), updates, previous
        )
        return new_updates, ScaleByBeliefState(saturating_increment(state.count), mu, nu)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def acprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn | None = None,
    *,
    center_on_previous_mu: bool = False,
) -> GradientTransformation:
    """ACProp (Zhuang et al. 2021) with decoupled weight decay.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\frac{g_t}{\\sqrt{\\hat s_{t-1}} + \\epsilon} + \\lambda w_{t-1} \\right)

    with ``s`` the centred second moment of :func:`scale_by_acprop`.

    Args:
      learning_rate: ``eta`` (a float or a schedule).
      b1, b2, eps, eps_root: as in :func:`scale_by_acprop` (defaults 0.9, 0.999, 1e-16, 1e-16).
      weight_decay: ``lambda`` >= 0, multiplied by ``eta``. Default 0.
      mask: which leaves decay.
      center_on_previous_mu: as in :func:`scale_by_acprop`. Default False (the paper's and the
        authors' centring on ``m_t``); True gives Optax's numbers.

    The numerator is the raw gradient ``g_t`` (paper, authors' code, Optax alike), divided by the
    spread of the gradients around their mean: where gradients agree across steps that spread is
    small and the step long, so ACProp needs a smaller learning rate than Adam (its
    ``eps = 1e-16`` gives no floor).

    State: ``(ScaleByBeliefState, AddDecayedWeightsState, ScaleByScheduleState)``.
    Matches ``optax.contrib.acprop`` by default.

    References:
      Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan, "Momentum Centering and Asynchronous Update
      for Adaptive Gradient Methods", NeurIPS 2021, arXiv:2110.05454.
    """
    return chain(
        scale_by_acprop(b1, b2, eps, eps_root, center_on_previous_mu=center_on_previous_mu),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


__all__ = ["ScaleByBeliefState", "acprop", "scale_by_acprop"]
