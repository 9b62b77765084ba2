"""Optimistic gradient methods: extrapolate with the previous gradient, for min-max games.

``scale_by_optimistic_gradient`` returns ``(alpha + beta) g_t - beta g_{t-1}``; chained after a
gradient it is optimistic gradient descent, chained after Adam's scaling it is Optimistic Adam.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.adam import scale_by_adam
from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import chain
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import cast_like, check_float_leaves, check_trees_match, tree_zeros_like
from gradtx.validation import check_non_negative, check_schedule_arguments, check_state_type


def _check_number(value: Any, name: str) -> None:
    if callable(value):
        raise TypeError(f"{name} must be a number or an array, not a schedule; got {value!r}.")
    check_non_negative(value, name)


class ScaleByOptimisticGradientState(NamedTuple):
    """State of ``scale_by_optimistic_gradient`` (Optax's fields): first-step flag and ``g_{t-1}``."""

    is_initial_step: jax.Array
    previous_gradient: PyTree


@check_schedule_arguments
def scale_by_optimistic_gradient(alpha: float = 1.0, beta: float = 1.0) -> GradientTransformation:
    """Optimistic extrapolation of the incoming updates.

    .. math::
        u_t = (\\alpha + \\beta)\\, g_t - \\beta\\, g_{t-1}, \\qquad g_0 := g_1 \\ (\\text{so } u_1 = \\alpha g_1)

    Args:
      alpha: weight of the current gradient, >= 0. Default 1.
      beta: weight of the extrapolation ``g_t - g_{t-1}``, >= 0. Default 1.

    State: ``ScaleByOptimisticGradientState(is_initial_step, previous_gradient)``. Complex leaves
    are accepted (the rule is linear). Matches ``optax.scale_by_optimistic_gradient``.
    Reference: Daskalakis et al., "Training GANs with optimism", ICLR 2018; Mokhtari, Ozdaglar,
    Pattathil, "A unified analysis of extra-gradient and optimistic gradient methods", AISTATS 2020.
    """
    _check_number(alpha, "alpha")
    _check_number(beta, "beta")

    def init_fn(params: Params) -> ScaleByOptimisticGradientState:
        check_float_leaves(params, allow_complex=True)
        return ScaleByOptimisticGradientState(jnp.array(True), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByOptimisticGradientState, "scale_by_optimistic_gradient")
        del params, extra_args
        check_trees_match(updates, state.previous_gradient, name="updates", reference_name="optimistic state")

        def extrapolate(g, previous):
            previous = jnp.where(state.is_initial_step, g, previous)
            return cast_like(alpha + beta, g) * g - cast_like(beta, g) * previous

        new_updates = jax.tree.map(extrapolate, updates, state.previous_gradient)
        return new_updates, ScaleByOptimisticGradientState(jnp.array(False), updates)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule, alpha: float = 1.0, beta: float = 1.0
) -> GradientTransformation:
    """Optimistic gradient descent: ``w_t = w_{t-1} - eta_t ((alpha + beta) g_t - beta g_{t-1})``.

    Arguments, defaults and numbers are ``optax.optimistic_gradient_descent``'s (``alpha`` and
    ``beta`` must be numbers, as in Optax's building block).
    Reference: Mokhtari, Ozdaglar, Pattathil, AISTATS 2020.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))


def _schedule_needs_v2(builder: Any) -> Any:
    """Points a schedule given as ``optimistic_adam``'s learning_rate to ``optimistic_adam_v2``."""
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if callable(signature.bind_partial(*args, **kwargs).arguments.get("learning_rate")):
            raise TypeError("optimistic_adam takes a number as learning_rate; use optimistic_adam_v2 for a schedule.")
        return builder(*args, **kwargs)

    return checked


@_schedule_needs_v2
@check_schedule_arguments
def optimistic_adam(
    learning_rate: float,
    optimism: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-08,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam, Optax's first form: the learning rate sits inside the extrapolation.

    .. math::
        w_t = w_{t-1} - \\left((\\eta + \\beta)\\, a_t - \\beta\\, a_{t-1}\\right), \\qquad
        a_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}

    with ``beta = optimism`` (default ``eta``) and ``a_t`` from ``scale_by_adam`` (Nesterov by
    default). ``learning_rate`` must be a number; use ``optimistic_adam_v2`` for schedules.
    Matches ``optax.optimistic_adam`` (deprecated there in favour of ``optimistic_adam_v2``; kept
    here without a warning, so that ported code runs unchanged).
    Reference: Daskalakis et al., "Training GANs with optimism", ICLR 2018.
    """
    if callable(learning_rate):
        raise TypeError("optimistic_adam takes a number as learning_rate; use optimistic_adam_v2 for a schedule.")
    check_non_negative(learning_rate, "learning_rate")
    optimism = learning_rate if optimism is None else optimism
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
        scale_by_learning_rate(1.0),
    )


@check_schedule_arguments
def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-08,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam: ``w_t = w_{t-1} - eta_t ((alpha + beta) a_t - beta a_{t-1})``, ``a_t`` Adam's step.

    ``a_t = m_hat_t / (sqrt(v_hat_t + eps_root) + eps)`` from ``scale_by_adam`` (Nesterov by
    default). Arguments, defaults and numbers are ``optax.optimistic_adam_v2``'s.
    Reference: Daskalakis et al., "Training GANs with optimism", ICLR 2018.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )
