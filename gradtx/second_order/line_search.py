"""Line searches along a descent direction: strong Wolfe (bracketing + zoom) and Armijo backtracking.

Both are functions, not transformations: the second-order optimizers call them inside ``update``
with the objective they receive as ``value_fn``. Both are single ``jax.lax.while_loop`` programs
with a fixed cap on function evaluations, so they run under ``jit``.

Notation: ``phi(a) = f(w + a d)``, ``phi'(a) = grad f(w + a d) . d``; ``d`` must be a descent
direction (``phi'(0) < 0``), otherwise the search returns the step 0 at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.second_order._common import check_positive_int, tree_add_scaled, tree_where
from gradtx.tree_utils import tree_vdot

PyTree = Any


class LineSearchResult(NamedTuple):
    """The outcome of a line search along ``d`` from ``w``.

    Attributes:
      step_size: the accepted ``a`` (0 when no acceptable step was found).
      value: ``f(w + a d)``.
      gradient: ``grad f(w + a d)`` (``None`` for the backtracking search, which never
        differentiates).
      num_evaluations: evaluations of ``f`` (with its gradient for the Wolfe search).
      converged: the conditions the search enforces hold at ``a``.
    """

    step_size: jax.Array
    value: jax.Array
    gradient: PyTree
    num_evaluations: jax.Array
    converged: jax.Array


def _check_wolfe_constants(c1: float, c2: float) -> None:
    validation.check_positive(c1, "c1")
    validation.check_less_than(c1, 1.0, "c1")
    validation.check_greater_than(c2, c1, "c2")
    validation.check_less_than(c2, 1.0, "c2")


def _cubic_minimizer(a, fa, da, b, fb, db):
    """Minimizer of the cubic matching ``phi`` and ``phi'`` at ``a`` and ``b`` (N&W eq. 3.59)."""
    d1 = da + db - 3 * (fa - fb) / (a - b)
    radicand = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.maximum(radicand, 0))
    step = b - (b - a) * (db + d2 - d1) / (db - da + 2 * d2)
    return jnp.where(radicand >= 0, step, jnp.nan)


