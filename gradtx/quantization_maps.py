"""Low-bit quantization of arrays: the quantization maps and block-wise / rank-1 normalization.

A quantized array is stored as integer *codes* (indices into a sorted *quantization map* ``q`` of
``2^b`` values in ``[-1, 1]``) and float32 *scales*; the stored value of entry ``i`` is

    x_i ~= q[code_i] * s_i

with ``s_i`` the scale of the group ``i`` belongs to. Quantization first divides by the scale
(``n_i = x_i / s_i``, in ``[-1, 1]``) and then rounds ``n_i`` to a value of the map: to the
nearest one (``code_i = argmin_j |n_i - q_j|``, ties to the smaller value), or, with stochastic
rounding, to one of its two neighbours ``q_j <= n_i <= q_{j+1}`` with probability proportional to
closeness (``P(q_{j+1}) = (n_i - q_j) / (q_{j+1} - q_j)``, so ``E[q[code_i]] = n_i``).

Two normalizations:

* block-wise (Dettmers et al. 2022): the flattened array is cut into blocks of ``B`` consecutive
  entries (the last one shorter); each block's scale is its absolute maximum ``s = max_block |x|``.
* rank-1 (Li, Chen, Zhu 2023): for an array of rank ``r >= 2`` the scale of an entry is the
  smallest of the ``r`` absolute maxima of the slices through it,
  ``s_{ij} = min(max_k |x_{ik}|, max_k |x_{kj}|)`` for a matrix; only the ``sum(shape)`` maxima
  are stored.

Three maps, all float32 arrays sorted increasingly (``dynamic_map``, ``linear_map``):

* the dynamic (dynamic-tree) map of Dettmers (2016), signed or unsigned: a sign, a run of zeros
  that sets the decade, an indicator bit, and a linear fraction; 8 bits for 8-bit states, 4 bits
  ("DE") for the 4-bit first moment;
* the linear map without zero ``q_j = (j + 1) / 2^b`` for 4-bit second moments (Li et al. 2023),
  so that no non-zero second moment is ever stored as 0 (which would make ``1 / sqrt(v)`` explode).

Codes of 4-bit maps are packed two per byte (``pack_4bit``). Rounding to the nearest value is a
table look-up on the top 16 bits of the float32 number plus one comparison, exact for every
float32 input (no binary search).

References:
  Dettmers, "8-bit approximations for parallelism in deep learning", ICLR 2016 (arXiv:1511.04561).
  Dettmers, Lewis, Shleifer, Zettlemoyer, "8-bit optimizers via block-wise quantization", ICLR 2022
  (arXiv:2110.02861).
  Li, Chen, Zhu, "Memory efficient optimizers with 4-bit states", NeurIPS 2023 (arXiv:2309.01507).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_F32 = np.float32


def _linspace_float32(start: float, stop: float, num: int) -> np.ndarray:
    """``num`` evenly spaced float32 values from ``start`` to ``stop``, each rounded once.

    ``start + i d`` for the first half and ``stop - (num - 1 - i) d`` for the second, with
    ``d = (stop - start) / (num - 1)`` in float32 and one rounding per point (a fused
    multiply-add): the arithmetic of ``torch.linspace`` on a CPU with FMA, which is what
    bitsandbytes' map is built with.
    """
    start32, stop32 = _F32(start), _F32(stop)
    if num == 1:
        return np.asarray([start32], _F32)
    step = _F32(_F32(stop32 - start32) / _F32(num - 1))
    index = np.arange(num, dtype=np.float64)
    lower = np.float64(start32) + np.float64(step) * index
    upper = np.float64(stop32) - np.float64(step) * (num - 1 - index)
    return np.where(np.arange(num) < num // 2, lower, upper).astype(_F32)


@functools.cache
def _dynamic_map(signed: bool, bits: int) -> np.ndarray:
    values = []
    exponent_bits = bits - 1
    for i in range(exponent_bits):
        # Decade 10^(i - exponent_bits + 1): 2^i fractions with a sign bit, 2^(i+1) without.
        boundaries = _linspace_float32(0.1, 1.0, (2**i if signed else 2 ** (i + 1)) + 1)
        means = (boundaries[:-1] + boundaries[1:]) / _F32(2)
        decade = _F32(10.0 ** (i - exponent_bits + 1))
        values += list(decade * means)
        if signed:
            values += list(-decade * means)
    values += [_F32(0.0), _F32(1.0)]
    table = np.sort(np.asarray(values, _F32))
    assert table.size == 2**bits
    table.setflags(write=False)
    return table


def dynamic_map(signed: bool = True, bits: int = 8) -> np.ndarray:
    """The dynamic (dynamic-tree) quantization map of Dettmers (2016): ``2^bits`` sorted float32 values.

    A code is a sign bit (``signed=True`` only), ``E`` leading zeros, an indicator one and a linear
    fraction in the remaining ``F`` bits; its value is

    .. math::
        q = \\pm 10^{-E} \\left(0.1 + 0.9 \\frac{k + 1/2}{2^F}\\right), \\qquad k = 0, \\ldots, 2^F - 1,

    for ``E = 0, ..., bits - 2`` (fewer fraction bits for smaller decades), plus the values 0 and 1.
    ``signed=False`` gives the sign bit to the fraction (twice as many values per decade), for
    non-negative states such as Adam's second moment. Computed in float32 as bitsandbytes
    does (midpoints of a float32 ``linspace(0.1, 1, 2^F + 1)`` times float32 ``10^-E``), so the
    8-bit maps equal ``bitsandbytes.functional.create_dynamic_map(signed)`` value for value; the
    4-bit signed map is the "DE" map of Li, Chen, Zhu (2023).

    Args:
      signed: whether the map covers ``[-1, 1]`` (default) or ``[0, 1]``.
      bits: 2 to 8. Default 8.

    References: Dettmers, "8-bit approximations for parallelism in deep learning", ICLR 2016;
    Dettmers et al., "8-bit optimizers via block-wise quantization", ICLR 2022.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"dynamic_map: bits must be an int in [2, 8], got {bits!r}.")
    return _dynamic_map(bool(signed), bits)


