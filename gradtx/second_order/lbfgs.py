"""Limited-memory BFGS: Optax's ``scale_by_lbfgs`` and ``lbfgs``, and gradtx's ``lbfgs_solver``.

``scale_by_lbfgs`` is the preconditioner alone; ``lbfgs`` chains it with a line search exactly as
Optax does. ``lbfgs_solver`` is a self-contained L-BFGS with its own strong Wolfe search, memory
restarts and scipy-style stopping tests (``gtol``, ``ftol``, ``status``), for ``gradtx.minimize``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import GradientTransformation, ScalarOrSchedule, identity
from gradtx.combinators import chain
from gradtx.extra_args import GradientTransformationExtraArgs
from gradtx.scaling import scale, scale_by_learning_rate
from gradtx.second_order._common import (
    check_positive_int,
    refuse_schedules,
    require_params,
    require_value_fn,
    safe_divide,
    scalar_dtype,
    tree_inner,
    tree_neg,
    tree_scale,
    tree_sub,
    tree_where,
)
from gradtx.second_order.line_search import wolfe_line_search
from gradtx.second_order.status import (
    SolverStatus,
    check_tolerances,
    gradient_converged,
    line_search_status,
    unless_stopped,
)
from gradtx.second_order.zoom_linesearch import scale_by_zoom_linesearch
from gradtx.tree import add_scale, cast_like, norm, real
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_vdot, tree_zeros_like, zero_step_count
from gradtx.validation import check_schedule_arguments, check_state_type

PyTree = Any


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`.

    Attributes:
      count: updates so far (int32, saturating).
      params: ``w_{k-1}``, the parameters at the last update (zeros before the first).
      updates: ``u_{k-1}``, the incoming updates (gradients) at the last update.
      diff_params_memory: ``dw_i = w_{i+1} - w_i`` for the last ``m`` updates, each leaf stacked
        along a leading axis of size ``m`` (a circular buffer, slot ``i mod m``).
      diff_updates_memory: ``du_i = u_{i+1} - u_i``, stored the same way.
      weights_memory: ``rho_i = 1 / <du_i, dw_i>`` (0 for an empty slot or ``<du_i, dw_i> = 0``).

    Matches ``optax.ScaleByLBFGSState``.
    """

    count: jax.Array
    params: PyTree
    updates: PyTree
    diff_params_memory: PyTree
    diff_updates_memory: PyTree
    weights_memory: jax.Array


def two_loop_recursion(
    vector: PyTree,
    diff_params_memory: PyTree,
    diff_updates_memory: PyTree,
    weights_memory: jax.Array,
    next_slot: jax.Array,
    identity_scale: jax.Array,
) -> PyTree:
    r"""``P v``, the L-BFGS inverse-Hessian approximation times ``v``, by the two-loop recursion.

    With the pairs :math:`(\delta w_i, \delta u_i, \rho_i)` in slots ``next_slot - 1`` (newest) back to
    ``next_slot`` (oldest) of the circular buffers (N&W Algorithm 7.4):

    .. math::
        q \leftarrow v;\ \text{newest to oldest: } \alpha_i = \rho_i \langle\delta w_i, q\rangle,\
        q \leftarrow q - \alpha_i \delta u_i;\quad r \leftarrow \gamma q;\
        \text{oldest to newest: } \beta_i = \rho_i \langle\delta u_i, r\rangle,\
        r \leftarrow r + (\alpha_i - \beta_i)\,\delta w_i.

    An empty slot has :math:`\rho_i = 0` and changes nothing. Inner products take real parts
    (complex parameters).
    """
    memory_size = weights_memory.shape[0]
    oldest_first = (next_slot + jnp.arange(memory_size)) % memory_size

    def pair(i):
        return jax.tree.map(lambda h: h[i], (diff_params_memory, diff_updates_memory))

    def newest_to_oldest(q, i):
        dw, du = pair(i)
        alpha = weights_memory[i] * real(tree_inner(dw, q))
        return cast_like(add_scale(q, -alpha, du), q), alpha

    q, alphas = jax.lax.scan(newest_to_oldest, vector, oldest_first, reverse=True)
    r = cast_like(jax.tree.map(lambda x: identity_scale * x, q), q)

    def oldest_to_newest(r, i_alpha):
        i, alpha = i_alpha
        dw, du = pair(i)
        beta = weights_memory[i] * real(tree_inner(du, r))
        return cast_like(add_scale(r, alpha - beta, dw), r), None

    r, _ = jax.lax.scan(oldest_to_newest, r, (oldest_first, alphas))
    return r


