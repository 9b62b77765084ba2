"""AdEMAMix and Simplified AdEMAMix: Adam with a second, much slower momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import bias_correction
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_eps_like,
    cast_like,
    check_float_leaves,
    check_trees_match,
    moving_average,
    saturating_increment,
    tree_cast,
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


def _denominator(v: jax.Array, eps: float, eps_root: float) -> jax.Array:
    return jnp.sqrt(v + cast_like(eps_root, v)) + cast_eps_like(eps, v)


class ScaleByAdemamixState(NamedTuple):
    """State of ``scale_by_ademamix``: step ``count``, the step ``count_m2`` at which ``b3`` and
    ``alpha`` are read, fast EMA ``m1``, slow EMA ``m2`` and second moment ``nu`` (Optax's fields)."""

    count: jax.Array
    count_m2: jax.Array
    m1: PyTree
    m2: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    """AdEMAMix scaling (Pagliardini et al. 2024): a fast and a slow EMA over Adam's denominator.

    .. math::
        m^{(1)}_t = \\beta_1 m^{(1)}_{t-1} + (1-\\beta_1) g_t, \\quad
        m^{(2)}_t = \\beta_3 m^{(2)}_{t-1} + (1-\\beta_3) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

        u_t = \\frac{m^{(1)}_t / (1-\\beta_1^t) + \\alpha\\, m^{(2)}_t}
        {\\sqrt{v_t / (1-\\beta_2^t) + \\epsilon_{root}} + \\epsilon}

    The slow EMA is not debiased (it is meant to fill slowly). ``b3`` and ``alpha`` may be
    schedules (the paper warms both up over its ``T_{alpha,beta_3}`` steps), read at ``count_m2``
    = 0, 1, ...

    Args:
      b1: ``beta_1`` in [0, 1). Default 0.9.
      b2: ``beta_2`` in [0, 1). Default 0.999.
      b3: ``beta_3`` in [0, 1) or a schedule. Default 0.9999.
      alpha: ``alpha`` >= 0 or a schedule. Default 6.0 (``ademamix`` uses 5.0, as in Optax).
      eps: ``epsilon`` > 0. Default 1e-8.
      eps_root: ``epsilon_root`` >= 0. Default 0.
      mu_dtype: storage dtype of ``m1``, ``m2`` and ``nu``.

    State: ``ScaleByAdemamixState(count, count_m2, m1, m2, nu)``.
    Matches ``optax.contrib.scale_by_ademamix``.

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", 2024,
      arXiv:2409.03137.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_decay(b3, "b3")
    check_non_negative(alpha, "alpha")
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")

    def init_fn(params: Params) -> ScaleByAdemamixState:
        check_float_leaves(params)
        zeros = tree_zeros_like(params, mu_dtype)
        return ScaleByAdemamixState(zero_step_count(), zero_step_count(), zeros, zeros, zeros)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByAdemamixState, "scale_by_ademamix")
        del params, extra_args
        check_trees_match(updates, state.m1, name="updates", reference_name="ademamix state")
        beta3 = value_at(b3, state.count_m2)
        mix = value_at(alpha, state.count_m2)
        m1 = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.m1)
        m2 = jax.tree.map(lambda g, m: moving_average(g, m, beta3), updates, state.m2)
        nu = jax.tree.map(lambda g, v: moving_average(jnp.square(g), v, b2), updates, state.nu)
        count = saturating_increment(state.count)
        m1_hat = bias_correction(m1, b1, count)
        nu_hat = bias_correction(nu, b2, count)
        new_updates = jax.tree.map(
            lambda a, b, v, g: ((a + cast_like(mix, b) * b) / _denominator(v, eps, eps_root)).astype(g.dtype),
            m1_hat, m2, nu_hat, updates,
        )
        new_state = ScaleByAdemamixState(
            count, saturating_increment(state.count_m2), tree_cast(m1, mu_dtype), tree_cast(m2, mu_dtype),
            tree_cast(nu, mu_dtype),
        )
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """AdEMAMix (Pagliardini et al. 2024): :func:`scale_by_ademamix` with decoupled weight decay.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\frac{\\hat m^{(1)}_t + \\alpha m^{(2)}_t}{\\sqrt{\\hat v_t +
        \\epsilon_{root}} + \\epsilon} + \\lambda w_{t-1} \\right)

    Args:
      learning_rate: ``eta`` (a float or a schedule).
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: as in :func:`scale_by_ademamix` (defaults 0.9,
        0.999, 0.9999, 5.0, 1e-8, 0, None).
      weight_decay: ``lambda`` >= 0, multiplied by ``eta``. Default 0.
      mask: which leaves decay (a tree of booleans or a function of the params).

    State: ``(ScaleByAdemamixState, AddDecayedWeightsState, ScaleByScheduleState)``.
    Matches ``optax.contrib.ademamix`` and ``pytorch_optimizer.AdEMAMix(lr, betas=(b1, b2, b3),
    alpha, eps, weight_decay, weight_decouple=True)`` with constant ``alpha`` and ``b3``.

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", 2024,
      arXiv:2409.03137.
    """
    return chain(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of ``scale_by_simplified_ademamix``: step ``t``, momentum sum ``m`` and second moment ``n``
    (Optax's fields)."""

    t: jax.Array
    m: PyTree
    n: PyTree