@functools.cache
def _linear_map(bits: int) -> np.ndarray:
    table = ((np.arange(2**bits, dtype=np.float64) + 1) / 2**bits).astype(_F32)
    table.setflags(write=False)
    return table


def linear_map(bits: int = 4) -> np.ndarray:
    """The unsigned linear map without zero of Li, Chen, Zhu (2023): ``q_j = (j + 1) / 2^bits``.

    Used for 4-bit second moments: the smallest value is ``2^-bits``, so a second moment is never
    stored as exactly 0 (the "zero-point problem": ``1 / sqrt(0)`` would blow the update up).

    Args:
      bits: 1 to 8. Default 4.

    Reference: Li, Chen, Zhu, "Memory efficient optimizers with 4-bit states", NeurIPS 2023,
    Section 4.1 ("Linear" mapping excluding zero).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"linear_map: bits must be an int in [1, 8], got {bits!r}.")
    return _linear_map(bits)


class MapTables(NamedTuple):
    """A quantization map and its rounding tables, as arrays (``map_tables`` builds them).

    ``values``: the map, float32 ``[L]``. ``start``: uint8 ``[2^16]``, the nearest index of the
    smallest float32 whose top 16 bits are ``h``. ``thresholds``: float32 ``[L]``, the midpoints
    ``(q_j + q_{j+1}) / 2`` rounded down to float32, then ``+inf``. Two maps of one length can be
    chosen between inside ``jit`` with ``select_map``.
    """

    values: Any
    start: Any
    thresholds: Any


@functools.lru_cache(maxsize=16)
def _map_tables(qmap_bytes: bytes) -> MapTables:
    qmap32 = np.frombuffer(qmap_bytes, _F32)
    qmap = qmap32.astype(np.float64)
    midpoints = (qmap[:-1] + qmap[1:]) / 2
    # Rounded down: for every float32 x, x > threshold iff x is above the exact midpoint.
    thresholds = midpoints.astype(_F32)
    rounded_up = thresholds.astype(np.float64) > midpoints
    thresholds = np.where(rounded_up, np.nextafter(thresholds, _F32(-np.inf)), thresholds)
    high = np.arange(2**16, dtype=np.uint32) << 16
    negative = (high >> 31).astype(bool)
    # The smallest and largest value of each bucket (the order of the low bits flips for negatives).
    smallest = np.where(negative, high | 0xFFFF, high).view(_F32)
    largest = np.where(negative, high, high | 0xFFFF).view(_F32)
    with np.errstate(invalid="ignore"):
        start = np.searchsorted(thresholds, smallest, side="left")
        stop = np.searchsorted(thresholds, largest, side="left")
    finite = np.isfinite(smallest) & np.isfinite(largest)
    if np.any(stop[finite] - start[finite] > 1):
        raise ValueError("quantization map too dense for rounding by 16-bit buckets")
    start = np.where(finite, start, 0).astype(np.uint8)
    # One more threshold at +inf so that the comparison at the last index never moves up.
    thresholds = np.append(thresholds, _F32(np.inf)).astype(_F32)
    return MapTables(qmap32.copy(), start, thresholds)


def map_tables(qmap: np.ndarray) -> MapTables:
    """The rounding tables of a sorted float32 map of at most 256 values (cached).

    Rounding to the nearest value is then a look-up of the float32 number's top 16 bits in
    ``start`` and one comparison with ``thresholds``, exact for every float32 input: no bucket
    of 2^16 consecutive float32 numbers holds two midpoints of these maps (checked when built):

        code(x) = start[bits(x) >> 16] + (x > thresholds[start[bits(x) >> 16]])
    """
    qmap = np.asarray(qmap, _F32)
    if qmap.ndim != 1 or not 2 <= qmap.size <= 256 or np.any(np.diff(qmap) <= 0):
        raise ValueError("map_tables: the map must be 2 to 256 strictly increasing float32 values.")
    return _map_tables(qmap.tobytes())


def select_map(condition: jax.Array, if_true: MapTables, if_false: MapTables) -> MapTables:
    """``if_true`` where the scalar ``condition`` holds, else ``if_false``: one map per array, chosen in ``jit``.

    ``T = cond ? T_1 : T_0`` table by table (maps of one length).
    """
    return MapTables(*(jnp.where(condition, a, b) for a, b in zip(if_true, if_false)))


def lookup(table: Any, index: jax.Array) -> jax.Array:
    """``table[index]`` elementwise (indices clipped into range), laid out like ``index``.

    ``t_i = table[index_i]``. The output takes the index array's sharding, so that a look-up in a
    replicated table of codes sharded over a mesh (ZeRO-1, explicit axes) stays local.
    """
    table = jnp.asarray(table)
    return table.at[index.astype(jnp.int32)].get(mode="clip", out_sharding=jax.typeof(index).sharding)


def _as_tables(qmap: np.ndarray | MapTables) -> MapTables:
    return qmap if isinstance(qmap, MapTables) else map_tables(qmap)


def nearest_codes(x: jax.Array, qmap: np.ndarray | MapTables) -> jax.Array:
    """``argmin_j |x_i - q_j|`` for every float32 ``x_i`` (ties to the smaller value), as uint8.

    Exact for every float32 input; NaN maps to code 0. ``qmap``: a sorted float32 NumPy map of at
    most 256 values (``dynamic_map``, ``linear_map``) or its ``MapTables``.
    """
    tables = _as_tables(qmap)
    x = jnp.asarray(x, jnp.float32)
    bucket = jax.lax.shift_right_logical(jax.lax.bitcast_convert_type(x, jnp.uint32), jnp.uint32(16))
    index = lookup(tables.start, bucket)
    above = x > lookup(tables.thresholds, index)
    return (index + above.astype(index.dtype)).astype(jnp.uint8)


def stochastic_codes(x: jax.Array, qmap: np.ndarray | MapTables, key: jax.Array) -> jax.Array:
    """Stochastic rounding to the map: ``q_j`` or ``q_{j+1}`` around ``x``, unbiased inside ``[q_0, q_last]``.

    With ``q_j <= x <= q_{j+1}``: ``P(code = j + 1) = (x - q_j) / (q_{j+1} - q_j)``, so
    ``E[q[code]] = x``; values outside the map's range go to its nearest end.
    Reference: Gupta et al., "Deep learning with limited numerical precision", ICML 2015.
    """
    tables = _as_tables(qmap)
    x = jnp.asarray(x, jnp.float32)
    table = jnp.asarray(tables.values, jnp.float32)
    nearest = nearest_codes(x, tables).astype(jnp.int32)
    lower = jnp.clip(nearest - (lookup(table, nearest) > x).astype(jnp.int32), 0, table.shape[0] - 2)
    low, high = lookup(table, lower), lookup(table, lower + 1)
    probability = jnp.clip((x - low) / (high - low), 0.0, 1.0)
    up = jax.random.uniform(key, x.shape, jnp.float32) < probability
    return (lower + up.astype(jnp.int32)).astype(jnp.uint8)


def encode(normalized: jax.Array, qmap: np.ndarray | MapTables, key: jax.Array | None = None) -> jax.Array:
    """Codes of values already normalized to ``[-1, 1]``: ``nearest_codes``, or ``stochastic_codes`` with a key.

    ``code = round_q(n)``; Dettmers et al. 2022 (nearest), Gupta et al. 2015 (stochastic).
    """
    return nearest_codes(normalized, qmap) if key is None else stochastic_codes(normalized, qmap, key)


def decode(codes: jax.Array, qmap: np.ndarray | MapTables) -> jax.Array:
    """The map's values at ``codes``: ``q[code]``, float32 (Dettmers et al. 2022)."""
    return lookup(jnp.asarray(_as_tables(qmap).values, jnp.float32), codes)


