"""Hessian-free optimization: SciPy's logistic-regression optimum with Gauss-Newton and Hessian
curvature, and the Levenberg-Marquardt damping rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.base import apply_updates
from gradtx.second_order import hessian_free

F64 = jnp.float64


@pytest.fixture(scope="module")
def logistic_runs(logistic_problem):
    """(error vs SciPy, lambda, rho) after each of 25 updates, Gauss-Newton and Hessian curvature,
    from one jitted program."""
    problem = logistic_problem
    grad = jax.grad(problem.loss)
    extra_args = {
        "gauss_newton": {"model_fn": problem.model, "output_loss_fn": problem.output_loss},
        "hessian": {"value_fn": problem.loss},
    }

    def trajectory(curvature, params):
        tx = hessian_free(curvature=curvature)

        def body(carry, _):
            params, state = carry
            updates, state = tx.update(grad(params), state, params, **extra_args[curvature])
            params = apply_updates(params, updates)
            return (params, state), (problem.error(params), state.damping, state.reduction_ratio)

        return jax.lax.scan(body, (params, tx.init(params)), None, length=25)[1]

    runs = jax.jit(lambda params: {c: trajectory(c, params) for c in extra_args})(problem.initial_params())
    return jax.tree.map(np.asarray, runs)


@pytest.mark.parametrize("curvature", ["gauss_newton", "hessian"])
def test_hessian_free_reaches_scipy_optimum(curvature, logistic_runs):
    errors, damping, ratio = logistic_runs[curvature]
    assert errors[-1] < 1e-6, errors
    # lambda follows Martens' rule on the recorded ratios while the gradient is far from zero
    # (afterwards rho is rounding noise and lambda only matters through CG).
    previous = np.concatenate([[1.0], damping[:-1]])
    expected = np.where(ratio > 0.75, previous * 2 / 3, np.where(ratio < 0.25, previous * 1.5, previous))
    early = np.arange(len(errors)) <= np.argmax(errors < 1e-8)
    np.testing.assert_allclose(damping[early], expected[early], rtol=1e-12)
    # This convex model is good: most early steps shrink lambda.
    assert (ratio[early] > 0.75).sum() >= 3, ratio


def test_damping_grows_when_the_model_overpredicts():
    """f(x) = sqrt(1 + x^2) at x = 10: the Newton step from the tiny curvature overshoots, so the
    actual decrease is far below the model's (rho < 1/4) and lambda grows by 3/2."""

    def loss(p):
        return jnp.sum(jnp.sqrt(1 + p["x"] ** 2))

    params = {"x": jnp.asarray([10.0], F64)}
    plain = hessian_free(curvature="hessian", initial_damping=1e-4, line_search=False)
    searched = hessian_free(curvature="hessian", initial_damping=1e-4)

    @jax.jit
    def steps(params):
        grads = jax.grad(loss)(params)
        return [tx.update(grads, tx.init(params), params, value_fn=loss) for tx in (plain, searched)]

    (updates, state), (searched_updates, _) = steps(params)
    assert float(state.reduction_ratio) < 0.25
    np.testing.assert_allclose(float(state.damping), 1.5e-4, rtol=1e-12)
    # Without a line search an increase is refused.
    np.testing.assert_array_equal(np.asarray(updates["x"]), 0.0)
    # With the backtracking search a shorter step along the same direction is taken instead.
    new_x = np.asarray(params["x"]) + np.asarray(searched_updates["x"])
    assert np.sqrt(1 + new_x**2).sum() < np.sqrt(101.0)


def test_hessian_free_needs_its_functions_and_validates():
    params = jnp.ones(2, F64)
    with pytest.raises(TypeError, match="model_fn"):
        hessian_free().update(params, None, params, value_fn=lambda p: jnp.sum(p**2))
    with pytest.raises(TypeError, match="value_fn"):
        hessian_free(curvature="hessian").update(params, None, params)
    with pytest.raises(ValueError, match="damping_increase"):
        hessian_free(damping_increase=0.5)
    with pytest.raises(ValueError, match="warm_start_decay"):
        hessian_free(warm_start_decay=1.5)
    with pytest.raises(ValueError, match="curvature"):
        hessian_free(curvature="fisher")