@check_schedule_arguments
def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    """Simplified AdEMAMix scaling (Morwani et al. 2025): one undamped momentum plus ``alpha g``.

    .. math::
        m_t = \\beta_1 m_{t-1} + g_t, \\qquad n_t = \\beta_2 n_{t-1} + (1-\\beta_2) g_t^2, \\qquad
        u_t = \\frac{m_t + \\alpha g_t}{\\sqrt{n_t / (1-\\beta_2^t) + \\epsilon_{root}} + \\epsilon}

    ``alpha = 0`` is Adam with ``eta' = eta / (1 - beta_1)`` and no first-moment debiasing.

    Args:
      b1: ``beta_1`` in [0, 1). Default 0.99.
      b2: ``beta_2`` in [0, 1). Default 0.95.
      alpha: ``alpha`` >= 0 or a schedule (read at ``t`` = 0, 1, ...). Default 0.
      eps: ``epsilon`` > 0. Default 1e-8.
      eps_root: ``epsilon_root`` >= 0. Default 0.

    State: ``ScaleBySimplifiedAdEMAMixState(t, m, n)``.
    Matches ``optax.contrib.scale_by_simplified_ademamix``.

    References:
      Morwani, Vyas, Kakade & Wang, "Connections between Schedule-Free Optimizers, AdEMAMix, and
      Accelerated SGD Variants", 2025, arXiv:2502.02431.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_non_negative(alpha, "alpha")
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")

    def init_fn(params: Params) -> ScaleBySimplifiedAdEMAMixState:
        check_float_leaves(params)
        return ScaleBySimplifiedAdEMAMixState(zero_step_count(), tree_zeros_like(params), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleBySimplifiedAdEMAMixState, "scale_by_simplified_ademamix")
        del params, extra_args
        check_trees_match(updates, state.m, name="updates", reference_name="simplified ademamix state")
        mix = value_at(alpha, state.t)
        m = jax.tree.map(lambda g, m: cast_like(b1, m) * m + g, updates, state.m)
        n = jax.tree.map(lambda g, v: moving_average(jnp.square(g), v, b2), updates, state.n)
        t = saturating_increment(state.t)
        n_hat = bias_correction(n, b2, t)
        new_updates = jax.tree.map(
            lambda m, g, v: (m + cast_like(mix, m) * g) / _denominator(v, eps, eps_root), m, updates, n_hat
        )
        return new_updates, ScaleBySimplifiedAdEMAMixState(t, m, n)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """Simplified AdEMAMix (Morwani et al. 2025) with decoupled weight decay.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\frac{m_t + \\alpha g_t}{\\sqrt{\\hat n_t + \\epsilon_{root}} +
        \\epsilon} + \\lambda w_{t-1} \\right), \\qquad m_t = \\beta_1 m_{t-1} + g_t

    Args:
      learning_rate: ``eta`` (a float or a schedule).
      b1, b2, alpha, eps, eps_root: as in :func:`scale_by_simplified_ademamix` (defaults 0.99,
        0.95, 0, 1e-8, 0).
      weight_decay: ``lambda`` >= 0, multiplied by ``eta``. Default 0.
      mask: which leaves decay.

    State: ``(ScaleBySimplifiedAdEMAMixState, AddDecayedWeightsState, ScaleByScheduleState)``.
    Matches ``optax.contrib.simplified_ademamix``.

    References:
      Morwani, Vyas, Kakade & Wang, "Connections between Schedule-Free Optimizers, AdEMAMix, and
      Accelerated SGD Variants", 2025, arXiv:2502.02431.
    """
    return chain(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


__all__ = [
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ademamix",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
]
