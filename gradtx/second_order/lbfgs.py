"""Limited-memory BFGS with a strong Wolfe line search."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import GradientTransformation
from gradtx.second_order._common import (
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
from gradtx.second_order.line_search import wolfe_line_search
from gradtx.second_order.status import (
    SolverStatus,
    all_finite,
    check_tolerances,
    gradient_converged,
    unless_stopped,
    value_converged,
)
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_vdot, tree_zeros_like, zero_step_count
from gradtx.validation import check_schedule_arguments, check_state_type

PyTree = Any


class LbfgsState(NamedTuple):
    """State of :func:`lbfgs`.

    Attributes:
      step_count: number of updates that did work so far (int32, saturating): the iteration
        count; a stopped update leaves it unchanged.
      position_changes: ``s_i = w_{i+1} - w_i`` for the last ``m`` accepted pairs, each leaf stacked
        along a leading axis of size ``m`` (a circular buffer).
      gradient_changes: ``y_i = g_{i+1} - g_i``, stored the same way.
      inverse_curvatures: ``rho_i = 1 / y_i.s_i`` (0 marks an empty slot).
      next_slot: where the next pair is written.
      num_pairs: how many slots hold a pair (at most ``m``).
      value: ``f`` at the point the last update moved to (``inf`` before the first), from the
        line search; pass it back as ``update(..., value=state.value)`` to save an evaluation
        (Optax's field name: ``optax.value_and_grad_from_state`` reads it).
      grad: the gradient there (zeros before the first update), Optax's field name likewise.
      status: a :class:`SolverStatus` code; once it is not ``RUNNING`` updates are zero and free.
      num_evaluations: evaluations of the objective so far (with its gradient in line searches).
    """

    step_count: jax.Array
    position_changes: PyTree
    gradient_changes: PyTree
    inverse_curvatures: jax.Array
    next_slot: jax.Array
    num_pairs: jax.Array
    value: jax.Array
    grad: PyTree
    status: jax.Array
    num_evaluations: jax.Array


def _slot(tree: PyTree, index: jax.Array) -> PyTree:
    return jax.tree.map(lambda h: h[index], tree)


def _set_slot(tree: PyTree, index: jax.Array, value: PyTree) -> PyTree:
    return jax.tree.map(lambda h, v: h.at[index].set(v.astype(h.dtype)), tree, value)


def lbfgs_direction(gradient: PyTree, state: LbfgsState) -> PyTree:
    """``H_t g_t`` by the two-loop recursion over the stored pairs (N&W Algorithm 7.4).

        q = g;  for i newest -> oldest:  a_i = rho_i s_i.q,  q -= a_i y_i
        r = gamma q,  gamma = s.y / y.y of the newest pair (1 with no pairs)
        for i oldest -> newest:  b = rho_i y_i.r,  r += (a_i - b) s_i

    ``H_t`` is the BFGS inverse-Hessian approximation built from ``gamma I`` by the stored pairs;
    the search direction is ``-r``.
    """
    memory = state.inverse_curvatures.shape[0]
    rho = state.inverse_curvatures

    def newest_first(j):
        return (state.next_slot - 1 - j) % memory

    def first_loop(j, carry):
        q, alphas = carry
        i = newest_first(j)
        alpha = rho[i] * tree_vdot(_slot(state.position_changes, i), q)
        return tree_add_scaled(q, -alpha, _slot(state.gradient_changes, i)), alphas.at[i].set(alpha)

    q, alphas = jax.lax.fori_loop(0, memory, first_loop, (gradient, jnp.zeros_like(rho)))
    newest = newest_first(0)
    s_new, y_new = _slot(state.position_changes, newest), _slot(state.gradient_changes, newest)
    gamma = jnp.where(state.num_pairs > 0, safe_divide(tree_vdot(s_new, y_new), tree_vdot(y_new, y_new)), 1)
    r = tree_scale(gamma, q)

    def second_loop(j, r):
        i = newest_first(memory - 1 - j)
        beta = rho[i] * tree_vdot(_slot(state.gradient_changes, i), r)
        return tree_add_scaled(r, alphas[i] - beta, _slot(state.position_changes, i))

    return jax.lax.fori_loop(0, memory, second_loop, r)


@check_schedule_arguments
def lbfgs(
    memory_size: int = 10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_line_search_steps: int = 30,
    *,
    gtol: float = 0.0,
    ftol: float = 0.0,
) -> GradientTransformation:
    """L-BFGS: a quasi-Newton direction from the last ``m`` steps, with a strong Wolfe line search.

        d_t = -H_t g_t                       (two-loop recursion, see lbfgs_direction)
        a_t from a strong Wolfe line search on value_fn along d_t (first trial 1, or
            1 / ||g_0|| on the first update)
        u_t = a_t d_t
        s_t = u_t,  y_t = grad f(w_t + u_t) - g_t   (stored when s_t.y_t > 0)

    ``H_t`` is the BFGS update of ``gamma_t I`` (``gamma_t = s.y / y.y`` of the newest pair,
    N&W eq. 7.20) by the stored pairs, so it is positive definite and ``d_t`` is a descent
    direction; the Wolfe curvature condition guarantees ``s.y > 0`` whenever the search
    succeeds. The gradient at the accepted point comes from the line search, so the new pair is
    stored in the same update.

    Termination, as scipy's L-BFGS-B: the state's ``status`` (a :class:`SolverStatus`) becomes
    ``GRADIENT_TOLERANCE`` when ``max_i |g_i| <= gtol`` (tested on the gradient given to
    ``update`` and on the one the line search returns), ``VALUE_TOLERANCE`` when a step reduces
    ``f`` by at most ``ftol max(|f_t|, |f_{t+1}|, 1)``, ``LINE_SEARCH_FAILED`` when a search along
    ``-g`` (empty memory) finds no acceptable step (a failed search with pairs in memory first
    clears the memory and retries from ``-g`` on the next update, as L-BFGS-B does), and
    ``NOT_FINITE`` when ``f`` or ``g`` is NaN or infinite. Once stopped, every update returns zeros
    from a ``lax.cond`` branch that evaluates nothing; build a fresh state (``tx.init``) to start
    again, e.g. on a new objective. The defaults ``gtol = ftol = 0`` stop only where no progress
    is possible (a zero gradient, a step that leaves ``f`` unchanged); :func:`gradtx.minimize`
    uses scipy's ``gtol=1e-5``, ``ftol=2.2e-9``.

    The objective is given to ``update`` as ``value_fn`` (``params -> scalar loss``); ``updates``
    must be its gradient at ``params``. ``value=`` (``f(params)``) and ``grad=`` (its gradient,
    then used instead of ``updates``) may be passed as in Optax; ``state.value`` and
    ``state.grad`` hold both for the point the last update moved to::

        updates, state = tx.update(grads, state, params, value_fn=loss)
        updates, state = tx.update(state.grad, state, params, value=state.value, value_fn=loss)

    Args:
      memory_size: ``m``, the number of stored pairs (default 10).
      c1: sufficient-decrease constant (default 1e-4).
      c2: curvature constant (default 0.9, the quasi-Newton choice).
      max_line_search_steps: cap on evaluations per line search (default 30).
      gtol: gradient tolerance, infinity norm (default 0: only a zero gradient stops).
      ftol: relative-reduction tolerance (default 0: only a step without decrease stops).

    State:
      :class:`LbfgsState`.

    The iteration is N&W Algorithm 7.5. ``optax.lbfgs`` uses the same two-loop recursion and
    scaling ``gamma``, with its own zoom line search, and expects ``value=`` and ``grad=`` in
    ``update`` as well; the optimum reached is the same (tested against
    ``scipy.optimize.minimize``).

    References:
      Nocedal, "Updating quasi-Newton matrices with limited storage", Math. Comp. 1980.
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization", 1989.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., section 7.2.
      Byrd, Lu, Nocedal & Zhu, "A limited memory algorithm for bound constrained optimization",
      SIAM J. Sci. Comput. 1995 (L-BFGS-B's stopping tests).
    """
    refuse_schedules("lbfgs", memory_size=memory_size, c1=c1, c2=c2, max_line_search_steps=max_line_search_steps)
    check_positive_int(memory_size, "memory_size")
    validation.check_positive(c1, "c1")
    validation.check_greater_than(c2, c1, "c2")
    validation.check_less_than(c2, 1.0, "c2")
    check_positive_int(max_line_search_steps, "max_line_search_steps")
    check_tolerances(gtol, ftol)

    def init_fn(params):
        dtype = scalar_dtype(params)
        history = jax.tree.map(lambda x: jnp.zeros((memory_size,) + jnp.shape(x), jnp.result_type(x)), params)
        return LbfgsState(
            step_count=zero_step_count(),
            position_changes=history,
            gradient_changes=history,
            inverse_curvatures=jnp.zeros(memory_size, dtype),
            next_slot=jnp.zeros([], jnp.int32),
            num_pairs=jnp.zeros([], jnp.int32),
            value=jnp.asarray(jnp.inf, dtype),
            grad=tree_zeros_like(params),
            status=jnp.asarray(SolverStatus.RUNNING, jnp.int32),
            num_evaluations=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, grad=None, **extra_args):
        del extra_args
        value_fn = require_value_fn(value_fn, "lbfgs")
        params = require_params(params, "lbfgs")
        gradient = updates if grad is None else grad
        check_trees_match(gradient, params, name="grad" if grad is not None else "updates", reference_name="params")
        check_state_type(state, LbfgsState, "lbfgs")
        dtype = state.inverse_curvatures.dtype
        converged = gradient_converged(gradient, gtol)

        def run():
            f0 = jnp.asarray(value_fn(params) if value is None else value, dtype)
            direction = tree_neg(lbfgs_direction(gradient, state))
            slope = tree_vdot(gradient, direction)
            # Rounding can spoil H_t's positive definiteness: fall back to steepest descent.
            descent = slope < 0
            direction = tree_where(descent, direction, tree_neg(gradient))
            gradient_norm = jnp.sqrt(tree_vdot(gradient, gradient))
            initial_step = jnp.where((state.num_pairs > 0) & descent, 1, safe_divide(1, gradient_norm))
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
            step = tree_scale(result.step_size, direction)
            gradient_change = tree_sub(result.gradient, gradient)
            curvature = tree_vdot(step, gradient_change).astype(dtype)
            store = moved & (curvature > 0) & jnp.isfinite(curvature)
            # A failed search with pairs in memory is retried from -g next time (memory cleared).
            restart = ~moved & (state.num_pairs > 0)
            slot = state.next_slot
            status = jnp.select(
                [
                    ~all_finite(f0, gradient),
                    ~moved & ~restart,
                    moved & gradient_converged(result.gradient, gtol),
                    moved & value_converged(f0, result.value, ftol),
                ],
                [
                    SolverStatus.NOT_FINITE,
                    SolverStatus.LINE_SEARCH_FAILED,
                    SolverStatus.GRADIENT_TOLERANCE,
                    SolverStatus.VALUE_TOLERANCE,
                ],
                SolverStatus.RUNNING,
            ).astype(jnp.int32)
            new_state = LbfgsState(
                step_count=saturating_increment(state.step_count),
                position_changes=tree_where(
                    store, _set_slot(state.position_changes, slot, step), state.position_changes
                ),
                gradient_changes=tree_where(
                    store, _set_slot(state.gradient_changes, slot, gradient_change), state.gradient_changes
                ),
                inverse_curvatures=jnp.where(
                    store, state.inverse_curvatures.at[slot].set(safe_divide(1, curvature)), state.inverse_curvatures
                ),
                next_slot=jnp.where(store, (slot + 1) % memory_size, jnp.where(restart, 0, slot)),
                num_pairs=jnp.where(
                    store, jnp.minimum(state.num_pairs + 1, memory_size), jnp.where(restart, 0, state.num_pairs)
                ),
                value=jnp.asarray(result.value, dtype),
                grad=result.gradient,
                status=status,
                num_evaluations=state.num_evaluations + result.num_evaluations + (1 if value is None else 0),
            )
            return step, new_state

        def stop():
            status = jnp.where(state.status == SolverStatus.RUNNING, SolverStatus.GRADIENT_TOLERANCE, state.status)
            return state._replace(status=status.astype(jnp.int32))

        return unless_stopped((state.status != SolverStatus.RUNNING) | converged, params, run, stop)

    return GradientTransformation(init_fn, update_fn)
