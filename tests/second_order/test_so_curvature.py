"""Curvature oracles against dense references: Hessian- and Gauss-Newton-vector products, Hutchinson
diagonals, Lanczos and power-iteration eigenvalues, and linear CG's n-step termination."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.second_order import (
    conjugate_gradient_solve,
    extreme_eigenvalues,
    gauss_newton_operator,
    gauss_newton_vector_product,
    hessian_operator,
    hessian_vector_product,
    hutchinson_diagonal,
    lanczos_eigenvalues,
    power_iteration,
)

F64 = jnp.float64


def _spd(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q @ np.diag(eigenvalues) @ q.T


def test_hessian_vector_product_matches_analytic_hessian():
    """f(a, B) = sum softplus(M [a; vec B]) + c.[a; vec B]^2/2 has the NumPy Hessian
    M^T diag(s (1 - s)) M + diag(c), s = sigmoid(M x); checked for the one-shot product and the
    linearized operator, on a two-leaf pytree."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(9, 7))
    scales = rng.uniform(0.5, 2.0, size=7)
    x = rng.normal(size=7)
    v = rng.normal(size=7)
    unflat = lambda z: {"a": jnp.asarray(z[:3], F64), "b": jnp.asarray(z[3:].reshape(2, 2), F64)}

    def loss(p):
        z = jnp.concatenate([p["a"], p["b"].ravel()])
        return jnp.sum(jax.nn.softplus(jnp.asarray(matrix) @ z)) + 0.5 * jnp.sum(jnp.asarray(scales) * z**2)

    @jax.jit
    def products(params, vector):
        return hessian_vector_product(loss, params, vector), hessian_operator(loss, params)(vector)

    sigmoid = 1 / (1 + np.exp(-(matrix @ x)))
    hessian = matrix.T @ np.diag(sigmoid * (1 - sigmoid)) @ matrix + np.diag(scales)
    for product in products(unflat(x), unflat(v)):
        flat = np.concatenate([np.asarray(product["a"]), np.asarray(product["b"]).ravel()])
        np.testing.assert_allclose(flat, hessian @ v, rtol=1e-12)


def test_gauss_newton_product_is_jacobian_sandwich():
    """G v = J^T H_L J v for a tanh network under softmax cross-entropy, against dense J and H_L;
    G is PSD although the Hessian is not; for a linear model G equals the Hessian."""
    rng = np.random.default_rng(1)
    inputs = jnp.asarray(rng.normal(size=(5, 3)), F64)
    labels = jax.nn.one_hot(jnp.asarray([0, 2, 1, 1, 0]), 3, dtype=F64)
    flat_params = jnp.asarray(rng.normal(size=24), F64)
    flat_vector = jnp.asarray(rng.normal(size=24), F64)
    unflat = lambda x: {"w1": x[:12].reshape(3, 4), "w2": x[12:].reshape(4, 3)}
    flat = lambda p: jnp.concatenate([p["w1"].ravel(), p["w2"].ravel()])

    def model(p):
        return jnp.tanh(inputs @ p["w1"]) @ p["w2"]

    def linear_model(p):
        return inputs @ p["w1"][:, :3]

    def output_loss(logits):
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))

    @jax.jit
    def compute(x, v):
        params, vector = unflat(x), unflat(v)
        jacobian = jax.jacobian(lambda x: model(unflat(x)).ravel())(x)
        loss_hessian = jax.hessian(lambda z: output_loss(z.reshape(5, 3)))(model(params).ravel())
        expected = jacobian.T @ loss_hessian @ jacobian @ v
        product = flat(gauss_newton_vector_product(model, output_loss, params, vector))
        operator = gauss_newton_operator(model, output_loss, params)
        dense_gn = jax.vmap(lambda e: flat(operator(unflat(e))))(jnp.eye(24, dtype=F64))
        dense_hessian = jax.hessian(lambda x: output_loss(model(unflat(x))))(x)
        linear_gn = flat(gauss_newton_vector_product(linear_model, output_loss, params, vector))
        linear_hvp = flat(hessian_vector_product(lambda p: output_loss(linear_model(p)), params, vector))
        return expected, product, dense_gn, dense_hessian, linear_gn, linear_hvp

    expected, product, dense_gn, dense_hessian, linear_gn, linear_hvp = compute(flat_params, flat_vector)
    np.testing.assert_allclose(np.asarray(product), np.asarray(expected), rtol=1e-10, atol=1e-13)
    assert np.linalg.eigvalsh(np.asarray(dense_gn)).min() > -1e-12
    assert np.linalg.eigvalsh(np.asarray(dense_hessian)).min() < -1e-3
    np.testing.assert_allclose(np.asarray(linear_gn), np.asarray(linear_hvp), rtol=1e-10, atol=1e-14)


