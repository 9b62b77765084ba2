"""gradtx.perturbations against Optax (same keys, same numbers) and against closed forms, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import perturbations

OP = optax.perturbations


def argmax_one_hot(tree):
    """A piecewise-constant function of a tree: zero gradient almost everywhere."""
    return {
        "hot": jax.nn.one_hot(jnp.argmax(tree["scores"]), tree["scores"].shape[0]),
        "relu_sum": jnp.sum(jnp.maximum(tree["w"], 0.0)),
    }


X = {"scores": jnp.array([0.3, -0.2, 0.1, 0.25]), "w": jnp.array([[1.0, -2.0], [0.05, -0.01]])}


@pytest.mark.parametrize("noise", ["Gumbel", "Normal"])
@pytest.mark.parametrize("use_baseline", [True, False])
def test_values_and_jacobians_equal_optax(noise, use_baseline):
    key, sigma = jax.random.key(11), 0.3
    ours = perturbations.make_perturbed_fun(argmax_one_hot, 300, sigma, getattr(perturbations, noise)(), use_baseline)
    theirs = OP.make_perturbed_fun(argmax_one_hot, 300, sigma, getattr(OP, noise)(), use_baseline)
    for a, b in zip(jax.tree.leaves(jax.jit(ours)(key, X)), jax.tree.leaves(jax.jit(theirs)(key, X))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    jac, optax_jac = jax.jit(jax.jacobian(ours, argnums=1))(key, X), jax.jit(jax.jacobian(theirs, argnums=1))(key, X)
    for a, b in zip(jax.tree.leaves(jac), jax.tree.leaves(optax_jac)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        assert np.any(a != 0)


def test_default_noise_is_gumbel_and_samples_are_optax_s():
    key = jax.random.key(0)
    for ours, theirs in [(perturbations.Gumbel(), OP.Gumbel()), (perturbations.Normal(), OP.Normal())]:
        np.testing.assert_array_equal(ours.sample(key, (3, 2)), theirs.sample(key, (3, 2)))
        z = jnp.linspace(-2.0, 3.0, 7)
        np.testing.assert_allclose(ours.log_prob(z), theirs.log_prob(z), rtol=1e-15)
    f = lambda x: jnp.sum(jnp.maximum(x, 0.0))
    x = jnp.zeros(3)
    np.testing.assert_allclose(
        jax.grad(perturbations.make_perturbed_fun(f), argnums=1)(key, x),
        jax.grad(OP.make_perturbed_fun(f), argnums=1)(key, x),
        rtol=1e-10,
    )


def test_estimates_converge_to_the_smoothed_function():
    # With Gaussian noise, relu smoothed is E max(x + s z, 0) = x Phi(x/s) + s phi(x/s), whose
    # derivative is Phi(x/s): the estimator must approach both with many samples.
    sigma, x = 0.5, jnp.array([-0.4, 0.0, 0.3])
    f = lambda v: jnp.maximum(v, 0.0)
    fn = perturbations.make_perturbed_fun(f, 100_000, sigma, perturbations.Normal())
    t = x / sigma
    exact = x * jax.scipy.stats.norm.cdf(t) + sigma * jax.scipy.stats.norm.pdf(t)
    np.testing.assert_allclose(fn(jax.random.key(1), x), exact, atol=1e-2)
    jac = jax.jacobian(fn, argnums=1)(jax.random.key(2), x)
    np.testing.assert_allclose(jnp.diag(jac), jax.scipy.stats.norm.cdf(t), atol=4e-2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_samples"):
        perturbations.make_perturbed_fun(jnp.sum, num_samples=0)
    with pytest.raises(TypeError, match="noise"):
        perturbations.make_perturbed_fun(jnp.sum, noise=object())


@pytest.mark.parametrize(
    "loc_shape, scale_shape", [((), ()), ((5,), (5,)), ((1, 4), (3, 4)), ((1, 2, 1, 3), (2, 1, 4, 3))]
)
def test_multi_normal_equals_optax(loc_shape, scale_shape):
    rng = np.random.default_rng(0)
    loc, log_scale = rng.normal(size=loc_shape), 0.3 * rng.normal(size=scale_shape)
    ours, theirs = gradtx.multi_normal(loc, log_scale), optax.multi_normal(loc, log_scale)
    assert ours.param_shape == theirs._param_shape
    key = jax.random.key(5)
    for shape in [(), [4]]:
        np.testing.assert_array_equal(ours.sample(shape, key), theirs.sample(shape, key))
    x = ours.sample((6,), key)
    np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-13)
    assert ours.log_prob(x).shape == (6,)
    for a, b in zip(ours.params, theirs.params):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours.log_scale, theirs.log_scale)


def test_multi_normal_log_prob_is_the_gaussian_density():
    loc, log_scale, x = jnp.array([0.5, -1.0]), jnp.array([0.0, np.log(2.0)]), jnp.array([1.0, 1.0])
    expected = sum(-((x[i] - loc[i]) ** 2) / (2 * np.exp(log_scale[i]) ** 2) - log_scale[i] for i in range(2))
    log_prob = gradtx.multi_normal(loc, log_scale).log_prob(x)
    np.testing.assert_allclose(log_prob, expected - np.log(2 * np.pi), rtol=1e-14)
    with pytest.raises(ValueError, match="Incompatible shapes for broadcasting"):
        gradtx.multi_normal(jnp.zeros((2, 3)), jnp.zeros((3, 2)))
