"""Hessian-free optimization (Martens 2010): truncated CG on a damped curvature matrix."""

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
    tree_where,
)
from gradtx.second_order.curvature import (
    conjugate_gradient_solve,
    gauss_newton_operator,
    hessian_operator,
)
from gradtx.second_order.line_search import backtracking_line_search
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_vdot, tree_zeros_like, zero_step_count
from gradtx.validation import check_schedule_arguments, check_state_type

PyTree = Any


class HessianFreeState(NamedTuple):
    """State of :func:`hessian_free`.

    Attributes:
      step_count: number of updates so far (int32, saturating).
      damping: the Levenberg-Marquardt ``lambda`` for the next solve.
      solution: the last CG solution ``p_{t-1}`` (the warm start is ``zeta p_{t-1}``).
      reduction_ratio: the last ``rho`` (actual over predicted reduction).
      cg_iterations: CG products of the last solve.
    """

    step_count: jax.Array
    damping: jax.Array
    solution: PyTree
    reduction_ratio: jax.Array
    cg_iterations: jax.Array


@check_schedule_arguments
def hessian_free(
    curvature: str = "gauss_newton",
    initial_damping: float = 1.0,
    damping_increase: float = 1.5,
    damping_decrease: float = 2.0 / 3.0,
    max_cg_iterations: int = 250,
    cg_tolerance: float = 1e-10,
    progress_tolerance: float | None = 5e-4,
    warm_start_decay: float = 0.95,
    line_search: bool = True,
    c1: float = 1e-2,
    shrink_factor: float = 0.8,
    max_line_search_steps: int = 30,
) -> GradientTransformation:
    """Hessian-free (truncated Newton) optimization with Levenberg-Marquardt damping.

    Each update approximately minimizes the damped quadratic model of the objective by linear
    CG, started from a decayed copy of the previous solution:

        B = G (generalized Gauss-Newton) or H (Hessian) at w_t
        p_t ~= argmin_p  g.p + p.(B + lambda_t I) p / 2     (CG from p = zeta p_{t-1})
        rho_t = (f(w_t + p_t) - f(w_t)) / (g.p_t + p_t.B p_t / 2)
        lambda_{t+1} = lambda_t * 3/2 if rho_t < 1/4;  lambda_t * 2/3 if rho_t > 3/4
        u_t = s_t p_t,  s_t = 1, 0.8, 0.8^2, ... the first with Armijo decrease (c1 = 1e-2).

    CG stops on the relative residual, on ``max_cg_iterations``, on a non-positive curvature
    direction (possible with ``curvature="hessian"``), or on Martens' relative-progress test with
    ``eps = progress_tolerance`` (see :func:`conjugate_gradient_solve`). Where the Hessian is
    indefinite CG may stop before its first step; ``p_t`` is then the steepest-descent step
    ``-g / lambda_t`` (as N&W's Newton-CG, Algorithm 7.1, falls back to ``-g``; the Steihaug
    exit), so every non-stationary point makes progress, and the ratio test sets its length
    through ``lambda``. The warm start is used
    only when its model value is negative (it already improves on ``p = 0``). The reduction
    ratio is taken against the undamped model (``B``, not ``B + lambda I``); it leaves ``lambda``
    unchanged when the model predicts no decrease (``p = 0`` at a stationary point). Without a
    line search (``line_search=False``) the full ``p_t`` is taken when it decreases ``f`` and
    nothing otherwise. The backtracking search along ``p_t`` stands in for Martens' (2010)
    backtracking over stored CG iterates, which is not implemented, and neither is his diagonal
    CG preconditioner (it needs per-example gradients).

    ``update`` takes the objective as keywords:

    * ``curvature="hessian"``: ``value_fn`` (``params -> scalar loss``).
    * ``curvature="gauss_newton"``: ``model_fn`` (``params -> outputs``) and ``output_loss_fn``
      (``outputs -> scalar``, convex), the objective being ``output_loss_fn(model_fn(params))``;
      ``value_fn`` may be given too and is then used for the function values. To include a
      regularizer ``r(w)``, let the model return ``(z, w)`` and the loss add ``r``.

    ``updates`` must be the gradient of that objective at ``params``.

    Args:
      curvature: ``"gauss_newton"`` (default, positive semi-definite) or ``"hessian"``.
      initial_damping: ``lambda_0 > 0`` (default 1).
      damping_increase: factor applied when ``rho < 1/4`` (default 3/2).
      damping_decrease: factor applied when ``rho > 3/4`` (default 2/3).
      max_cg_iterations: cap on CG products per update (default 250, Martens' cap).
      cg_tolerance: relative residual at which CG stops (default 1e-10).
      progress_tolerance: Martens' ``eps`` (default 5e-4; None turns the test off).
      warm_start_decay: ``zeta`` in ``[0, 1]`` (default 0.95).
      line_search: backtrack along ``p_t`` (default True).
      c1: Armijo constant of the backtracking (default 1e-2).
      shrink_factor: backtracking contraction (default 0.8).
      max_line_search_steps: cap on backtracking evaluations (default 30).

    State:
      :class:`HessianFreeState`.

    Optax and ``torch.optim`` have no Hessian-free method.

    References:
      Martens, "Deep learning via Hessian-free optimization", ICML 2010.
      Martens & Sutskever, "Training deep and recurrent networks with Hessian-free
      optimization", in Neural Networks: Tricks of the Trade, 2012.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., section 7.1 (Newton-CG).
    """
    refuse_schedules(
        "hessian_free",
        initial_damping=initial_damping,
        damping_increase=damping_increase,
        damping_decrease=damping_decrease,
        max_cg_iterations=max_cg_iterations,
        cg_tolerance=cg_tolerance,
        progress_tolerance=progress_tolerance,
        warm_start_decay=warm_start_decay,
        c1=c1,
        shrink_factor=shrink_factor,
        max_line_search_steps=max_line_search_steps,
    )
    check_choice(curvature, ("gauss_newton", "hessian"), "curvature")
    validation.check_positive(initial_damping, "initial_damping")
    validation.check_greater_than(damping_increase, 1.0, "damping_increase")
    validation.check_positive(damping_decrease, "damping_decrease")
    validation.check_less_than(damping_decrease, 1.0, "damping_decrease")
    check_positive_int(max_cg_iterations, "max_cg_iterations")
    validation.check_positive(cg_tolerance, "cg_tolerance")
    if progress_tolerance is not None:
        validation.check_positive(progress_tolerance, "progress_tolerance")
    validation.check_closed_unit(warm_start_decay, "warm_start_decay")
    validation.check_positive(c1, "c1")
    validation.check_less_than(c1, 1.0, "c1")
    validation.check_positive(shrink_factor, "shrink_factor")
    validation.check_less_than(shrink_factor, 1.0, "shrink_factor")
    check_positive_int(max_line_search_steps, "max_line_search_steps")

    def init_fn(params):
        dtype = scalar_dtype(params)
        return HessianFreeState(
            step_count=zero_step_count(),
            damping=jnp.asarray(initial_damping, dtype),
            solution=tree_zeros_like(params),
            reduction_ratio=jnp.zeros([], dtype),
            cg_iterations=jnp.zeros([], jnp.int32),
        )

    def objective(params, value_fn, model_fn, output_loss_fn):
        if curvature == "hessian":
            value_fn = require_value_fn(value_fn, "hessian_free")
            return value_fn, hessian_operator(value_fn, params)
        if model_fn is None or output_loss_fn is None:
            raise TypeError(
                "hessian_free(curvature='gauss_newton').update needs the objective split as "
                "model_fn=(params -> outputs) and output_loss_fn=(outputs -> scalar, convex); "
                "use curvature='hessian' to pass only value_fn."
            )
        if value_fn is None:
            value_fn = lambda p: output_loss_fn(model_fn(p))
        return value_fn, gauss_newton_operator(model_fn, output_loss_fn, params)

    def update_fn(updates, state, params=None, *, value_fn=None, model_fn=None, output_loss_fn=None, **extra_args):
        del extra_args
        params = require_params(params, "hessian_free")
        check_trees_match(updates, params, name="updates", reference_name="params")
        value_fn, matvec = objective(params, value_fn, model_fn, output_loss_fn)
        check_state_type(state, HessianFreeState, "hessian_free")
        dtype = state.damping.dtype
        lam = state.damping

        def damped(v):
            return tree_add_scaled(matvec(v), lam, v)

        # Warm start only if it beats p = 0 on the damped model.
        guess = tree_scale(warm_start_decay, state.solution)
        guess_model = tree_vdot(updates, guess) + 0.5 * tree_vdot(guess, damped(guess))
        guess = tree_where(guess_model < 0, guess, tree_zeros_like(guess))
        solve = conjugate_gradient_solve(
            damped,
            tree_neg(updates),
            guess,
            max_iterations=max_cg_iterations,
            tolerance=cg_tolerance,
            progress_tolerance=progress_tolerance,
        )
        # CG stopped by non-positive curvature before its first step (B + lambda I is indefinite
        # along -g), or a warm start that is not a descent direction: take the steepest-descent
        # step of the damped model with B left out, -g / lambda (N&W Algorithm 7.1 takes -g).
        # The ratio test below then adapts lambda, and so the length, as for any other step.
        p = tree_where(tree_vdot(updates, solve.solution) < 0, solve.solution, tree_scale(-1 / lam, updates))

        value = jnp.asarray(value_fn(params), dtype)
        slope = tree_vdot(updates, p).astype(dtype)
        predicted = slope + 0.5 * tree_vdot(p, matvec(p)).astype(dtype)
        full_value = jnp.asarray(value_fn(tree_add_scaled(params, 1.0, p)), dtype)
        # A model that predicts no decrease (p = 0 at a stationary point) says nothing about lambda.
        informative = predicted < 0
        rho = safe_divide(full_value - value, predicted)
        rho = jnp.where(jnp.isfinite(rho), rho, -jnp.inf)
        new_lam = jnp.where(
            informative & (rho < 0.25),
            lam * damping_increase,
            jnp.where(informative & (rho > 0.75), lam * damping_decrease, lam),
        )

        descent = slope < 0
        if line_search:
            full_ok = full_value <= value + c1 * slope

            def backtrack():
                return backtracking_line_search(
                    value_fn,
                    params,
                    p,
                    value,
                    slope,
                    initial_step=shrink_factor,
                    c1=c1,
                    shrink_factor=shrink_factor,
                    max_iterations=max_line_search_steps,
                ).step_size

            step = jax.lax.cond(full_ok | ~descent, lambda: jnp.ones([], dtype), backtrack)
            step = jnp.where(descent, step, 0)
        else:
            step = jnp.where(descent & (full_value < value), 1, 0).astype(dtype)

        new_state = HessianFreeState(
            step_count=saturating_increment(state.step_count),
            damping=new_lam,
            solution=p,
            reduction_ratio=rho,
            cg_iterations=solve.num_iterations,
        )
        return tree_scale(step, p), new_state

    return GradientTransformation(init_fn, update_fn)
