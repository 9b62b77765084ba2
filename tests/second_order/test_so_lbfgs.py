"""L-BFGS: SciPy's logistic-regression optimum, Rosenbrock, and the two-loop recursion against the
explicit BFGS inverse-Hessian recursion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.base import apply_updates
from gradtx.second_order import lbfgs_direction, lbfgs_solver

F64 = jnp.float64


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


_MEMORY = 4


@pytest.fixture(scope="module")
def runs(logistic_problem):
    """Logistic regression (error vs SciPy per step, final state) and Rosenbrock (iterates, values
    and states per step) from one jitted program."""
    problem = logistic_problem

    def trajectory(tx, loss, params, num_steps, record):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
            params = apply_updates(params, updates)
            return (params, state), record(params, state)

        return jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)

    @jax.jit
    def run(logistic_start, rosenbrock_start):
        (_, logistic_state), errors = trajectory(
            lbfgs_solver(), problem.loss, logistic_start, 30, lambda params, state: problem.error(params)
        )
        _, rosenbrock = trajectory(
            lbfgs_solver(memory_size=_MEMORY),
            _rosenbrock,
            rosenbrock_start,
            80,
            lambda x, state: (x, _rosenbrock(x), state),
        )
        return (errors, logistic_state), rosenbrock

    return run(problem.initial_params(), jnp.asarray([-1.2, 1.0, -0.5], F64))


def test_lbfgs_reaches_scipy_optimum(runs):
    (errors, state), _ = runs
    errors = np.asarray(errors)
    assert errors[-1] < 1e-6, errors
    assert int(state.num_pairs) == 10  # the memory filled up and wrapped around


def test_lbfgs_solves_rosenbrock_with_the_bfgs_direction(runs):
    """Rosenbrock from (-1.2, 1, -0.5) to 1e-8; and at step m + 3 the two-loop direction equals
    H g with H built by the BFGS recursion H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T
    from gamma I over the stored pairs, oldest first."""
    memory = _MEMORY
    _, (iterates, values, states) = runs
    np.testing.assert_allclose(np.asarray(iterates[-1]), [1.0, 1.0, 1.0], atol=1e-8)
    assert np.all(np.diff(np.asarray(values)) <= 0)  # every accepted step satisfies Armijo

    k = memory + 3
    state = jax.tree.map(lambda leaf: np.asarray(leaf)[k], states)
    x = np.asarray(iterates)[k]
    gradient, direction = jax.jit(
        lambda x, state: (jax.grad(_rosenbrock)(x), lbfgs_direction(jax.grad(_rosenbrock)(x), state))
    )(x, state)
    order = [(int(state.next_slot) + j) % memory for j in range(memory)]
    s = np.asarray(state.position_changes)[order]
    y = np.asarray(state.gradient_changes)[order]
    inverse_hessian = np.eye(3) * (s[-1] @ y[-1]) / (y[-1] @ y[-1])
    for s_i, y_i in zip(s, y):
        rho = 1 / (y_i @ s_i)
        left = np.eye(3) - rho * np.outer(s_i, y_i)
        inverse_hessian = left @ inverse_hessian @ left.T + rho * np.outer(s_i, s_i)
    np.testing.assert_allclose(np.asarray(direction), inverse_hessian @ np.asarray(gradient), rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(state.inverse_curvatures)[order], [1 / (a @ b) for a, b in zip(s, y)], rtol=1e-12
    )


def test_lbfgs_needs_value_fn_and_validates():
    params = jnp.ones(2, F64)
    tx = lbfgs_solver()
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(params, None, params)  # checked before the state is read
    with pytest.raises(ValueError, match="memory_size"):
        lbfgs_solver(memory_size=0)
    with pytest.raises(ValueError, match="c2"):
        lbfgs_solver(c2=1.0)
