"""Adam's relatives: AdaBelief, RAdam, Yogi, Dozat's NAdam, AdaMaxW and NAdamW.

Each building block returns the *scaled gradient* (no learning rate, no sign flip); the named
optimizers chain it with ``scale_by_learning_rate``. Names, arguments, defaults and state fields
are Optax's. Adan and NovoGrad, which change the momentum itself, live in ``gradtx.adan`` and
``gradtx.novograd``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.adam import _adaptive_step, _debiased_first_moment, adamw, scale_by_adamax
from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import bias_correction
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    abs_sq,
    cast_eps_like,
    cast_like,
    check_float_leaves,
    check_trees_match,
    clip_for_square,
    keep_dtype,
    moving_average,
    saturating_increment,
    tree_full_like,
    tree_real_full_like,
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


def _check_moments(b1: Any, b2: Any, eps: Any, eps_root: Any) -> None:
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")


class ScaleByBeliefState(NamedTuple):
    """State of ``scale_by_belief``: step count, first moment ``mu`` and belief ``nu`` (``s_t``)."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief scaling: Adam whose second moment tracks the *surprise* ``g_t - m_t``.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2) |g_t - m_t|^2 + \\epsilon_{root}

        u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{s_t / (1-\\beta_2^t)} + \\epsilon}

    With ``nesterov`` the numerator is ``b1 m_t/(1-b1^(t+1)) + (1-b1) g_t/(1-b1^t)``.

    Args:
      b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0 outside the root. Default 1e-16.
      eps_root: ``epsilon_root`` >= 0 added to ``s_t`` every step (the paper's ``epsilon``, which is
        stored in the state as in Algorithm 2). Default 1e-16.
      nesterov: Nesterov first moment. Default False.

    State: ``ScaleByBeliefState(count, mu=m, nu=s)``. Complex leaves use ``|g - m|^2``.
    Matches ``optax.scale_by_belief``.
    Reference: Zhuang et al., "AdaBelief optimizer: adapting stepsizes by the belief in observed
    gradients", NeurIPS 2020 (Algorithm 2).
    """
    _check_moments(b1, b2, eps, eps_root)

    def init_fn(params: Params) -> ScaleByBeliefState:
        check_float_leaves(params, allow_complex=True)
        return ScaleByBeliefState(zero_step_count(), tree_zeros_like(params), tree_real_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByBeliefState, "scale_by_belief")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="belief state")
        # Why: in float32 (g - m)^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        updates = jax.tree.map(clip_for_square, updates, state.mu)
        mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, m, s: moving_average(abs_sq(g - m), s, b2) + cast_like(eps_root, s), updates, mu, state.nu
        )
        count = saturating_increment(state.count)
        mu_hat = _debiased_first_moment(mu, updates, b1, count, nesterov)
        nu_hat = bias_correction(nu, b2, count)
        return _adaptive_step(mu_hat, nu_hat, updates, eps, 0.0), ScaleByBeliefState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


class RadamState(NamedTuple):
    """State of ``scale_by_radam``: step count and Adam's moments (Optax's ``ScaleByAdamState`` fields)."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Rectified Adam scaling: Adam's step times a variance rectification, SGD with momentum early on.

    .. math::
        \\rho_\\infty = \\frac{2}{1-\\beta_2} - 1, \\qquad
        \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1 - \\beta_2^t}, \\qquad
        r_t = \\sqrt{\\frac{(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}{(\\rho_\\infty - 4)(\\rho_\\infty - 2)\\rho_t}}

        u_t = r_t \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}
        \\ \\text{if } \\rho_t \\ge \\text{threshold}, \\quad \\text{else } u_t = \\hat m_t

    with Adam's debiased moments ``m_hat``, ``v_hat`` (``nesterov`` as in ``scale_by_adam``).

    Args:
      b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0, added to ``sqrt(v_hat)``. Default 1e-8.
      eps_root: ``epsilon_root`` >= 0 inside the root. Default 0.
      threshold: smallest ``rho_t`` at which the adaptive step is used. Default 5 (the authors'
        code; the paper's text says ``rho_t > 4``, where ``r_t`` is still 0). Below 4, ``r_t``
        is taken as 0 rather than NaN.
      nesterov: Nesterov first moment. Default False.

    State: ``RadamState(count, mu, nu)``; complex leaves use ``|g|^2`` (real ``nu``).
    Matches ``optax.scale_by_radam``. ``torch.optim.RAdam`` adds ``eps`` to ``sqrt(v_t)`` before
    debiasing (an effective ``eps / sqrt(1 - b2^t)``) and switches at ``rho_t > 5``; with a small
    ``eps`` the two agree.
    Reference: Liu et al., "On the variance of the adaptive learning rate and beyond", ICLR 2020.
    """
    _check_moments(b1, b2, eps, eps_root)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def init_fn(params: Params) -> RadamState:
        check_float_leaves(params, allow_complex=True)
        return RadamState(zero_step_count(), tree_zeros_like(params), tree_real_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, RadamState, "scale_by_radam")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="radam state")
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        updates = jax.tree.map(clip_for_square, updates, state.nu)
        mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: moving_average(abs_sq(g), v, b2), updates, state.nu)
        count = saturating_increment(state.count)
        t = count.astype(jnp.result_type(float))
        b2_t = jnp.asarray(b2, t.dtype) ** t
        rho = rho_inf - 2 * t * b2_t / (1 - b2_t)
        ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
        rectification = jnp.sqrt(jnp.maximum(ratio, 0))
        adaptive = rho >= threshold
        mu_hat = _debiased_first_moment(mu, updates, b1, count, nesterov)
        nu_hat = bias_correction(nu, b2, count)
        steps = _adaptive_step(mu_hat, nu_hat, updates, eps, eps_root)
        new_updates = jax.tree.map(
            lambda s, m, g: keep_dtype(jnp.where(adaptive, cast_like(rectification, s) * s, m), g.dtype),
            steps,
            mu_hat,
            updates,
        )
        return new_updates, RadamState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


class YogiState(NamedTuple):
    """State of ``scale_by_yogi``: step count and the moments ``mu``, ``nu`` (Optax's field names)."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
) -> GradientTransformation:
    """Yogi scaling: Adam whose second moment moves additively, by at most ``(1 - b2) g^2``.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        v_t = v_{t-1} - (1-\\beta_2)\\, \\mathrm{sign}(v_{t-1} - g_t^2)\\, g_t^2

        u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t) + \\epsilon_{root}} + \\epsilon}

    with ``m_0 = v_0 = initial_accumulator_value``.

    Args:
      b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0. Default 1e-3 (the paper's recommendation).
      eps_root: ``epsilon_root`` >= 0 inside the root. Default 0.
      initial_accumulator_value: ``m_0`` and ``v_0`` (>= 0). Default 1e-6.

    State: ``YogiState(count, mu, nu)``. Complex leaves use ``|g|^2``.
    Matches ``optax.scale_by_yogi``.
    Reference: Zaheer et al., "Adaptive methods for nonconvex optimization", NeurIPS 2018.
    """
    _check_moments(b1, b2, eps, eps_root)
    check_non_negative(initial_accumulator_value, "initial_accumulator_value")

    def init_fn(params: Params) -> YogiState:
        check_float_leaves(params, allow_complex=True)
        start = initial_accumulator_value
        return YogiState(zero_step_count(), tree_full_like(params, start), tree_real_full_like(params, start))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, YogiState, "scale_by_yogi")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="yogi state")
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and inf - inf in v would be NaN.
        updates = jax.tree.map(clip_for_square, updates, state.nu)
        mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)

        def second_moment(g, v):
            g2 = abs_sq(g)
            return v - cast_like(1 - b2, v) * jnp.sign(v - g2) * g2

        nu = jax.tree.map(second_moment, updates, state.nu)
        count = saturating_increment(state.count)
        mu_hat = bias_correction(mu, b1, count)
        nu_hat = bias_correction(nu, b2, count)
        return _adaptive_step(mu_hat, nu_hat, updates, eps, eps_root), YogiState(count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief: ``w_t = w_{t-1} - eta_t m_hat_t / (sqrt(s_hat_t) + eps)``, ``s`` the belief (see ``scale_by_belief``).

    Arguments and defaults are ``optax.adabelief``'s, with the same numbers.
    Reference: Zhuang et al., NeurIPS 2020.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov), scale_by_learning_rate(learning_rate))


