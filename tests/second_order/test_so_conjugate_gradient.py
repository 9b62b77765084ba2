"""Nonlinear CG (FR, PR+, HS) and Moller's SCG: SciPy's logistic-regression optimum, and SCG as
linear CG on a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.base import apply_updates
from gradtx.second_order import SolverStatus, conjugate_gradient, scaled_conjugate_gradient

F64 = jnp.float64


_METHODS = {
    "fletcher_reeves": lambda: conjugate_gradient(beta_rule="fletcher_reeves"),
    "polak_ribiere_plus": lambda: conjugate_gradient(beta_rule="polak_ribiere_plus"),
    "hestenes_stiefel": lambda: conjugate_gradient(beta_rule="hestenes_stiefel"),
    "scg": lambda: scaled_conjugate_gradient(),
    "scg_finite_difference": lambda: scaled_conjugate_gradient(sigma=1e-4),
}


@pytest.fixture(scope="module")
def logistic_runs(logistic_problem):
    """(max error vs SciPy, loss) after each of 60 steps, for every method, from one jitted program
    (one compilation instead of five)."""
    problem = logistic_problem
    grad = jax.grad(problem.loss)

    def trajectory(tx, params):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(grad(params), state, params, value_fn=problem.loss)
            params = apply_updates(params, updates)
            return (params, state), (problem.error(params), problem.loss(params))

        return jax.lax.scan(body, (params, tx.init(params)), None, length=60)[1]

    runs = jax.jit(lambda params: {name: trajectory(make(), params) for name, make in _METHODS.items()})(
        problem.initial_params()
    )
    return jax.tree.map(np.asarray, runs)


@pytest.mark.parametrize("beta_rule", ["fletcher_reeves", "polak_ribiere_plus", "hestenes_stiefel"])
def test_nonlinear_cg_reaches_scipy_optimum(beta_rule, logistic_runs):
    errors, values = logistic_runs[beta_rule]
    assert errors[-1] < 1e-6, errors
    assert np.isfinite(errors).all()
    assert np.all(np.diff(values) <= 1e-15)  # every accepted step satisfies Armijo


@pytest.mark.parametrize("method", ["scg", "scg_finite_difference"])
def test_scaled_conjugate_gradient_reaches_scipy_optimum(method, logistic_runs):
    errors, values = logistic_runs[method]
    assert errors[-1] < 1e-6, errors
    # SCG never accepts a step that increases the error (Delta >= 0 <=> f decreased).
    assert np.all(np.diff(values) <= 1e-15)


def test_scg_is_linear_cg_on_a_quadratic(run_transformation):
    """With exact curvature and lambda -> 0, SCG's step is the exact line minimizer and its beta
    reduces to linear CG's, so on an n-dimensional quadratic it converges in n steps.

    (With the paper's lambda_1 = 1e-6 the shifted curvature perturbs each step by ~1e-7 relative,
    which kappa = 100 amplifies to ~6e-5 after n steps; hence initial_lambda=1e-15 here.)"""
    n = 6
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = jnp.asarray(q @ np.diag(np.geomspace(1.0, 100.0, n)) @ q.T)
    b = jnp.asarray(rng.normal(size=n))
    solution = np.linalg.solve(np.asarray(a), np.asarray(b))

    def loss(x):
        return 0.5 * x @ a @ x - b @ x

    _, _, errors = run_transformation(
        scaled_conjugate_gradient(initial_lambda=1e-15),
        jnp.zeros(n, F64),
        n + 2,
        loss,
        record=lambda x, state: jnp.max(jnp.abs(x - solution)),
    )
    errors = np.asarray(errors)
    assert errors[n - 1] < 1e-10, errors  # n steps (indices 0..n-1)
    assert errors[n - 2] > 1e-2, errors  # and not earlier: the n eigenvalues are distinct


def test_conjugate_gradient_needs_value_fn_and_validates():
    params = jnp.ones(3, F64)
    for tx in (conjugate_gradient(), scaled_conjugate_gradient()):
        with pytest.raises(TypeError, match="value_fn"):
            tx.update(params, None, params)  # checked before the state is read
    with pytest.raises(ValueError, match="beta_rule"):
        conjugate_gradient(beta_rule="dai_yuan")
    with pytest.raises(ValueError, match="c2"):
        conjugate_gradient(c1=0.5, c2=0.4)
    with pytest.raises(ValueError, match="initial_lambda"):
        scaled_conjugate_gradient(initial_lambda=0.0)
    with pytest.raises(ValueError, match="restart_period"):
        scaled_conjugate_gradient(restart_period=0)


def test_cg_stays_put_at_a_stationary_point():
    params = {"x": jnp.zeros(3, F64)}

    def loss(p):
        return jnp.sum(p["x"] ** 2)

    txs = (conjugate_gradient(), scaled_conjugate_gradient())

    @jax.jit
    def steps(params):
        return [tx.update(jax.grad(loss)(params), tx.init(params), params, value_fn=loss) for tx in txs]

    for updates, state in steps(params):
        np.testing.assert_array_equal(np.asarray(updates["x"]), 0.0)
        # value stays inf (Optax's "not evaluated yet") when nothing was evaluated.
        leaves = jax.tree.leaves(state._replace(value=0.0) if hasattr(state, "value") else state)
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)
    cg_state = steps(params)[0][1]
    assert int(cg_state.status) == SolverStatus.GRADIENT_TOLERANCE and int(cg_state.num_evaluations) == 0
