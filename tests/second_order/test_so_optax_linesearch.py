"""Optax's line searches and L-BFGS (issue 13) against ``optax`` itself in float64.

Each run applies gradtx's and Optax's transformation side by side in one jitted ``lax.scan``,
feeding each its own stored value and gradient (``value_and_grad_from_state``), and compares every
iterate, every accepted step size and the line-search diagnostics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests import softmax_problem

F64 = jnp.float64


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


_rng = np.random.default_rng(0)
_q, _ = np.linalg.qr(_rng.normal(size=(12, 12)))
_QUADRATIC = jnp.asarray(_q @ np.diag(np.logspace(-1, 1, 12)) @ _q.T)
_SHIFT = jnp.asarray(_rng.normal(size=12))


def _quadratic(x):
    return 0.5 * x @ _QUADRATIC @ x - _SHIFT @ x


PROBLEMS = {
    "rosenbrock": (_rosenbrock, jnp.zeros(8, F64)),
    "quadratic": (_quadratic, jnp.ones(12, F64)),
    "logistic": (softmax_problem.loss, softmax_problem.initial_params()),
}


def _run(library, tx, fun, params, steps):
    """Iterates, the last transform's state after each step, for ``steps`` updates in one scan."""
    value_and_grad = library.value_and_grad_from_state(fun)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=fun)
            params = library.apply_updates(params, updates)
            return (params, state), (params, state[-1])

        return jax.lax.scan(step, (params, tx.init(params)), None, length=steps)[1]

    return run(params)


def _assert_close(ours, theirs, rtol=1e-8, name=""):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(np.max(np.abs(b[np.isfinite(b)]), initial=0.0), 1e-300)
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=name)
        finite = np.isfinite(b)
        assert np.max(np.abs(a[finite] - b[finite]), initial=0.0) <= rtol * scale, name


def _before_floor(values):
    """Steps until f is within rounding of its final value: beyond that point the accepted step
    sizes are decided by 1e-16 differences and legitimately differ between any two programs."""
    values = np.asarray(values)
    return np.abs(values - values[-1]) > 1e-9 * (1 + np.abs(values[-1]))


LBFGS_CASES = {
    "default": lambda lib: lib.lbfgs(),
    "memory3_unscaled": lambda lib: lib.lbfgs(memory_size=3, scale_init_precond=False),
    "backtracking": lambda lib: lib.lbfgs(
        learning_rate=0.5, linesearch=lib.scale_by_backtracking_linesearch(20, store_grad=True)
    ),
    "zoom_keep": lambda lib: lib.lbfgs(linesearch=lib.scale_by_zoom_linesearch(10, max_learning_rate=2.0)),
}


@pytest.mark.parametrize(
    ("problem", "case"), [(p, "default") for p in PROBLEMS] + [("rosenbrock", c) for c in list(LBFGS_CASES)[1:]]
)
def test_lbfgs_matches_optax(problem, case):
    """120 L-BFGS steps: every iterate and accepted step size within 1e-8 of Optax's, and the same
    objective reached (Rosenbrock to its minimum 0 at ones, the others to their optimum)."""
    fun, start = PROBLEMS[problem]
    ours_params, ours_state = _run(gradtx, LBFGS_CASES[case](gradtx), fun, start, 120)
    theirs_params, theirs_state = _run(optax, LBFGS_CASES[case](optax), fun, start, 120)
    _assert_close(ours_params, theirs_params, name=f"{problem} {case} iterates")
    live = _before_floor(theirs_state.value)
    assert live.sum() >= 10, live.sum()
    _assert_close(ours_state.learning_rate[live], theirs_state.learning_rate[live], name=f"{problem} {case} steps")
    _assert_close(ours_state.value[live], theirs_state.value[live], name=f"{problem} {case} values")
    final = jax.tree.map(lambda x: x[-1], ours_params)
    if case == "default":
        grad_norm = float(gradtx.tree.norm(jax.grad(fun)(final)))
        assert grad_norm < 1e-6, grad_norm


ZOOM_CASES = {
    "keep": dict(max_linesearch_steps=15),
    "one": dict(max_linesearch_steps=15, initial_guess_strategy="one"),
    "exact_armijo": dict(max_linesearch_steps=15, approx_dec_rtol=None, curv_rtol=0.5, increase_factor=3.0),
    "capped": dict(max_linesearch_steps=4, max_learning_rate=0.3, tol=1e-9),
}


