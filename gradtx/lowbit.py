"""Low-bit optimizer state for any transformation: 8-bit and 4-bit moments, block-wise.

``quantized_state(inner)`` keeps the per-parameter state of ``inner`` (Adam's moments, a
momentum buffer, AdaGrad's sum of squares) as 8-bit or 4-bit codes between steps. Each update
dequantizes the state, runs ``inner.update`` in floating point as usual, and quantizes the new
state. It is written once against the ``init``/``update`` protocol, so it wraps every gradtx
transformation, Optax's, and compositions of them (``chain``, ``masked``, ``partition``,
``inject_hyperparams``); ``adamw_8bit``, ``adamw_4bit`` and friends are one-line shortcuts.

The arithmetic of the maps and normalizations lives in ``gradtx.quantization_maps``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.adam import adam, adamw
from gradtx.base import GradientTransformation, OptState, Params, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, _call_update, _resolve_mask
from gradtx.momentum import sgd
from gradtx.quantization_maps import (
    MapTables,
    blockwise_denormalize,
    dynamic_map,
    encode,
    linear_map,
    lookup,
    map_tables,
    pack_4bit,
    rank1_normalize,
    rank1_scale,
    select_map,
    unpack_4bit,
)
from gradtx.sign import lion
from gradtx.tree_utils import path_to_str
from gradtx.validation import check_schedule_arguments

_STATIC = {"static": True}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """One state leaf in low-bit storage: codes, map choice and scales (arrays); its layout (static).

    ``codes``: uint8, one code per entry (``bits=8``, shape ``[n]``) or two per byte (``bits=4``,
    shape ``[ceil(n / 2)]``, the earlier entry in the low half), in the row-major order of the
    original array of ``n`` entries. ``signed``: a bool scalar, whether the signed map was used
    (else the leaf was ``>= 0`` everywhere and the non-negative map was). ``scales``: float32
    absolute maxima of the blocks of ``block_size`` entries, shape ``[ceil(n / block_size)]``.
    ``axis_maxima``: for 4-bit leaves of rank ``r >= 2``, the ``r`` per-axis maxima of rank-1
    normalization (used when ``signed`` is False); else ``()``. The static fields ``shape``,
    ``dtype`` (the original leaf's, by name), ``bits`` and ``block_size`` are part of the tree
    structure. ``dequantize()`` returns the array.
    """

    codes: jax.Array
    signed: jax.Array
    scales: jax.Array
    axis_maxima: tuple
    shape: tuple = dataclasses.field(metadata=_STATIC)
    dtype: str = dataclasses.field(metadata=_STATIC)
    bits: int = dataclasses.field(metadata=_STATIC)
    block_size: int = dataclasses.field(metadata=_STATIC)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def rank1(self) -> bool:
        """Whether non-negative values use rank-1 normalization (4 bits, rank >= 2)."""
        return self.bits == 4 and len(self.shape) >= 2

    def dequantize(self) -> jax.Array:
        """The stored array, ``q[code] * scale``, with its original shape and dtype."""
        return _dequantize(self)


@jax.jit
def _dequantize(stored: QuantizedArray) -> jax.Array:
    codes = unpack_4bit(stored.codes, stored.size) if stored.bits == 4 else stored.codes
    values = _decode(codes, stored.bits, stored.signed)
    restored = blockwise_denormalize(values, stored.scales, stored.block_size).reshape(stored.shape)
    if stored.rank1:
        rank1_values = values.reshape(stored.shape) * rank1_scale(stored.axis_maxima)
        restored = jnp.where(stored.signed, restored, rank1_values)
    return restored.astype(stored.dtype)


def _decode(codes: jax.Array, bits: int, signed: jax.Array) -> jax.Array:
    """``q[code]`` of a leaf's map (see ``_tables``): one look-up in the two maps side by side."""
    signed_map = dynamic_map(True, bits)
    both = np.concatenate([signed_map, dynamic_map(False, 8) if bits == 8 else linear_map(4)])
    index = codes.astype(jnp.int32) + jnp.where(signed, 0, signed_map.size)
    return lookup(both, index)


def _tables(bits: int, signed: jax.Array) -> MapTables:
    """The map of a leaf: signed dynamic; non-negative: unsigned dynamic (8 bits) or linear without zero (4 bits)."""
    non_negative = map_tables(dynamic_map(False, 8) if bits == 8 else linear_map(4))
    return select_map(signed, map_tables(dynamic_map(True, bits)), non_negative)


@jax.jit
def _quantize(value: jax.Array, like: QuantizedArray, key: jax.Array | None) -> QuantizedArray:
    """``value`` stored with ``like``'s layout; the map is chosen from the values (see ``quantized_state``).

    Jitted: an eager ``init`` then compiles one small program per leaf shape instead of
    dispatching a dozen operations per leaf; inside a jitted step it is inlined.
    """
    x = jnp.reshape(value, like.shape).astype(jnp.float32)
    size = x.size
    blocks = jnp.pad(jnp.ravel(x), (0, (-size) % like.block_size)).reshape(-1, like.block_size)
    # One pass over the leaf for both the block absmax and the sign test (a variadic reduction).
    scales, minima = jax.lax.reduce(
        (jnp.abs(blocks), blocks),
        (np.float32(0), np.float32(np.inf)),
        lambda a, b: (jnp.maximum(a[0], b[0]), jnp.minimum(a[1], b[1])),
        (1,),
    )
    # NaN compares False: a leaf holding NaN is treated as signed.
    signed = jnp.logical_not(jnp.min(minima) >= 0)
    normalized = (blocks / jnp.where(scales > 0, scales, 1)[:, None]).reshape(-1)[:size]
    axis_maxima = ()
    if like.rank1:
        rank1_normalized, axis_maxima = rank1_normalize(x)
        normalized = jnp.where(signed, normalized, rank1_normalized.reshape(-1))
    codes = encode(normalized, _tables(like.bits, signed), key)
    if like.bits == 4:
        codes = pack_4bit(codes)
    return dataclasses.replace(like, codes=codes, signed=signed, scales=scales, axis_maxima=axis_maxima)


def _is_quantized(node: Any) -> bool:
    return isinstance(node, QuantizedArray)


def dequantize_state(state: OptState) -> OptState:
    """``state`` with every ``QuantizedArray`` replaced by its dequantized array ``q[code] * scale``.

    Use it to read a quantized optimizer's moments, e.g. ``dequantize_state(state).inner_state``.
    Reference: Dettmers et al. 2022 (block-wise dequantization).
    """
    return jax.tree.map(lambda x: x.dequantize() if _is_quantized(x) else x, state, is_leaf=_is_quantized)


class QuantizedState(NamedTuple):
    """State of ``quantized_state``: the inner state with its large leaves as ``QuantizedArray``.

    ``inner_state``: the wrapped transformation's state, of the same structure, in which every
    quantized leaf is a ``QuantizedArray`` node (codes and scales) instead of an array.
    ``key``: the PRNG key of stochastic rounding (advanced every step), or ``None``.
    """

    inner_state: OptState
    key: jax.Array | None


def _matching_param(state_path: tuple, shape: tuple, params_index: list) -> int | None:
    """The parameter a state leaf belongs to: the longest parameter path ending its path, same shape."""
    best, best_length = None, -1
    for index, (param_path, param_shape, _) in enumerate(params_index):
        length = len(param_path)
        if (
            length <= len(state_path)
            and tuple(state_path[len(state_path) - length :]) == tuple(param_path)
            and param_shape == shape
            and length > best_length
        ):
            best, best_length = index, length
    return best


def _selected(params: Params, state: OptState, *, min_size: int, mask: MaskOrFn | None) -> list[bool]:
    """For each leaf of ``state`` (``jax.tree.leaves`` order): whether to quantize it.

    Decided from structure, shapes and dtypes only, so ``init`` under ``jit``, ``vmap`` or
    ``jax.eval_shape`` gives the same tree structure as eager ``init``.
    """
    mask_tree = jax.tree.map(lambda _: True, params) if mask is None else _resolve_mask(mask, params)
    # A mask may be a prefix of the parameters: one boolean per parameter leaf.
    mask_leaves = jax.tree.leaves(jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask_tree, params))
    param_leaves = jax.tree.leaves_with_path(params)
    params_index = [(path, tuple(np.shape(leaf)), keep) for (path, leaf), keep in zip(param_leaves, mask_leaves)]
    selected = []
    for path, leaf in jax.tree.leaves_with_path(state):
        shape = tuple(np.shape(leaf))
        eligible = (
            jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and len(shape) >= 1 and int(np.prod(shape)) >= min_size
        )
        match = _matching_param(path, shape, params_index) if eligible else None
        selected.append(match is not None and params_index[match][2])
    return selected


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"quantized_state: {name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"quantized_state: {name} must be >= {minimum}, got {value!r}.")