def _safe_divide(x: jax.Array, scale: jax.Array) -> jax.Array:
    # A block of zeros has scale 0: its entries are stored as the map's zero (or smallest value).
    return x / jnp.where(scale > 0, scale, jnp.ones_like(scale))


def blockwise_normalize(x: jax.Array, block_size: int) -> tuple[jax.Array, jax.Array]:
    """``n_i = x_i / s_b`` with ``s_b = max_{i in b} |x_i|`` over blocks of the flattened ``x``.

    Returns ``(normalized, scales)``: float32 of shape ``[x.size]`` (entries of an all-zero block
    are 0) and ``[ceil(x.size / block_size)]``. Reference: Dettmers et al. 2022, Section 2.
    """
    flat = jnp.ravel(x).astype(jnp.float32)
    size = flat.shape[0]
    padded = jnp.pad(flat, (0, (-size) % block_size)).reshape(-1, block_size)
    scales = jnp.max(jnp.abs(padded), axis=1)
    return _safe_divide(padded, scales[:, None]).reshape(-1)[:size], scales


def blockwise_denormalize(values: jax.Array, scales: jax.Array, block_size: int) -> jax.Array:
    """``x_i = n_i s_b``: the inverse of ``blockwise_normalize`` on a flat array (Dettmers et al. 2022)."""
    size = values.shape[0]
    padded = jnp.pad(values, (0, (-size) % block_size)).reshape(-1, block_size) * scales[:, None]
    return padded.reshape(-1)[:size]


