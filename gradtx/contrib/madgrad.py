"""MADGRAD: momentumized, adaptive, dual-averaged gradient descent."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import chain
from gradtx.regularization import add_decayed_weights
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    saturating_increment,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import (
    check_closed_unit,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)


class MadgradState(NamedTuple):
    """State of ``scale_by_madgrad``: step ``count``, the weighted sums ``grad_sum_sq`` (``v_k``) of
    squared gradients and ``s`` (``s_k``) of gradients, and the initial point ``x0`` (Optax's fields)."""

    count: jax.Array
    grad_sum_sq: PyTree
    s: PyTree
    x0: Params


@check_schedule_arguments
def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi 2021, Algorithm 1); returns the full step ``x_{k+1} - x_k``.

    .. math::
        \\lambda_k = (\\gamma_k + \\epsilon) \\sqrt{k + 1}, \\qquad
        s_{k+1} = s_k + \\lambda_k g_k, \\qquad v_{k+1} = v_k + \\lambda_k g_k^2

        z_{k+1} = x_0 - \\frac{s_{k+1}}{v_{k+1}^{1/3} + \\epsilon}, \\qquad
        x_{k+1} = (1 - c)\\, z_{k+1} + c\\, x_k, \\quad c = \\text{momentum}

    The cube root (not a square root) makes the dual-averaging step scale-free.

    Args:
      learning_rate: ``gamma`` (a float or a schedule, read at ``k`` = 0, 1, ...).
      momentum: ``c`` in [0, 1]. Default 0.9 (0 is plain dual averaging, ``x_{k+1} = z_{k+1}``).
      eps: ``epsilon`` > 0. Default 1e-6.

    State: ``MadgradState(count, grad_sum_sq=v, s, x0)``; ``update`` needs ``params`` (``x_k``).
    Matches ``optax.contrib.scale_by_madgrad`` and the authors' ``madgrad.MADGRAD`` (as
    ``pytorch_optimizer.MADGRAD``).

    References:
      Defazio & Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual Averaged
      Gradient Method for Stochastic Optimization", JMLR 2022, arXiv:2101.11075.
    """
    check_closed_unit(momentum, "momentum")
    check_positive(eps, "eps")
    if not callable(learning_rate):
        check_non_negative(learning_rate, "learning_rate")

    def init_fn(params: Params) -> MadgradState:
        check_float_leaves(params)
        x0 = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
        return MadgradState(zero_step_count(), tree_zeros_like(params), tree_zeros_like(params), x0)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, MadgradState, "scale_by_madgrad")
        del extra_args
        if params is None:
            raise ValueError("scale_by_madgrad needs the parameters: call update(updates, state, params).")
        check_trees_match(updates, state.s, name="updates", reference_name="madgrad state")
        lr = value_at(learning_rate, state.count)
        lamb = (lr + eps) * jnp.sqrt(state.count + 1.0)
        grad_sum_sq = jax.tree.map(lambda v, g: v + cast_like(lamb, g) * jnp.square(g), state.grad_sum_sq, updates)
        s = jax.tree.map(lambda s, g: s + cast_like(lamb, g) * g, state.s, updates)

        def step(x, x0, s, v):
            z = x0 - s / (jnp.cbrt(v) + cast_like(eps, v))
            return cast_like(1 - momentum, z) * z + cast_like(momentum, x) * x - x

        new_updates = jax.tree.map(step, params, state.x0, s, grad_sum_sq)
        return new_updates, MadgradState(saturating_increment(state.count), grad_sum_sq, s, state.x0)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi 2021) with weight decay added to the gradient.

    ``g_k <- g_k + weight_decay * x_k``, then :func:`scale_by_madgrad`:

    .. math::
        z_{k+1} = x_0 - \\frac{\\sum_{i \\le k} \\lambda_i g_i}{(\\sum_{i \\le k} \\lambda_i g_i^2)^{1/3}
        + \\epsilon}, \\qquad x_{k+1} = (1 - c) z_{k+1} + c x_k

    Args:
      learning_rate: ``gamma`` (a float or a schedule).
      momentum: ``c`` in [0, 1]. Default 0.9.
      weight_decay: coupled L2 coefficient >= 0. Default 0.
      eps: ``epsilon`` > 0. Default 1e-6.

    State: ``(AddDecayedWeightsState, MadgradState)``.
    Matches ``optax.contrib.madgrad`` and the authors' ``MADGRAD(lr, momentum, weight_decay, eps)``
    (``pytorch_optimizer.MADGRAD`` with ``weight_decouple=False``).

    References:
      Defazio & Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual Averaged
      Gradient Method for Stochastic Optimization", JMLR 2022, arXiv:2101.11075.
    """
    return chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate, momentum, eps))


__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]
