"""Noisy SGD, scale_by_stddev, optimistic gradient descent and scale_gradient against Optax (150 float64 steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from contract_checks import (
    check_dtypes_kept,
    check_jit_equals_eager,
    check_schedules,
    check_signature_matches_optax,
    check_vmap_equals_loop,
)
from softmax_problem import grad, initial_params, max_relative_error, run_gradtx

import gradtx

STEPS = 150
TOLERANCE = 1e-8
schedule = lambda t: 0.2 * 0.99**t

OPTAX_CASES = {
    # Same key, same draws: the noise is Optax's number for number.
    "noisy_sgd_int_seed": (lambda: gradtx.noisy_sgd(0.1, key=3), lambda: optax.noisy_sgd(0.1, key=3)),
    "noisy_sgd_typed_key_schedule": (
        lambda: gradtx.noisy_sgd(schedule, eta=0.1, gamma=0.3, key=jax.random.key(5)),
        lambda: optax.noisy_sgd(schedule, eta=0.1, gamma=0.3, key=jax.random.key(5)),
    ),
    "add_noise_then_adam": (
        lambda: gradtx.chain(gradtx.add_noise(0.05, 0.55, key=jax.random.key(1)), gradtx.adam(0.01)),
        lambda: optax.chain(optax.add_noise(0.05, 0.55, key=jax.random.key(1)), optax.adam(0.01)),
    ),
    "optimistic_gradient_descent": (
        lambda: gradtx.optimistic_gradient_descent(0.2), lambda: optax.optimistic_gradient_descent(0.2)
    ),
    "optimistic_gradient_descent_options": (
        lambda: gradtx.optimistic_gradient_descent(schedule, alpha=0.7, beta=0.4),
        lambda: optax.optimistic_gradient_descent(schedule, alpha=0.7, beta=0.4),
    ),
    "scale_by_stddev": (
        lambda: gradtx.chain(gradtx.scale_by_stddev(), gradtx.sgd(0.01)),
        lambda: optax.chain(optax.scale_by_stddev(), optax.sgd(0.01)),
    ),
    "scale_by_stddev_options": (
        lambda: gradtx.chain(
            gradtx.scale_by_stddev(0.95, 1e-6, initial_scale=0.1, eps_in_sqrt=False, bias_correction=True),
            gradtx.sgd(0.01),
        ),
        lambda: optax.chain(
            optax.scale_by_stddev(0.95, 1e-6, initial_scale=0.1, eps_in_sqrt=False, bias_correction=True),
            optax.sgd(0.01),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX_CASES))
def test_matches_optax(name):
    make_gradtx, make_optax = OPTAX_CASES[name]
    ours, theirs = run_gradtx(make_gradtx(), STEPS), run_gradtx(make_optax(), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    assert max_relative_error([ours[-1]], [initial_params()]) > 0.5


def test_raw_prngkey_gives_the_typed_keys_draws():
    raw = run_gradtx(gradtx.noisy_sgd(0.1, key=jax.random.PRNGKey(7)), 5)
    typed = run_gradtx(gradtx.noisy_sgd(0.1, key=jax.random.key(7)), 5)
    assert max_relative_error(raw, typed) == 0.0
    other = run_gradtx(gradtx.noisy_sgd(0.1, key=8), 5)
    assert max_relative_error(other, typed) > 1e-4


def test_noise_has_the_annealed_variance():
    # sigma_t^2 = eta / t^gamma, t = 1, 2, ...: the sample variance of 40,000 draws is within 3%.
    eta, gamma = 0.5, 0.55
    transform = gradtx.add_noise(eta, gamma, key=0)
    zeros = {"a": jnp.zeros((200, 100)), "b": jnp.zeros(20000)}
    state = transform.init(zeros)
    update = jax.jit(transform.update)
    for t in (1, 2, 3, 4):
        noise, state = update(zeros, state)
        draws = np.concatenate([np.ravel(x) for x in jax.tree.leaves(noise)])
        assert abs(draws.mean()) < 4 * np.sqrt(eta / t**gamma / draws.size)
        assert abs(draws.var() / (eta / t**gamma) - 1) < 0.03
    assert int(state.count) == 4 and state._fields == optax.AddNoiseState._fields


def test_optimistic_gradient_descent_is_the_formula():
    # Mokhtari et al. 2020: w_t = w_{t-1} - eta (2 g_t - g_{t-1}), with g_0 = g_1 (so the first step is plain GD).
    lr = 0.2
    params, previous = initial_params(), None
    expected = []
    for _ in range(STEPS):
        g = grad(params)
        previous = g if previous is None else previous
        params = jax.tree.map(lambda w, g, h: w - lr * (2 * g - h), params, g, previous)
        previous = g
        expected.append(params)
    assert max_relative_error(run_gradtx(gradtx.optimistic_gradient_descent(lr), STEPS), expected) < TOLERANCE


@pytest.mark.parametrize("scale", [-1.0, 0.5, 0.0, 1.0])
def test_scale_gradient_matches_optax(scale):
    f = lambda transform: lambda x: jnp.sum(jnp.sin(transform({"x": x}, scale)["x"]) ** 2)
    x = jnp.linspace(-1.0, 2.0, 7)
    assert jnp.array_equal(gradtx.scale_gradient({"x": x}, scale)["x"], x)
    ours, theirs = jax.grad(f(gradtx.scale_gradient))(x), jax.grad(f(optax.scale_gradient))(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours, scale * jax.grad(lambda x: jnp.sum(jnp.sin(x) ** 2))(x), rtol=1e-12, atol=0)


def test_scale_gradient_takes_a_traced_scale():
    f = lambda x, s: jnp.sum(gradtx.scale_gradient(x, s) ** 2)
    x = jnp.arange(3.0)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x, jnp.asarray(-0.5)), -0.5 * 2 * x)


CONTRACT = {
    "noisy_sgd": lambda: gradtx.noisy_sgd(0.01, key=1),
    "optimistic_gradient_descent": lambda: gradtx.optimistic_gradient_descent(0.01, alpha=0.5),
    # Not bias_correction=True here: its first step divides by sqrt(g^2 - g^2 + eps), which amplifies
    # the last bit that jit and eager round differently (Optax's too); the reference test covers it in float64.
    "scale_by_stddev": lambda: gradtx.chain(gradtx.scale_by_stddev(), gradtx.sgd(1e-3)),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract(name):
    check_jit_equals_eager(CONTRACT[name])
    check_dtypes_kept(CONTRACT[name], jnp.float32)
    check_dtypes_kept(CONTRACT[name], jnp.bfloat16)
    check_vmap_equals_loop(CONTRACT[name])


@pytest.mark.parametrize(
    "make, floats",
    [
        (lambda **kw: gradtx.noisy_sgd(**kw, key=0), {"learning_rate": 0.1}),
        (gradtx.optimistic_gradient_descent, {"learning_rate": 0.1}),
        (lambda **kw: gradtx.chain(gradtx.scale_by_stddev(**kw), gradtx.sgd(0.01)), {"decay": 0.9}),
    ],
)
def test_hyperparameters_take_schedules(make, floats):
    check_schedules(make, floats)


@pytest.mark.parametrize(
    "make, error, argument",
    [
        (lambda: gradtx.noisy_sgd(-0.1), ValueError, "learning_rate"),
        (lambda: gradtx.noisy_sgd(0.1, eta=-0.1), ValueError, "eta"),
        (lambda: gradtx.add_noise(0.1, -1.0), ValueError, "gamma"),
        (lambda: gradtx.add_noise(0.1, 0.5, key="seed"), TypeError, "key"),
        (lambda: gradtx.optimistic_gradient_descent(-0.1), ValueError, "learning_rate"),
        (lambda: gradtx.optimistic_gradient_descent(0.1, alpha=-1.0), ValueError, "alpha"),
        (lambda: gradtx.optimistic_gradient_descent(0.1, beta=lambda t: 1.0), TypeError, "beta"),
        (lambda: gradtx.scale_by_stddev(decay=1.0), ValueError, "decay"),
        (lambda: gradtx.scale_by_stddev(eps=0.0), ValueError, "eps"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, error, argument):
    with pytest.raises(error, match=argument):
        make()


@pytest.mark.parametrize(
    "name",
    ["noisy_sgd", "add_noise", "scale_by_stddev", "optimistic_gradient_descent", "scale_by_optimistic_gradient",
     "scale_gradient"],
)
def test_arguments_are_optaxs(name):
    # Optax's deprecated ``seed`` (use ``key``) is left out.
    check_signature_matches_optax(name, ignore=("seed",))
