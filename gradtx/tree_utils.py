"""Pytree helpers used by every transformation: zeros, norms, step counters, structure checks.

``None`` is an empty subtree in JAX, so ``None`` entries of a parameter tree are carried through
every helper here untouched.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any

STEP_COUNT_DTYPE = jnp.int32


def zero_step_count() -> jax.Array:
    """A fresh int32 step counter."""
    return jnp.zeros([], STEP_COUNT_DTYPE)


def saturating_increment(count: jax.Array) -> jax.Array:
    """``min(t + 1, M)`` with ``M`` the largest value of ``t``'s dtype: a counter that never wraps around.

    For the int32 step counters of every transformation ``M = 2^31 - 1``; any other integer or
    floating dtype saturates at its own maximum. Also exported as ``gradtx.safe_increment`` and
    ``gradtx.safe_int32_increment``; matches ``optax.safe_increment``.

    Raises:
      ValueError: ``count`` is neither an integer nor a floating-point number (Optax's error).
    """
    count = jnp.asarray(count)
    dtype = count.dtype
    if jnp.issubdtype(dtype, jnp.integer):
        max_value = np.iinfo(dtype).max
    elif jnp.issubdtype(dtype, jnp.floating):
        max_value = float(jnp.finfo(dtype).max)
    else:
        raise ValueError(f"count must have an integer or floating dtype to be incremented safely, got {dtype}.")
    max_value = np.asarray(max_value, dtype)
    return jnp.where(count < max_value, count + np.asarray(1, dtype), max_value)


def tree_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros with each leaf's shape and sharding, and its dtype unless ``dtype`` is given.

    Why ``zeros_like`` rather than ``zeros(shape)``: on a mesh with explicit axes the sharding is
    part of an array's type, and zeros made from the shape alone come out unsharded, so a state
    built by ``init`` would change its type after the first (sharded) update.
    """
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype or jnp.result_type(x)), tree)


def real_dtype(dtype: Any) -> Any:
    """The real dtype of a complex dtype (``complex64 -> float32``); other dtypes unchanged."""
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.dtype(dtype)


def tree_real_zeros_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Zeros with each leaf's shape, sharding and real dtype: storage for ``|g|^2`` statistics of complex leaves."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype or real_dtype(jnp.result_type(x))), tree)


def tree_real_full_like(tree: PyTree, value: float, dtype: Any = None) -> PyTree:
    """``value`` broadcast to each leaf's shape, in the leaf's real dtype unless ``dtype`` is given."""
    return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=dtype or real_dtype(jnp.result_type(x))), tree)


def tree_full_like(tree: PyTree, fill_value: Any, dtype: Any = None) -> PyTree:
    """``fill_value`` broadcast to each leaf's shape and sharding, with its dtype unless ``dtype`` is given.

    Also ``gradtx.tree.full_like``; matches ``optax.tree.full_like``.
    """
    return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype or jnp.result_type(x)), tree)


def tree_cast(tree: PyTree, dtype: Any) -> PyTree:
    """Casts every leaf to ``dtype`` (no-op when ``dtype`` is None)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def moving_average(new: jax.Array, average: jax.Array, decay: Any) -> jax.Array:
    """``decay * average + (1 - decay) * new``, the hyperparameter cast like ``average``.

    The exponential moving average behind every moment estimate (Adam's ``m`` and ``v``, AdaBelief,
    AdEMAMix, Sophia, ...), written once so that they all round alike.
    """
    if leaf_dtype(new) == leaf_dtype(average):
        # lax directly: a jnp operator traces as a nested jit, several per leaf and step.
        return lax.add(lax.mul(cast_like(decay, average), average), lax.mul(cast_like(1 - decay, average), new))
    return cast_like(decay, average) * average + cast_like(1 - decay, average) * new


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2`` element-wise: ``x^2`` for real ``x``, ``re(x)^2 + im(x)^2`` (a real array) for complex ``x``."""
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    if x.dtype.kind == "c":
        return jnp.square(x.real) + jnp.square(x.imag)
    return lax.square(x)


