"""The lectures' 30-layer ReLU network at width 256: He init keeps the scale, small init vanishes,
zero (or any constant) init never breaks the symmetry between hidden units."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import nn

DEPTH, WIDTH, BATCH = 30, 256, 64
LAYER = nn.dense(WIDTH, WIDTH)
HEAD = nn.dense(WIDTH, 1)
RNG = np.random.default_rng(0)


def scan_hidden_layers(hidden_params, x):
    """Post-ReLU activations of every hidden layer, stacked: (DEPTH, BATCH, WIDTH)."""

    def layer(h, params):
        z, _ = LAYER.apply(params, nn.EmptyState(), h, train=True)
        h = nn.relu(z)
        return h, h

    _, hs = lax.scan(layer, x, hidden_params)
    return hs


hidden_activations = jax.jit(scan_hidden_layers)


def stacked_hidden_params(kernel_init, networks=None):
    """DEPTH (WIDTH, WIDTH) kernels (for each of ``networks`` networks) and zero biases.

    All kernels are drawn at once; ``batch_axis=0`` keeps each layer's fans at (256, 256).
    """
    leading = (DEPTH,) if networks is None else (networks, DEPTH)
    kernels = kernel_init(jax.random.key(0), (math.prod(leading), WIDTH, WIDTH), jnp.float32)
    return {"kernel": kernels.reshape(leading + (WIDTH, WIDTH)), "bias": jnp.zeros(leading + (WIDTH,), jnp.float32)}


NETWORKS = 8
many_networks_activations = jax.jit(jax.vmap(scan_hidden_layers, in_axes=(0, None)))


def layer_variances(kernel_init):
    """Activation variance of each layer: geometric mean over NETWORKS independently initialised networks."""
    x = RNG.normal(size=(BATCH, WIDTH)).astype(np.float32)
    hs = np.asarray(many_networks_activations(stacked_hidden_params(kernel_init, NETWORKS), x), np.float64)
    return np.exp(np.log(hs.var(axis=(2, 3))).mean(axis=0))


def test_he_init_keeps_activation_variance_within_a_factor_2_over_30_layers():
    # He init makes every layer's expected gain exactly 1. A single finite-width network's scale still
    # drifts as a random walk in log scale (at width 256 its variance after 30 layers is off by a
    # factor 0.3 to 2.3 depending on the seed), so the claim is checked on the geometric mean over
    # 8 networks, the average of that walk.
    variances = layer_variances(nn.he_normal(batch_axis=0))
    ratios = variances / variances[0]
    assert np.all((ratios > 0.5) & (ratios < 2.0)), ratios


def test_small_normal_init_makes_activations_vanish():
    variances = layer_variances(nn.normal(0.01))
    # Each layer multiplies the second moment by fan_in * 0.01^2 / 2 = 0.0128.
    np.testing.assert_allclose(variances[1] / variances[0], 0.0128, rtol=0.1)
    assert np.all(np.diff(variances) <= 0)
    assert variances[-1] < 1e-30 * variances[0]


def mse_loss(params, x, y):
    h = scan_hidden_layers(params["hidden"], x)[-1]
    prediction, _ = HEAD.apply(params["head"], nn.EmptyState(), h, train=True)
    return jnp.mean((prediction - y) ** 2)


@jax.jit
def gradient_descent(params, x, y):
    def step(params, _):
        grads = jax.grad(mse_loss)(params, x, y)
        return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads), None

    params, _ = lax.scan(step, params, None, length=3)
    return params


def assert_hidden_units_identical(params, x):
    # Within every layer, every unit's activation equals unit 0's for every example, and every
    # kernel column equals column 0 (to rounding: a matmul may sum columns in different orders).
    hs = np.asarray(hidden_activations(params["hidden"], x))
    np.testing.assert_allclose(hs, np.broadcast_to(hs[..., :1], hs.shape), rtol=1e-5, atol=1e-30)
    kernels = np.asarray(params["hidden"]["kernel"])
    np.testing.assert_allclose(kernels, np.broadcast_to(kernels[..., :1], kernels.shape), rtol=1e-5, atol=1e-30)


def test_constant_init_keeps_hidden_units_identical_after_training():
    x = RNG.normal(size=(16, WIDTH)).astype(np.float32)
    y = RNG.normal(size=(16, 1)).astype(np.float32)
    for name, kernel_init in [("zeros", nn.zeros), ("constant", nn.constant(1.0 / WIDTH))]:
        hidden = stacked_hidden_params(kernel_init)
        # The head is constant too: a random head would hand each last hidden unit its own gradient.
        head = nn.dense(WIDTH, 1, kernel_init=kernel_init).init(jax.random.key(1))[0]
        params = {"hidden": hidden, "head": head}
        trained = gradient_descent(params, x, y)
        assert_hidden_units_identical(trained, x)
        if name == "constant":
            # The units are active and the kernels did move: the symmetry persists through real updates.
            assert np.asarray(hidden_activations(trained["hidden"], x))[-1].max() > 0
            assert not np.allclose(trained["hidden"]["kernel"], hidden["kernel"])
        else:
            # All-zero: the ReLUs output 0 and pass no gradient back; only the head's bias learns.
            np.testing.assert_array_equal(trained["hidden"]["kernel"], 0.0)
            assert trained["head"]["bias"][0] != 0.0
