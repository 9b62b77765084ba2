"""``minimize(fun, x0, method=...)``: run a second-order method to convergence in one call."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import apply_updates
from gradtx.second_order.conjugate_gradient import conjugate_gradient
from gradtx.second_order.lbfgs import lbfgs_solver
from gradtx.second_order.newton import newton
from gradtx.second_order.status import SolverStatus, check_tolerances, gradient_converged

PyTree = Any

# method -> (builder, whether its state carries the gradient at the new point, scipy's defaults
# (gtol, ftol, max_iter per parameter or None for a fixed cap)).
_LBFGSB_FTOL = 2.220446049250313e-09
_METHODS: dict[str, tuple[Callable, bool, float, float]] = {
    "lbfgs": (lbfgs_solver, True, 1e-5, _LBFGSB_FTOL),
    # scipy's CG searches with c2 = 0.4 (N&W suggest 0.1; 0.4 needs fewer evaluations here).
    "cg": (functools.partial(conjugate_gradient, c2=0.4), True, 1e-5, 0.0),
    "newton": (newton, False, 1e-5, 0.0),
    "newton_cg": (functools.partial(newton, solver="cg"), False, 1e-5, 0.0),
}


class MinimizeResult(NamedTuple):
    """The outcome of :func:`minimize`, named as ``scipy.optimize.OptimizeResult``'s fields.

    Attributes:
      x: the solution, a tree shaped like ``x0``.
      fun: ``f(x)``.
      grad: ``grad f(x)`` (scipy's ``jac``).
      nit: iterations (updates that did work).
      nfev: evaluations of ``f`` (each with its gradient, except Newton's backtracking trials).
      status: a :class:`SolverStatus` code (int32).
      success: ``status`` is ``GRADIENT_TOLERANCE`` or ``VALUE_TOLERANCE``.
      state: the method's final state (its ``status`` field, memory, counters).
    """

    x: PyTree
    fun: jax.Array
    grad: PyTree
    nit: jax.Array
    nfev: jax.Array
    status: jax.Array
    success: jax.Array
    state: Any


def minimize(
    fun: Callable[..., jax.Array],
    x0: PyTree,
    method: str = "lbfgs",
    *,
    args: tuple = (),
    tol: float | None = None,
    gtol: float | None = None,
    ftol: float | None = None,
    max_iter: int | None = None,
    options: dict | None = None,
) -> MinimizeResult:
    """Minimizes ``fun(x, *args)`` from ``x0`` with a second-order method until it stops.

        x_{k+1} = x_k + u_k,   u_k = method.update(g_k, state_k, x_k, value=f_k, value_fn=f)

    inside one ``jax.lax.while_loop`` that ends when the method's status is no longer
    ``RUNNING`` (``max_i |g_i| <= gtol``; ``f_k - f_{k+1} <= ftol max(|f_k|, |f_{k+1}|, 1)``; a
    failed line search; a non-finite value) or after ``max_iter`` iterations. The whole call is
    one compiled program (``jax.jit`` with ``fun``, ``method`` and the tolerances static: pass
    the same ``fun`` object to reuse it, and put data that changes in ``args``); it also runs
    inside ``jit`` and ``vmap``.

    Methods, with scipy's defaults:

    * ``"lbfgs"`` (default): :func:`lbfgs_solver`, ``gtol=1e-5``, ``ftol=2.2e-9``, ``max_iter=15000``
      (``scipy.optimize.minimize(method="L-BFGS-B")``; ``tol`` sets both tolerances).
    * ``"cg"``: :func:`conjugate_gradient` (Polak-Ribiere+) with scipy's ``c2=0.4``,
      ``gtol=1e-5``, ``max_iter=200 n`` (``method="CG"``; ``tol`` sets ``gtol``).
    * ``"newton"``: :func:`newton` with the exact solve; ``"newton_cg"``: Newton-CG
      (``method="Newton-CG"``, which stops on the step length instead); ``gtol=1e-5``,
      ``max_iter=200 n``.

    The line-search methods reuse the value and gradient their line search computed at the new
    point (no extra evaluation per iteration), as ``optax.value_and_grad_from_state`` does.

    Args:
      fun: ``f(x, *args) -> scalar``, differentiable (twice for the Newton methods).
      x0: the start, any tree of float arrays.
      method: ``"lbfgs"``, ``"cg"``, ``"newton"`` or ``"newton_cg"``.
      args: extra arguments of ``fun`` (traced, so new values do not recompile).
      tol: scipy's ``tol``: sets ``gtol`` (and ``ftol`` for ``"lbfgs"``).
      gtol: gradient tolerance, infinity norm (overrides ``tol``).
      ftol: relative-reduction tolerance (overrides ``tol``).
      max_iter: the iteration cap (default: scipy's for the method).
      options: more keyword arguments of the method's builder, e.g. ``{"memory_size": 20}``.

    Returns:
      A :class:`MinimizeResult`.

    Matches ``scipy.optimize.minimize``'s stopping rules and result fields (``grad`` for
    ``jac``); tested against it on convex and non-convex problems.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., chapters 3, 5 and 7. Byrd, Lu, Nocedal
      & Zhu, "A limited memory algorithm for bound constrained optimization", 1995 (L-BFGS-B).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {tuple(_METHODS)}, got {method!r}.")
    if not callable(fun):
        raise TypeError(f"minimize: fun must be callable (x, *args) -> scalar, got {fun!r}.")
    _, _, default_gtol, default_ftol = _METHODS[method]
    if tol is not None:
        default_gtol = tol
        default_ftol = tol if method == "lbfgs" else default_ftol
    gtol = default_gtol if gtol is None else gtol
    ftol = default_ftol if ftol is None else ftol
    check_tolerances(gtol, ftol)
    if max_iter is None:
        size = sum(int(jnp.size(x)) for x in jax.tree.leaves(x0))
        max_iter = 15000 if method == "lbfgs" else 200 * max(size, 1)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}.")
    options_items = tuple(sorted((options or {}).items()))
    return _minimize(fun, x0, tuple(args), method, float(gtol), float(ftol), max_iter, options_items)


@functools.partial(jax.jit, static_argnames=("fun", "method", "gtol", "ftol", "max_iter", "options_items"))
def _minimize(fun, x0, args, method, gtol, ftol, max_iter, options_items) -> MinimizeResult:
    builder, caches_gradient, _, _ = _METHODS[method]
    tx = builder(gtol=gtol, ftol=ftol, **dict(options_items))

    def objective(x):
        return fun(x, *args)

    value_and_grad = jax.value_and_grad(objective)
    value, grad = value_and_grad(x0)

    class Carry(NamedTuple):
        x: PyTree
        state: Any
        value: jax.Array
        grad: PyTree
        nfev: jax.Array

    def running(c: Carry) -> jax.Array:
        return (
            (c.state.status == SolverStatus.RUNNING)
            & (c.state.step_count < max_iter)
            & ~gradient_converged(c.grad, gtol)
        )

    def step(c: Carry) -> Carry:
        updates, state = tx.update(c.grad, c.state, c.x, value=c.value, value_fn=objective)
        x = apply_updates(c.x, updates)
        if caches_gradient:
            return Carry(x, state, state.value, state.grad, c.nfev)
        new_value, new_grad = value_and_grad(x)
        return Carry(x, state, new_value, new_grad, c.nfev + 1)

    out = jax.lax.while_loop(running, step, Carry(x0, tx.init(x0), value, grad, jnp.ones([], jnp.int32)))
    status = out.state.status
    status = jnp.where(
        status != SolverStatus.RUNNING,
        status,
        jnp.where(gradient_converged(out.grad, gtol), SolverStatus.GRADIENT_TOLERANCE, SolverStatus.MAX_ITERATIONS),
    ).astype(jnp.int32)
    return MinimizeResult(
        x=out.x,
        fun=out.value,
        grad=out.grad,
        nit=out.state.step_count,
        nfev=out.nfev + out.state.num_evaluations,
        status=status,
        success=(status == SolverStatus.GRADIENT_TOLERANCE) | (status == SolverStatus.VALUE_TOLERANCE),
        state=out.state._replace(status=status),
    )
