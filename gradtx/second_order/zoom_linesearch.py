"""The zoom line search (strong Wolfe conditions) as a transformation: ``scale_by_zoom_linesearch``.

``update`` receives a direction ``u`` (the incoming updates) and returns ``eta u`` with ``eta``
chosen along ``phi(eta) = f(w + eta u)`` so that ``phi`` decreases enough and flattens enough
(Nocedal & Wright, Algorithms 3.5 and 3.6). Chained after a direction (``sgd``, ``scale_by_lbfgs``)
it is Optax's ``scale_by_zoom_linesearch``, with the same options, state and numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import Params, PyTree
from gradtx.extra_args import GradientTransformationExtraArgs
from gradtx.second_order._common import (
    check_choice,
    print_if,
    real_dtype_of_first_leaf,
    split_value_fn_kwargs,
    tree_inner,
)
from gradtx.tree import add_scale, cast_like, real, scale, where, zeros_like
from gradtx.tree_utils import check_updates_match_params
from gradtx.validation import check_schedule_arguments, check_state_type

# Diagnostics printed with ``verbose=True`` (the same sentences as Optax's, so logs read the same).
FLAG_INTERVAL_NOT_FOUND = (
    "No interval satisfying curvature condition. Consider increasing maximal possible stepsize of the linesearch."
)
FLAG_INTERVAL_TOO_SMALL = "Length of searched interval has been reduced below threshold."
FLAG_CURVATURE_COND_NOT_SATISFIED = "Returning stepsize with sufficient decrease but curvature condition not satisfied."
FLAG_NO_STEPSIZE_FOUND = "Linesearch failed, no stepsize satisfying sufficient decrease found."
FLAG_NOT_A_DESCENT_DIRECTION = "The linesearch failed because the provided direction is not a descent direction. "


class ZoomLinesearchInfo(NamedTuple):
    """Diagnostics of the last zoom line search.

    Attributes:
      num_linesearch_steps: evaluations of ``f`` (with its gradient) in the last search.
      decrease_error: ``max(0, phi(eta) - phi(0) - c_1 eta phi'(0))`` at the last trial (the smaller of
        this and the approximate-decrease error, see :func:`scale_by_zoom_linesearch`); 0 means the
        decrease criterion holds.
      curvature_error: ``max(0, |phi'(eta)| - c_2 |phi'(0)|)`` at the last trial; 0 means the curvature
        criterion holds. A positive value is harmless for convergence (the step still decreases
        ``f``); a positive decrease error is not.

    Matches ``optax.ZoomLinesearchInfo``.
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`.

    Attributes:
      learning_rate: the step ``eta`` accepted by the last search (1 before the first); the next
        search starts from it when ``initial_guess_strategy='keep'``.
      value: ``f(w + eta u)``, the objective at the point the update moves to (``inf`` before the
        first update): :func:`gradtx.value_and_grad_from_state` returns it for the next step.
      grad: ``grad f(w + eta u)`` likewise (zeros before the first update).
      info: a :class:`ZoomLinesearchInfo`.

    Matches ``optax.ScaleByZoomLinesearchState``.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: PyTree
    info: ZoomLinesearchInfo


class _Search(NamedTuple):
    """The line search's loop variables: the last trial, the bracket, the best safe point."""

    count: jax.Array
    stepsize: jax.Array  # last trial and what is at it
    value: jax.Array
    grad: PyTree
    slope: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array  # False: bracketing (Alg. 3.5); True: zooming (Alg. 3.6)
    done: jax.Array
    failed: jax.Array
    # "low" has the smaller value of the two ends, not the smaller step.
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    # The end dropped at the last zoom step: the third point of the cubic interpolation.
    cubic_ref: jax.Array
    value_cubic_ref: jax.Array
    # The lowest trial with sufficient decrease, returned when the curvature criterion cannot be met.
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: PyTree


def _cubic_minimizer(a, fa, fpa, b, fb, c, fc):
    """Critical point of the cubic through ``(a, fa)``, ``(b, fb)``, ``(c, fc)`` with slope ``fpa`` at ``a``.

    With ``p(x) = A (x - a)^3 + B (x - a)^2 + fpa (x - a) + fa``, the two value conditions give
    ``A, B`` by Cramer's rule and ``x* = a + (-B + sqrt(B^2 - 3 A fpa)) / (3 A)`` (N&W section 3.5).
    NaN when the cubic has no critical point; the caller then falls back.
    """
    db, dc = b - a, c - a
    rb, rc = fb - fa - fpa * db, fc - fa - fpa * dc
    denominator = (db * dc) ** 2 * (db - dc)
    system = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
    cubic_coef, square_coef = jnp.dot(system, jnp.array([rb, rc]), precision=jax.lax.Precision.HIGHEST) / denominator
    radicand = square_coef * square_coef - 3.0 * cubic_coef * fpa
    return a + (-square_coef + jnp.sqrt(radicand)) / (3.0 * cubic_coef)


def _quadratic_minimizer(a, fa, fpa, b, fb):
    """Critical point of the parabola with value ``fa`` and slope ``fpa`` at ``a`` and value ``fb`` at ``b``."""
    db = b - a
    curvature = (fb - fa - fpa * db) / (db**2)
    return a - fpa / (2.0 * curvature)


@check_schedule_arguments
def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Scales the direction ``u`` by a step that satisfies the strong Wolfe conditions (zoom line search).

    With :math:`\phi(\eta) = f(w + \eta u)` and :math:`\phi'(\eta) = \langle\nabla f(w + \eta u), u\rangle`,
    the step :math:`\eta` returned (the update is :math:`\eta u`) satisfies, up to ``tol`` = :math:`\epsilon`,

    .. math::
        \phi(\eta) \le \phi(0) + c_1 \eta \phi'(0) + \epsilon
        \quad\text{(sufficient decrease, Armijo)},\qquad
        |\phi'(\eta)| \le c_2 |\phi'(0)| + \epsilon \quad\text{(curvature)},

    with :math:`c_1` = ``slope_rtol`` and :math:`c_2` = ``curv_rtol``. Close to a minimizer the
    Armijo test drowns in the rounding of :math:`f`; Hager & Zhang's approximate form
    :math:`\phi'(\eta) \le (2 c_1 - 1)\phi'(0)` is accepted instead wherever
    :math:`\phi(\eta) \le \phi(0) + c_3 |\phi(0)|` (:math:`c_3` = ``approx_dec_rtol``; ``None`` turns
    it off). The search:

    1. brackets (N&W Algorithm 3.5): tries :math:`\eta_0` (1, or the last accepted step with
       ``initial_guess_strategy='keep'``), then :math:`\eta_{i+1} = \text{increase\_factor}\,\eta_i`
       (capped at ``max_learning_rate``), until a trial fails the decrease test, does not lower
       :math:`\phi`, or has :math:`\phi' \ge 0`: an interval holding an acceptable step is found;
    2. zooms (N&W Algorithm 3.6): the next trial is the minimizer of the cubic through the two
       ends and the last dropped end (kept if at least 20% of the width inside), else of the
       parabola through the ends (10% inside), else the midpoint; the interval shrinks around it.

    It stops at the first trial meeting both criteria. After ``max_linesearch_steps`` trials, or
    once the interval is narrower than ``stepsize_precision`` while some trial had sufficient
    decrease, it returns the lowest such trial (or the last trial if there is none, or 0 if that is
    not finite). If the cap ``max_learning_rate`` is reached while still bracketing, it is taken.

    ``update(updates, state, params, *, value, grad, value_fn, **extra_args)``: ``value`` and
    ``grad`` are :math:`f(w)` and :math:`\nabla f(w)`; ``value_fn(params, **extra_args)`` is the
    objective (``extra_args`` it does not take raise ``TypeError``). gradtx also accepts a call
    without ``value`` or ``grad`` and then evaluates them (Optax requires both). The state keeps
    :math:`f` and :math:`\nabla f` at the new point, so :func:`gradtx.value_and_grad_from_state`
    gives the next step's for free.

    Args:
      max_linesearch_steps: the cap on trials (each evaluates ``f`` and its gradient).
      max_learning_rate: largest step tried (default None: no cap).
      tol: :math:`\epsilon`, slack on both criteria (default 0).
      increase_factor: growth of the trial while bracketing (default 2).
      slope_rtol: :math:`c_1` (default 1e-4).
      curv_rtol: :math:`c_2` (default 0.9; ``jnp.inf`` keeps only the decrease test).
      approx_dec_rtol: :math:`c_3` (default 1e-6; None: exact Armijo test only).
      stepsize_precision: the interval width below which a step with sufficient decrease is taken
        even without the curvature criterion (default 1e-5).
      initial_guess_strategy: ``'keep'`` (default; start from the last step, for SGD-like
        directions) or ``'one'`` (start from 1, for Newton and quasi-Newton directions).
      verbose: print why a search failed (``jax.debug.print``).

    State:
      :class:`ScaleByZoomLinesearchState` (``learning_rate``, ``value``, ``grad``, ``info``).

    Matches ``optax.scale_by_zoom_linesearch`` (the same trials, steps and state, tested to 1e-12
    in float64), including its quirks: the bracketing phase tests "did not lower" against the
    previous trial, not against the best one, and a failed ``'keep'`` search (step 0) starts the
    next one from 0.

    References:
      Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithms 3.5 and 3.6.
      Hager & Zhang, "Algorithm 851: CG_DESCENT, a conjugate gradient method with guaranteed
      descent", ACM TOMS 2006 (the approximate Wolfe condition).
      Armijo, "Minimization of functions having Lipschitz continuous first partial derivatives",
      Pacific J. Math. 1966.
    """
    if isinstance(max_linesearch_steps, bool) or (
        isinstance(max_linesearch_steps, int) and max_linesearch_steps < 1
    ):
        raise ValueError(f"max_linesearch_steps must be an integer >= 1, got {max_linesearch_steps!r}.")
    check_choice(initial_guess_strategy, ("one", "keep"), "initial_guess_strategy")
    if max_learning_rate is not None:
        validation.check_positive(max_learning_rate, "max_learning_rate")
    for name, hyperparameter in (("tol", tol), ("slope_rtol", slope_rtol), ("curv_rtol", curv_rtol),
                                 ("stepsize_precision", stepsize_precision)):
        validation.check_non_negative(hyperparameter, name)
    validation.check_positive(increase_factor, "increase_factor")
    if approx_dec_rtol is not None:
        validation.check_non_negative(approx_dec_rtol, "approx_dec_rtol")

    def init_fn(params: Params) -> ScaleByZoomLinesearchState:
        real_dtype = real_dtype_of_first_leaf(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.asarray(1.0, real_dtype),
            value=jnp.asarray(jnp.inf, real_dtype),
            grad=zeros_like(params),
            info=ZoomLinesearchInfo(
                num_linesearch_steps=jnp.asarray(0),
                decrease_error=jnp.asarray(jnp.inf),
                curvature_error=jnp.asarray(jnp.inf),
            ),
        )

    def update_fn(
        updates: PyTree,
        state: ScaleByZoomLinesearchState,
        params: Params,
        *,
        value: jax.Array | None = None,
        grad: PyTree | None = None,
        value_fn: Callable[..., jax.Array] | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, ScaleByZoomLinesearchState]:
        check_state_type(state, ScaleByZoomLinesearchState, "scale_by_zoom_linesearch")
        check_updates_match_params(updates, params, "scale_by_zoom_linesearch")
        if value_fn is None:
            raise TypeError(
                "scale_by_zoom_linesearch.update needs the objective: pass value_fn=f (params -> scalar), "
                "and value=f(params), grad=grad f(params) as keyword arguments."
            )
        fn_kwargs = split_value_fn_kwargs(value_fn, extra_args, "scale_by_zoom_linesearch")
        value_and_grad = jax.value_and_grad(value_fn)
        if value is None or grad is None:
            missing_value, missing_grad = value_and_grad(params, **fn_kwargs)
            value = missing_value if value is None else value
            grad = missing_grad if grad is None else grad
        search = _run_search(updates, params, value, grad, state.learning_rate, value_and_grad, fn_kwargs)
        new_state = ScaleByZoomLinesearchState(
            learning_rate=search.stepsize,
            value=search.value,
            grad=search.grad,
            info=ZoomLinesearchInfo(search.count, search.decrease_error, search.curvature_error),
        )
        return scale(search.stepsize, updates), cast_like(new_state, state)

    def errors(stepsize, value_step, slope_step, value_init, slope_init):
        decrease = value_step - value_init - slope_rtol * stepsize * slope_init
        if approx_dec_rtol is not None:
            # Hager & Zhang (2006), eq. 23, trusted only while f stays within c_3 |f(0)| of f(0).
            approximate = slope_step - (2 * slope_rtol - 1.0) * slope_init
            near = value_step - value_init - approx_dec_rtol * jnp.abs(value_init)
            decrease = jnp.minimum(jnp.maximum(approximate, near), decrease)
        curvature = jnp.abs(slope_step) - curv_rtol * jnp.abs(slope_init)
        decrease, curvature = jnp.maximum(decrease, 0.0), jnp.maximum(curvature, 0.0)
        return jnp.where(jnp.isnan(decrease), jnp.inf, decrease), jnp.where(jnp.isnan(curvature), jnp.inf, curvature)

    def _run_search(updates, params, value_init, grad_init, previous_stepsize, value_and_grad, fn_kwargs) -> _Search:
        real_dtype = real_dtype_of_first_leaf(params)
        guess = jnp.asarray(1.0) if initial_guess_strategy == "one" else previous_stepsize
        slope_init = real(tree_inner(updates, grad_init))
        zero = jnp.asarray(0.0)
        start = _Search(
            count=jnp.asarray(0),
            stepsize=jnp.asarray(0.0, real_dtype),
            value=jnp.asarray(value_init, real_dtype),
            grad=grad_init,
            slope=slope_init,
            decrease_error=jnp.asarray(jnp.inf),
            curvature_error=jnp.asarray(jnp.inf),
            interval_found=jnp.asarray(False),
            done=jnp.asarray(False),
            failed=jnp.asarray(False),
            low=zero, value_low=value_init, slope_low=slope_init,
            high=zero, value_high=value_init, slope_high=slope_init,
            cubic_ref=zero, value_cubic_ref=value_init,
            safe_stepsize=zero, safe_value=value_init, safe_grad=grad_init,
        )  # fmt: skip

        def trial_stepsize(s: _Search) -> tuple[jax.Array, jax.Array]:
            """The next trial (bracketing or zoom) and whether it hit ``max_learning_rate``."""
            grown = jnp.where(s.count == 0, guess, increase_factor * s.stepsize)
            at_cap = jnp.asarray(False)
            if max_learning_rate is not None:
                at_cap = grown >= max_learning_rate
                grown = jnp.minimum(grown, max_learning_rate)
            width = jnp.abs(s.high - s.low)
            left, right = jnp.minimum(s.high, s.low), jnp.maximum(s.high, s.low)
            cubic = _cubic_minimizer(
                s.low, s.value_low, s.slope_low, s.high, s.value_high, s.cubic_ref, s.value_cubic_ref
            )
            quadratic = _quadratic_minimizer(s.low, s.value_low, s.slope_low, s.high, s.value_high)
            use_cubic = (cubic > left + 0.2 * width) & (cubic < right - 0.2 * width)
            use_quadratic = ~use_cubic & (quadratic > left + 0.1 * width) & (quadratic < right - 0.1 * width)
            zoomed = jnp.where(use_cubic, cubic, jnp.where(use_quadratic, quadratic, (s.low + s.high) / 2.0))
            return jnp.where(s.interval_found, zoomed, grown), at_cap & ~s.interval_found

        def step(s: _Search) -> _Search:
            stepsize, at_cap = trial_stepsize(s)
            value_step, grad_step = value_and_grad(add_scale(params, stepsize, updates), **fn_kwargs)
            slope_step = real(tree_inner(jax.tree.map(jnp.conj, grad_step), updates))
            decrease_error, curvature_error = errors(stepsize, value_step, slope_step, value_init, slope_init)
            acceptable = jnp.maximum(decrease_error, curvature_error) <= tol
            sufficient = decrease_error <= tol
            trial = (stepsize, value_step, slope_step)
            last_steps = s.count + 1 >= max_linesearch_steps

            # Bracketing (Algorithm 3.5): [previous trial, this trial] holds an acceptable step when
            # this one fails the decrease test or does not lower f (high = this), or has phi' >= 0.
            previous = (s.stepsize, s.value, s.slope)
            high_is_new = (decrease_error > 0.0) | ((value_step >= s.value) & (s.count > 0))
            low_is_new = (slope_step >= 0.0) & ~high_is_new
            b_low = where(low_is_new, trial, previous)
            b_high = where(low_is_new, previous, trial)
            b_found = high_is_new | low_is_new | acceptable
            b_done = acceptable | (at_cap & ~b_found)
            b_safe = sufficient

            # Zoom (Algorithm 3.6): this trial replaces the end it is consistent with.
            low, high = (s.low, s.value_low, s.slope_low), (s.high, s.value_high, s.slope_high)
            high_to_trial = (decrease_error > 0.0) | (value_step >= s.value_low)
            high_to_low = (slope_step * (s.high - s.low) >= 0.0) & ~high_to_trial
            z_high = where(high_to_trial, trial, where(high_to_low, low, high))
            z_low = where(high_to_trial, low, trial)
            z_ref = where(high_to_trial | high_to_low, high[:2], low[:2])
            z_safe = sufficient & (value_step < s.safe_value)

            zooming = s.interval_found
            new_low = where(zooming, z_low, b_low)
            new_high = where(zooming, z_high, b_high)
            new_ref = where(zooming, z_ref, b_low[:2])
            take_safe = jnp.where(zooming, z_safe, b_safe)
            safe = where(
                take_safe, (stepsize, value_step, grad_step), (s.safe_stepsize, s.safe_value, s.safe_grad)
            )
            done = jnp.where(zooming, acceptable, b_done)
            narrow = zooming & (jnp.abs(s.high - s.low) <= stepsize_precision) & (safe[0] > 0.0)
            failed = (last_steps | narrow) & ~done
            new = _Search(
                count=s.count + 1,
                stepsize=stepsize,
                value=value_step,
                grad=grad_step,
                slope=slope_step,
                decrease_error=decrease_error,
                curvature_error=curvature_error,
                interval_found=jnp.where(zooming, True, b_found),
                done=done,
                failed=failed,
                low=new_low[0], value_low=new_low[1], slope_low=new_low[2],
                high=new_high[0], value_high=new_high[1], slope_high=new_high[2],
                cubic_ref=new_ref[0], value_cubic_ref=new_ref[1],
                safe_stepsize=safe[0], safe_value=safe[1], safe_grad=safe[2],
            )  # fmt: skip
            if verbose:
                print_if(
                    at_cap & ~b_found & ~zooming,
                    "INFO: gradtx.scale_by_zoom_linesearch: stepsize {stepsize} reached max_learning_rate. "
                    + FLAG_INTERVAL_NOT_FOUND + "\n" + FLAG_CURVATURE_COND_NOT_SATISFIED,
                    stepsize=stepsize,
                )
            new = jax.lax.cond(new.failed, fall_back, lambda x: x, new)
            return cast_like(new, s)

        def fall_back(s: _Search) -> _Search:
            """After a failure: the lowest trial with sufficient decrease, or the last trial if
            there is none, or the safe default (step 0) if the last trial was not finite."""
            use_safe = (s.safe_stepsize > 0.0) | jnp.isinf(s.decrease_error)
            if verbose:
                report_failure(s)
            stepsize, value, grad = where(use_safe, (s.safe_stepsize, s.safe_value, s.safe_grad),
                                          (s.stepsize, s.value, s.grad))
            return s._replace(stepsize=stepsize, value=value, grad=grad)

        def report_failure(s: _Search) -> None:
            jax.debug.print(
                "INFO: gradtx.scale_by_zoom_linesearch:\nValue at current params: {value}\n"
                "Slope along update direction: {slope}\nStepsize reached: {stepsize}\n"
                "Decrease Error: {decrease_error}\nCurvature Error: {curvature_error}",
                value=value_init, slope=slope_init, stepsize=s.stepsize,
                decrease_error=s.decrease_error, curvature_error=s.curvature_error, ordered=True,
            )  # fmt: skip
            width = jnp.abs(s.low - s.high)
            print_if(width <= stepsize_precision, FLAG_INTERVAL_TOO_SMALL + " Interval length: {w}.", w=width)
            found_safe = s.safe_stepsize > 0.0
            print_if(found_safe, FLAG_CURVATURE_COND_NOT_SATISFIED + " Stepsize ensuring sufficient decrease: {a}.",
                     a=s.safe_stepsize)
            descent = slope_init < 0.0
            print_if(~found_safe, FLAG_NO_STEPSIZE_FOUND)
            print_if(~found_safe & ~descent,
                     FLAG_NOT_A_DESCENT_DIRECTION + "The slope (={slope}) at stepsize=0 should be negative",
                     slope=slope_init)
            print_if(~found_safe & descent, "Consider increasing max_linesearch_steps.")
            print_if(~found_safe & jnp.isinf(s.decrease_error),
                     "f is not finite at any trial: no step is taken (stepsize 0).")

        def running(s: _Search) -> jax.Array:
            return ~(s.done | s.failed)

        return jax.lax.while_loop(running, step, start)

    return GradientTransformationExtraArgs(init_fn, update_fn)