@check_schedule_arguments
def quantized_state(
    inner: GradientTransformation,
    bits: int = 8,
    block_size: int | None = None,
    min_size: int = 4096,
    mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """Keeps ``inner``'s per-parameter state in 8-bit or 4-bit storage between steps.

    With ``Q`` quantization and ``D`` dequantization of the selected state leaves, one step is

    .. math::
        (u_t, S_t) = \\text{inner.update}(g_t, D(\\hat S_{t-1}), w_{t-1}), \\qquad \\hat S_t = Q(S_t)

    so ``inner`` runs in floating point exactly as without the wrapper, on a state that has been
    rounded once per step. ``Q`` stores each leaf as ``x_i ~= q[code_i] s_i``: codes into a
    quantization map ``q`` and float32 scales ``s`` (see ``gradtx.quantization_maps``):

    * ``bits=8`` (Dettmers et al. 2022): block-wise absmax scaling, ``s`` = the largest ``|x|`` of
      each block of ``block_size`` (default 2048) consecutive entries; the dynamic map, signed
      (``q`` in ``[-1, 1]``) or, for non-negative leaves, unsigned (twice the resolution on
      ``[0, 1]``). One byte per entry.
    * ``bits=4`` (Li, Chen, Zhu 2023): signed leaves (first moments) block-wise with
      ``block_size`` 128 and the 4-bit dynamic ("DE") map; non-negative leaves (second moments)
      with rank-1 normalization (``s_ij = min(max_k |x_ik|, max_k |x_kj|)``, generalized to any
      rank; 1-D leaves block-wise with 128) and the linear map without zero
      ``q_j = (j + 1) / 16``. Two codes per byte.

    Rounding is to the nearest value of the map; ``stochastic_rounding=True`` rounds up or down
    at random with the probabilities that make it unbiased.

    Which leaves: a leaf of ``inner``'s state is quantized if it is floating point, has at least
    ``min_size`` entries and belongs to a parameter whose ``mask`` entry is True: its tree path
    ends with the parameter's path and it has the parameter's shape (Adam's ``mu`` and ``nu``, a
    momentum ``trace``, AdaGrad's sum of squares). Step counts, scalars, small leaves (biases,
    norms) and leaves of other shapes (preconditioner matrices) stay as they are. The choice
    depends on structure, shapes and dtypes only, so ``init`` under ``jit``, ``vmap`` or
    ``jax.eval_shape`` builds the same tree (a checkpoint's ``like``). A state that holds a copy
    of the weights (an average of the parameters) would be quantized too: wrap only the
    transformations whose state should be low-bit, e.g.
    ``chain(quantized_state(scale_by_adam()), other)``.

    Signed or non-negative: decided for each leaf every time it is quantized, from its values:
    a leaf that is ``>= 0`` everywhere (Adam's ``nu``, RMSProp's, AdaGrad's and AdaDelta's
    accumulators, by construction) is stored with the non-negative scheme, any other (a first
    moment, a momentum) with the signed one; the choice is kept in the leaf (``signed``), so
    any transformation works without declaring which of its states are second moments. A
    first moment that happens to be ``>= 0`` everywhere at some step is stored with the
    non-negative scheme for that step, which represents it at least as finely (8 bits) or,
    with 4 bits, rounds its entries near 0 up to at most ``s / 16``.

    Storage (bytes per parameter and quantized leaf): ``bits=8``: ``1 + 4 / block_size`` (1.002
    with 2048); ``bits=4``: ``0.5 + 4 / block_size`` (0.53 with 128), plus, for leaves of rank
    ``r >= 2``, the ``4 (n_1 + ... + n_r)`` bytes of the rank-1 maxima (both are kept, so that a
    leaf can switch between the signed and the non-negative scheme); 1 byte per leaf for
    ``signed``. Adam (two leaves): about 2.0 and 1.07 bytes per parameter instead of 8.

    Cost: each step decodes and re-encodes the leaves (a table look-up per entry each way, one
    pass for the block maxima). XLA:CPU stores the decoded float32 moments as temporaries between
    those passes, so an 8-bit Adam step on 16M parameters took about 6x the time of float32
    Adam's single streaming loop on the reference machine (2.8x on a transformer-like tree of
    3.6M; ``benchmarks/LOWBIT.md`` says where the time goes); the memory saved is that of the
    state kept between steps.

    Args:
      inner: any transformation (gradtx or Optax), e.g. ``gradtx.adamw(1e-3)``.
      bits: 8 (default) or 4.
      block_size: entries per block of block-wise scaling; default 2048 for 8 bits, 128 for 4.
      min_size: leaves with fewer entries stay unquantized. Default 4096 (bitsandbytes' default).
      mask: a tree of booleans with the parameters' structure (or a prefix of it), or a function
        ``params -> tree``: False keeps that parameter's state unquantized (the 8-bit paper keeps
        embeddings' state in 32 bits, with its "stable embedding" layer). Default: all True.
      stochastic_rounding: round stochastically instead of to the nearest value. Default False.
      key: the PRNG key of stochastic rounding; default ``jax.random.PRNGKey(0)``.

    State: ``QuantizedState(inner_state, key)``; ``inner_state`` has ``inner``'s structure with
    ``QuantizedArray`` nodes in place of the quantized leaves (``dequantize_state`` reads them).
    Checkpoints (``save_state``/``load_state``), ``apply_if_finite``, ``jit`` and ``vmap`` see
    ordinary arrays: uint8 codes, a bool and float32 scales.

    No Optax counterpart (Optax stores moments in float32 or a ``mu_dtype``); the 8-bit scheme is
    bitsandbytes' ``optim.Adam8bit`` (its map and block size), the 4-bit one ``lpmm``'s
    ``AdamW`` (4-bit, default configuration) without its fused kernels.

    References:
      Dettmers, Lewis, Shleifer, Zettlemoyer, "8-bit optimizers via block-wise quantization",
      ICLR 2022 (arXiv:2110.02861).
      Li, Chen, Zhu, "Memory efficient optimizers with 4-bit states", NeurIPS 2023
      (arXiv:2309.01507).
    """
    if not (hasattr(inner, "init") and hasattr(inner, "update")):
        raise TypeError(f"quantized_state: inner must be a GradientTransformation, got {type(inner).__name__}.")
    if bits not in (4, 8) or isinstance(bits, bool):
        raise ValueError(f"quantized_state: bits must be 8 or 4, got {bits!r}.")
    if block_size is not None:
        _check_int(block_size, "block_size", 1)
    _check_int(min_size, "min_size", 1)
    if not isinstance(stochastic_rounding, (bool, np.bool_)):
        raise TypeError(
            f"quantized_state: stochastic_rounding must be a bool, got {type(stochastic_rounding).__name__}."
        )
    if key is not None and not stochastic_rounding:
        raise ValueError("quantized_state: key is only used with stochastic_rounding=True.")

    def init_fn(params: Params) -> QuantizedState:
        state = inner.init(params)
        selected = _selected(params, state, min_size=min_size, mask=mask)
        leaves, treedef = jax.tree.flatten(state)
        size = block_size or (2048 if bits == 8 else 128)
        stored = []
        for leaf, quantize in zip(leaves, selected):
            if not quantize:
                stored.append(leaf)
                continue
            layout = QuantizedArray(None, None, None, (), tuple(np.shape(leaf)), jnp.result_type(leaf).name, bits, size)
            stored.append(_quantize(leaf, layout, None))
        rounding_key = None
        if stochastic_rounding:
            rounding_key = jax.random.PRNGKey(0) if key is None else key
        return QuantizedState(jax.tree.unflatten(treedef, stored), rounding_key)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, QuantizedState):
            raise TypeError(
                f"quantized_state: expected a QuantizedState (built by this transformation's init), "
                f"got {type(state).__name__}."
            )
        new_updates, new_inner = _call_update(inner, updates, dequantize_state(state.inner_state), params, extra_args)
        old_with_paths, treedef = jax.tree_util.tree_flatten_with_path(state.inner_state, is_leaf=_is_quantized)
        try:
            new_leaves = treedef.flatten_up_to(new_inner)
        except (ValueError, TypeError) as error:
            raise ValueError(f"quantized_state: inner.update returned a state of another structure: {error}") from error
        rounding_key, step_key = state.key, None
        if stochastic_rounding:
            rounding_key, step_key = jax.random.split(state.key)
        stored = []
        for index, ((path, old), new) in enumerate(zip(old_with_paths, new_leaves)):
            if not _is_quantized(old):
                stored.append(new)
                continue
            if tuple(np.shape(new)) != old.shape:
                raise ValueError(
                    f"quantized_state: inner state leaf {path_to_str(path)} changed shape from {old.shape} to "
                    f"{np.shape(new)}."
                )
            leaf_key = None if step_key is None else jax.random.fold_in(step_key, index)
            stored.append(_quantize(new, old, leaf_key))
        return new_updates, QuantizedState(jax.tree.unflatten(treedef, stored), rounding_key)

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Named shortcuts.