@pytest.mark.parametrize(
    ("problem", "case"), [(p, "keep") for p in PROBLEMS] + [("quadratic", c) for c in list(ZOOM_CASES)[1:]]
)
def test_zoom_linesearch_matches_optax(problem, case):
    """Gradient descent scaled by the zoom search, 100 steps: the accepted step sizes, the iterates
    and the ZoomLinesearchInfo fields (trial count, decrease and curvature errors) as Optax's."""
    fun, start = PROBLEMS[problem]
    kwargs = ZOOM_CASES[case]

    def make(lib):
        return lib.chain(lib.sgd(1.0), lib.scale_by_zoom_linesearch(**kwargs))

    ours_params, ours = _run(gradtx, make(gradtx), fun, start, 100)
    theirs_params, theirs = _run(optax, make(optax), fun, start, 100)
    assert isinstance(ours, gradtx.ScaleByZoomLinesearchState)
    assert ours._fields == theirs._fields and ours.info._fields == theirs.info._fields
    live = _before_floor(theirs.value)
    _assert_close(ours_params, theirs_params, name="iterates")
    _assert_close(ours.learning_rate[live], theirs.learning_rate[live], name="steps")
    np.testing.assert_array_equal(ours.info.num_linesearch_steps[live], theirs.info.num_linesearch_steps[live])
    for field in ("decrease_error", "curvature_error"):
        ours_error, theirs_error = getattr(ours.info, field)[live], getattr(theirs.info, field)[live]
        _assert_close(ours_error, theirs_error, rtol=1e-6, name=field)
    _assert_close(jax.tree.map(lambda g: g[live], ours.grad), jax.tree.map(lambda g: g[live], theirs.grad), name="grad")


_BACKTRACKING = [
    dict(max_backtracking_steps=15),
    dict(max_backtracking_steps=15, store_grad=True, increase_factor=np.inf),
    dict(max_backtracking_steps=5, decrease_factor=0.5, slope_rtol=0.3, atol=1e-8, rtol=1e-6),
]


@pytest.mark.parametrize(
    ("problem", "kwargs"), [(p, _BACKTRACKING[0]) for p in PROBLEMS] + [("quadratic", k) for k in _BACKTRACKING[1:]]
)
def test_backtracking_linesearch_matches_optax(problem, kwargs):
    """Armijo SGD (``sgd(1)`` + backtracking), 100 steps: step sizes, iterates, values, info."""
    fun, start = PROBLEMS[problem]

    def make(lib):
        return lib.chain(lib.sgd(1.0), lib.scale_by_backtracking_linesearch(**kwargs))

    def run(lib):
        # Without store_grad the state has no gradient: evaluate it each step.
        tx = make(lib)

        @jax.jit
        def go(params):
            def step(carry, _):
                params, state = carry
                value, grad = jax.value_and_grad(fun)(params)
                updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=fun)
                params = lib.apply_updates(params, updates)
                return (params, state), (params, state[-1])

            return jax.lax.scan(step, (params, tx.init(params)), None, length=100)[1]

        return go(start)

    (ours_params, ours), (theirs_params, theirs) = run(gradtx), run(optax)
    live = _before_floor(theirs.value)
    _assert_close(ours_params, theirs_params, name="iterates")
    _assert_close(ours.learning_rate[live], theirs.learning_rate[live], name="steps")
    _assert_close(ours.value[live], theirs.value[live], name="values")
    np.testing.assert_array_equal(ours.info.num_linesearch_steps[live], theirs.info.num_linesearch_steps[live])
    _assert_close(ours.info.decrease_error[live], theirs.info.decrease_error[live], rtol=1e-6, name="decrease_error")
    assert (ours.grad is None) == (theirs.grad is None)
    if ours.grad is not None:
        _assert_close(jax.tree.map(lambda g: g[live], ours.grad), jax.tree.map(lambda g: g[live], theirs.grad))


