"""Armijo backtracking as a transformation: ``scale_by_backtracking_linesearch``.

``update`` receives a direction ``u`` and returns ``eta u`` with the largest tried ``eta`` (shrinking
by a constant factor) for which ``f(w + eta u)`` decreases enough. Chained after ``sgd`` it is the
"Armijo SGD" of Vaswani et al. (2019); with ``store_grad=True`` it also keeps the gradient at the
new point for :func:`gradtx.value_and_grad_from_state`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import Params, PyTree
from gradtx.extra_args import GradientTransformationExtraArgs
from gradtx.second_order._common import print_if, real_dtype_of_first_leaf, split_value_fn_kwargs, tree_inner
from gradtx.tree import add_scale, cast_like, conj, real, scale, zeros_like
from gradtx.tree_utils import check_updates_match_params
from gradtx.validation import check_schedule_arguments, check_state_type


class BacktrackingLinesearchInfo(NamedTuple):
    """Diagnostics of the last backtracking search.

    Attributes:
      num_linesearch_steps: evaluations of ``f`` in the last search.
      decrease_error: ``max(0, f(w + eta u) - (1 + rtol) f(w) - c eta <u, grad f(w)>)`` at the last
        trial (``inf`` if ``f`` was not finite there); at most ``atol`` means the search succeeded.
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`.

    Attributes:
      learning_rate: the step ``eta`` of the last search (1 before the first); the next search
        starts from ``min(increase_factor * eta, max_learning_rate)``.
      value: ``f`` at the last trial point (``inf`` before the first update), reused by
        :func:`gradtx.value_and_grad_from_state`.
      grad: the gradient there when ``store_grad=True`` (zeros before the first update), else None.
      info: a :class:`BacktrackingLinesearchInfo`.

    Matches ``optax.ScaleByBacktrackingLinesearchState``.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: PyTree | None
    info: BacktrackingLinesearchInfo


@check_schedule_arguments
def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Scales the direction ``u`` by a step with sufficient decrease, found by backtracking.

    The step :math:`\eta` returned (the update is :math:`\eta u`) is the first of
    :math:`\eta_0, \beta\eta_0, \beta^2\eta_0, \ldots` that satisfies the Armijo criterion

    .. math::
        f(w + \eta u) \le (1 + \delta) f(w) + c\,\eta\,\langle u, \nabla f(w)\rangle + \epsilon,

    with :math:`c` = ``slope_rtol``, :math:`\beta` = ``decrease_factor``, :math:`\delta` = ``rtol``,
    :math:`\epsilon` = ``atol``, and the first trial
    :math:`\eta_0 = \min(\text{increase\_factor}\cdot\eta_{t-1}, \text{max\_learning\_rate})`
    (``increase_factor=1`` keeps the last step, ``math.inf`` restarts from ``max_learning_rate``).
    At most ``max_backtracking_steps + 1`` trials are evaluated; if none passes, the last trial is
    used, or 0 if ``f`` was not finite there. ``u`` must be a descent direction
    (:math:`\langle u, \nabla f(w)\rangle < 0`, true for ``-grad``), or no step may pass.

    ``update(updates, state, params, *, value, grad, value_fn, **extra_args)`` as in
    :func:`scale_by_zoom_linesearch` (gradtx evaluates a missing ``value`` or ``grad``).

    Args:
      max_backtracking_steps: the cap on shrinking steps.
      slope_rtol: :math:`c` (default 1e-4).
      decrease_factor: :math:`\beta` (default 0.8).
      increase_factor: growth of the first trial over the last step (default 1.5).
      max_learning_rate: cap on the first trial (default 1).
      atol: :math:`\epsilon` (default 0).
      rtol: :math:`\delta` (default 0).
      store_grad: also keep :math:`\nabla f` at the new point in the state (default False; costs one
        gradient per update).
      verbose: print when the search fails (``jax.debug.print``).

    State:
      :class:`ScaleByBacktrackingLinesearchState` (``learning_rate``, ``value``, ``grad``, ``info``).

    Matches ``optax.scale_by_backtracking_linesearch`` (the same trials, steps and state, tested in
    float64). Optax differentiates every trial with ``jax.linearize``; gradtx evaluates values only
    and takes one gradient at the accepted point, the same numbers at lower cost.

    References:
      Armijo, "Minimization of functions having Lipschitz continuous first partial derivatives",
      Pacific J. Math. 1966.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithm 3.1.
      Vaswani, Mishkin, Laradji, Schmidt, Gidel & Lacoste-Julien, "Painless stochastic gradient:
      interpolation, line-search, and convergence rates", NeurIPS 2019, arXiv:1905.09997.
    """
    if isinstance(max_backtracking_steps, bool) or (
        isinstance(max_backtracking_steps, int) and max_backtracking_steps < 0
    ):
        raise ValueError(f"max_backtracking_steps must be an integer >= 0, got {max_backtracking_steps!r}.")
    validation.check_non_negative(slope_rtol, "slope_rtol")
    validation.check_positive(decrease_factor, "decrease_factor")
    validation.check_positive(increase_factor, "increase_factor")
    validation.check_positive(max_learning_rate, "max_learning_rate")
    validation.check_non_negative(atol, "atol")
    validation.check_non_negative(rtol, "rtol")

    def init_fn(params: Params) -> ScaleByBacktrackingLinesearchState:
        real_dtype = real_dtype_of_first_leaf(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.asarray(1.0, real_dtype),
            value=jnp.asarray(jnp.inf, real_dtype),
            grad=zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(
                num_linesearch_steps=jnp.asarray(0), decrease_error=jnp.asarray(jnp.inf, real_dtype)
            ),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByBacktrackingLinesearchState,
        params: Params,
        *,
        value: jax.Array | None = None,
        grad: PyTree | None = None,
        value_fn: Callable[..., jax.Array] | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByBacktrackingLinesearchState]:
        check_state_type(state, ScaleByBacktrackingLinesearchState, "scale_by_backtracking_linesearch")
        check_updates_match_params(updates, params, "scale_by_backtracking_linesearch")
        if value_fn is None:
            raise TypeError(
                "scale_by_backtracking_linesearch.update needs the objective: pass value_fn=f "
                "(params -> scalar), and value=f(params), grad=grad f(params) as keyword arguments."
            )
        fn_kwargs = split_value_fn_kwargs(value_fn, extra_args, "scale_by_backtracking_linesearch")

        def objective(p):
            return value_fn(p, **fn_kwargs)

        if value is None or grad is None:
            missing_value, missing_grad = jax.value_and_grad(objective)(params)
            value = missing_value if value is None else value
            grad = missing_grad if grad is None else grad
        slope = real(tree_inner(updates, conj(grad)))

        def decrease_error(stepsize, new_value):
            error = new_value - (1.0 + rtol) * value - stepsize * slope_rtol * slope
            return jnp.maximum(jnp.where(jnp.isnan(error), jnp.inf, error), 0.0)

        def running(carry):
            _, _, error, i = carry
            return ~(error <= atol) & (i <= max_backtracking_steps)

        def body(carry):
            stepsize, _, _, i = carry
            stepsize = jnp.where(i > 0, decrease_factor * stepsize, stepsize)
            new_value = objective(add_scale(params, stepsize, updates))
            return cast_like((stepsize, new_value, decrease_error(stepsize, new_value), i + 1), carry)

        first = jnp.minimum(increase_factor * state.learning_rate, max_learning_rate)
        start = (first, jnp.asarray(value), jnp.asarray(jnp.inf), jnp.asarray(0))
        stepsize, new_value, error, num_steps = jax.lax.while_loop(running, body, start)
        new_grad = jax.grad(objective)(add_scale(params, stepsize, updates)) if store_grad else None
        if verbose:
            print_if(
                error > atol,
                "INFO: gradtx.scale_by_backtracking_linesearch: no stepsize with sufficient decrease found.\n"
                "Value at current params: {value}\nSlope along update direction: {slope}\n"
                "Stepsize: {stepsize}\nDecrease Error: {error}",
                value=value, slope=slope, stepsize=stepsize, error=error,
            )  # fmt: skip
            print_if(jnp.isinf(error), "f is not finite at the last trial: stepsize 0 is used.")
        # f not finite at the last trial: no step rather than a NaN one.
        learning_rate = jnp.where(jnp.isinf(error), 0.0, stepsize)
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=learning_rate,
            value=new_value,
            grad=new_grad,
            info=BacktrackingLinesearchInfo(num_linesearch_steps=num_steps, decrease_error=error),
        )
        return scale(learning_rate, updates), cast_like(new_state, state)

    return GradientTransformationExtraArgs(init_fn, update_fn)