@check_schedule_arguments
def adam_8bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    nesterov: bool = False,
    block_size: int | None = None,
    min_size: int = 4096,
    quantize_mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """Adam with 8-bit block-wise moments: ``quantized_state(adam(...), bits=8)``.

    .. math::
        w_t = w_{t-1} - \\eta_t \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon},
        \\qquad m_t, v_t \\text{ stored as 8-bit codes between steps}

    ``m`` uses the signed dynamic map, ``v`` the unsigned one, blocks of 2048; about 2 bytes of
    state per parameter instead of 8. Arguments as ``adam`` (``optax.adam``), then those of
    ``quantized_state`` (``quantize_mask`` is its ``mask``). The counterpart of bitsandbytes'
    ``optim.Adam8bit``.
    Reference: Dettmers et al., "8-bit optimizers via block-wise quantization", ICLR 2022.
    """
    optimizer = adam(learning_rate, b1, b2, eps, eps_root, nesterov=nesterov)
    return quantized_state(optimizer, 8, block_size, min_size, quantize_mask, stochastic_rounding, key)


@check_schedule_arguments
def adamw_8bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn | None = None,
    *,
    nesterov: bool = False,
    block_size: int | None = None,
    min_size: int = 4096,
    quantize_mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """AdamW with 8-bit block-wise moments: ``quantized_state(adamw(...), bits=8)``.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}
        + \\lambda w_{t-1} \\right), \\qquad m_t, v_t \\text{ stored as 8-bit codes between steps}

    Arguments and defaults are ``adamw``'s (``optax.adamw``; ``mask`` selects the leaves that
    decay, ``mu_dtype`` applies to the small unquantized leaves), then ``quantized_state``'s
    (``quantize_mask`` is its ``mask``). About 2 bytes of state per parameter instead of 8. The
    counterpart of bitsandbytes' ``optim.AdamW8bit``.
    Reference: Dettmers et al., "8-bit optimizers via block-wise quantization", ICLR 2022.
    """
    optimizer = adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov)
    return quantized_state(optimizer, 8, block_size, min_size, quantize_mask, stochastic_rounding, key)


