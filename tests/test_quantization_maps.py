"""The quantization maps and array quantizers against plain NumPy transcriptions of the papers.

* Dettmers (2016) / Dettmers et al. (2022): the dynamic map, block-wise absmax quantization; the
  8-bit maps are also compared value for value with ``bitsandbytes.functional.create_dynamic_map``
  and the block-wise quantizer with bitsandbytes' CPU kernels.
* Li, Chen, Zhu (2023): the 4-bit DE map, the linear map without zero, rank-1 normalization.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import quantization_maps as qm

# ---------------------------------------------------------------------------------------------
# NumPy transcriptions of the papers' definitions (float64 where the paper has real numbers).


def paper_dynamic_map(signed: bool, bits: int) -> np.ndarray:
    """Dettmers 2016, Fig. 1: sign, E zeros (the decade 10^-E), an indicator bit, F fraction bits.

    The fraction's value is the midpoint of one of 2^F equal bins of [0.1, 1]; without a sign
    bit there is one more fraction bit. Plus the values 0 and 1.
    """
    values = [0.0, 1.0]
    exponent_bits = bits - 1
    for zeros in range(exponent_bits):
        fraction_bits = exponent_bits - 1 - zeros + (0 if signed else 1)
        bins = 2**fraction_bits
        for k in range(bins):
            value = 10.0**-zeros * (0.1 + 0.9 * (k + 0.5) / bins)
            values += [value, -value] if signed else [value]
    return np.sort(np.asarray(values))


def paper_nearest(normalized: np.ndarray, qmap: np.ndarray) -> np.ndarray:
    """``argmin_j |n - q_j|`` (first, i.e. smaller, value on ties), in float64."""
    distance = np.abs(normalized.astype(np.float64)[:, None] - qmap.astype(np.float64)[None, :])
    return np.argmin(distance, axis=1)


def paper_blockwise(x: np.ndarray, qmap: np.ndarray, block_size: int):
    """Dettmers et al. 2022, Section 2: per block ``N = max |x|``, codes of ``x / N``, ``x ~= q[code] N``."""
    flat = x.reshape(-1).astype(np.float32)
    codes, scales, values = [], [], []
    for start in range(0, flat.size, block_size):
        block = flat[start : start + block_size]
        absmax = np.float32(np.max(np.abs(block)))
        normalized = block / absmax if absmax > 0 else np.zeros_like(block)
        block_codes = paper_nearest(normalized, qmap)
        codes.append(block_codes)
        scales.append(absmax)
        values.append(qmap[block_codes] * absmax)
    return np.concatenate(codes), np.asarray(scales, np.float32), np.concatenate(values).reshape(x.shape)


def paper_rank1(x: np.ndarray, qmap: np.ndarray):
    """Li, Chen, Zhu 2023, Section 4.2: scale ``min_k max_{other axes} |x|``, codes of ``x / scale``."""
    magnitude = np.abs(x.astype(np.float32))
    scale = None
    for axis in range(x.ndim):
        other = tuple(a for a in range(x.ndim) if a != axis)
        axis_max = np.max(magnitude, axis=other, keepdims=True)
        scale = axis_max if scale is None else np.minimum(scale, axis_max)
    scale = np.broadcast_to(scale, x.shape)
    normalized = np.where(scale > 0, x.astype(np.float32) / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    codes = paper_nearest(normalized.reshape(-1), qmap)
    return codes, (qmap[codes].reshape(x.shape) * scale).astype(np.float32)


def heavy_tailed(size: int, seed: int, signed: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size) * np.exp(rng.uniform(-6, 2, size))
    return (x if signed else np.abs(x)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Maps.


@pytest.mark.parametrize("signed", [True, False])
def test_8bit_dynamic_map_equals_bitsandbytes_value_for_value(signed):
    functional = pytest.importorskip("bitsandbytes.functional")
    expected = functional.create_dynamic_map(signed=signed).numpy()
    np.testing.assert_array_equal(qm.dynamic_map(signed, 8), expected)


@pytest.mark.parametrize("signed, bits", [(True, 8), (False, 8), (True, 4), (False, 4), (True, 6)])
def test_dynamic_map_is_the_papers_definition_rounded_to_float32(signed, bits):
    qmap = qm.dynamic_map(signed, bits)
    expected = paper_dynamic_map(signed, bits)
    assert qmap.dtype == np.float32 and qmap.shape == (2**bits,)
    assert np.all(np.diff(qmap) > 0)
    # bitsandbytes' float32 arithmetic (linspace, midpoint, product) is within 2 ulp of the real number.
    np.testing.assert_allclose(qmap, expected, rtol=2 * 2.0**-23, atol=0)


def test_4bit_maps_of_li_chen_zhu():
    # The "DE" first-moment map (4-bit signed dynamic exponent) and the "Linear" second-moment map.
    de = [-0.8875, -0.6625, -0.4375, -0.2125, -0.0775, -0.0325, -0.0055, 0.0,
          0.0055, 0.0325, 0.0775, 0.2125, 0.4375, 0.6625, 0.8875, 1.0]  # fmt: skip
    np.testing.assert_allclose(qm.dynamic_map(True, 4), de, rtol=1e-6)
    np.testing.assert_array_equal(qm.linear_map(4), (np.arange(16) + 1) / 16)
    assert qm.linear_map(4).min() > 0  # no zero: a second moment is never stored as 0


@pytest.mark.parametrize("bad", [0, 1, 9, 8.0, True])
def test_map_arguments_are_checked(bad):
    with pytest.raises(ValueError, match="bits"):
        qm.dynamic_map(True, bad)


# ---------------------------------------------------------------------------------------------
# Rounding.


@pytest.mark.parametrize(
    "qmap", [qm.dynamic_map(True, 8), qm.dynamic_map(False, 8), qm.dynamic_map(True, 4), qm.linear_map(4)]
)
def test_nearest_codes_are_exact_argmin_including_midpoints(qmap):
    rng = np.random.default_rng(0)
    midpoints = ((qmap[1:].astype(np.float64) + qmap[:-1]) / 2).astype(np.float32)
    x = np.concatenate(
        [rng.uniform(-1.05, 1.05, 20000), rng.standard_normal(2000) * 1e-5, midpoints, qmap, [0.0, -0.0]]
    )
    x = x.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(2)), np.nextafter(x, np.float32(-2))])
    codes = np.asarray(jax.jit(lambda v: qm.nearest_codes(v, qmap))(x))
    np.testing.assert_array_equal(codes, paper_nearest(x, qmap))


def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour():
    qmap = qm.dynamic_map(True, 8)
    x = np.asarray([0.3, -0.0421, 0.00123, 0.9999, 0.5], np.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    codes = np.asarray(jax.jit(jax.vmap(lambda k: qm.stochastic_codes(x, qmap, k)))(keys))
    values = qmap[codes]
    for j, value in enumerate(x):
        below, above = qmap[qmap <= value].max(), qmap[qmap >= value].min()
        assert set(np.unique(values[:, j])) <= {below, above}
        np.testing.assert_allclose(values[:, j].mean(), value, atol=4 * (above - below) / np.sqrt(len(keys)))


# ---------------------------------------------------------------------------------------------
# Array quantizers.


@pytest.mark.parametrize(
    "signed, bits, block_size, size",
    [(True, 8, 2048, 10000), (False, 8, 2048, 4096), (True, 8, 256, 1000), (True, 4, 128, 1001), (False, 4, 128, 300)],
)
def test_blockwise_round_trip_equals_numpy_transcription(signed, bits, block_size, size):
    qmap = qm.linear_map(4) if (bits == 4 and not signed) else qm.dynamic_map(signed, bits)
    x = heavy_tailed(size, seed=size, signed=signed)
    x[block_size : 2 * block_size] = 0.0  # an all-zero block (scale 0)
    codes, scales = jax.jit(lambda v: qm.quantize_blockwise(v, qmap, block_size))(x)
    restored = qm.dequantize_blockwise(codes, scales, qmap, block_size, x.shape, jnp.float32)
    expected_codes, expected_scales, expected_values = paper_blockwise(x, qmap, block_size)
    assert codes.dtype == jnp.uint8 and codes.shape == (size,)
    assert scales.shape == (-(-size // block_size),)
    np.testing.assert_array_equal(np.asarray(scales), expected_scales)
    np.testing.assert_array_equal(np.asarray(codes), expected_codes)
    np.testing.assert_array_equal(np.asarray(restored), expected_values)


@pytest.mark.parametrize("signed", [True, False])
def test_blockwise_8bit_against_bitsandbytes_kernels(signed):
    """Same scales and dequantization as bitsandbytes; codes equal or strictly nearer to the input.

    bitsandbytes' CPU quantizer searches the map approximately (a few percent of entries get a
    code a few steps from the nearest); ours is exactly nearest.
    """
    functional = pytest.importorskip("bitsandbytes.functional")
    torch = pytest.importorskip("torch")
    qmap = qm.dynamic_map(signed, 8)
    x = heavy_tailed(10000, seed=3, signed=signed)
    codes, scales = qm.quantize_blockwise(jnp.asarray(x), qmap, 2048)
    codes, scales = np.array(codes), np.array(scales)
    theirs, state = functional.quantize_blockwise(
        torch.from_numpy(x), code=torch.from_numpy(qmap.copy()), blocksize=2048
    )
    np.testing.assert_array_equal(scales, state.absmax.numpy())
    normalized = x / np.repeat(scales, 2048)[: x.size]
    ours_error = np.abs(normalized - qmap[codes])
    their_error = np.abs(normalized - qmap[theirs.numpy()])
    assert np.all(ours_error <= their_error)
    assert np.mean(codes == theirs.numpy()) > 0.9
    dequantized = functional.dequantize_blockwise(
        torch.from_numpy(codes.copy()),
        absmax=torch.from_numpy(scales.copy()),
        code=torch.from_numpy(qmap.copy()),
        blocksize=2048,
    ).numpy()
    np.testing.assert_array_equal(np.asarray(qm.dequantize_blockwise(codes, scales, qmap, 2048, x.shape, jnp.float32)),
                                  dequantized)  # fmt: skip


@pytest.mark.parametrize("shape", [(37, 50), (6, 7, 9)])
def test_rank1_round_trip_equals_numpy_transcription(shape):
    qmap = qm.linear_map(4)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) ** 2 * np.exp(rng.uniform(-4, 0, shape))).astype(np.float32)
    x[3] = 0.0  # a zero slice: its scale is 0 and it is restored as 0
    x[(0,) * len(shape)] = 0.0  # a zero entry in non-zero slices
    codes, maxima = jax.jit(lambda v: qm.quantize_rank1(v, qmap))(x)
    assert [m.shape for m in maxima] == [
        tuple(n if a == k else 1 for a, n in enumerate(shape)) for k in range(len(shape))
    ]
    restored = qm.dequantize_rank1(codes, maxima, qmap, shape, jnp.float32)
    expected_codes, expected_values = paper_rank1(x, qmap)
    np.testing.assert_array_equal(np.asarray(codes), expected_codes)
    np.testing.assert_array_equal(np.asarray(restored), expected_values)
    assert np.all(np.asarray(restored)[3] == 0)
    # The linear map without zero: a zero entry in non-zero slices is stored as 1/16 of its scale.
    scale = np.asarray(qm.rank1_scale(maxima))[(0,) * len(shape)]
    assert scale > 0 and np.asarray(restored)[(0,) * len(shape)] == np.float32(scale / 16)


@pytest.mark.parametrize("size", [1, 2, 7, 128])
def test_pack_4bit_round_trip(size):
    codes = jnp.asarray(np.random.default_rng(size).integers(0, 16, size), jnp.uint8)
    packed = qm.pack_4bit(codes)
    assert packed.dtype == jnp.uint8 and packed.shape == ((size + 1) // 2,)
    np.testing.assert_array_equal(np.asarray(qm.unpack_4bit(packed, size)), np.asarray(codes))
    # The earlier entry in the low half of the byte.
    assert int(packed[0]) & 15 == int(codes[0])