def test_hutchinson_diagonal():
    """Rademacher probes are exact for a diagonal matrix with a single sample; for a dense matrix
    4000 probes land within 4 standard deviations of the diagonal."""
    diagonal = jnp.asarray([3.0, -1.0, 0.5, 2.0], F64)
    key = jax.random.PRNGKey(0)
    like = jnp.zeros(4, F64)
    a = _spd(np.linspace(1.0, 4.0, 4), seed=2)
    samples = 4000

    @jax.jit
    def estimates(key):
        exact = hutchinson_diagonal(lambda v: diagonal * v, like, key, num_samples=1)
        dense = hutchinson_diagonal(lambda v: jnp.asarray(a) @ v, like, key, num_samples=samples)
        return exact, dense

    exact, estimate = estimates(key)
    np.testing.assert_allclose(np.asarray(exact), np.asarray(diagonal), rtol=1e-15)
    # Dense matrix: unbiased, with standard deviation sqrt(sum_{j != i} A_ij^2 / N).
    off_diagonal = np.sqrt((np.sum(a**2, axis=1) - np.diag(a) ** 2) / samples)
    assert np.all(np.abs(np.asarray(estimate) - np.diag(a)) < 4 * off_diagonal)


def test_eigenvalue_estimators_find_the_extremes_within_one_percent():
    """Hessian of a 60-dimensional quadratic with 60 evenly spaced eigenvalues in [0.5, 40] (no gap
    isolates the extremes): Lanczos with 30 steps, and power iteration (unshifted for lambda_max,
    shifted by it for lambda_min)."""
    n = 60
    eigenvalues = np.linspace(0.5, 40.0, n)
    a = jnp.asarray(_spd(eigenvalues, seed=4))
    params = {"x": jnp.zeros(n, F64)}
    start = {"x": jnp.asarray(np.random.default_rng(5).normal(size=n), F64)}

    def loss(p):
        return 0.5 * p["x"] @ a @ p["x"] + jnp.sum(p["x"])

    @jax.jit
    def estimates(params, start):
        hvp = hessian_operator(loss, params)
        lanczos = extreme_eigenvalues(hvp, start, num_iterations=30)
        top, _ = power_iteration(hvp, v0=start, num_iters=200, error_tolerance=0.0)
        bottom, _ = power_iteration(hvp, v0=start, num_iters=200, error_tolerance=0.0, shift=top)
        return lanczos, (bottom, top), lanczos_eigenvalues(hvp, start, num_iterations=30)

    (l_min, l_max), (p_min, p_max), ritz = estimates(params, start)
    for estimate, exact in [(l_min, 0.5), (l_max, 40.0), (p_min, 0.5), (p_max, 40.0)]:
        assert abs(float(estimate) - exact) <= 0.01 * exact, (float(estimate), exact)
    # Ritz values interlace: all inside the spectrum.
    assert np.all((np.asarray(ritz) >= 0.5 - 1e-9) & (np.asarray(ritz) <= 40.0 + 1e-9))


def test_lanczos_stops_at_an_invariant_subspace():
    """Three distinct eigenvalues: the Krylov space has dimension 3, the Ritz values are exact and
    the remaining entries are NaN."""
    a = jnp.asarray(_spd([1.0, 1.0, 2.0, 2.0, 7.0, 7.0], seed=6))
    ritz = np.asarray(jax.jit(lambda q: lanczos_eigenvalues(lambda v: a @ v, q, num_iterations=6))(jnp.ones(6, F64)))
    np.testing.assert_allclose(ritz[:3], [1.0, 2.0, 7.0], rtol=1e-10)
    assert np.isnan(ritz[3:]).all()


def test_linear_cg_terminates_in_at_most_n_iterations():
    """n distinct eigenvalues need all n steps; k distinct eigenvalues need only k.

    (Finite precision delays termination as kappa grows: with kappa = 1e3 the 12-step residual is
    still ~1e-3 relative, so the spread spectrum here has kappa = 10.)"""
    n = 12
    rng = np.random.default_rng(7)
    b = jnp.asarray(rng.normal(size=n), F64)
    spread = jnp.asarray(_spd(np.geomspace(1.0, 10.0, n), seed=8))
    clustered = jnp.asarray(_spd(np.repeat([1.0, 10.0, 100.0], 4), seed=9))

    @jax.jit
    def solves(b):
        def by_steps(a, steps):
            return conjugate_gradient_solve(lambda v: a @ v, b, max_iterations=steps, tolerance=1e-30)

        return by_steps(spread, n), by_steps(spread, n - 1), by_steps(clustered, 3), by_steps(clustered, 2)

    full, short, clustered_full, clustered_short = solves(b)
    b_norm = float(jnp.linalg.norm(b))
    np.testing.assert_allclose(np.asarray(full.solution), np.linalg.solve(spread, b), rtol=1e-11)
    assert float(full.residual_norm) < 1e-12 * b_norm
    assert float(short.residual_norm) > 1e-6 * b_norm
    np.testing.assert_allclose(np.asarray(clustered_full.solution), np.linalg.solve(clustered, b), rtol=1e-11)
    assert float(clustered_full.residual_norm) < 1e-12 * b_norm < float(clustered_short.residual_norm)