@check_schedule_arguments
def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """RAdam: ``w_t = w_{t-1} - eta_t r_t m_hat_t / (sqrt(v_hat_t) + eps)`` once ``rho_t >= threshold``.

    Before that, ``w_t = w_{t-1} - eta_t m_hat_t`` (see ``scale_by_radam``). Arguments, defaults
    and numbers are ``optax.radam``'s; ``torch.optim.RAdam(lr, betas, eps)`` agrees up to where
    it adds ``eps`` (see ``scale_by_radam``). Reference: Liu et al., ICLR 2020.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov), scale_by_learning_rate(learning_rate)
    )


@check_schedule_arguments
def yogi(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-3
) -> GradientTransformation:
    """Yogi: ``w_t = w_{t-1} - eta_t m_hat_t / (sqrt(v_hat_t) + eps)`` with Yogi's additive ``v``.

    ``v`` is defined in ``scale_by_yogi``.

    Arguments, defaults and numbers are ``optax.yogi``'s. Reference: Zaheer et al., NeurIPS 2018.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


@check_schedule_arguments
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """AdaMax with decoupled weight decay: ``w_t = w_{t-1} - eta_t (m_t / ((1 - b1^t) u_t) + lambda w_{t-1})``.

    ``u_t = max(b2 u_{t-1}, |g_t| + eps)`` as in ``scale_by_adamax``. Arguments, defaults and
    numbers are ``optax.adamaxw``'s; ``mask`` selects the decayed leaves.
    Reference: Kingma & Ba 2015 (Section 7.1); Loshchilov & Hutter, ICLR 2019.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_adamax(b1, b2, eps), add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate)
    )


class ScaleByNadamState(NamedTuple):
    """State of ``scale_by_nadam``: step count, product of the momentum schedule, moments ``mu``, ``nu``."""

    count: jax.Array
    mu_product: jax.Array
    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_nadam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> GradientTransformation:
    """Dozat's NAdam scaling, with the paper's momentum schedule (``torch.optim.NAdam``'s rule).

    .. math::
        \\mu_t = \\beta_1 \\left(1 - \\tfrac12\\, 0.96^{\\psi t}\\right), \\qquad
        \\Pi_t = \\prod_{i \\le t} \\mu_i, \\qquad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

        u_t = \\frac{\\mu_{t+1} m_t / (1 - \\Pi_t \\mu_{t+1}) + (1 - \\mu_t) g_t / (1 - \\Pi_t)}
        {\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon}

    Args:
      b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0. Default 1e-8.
      momentum_decay: ``psi`` >= 0. Default 4e-3 (torch's; the paper's 0.004).

    State: ``ScaleByNadamState(count, mu_product, mu, nu)``.
    ``scale_by_adam(nesterov=True)`` (Optax's NAdam) is the case ``mu_t = b1`` without the schedule.
    Chained with ``add_decayed_weights`` and ``scale_by_learning_rate`` it equals
    ``torch.optim.NAdam(lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay=True)``.
    Reference: Dozat, "Incorporating Nesterov momentum into Adam", ICLR workshop 2016 (Algorithm 2,
    without its extra ``b2`` factor in ``v_hat``, as in torch and Optax).
    """
    _check_moments(b1, b2, eps, 0.0)
    check_non_negative(momentum_decay, "momentum_decay")
    # Real leaves only, as torch.optim.NAdam (which treats a complex tensor as pairs of reals).

    def init_fn(params: Params) -> ScaleByNadamState:
        check_float_leaves(params)
        ones = jnp.ones([], jnp.result_type(float))
        return ScaleByNadamState(zero_step_count(), ones, tree_zeros_like(params), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByNadamState, "scale_by_nadam")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="nadam state")
        updates = jax.tree.map(clip_for_square, updates, state.nu)
        count = saturating_increment(state.count)
        t = count.astype(state.mu_product.dtype)
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = state.mu_product * mu_t
        coeff_m = mu_next / (1 - mu_product * mu_next)
        coeff_g = (1 - mu_t) / (1 - mu_product)
        mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: moving_average(jnp.square(g), v, b2), updates, state.nu)
        nu_hat = bias_correction(nu, b2, count)
        new_updates = jax.tree.map(
            lambda m, g, v: (cast_like(coeff_m, m) * m + cast_like(coeff_g, g) * g)
            / (jnp.sqrt(v) + cast_eps_like(eps, v)),
            mu,
            updates,
            nu_hat,
        )
        return new_updates, ScaleByNadamState(count, mu_product, mu, nu)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """NAdamW: NAdam with decoupled weight decay, ``adamw(..., nesterov=True)``.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left(\\frac{\\beta_1 m_t / (1-\\beta_1^{t+1}) + (1-\\beta_1) g_t / (1-\\beta_1^t)}
        {\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon} + \\lambda w_{t-1}\\right)

    Arguments, defaults and numbers are ``optax.nadamw``'s. ``torch.optim.NAdam(decoupled_weight_decay=True)``
    follows Dozat's paper instead, with the momentum schedule ``mu_t = b1 (1 - 0.96^(0.004 t) / 2)``;
    ``chain(scale_by_nadam(), add_decayed_weights(lambda), scale_by_learning_rate(eta))`` gives those numbers.
    Reference: Dozat, ICLR workshop 2016; Loshchilov & Hutter, ICLR 2019.
    """
    return adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov)