@check_schedule_arguments
def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True) -> GradientTransformation:
    r"""Multiplies the updates by the L-BFGS approximation of the inverse Hessian.

    At update :math:`k`, with parameters :math:`w_k` and incoming updates (gradients) :math:`u_k`,
    the pair of the last step is stored, then the output is :math:`P_k u_k` (two-loop recursion,
    :func:`two_loop_recursion`):

    .. math::
        \delta w_{k-1} = w_k - w_{k-1},\quad \delta u_{k-1} = u_k - u_{k-1},\quad
        \rho_{k-1} = 1 / \langle \delta u_{k-1}, \delta w_{k-1} \rangle,

        P_k = V_{k-1}^\top \cdots V_{k-m}^\top (\gamma_k I) V_{k-m} \cdots V_{k-1}
              + \textstyle\sum \text{(the BFGS rank-one terms)},\quad
        V_i = I - \rho_i \delta u_i \delta w_i^\top,

        \gamma_k = \frac{\langle \delta w_{k-1}, \delta u_{k-1}\rangle}{\|\delta u_{k-1}\|^2}
        \ \text{(N\&W eq. 7.20; 1 if } \texttt{scale\_init\_precond=False}\text{)},\qquad
        \gamma_0 = \min(1, 1 / \|u_0\|).

    The first output is thus the gradient scaled to norm at most 1. The pair is formed from the
    parameters and updates seen by consecutive calls, so chain a line search *after* this block
    (as :func:`lbfgs` does): it then enters the memory on the next call, once the step is taken.
    A pair with :math:`\langle \delta u, \delta w\rangle = 0` gets :math:`\rho = 0` (ignored); a
    pair with negative curvature is kept, as in Optax (the line search's curvature condition
    keeps it positive along accepted steps).

    Args:
      memory_size: ``m``, the number of pairs kept (default 10).
      scale_init_precond: use :math:`\gamma_k` above instead of 1 (default True).

    State:
      :class:`ScaleByLBFGSState` (``count``, ``params``, ``updates``, ``diff_params_memory``,
      ``diff_updates_memory``, ``weights_memory``).

    Matches ``optax.scale_by_lbfgs`` (the same outputs, tested in float64).

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithms 7.4 and 7.5.
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 1989.
    """
    check_positive_int(memory_size, "memory_size")

    def init_fn(params: PyTree) -> ScaleByLBFGSState:
        history = jax.tree.map(lambda x: jnp.zeros((memory_size,) + jnp.shape(x), jnp.result_type(x)), params)
        return ScaleByLBFGSState(
            count=jnp.zeros([], jnp.int32),
            params=tree_zeros_like(params),
            updates=tree_zeros_like(params),
            diff_params_memory=history,
            diff_updates_memory=history,
            weights_memory=jnp.zeros(memory_size),
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByLBFGSState, "scale_by_lbfgs")
        del extra_args
        params = require_params(params, "scale_by_lbfgs")
        check_trees_match(updates, params, name="updates", reference_name="params")
        first = state.count == 0
        newest = (state.count - 1) % memory_size
        diff_params = jax.tree.map(lambda a, b: a - b, params, state.params)
        diff_updates = jax.tree.map(lambda a, b: a - b, updates, state.updates)
        curvature = real(tree_inner(diff_updates, diff_params))
        weight = jnp.where(curvature == 0.0, 0.0, 1.0 / curvature)
        # No pair exists before the first step: store zeros (rho = 0 makes the slot inert).
        diff_params, diff_updates, weight = jax.tree.map(
            lambda x: jnp.where(first, jnp.zeros_like(x), x), (diff_params, diff_updates, weight)
        )
        diff_params_memory, diff_updates_memory, weights_memory = jax.tree.map(
            lambda h, x: h.at[newest].set(x),
            (state.diff_params_memory, state.diff_updates_memory, state.weights_memory),
            (diff_params, diff_updates, weight),
        )
        if scale_init_precond:
            squared_norm = norm(diff_updates, squared=True)
            gamma = jnp.where(squared_norm > 0.0, real(tree_inner(diff_updates, diff_params)) / squared_norm, 1.0)
            # The first step: the gradient capped to norm 1 (a trust region of radius 1).
            capped = jnp.minimum(1.0, 1.0 / norm(jax.lax.stop_gradient(updates)))
            gamma = jnp.where(first, capped, gamma)
        else:
            gamma = 1.0
        direction = two_loop_recursion(
            updates, diff_params_memory, diff_updates_memory, weights_memory, state.count % memory_size, gamma
        )
        return direction, ScaleByLBFGSState(
            count=saturating_increment(state.count),
            params=params,
            updates=updates,
            diff_params_memory=diff_params_memory,
            diff_updates_memory=diff_updates_memory,
            weights_memory=weights_memory,
        )

    return GradientTransformation(init_fn, update_fn)


# Optax's default: the zoom line search from a first trial of 1 (the quasi-Newton step), 20 evaluations.
_DEFAULT_LINESEARCH = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