def quantize_blockwise(
    x: jax.Array, qmap: np.ndarray | MapTables, block_size: int, key: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Block-wise absmax quantization (Dettmers et al. 2022) of the flattened ``x``.

    .. math::
        s_b = \\max_{i \\in b} |x_i|, \\qquad code_i = \\operatorname{round}_q(x_i / s_b)

    Returns ``(codes, scales)``: uint8 codes of shape ``[x.size]`` (one per entry, in ``x``'s
    row-major order) and float32 absolute maxima of shape ``[ceil(x.size / block_size)]``.
    ``key`` switches to stochastic rounding.
    """
    normalized, scales = blockwise_normalize(x, block_size)
    return encode(normalized, qmap, key), scales


def dequantize_blockwise(
    codes: jax.Array,
    scales: jax.Array,
    qmap: np.ndarray | MapTables,
    block_size: int,
    shape: tuple[int, ...],
    dtype: Any,
) -> jax.Array:
    """Inverse of ``quantize_blockwise``: ``x_i = q[code_i] s_b``, reshaped to ``shape`` and cast to ``dtype``.

    Reference: Dettmers et al., "8-bit optimizers via block-wise quantization", ICLR 2022.
    """
    return blockwise_denormalize(decode(codes, qmap), scales, block_size).reshape(shape).astype(dtype)


def rank1_scale(maxima: tuple[jax.Array, ...]) -> jax.Array:
    """``s = min_k m_k`` broadcast over the array: the rank-1 scale from its per-axis maxima.

    Reference: Li, Chen, Zhu 2023, Section 4.2 (after SM3, Anil et al. 2019).
    """
    maxima = [_replicated(axis_max) for axis_max in maxima] if len(maxima) > 1 else maxima
    scale = maxima[0]
    for axis_max in maxima[1:]:
        scale = jnp.minimum(scale, axis_max)
    return scale


def _replicated(x: jax.Array) -> jax.Array:
    # Maxima split over a mesh axis on different dimensions (ZeRO-1 on explicit axes) cannot be
    # broadcast against each other; they are tiny, so they are gathered whole.
    spec = getattr(jax.typeof(x).sharding, "spec", None)
    if spec is not None and any(part is not None for part in spec):
        return jax.sharding.reshard(x, jax.sharding.PartitionSpec())
    return x


def rank1_normalize(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """``n = x / min_k m^(k)`` with ``m^(k)`` the maximum of ``|x|`` over all axes but ``k``.

    Returns ``(normalized, maxima)``: float32 of ``x``'s shape, and the ``rank`` maxima, each of
    ``x``'s rank with size 1 on every axis but its own. Reference: Li, Chen, Zhu 2023, Section 4.2.
    """
    magnitude = jnp.abs(x).astype(jnp.float32)
    axes = range(magnitude.ndim)
    maxima = tuple(jnp.max(magnitude, axis=tuple(a for a in axes if a != k), keepdims=True) for k in axes)
    return _safe_divide(x.astype(jnp.float32), rank1_scale(maxima)), maxima


def quantize_rank1(
    x: jax.Array, qmap: np.ndarray | MapTables, key: jax.Array | None = None
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Rank-1 normalization and quantization (Li, Chen, Zhu 2023) of an array of rank >= 2.

    .. math::
        m^{(k)} = \\max_{\\text{all axes but } k} |x|, \\qquad
        s = \\min_k m^{(k)} \\ (\\text{broadcast}), \\qquad code = \\operatorname{round}_q(x / s)

    Returns ``(codes, maxima)``: uint8 codes of shape ``[x.size]`` (row-major) and the maxima of
    ``rank1_normalize``.
    """
    normalized, maxima = rank1_normalize(x)
    return encode(normalized.reshape(-1), qmap, key), maxima


def dequantize_rank1(
    codes: jax.Array,
    maxima: tuple[jax.Array, ...],
    qmap: np.ndarray | MapTables,
    shape: tuple[int, ...],
    dtype: Any,
) -> jax.Array:
    """Inverse of ``quantize_rank1``: ``x = q[code] * min_k m^(k)``, cast to ``dtype``.

    Reference: Li, Chen, Zhu, "Memory efficient optimizers with 4-bit states", NeurIPS 2023.
    """
    return (decode(codes, qmap).reshape(shape) * rank1_scale(maxima)).astype(dtype)


def pack_4bit(codes: jax.Array) -> jax.Array:
    """Two 4-bit codes per byte: ``byte_k = code_{2k} + 16 code_{2k+1}`` (an odd tail is padded with 0).

    Returns uint8 of shape ``[ceil(n / 2)]``: half a byte per entry, the earlier entry in the low
    half. Reference: Li, Chen, Zhu 2023 (4-bit states, two per byte).
    """
    codes = codes.astype(jnp.uint8)
    pairs = jnp.pad(codes, (0, codes.shape[0] % 2)).reshape(-1, 2)
    return pairs[:, 0] | jax.lax.shift_left(pairs[:, 1], jnp.uint8(4))


def unpack_4bit(packed: jax.Array, size: int) -> jax.Array:
    """Inverse of ``pack_4bit``: the first ``size`` codes.

    ``code_{2k} = byte_k mod 16``, ``code_{2k+1} = byte_k // 16``.
    """
    low = packed & jnp.uint8(15)
    high = jax.lax.shift_right_logical(packed, jnp.uint8(4))
    return jnp.stack([low, high], axis=1).reshape(-1)[:size]