def tree_sum_of_squares(tree: PyTree) -> jax.Array:
    """``sum_i |x_i|^2`` over every element of every leaf, accumulated in float32 or wider.

    Complex leaves contribute ``|x_i|^2``; the result is real. A tree of float32 and float64
    leaves sums in float64.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)

    def leaf_sum(x):
        squares = abs_sq(x)
        return jnp.sum(squares.astype(jnp.promote_types(jnp.result_type(squares), jnp.float32)))

    return sum(leaf_sum(x) for x in leaves)


def tree_global_norm(tree: PyTree) -> jax.Array:
    """The Euclidean norm of all elements of the tree taken as one vector: ``sqrt(sum_i |x_i|^2)``.

    Accumulated in float32 or wider, so bfloat16 and float16 trees neither overflow nor lose the
    small leaves. Also exported as ``gradtx.global_norm`` (``optax.global_norm``).
    """
    return jnp.sqrt(tree_sum_of_squares(tree))


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """``<a, b> = sum_i conj(a_i) b_i`` summed over all leaves (``jnp.vdot``'s convention for complex)."""
    products = jax.tree.map(lambda x, y: jnp.sum((jnp.conj(x) if jnp.iscomplexobj(x) else x) * y), a, b)
    leaves = jax.tree.leaves(products)
    return sum(leaves) if leaves else jnp.zeros([], jnp.float32)


def path_to_str(path: tuple) -> str:
    """A readable rendering of a key path, e.g. ``['layer1']['w']`` or ``root`` for ``()``."""
    return jax.tree_util.keystr(path) if path else "<root>"


def check_trees_match(
    tree: PyTree,
    reference: PyTree,
    *,
    name: str = "updates",
    reference_name: str = "state",
    context: str | None = None,
    compare_shapes: bool = True,
) -> None:
    """Raises ``ValueError`` naming the first path where ``tree`` and ``reference`` differ.

    Structure is compared first (a missing or extra key, a list of another length), then the
    shape of every leaf. Both are static under ``jit``, so this runs at trace time and costs
    nothing in the compiled program. ``context`` (the transformation's name) prefixes the message;
    ``compare_shapes=False`` compares the structure only.
    Paths are only rendered when something differs, so the check is cheap on large trees.
    """
    tree_leaves, tree_def = jax.tree.flatten(tree)
    ref_leaves, ref_def = jax.tree.flatten(reference)
    if tree_def == ref_def and (
        not compare_shapes or all(_shape(a) == _shape(b) for a, b in zip(tree_leaves, ref_leaves))
    ):
        return
    prefix = f"{context}: the" if context else "The"
    source = "the params" if reference_name == "params" else f"the parameters the {reference_name} was built from"
    advice = (
        f" Pass {name} with the tree structure and leaf shapes of {source} (e.g. jax.grad of the loss "
        "with respect to them)."
    )
    tree_paths = jax.tree.leaves_with_path(tree)
    ref_paths = jax.tree.leaves_with_path(reference)
    if tree_def != ref_def:
        # Subtrees without leaves (None, a masked-out node) count as leaves here, so that the message
        # can name the path of one that the other tree lacks.
        empty = lambda x: not jax.tree.leaves(x)  # noqa: E731
        tree_keys = [path_to_str(p) for p, _ in jax.tree.leaves_with_path(tree, is_leaf=empty)]
        ref_keys = [path_to_str(p) for p, _ in jax.tree.leaves_with_path(reference, is_leaf=empty)]
        for a, b in zip(tree_keys, ref_keys):
            if a != b:
                raise ValueError(
                    f"{prefix} {name} tree does not match the {reference_name} tree: found a leaf at "
                    f"{a} where {reference_name} has {b}.{advice}"
                )
        if len(tree_keys) != len(ref_keys):
            longer, which = (tree_keys, name) if len(tree_keys) > len(ref_keys) else (ref_keys, reference_name)
            extra = longer[min(len(tree_keys), len(ref_keys))]
            raise ValueError(
                f"{prefix} {name} tree does not match the {reference_name} tree: {which} has an extra "
                f"leaf at {extra} ({len(tree_keys)} leaves in {name}, {len(ref_keys)} in "
                f"{reference_name}).{advice}"
            )
        raise ValueError(
            f"{prefix} {name} tree does not match the {reference_name} tree: "
            f"{tree_def} vs {ref_def}.{advice}"
        )
    for (path, leaf), (_, ref_leaf) in zip(tree_paths, ref_paths):
        if np.shape(leaf) != np.shape(ref_leaf):
            raise ValueError(
                f"{prefix} {name} tree does not match the {reference_name} tree at {path_to_str(path)}: "
                f"shape {np.shape(leaf)} in {name} vs {np.shape(ref_leaf)} in {reference_name}.{advice}"
            )


def _shape(leaf: Any) -> tuple:
    shape = getattr(leaf, "shape", None)
    return tuple(shape) if shape is not None else np.shape(leaf)


def check_updates_match_params(updates: PyTree, params: PyTree | None, context: str) -> None:
    """``check_trees_match(updates, params)`` when ``params`` is given: the check of stateless transforms.

    A transformation without a per-leaf state has nothing else to compare the updates with, and
    without it a ``(1, 2)`` gradient would broadcast silently onto a ``(3, 2)`` parameter.
    """
    if params is not None:
        check_trees_match(updates, params, name="updates", reference_name="params", context=context)


def check_float_leaves(tree: PyTree, *, name: str = "params", allow_complex: bool = False) -> None:
    """Raises ``TypeError`` naming the first leaf whose dtype a real-valued method cannot use.

    Integer and boolean leaves cannot carry a gradient step; complex leaves are rejected unless
    the method states that it supports them.
    """
    for path, leaf in jax.tree.leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            if not allow_complex:
                raise TypeError(
                    f"{name} leaf {path_to_str(path)} has complex dtype {dtype}; this "
                    "transformation is defined for real floating-point leaves only."
                )
        elif not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} leaf {path_to_str(path)} has dtype {dtype}; gradient transformations "
                "need floating-point leaves (cast it, or exclude it with gradtx.masked/freeze)."
            )