@check_schedule_arguments
def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = _DEFAULT_LINESEARCH,
) -> GradientTransformationExtraArgs:
    r"""L-BFGS: the limited-memory BFGS direction scaled by a line search (Optax's ``lbfgs``).

    .. math::
        d_k = -P_k g_k\ \text{(}\texttt{scale\_by\_lbfgs}\text{)},\qquad
        w_{k+1} = w_k + \eta_k d_k,

    with :math:`\eta_k` from ``linesearch`` (default: the zoom line search for the strong Wolfe
    conditions, first trial 1, at most 20 evaluations), or :math:`\eta_k` = ``learning_rate``
    (a number or schedule) times the line search's step when both are given. It is
    ``chain(scale_by_lbfgs(memory_size, scale_init_precond), scale(-1) or
    scale_by_learning_rate(learning_rate), linesearch)``; ``linesearch=None`` drops the search.

    Use as in Optax, reusing the line search's value and gradient::

        solver = gradtx.lbfgs()
        value_and_grad = gradtx.value_and_grad_from_state(f)
        state = solver.init(params)
        for _ in range(n):
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=f)
            params = gradtx.apply_updates(params, updates)

    (gradtx also accepts ``update(grad, state, params, value_fn=f)`` and evaluates the rest.)

    Args:
      learning_rate: optional fixed step or schedule (default None: the line search's step).
      memory_size: ``m``, pairs kept (default 10).
      scale_init_precond: scale the initial inverse Hessian by :math:`\gamma_k` (default True).
      linesearch: a line-search transformation, e.g. :func:`scale_by_zoom_linesearch` or
        :func:`scale_by_backtracking_linesearch`, or None.

    State:
      a tuple ``(ScaleByLBFGSState, <state of the scaling>, <state of the line search>)``.

    Matches ``optax.lbfgs`` (the same iterates, tested over 100+ steps in float64). The former
    gradtx L-BFGS, with its own strong Wolfe search, restarts and scipy-style stopping tests
    (``gtol``, ``ftol``, ``status``), is :func:`lbfgs_solver`; :func:`gradtx.minimize` uses it.

    References:
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 1989.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithms 7.4, 7.5, 3.5, 3.6.
    """
    scaling = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    chained = chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        scaling,
        identity() if linesearch is None else linesearch,
    )
    return GradientTransformationExtraArgs(chained.init, chained.update)


class LbfgsState(NamedTuple):
    """State of :func:`lbfgs_solver`.

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
    """``H_t g_t`` by the two-loop recursion over the stored pairs of :func:`lbfgs_solver`.

    ``H_t`` is the BFGS inverse-Hessian approximation built from ``gamma I`` by the stored pairs,
    ``gamma = s.y / y.y`` of the newest pair (1 with no pairs); see :func:`two_loop_recursion`. The
    search direction is ``-H_t g_t``.
    """
    memory = state.inverse_curvatures.shape[0]
    newest = (state.next_slot - 1) % memory
    s_new, y_new = _slot(state.position_changes, newest), _slot(state.gradient_changes, newest)
    gamma = jnp.where(state.num_pairs > 0, safe_divide(tree_vdot(s_new, y_new), tree_vdot(y_new, y_new)), 1)
    return two_loop_recursion(
        gradient, state.position_changes, state.gradient_changes, state.inverse_curvatures, state.next_slot, gamma
    )


@check_schedule_arguments
def lbfgs_solver(
    memory_size: int = 10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_line_search_steps: int = 30,
    *,
    gtol: float = 0.0,
    ftol: float = 0.0,
) -> GradientTransformation:
    """L-BFGS run as a solver: its own strong Wolfe line search, restarts and stopping tests.

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

    The iteration is N&W Algorithm 7.5. It was ``gradtx.lbfgs`` before that name became Optax's
    :func:`lbfgs`, which uses the same two-loop recursion with the pair of the last step and a
    zoom line search, without stopping tests; the optimum reached is the same (tested against
    ``scipy.optimize.minimize``). No Optax equivalent.

    References:
      Nocedal, "Updating quasi-Newton matrices with limited storage", Math. Comp. 1980.
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization", 1989.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., section 7.2.
      Byrd, Lu, Nocedal & Zhu, "A limited memory algorithm for bound constrained optimization",
      SIAM J. Sci. Comput. 1995 (L-BFGS-B's stopping tests).
    """
    refuse_schedules("lbfgs_solver", memory_size=memory_size, c1=c1, c2=c2, max_line_search_steps=max_line_search_steps)
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
        value_fn = require_value_fn(value_fn, "lbfgs_solver")
        params = require_params(params, "lbfgs_solver")
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
            status = line_search_status(f0, gradient, result, ~moved & ~restart, gtol, ftol)
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
