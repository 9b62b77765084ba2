"""``gradtx.minimize`` against ``scipy.optimize.minimize`` (L-BFGS-B, CG, Newton-CG) in float64, on
convex and non-convex problems; the stopping rules and status codes; and that a stopped method's
updates evaluate nothing (issue 12, item 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import gradtx
from gradtx.base import apply_updates
from gradtx.second_order import SolverStatus, conjugate_gradient, lbfgs_solver, minimize, newton

F64 = jnp.float64

_RNG = np.random.default_rng(3)
_Q, _ = np.linalg.qr(_RNG.normal(size=(12, 12)))
_A = _Q @ np.diag(np.geomspace(0.1, 100.0, 12)) @ _Q.T
_B = _RNG.normal(size=12)
_FEATURES = _RNG.normal(size=(60, 8))
_LABELS = (_FEATURES @ _RNG.normal(size=8) + 0.5 * _RNG.normal(size=60) > 0).astype(np.float64)


def _quadratic(x):
    return 0.5 * x @ jnp.asarray(_A) @ x - jnp.asarray(_B) @ x


def _logistic(x):
    z = jnp.asarray(_FEATURES) @ x
    return jnp.mean(jnp.logaddexp(0.0, z) - jnp.asarray(_LABELS) * z) + 0.01 * jnp.sum(x**2)


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


PROBLEMS = {
    "quadratic": (_quadratic, np.zeros(12)),
    "logistic": (_logistic, np.zeros(8)),
    # SciPy's example start (tiled): from (-1.2, 1, ...) some methods end at the local minimum near
    # (-1, 1, ..., 1) of the 10-dimensional function, a different (valid) answer.
    "rosenbrock": (_rosenbrock, np.tile([1.3, 0.7, 0.8, 1.9, 1.2], 2)),
}
SCIPY = {"lbfgs": "L-BFGS-B", "cg": "CG", "newton": "Newton-CG", "newton_cg": "Newton-CG"}
CASES = [
    ("lbfgs", "quadratic"),
    ("lbfgs", "logistic"),
    ("lbfgs", "rosenbrock"),
    ("cg", "quadratic"),
    ("cg", "rosenbrock"),
    ("newton_cg", "logistic"),
    ("newton_cg", "rosenbrock"),
    ("newton", "rosenbrock"),
]


def _exact_minimizer(problem):
    if problem == "quadratic":
        return np.linalg.solve(_A, _B)
    if problem == "rosenbrock":
        return np.ones(10)
    loss, x0 = PROBLEMS[problem]
    result = scipy.optimize.minimize(
        jax.jit(loss), x0, jac=jax.jit(jax.grad(loss)), hess=jax.jit(jax.hessian(loss)), method="trust-exact",
        options={"gtol": 1e-13},
    )
    return result.x


def _scipy(method, loss, x0, tol):
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    hessian = jax.jit(jax.hessian(loss))
    kwargs = {"hess": lambda x: np.asarray(hessian(jnp.asarray(x)))} if method == "Newton-CG" else {}
    return scipy.optimize.minimize(
        lambda x: tuple(map(np.asarray, value_and_grad(jnp.asarray(x)))),
        x0,
        jac=True,
        method=method,
        tol=tol,
        **kwargs,
    )


@pytest.mark.parametrize("method, problem", CASES)
def test_minimize_matches_scipy(method, problem):
    """Same minimizer as SciPy's namesake (tol=1e-10): no farther from the exact minimizer than
    SciPy's answer (times 10, or 1e-6: ftol stops both early by chance), success, and no more
    than 1.25 times SciPy's iterations (plus 3)."""
    loss, x0 = PROBLEMS[problem]
    reference = _scipy(SCIPY[method], loss, x0, 1e-10)
    result = minimize(loss, jnp.asarray(x0, F64), method, tol=1e-10)
    assert bool(result.success), SolverStatus(int(result.status)).name
    exact = _exact_minimizer(problem)
    scipy_error = np.max(np.abs(reference.x - exact))
    assert np.max(np.abs(np.asarray(result.x) - exact)) <= max(10 * scipy_error, 1e-6), scipy_error
    np.testing.assert_allclose(float(result.fun), float(loss(jnp.asarray(result.x))), rtol=1e-8, atol=1e-18)
    np.testing.assert_allclose(np.asarray(result.grad), np.asarray(jax.grad(loss)(result.x)), rtol=1e-8, atol=1e-12)
    assert int(result.nit) <= 1.25 * reference.nit + 3, (int(result.nit), reference.nit)


def test_minimize_default_tolerances_stop_where_scipy_stops():
    """With scipy's defaults (gtol=1e-5, ftol=2.2e-9) L-BFGS stops on the same test as L-BFGS-B on
    20-dimensional Rosenbrock, within a few iterations of it and to the same value accuracy."""
    x0 = jnp.tile(jnp.asarray([-1.2, 1.0], F64), 10)
    reference = _scipy("L-BFGS-B", _rosenbrock, np.asarray(x0), None)
    result = minimize(_rosenbrock, x0)
    assert SolverStatus(int(result.status)) == SolverStatus.VALUE_TOLERANCE
    assert "REDUCTION OF F" in reference.message
    assert abs(int(result.nit) - reference.nit) <= 0.1 * reference.nit
    assert abs(int(result.nfev) - reference.nfev) <= 0.15 * reference.nfev
    assert float(result.fun) < 1e-8 and reference.fun < 1e-8