def clip_for_square(g: jax.Array, accumulator: jax.Array) -> jax.Array:
    """``g`` with finite entries clipped to ``+-sqrt(M) / 2``, so that ``g^2`` cannot overflow.

    ``M`` is the largest finite value of the narrower of ``g``'s and ``accumulator``'s dtypes; the
    bound is about 9.2e18 in float32 and bfloat16, 128 in float16 and 6.7e153 in float64, so
    ``g^2`` and every convex combination of such squares stay below ``M / 4``. Entries inside the
    bound are returned bit for bit; NaN and +-inf pass unchanged, so a broken gradient stays
    visible (see ``apply_if_finite``).

    Why: in float32 a gradient of 1e30 squares to inf; once a second-moment average holds inf it
    keeps it forever and the method stalls. Adam-type updates ``m / sqrt(v)`` are invariant to the
    scale of ``g``, so clipping before both moments keeps the step's size and direction.

    Cost: three elementwise operations (``is_finite``, ``clamp``, ``select``) in each kernel that
    reads ``g``; nothing at run time (the step is memory-bound), but about 15-25% more XLA:CPU
    compile time for Adam on many small leaves (benchmarks/RESULTS.md, "default path"). The
    optimizers that use it take ``overflow_guard=False`` to leave it out.

    Complex ``g`` is returned unchanged (decided at trace time from the dtype).
    """
    dtype = leaf_dtype(g)
    if dtype.kind == "c":
        return g
    low, high = _square_bounds(dtype, leaf_dtype(accumulator))
    # lax rather than jnp.clip/jnp.where: those trace as nested jit calls, one pair per leaf,
    # which made the Adam step of a 1000-leaf tree slower to compile than Optax's.
    return lax.select(lax.is_finite(g), lax.clamp(low, g, high), g)


def clip_for_square_unmerged(g: jax.Array, accumulator: jax.Array) -> jax.Array:
    """``clip_for_square(g, accumulator)`` bit for bit, written with other operations.

    Why: when one clipped gradient feeds both a moving average and the step (RMSProp), XLA:CPU
    writes it to memory as an extra array (12 more bytes per parameter and step: 3x the time of
    ``optax.rmsprop`` on 16M parameters). Clipping a second time with operations XLA cannot
    merge with the first lets each copy fuse into its own consumer. Complex ``g`` passes unchanged.
    """
    dtype = leaf_dtype(g)
    if dtype.kind == "c":
        return g
    _, bound = _square_bounds(dtype, leaf_dtype(accumulator))
    clipped = lax.select(lax.is_finite(g), lax.mul(lax.sign(g), bound), g)
    return lax.select(lax.le(lax.abs(g), bound), g, clipped)