@check_schedule_arguments
def adam_4bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    nesterov: bool = False,
    block_size: int | None = None,
    min_size: int = 4096,
    quantize_mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """Adam with 4-bit moments: ``quantized_state(adam(...), bits=4)``.

    .. math::
        w_t = w_{t-1} - \\eta_t \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon},
        \\qquad m_t \\text{ (B128, DE map)}, \\ v_t \\text{ (rank-1, linear map) stored in 4 bits}

    About 1 byte of state per parameter instead of 8. Arguments as ``adam_8bit``.
    Reference: Li, Chen, Zhu, "Memory efficient optimizers with 4-bit states", NeurIPS 2023.
    """
    optimizer = adam(learning_rate, b1, b2, eps, eps_root, nesterov=nesterov)
    return quantized_state(optimizer, 4, block_size, min_size, quantize_mask, stochastic_rounding, key)


@check_schedule_arguments
def adamw_4bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn | None = None,
    *,
    nesterov: bool = False,
    block_size: int | None = None,
    min_size: int = 4096,
    quantize_mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """AdamW with 4-bit moments: ``quantized_state(adamw(...), bits=4)``, the 4-bit AdamW of Li et al.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}
        + \\lambda w_{t-1} \\right), \\qquad m_t, v_t \\text{ stored in 4 bits}

    ``m``: blocks of 128 and the 4-bit dynamic (DE) map; ``v``: rank-1 normalization and the linear
    map without zero. About 1 byte of state per parameter instead of 8. Arguments as
    ``adamw_8bit``.
    Reference: Li, Chen, Zhu, "Memory efficient optimizers with 4-bit states", NeurIPS 2023.
    """
    optimizer = adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov)
    return quantized_state(optimizer, 4, block_size, min_size, quantize_mask, stochastic_rounding, key)


