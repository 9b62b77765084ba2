"""gradtx.nn.initializers: same arrays as jax.nn.initializers, fans as torch, moments as the closed form."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

from gradtx import nn

J = jax.nn.initializers
KEY = jax.random.key(42)

# (gradtx initializer, jax.nn.initializers initializer) pairs that must agree bit for bit.
SAME_AS_JAX = {
    "zeros": (nn.zeros, J.zeros),
    "ones": (nn.ones, J.ones),
    "constant": (nn.constant(-0.3), J.constant(-0.3)),
    "normal": (nn.normal(0.05), J.normal(0.05)),
    "uniform": (nn.uniform(0.2), J.uniform(0.2)),
    "truncated_normal": (
        nn.truncated_normal(0.1, lower=-1.5, upper=2.5),
        J.truncated_normal(0.1, lower=-1.5, upper=2.5),
    ),
    "glorot_uniform": (nn.glorot_uniform(), J.glorot_uniform()),
    "glorot_normal": (nn.glorot_normal(), J.glorot_normal()),
    "he_uniform": (nn.he_uniform(), J.he_uniform()),
    "he_normal": (nn.he_normal(), J.he_normal()),
    "lecun_uniform": (nn.lecun_uniform(), J.lecun_uniform()),
    "lecun_normal": (nn.lecun_normal(), J.lecun_normal()),
    "he_normal_torch_layout": (nn.he_normal(in_axis=1, out_axis=0), J.he_normal(in_axis=1, out_axis=0)),
    "glorot_uniform_batched": (nn.glorot_uniform(batch_axis=0), J.glorot_uniform(batch_axis=0)),
}


# JAX's generator compiles slowly for arrays of rank > 2 on CPU (seconds each), so the reference
# arrays use a dense (16, 8) kernel, and the uniform fan-dependent initializers also one small conv1d
# kernel (2, 3, 4) (receptive field 2). All samplers derive from the same flat stream of random bits,
# so one sampler at rank 3 checks gradtx's flat draw (see ``_flat_draw``).
FAN_DEPENDENT = ["glorot_uniform", "he_uniform", "lecun_uniform"]


@pytest.mark.parametrize(
    "name, shape", [(name, (16, 8)) for name in sorted(SAME_AS_JAX)] + [(name, (2, 3, 4)) for name in FAN_DEPENDENT]
)
def test_same_key_gives_same_array_as_jax(name, shape):
    ours, theirs = SAME_AS_JAX[name]
    a = ours(KEY, shape, jnp.float32)
    b = theirs(KEY, shape, jnp.float32)
    assert a.dtype == jnp.float32 and a.shape == shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("column_axis", [-1, 0])
def test_orthogonal_same_as_jax(column_axis):
    a = nn.orthogonal(1.5, column_axis)(KEY, (16, 8), jnp.float32)
    b = J.orthogonal(1.5, column_axis)(KEY, (16, 8), jnp.float32)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
def test_variance_scaling_same_as_jax(mode, distribution):
    shape = (16, 8)
    kwargs = dict(in_axis=1, out_axis=0)  # the transposed (torch) layout
    a = nn.variance_scaling(0.7, mode, distribution, **kwargs)(KEY, shape, jnp.float32)
    b = J.variance_scaling(0.7, mode, distribution, **kwargs)(KEY, shape, jnp.float32)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_delta_orthogonal_same_as_jax():
    a = nn.delta_orthogonal(1.3)(KEY, (3, 5, 8, 16), jnp.float32)
    b = J.delta_orthogonal(1.3)(KEY, (3, 5, 8, 16), jnp.float32)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_default_dtype_is_float32_even_with_x64():
    assert jax.config.jax_enable_x64
    for init in [nn.zeros, nn.ones, nn.normal(), nn.he_normal(), nn.orthogonal()]:
        assert init(KEY, (16, 8)).dtype == jnp.float32


# ------------------------------------------------------------------------------------------------
# Fans


@pytest.mark.parametrize(
    "shape, kwargs, expected",
    [
        ((30, 20), {}, (30, 20)),  # dense (in, out)
        ((5, 16, 32), {}, (5 * 16, 5 * 32)),  # conv1d (W, I, O)
        ((3, 3, 16, 32), {}, (9 * 16, 9 * 32)),  # conv2d HWIO
        ((2, 3, 4, 16, 32), {}, (24 * 16, 24 * 32)),  # conv3d DHWIO
        ((32, 16, 3, 3), dict(in_axis=1, out_axis=0), (9 * 16, 9 * 32)),  # torch OIHW
        ((8, 30, 20), dict(batch_axis=0), (30, 20)),  # a stack of 8 dense kernels
        ((4, 5, 6), dict(in_axis=(0, 1), out_axis=2), (20, 6)),
    ],
)
def test_compute_fans(shape, kwargs, expected):
    assert nn.compute_fans(shape, **kwargs) == expected


@pytest.mark.parametrize("torch_shape", [(20, 30), (32, 16, 5), (32, 16, 3, 3), (8, 4, 2, 3, 3)])
def test_fans_of_torch_layout_match_torch(torch_shape):
    # torch kernels are (out, in, *spatial).
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape))
    assert nn.compute_fans(torch_shape, in_axis=1, out_axis=0) == expected
    # The same kernel in JAX layout (*spatial, in, out) has the same fans with the defaults.
    jax_shape = torch_shape[2:] + (torch_shape[1], torch_shape[0])
    assert nn.compute_fans(jax_shape) == expected


def test_compute_fans_rejects_vectors():
    with pytest.raises(ValueError, match="rank >= 2"):
        nn.compute_fans((5,))
    with pytest.raises(ValueError, match="rank >= 2"):
        nn.he_normal()(KEY, (5,))


# ------------------------------------------------------------------------------------------------
# Moments on large shapes


# Both have 2^19 entries, so every test draws from the same few compiled samplers.
DENSE = (512, 1024)  # fan_in 512, fan_out 1024
CONV = (4, 4, 128, 256)  # fan_in 16 * 128 = 2048, fan_out 16 * 256 = 4096


@pytest.mark.parametrize(
    "init, shape, variance",
    [
        (nn.he_normal(), DENSE, 2 / 512),
        (nn.he_uniform(), DENSE, 2 / 512),
        (nn.glorot_normal(), DENSE, 2 / (512 + 1024)),
        (nn.glorot_uniform(), DENSE, 2 / (512 + 1024)),
        (nn.lecun_normal(), DENSE, 1 / 512),
        (nn.lecun_uniform(), DENSE, 1 / 512),
        (nn.he_normal(), CONV, 2 / 2048),
        (nn.glorot_uniform(), CONV, 2 / (2048 + 4096)),
        (nn.variance_scaling(3.0, "fan_out", "normal"), CONV, 3 / 4096),
        (nn.variance_scaling(1.0, "fan_geo_avg", "truncated_normal"), DENSE, 1 / math.sqrt(512 * 1024)),
        (nn.normal(0.3), DENSE, 0.09),
    ],
)
def test_zero_mean_and_closed_form_variance(init, shape, variance):
    w = np.asarray(init(KEY, shape, jnp.float64))
    n = w.size
    # Sampling error of the mean is sqrt(variance / n); of the variance about variance * sqrt(2 / n).
    assert abs(w.mean()) < 5 * math.sqrt(variance / n)
    np.testing.assert_allclose(w.var(), variance, rtol=6 * math.sqrt(2 / n))


@pytest.mark.parametrize(
    "init, bound",
    [
        (nn.glorot_uniform(), math.sqrt(6 / (512 + 1024))),
        (nn.he_uniform(), math.sqrt(6 / 512)),
        (nn.lecun_uniform(), math.sqrt(3 / 512)),
    ],
)
def test_uniform_bounds(init, bound):
    w = np.asarray(init(KEY, DENSE, jnp.float64))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound
    np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.01)


def test_truncated_normals():
    sigma = math.sqrt(2 / 512)
    w = np.asarray(nn.he_normal()(KEY, DENSE, jnp.float64))
    # Truncated at two *untruncated* standard deviations, sigma / 0.8796.
    assert np.abs(w).max() <= 2 * sigma / 0.87962566103423978
    w = np.asarray(nn.truncated_normal(0.5)(KEY, DENSE, jnp.float64))
    assert np.abs(w).max() <= 1.0
    np.testing.assert_allclose(w.std(), 0.5 * 0.87962566103423978, rtol=0.01)
    w = np.asarray(nn.truncated_normal(1.0, lower=0.0, upper=1.0)(KEY, DENSE, jnp.float64))
    assert w.min() >= 0 and w.max() <= 1


def test_uniform_is_one_sided_like_jax():
    w = np.asarray(nn.uniform(0.5)(KEY, DENSE, jnp.float64))
    assert 0 <= w.min() and w.max() < 0.5
    np.testing.assert_allclose(w.mean(), 0.25, rtol=0.01)


def test_glorot_uniform_moments_match_torch_xavier_uniform():
    torch.manual_seed(0)
    t = torch.nn.init.xavier_uniform_(torch.empty(256, 128, 4, 4, dtype=torch.float64)).numpy()
    ours = np.asarray(nn.glorot_uniform(in_axis=1, out_axis=0)(KEY, t.shape, jnp.float64))
    assert np.abs(ours).max() <= math.sqrt(6 / (16 * 128 + 16 * 256))
    assert np.abs(t).max() <= math.sqrt(6 / (16 * 128 + 16 * 256))
    np.testing.assert_allclose(ours.var(), t.var(), rtol=0.03)


# ------------------------------------------------------------------------------------------------
# Constants, orthogonal, delta orthogonal


def test_constant_initializers():
    np.testing.assert_array_equal(nn.zeros(None, (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(nn.ones(None, (2, 3), jnp.float64), np.ones((2, 3)))
    np.testing.assert_array_equal(nn.constant(0.01)(None, (4,)), np.full(4, 0.01, np.float32))
    np.testing.assert_array_equal(nn.constant(jnp.arange(3.0))(None, (2, 3)), np.tile(np.arange(3.0), (2, 1)))


@pytest.mark.parametrize(
    "shape, column_axis",
    # All are a 16 x 8 matrix or its transpose once reshaped, so they share one compiled QR.
    [((16, 8), -1), ((8, 16), -1), ((2, 2, 4, 8), -1), ((8, 2, 2, 4), 0), ((16, 8), 0)],
)
def test_orthogonal(shape, column_axis):
    scale = 1.7
    w = np.asarray(nn.orthogonal(scale, column_axis)(KEY, shape, jnp.float32), np.float64)
    matrix = np.moveaxis(w, column_axis, -1).reshape(-1, shape[column_axis])
    rows, cols = matrix.shape
    gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
    np.testing.assert_allclose(gram, scale**2 * np.eye(min(rows, cols)), atol=1e-5)
    # An orthonormal map preserves norms: a deep stack of them neither explodes nor vanishes.
    if rows <= cols:
        x = np.random.default_rng(0).normal(size=(3, rows))
        np.testing.assert_allclose(np.linalg.norm(x @ matrix, axis=1), scale * np.linalg.norm(x, axis=1), rtol=1e-5)


def test_orthogonal_rejects_vectors():
    with pytest.raises(ValueError, match="rank >= 2"):
        nn.orthogonal()(KEY, (5,))


def test_delta_orthogonal_structure_and_norm_preservation():
    shape = (3, 5, 8, 16)
    w = np.asarray(nn.delta_orthogonal(1.0)(KEY, shape, jnp.float32), np.float64)
    centre = w[1, 2]
    np.testing.assert_allclose(centre @ centre.T, np.eye(8), atol=1e-5)
    w_off_centre = w.copy()
    w_off_centre[1, 2] = 0
    assert not w_off_centre.any()
    # A SAME-padded convolution with it maps each pixel's channels orthogonally: norms preserved.
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 8))
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_delta_orthogonal_errors():
    with pytest.raises(ValueError, match="rank 3, 4 or 5"):
        nn.delta_orthogonal()(KEY, (4, 4))
    with pytest.raises(ValueError, match="in features <= out features"):
        nn.delta_orthogonal()(KEY, (3, 3, 8, 4))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        nn.variance_scaling(1.0, "fan_sum", "normal")
    with pytest.raises(ValueError, match="distribution"):
        nn.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(ValueError, match="real floating dtype"):
        nn.he_normal()(KEY, (16, 8), jnp.complex64)


def test_initializers_work_under_jit():
    init = jax.jit(nn.he_normal(), static_argnums=(1, 2))
    np.testing.assert_array_equal(init(KEY, (16, 8), jnp.float32), nn.he_normal()(KEY, (16, 8), jnp.float32))
