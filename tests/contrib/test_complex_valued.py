"""split_real_and_imaginary and normalize against Optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx
from gradtx import contrib

STEPS = 120
rng = np.random.default_rng(0)
A = jnp.asarray(rng.normal(size=(12, 6)) + 1j * rng.normal(size=(12, 6)))
B = jnp.asarray(rng.normal(size=12) + 1j * rng.normal(size=12))


def complex_loss(params):
    residual = A @ params["z"] - B
    return jnp.sum(jnp.abs(residual) ** 2) + jnp.sum(params["r"] ** 2 - jnp.cos(params["r"]))


def _start():
    return {"z": jnp.zeros(6, jnp.complex128), "r": jnp.linspace(-1.0, 1.0, 3)}


def _run(optimizer):
    params = _start()
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        # JAX's gradient of a real loss in z is conj of the descent direction (Optax issue 196).
        grads = jax.tree.map(jnp.conj, jax.grad(complex_loss)(params))
        updates, state = optimizer.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    trajectory = []
    for _ in range(STEPS):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def _gap(a, b):
    return max(float(jnp.linalg.norm(x[k] - y[k]) / jnp.linalg.norm(y[k])) for x, y in zip(a, b) for k in y)


@pytest.mark.parametrize("inner", ["adam", "sgd_momentum"])
def test_split_real_and_imaginary_matches_optax(inner):
    ours_inner = gradtx.adam(0.05) if inner == "adam" else gradtx.sgd(0.01, momentum=0.9)
    theirs_inner = optax.adam(0.05) if inner == "adam" else optax.sgd(0.01, momentum=0.9)
    ours = _run(contrib.split_real_and_imaginary(ours_inner))
    theirs = _run(optax.contrib.split_real_and_imaginary(theirs_inner))
    assert _gap(ours, theirs) < 1e-8
    assert complex_loss(ours[-1]) < 0.5 * complex_loss(_start())
    assert ours[-1]["z"].dtype == jnp.complex128 and ours[-1]["r"].dtype == jnp.float64


def test_split_is_adam_on_the_real_pair():
    """Adam on z = x + iy through the split equals Adam on (x, y) as two real parameters."""
    z = jnp.asarray([1.0 + 2.0j, -0.5 + 0.1j])
    g = jnp.asarray([0.3 - 0.2j, 1.0 + 4.0j])
    split = contrib.split_real_and_imaginary(gradtx.adam(0.1))
    state = split.init({"z": z})
    real = gradtx.adam(0.1)
    real_state = real.init({"x": z.real, "y": z.imag})
    for _ in range(3):
        u, state = split.update({"z": g}, state, {"z": z})
        v, real_state = real.update({"x": g.real, "y": g.imag}, real_state)
        np.testing.assert_allclose(u["z"], v["x"] + 1j * v["y"], rtol=1e-14)
    assert isinstance(state, contrib.SplitRealAndImaginaryState)


def test_normalize_matches_optax_and_has_unit_norm():
    g = {"a": jnp.asarray([3.0, -4.0]), "b": jnp.asarray([[12.0]])}
    ours, state = contrib.normalize().update(g, contrib.normalize().init(g))
    theirs, _ = optax.contrib.normalize().update(g, optax.contrib.normalize().init(g))
    for k in g:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-15)
        np.testing.assert_allclose(ours[k], g[k] / 13.0, rtol=1e-15)
    assert float(gradtx.global_norm(ours)) == pytest.approx(1.0, rel=1e-15)
    assert state == contrib.NormalizeState()


def test_normalize_keeps_dtype():
    g = {"a": jnp.ones(4, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
    out, _ = contrib.normalize().update(g, contrib.normalize().init(g))
    assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