@functools.cache
def _square_bounds(dtype: np.dtype, accumulator_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``-+sqrt(M) / 2`` in ``dtype``, ``M`` the largest value of the narrower of the two dtypes.

    Cached: it is the same pair for every leaf of a tree, and ``finfo`` is slow to ask per leaf.
    """
    max_value = min(float(jnp.finfo(dtype).max), float(jnp.finfo(accumulator_dtype).max))
    bound = np.asarray(np.sqrt(max_value) / 2, dtype)
    return _frozen(np.asarray(-bound, dtype)), _frozen(bound)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def leaf_dtype(leaf: Any) -> np.dtype:
    """A leaf's dtype, read from its ``dtype`` attribute when it has one (``jnp.result_type`` is
    slow to call per leaf) and from ``jnp.result_type`` for Python scalars and lists."""
    dtype = getattr(leaf, "dtype", None)
    return dtype if isinstance(dtype, np.dtype) else np.dtype(jnp.result_type(leaf))


def saturate(x: jax.Array) -> jax.Array:
    """``min(x, M)`` with ``M`` the largest finite value of ``x``'s dtype: a sum that cannot reach inf.

    NaN passes unchanged. Used for running sums of squares (AdaGrad), which grow without bound.

    Written as ``select(x > M, M, x)``, not ``lax.min``: XLA:CPU copies a ``min`` with a constant
    into every kernel that reads its result, so a step reading the new sum recomputed it from the
    old one, which then had to be copied before the state was written over it (AdaGrad's step
    took 2-3x Optax's). A select is computed once and stored. Same values, NaN included.
    """
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    largest = lax.full_like(x, _largest(leaf_dtype(x)))
    return lax.select(lax.gt(x, largest), largest, x)


@functools.cache
def _largest(dtype: np.dtype) -> np.ndarray:
    return _frozen(np.asarray(jnp.finfo(dtype).max, dtype))


def cast_eps_like(eps: Any, leaf: jax.Array) -> jax.Array:
    """``eps`` in ``leaf``'s dtype, raised to the dtype's smallest normal number if it is below it.

    Why: 1e-8 rounds to 0 in float16 (and a subnormal may be flushed to 0), which turns the
    ``0 / (0 + eps)`` of a zero gradient into NaN. In float32 and float64 any eps above 1.2e-38
    and 2.2e-308 respectively is returned exactly.
    """
    dtype = leaf_dtype(leaf)
    tiny = _tiny(dtype)
    eps = cast_like(eps, leaf)
    # A NumPy constant stays one (see cast_like); only a traced eps needs a JAX operation.
    return np.maximum(eps, tiny) if isinstance(eps, np.ndarray) else jnp.maximum(eps, tiny)


@functools.cache
def _tiny(dtype: np.dtype) -> np.ndarray:
    return _frozen(np.asarray(jnp.finfo(dtype).tiny, dtype))


def _is_python_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _constant(value: float, dtype: Any) -> np.ndarray:
    """``jnp.asarray(value).astype(dtype)`` computed by NumPy: the same rounding (through JAX's
    default float or int type), but a constant rather than an eagerly run JAX operation."""
    # The default type depends on jax_enable_x64, which may change between calls: part of the key.
    # -0.0 == 0.0 as a key, so the sign is part of it too (a zero learning rate flips to -0.0).
    negative = math.copysign(1.0, value) < 0
    return _cached_constant(value, type(value), negative, np.dtype(dtype), jax.config.jax_enable_x64)


@functools.lru_cache(maxsize=4096)
def _cached_constant(value: float, kind: type, negative: bool, dtype: np.dtype, x64: bool) -> np.ndarray:
    del negative, x64
    return _frozen(np.asarray(np.asarray(value, jnp.result_type(kind)), dtype))


def keep_dtype(x: jax.Array, dtype: Any) -> jax.Array:
    """``x.astype(dtype)``, skipped when ``x`` already has that dtype (cheaper to trace)."""
    return x if leaf_dtype(x) == dtype else x.astype(dtype)


def cast_like(value: Any, leaf: jax.Array) -> jax.Array:
    """A hyperparameter as an array of ``leaf``'s dtype, so arithmetic never widens a leaf.

    Without it a float64 schedule value (under ``jax_enable_x64``) would promote float32 or
    bfloat16 state to float64 and change the state's type between steps.
    """
    dtype = leaf_dtype(leaf)
    if _is_python_number(value):
        # Why: tracing a tree of 1000 leaves calls this thousands of times; a NumPy constant
        # costs nothing there, where a JAX conversion runs an operation each time.
        return _constant(value, dtype)
    return keep_dtype(jnp.asarray(value), dtype)
