"""Limited-memory BFGS with a strong Wolfe line search."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import GradientTransformation
from gradtx.second_order._common import (
    check_positive_int,
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
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_vdot, zero_step_count
from gradtx.validation import check_state_type

PyTree = Any


class LbfgsState(NamedTuple):
    """State of :func:`lbfgs`.

    Attributes:
      step_count: number of updates so far (int32, saturating).
      position_changes: ``s_i = w_{i+1} - w_i`` for the last ``m`` accepted pairs, each leaf stacked
        along a leading axis of size ``m`` (a circular buffer).
      gradient_changes: ``y_i = g_{i+1} - g_i``, stored the same way.
      inverse_curvatures: ``rho_i = 1 / y_i.s_i`` (0 marks an empty slot).
      next_slot: where the next pair is written.
      num_pairs: how many slots hold a pair (at most ``m``).
    """

    step_count: jax.Array
    position_changes: PyTree
    gradient_changes: PyTree
    inverse_curvatures: jax.Array
    next_slot: jax.Array
    num_pairs: jax.Array


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


def lbfgs(
    memory_size: int = 10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_line_search_steps: int = 30,
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
    stored in the same update. If the search finds no acceptable step, the update is zero and
    the memory is kept.

    The objective is given to ``update`` as ``value_fn`` (``params -> scalar loss``); ``updates``
    must be its gradient at ``params``::

        updates, state = tx.update(grads, state, params, value_fn=loss)

    Args:
      memory_size: ``m``, the number of stored pairs (default 10).
      c1: sufficient-decrease constant (default 1e-4).
      c2: curvature constant (default 0.9, the quasi-Newton choice).
      max_line_search_steps: cap on evaluations per line search (default 30).

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
    """
    check_positive_int(memory_size, "memory_size")
    validation.check_positive(c1, "c1")
    validation.check_greater_than(c2, c1, "c2")
    validation.check_less_than(c2, 1.0, "c2")
    check_positive_int(max_line_search_steps, "max_line_search_steps")

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
        )

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        value_fn = require_value_fn(value_fn, "lbfgs")
        params = require_params(params, "lbfgs")
        check_trees_match(updates, params, name="updates", reference_name="params")
        check_state_type(state, LbfgsState, "lbfgs")
        direction = tree_neg(lbfgs_direction(updates, state))
        slope = tree_vdot(updates, direction)
        # Rounding can spoil H_t's positive definiteness: fall back to steepest descent.
        descent = slope < 0
        direction = tree_where(descent, direction, tree_neg(updates))
        gradient_norm = jnp.sqrt(tree_vdot(updates, updates))
        initial_step = jnp.where((state.num_pairs > 0) & descent, 1, safe_divide(1, gradient_norm))
        result = wolfe_line_search(
            value_fn,
            params,
            direction,
            value_fn(params),
            updates,
            initial_step=initial_step,
            c1=c1,
            c2=c2,
            max_iterations=max_line_search_steps,
        )
        step = tree_scale(result.step_size, direction)
        gradient_change = tree_sub(result.gradient, updates)
        curvature = tree_vdot(step, gradient_change).astype(state.inverse_curvatures.dtype)
        store = (result.step_size > 0) & (curvature > 0) & jnp.isfinite(curvature)
        slot = state.next_slot
        new_state = LbfgsState(
            step_count=saturating_increment(state.step_count),
            position_changes=tree_where(store, _set_slot(state.position_changes, slot, step), state.position_changes),
            gradient_changes=tree_where(
                store, _set_slot(state.gradient_changes, slot, gradient_change), state.gradient_changes
            ),
            inverse_curvatures=jnp.where(
                store, state.inverse_curvatures.at[slot].set(safe_divide(1, curvature)), state.inverse_curvatures
            ),
            next_slot=jnp.where(store, (slot + 1) % memory_size, slot),
            num_pairs=jnp.where(store, jnp.minimum(state.num_pairs + 1, memory_size), state.num_pairs),
        )
        return step, new_state

    return GradientTransformation(init_fn, update_fn)
