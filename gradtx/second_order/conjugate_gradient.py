"""Nonlinear conjugate gradients (Fletcher-Reeves, Polak-Ribiere+, Hestenes-Stiefel) with a strong
Wolfe line search, and Moller's scaled conjugate gradient, which needs no line search."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import GradientTransformation
from gradtx.second_order._common import (
    check_choice,
    check_positive_int,
    refuse_schedules,
    require_params,
    require_value_fn,
    safe_divide,
    scalar_dtype,
    tree_add_scaled,
    tree_neg,
    tree_scale,
    tree_sub,
    tree_where,
)
from gradtx.second_order.curvature import hessian_vector_product
from gradtx.second_order.line_search import wolfe_line_search
from gradtx.second_order.status import (
    SolverStatus,
    check_tolerances,
    gradient_converged,
    line_search_status,
    unless_stopped,
)
from gradtx.tree_utils import (
    check_trees_match,
    saturating_increment,
    tree_vdot,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import check_schedule_arguments, check_state_type

PyTree = Any

_BETA_RULES = ("fletcher_reeves", "polak_ribiere_plus", "hestenes_stiefel")


class ConjugateGradientState(NamedTuple):
    """State of :func:`conjugate_gradient`.

    Attributes:
      step_count: number of updates so far (int32, saturating).
      direction: the previous search direction ``d_{t-1}``.
      gradient: the previous gradient ``g_{t-1}``.
      step_size: the previous accepted step ``a_{t-1}``.
      slope: the previous ``g_{t-1} . d_{t-1}``.
      since_restart: updates since the direction was last reset to ``-g``.
      value: ``f`` at the point the last update moved to (``inf`` before the first).
      grad: the gradient there, from the line search (Optax's field names, as in
        :class:`LbfgsState`).
      status: a :class:`SolverStatus` code; once it is not ``RUNNING`` updates are zero and free.
      num_evaluations: evaluations of the objective so far.
    """

    step_count: jax.Array
    direction: PyTree
    gradient: PyTree
    step_size: jax.Array
    slope: jax.Array
    since_restart: jax.Array
    value: jax.Array
    grad: PyTree
    status: jax.Array
    num_evaluations: jax.Array


@check_schedule_arguments
def conjugate_gradient(
    beta_rule: str = "polak_ribiere_plus",
    c1: float = 1e-4,
    c2: float = 0.1,
    max_line_search_steps: int = 30,
    restart_period: int | None = None,
    *,
    gtol: float = 0.0,
    ftol: float = 0.0,
) -> GradientTransformation:
    """Nonlinear conjugate gradients with a strong Wolfe line search.

        d_t = -g_t + beta_t d_{t-1}          (d_0 = -g_0)
        u_t = a_t d_t,   a_t from a strong Wolfe line search on value_fn along d_t,

    with ``y = g_t - g_{t-1}`` and one of

        Fletcher-Reeves:     beta = g_t.g_t / g_{t-1}.g_{t-1}
        Polak-Ribiere+:      beta = max(0, g_t.y / g_{t-1}.g_{t-1})
        Hestenes-Stiefel:    beta = g_t.y / d_{t-1}.y.

    The direction is reset to ``-g_t`` when it is not a descent direction, and every
    ``restart_period`` updates if that is set (the classical choice is the number of parameters).
    On a strongly convex quadratic with exact line searches all three rules coincide with linear
    CG. The first trial step is ``a_{t-1} g_{t-1}.d_{t-1} / g_t.d_t`` (N&W eq. 3.60), and
    ``1 / ||g_0||`` on the first update. With ``c2 < 1/2`` the strong Wolfe conditions make
    every Fletcher-Reeves direction a descent direction (N&W Lemma 5.6); the default ``c2 = 0.1``
    is N&W's recommendation for CG.

    Termination as :func:`lbfgs` (``gtol``, ``ftol``, the ``status`` field, free updates once
    stopped); a failed search along a conjugate direction is retried from ``-g`` on the next
    update, and one along ``-g`` stops with ``LINE_SEARCH_FAILED``.

    The objective is given to ``update`` as ``value_fn`` (``params -> scalar loss``); ``updates``
    must be its gradient at ``params`` (or pass ``grad=``, and ``value=`` to save an evaluation,
    as for :func:`lbfgs`)::

        updates, state = tx.update(grads, state, params, value_fn=loss)

    Args:
      beta_rule: ``"fletcher_reeves"``, ``"polak_ribiere_plus"`` (default) or
        ``"hestenes_stiefel"``.
      c1: sufficient-decrease constant (default 1e-4).
      c2: curvature constant of the strong Wolfe conditions (default 0.1).
      max_line_search_steps: cap on evaluations per line search (default 30).
      restart_period: reset to steepest descent every this many updates (default None: only
        when the direction is not a descent direction).
      gtol: gradient tolerance, infinity norm (default 0: only a zero gradient stops).
      ftol: relative-reduction tolerance (default 0: only a step without decrease stops).

    State:
      :class:`ConjugateGradientState`.

    Optax has no nonlinear CG; ``scipy.optimize.minimize(method="CG")`` is Polak-Ribiere with a
    Wolfe line search.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., section 5.2. Fletcher & Reeves 1964;
      Polak & Ribiere 1969; Hestenes & Stiefel 1952; Gilbert & Nocedal 1992 (PR+).
    """
    refuse_schedules(
        "conjugate_gradient", c1=c1, c2=c2, max_line_search_steps=max_line_search_steps, restart_period=restart_period
    )
    check_choice(beta_rule, _BETA_RULES, "beta_rule")
    validation.check_positive(c1, "c1")
    validation.check_greater_than(c2, c1, "c2")
    validation.check_less_than(c2, 1.0, "c2")
    check_positive_int(max_line_search_steps, "max_line_search_steps")
    if restart_period is not None:
        check_positive_int(restart_period, "restart_period")
    check_tolerances(gtol, ftol)

    def init_fn(params):
        dtype = scalar_dtype(params)
        return ConjugateGradientState(
            step_count=zero_step_count(),
            direction=tree_zeros_like(params),
            gradient=tree_zeros_like(params),
            step_size=jnp.zeros([], dtype),
            slope=jnp.zeros([], dtype),
            since_restart=zero_step_count(),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params),
            status=jnp.asarray(SolverStatus.RUNNING, jnp.int32),
            num_evaluations=jnp.zeros([], jnp.int32),
        )

    def beta(grads, state):
        previous_norm = tree_vdot(state.gradient, state.gradient)
        if beta_rule == "fletcher_reeves":
            return safe_divide(tree_vdot(grads, grads), previous_norm)
        change = tree_sub(grads, state.gradient)
        if beta_rule == "polak_ribiere_plus":
            return jnp.maximum(safe_divide(tree_vdot(grads, change), previous_norm), 0)
        return safe_divide(tree_vdot(grads, change), tree_vdot(state.direction, change))

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra_args):
        del extra_args
        value_fn = require_value_fn(value_fn, "conjugate_gradient")
        params = require_params(params, "conjugate_gradient")
        gradient = updates if grad is None else grad
        check_trees_match(gradient, params, name="grad" if grad is not None else "updates", reference_name="params")
        check_state_type(state, ConjugateGradientState, "conjugate_gradient")
        dtype = state.step_size.dtype

        def run():
            f0 = jnp.asarray(value_fn(params) if value is None else value, dtype)
            # A failed search (step 0) restarts from -g, as does the first update.
            first = (state.step_count == 0) | (state.step_size == 0)
            direction = tree_add_scaled(tree_neg(gradient), beta(gradient, state), state.direction)
            slope = tree_vdot(gradient, direction)
            restart = first | ~(slope < 0)
            if restart_period is not None:
                restart = restart | (state.since_restart + 1 >= restart_period)
            direction = tree_where(restart, tree_neg(gradient), direction)
            slope = jnp.where(restart, -tree_vdot(gradient, gradient), slope)
            initial_step = jnp.where(
                first,
                safe_divide(1.0, jnp.sqrt(-slope)),
                safe_divide(state.step_size * state.slope, slope),
            )
            initial_step = jnp.where(initial_step > 0, initial_step, safe_divide(1.0, jnp.sqrt(-slope)))
            result = wolfe_line_search(
                value_fn,
                params,
                direction,
                f0,
                gradient,
                initial_step=initial_step,
                c1=c1,
                c2=c2,
                max_iterations=max_line_search_steps,
            )
            moved = result.step_size > 0
            status = line_search_status(f0, gradient, result, ~moved & restart, gtol, ftol)
            new_state = ConjugateGradientState(
                step_count=saturating_increment(state.step_count),
                direction=direction,
                gradient=gradient,
                step_size=result.step_size.astype(dtype),
                slope=slope.astype(dtype),
                since_restart=jnp.where(restart, 0, saturating_increment(state.since_restart)),
                value=jnp.asarray(result.value, dtype),
                grad=result.gradient,
                status=status,
                num_evaluations=state.num_evaluations + result.num_evaluations + (1 if value is None else 0),
            )
            return tree_scale(result.step_size, direction), new_state

        def stop():
            status = jnp.where(state.status == SolverStatus.RUNNING, SolverStatus.GRADIENT_TOLERANCE, state.status)
            return state._replace(status=status.astype(jnp.int32))

        stopped = (state.status != SolverStatus.RUNNING) | gradient_converged(gradient, gtol)
        return unless_stopped(stopped, params, run, stop)

    return GradientTransformation(init_fn, update_fn)


class ScaledConjugateGradientState(NamedTuple):
    """State of :func:`scaled_conjugate_gradient` (Moller's notation, ``r = -E'(w)``).

    Attributes:
      step_count: number of updates so far (int32, saturating).
      direction: ``p_k``.
      residual: ``r_k``, the negative gradient at the current weights.
      mu: ``mu_k = p_k . r_k``.
      delta: ``delta_k = p_k . s_k`` after the scaling steps 3-4 (carried when a step fails).
      lam: the scale parameter ``lambda_k``.
      lam_bar: ``lambda_bar_k`` (the scale already folded into ``delta`` after a failure).
      success: whether the last step reduced the error (a new ``s_k`` is then computed).
      since_restart: successful steps since the direction was last reset to ``r``.
      comparison: the last ``Delta_k``, the ratio of actual to predicted reduction.
    """

    step_count: jax.Array
    direction: PyTree
    residual: PyTree
    mu: jax.Array
    delta: jax.Array
    lam: jax.Array
    lam_bar: jax.Array
    success: jax.Array
    since_restart: jax.Array
    comparison: jax.Array


@check_schedule_arguments
def scaled_conjugate_gradient(
    initial_lambda: float = 1e-6,
    sigma: float | None = None,
    restart_period: int | None = None,
) -> GradientTransformation:
    """Moller's scaled conjugate gradient (SCG): conjugate directions, no line search.

    One update is one iteration of Moller's algorithm (``r = -E'(w)``, ``N`` parameters):

        2. if success: s_k = E''(w_k) p_k,  delta_k = p_k . s_k
        3. delta_k += (lambda_k - lambda_bar_k) |p_k|^2
        4. if delta_k <= 0: lambda_bar_k = 2 (lambda_k - delta_k / |p_k|^2),
                            delta_k = -delta_k + lambda_k |p_k|^2,  lambda_k = lambda_bar_k
        5. mu_k = p_k . r_k,  alpha_k = mu_k / delta_k
        6. Delta_k = 2 delta_k (E(w_k) - E(w_k + alpha_k p_k)) / mu_k^2
        7. if Delta_k >= 0: w_{k+1} = w_k + alpha_k p_k, lambda_bar_k = 0, success;
              p_{k+1} = r_{k+1} + beta_k p_k,  beta_k = (|r_{k+1}|^2 - r_{k+1} . r_k) / mu_k
              (p_{k+1} = r_{k+1} every N successes);  if Delta_k >= 0.75: lambda_k /= 4
           else: lambda_bar_k = lambda_k, failure (w unchanged)
        8. if Delta_k < 0.25: lambda_k += delta_k (1 - Delta_k) / |p_k|^2.

    ``lambda`` is a Levenberg-Marquardt scale on the curvature along ``p``, adapted by the trust
    ratio ``Delta`` instead of a line search, so each iteration costs one Hessian-vector product
    and one function evaluation. The direction update of step 7 needs ``r_{k+1}``, which arrives
    with the next call, so it is done at the start of that call. A failed step returns a zero
    update (the weights stay, ``lambda`` grows) as in the paper.

    Moller approximates ``s_k`` by a one-sided difference of gradients with
    ``sigma_k = sigma / |p_k|``; ``sigma=None`` (default) uses the exact Hessian-vector product
    instead (forward-over-reverse, same cost, no truncation error). The objective is given to
    ``update`` as ``value_fn``; ``updates`` must be its gradient at ``params``.

    Args:
      initial_lambda: ``lambda_1`` in ``(0, 1e-6]`` per the paper (default 1e-6).
      sigma: finite-difference scale, Moller's ``sigma <= 1e-4`` (default None: exact product).
      restart_period: successes between restarts to ``p = r`` (default: the number of
        parameters, Moller's ``N``).

    State:
      :class:`ScaledConjugateGradientState`.

    References:
      Moller, "A scaled conjugate gradient algorithm for fast supervised learning", Neural
      Networks 6, 525-533, 1993.
    """
    refuse_schedules(
        "scaled_conjugate_gradient", initial_lambda=initial_lambda, sigma=sigma, restart_period=restart_period
    )
    validation.check_positive(initial_lambda, "initial_lambda")
    if sigma is not None:
        validation.check_positive(sigma, "sigma")
    if restart_period is not None:
        check_positive_int(restart_period, "restart_period")

    def init_fn(params):
        dtype = scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        return ScaledConjugateGradientState(
            step_count=zero_step_count(),
            direction=tree_zeros_like(params),
            residual=tree_zeros_like(params),
            mu=zero,
            delta=zero,
            lam=jnp.asarray(initial_lambda, dtype),
            lam_bar=zero,
            success=jnp.asarray(True),
            since_restart=zero_step_count(),
            comparison=zero,
        )

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        value_fn = require_value_fn(value_fn, "scaled_conjugate_gradient")
        params = require_params(params, "scaled_conjugate_gradient")
        check_trees_match(updates, params, name="updates", reference_name="params")
        check_state_type(state, ScaledConjugateGradientState, "scaled_conjugate_gradient")
        dtype = state.lam.dtype
        period = restart_period or sum(int(jnp.size(x)) for x in jax.tree.leaves(params))
        first = state.step_count == 0
        r_new = tree_neg(updates)

        # Step 7's deferred direction update (the weights moved last call).
        moved = state.success & ~first
        restart = first | (state.since_restart >= period)
        beta = safe_divide(tree_vdot(r_new, r_new) - tree_vdot(r_new, state.residual), state.mu)
        conjugate = tree_add_scaled(r_new, beta, state.direction)
        p = tree_where(restart, r_new, tree_where(moved, conjugate, state.direction))
        r = tree_where(first | moved, r_new, state.residual)
        since_restart = jnp.where(restart, 0, state.since_restart)
        new_curvature = first | moved
        p_norm2 = tree_vdot(p, p).astype(dtype)

        # Step 2: second-order information along p (skipped after a failure).
        def curvature_along(p):
            if sigma is None:
                s = hessian_vector_product(value_fn, params, p)
                return tree_vdot(p, s)
            sigma_k = sigma / jnp.sqrt(p_norm2)
            shifted = jax.grad(value_fn)(tree_add_scaled(params, sigma_k, p))
            return tree_vdot(p, tree_sub(shifted, updates)) / sigma_k

        delta = jnp.where(
            new_curvature,
            jax.lax.cond(
                new_curvature & (p_norm2 > 0),
                lambda: curvature_along(p).astype(dtype),
                lambda: jnp.zeros([], dtype),
            ),
            state.delta,
        )
        lam = state.lam
        lam_bar = jnp.where(new_curvature, 0, state.lam_bar)
        # Step 3: scale.
        delta = delta + (lam - lam_bar) * p_norm2
        # Step 4: make the scaled curvature positive.
        negative = delta <= 0
        lam_bar = jnp.where(negative, 2 * (lam - safe_divide(delta, p_norm2)), lam_bar)
        delta = jnp.where(negative, -delta + lam * p_norm2, delta)
        lam = jnp.where(negative, lam_bar, lam)
        # Step 5: step size.
        mu = tree_vdot(p, r).astype(dtype)
        alpha = safe_divide(mu, delta)
        # Step 6: comparison parameter.
        value = value_fn(params)
        trial_value = value_fn(tree_add_scaled(params, alpha, p))
        comparison = safe_divide(2 * delta * (value - trial_value), mu * mu).astype(dtype)
        comparison = jnp.where(jnp.isfinite(comparison), comparison, -1)
        # A zero gradient has nothing left to reduce: take no step, keep lambda.
        at_stationary_point = mu == 0
        success = (comparison >= 0) & ~at_stationary_point
        # Step 7: accept or reject, and shrink lambda after a very good step.
        lam_bar = jnp.where(success, 0, lam)
        lam = jnp.where(success & (comparison >= 0.75), lam / 4, lam)
        # Step 8: grow lambda after a poor step.
        grow = (comparison < 0.25) & ~at_stationary_point
        lam = jnp.where(grow, lam + safe_divide(delta * (1 - comparison), p_norm2), lam)

        step = jnp.where(success, alpha, 0)
        new_state = ScaledConjugateGradientState(
            step_count=saturating_increment(state.step_count),
            direction=p,
            residual=r,
            mu=mu,
            delta=delta,
            lam=lam,
            lam_bar=lam_bar,
            success=success,
            since_restart=jnp.where(success, since_restart + 1, since_restart),
            comparison=comparison,
        )
        return tree_scale(step, p), new_state

    return GradientTransformation(init_fn, update_fn)
