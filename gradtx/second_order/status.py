"""Termination of the deterministic second-order methods: status codes and scipy-style tests.

A method that has stopped (status not ``RUNNING``) returns zero updates from a ``jax.lax.cond``
branch that evaluates nothing, so a converged update costs next to nothing (issue 12).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.tree_utils import tree_zeros_like

PyTree = Any


class SolverStatus(enum.IntEnum):
    """Why a second-order method stopped; the ``status`` field of its state holds the code.

    Attributes:
      RUNNING: not stopped (0).
      GRADIENT_TOLERANCE: ``max_i |g_i| <= gtol`` (1), scipy's ``gtol`` (infinity norm).
      VALUE_TOLERANCE: ``f_{t-1} - f_t <= ftol max(|f_{t-1}|, |f_t|, 1)`` (2), scipy L-BFGS-B's
        relative reduction test.
      LINE_SEARCH_FAILED: no decrease along the steepest-descent direction (3), scipy's
        "ABNORMAL_TERMINATION_IN_LNSRCH"; usually the objective is at its floor in this precision.
      MAX_ITERATIONS: the iteration cap of :func:`gradtx.minimize` was reached (4).
      NOT_FINITE: the objective or its gradient is NaN or infinite at the current point (5).
    """

    RUNNING = 0
    GRADIENT_TOLERANCE = 1
    VALUE_TOLERANCE = 2
    LINE_SEARCH_FAILED = 3
    MAX_ITERATIONS = 4
    NOT_FINITE = 5


def check_tolerances(gtol: Any, ftol: Any) -> None:
    """``gtol >= 0`` and ``ftol >= 0``, Python numbers (they select a code path, no schedules)."""
    for name, value in (("gtol", gtol), ("ftol", ftol)):
        if callable(value):
            raise TypeError(f"{name} must be a number, got the schedule or function {value!r}.")
        validation.check_non_negative(value, name)


def gradient_converged(gradient: PyTree, gtol: Any) -> jax.Array:
    """``max_i |g_i| <= gtol`` over every leaf (scipy's ``gtol`` test; True for an empty tree)."""
    leaves = jax.tree.leaves(gradient)
    if not leaves:
        return jnp.asarray(True)
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.abs(x) <= gtol) for x in leaves])


def value_converged(previous: jax.Array, current: jax.Array, ftol: Any) -> jax.Array:
    """``f_{t-1} - f_t <= ftol max(|f_{t-1}|, |f_t|, 1)``: the relative reduction of L-BFGS-B."""
    scale = jnp.maximum(jnp.maximum(jnp.abs(previous), jnp.abs(current)), 1)
    return previous - current <= ftol * scale


def all_finite(value: jax.Array, gradient: PyTree) -> jax.Array:
    """``f`` and every entry of ``g`` are finite."""
    finite = jnp.isfinite(value)
    for leaf in jax.tree.leaves(gradient):
        finite = finite & jnp.all(jnp.isfinite(leaf))
    return finite


def line_search_status(
    value: jax.Array, gradient: PyTree, search: Any, failed: jax.Array, gtol: Any, ftol: Any
) -> jax.Array:
    """The int32 ``SolverStatus`` after a line-search step from ``(value, gradient)``, first match wins.

    ``NOT_FINITE`` if the start is not finite; ``LINE_SEARCH_FAILED`` if ``failed``; else, when the
    search moved, ``GRADIENT_TOLERANCE`` or ``VALUE_TOLERANCE`` from its new point; else ``RUNNING``.
    ``search`` has ``step_size``, ``value`` and ``gradient`` (a ``LineSearchResult``).
    """
    moved = search.step_size > 0
    return jnp.select(
        [
            ~all_finite(value, gradient),
            failed,
            moved & gradient_converged(search.gradient, gtol),
            moved & value_converged(value, search.value, ftol),
        ],
        [
            SolverStatus.NOT_FINITE,
            SolverStatus.LINE_SEARCH_FAILED,
            SolverStatus.GRADIENT_TOLERANCE,
            SolverStatus.VALUE_TOLERANCE,
        ],
        SolverStatus.RUNNING,
    ).astype(jnp.int32)


def unless_stopped(
    stopped: jax.Array, params: PyTree, run: Callable[[], tuple[PyTree, Any]], stop: Callable[[], Any]
) -> tuple[PyTree, Any]:
    """``run()`` (the update, ``(updates, new_state)``), or zero updates and ``stop()``'s state
    when ``stopped``; a ``lax.cond``, so a stopped update evaluates nothing."""
    return jax.lax.cond(stopped, lambda: (tree_zeros_like(params), stop()), run)