def test_zoom_steps_satisfy_the_strong_wolfe_conditions():
    """Independent of Optax: on a quadratic from a fixed descent direction, the accepted step meets
    both Wolfe conditions (N&W eq. 3.7) with c1 = 1e-4, c2 = 0.9 and 0.1, and the stored value and
    gradient are f and grad f at the new point."""
    params = jnp.ones(12, F64)
    value, grad = jax.value_and_grad(_quadratic)(params)
    direction = -grad
    for c2 in (0.9, 0.1):
        tx = gradtx.scale_by_zoom_linesearch(30, curv_rtol=c2, initial_guess_strategy="one")
        updates, state = tx.update(direction, tx.init(params), params, value=value, grad=grad, value_fn=_quadratic)
        new = params + updates
        eta = float(state.learning_rate)
        slope0 = float(direction @ grad)
        assert float(_quadratic(new)) <= float(value) + 1e-4 * eta * slope0
        assert abs(float(direction @ jax.grad(_quadratic)(new))) <= c2 * abs(slope0)
        assert float(state.info.decrease_error) == 0.0 and float(state.info.curvature_error) == 0.0
        np.testing.assert_allclose(state.value, _quadratic(new), rtol=1e-14)
        np.testing.assert_allclose(state.grad, jax.grad(_quadratic)(new), rtol=1e-12, atol=1e-14)


def test_update_extras_and_errors():
    """gradtx evaluates a missing value/grad (the same result as passing them); extra keyword
    arguments go to value_fn, and ones it does not take raise TypeError naming them, as in Optax."""

    def fun(params, scale_by):
        return scale_by * jnp.sum((params - 1.0) ** 2)

    params = jnp.zeros(3, F64)
    value, grad = jax.value_and_grad(fun)(params, 2.0)
    for tx in (gradtx.lbfgs(), gradtx.chain(gradtx.sgd(0.1), gradtx.scale_by_backtracking_linesearch(10))):
        state = tx.init(params)
        full, _ = tx.update(grad, state, params, value=value, grad=grad, value_fn=fun, scale_by=2.0)
        short, _ = tx.update(grad, state, params, value_fn=fun, scale_by=2.0)
        np.testing.assert_allclose(full, short, rtol=1e-15)
        with pytest.raises(TypeError, match="unused_arg"):
            tx.update(grad, state, params, value=value, grad=grad, value_fn=fun, scale_by=2.0, unused_arg=1)
    with pytest.raises(TypeError, match="value_fn"):
        gradtx.scale_by_zoom_linesearch(5).update(grad, gradtx.scale_by_zoom_linesearch(5).init(params), params)
    with pytest.raises(ValueError, match="initial_guess_strategy"):
        gradtx.scale_by_zoom_linesearch(5, initial_guess_strategy="last")
    with pytest.raises(ValueError, match="max_linesearch_steps"):
        gradtx.scale_by_zoom_linesearch(0)
    with pytest.raises(ValueError, match="decrease_factor"):
        gradtx.scale_by_backtracking_linesearch(5, decrease_factor=0.0)
    with pytest.raises(ValueError, match="memory_size"):
        gradtx.scale_by_lbfgs(memory_size=0)


def test_signatures_match_optax():
    """Optax's argument names, order and defaults; a state readable with Optax's field names."""
    import inspect

    for name in ("scale_by_zoom_linesearch", "scale_by_backtracking_linesearch", "scale_by_lbfgs", "nnls",
                 "matrix_inverse_pth_root"):
        ours, theirs = inspect.signature(getattr(gradtx, name)), inspect.signature(getattr(optax, name))
        assert [(p.name, p.default) for p in ours.parameters.values()] == [
            (p.name, p.default) for p in theirs.parameters.values()
        ], name
    ours = inspect.signature(gradtx.lbfgs).parameters
    assert list(ours)[:3] == ["learning_rate", "memory_size", "scale_init_precond"] and list(ours)[3] == "linesearch"
    assert [ours[k].default for k in list(ours)[:3]] == [None, 10, True]
    ours = inspect.signature(gradtx.power_iteration).parameters
    theirs = inspect.signature(optax.power_iteration).parameters
    assert [(p.name, p.default, p.kind) for p in list(ours.values())[:6]] == [
        (p.name, p.default, p.kind) for p in theirs.values()
    ]
    for name in ("ScaleByLBFGSState", "ScaleByZoomLinesearchState", "ZoomLinesearchInfo",
                 "ScaleByBacktrackingLinesearchState"):
        assert getattr(gradtx, name)._fields == getattr(optax, name)._fields, name
    state = gradtx.lbfgs().init(jnp.zeros(2))
    assert [type(s).__name__ for s in state][::2] == ["ScaleByLBFGSState", "ScaleByZoomLinesearchState"]
