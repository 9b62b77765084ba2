"""Complex parameters: gradtx against Optax in complex128, and the real path untouched."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 120
TOLERANCE = 1e-8

_rng = np.random.default_rng(7)
_A = jnp.asarray(_rng.normal(size=(6, 5)) + 1j * _rng.normal(size=(6, 5)))
_Y = jnp.asarray(_rng.normal(size=(6, 4)) + 1j * _rng.normal(size=(6, 4)))


def _loss(p):
    residual = _A @ p["w"] + p["b"] - _Y
    return jnp.sum(jnp.abs(residual) ** 2) / 6 + 0.1 * jnp.sum(jnp.abs(p["w"]) ** 2) + jnp.sum(jnp.cos(p["b"].real))


# Optax's convention: the descent direction of a real loss of complex w is conj(dL/dw) as JAX returns it.
_grad = jax.jit(lambda p: jax.tree.map(jnp.conj, jax.grad(_loss)(p)))


def _run(optimizer):
    rng = np.random.default_rng(8)
    params = {
        "w": jnp.asarray(0.3 * (rng.normal(size=(5, 4)) + 1j * rng.normal(size=(5, 4)))),
        "b": jnp.asarray(0.3 * (rng.normal(size=(4,)) + 1j * rng.normal(size=(4,)))),
    }
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(_grad(params), state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    out = []
    for _ in range(STEPS):
        params, state = step(params, state)
        out.append(params)
    return out


def _max_relative_error(a, b):
    worst = 0.0
    for x, y in zip(a, b):
        diff = np.sqrt(sum(float(jnp.sum(jnp.abs(x[k] - y[k]) ** 2)) for k in y))
        worst = max(worst, diff / np.sqrt(sum(float(jnp.sum(jnp.abs(y[k]) ** 2)) for k in y)))
    return worst


CASES = {
    "adam": lambda m: m.adam(0.02),
    "adam_nesterov_eps_root": lambda m: m.adam(0.02, eps_root=1e-10, nesterov=True),
    "adamw": lambda m: m.adamw(0.02, weight_decay=0.1),
    "adamax": lambda m: m.adamax(0.02),
    "amsgrad": lambda m: m.amsgrad(0.02),
    "nadam": lambda m: m.nadam(0.02),
    "adagrad": lambda m: m.adagrad(0.1),
    "rmsprop": lambda m: m.rmsprop(0.003),
    "rmsprop_centered_momentum": lambda m: m.rmsprop(
        0.003, centered=True, momentum=0.8, eps=1e-3, bias_correction=True
    ),
    "rmsprop_eps_outside": lambda m: m.rmsprop(0.003, eps_in_sqrt=False, initial_scale=0.1),
    "adabelief": lambda m: m.adabelief(0.02),
    "radam": lambda m: m.radam(0.02),
    "yogi": lambda m: m.yogi(0.02),
    "adamaxw": lambda m: m.adamaxw(0.02, weight_decay=0.1),
    "nadamw": lambda m: m.nadamw(0.02, weight_decay=0.1),
    "novograd": lambda m: m.novograd(0.005, weight_decay=0.01),
    "adafactor_factored": lambda m: m.adafactor(0.01, min_dim_size_to_factor=2),
    "adafactor_unfactored": lambda m: m.adafactor(0.01),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_complex_matches_optax(name):
    ours, theirs = _run(CASES[name](gradtx)), _run(CASES[name](optax))
    assert all(np.isfinite(p["w"]).all() for p in ours)
    assert _max_relative_error(ours, theirs) < TOLERANCE
    # The run goes somewhere: the loss falls.
    assert _loss(ours[-1]) < _loss(ours[0])


def test_second_moments_are_stored_real():
    params = {"w": jnp.zeros((2, 3), jnp.complex64)}
    assert gradtx.adam(0.1).init(params)[0].nu["w"].dtype == jnp.float32
    assert gradtx.adam(0.1).init(params)[0].mu["w"].dtype == jnp.complex64
    assert gradtx.rmsprop(0.1).init(params)[0].nu["w"].dtype == jnp.float32
    assert gradtx.adagrad(0.1).init(params)[0].sum_of_squares["w"].dtype == jnp.float32
    assert gradtx.scale_by_factored_rms(min_dim_size_to_factor=1).init(params).v_row["w"].dtype == jnp.float32


@pytest.mark.parametrize("name", ["adam", "amsgrad", "adagrad", "rmsprop_centered_momentum", "adabelief", "radam"])
def test_real_path_has_no_complex_operations(name):
    # The complex branch is chosen at trace time from the dtype: a real leaf's program is unchanged.
    params = {"w": jnp.ones((3, 4), jnp.float32)}
    tx = CASES[name](gradtx)
    jaxpr = str(jax.make_jaxpr(lambda g, s: tx.update(g, s, params))(params, tx.init(params)))
    for primitive in ("real", "imag", "conj", "complex"):
        assert f" {primitive}[" not in jaxpr and f"= {primitive} " not in jaxpr


def test_methods_without_complex_support_say_so():
    params = {"z": jnp.zeros(3, jnp.complex64)}
    for tx in (gradtx.sm3(0.1), gradtx.scale_by_nadam(), gradtx.adadelta()):
        with pytest.raises(TypeError, match=r"\['z'\].*complex"):
            tx.init(params)
