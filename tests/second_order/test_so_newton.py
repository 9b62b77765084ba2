"""Newton's method: one step on a quadratic, quadratic convergence on logistic regression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.second_order import newton

F64 = jnp.float64


def _quadratic(seed=0, n=6):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.geomspace(0.5, 50.0, n)) @ q.T
    b = rng.normal(size=n)

    def unflat(x):
        return {"head": x[:2], "tail": x[2:].reshape(2, 2)}

    def loss(params):
        x = jnp.concatenate([params["head"], params["tail"].ravel()])
        return 0.5 * x @ a @ x - b @ x + 3.0

    return a, b, unflat, loss


def test_newton_solves_strongly_convex_quadratic_in_one_step():
    """One update from a random point lands on A^{-1} b (exact and CG solvers); with Levenberg
    damping and no line search the update is -eta (A + lambda I)^{-1} g."""
    a, b, unflat, loss = _quadratic()
    params = unflat(jnp.asarray(np.random.default_rng(1).normal(size=6), F64))
    exact, cg = newton(solver="exact"), newton(solver="cg")
    damped = newton(damping=2.0, line_search=False, learning_rate=0.5)

    @jax.jit
    def steps(params):
        grads = jax.grad(loss)(params)
        return [tx.update(grads, tx.init(params), params, value_fn=loss) for tx in (exact, cg, damped)]

    def flat(tree):
        return np.concatenate([np.asarray(tree["head"]), np.asarray(tree["tail"]).ravel()])

    (exact_updates, exact_state), (cg_updates, cg_state), (damped_updates, _) = steps(params)
    for updates in (exact_updates, cg_updates):
        np.testing.assert_allclose(flat(params) + flat(updates), np.linalg.solve(a, b), rtol=0, atol=1e-10)
    assert float(exact_state.step_size) == 1.0  # the full step passes the Armijo test
    assert int(cg_state.solver_iterations) <= 6
    gradient = a @ flat(params) - b
    np.testing.assert_allclose(flat(damped_updates), -0.5 * np.linalg.solve(a + 2.0 * np.eye(6), gradient), rtol=1e-12)


def test_damped_newton_converges_quadratically_on_logistic_regression(logistic_problem, run_transformation):
    problem = logistic_problem
    # Start far out so the backtracking ("damped") phase is needed first.
    start = jax.tree.map(lambda x: x + 3.0, problem.initial_params())
    _, _, (iterates, step_sizes) = run_transformation(
        newton(),
        start,
        12,
        problem.loss,
        record=lambda params, state: (params, state.step_size),
    )
    final = jax.tree.map(lambda x: x[-1], iterates)
    # The optimum SciPy finds, to 1e-6 in every parameter.
    assert float(problem.error(final)) < 1e-6
    # Errors against Newton's own limit (exact to rounding) show the order of convergence.
    errors = np.asarray(
        jnp.maximum(jnp.max(jnp.abs(iterates["w"] - final["w"]), axis=1), jnp.abs(iterates["b"] - final["b"]))
    )
    assert np.asarray(step_sizes).min() < 1.0  # some early step was damped
    local = [k for k in range(len(errors) - 1) if 1e-12 < errors[k + 1] and errors[k] < 1e-1]
    assert len(local) >= 2, errors
    for k in local:
        # e_{k+1} <= C e_k^2 with a modest constant, and the number of correct digits doubles.
        assert errors[k + 1] <= 2.0 * errors[k] ** 2, errors
        assert np.log(errors[k + 1]) / np.log(errors[k]) > 1.8, errors
    assert errors[-1] < 1e-12


def test_newton_needs_value_fn_and_params():
    params = {"x": jnp.ones(2, F64)}
    tx = newton()
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(params, None, params)  # checked before the state is read
    with pytest.raises(ValueError, match="params"):
        tx.update(params, None, None, value_fn=lambda p: jnp.sum(p["x"] ** 2))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"damping": -1.0}, "damping"),
        ({"solver": "qr"}, "solver"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"shrink_factor": 1.5}, "shrink_factor"),
        ({"max_cg_iterations": 0}, "max_cg_iterations"),
    ],
)
def test_newton_validates_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        newton(**kwargs)