def wolfe_line_search(
    value_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    direction: PyTree,
    value: jax.Array,
    gradient: PyTree,
    *,
    initial_step: float | jax.Array = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_iterations: int = 30,
    max_step: float = 1e10,
) -> LineSearchResult:
    """Finds a step ``a`` satisfying the strong Wolfe conditions along ``direction``.

        phi(a) <= phi(0) + c1 a phi'(0)          (sufficient decrease)
        |phi'(a)| <= c2 |phi'(0)|                (curvature)

    Nocedal & Wright, Algorithms 3.5 and 3.6: a bracketing phase tries ``a_0 = initial_step`` and
    doubles it until it passes a minimizer or violates sufficient decrease; a zoom phase then
    shrinks the bracket ``[a_lo, a_hi]`` (``a_lo`` always the best sufficient-decrease point) by
    safeguarded cubic interpolation (bisection when the cubic has no minimizer inside the middle
    80% of the bracket). Each trial evaluates ``f`` and its gradient once.

    Where ``c1 a phi'(0)`` is below the rounding of ``f`` (close to a minimizer), sufficient
    decrease is taken in Hager & Zhang's approximate form ``phi'(a) <= (2 c1 - 1) phi'(0)``
    (equivalent for a quadratic ``phi``) with ``phi(a) <= phi(0) + 100 eps |phi(0)|``, so the
    search still succeeds where the exact test can only fail on rounding.

    If ``max_iterations`` trials pass without satisfying both conditions, the best point with
    sufficient decrease seen so far is returned (step 0 if there is none) with
    ``converged=False``. Use ``c2 = 0.9`` for quasi-Newton methods and ``c2 = 0.1`` for nonlinear
    conjugate gradients (N&W, section 3.1).

    Args:
      value_fn: ``params -> scalar``.
      params: the start ``w``.
      direction: ``d``, a descent direction.
      value: ``f(w)``.
      gradient: ``grad f(w)``.
      initial_step: the first trial ``a_0`` (default 1).
      c1: sufficient-decrease constant (default 1e-4).
      c2: curvature constant, ``c1 < c2 < 1`` (default 0.9).
      max_iterations: cap on evaluations (default 30).
      max_step: the bracketing phase never tries a larger ``a`` (default 1e10).

    Returns:
      A :class:`LineSearchResult` with the gradient at the accepted point.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., section 3.5. More & Thuente, "Line
      search algorithms with guaranteed sufficient decrease", ACM TOMS 1994. Hager & Zhang, "A
      new conjugate gradient method with guaranteed descent and an efficient line search", SIAM
      J. Optim. 2005 (approximate Wolfe conditions).
    """
    _check_wolfe_constants(c1, c2)
    check_positive_int(max_iterations, "max_iterations")
    value_and_grad = jax.value_and_grad(value_fn)
    value = jnp.asarray(value)
    dtype = jnp.result_type(value, jnp.float32)
    value = value.astype(dtype)
    slope = tree_vdot(gradient, direction).astype(dtype)
    zero = jnp.zeros([], dtype)
    rounding = 100 * jnp.finfo(dtype).eps * jnp.abs(value)
    bracket, zoom, done = 0, 1, 2

    class Point(NamedTuple):
        step: jax.Array
        value: jax.Array
        slope: jax.Array
        gradient: PyTree

    class Carry(NamedTuple):
        i: jax.Array
        phase: jax.Array
        trial: jax.Array  # next bracketing trial
        prev: Point  # last bracketing trial (starts at a = 0)
        lo: Point
        hi: Point
        accepted: Point
        converged: jax.Array

    origin = Point(zero, value, slope, gradient)

    def cond(c: Carry) -> jax.Array:
        return (c.phase != done) & (c.i < max_iterations)

    def evaluate(step) -> Point:
        f, g = value_and_grad(tree_add_scaled(params, step, direction))
        f = jnp.asarray(f, dtype)
        return Point(step, f, tree_vdot(g, direction).astype(dtype), g)

    def pick(condition, a: Point, b: Point) -> Point:
        return Point(*tree_where(condition, tuple(a), tuple(b)))

    def body(c: Carry) -> Carry:
        lo_step, hi_step = c.lo.step, c.hi.step
        cubic = _cubic_minimizer(lo_step, c.lo.value, c.lo.slope, hi_step, c.hi.value, c.hi.slope)
        left, right = jnp.minimum(lo_step, hi_step), jnp.maximum(lo_step, hi_step)
        width = right - left
        inside = jnp.isfinite(cubic) & (cubic >= left + 0.1 * width) & (cubic <= right - 0.1 * width)
        zoom_step = jnp.where(inside, cubic, 0.5 * (lo_step + hi_step))
        in_bracket = c.phase == bracket
        point = evaluate(jnp.where(in_bracket, c.trial, zoom_step))

        # Near a minimizer the decrease c1 a phi'(0) falls below the rounding of f, and the exact
        # test fails for every step. Hager & Zhang's (2005) approximate form, phi'(a) <=
        # (2 c1 - 1) phi'(0) (the same test for a quadratic phi), is then used with f allowed
        # to rise by rounding only (100 eps |f(0)|).
        approximate = (point.slope <= (2 * c1 - 1) * slope) & (point.value <= value + rounding)
        armijo = (point.value <= value + c1 * point.step * slope) | approximate
        curvature = jnp.abs(point.slope) <= -c2 * slope

        # Bracketing phase (N&W Algorithm 3.5).
        increased = (~armijo) | ((c.i > 0) & (point.value >= c.prev.value))
        b_accept = ~increased & curvature
        b_zoom_up = increased  # zoom(prev, point)
        b_zoom_down = ~increased & ~curvature & (point.slope >= 0)  # zoom(point, prev)
        b_extend = ~(b_accept | b_zoom_up | b_zoom_down)

        # Zoom phase (N&W Algorithm 3.6).
        z_shrink_hi = (~armijo) | (point.value >= c.lo.value)
        z_accept = ~z_shrink_hi & curvature
        z_flip = ~z_shrink_hi & ~curvature & (point.slope * (hi_step - lo_step) >= 0)

        if_bracket_lo = pick(b_zoom_up, c.prev, point)
        if_bracket_hi = pick(b_zoom_up, point, c.prev)
        if_zoom_hi = pick(z_shrink_hi, point, pick(z_flip, c.lo, c.hi))
        if_zoom_lo = pick(z_shrink_hi, c.lo, point)

        new_lo = pick(in_bracket, pick(b_extend, c.lo, if_bracket_lo), if_zoom_lo)
        new_hi = pick(in_bracket, pick(b_extend, c.hi, if_bracket_hi), if_zoom_hi)
        accept = jnp.where(in_bracket, b_accept, z_accept)
        # A bracket narrower than rounding cannot improve: stop with its best end.
        collapsed = (~in_bracket) & (jnp.abs(new_hi.step - new_lo.step) <= 1e-12 * jnp.abs(new_lo.step))
        phase = jnp.where(
            accept | collapsed,
            done,
            jnp.where(in_bracket & b_extend, bracket, zoom),
        )
        trial = jnp.minimum(2 * point.step, max_step)
        # Without acceptance the answer so far is the best sufficient-decrease point.
        fallback = pick(in_bracket & b_extend, point, new_lo)
        return Carry(
            i=c.i + 1,
            phase=phase,
            trial=trial,
            prev=point,
            lo=new_lo,
            hi=new_hi,
            accepted=pick(accept, point, fallback),
            converged=accept,
        )

    initial_step = jnp.asarray(initial_step, dtype)
    init = Carry(
        i=jnp.zeros([], jnp.int32),
        phase=jnp.where(slope < 0, bracket, done),
        trial=jnp.minimum(initial_step, max_step),
        prev=origin,
        lo=origin,
        hi=origin,
        accepted=origin,
        converged=jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, init)
    return LineSearchResult(
        step_size=out.accepted.step,
        value=out.accepted.value,
        gradient=out.accepted.gradient,
        num_evaluations=out.i,
        converged=out.converged,
    )


