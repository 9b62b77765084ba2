"""gradtx.nn.activations: values as jax.nn / torch, derivatives as the lectures' closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gradtx import nn

# float64 grid avoiding the kinks at 0.
S = np.concatenate([np.linspace(-6.0, -0.05, 40), np.linspace(0.05, 6.0, 40)])


def elementwise_grad(f):
    return jax.jit(jax.vmap(jax.grad(f)))


def test_sigmoid_derivative_is_a_times_one_minus_a():
    a = np.asarray(nn.sigmoid(S))
    np.testing.assert_allclose(a, 1 / (1 + np.exp(-S)), rtol=1e-14)
    np.testing.assert_allclose(elementwise_grad(nn.sigmoid)(S), a * (1 - a), rtol=1e-12)
    assert np.max(a * (1 - a)) <= 0.25


def test_tanh_derivative_is_one_minus_a_squared():
    a = np.asarray(nn.tanh(S))
    np.testing.assert_allclose(a, np.tanh(S), rtol=1e-14)
    np.testing.assert_allclose(elementwise_grad(nn.tanh)(S), 1 - a**2, rtol=1e-12, atol=1e-15)


def test_relu_and_its_derivative():
    np.testing.assert_array_equal(nn.relu(S), np.maximum(S, 0))
    np.testing.assert_array_equal(elementwise_grad(nn.relu)(S), (S > 0).astype(float))
    assert jax.grad(nn.relu)(0.0) == 0.0


def test_leaky_relu_and_its_derivative():
    np.testing.assert_allclose(nn.leaky_relu(S), np.where(S >= 0, S, 0.01 * S), rtol=1e-15)
    grad = elementwise_grad(lambda s: nn.leaky_relu(s, 0.2))(S)
    np.testing.assert_allclose(grad, np.where(S > 0, 1.0, 0.2), rtol=1e-15)
    np.testing.assert_allclose(
        nn.leaky_relu(S), torch.nn.functional.leaky_relu(torch.from_numpy(S)).numpy(), rtol=1e-15
    )


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_derivative_is_a_plus_alpha_for_negative_inputs(alpha):
    a = np.asarray(nn.elu(S, alpha))
    np.testing.assert_allclose(a, np.where(S > 0, S, alpha * (np.exp(S) - 1)), rtol=1e-13)
    grad = elementwise_grad(lambda s: nn.elu(s, alpha))(S)
    np.testing.assert_allclose(grad, np.where(S > 0, 1.0, a + alpha), rtol=1e-12)
    np.testing.assert_allclose(a, torch.nn.functional.elu(torch.from_numpy(S), alpha).numpy(), rtol=1e-13, atol=1e-15)


def test_softmax_jacobian_is_diag_a_minus_a_a_transpose():
    s = np.random.default_rng(0).normal(size=7) * 3
    a = np.asarray(nn.softmax(s))
    np.testing.assert_allclose(a, np.exp(s) / np.exp(s).sum(), rtol=1e-13)
    np.testing.assert_allclose(jax.jit(jax.jacobian(nn.softmax))(s), np.diag(a) - np.outer(a, a), atol=1e-15)
    # Large logits do not overflow.
    np.testing.assert_allclose(nn.softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])


def test_softmax_axis():
    s = np.random.default_rng(1).normal(size=(3, 4))
    np.testing.assert_allclose(np.asarray(nn.softmax(s, axis=0)).sum(axis=0), np.ones(4), rtol=1e-14)
    np.testing.assert_allclose(nn.softmax(s, axis=0), torch.softmax(torch.from_numpy(s), 0).numpy(), rtol=1e-13)


def test_maxout_values():
    s = np.random.default_rng(2).normal(size=(5, 12))
    a = np.asarray(nn.maxout(s, num_pieces=3))
    assert a.shape == (5, 4)
    for j in range(4):
        np.testing.assert_array_equal(a[:, j], s[:, 3 * j : 3 * j + 3].max(axis=1))
    # Along another axis.
    a0 = np.asarray(nn.maxout(s.T, num_pieces=3, axis=0))
    np.testing.assert_array_equal(a0, a.T)
    # With one piece it is the identity; with two pieces, one of them zero, it is ReLU.
    np.testing.assert_array_equal(nn.maxout(s, 1), s)
    paired = np.stack([s, np.zeros_like(s)], axis=-1).reshape(5, 24)
    np.testing.assert_array_equal(nn.maxout(paired, 2), np.maximum(s, 0))


def test_maxout_derivative_is_one_hot_at_the_argmax():
    s = np.random.default_rng(3).normal(size=12)
    weights = np.arange(1.0, 5.0)
    grad = np.asarray(jax.grad(lambda v: jnp.dot(nn.maxout(v, 3), weights))(s))
    expected = np.zeros(12)
    for j in range(4):
        expected[3 * j + np.argmax(s[3 * j : 3 * j + 3])] = weights[j]
    np.testing.assert_array_equal(grad, expected)


def test_maxout_errors():
    with pytest.raises(ValueError, match="multiple of num_pieces=5"):
        nn.maxout(np.zeros((2, 12)), 5)
    with pytest.raises(ValueError, match="num_pieces"):
        nn.maxout(np.zeros((2, 12)), 0)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (nn.sigmoid, jax.nn.sigmoid),
        (nn.relu, jax.nn.relu),
        (nn.leaky_relu, jax.nn.leaky_relu),
        (nn.elu, jax.nn.elu),
        (nn.softmax, jax.nn.softmax),
    ],
)
def test_same_as_jax_nn(ours, theirs):
    np.testing.assert_array_equal(ours(S), theirs(S))