def test_minimize_status_iteration_cap_args_and_pytrees():
    """max_iter ends with MAX_ITERATIONS and success False; ``args`` are traced (no recompilation
    for new data); a dict start works and ``nit`` counts updates."""

    def loss(params, center):
        return jnp.sum((params["a"] - center) ** 2) + jnp.sum(params["b"] ** 4)

    start = {"a": jnp.zeros(3, F64), "b": jnp.ones(2, F64)}
    capped = minimize(loss, start, "cg", args=(2.0,), max_iter=2)
    assert SolverStatus(int(capped.status)) == SolverStatus.MAX_ITERATIONS and not bool(capped.success)
    assert int(capped.nit) == 2
    for center in (1.0, -3.0):
        result = minimize(loss, start, "lbfgs", args=(center,), gtol=1e-9, ftol=0.0)
        np.testing.assert_allclose(np.asarray(result.x["a"]), center, atol=1e-9)
        assert SolverStatus(int(result.status)) in (SolverStatus.GRADIENT_TOLERANCE, SolverStatus.VALUE_TOLERANCE)
    assert gradtx.minimize is minimize
    with pytest.raises(ValueError, match="method"):
        minimize(loss, start, "bfgs")
    with pytest.raises(ValueError, match="max_iter"):
        minimize(loss, start, max_iter=-1)
    with pytest.raises(ValueError, match="gtol"):
        minimize(loss, start, gtol=-1.0)


@pytest.mark.parametrize("name", ["lbfgs", "conjugate_gradient", "newton"])
def test_stopped_methods_evaluate_nothing(name):
    """300 updates in a scan where about 20 are needed: the objective is evaluated (counted by a
    host callback, so only evaluations that really run count) only until the status leaves
    RUNNING; after that the step count, memory and parameters stay put."""
    builders = {"lbfgs": lbfgs_solver, "conjugate_gradient": conjugate_gradient, "newton": newton}
    tx = builders[name](gtol=1e-9)
    calls = []

    def counted_loss(x):
        jax.debug.callback(lambda: calls.append(1))
        return _logistic(x)

    @jax.jit
    def run(x):
        def body(carry, _):
            x, state = carry
            updates, state = tx.update(jax.grad(_logistic)(x), state, x, value_fn=counted_loss)
            return (apply_updates(x, updates), state), (state.status, state.num_evaluations)

        return jax.lax.scan(body, (x, tx.init(x)), None, length=300)

    (x, state), (statuses, evaluations) = run(jnp.zeros(8, F64))
    jax.block_until_ready(x)
    statuses, evaluations = np.asarray(statuses), np.asarray(evaluations)
    stopped_at = int(np.argmax(statuses != SolverStatus.RUNNING))
    assert 3 < stopped_at < 60 and np.all(statuses[stopped_at:] == statuses[-1]), statuses[:80]
    assert SolverStatus(int(statuses[-1])) in (SolverStatus.GRADIENT_TOLERANCE, SolverStatus.VALUE_TOLERANCE)
    assert np.all(evaluations[stopped_at:] == evaluations[stopped_at])
    # Newton's Hessian runs the objective's callback once more per iteration. Newton stops on
    # the gradient it is given (a free update), the line-search methods on the one they return.
    iterations = int(state.step_count)
    assert iterations == (stopped_at if name == "newton" else stopped_at + 1)
    hessians = iterations if name == "newton" else 0
    assert len(calls) == int(evaluations[-1]) + hessians < 10 * (stopped_at + 1)
    assert np.max(np.abs(np.asarray(jax.grad(_logistic)(x)))) <= 1e-9


def test_line_search_failure_and_non_finite_status():
    """float32 at the floor of its precision: L-BFGS (gtol = ftol = 0) stops with
    LINE_SEARCH_FAILED or VALUE_TOLERANCE instead of searching forever; a NaN objective gives
    NOT_FINITE at once, with a zero update."""
    loss32 = lambda x: _quadratic(x.astype(F64)).astype(jnp.float32)  # noqa: E731
    tx = lbfgs_solver()

    @jax.jit
    def run(x):
        def body(carry, _):
            x, state = carry
            updates, state = tx.update(jax.grad(loss32)(x), state, x, value_fn=loss32)
            return (apply_updates(x, updates), state), state.status

        return jax.lax.scan(body, (x, tx.init(x)), None, length=200)[1]

    statuses = np.asarray(run(jnp.zeros(12, jnp.float32)))
    assert SolverStatus(int(statuses[-1])) in (SolverStatus.LINE_SEARCH_FAILED, SolverStatus.VALUE_TOLERANCE)
    nan_loss = lambda x: jnp.sum(x) * jnp.nan  # noqa: E731
    x = jnp.ones(3, F64)
    updates, state = jax.jit(lambda x: tx.update(jnp.ones(3, F64), tx.init(x), x, value_fn=nan_loss))(x)
    assert SolverStatus(int(state.status)) == SolverStatus.NOT_FINITE
    np.testing.assert_array_equal(np.asarray(updates), 0.0)