def backtracking_line_search(
    value_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    direction: PyTree,
    value: jax.Array,
    slope: jax.Array,
    *,
    initial_step: float | jax.Array = 1.0,
    c1: float = 1e-4,
    shrink_factor: float = 0.5,
    max_iterations: int = 30,
) -> LineSearchResult:
    """Armijo backtracking: the first ``a = a_0 s^j`` (j = 0, 1, ...) with sufficient decrease.

        phi(a) <= phi(0) + c1 a phi'(0),   a <- shrink_factor * a until it holds.

    Nocedal & Wright, Algorithm 3.1. Only function values are evaluated. If ``max_iterations``
    trials fail, the step is 0 and ``converged=False``; a non-descent ``slope >= 0`` also gives 0.

    Args:
      value_fn: ``params -> scalar``.
      params: the start ``w``.
      direction: ``d``.
      value: ``f(w)``.
      slope: ``grad f(w) . d`` (negative for a descent direction).
      initial_step: first trial (default 1, the full Newton step).
      c1: sufficient-decrease constant in (0, 1) (default 1e-4).
      shrink_factor: contraction in (0, 1) (default 0.5).
      max_iterations: cap on evaluations (default 30).

    Returns:
      A :class:`LineSearchResult` (``gradient`` is None).

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., Algorithm 3.1. Boyd & Vandenberghe,
      "Convex Optimization", section 9.2 (backtracking) and 9.5 (damped Newton).
    """
    validation.check_positive(c1, "c1")
    validation.check_less_than(c1, 1.0, "c1")
    validation.check_positive(shrink_factor, "shrink_factor")
    validation.check_less_than(shrink_factor, 1.0, "shrink_factor")
    check_positive_int(max_iterations, "max_iterations")
    value = jnp.asarray(value)
    dtype = jnp.result_type(value, jnp.float32)
    value = value.astype(dtype)
    slope = jnp.asarray(slope, dtype)

    def trial_value(step):
        return jnp.asarray(value_fn(tree_add_scaled(params, step, direction)), dtype)

    def cond(carry):
        i, step, trial, accepted = carry
        del step, trial
        return (~accepted) & (i < max_iterations) & (slope < 0)

    def body(carry):
        i, step, _, _ = carry
        trial = trial_value(step)
        accepted = trial <= value + c1 * step * slope  # NaN/inf values are rejected here
        return i + 1, jnp.where(accepted, step, shrink_factor * step), trial, accepted

    init = (jnp.zeros([], jnp.int32), jnp.asarray(initial_step, dtype), value, jnp.asarray(False))
    i, step, trial, accepted = jax.lax.while_loop(cond, body, init)
    return LineSearchResult(
        step_size=jnp.where(accepted, step, 0),
        value=jnp.where(accepted, trial, value),
        gradient=None,
        num_evaluations=i,
        converged=accepted,
    )
