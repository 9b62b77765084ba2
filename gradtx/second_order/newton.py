"""Newton's method: damped, with an exact solve or a matrix-free conjugate-gradient solve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx import validation
from gradtx.base import GradientTransformation, value_at
from gradtx.schedules import as_schedule
from gradtx.second_order._common import (
    check_choice,
    check_positive_int,
    refuse_schedules,
    require_params,
    require_value_fn,
    safe_divide,
    scalar_dtype,
    tree_neg,
    tree_scale,
    tree_where,
)
from gradtx.second_order.curvature import conjugate_gradient_solve, hessian_operator
from gradtx.second_order.line_search import backtracking_line_search
from gradtx.second_order.status import (
    SolverStatus,
    all_finite,
    check_tolerances,
    gradient_converged,
    unless_stopped,
    value_converged,
)
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_vdot, zero_step_count
from gradtx.validation import check_schedule_arguments, check_state_type

PyTree = Any


class NewtonState(NamedTuple):
    """State of :func:`newton`.

    Attributes:
      step_count: number of updates so far (int32, saturating).
      step_size: the backtracking factor ``s_t`` accepted last (1 without a line search, 0 when
        the search found no decrease).
      solver_iterations: CG iterations of the last solve (0 for the exact solve).
      value: ``f`` at the point the last update moved to (``inf`` before the first, NaN without a
        line search); pass it back as ``update(..., value=state.value)`` to save an evaluation.
      status: a :class:`SolverStatus` code; once it is not ``RUNNING`` updates are zero and free.
      num_evaluations: evaluations of the objective so far (Hessians and gradients not counted).
    """

    step_count: jax.Array
    step_size: jax.Array
    solver_iterations: jax.Array
    value: jax.Array
    status: jax.Array
    num_evaluations: jax.Array


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == 0


def _modified_newton_solve(hessian: jax.Array, gradient: jax.Array) -> jax.Array:
    """``B^{-1} g`` with ``B = H`` when ``H`` is positive definite (Cholesky), else
    ``B = V max(|Lambda|, delta) V^T`` from ``H = V Lambda V^T`` (the eigendecomposition, taken only
    then), with ``delta = sqrt(eps) max|Lambda|``: a positive-definite matrix with ``H``'s
    eigenvectors, so ``-B^{-1} g`` is a descent direction that moves away from saddle points
    along negative curvature (N&W section 3.4; Dauphin et al. 2014)."""
    cholesky = jnp.linalg.cholesky(hessian)
    positive_definite = jnp.all(jnp.isfinite(cholesky))

    def by_cholesky():
        return jax.scipy.linalg.cho_solve((cholesky, True), gradient)

    def by_eigenvalues():
        eigenvalues, vectors = jnp.linalg.eigh(hessian)
        magnitude = jnp.abs(eigenvalues)
        floor = jnp.sqrt(jnp.finfo(hessian.dtype).eps) * jnp.max(magnitude)
        # An all-zero Hessian leaves floor = 0 and an infinite step: newton then takes -g.
        return vectors @ ((vectors.T @ gradient) / jnp.maximum(magnitude, floor))

    return jax.lax.cond(positive_definite, by_cholesky, by_eigenvalues)


@check_schedule_arguments
def newton(
    learning_rate: float | jax.Array | Callable[[jax.Array], jax.Array] = 1.0,
    damping: float | jax.Array | Callable[[jax.Array], jax.Array] = 0.0,
    solver: str = "exact",
    line_search: bool = True,
    c1: float = 1e-4,
    shrink_factor: float = 0.5,
    max_line_search_steps: int = 30,
    max_cg_iterations: int | None = None,
    cg_tolerance: float = 1e-10,
    *,
    gtol: float = 0.0,
    ftol: float = 0.0,
) -> GradientTransformation:
    """Damped Newton's method: precondition the gradient by the inverse (damped) Hessian.

        d_t = -(H(w_t) + lambda I)^{-1} g_t
        u_t = eta_t * s_t * d_t

    with ``s_t`` the first of ``1, beta, beta^2, ...`` that passes the Armijo test
    ``f(w + eta s d) <= f(w) + c1 eta s g.d`` when ``line_search`` is on (``s_t = 1`` otherwise).
    Newton's step has the right units: it is invariant to linear reparametrization (with
    ``w = A v`` the step in ``v`` is ``A^{-1}`` times the step in ``w``, and it scales as
    ``w``, not as ``1/w`` like a gradient), so no learning rate needs tuning; near a minimizer
    with a Lipschitz Hessian the full step ``s = 1`` is accepted and the error squares every step
    (quadratic convergence). Far from it
    the backtracking "damped phase" guarantees descent (Boyd & Vandenberghe, section 9.5). If
    ``d`` is still not a descent direction (rounding, or an all-zero Hessian), the step falls
    back to ``-g``.

    ``solver="exact"`` forms the ``n x n`` Hessian of the flattened parameters with
    ``jax.hessian`` and solves with a Cholesky factorization: for small problems (``n`` up to a
    few thousand). Where ``H + lambda I`` is not positive definite, its eigenvalues are replaced
    by their absolute values (floored at ``sqrt(eps)`` times the largest), the modified Newton
    step of N&W section 3.4 (the "saddle-free" step of Dauphin et al. 2014): a descent direction
    that is repelled by saddle points instead of attracted to them.

    ``solver="cg"`` solves ``(H + lambda I) d = -g`` matrix-free by linear conjugate gradients
    with Hessian-vector products (Newton-CG, N&W Algorithm 7.1: at a direction of non-positive
    curvature the iterate before it is used, and ``-g`` if that is the first).

    The objective is given to ``update`` as ``value_fn`` (``params -> scalar loss``), which must be
    the function whose gradient arrives as ``updates``::

        tx = gradtx.newton()
        updates, state = tx.update(grads, state, params, value_fn=loss)

    Args:
      learning_rate: ``eta``, a float or a schedule (default 1, the Newton step).
      damping: the Levenberg-Marquardt term ``lambda >= 0``, a float or a schedule of the step
        count (default 0).
      solver: ``"exact"`` (default) or ``"cg"``.
      line_search: Armijo backtracking on ``value_fn`` (default True).
      c1: Armijo constant (default 1e-4).
      shrink_factor: ``beta``, the backtracking contraction (default 0.5).
      max_line_search_steps: cap on backtracking evaluations (default 30).
      max_cg_iterations: cap on CG products (default: the number of parameters).
      cg_tolerance: relative residual at which CG stops (default 1e-10).
      gtol: gradient tolerance, infinity norm (default 0: only a zero gradient stops).
      ftol: relative-reduction tolerance (default 0: only a step without decrease stops).

    Termination as :func:`lbfgs`: ``status`` becomes ``GRADIENT_TOLERANCE`` (tested on the
    gradient given to ``update``, before any Hessian is formed), ``VALUE_TOLERANCE``,
    ``LINE_SEARCH_FAILED`` (backtracking found no sufficient decrease: ``f`` is at its floor in
    this precision) or ``NOT_FINITE``; a stopped update returns zeros at no cost.

    State:
      :class:`NewtonState` ``(step_count, step_size, solver_iterations)``.

    Optax has no Newton method; ``torch.optim`` neither.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., chapters 3.3 and 7.1.
      Boyd & Vandenberghe, "Convex Optimization", 2004, section 9.5.
      Dauphin et al., "Identifying and attacking the saddle point problem in high-dimensional
      non-convex optimization", NeurIPS 2014.
    """
    refuse_schedules(
        "newton",
        c1=c1,
        shrink_factor=shrink_factor,
        max_line_search_steps=max_line_search_steps,
        max_cg_iterations=max_cg_iterations,
        cg_tolerance=cg_tolerance,
    )
    validation.check_non_negative(damping, "damping")
    check_choice(solver, ("exact", "cg"), "solver")
    validation.check_positive(c1, "c1")
    validation.check_less_than(c1, 1.0, "c1")
    validation.check_positive(shrink_factor, "shrink_factor")
    validation.check_less_than(shrink_factor, 1.0, "shrink_factor")
    check_positive_int(max_line_search_steps, "max_line_search_steps")
    if max_cg_iterations is not None:
        check_positive_int(max_cg_iterations, "max_cg_iterations")
    validation.check_positive(cg_tolerance, "cg_tolerance")
    if not callable(learning_rate):
        validation.check_positive(learning_rate, "learning_rate")
    schedule = as_schedule(learning_rate)

    check_tolerances(gtol, ftol)

    def init_fn(params):
        return NewtonState(
            step_count=zero_step_count(),
            step_size=jnp.ones([], jnp.float32),
            solver_iterations=jnp.zeros([], jnp.int32),
            value=jnp.asarray(jnp.inf, scalar_dtype(params)),
            status=jnp.asarray(SolverStatus.RUNNING, jnp.int32),
            num_evaluations=jnp.zeros([], jnp.int32),
        )

    def solve(grads, params, value_fn, damping):
        if solver == "exact":
            flat_params, unravel = ravel_pytree(params)
            flat_grads, _ = ravel_pytree(grads)
            hessian = jax.hessian(lambda x: value_fn(unravel(x)))(flat_params)
            hessian = hessian + damping * jnp.eye(flat_params.size, dtype=hessian.dtype)
            flat_step = _modified_newton_solve(hessian, flat_grads.astype(hessian.dtype))
            return unravel(flat_step.astype(flat_params.dtype)), jnp.zeros([], jnp.int32)
        hvp = hessian_operator(value_fn, params)
        matvec = hvp if _is_zero(damping) else (lambda v: jax.tree.map(lambda a, b: a + damping * b, hvp(v), v))
        result = conjugate_gradient_solve(matvec, grads, max_iterations=max_cg_iterations, tolerance=cg_tolerance)
        # Negative curvature before the first CG step leaves 0: fall back to the gradient.
        found = tree_vdot(result.solution, result.solution) > 0
        return tree_where(found, result.solution, grads), result.num_iterations

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra_args):
        del extra_args
        value_fn = require_value_fn(value_fn, "newton")
        params = require_params(params, "newton")
        gradient = updates if grad is None else grad
        check_trees_match(gradient, params, name="grad" if grad is not None else "updates", reference_name="params")
        check_state_type(state, NewtonState, "newton")
        dtype = state.value.dtype

        def run():
            f0 = jnp.asarray(value_fn(params) if value is None else value, dtype)
            newton_step, iterations = solve(gradient, params, value_fn, value_at(damping, state.step_count))
            direction = tree_neg(newton_step)
            slope = tree_vdot(gradient, direction)
            descent = jnp.isfinite(slope) & (slope < 0)
            direction = tree_where(descent, direction, tree_neg(gradient))
            slope = jnp.where(descent, slope, -tree_vdot(gradient, gradient))
            eta = schedule(state.step_count)
            if line_search:
                result = backtracking_line_search(
                    value_fn,
                    params,
                    direction,
                    f0,
                    slope,
                    initial_step=eta,
                    c1=c1,
                    shrink_factor=shrink_factor,
                    max_iterations=max_line_search_steps,
                )
                step, new_value, evaluations = result.step_size, result.value, result.num_evaluations
                failed = ~result.converged
            else:
                step = jnp.asarray(eta)
                new_value, evaluations, failed = jnp.asarray(jnp.nan, dtype), 0, jnp.asarray(False)
            status = jnp.select(
                [~all_finite(f0, gradient), failed, value_converged(f0, new_value, ftol) & (step > 0)],
                [SolverStatus.NOT_FINITE, SolverStatus.LINE_SEARCH_FAILED, SolverStatus.VALUE_TOLERANCE],
                SolverStatus.RUNNING,
            ).astype(jnp.int32)
            new_state = NewtonState(
                step_count=saturating_increment(state.step_count),
                step_size=jnp.asarray(safe_divide(step, eta), jnp.float32),
                solver_iterations=iterations,
                value=jnp.asarray(new_value, dtype),
                status=status,
                num_evaluations=state.num_evaluations + evaluations + (1 if value is None else 0),
            )
            return tree_scale(step, direction), new_state

        def stop():
            status = jnp.where(state.status == SolverStatus.RUNNING, SolverStatus.GRADIENT_TOLERANCE, state.status)
            return state._replace(status=status.astype(jnp.int32))

        stopped = (state.status != SolverStatus.RUNNING) | gradient_converged(gradient, gtol)
        return unless_stopped(stopped, params, run, stop)

    return GradientTransformation(init_fn, update_fn)
