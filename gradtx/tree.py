"""Arithmetic on pytrees, Optax's ``optax.tree`` namespace: ``gradtx.tree.add``, ``gradtx.tree.norm``, ...

A tree stands for one vector, the concatenation of its leaves: ``add``, ``sub``, ``mul``,
``div``, ``scale`` and ``add_scale`` act leaf by leaf, ``vdot``, ``sum``, ``max``, ``min``,
``norm`` and ``size`` reduce over all leaves. Every name, argument and default is Optax's, so
``optax.tree.x(...)`` ports as ``gradtx.tree.x(...)``. Also here: casting (``cast``,
``cast_like``, ``dtype``), random trees (``random_like``, ``split_key_like``), the moving
averages optimizers keep (``update_moment``, ``update_infinity_moment``,
``update_moment_per_elem_norm``, ``bias_correction``) and lookups in optimizer states
(``get``, ``set``, ``get_all_with_path``, in ``gradtx.tree_state``).

Names that gradtx already had are the same functions under their Optax names:
``zeros_like``, ``full_like``, ``cast`` and ``vdot`` are ``gradtx.tree_utils``'
``tree_zeros_like``, ``tree_full_like``, ``tree_cast`` and ``tree_vdot``, and
``bias_correction`` is ``gradtx.bias_correction``.

Four names shadow Python builtins inside this namespace (``sum``, ``max``, ``min``, ``set``), as
in Optax: call them as ``gradtx.tree.sum(...)``.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.momentum import bias_correction
from gradtx.state_utils import tree_map_params as map_params
from gradtx.tree_state import NamedTupleKey, get, get_all_with_path, set
from gradtx.tree_utils import (
    abs_sq,
    path_to_str,
    tree_sum_of_squares,
)
from gradtx.tree_utils import tree_cast as cast
from gradtx.tree_utils import tree_full_like as full_like
from gradtx.tree_utils import tree_vdot as vdot
from gradtx.tree_utils import tree_zeros_like as zeros_like

PyTree = Any

__all__ = [
    "NamedTupleKey",
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "clip",
    "conj",
    "div",
    "dtype",
    "full_like",
    "get",
    "get_all_with_path",
    "map_params",
    "max",
    "min",
    "mul",
    "norm",
    "ones_like",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "split_key_like",
    "sub",
    "sum",
    "unwrap_random_key_data",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "zeros_like",
]


def _is_none(x: Any) -> bool:
    return x is None


# --------------------------------------------------------------------------------------------
# Leaf-by-leaf arithmetic.
# --------------------------------------------------------------------------------------------


def add(tree_x: PyTree, tree_y: PyTree, *other_trees: PyTree) -> PyTree:
    """``x + y (+ ...)`` leaf by leaf, for two or more trees of one structure. Matches ``optax.tree.add``."""
    return jax.tree.map(lambda *leaves: functools.reduce(operator.add, leaves), tree_x, tree_y, *other_trees)


def sub(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """``x - y`` leaf by leaf. Matches ``optax.tree.sub``."""
    return jax.tree.map(operator.sub, tree_x, tree_y)


def mul(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """``x * y`` leaf by leaf (element-wise). Matches ``optax.tree.mul``."""
    return jax.tree.map(operator.mul, tree_x, tree_y)


def div(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """``x / y`` leaf by leaf (element-wise). Matches ``optax.tree.div``."""
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def scale(scalar: Any, tree: PyTree) -> PyTree:
    """``scalar * x`` for every leaf (JAX's type promotion applies). Matches ``optax.tree.scale``."""
    return jax.tree.map(lambda x: scalar * x, tree)


def add_scale(tree_x: PyTree, scalar: Any, tree_y: PyTree) -> PyTree:
    """``x + scalar * y`` leaf by leaf; ``None`` leaves of ``x`` stay ``None``. Matches ``optax.tree.add_scale``."""
    scalar = jnp.asarray(scalar)
    return jax.tree.map(lambda x, y: None if x is None else x + scalar * y, tree_x, tree_y, is_leaf=_is_none)


def conj(tree: PyTree) -> PyTree:
    """The complex conjugate ``conj(x)`` of every leaf (real leaves unchanged). Matches ``optax.tree.conj``."""
    return jax.tree.map(jnp.conj, tree)


def real(tree: PyTree) -> PyTree:
    """The real part ``re(x)`` of every leaf. Matches ``optax.tree.real``."""
    return jax.tree.map(jnp.real, tree)


def clip(tree: PyTree, min_value: Any = None, max_value: Any = None) -> PyTree:
    """``min(max(x, min_value), max_value)`` element-wise; a ``None`` bound is not applied.

    Matches ``optax.tree.clip``.
    """
    return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def where(condition: Any, tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """``x`` where ``condition`` holds, else ``y``, leaf by leaf (``condition`` broadcasts).

    Matches ``optax.tree.where``.
    """
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def ones_like(tree: PyTree, dtype: Any = None) -> PyTree:
    """Ones with each leaf's shape, and its dtype unless ``dtype`` is given. Matches ``optax.tree.ones_like``."""
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def batch_shape(tree: PyTree, shape: tuple[int, ...] = ()) -> PyTree:
    """Every leaf broadcast to ``(*shape, *leaf.shape)``: leading batch axes. Matches ``optax.tree.batch_shape``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


# --------------------------------------------------------------------------------------------
# Reductions over all leaves.
# --------------------------------------------------------------------------------------------


def sum(tree: PyTree, associative_reduction: bool = False) -> Any:
    """``sum_i x_i`` over every element of every leaf; 0 for an empty tree.

    Leaves are summed in order. ``associative_reduction=True`` sums the per-leaf totals as a
    balanced tree instead (``jax.tree.reduce_associative``): a shorter program for trees of
    thousands of leaves, rounded differently. Matches ``optax.tree.sum``.
    """
    totals = [jnp.sum(x) for x in jax.tree.leaves(tree)]
    if associative_reduction:
        return jax.tree.reduce_associative(operator.add, totals, identity=0)
    return functools.reduce(operator.add, totals, 0)


def max(tree: PyTree) -> Any:
    """``max_i x_i`` over every element of every leaf; ``-inf`` for a tree without elements.

    Matches ``optax.tree.max``.
    """
    maxima = [jnp.max(x) for x in jax.tree.leaves(tree) if jnp.size(x)]
    return functools.reduce(jnp.maximum, maxima, -float("inf"))


def min(tree: PyTree) -> Any:
    """``min_i x_i`` over every element of every leaf; ``+inf`` for a tree without elements.

    Matches ``optax.tree.min``.
    """
    minima = [jnp.min(x) for x in jax.tree.leaves(tree) if jnp.size(x)]
    return functools.reduce(jnp.minimum, minima, float("inf"))


def size(tree: PyTree) -> int:
    """``n``, the number of elements of all leaves together (a Python int). Matches ``optax.tree.size``."""
    return builtins.sum(jnp.size(x) for x in jax.tree.leaves(tree))


def norm(tree: PyTree, ord: int | float | str | None = None, squared: bool = False) -> jax.Array:
    """The vector norm of the tree taken as one vector.

    .. math::
        \\|x\\|_2 = \\sqrt{\\textstyle\\sum_i |x_i|^2}, \\qquad
        \\|x\\|_1 = \\textstyle\\sum_i |x_i|, \\qquad
        \\|x\\|_\\infty = \\max_i |x_i|

    Args:
      tree: the tree.
      ord: ``None`` or 2 (default), 1, or ``jnp.inf`` (also ``"inf"``, ``"infinity"``).
      squared: return the square of the norm (for ``ord=2``, without the square root).

    The 2-norm accumulates in float32 or wider (bfloat16 leaves neither overflow nor round
    away small leaves; Optax sums in the leaves' dtype), so a mixed-precision tree gets the
    norm of its values. Complex leaves contribute ``|x_i|``. Matches ``optax.tree.norm``.
    """
    if ord is None or ord == 2:
        squares = tree_sum_of_squares(tree)
        return squares if squared else jnp.sqrt(squares)
    if ord == 1:
        value = sum(jax.tree.map(jnp.abs, tree))
    elif ord == jnp.inf or ord in ("inf", "infinity"):
        value = max(jax.tree.map(jnp.abs, tree))
    else:
        raise ValueError(f"norm: ord must be None, 1, 2 or inf, got {ord!r}.")
    value = jnp.asarray(value)
    return jnp.square(value) if squared else value


def allclose(a: PyTree, b: PyTree, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
    """``|a_i - b_i| <= atol + rtol |b_i|`` for every element of every leaf (``jnp.allclose`` per leaf).

    Matches ``optax.tree.allclose``.
    """
    results = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.allclose(x, y, rtol, atol, equal_nan), a, b))
    return functools.reduce(operator.and_, results, True)


# --------------------------------------------------------------------------------------------
# Moving averages, as optimizers keep them.
# --------------------------------------------------------------------------------------------


def update_moment(updates: PyTree, moments: PyTree, decay: Any, order: int) -> PyTree:
    """The moving average of the ``order``-th power: ``m_t = (1 - beta) g^k + beta m_{t-1}``.

    ``None`` leaves of ``updates`` stay ``None``. Matches ``optax.tree.update_moment``.
    """
    return jax.tree.map(
        lambda g, m: None if g is None else (1 - decay) * (g**order) + decay * m, updates, moments, is_leaf=_is_none
    )


def update_infinity_moment(updates: PyTree, moments: PyTree, decay: Any, eps: Any) -> PyTree:
    """The decaying maximum of Adamax: ``u_t = max(|g| + eps, beta u_{t-1})``.

    ``None`` leaves of ``updates`` stay ``None``. Matches ``optax.tree.update_infinity_moment``.
    Reference: Kingma & Ba 2015, Section 7.1.
    """
    return jax.tree.map(
        lambda g, m: None if g is None else jnp.maximum(jnp.abs(g) + eps, decay * m), updates, moments, is_leaf=_is_none
    )


def update_moment_per_elem_norm(updates: PyTree, moments: PyTree, decay: Any, order: int) -> PyTree:
    """The moving average of ``|g|^k``: ``m_t = (1 - beta) |g|^k + beta m_{t-1}``.

    For real ``g`` the power is ``g^k`` as written (Optax's choice; ``k`` is even in practice);
    for complex ``g`` it is ``(|g|^2)^(k/2)``, real. ``None`` leaves of ``updates`` stay ``None``.
    Matches ``optax.tree.update_moment_per_elem_norm``.
    """

    def power(g):
        if not jnp.iscomplexobj(g):
            return g**order
        half = order / 2
        return abs_sq(g) ** (int(half) if float(half).is_integer() else half)

    return jax.tree.map(
        lambda g, m: None if g is None else (1 - decay) * power(g) + decay * m, updates, moments, is_leaf=_is_none
    )


# --------------------------------------------------------------------------------------------
# Casting.
# --------------------------------------------------------------------------------------------


def cast_like(tree: PyTree, other_tree: PyTree) -> PyTree:
    """Each leaf of ``tree`` cast to the dtype of the matching leaf of ``other_tree``.

    Leaves of ``other_tree`` without a dtype (Python numbers) leave theirs unchanged.
    Matches ``optax.tree.cast_like``.
    """
    return jax.tree.map(lambda x, o: x.astype(o.dtype) if hasattr(o, "dtype") else x, tree, other_tree)


def _ordered(first: Any, second: Any, lowest: bool) -> Any:
    promoted = jnp.promote_types(first, second)
    if promoted not in (jnp.dtype(first), jnp.dtype(second)):
        raise ValueError(f"dtype: neither {first} nor {second} promotes to the other, so they cannot be ordered.")
    higher = promoted
    lower = jnp.dtype(second) if promoted == jnp.dtype(first) else jnp.dtype(first)
    return lower if lowest else higher


def dtype(tree: PyTree, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of the tree's leaves.

    Args:
      tree: the tree (an empty tree has JAX's default float dtype).
      mixed_dtype_handler: what to do when the leaves differ. ``None`` (default): raise a
        ``ValueError`` naming each leaf that differs from the first; ``"promote"``:
        ``jnp.promote_types`` of all of them; ``"highest"`` / ``"lowest"``: the dtype every other
        promotes to / that promotes to every other (``ValueError`` if two cannot be ordered).

    Matches ``optax.tree.dtype``.
    """
    leaves = jax.tree.leaves_with_path(tree)
    if not leaves:
        return jnp.asarray([]).dtype
    dtypes = [jnp.asarray(x).dtype for _, x in leaves]
    if mixed_dtype_handler is None:
        mismatched = [f"{path_to_str(path)} is {d}" for (path, _), d in zip(leaves, dtypes) if d != dtypes[0]]
        if mismatched:
            raise ValueError(
                f"dtype: the tree mixes dtypes (first leaf {dtypes[0]}; {', '.join(mismatched)}); pass "
                "mixed_dtype_handler='promote', 'highest' or 'lowest'."
            )
        return dtypes[0]
    if mixed_dtype_handler == "promote":
        return functools.reduce(jnp.promote_types, dtypes)
    if mixed_dtype_handler in ("highest", "lowest"):
        return functools.reduce(functools.partial(_ordered, lowest=mixed_dtype_handler == "lowest"), dtypes)
    raise ValueError(
        f"dtype: mixed_dtype_handler must be None, 'promote', 'highest' or 'lowest', got {mixed_dtype_handler!r}."
    )


# --------------------------------------------------------------------------------------------
# Random trees.
# --------------------------------------------------------------------------------------------


def split_key_like(rng_key: jax.Array, target_tree: PyTree) -> PyTree:
    """One key per leaf of ``target_tree``, split from ``rng_key`` in leaf order.

    Matches ``optax.tree.split_key_like``.
    """
    treedef = jax.tree.structure(target_tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(rng_key, treedef.num_leaves)))


def random_like(
    rng_key: jax.Array,
    target_tree: PyTree,
    sampler: Callable[..., jax.Array] = jax.random.normal,
    dtype: Any = None,
) -> PyTree:
    """A tree shaped like ``target_tree`` whose leaf ``l`` is ``sampler(key_l, shape_l, dtype_l)``.

    The keys come from ``split_key_like(rng_key, target_tree)``; ``dtype`` defaults to each
    leaf's. A sampler that takes ``out_sharding`` gets the leaf's sharding, so the noise is laid
    out like the parameters. Matches ``optax.tree.random_like`` (same keys, same numbers).
    """
    keys = split_key_like(rng_key, target_tree)
    takes_sharding = "out_sharding" in inspect.signature(sampler).parameters

    def draw(leaf, key):
        leaf_dtype = dtype or leaf.dtype
        if takes_sharding:
            return sampler(key, leaf.shape, leaf_dtype, out_sharding=jax.typeof(leaf).sharding)
        return sampler(key, leaf.shape, leaf_dtype)

    return jax.tree.map(draw, target_tree, keys)


def unwrap_random_key_data(input_tree: PyTree) -> PyTree:
    """Typed PRNG keys (``jax.random.key``) replaced by their raw ``key_data``, other leaves unchanged.

    For comparing or checkpointing states that hold keys. Matches ``optax.tree.unwrap_random_key_data``.
    """

    def unwrap(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(unwrap, input_tree)
