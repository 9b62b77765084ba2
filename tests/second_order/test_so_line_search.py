"""Line searches: the strong Wolfe and Armijo conditions hold at the returned steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.second_order import backtracking_line_search, wolfe_line_search

F64 = jnp.float64


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def test_wolfe_search_satisfies_strong_wolfe_conditions():
    """Rosenbrock from 64 random points along the steepest-descent direction, with initial trials
    from 1e-4 (bracketing must expand) to 10 (zoom must shrink), for c2 = 0.1 (CG) and 0.9
    (quasi-Newton)."""
    c1 = 1e-4
    rng = np.random.default_rng(0)
    starts = jnp.asarray(rng.uniform(-2, 2, size=(64, 4)), F64)
    initial_steps = jnp.asarray(np.geomspace(1e-4, 10.0, 64), F64)
    c2 = jnp.asarray([0.1, 0.9] * 32, F64)

    @jax.jit
    @jax.vmap
    def search(x, initial_step, c2):
        value, gradient = jax.value_and_grad(_rosenbrock)(x)
        direction = -gradient
        result = wolfe_line_search(_rosenbrock, x, direction, value, gradient, initial_step=initial_step, c1=c1, c2=c2)
        new_value, new_gradient = jax.value_and_grad(_rosenbrock)(x + result.step_size * direction)
        return result, value, gradient @ direction, new_value, new_gradient @ direction, new_gradient

    result, value, slope, new_value, new_slope, new_gradient = search(starts, initial_steps, c2)
    assert np.all(np.asarray(result.converged))
    step = np.asarray(result.step_size)
    assert np.all(step > 0)
    assert np.all(np.asarray(new_value) <= np.asarray(value + c1 * step * slope))
    assert np.all(np.abs(np.asarray(new_slope)) <= np.asarray(c2) * np.abs(np.asarray(slope)))
    # The value and gradient returned are those at the accepted point.
    np.testing.assert_allclose(np.asarray(result.value), np.asarray(new_value), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(result.gradient), np.asarray(new_gradient), rtol=1e-12, atol=1e-12)
    assert int(np.asarray(result.num_evaluations).max()) <= 30
    # Both phases were exercised: some steps grew beyond their first trial, some shrank below it.
    assert np.any(step > np.asarray(initial_steps)) and np.any(step < np.asarray(initial_steps))


def test_line_searches_on_a_quadratic_and_non_descent_directions():
    """On f = x.A x / 2 the Newton direction's unit step passes both searches at once; an ascent
    direction returns the step 0."""
    a = jnp.asarray([[3.0, 1.0], [1.0, 2.0]], F64)

    def loss(x):
        return 0.5 * x @ a @ x

    x = jnp.asarray([1.0, -2.0], F64)

    @jax.jit
    def searches(x):
        value, gradient = jax.value_and_grad(loss)(x)
        newton_direction = -jnp.linalg.solve(a, gradient)
        wolfe = wolfe_line_search(loss, x, newton_direction, value, gradient)
        armijo = backtracking_line_search(loss, x, newton_direction, value, gradient @ newton_direction)
        uphill = wolfe_line_search(loss, x, gradient, value, gradient)
        uphill_armijo = backtracking_line_search(loss, x, gradient, value, gradient @ gradient)
        return wolfe, armijo, uphill, uphill_armijo

    wolfe, armijo, uphill, uphill_armijo = searches(x)
    assert float(wolfe.step_size) == 1.0 and int(wolfe.num_evaluations) == 1
    assert float(armijo.step_size) == 1.0 and int(armijo.num_evaluations) == 1
    for result in (uphill, uphill_armijo):
        assert float(result.step_size) == 0.0 and not bool(result.converged)
        assert int(result.num_evaluations) == 0


def test_backtracking_returns_the_first_armijo_step():
    """The step is 0.5^j for the smallest j passing Armijo: the step twice as long fails it."""
    c1 = 0.3

    @jax.jit
    def search(x):
        value, gradient = jax.value_and_grad(_rosenbrock)(x)
        slope = -gradient @ gradient
        result = backtracking_line_search(_rosenbrock, x, -gradient, value, slope, initial_step=1.0, c1=c1)
        longer = _rosenbrock(x - 2 * result.step_size * gradient)
        return result, value, slope, longer

    result, value, slope, longer = search(jnp.asarray([-1.2, 1.0, 0.5], F64))
    step = float(result.step_size)
    assert bool(result.converged)
    assert np.log2(step) == round(np.log2(step))
    assert float(result.value) <= float(value) + c1 * step * float(slope)
    assert float(longer) > float(value) + c1 * 2 * step * float(slope)


def test_line_search_constants_are_validated():
    x = jnp.ones(2, F64)
    with pytest.raises(ValueError, match="c2"):
        wolfe_line_search(_rosenbrock, x, -x, 0.0, x, c1=0.5, c2=0.5)
    with pytest.raises(ValueError, match="shrink_factor"):
        backtracking_line_search(_rosenbrock, x, -x, 0.0, -1.0, shrink_factor=1.0)
    with pytest.raises(ValueError, match="max_iterations"):
        wolfe_line_search(_rosenbrock, x, -x, 0.0, x, max_iterations=0)
