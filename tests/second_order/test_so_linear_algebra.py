"""Optax's linear-algebra utilities and ``optax.second_order`` functions, against Optax and scipy in float64."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.second_order
import pytest
import scipy.optimize

import gradtx

F64 = jnp.float64
_rng = np.random.default_rng(3)
_Q, _ = np.linalg.qr(_rng.normal(size=(8, 8)))
SPD = jnp.asarray(_Q @ np.diag([9.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1]) @ _Q.T)


def test_power_iteration_matches_optax():
    """Array input (default random start), an operator on a pytree, and early stopping by
    error_tolerance: the same eigenpair as Optax's to 1e-10, and the true top eigenvalue 9."""
    ours = gradtx.power_iteration(SPD)
    theirs = optax.power_iteration(SPD)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-8, atol=1e-12)
    assert abs(float(ours[0]) - 9.0) < 1e-5

    def tree_product(v):
        flat = jnp.concatenate([v["a"], v["b"]])
        out = SPD @ flat
        return {"a": out[:3], "b": out[3:]}

    v0 = {"a": jnp.ones(3, F64), "b": jnp.linspace(-1.0, 1.0, 5)}
    for kwargs in (dict(num_iters=7), dict(num_iters=200, error_tolerance=1e-9)):
        ours = gradtx.power_iteration(tree_product, v0=v0, **kwargs)
        theirs = optax.power_iteration(tree_product, v0=v0, **kwargs)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)
        for a, b in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(theirs[1])):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="v0"):
        gradtx.power_iteration(tree_product)
    # gradtx's shift finds the other end of the spectrum.
    bottom, _ = gradtx.power_iteration(SPD, num_iters=3000, error_tolerance=0.0, shift=9.0)
    assert abs(float(bottom) - 0.1) < 1e-6


@pytest.mark.parametrize("p", [1, 2, 4, 8])
def test_matrix_inverse_pth_root_matches_optax(p):
    """Coupled Newton iterations: the same root and error as Optax's, and the true (A + eps I)^(-1/p)."""
    ours, ours_error = gradtx.matrix_inverse_pth_root(SPD, p)
    theirs, theirs_error = optax.matrix_inverse_pth_root(SPD, p)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours_error, theirs_error, rtol=1e-6, atol=1e-14)
    eigenvalues, vectors = np.linalg.eigh(np.asarray(SPD) + 1e-6 * 9.0 * np.eye(8))
    exact = vectors @ np.diag(eigenvalues ** (-1.0 / p)) @ vectors.T
    np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-6)


def test_matrix_inverse_pth_root_other_powers_and_scalar():
    """p = 3 is right here (Optax's switch takes p = 4's power); a 1 x 1 matrix is powered directly."""
    ours, _ = gradtx.matrix_inverse_pth_root(SPD, 3)
    eigenvalues, vectors = np.linalg.eigh(np.asarray(SPD) + 1e-6 * 9.0 * np.eye(8))
    np.testing.assert_allclose(ours, vectors @ np.diag(eigenvalues ** (-1.0 / 3)) @ vectors.T, rtol=1e-5, atol=1e-6)
    theirs, _ = optax.matrix_inverse_pth_root(SPD, 3)
    assert np.max(np.abs(np.asarray(theirs) - np.asarray(ours))) > 1e-2
    np.testing.assert_allclose(gradtx.matrix_inverse_pth_root(jnp.asarray([[4.0]]), 2)[0], [[0.5]], rtol=1e-5)
    with pytest.raises(ValueError, match="p"):
        gradtx.matrix_inverse_pth_root(SPD, 0)


@pytest.mark.parametrize("shape", [(12, 6, None), (6, 12, 3)])
def test_nnls_matches_optax_and_scipy(shape):
    m, n, k = shape
    rng = np.random.default_rng(m + n)
    a = jnp.asarray(rng.normal(size=(m, n)))
    b = jnp.asarray(rng.normal(size=(m,) if k is None else (m, k)))
    ours = gradtx.nnls(a, b, 500)
    np.testing.assert_allclose(ours, optax.nnls(a, b, 500), rtol=1e-10, atol=1e-12)
    if k is None:
        reference, _ = scipy.optimize.nnls(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert float(jnp.min(ours)) >= 0.0


def test_optax_second_order_functions_match():
    """hvp, hessian_diag and fisher_diag with Optax's loss(params, inputs, targets) convention."""

    def loss(params, inputs, targets):
        logits = inputs @ params["w"] + params["b"]
        return jnp.mean(jnp.logaddexp(0.0, logits) - targets * logits) + 0.1 * jnp.sum(params["w"] ** 4)

    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=4)), "b": jnp.asarray(0.3)}
    inputs, targets = jnp.asarray(rng.normal(size=(16, 4))), jnp.asarray(rng.integers(0, 2, 16), F64)
    v = jnp.asarray(rng.normal(size=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = (
            optax.second_order.hvp(loss, v, params, inputs, targets),
            optax.second_order.hessian_diag(loss, params, inputs, targets),
            optax.second_order.fisher_diag(loss, params, inputs, targets),
        )
    ours = (
        gradtx.hvp(loss, v, params, inputs, targets),
        gradtx.hessian_diag(loss, params, inputs, targets),
        gradtx.fisher_diag(loss, params, inputs, targets),
    )
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # ravel_pytree order: "b" then "w".
    dense = jax.hessian(lambda flat: loss({"b": flat[0], "w": flat[1:]}, inputs, targets))(
        jnp.concatenate([params["b"][None], params["w"]])
    )
    np.testing.assert_allclose(ours[1], jnp.diag(dense), rtol=1e-12)
