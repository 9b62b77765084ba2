"""Equilibrated SGD: the preconditioner estimates the Hessian's row norms (also where the diagonal
is zero), and it removes diagonal ill-conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.second_order import esgd, scale_by_esgd

F64 = jnp.float64


def test_preconditioner_estimates_hessian_row_norms():
    """sqrt(D / i) -> ||H_{j,:}|| (the equilibration preconditioner). The first block is a saddle
    with a zero diagonal, where the Jacobi preconditioner |diag H| would be 0."""
    h = np.zeros((5, 5))
    h[:2, :2] = [[0.0, 1.0], [1.0, 0.0]]
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    h[2:, 2:] = q @ np.diag([0.1, -2.0, 5.0]) @ q.T
    hessian = jnp.asarray(h)

    def loss(x):
        return 0.5 * x @ hessian @ x

    samples = 1000
    tx = scale_by_esgd(update_interval=1)
    x = jnp.asarray(rng.normal(size=5), F64)

    @jax.jit
    def run(x):
        def body(state, _):
            # Zero incoming updates keep the point fixed; only the curvature sum evolves.
            _, state = tx.update(jnp.zeros_like(x), state, x, value_fn=loss)
            return state, None

        state, _ = jax.lax.scan(body, tx.init(x), None, length=samples)
        return state

    state = run(x)
    assert int(state.num_samples) == samples
    estimate = np.sqrt(np.asarray(state.curvature_sum) / samples)
    row_norms = np.linalg.norm(h, axis=1)
    # Relative standard deviation of the estimate: sqrt(1 / (2 * samples)) ~ 2.2%.
    np.testing.assert_allclose(estimate, row_norms, rtol=0.1)
    np.testing.assert_allclose(estimate[:2], 1.0, rtol=0.1)


def test_esgd_removes_diagonal_ill_conditioning(run_transformation):
    """Diagonal Hessian with kappa = 1e4: ESGD (lr 0.5) is diagonally preconditioned descent and
    converges to 1e-8 in 100 steps; gradient descent with its best step 2/(mu + L) contracts by
    (kappa - 1)/(kappa + 1) per step and has barely moved."""
    curvatures = jnp.asarray(np.geomspace(1e-2, 1e2, 6), F64)

    def loss(x):
        return 0.5 * jnp.sum(curvatures * x**2)

    start = jnp.ones(6, F64)
    final, state, _ = run_transformation(esgd(0.5, update_interval=1), start, 100, loss)
    assert float(jnp.max(jnp.abs(final))) < 1e-8
    gd_factor = ((1e4 - 1) / (1e4 + 1)) ** 100  # slowest coordinate under the best fixed GD step
    assert gd_factor > 0.98
    assert int(state.num_samples) == 100


def test_esgd_probes_every_update_interval_steps(run_transformation):
    def loss(x):
        return jnp.sum(x**2)

    _, state, samples = run_transformation(
        esgd(0.1, update_interval=20), jnp.ones(3, F64), 45, loss, record=lambda x, s: s.num_samples
    )
    # Probes at steps 0, 20 and 40.
    np.testing.assert_array_equal(np.asarray(samples)[[0, 19, 20, 39, 40, 44]], [1, 1, 2, 2, 3, 3])


def test_esgd_needs_value_fn_and_validates():
    params = jnp.ones(2, F64)
    tx = esgd(0.1)
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="damping"):
        esgd(0.1, damping=0.0)
    with pytest.raises(ValueError, match="update_interval"):
        esgd(0.1, update_interval=0)
    with pytest.raises(ValueError, match="learning_rate"):
        esgd(-0.1)