def test_cg_stops_on_negative_curvature_and_on_martens_progress_test():
    indefinite = jnp.diag(jnp.asarray([2.0, 1.0, -1.0], F64))
    # kappa = 1e6 with b = A x: the model value phi is captured by the large eigenvalues within a
    # few steps while the residual decays slowly, so the relative-progress test ends the solve early.
    a = jnp.asarray(_spd(np.geomspace(1e-3, 1e3, 100), seed=10))
    b = a @ jnp.asarray(np.random.default_rng(11).normal(size=100), F64)

    @jax.jit
    def solves(b):
        negative = conjugate_gradient_solve(lambda v: indefinite @ v, jnp.ones(3, F64), max_iterations=10)
        truncated = conjugate_gradient_solve(lambda v: a @ v, b, max_iterations=100, progress_tolerance=5e-4)
        return negative, truncated

    negative, truncated = solves(b)
    assert bool(negative.negative_curvature)
    assert np.isfinite(np.asarray(negative.solution)).all()
    assert bool(truncated.converged) and 10 < int(truncated.num_iterations) < 30
    assert float(truncated.residual_norm) > 1e-4 * float(jnp.linalg.norm(b))


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_eigenvalue_helpers_validate(method):
    with pytest.raises(ValueError, match="num_iterations"):
        extreme_eigenvalues(lambda v: v, jnp.ones(2), num_iterations=0, method=method)
    with pytest.raises(ValueError, match="method"):
        extreme_eigenvalues(lambda v: v, jnp.ones(2), method="arnoldi")


def test_power_iteration_keeps_an_invariant_subspace_finite():
    """Issue 19: a zero product ``(A - shift I) v = 0`` keeps ``v`` (its Rayleigh quotient is exact)
    instead of dividing by zero. Zero operator, the Hessian of a linear loss, an exact eigenvector
    start (unshifted and shifted by its own eigenvalue), and a repeated top eigenvalue; Lanczos
    and the power method of extreme_eigenvalues agree on each."""
    e1 = jnp.asarray([1.0, 0.0, 0.0, 0.0], F64)
    generic = jnp.asarray([0.3, -1.0, 0.5, 2.0], F64)
    diagonal = jnp.diag(jnp.asarray([3.0, 1.0, 1.0, 1.0], F64))
    repeated = jnp.asarray(_spd([5.0, 5.0, 2.0, 1.0], seed=12))
    linear_hessian = hessian_operator(lambda w: jnp.sum(3.0 * w["a"]) + 2.0 * w["b"], {"a": jnp.ones(3, F64), "b": 1.0})

    @jax.jit
    def cases(e1, generic):
        tree_start = {"a": generic[:3], "b": generic[3]}
        return {
            "zero": (power_iteration(lambda v: 0.0 * v, v0=generic, num_iters=10), generic),
            "linear_loss": (power_iteration(linear_hessian, v0=tree_start, num_iters=10), tree_start),
            "eigenvector": (power_iteration(lambda v: diagonal @ v, v0=e1, num_iters=10), e1),
            "eigenvector_shifted": (power_iteration(lambda v: diagonal @ v, v0=e1, num_iters=10, shift=3.0), e1),
            "extremes": {
                (name, method): extreme_eigenvalues(matvec, start, 30, method=method)
                for method in ("lanczos", "power")
                for name, matvec, start in [
                    ("zero", lambda v: 0.0 * v, generic),
                    ("eigenvector", lambda v: diagonal @ v, e1),
                    ("generic", lambda v: diagonal @ v, generic),
                    ("repeated", lambda v: repeated @ v, generic),
                ]
            },
            "repeated": power_iteration(lambda v: repeated @ v, v0=generic, num_iters=200, error_tolerance=0.0),
        }

    out = cases(e1, generic)
    expected_values = {"zero": 0.0, "linear_loss": 0.0, "eigenvector": 3.0, "eigenvector_shifted": 3.0}
    for name, value in expected_values.items():
        (eigenvalue, vector), start = out[name]
        assert float(eigenvalue) == value, name
        start_flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(start)])
        vector_flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(vector)])
        np.testing.assert_allclose(vector_flat, start_flat / np.linalg.norm(start_flat), rtol=1e-15, err_msg=name)
    expected_extremes = {"zero": (0.0, 0.0), "eigenvector": (3.0, 3.0), "generic": (1.0, 3.0), "repeated": (1.0, 5.0)}
    for (name, method), (low, high) in out["extremes"].items():
        np.testing.assert_allclose([float(low), float(high)], expected_extremes[name], rtol=1e-6, err_msg=name + method)
    eigenvalue, vector = out["repeated"]
    assert abs(float(eigenvalue) - 5.0) < 1e-12
    # Any unit vector of the top eigenspace is a correct answer.
    np.testing.assert_allclose(np.asarray(repeated @ vector), 5.0 * np.asarray(vector), atol=1e-12)
    assert abs(float(jnp.linalg.norm(vector)) - 1.0) < 1e-14