@check_schedule_arguments
def lion_8bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: MaskOrFn | None = None,
    *,
    block_size: int | None = None,
    min_size: int = 4096,
    quantize_mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """Lion with an 8-bit momentum: ``quantized_state(lion(...), bits=8)``.

    .. math::
        w_t = w_{t-1} - \\eta_t (\\operatorname{sign}(\\beta_1 m_{t-1} + (1 - \\beta_1) g_t) + \\lambda w_{t-1}),
        \\qquad m_t \\text{ stored as 8-bit codes}

    Arguments and defaults are ``lion``'s (``optax.lion``), then ``quantized_state``'s. About 1 byte
    of state per parameter instead of 4. The counterpart of bitsandbytes' ``optim.Lion8bit``.
    Reference: Chen et al., "Symbolic discovery of optimization algorithms", NeurIPS 2023;
    Dettmers et al. 2022 (8-bit states).
    """
    optimizer = lion(learning_rate, b1, b2, mu_dtype, weight_decay, mask)
    return quantized_state(optimizer, 8, block_size, min_size, quantize_mask, stochastic_rounding, key)


@check_schedule_arguments
def sgd_8bit(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None = 0.9,
    nesterov: bool = False,
    *,
    block_size: int | None = None,
    min_size: int = 4096,
    quantize_mask: MaskOrFn | None = None,
    stochastic_rounding: bool = False,
    key: jax.Array | None = None,
) -> GradientTransformation:
    """SGD with an 8-bit momentum buffer: ``quantized_state(sgd(...), bits=8)``.

    .. math::
        m_t = \\mu m_{t-1} + g_t, \\qquad w_t = w_{t-1} - \\eta_t m_t
        \\qquad (m_t \\text{ stored as 8-bit codes})

    Arguments as ``sgd`` (``optax.sgd``), except that ``momentum`` defaults to 0.9 (without
    momentum there is no state to quantize). The counterpart of bitsandbytes' ``optim.SGD8bit``.
    Reference: Dettmers et al., "8-bit optimizers via block-wise quantization", ICLR 2022.
    """
    optimizer = sgd(learning_rate, momentum, nesterov)
    return quantized_state(optimizer, 8, block_size, min_size, quantize_mask, stochastic_rounding, key)
