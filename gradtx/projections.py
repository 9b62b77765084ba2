"""Euclidean projections of pytrees onto convex sets (and two spheres): ``gradtx.projections``.

Each function returns the point of a set nearest to its input,

.. math::
    P_C(x) = \\arg\\min_{p \\in C} \\|x - p\\|_2^2,

with the whole tree taken as one vector. Use them for projected gradient descent: take an
optimizer step, then project the parameters, ``params = projection_box(params, 0.0, 1.0)``.
Every name and argument is Optax's (``optax.projections``). Where Optax returns a point off
the set (the l1 and l2 spheres at inputs with zeros) or fails (scalar box bounds on a tree),
these return the projection; each docstring says so.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx.tree_utils import check_trees_match, tree_sum_of_squares, tree_vdot
from gradtx.validation import check_non_negative, check_positive

PyTree = Any

__all__ = [
    "projection_non_negative",
    "projection_box",
    "projection_hypercube",
    "projection_simplex",
    "projection_l1_sphere",
    "projection_l1_ball",
    "projection_l2_sphere",
    "projection_l2_ball",
    "projection_linf_ball",
    "projection_vector",
    "projection_hyperplane",
    "projection_halfspace",
]


def _bound_tree(bound: Any, tree: PyTree, name: str) -> PyTree:
    """``bound`` as a tree shaped like ``tree``: a scalar is broadcast to every leaf."""
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(bound)) and jnp.ndim(bound) == 0:
        return jax.tree.map(lambda _: bound, tree)
    if jax.tree.structure(bound) != jax.tree.structure(tree):
        raise ValueError(
            f"{name} must be a scalar or a tree with the structure of tree: got {jax.tree.structure(bound)}, "
            f"tree is {jax.tree.structure(tree)}."
        )
    return bound


def projection_non_negative(tree: PyTree) -> PyTree:
    """Projection onto the non-negative orthant: ``p_i = max(x_i, 0)``.

    .. math::
        P(x) = \\arg\\min_{p \\ge 0} \\|x - p\\|_2^2 = \\max(x, 0)

    Matches ``optax.projections.projection_non_negative``.
    """
    return jax.tree.map(jax.nn.relu, tree)


def projection_box(tree: PyTree, lower: Any, upper: Any) -> PyTree:
    """Projection onto the box ``lower <= p <= upper``: ``p_i = min(max(x_i, l_i), u_i)``.

    .. math::
        P(x) = \\arg\\min_{l \\le p \\le u} \\|x - p\\|_2^2 = \\min(\\max(x, l), u)

    Args:
      tree: the point ``x`` to project.
      lower: ``l``, a scalar or a tree with the structure of ``tree`` (leaves broadcastable).
      upper: ``u``, a scalar or such a tree; ``l <= u``.

    Raises:
      ValueError: ``lower > upper`` (Python numbers), or a bound tree with another structure.

    Matches ``optax.projections.projection_box``; Optax needs tree bounds when ``tree`` is a
    container (a scalar bound fails there), gradtx broadcasts a scalar to every leaf.
    """
    if isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and lower > upper:
        raise ValueError(f"projection_box needs lower <= upper, got lower={lower!r}, upper={upper!r}.")
    lower = _bound_tree(lower, tree, "lower")
    upper = _bound_tree(upper, tree, "upper")
    return jax.tree.map(jnp.clip, tree, lower, upper)


def projection_hypercube(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the hypercube ``[0, scale]^n``: ``p_i = min(max(x_i, 0), scale)``.

    .. math::
        P(x) = \\arg\\min_{0 \\le p \\le s} \\|x - p\\|_2^2

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` >= 0, the side of the cube (a scalar or a tree). Default 1 (the unit cube).

    Matches ``optax.projections.projection_hypercube`` (which, unlike this one, fails on a
    container ``tree`` with a scalar ``scale``).
    """
    check_non_negative(scale, "scale")
    return projection_box(tree, lower=0, upper=scale)


@jax.custom_jvp
def _simplex(values: jax.Array, scale: jax.Array) -> jax.Array:
    """Duchi et al. (2008), Figure 1: sort, find the last index kept, shift and clip."""
    n = values.shape[0]
    descending = jnp.sort(values)[::-1]
    partial_sums = jnp.cumsum(descending)
    index = jnp.arange(1, n + 1, dtype=values.dtype)
    # rho = max{ j : u_j - (sum_{r <= j} u_r - s) / j > 0 }; j = 1 always qualifies.
    kept = descending - (partial_sums - scale) / index > 0
    rho = jnp.max(jnp.where(kept, jnp.arange(1, n + 1), 1))
    theta = (partial_sums[rho - 1] - scale) / rho.astype(values.dtype)
    return jnp.maximum(values - theta, 0)


@_simplex.defjvp
def _simplex_jvp(primals, tangents):
    values, scale = primals
    values_dot, scale_dot = tangents
    projected = _simplex(values, scale)
    # On the support S: p_i = v_i - theta, theta = (sum_S v - s) / |S|, so
    # dp_i = dv_i - (sum_S dv - ds) / |S|; off the support dp_i = 0.
    support = (projected > 0).astype(values.dtype)
    count = jnp.maximum(jnp.sum(support), 1)
    shift = (jnp.sum(support * values_dot) - scale_dot) / count
    return projected, support * (values_dot - shift)


def projection_simplex(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the simplex ``{p >= 0, sum_i p_i = scale}`` (the probability simplex by default).

    .. math::
        P(x) = \\arg\\min_{p \\ge 0, \\ 1^\\top p = s} \\|x - p\\|_2^2 = \\max(x - \\theta, 0)

    where ``theta`` is the one number that makes the result sum to ``s``. It is found exactly
    by sorting (Duchi et al. 2008, Figure 1): with ``u`` the entries in decreasing order,
    ``rho = max{j : u_j - (sum_{r<=j} u_r - s) / j > 0}`` and
    ``theta = (sum_{r<=rho} u_r - s) / rho``. Cost ``O(n log n)``. The whole tree is one
    vector ``x``. Gradients (``jax.grad``, ``jax.jvp``) are the projection's derivative:
    ``dp = dx - mean_S(dx)`` on the support ``S`` of ``p``, 0 elsewhere.

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` > 0, the sum of the result. Default 1.

    Raises:
      ValueError: ``scale <= 0`` (a Python number).

    Matches ``optax.projections.projection_simplex``.
    References:
      Duchi, Shalev-Shwartz, Singer, Chandra, "Efficient Projections onto the l1-Ball for
      Learning in High Dimensions", ICML 2008; Held, Wolfe, Crowder 1974.
    """
    check_positive(scale, "scale")
    values, unravel = ravel_pytree(tree)
    if values.size == 0:
        raise ValueError("projection_simplex needs a tree with at least one element.")
    return unravel(_simplex(values, jnp.asarray(scale, values.dtype)))


def projection_l1_sphere(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the l1 sphere ``{p : ||p||_1 = scale}``.

    .. math::
        P(x) = \\arg\\min_{\\|p\\|_1 = s} \\|x - p\\|_2^2 = \\sigma \\odot P_{\\Delta_s}(|x|)

    where ``P_{Delta_s}`` is ``projection_simplex`` with sum ``s`` and ``sigma_i = sign(x_i)``,
    taken as ``+1`` where ``x_i = 0``. The sphere is not convex: for ``x`` inside the ball the
    nearest point can put weight on entries where ``x_i = 0``, and for those either sign is
    nearest (``+1`` is returned). Optax multiplies by ``sign(x_i) = 0`` there and so returns a
    point off the sphere (``[0.1, 0, 0]`` with ``s = 1`` gives ``[0.4, 0, 0]``, where the
    projection is ``[0.4, 0.3, 0.3]``); gradtx follows the definition. Outside the ball, and
    wherever ``x`` has no zero entry, the two agree.

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` > 0, the radius. Default 1.

    Matches ``optax.projections.projection_l1_sphere`` except at zero entries (above).
    Reference: Duchi et al., ICML 2008 (the l1 ball through the simplex).
    """
    check_positive(scale, "scale")
    signs = jax.tree.map(lambda x: jnp.where(x < 0, -1, 1).astype(jnp.result_type(x)), tree)
    magnitudes = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
    return jax.tree.map(jnp.multiply, signs, magnitudes)


def projection_l1_ball(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the l1 ball ``{p : ||p||_1 <= scale}``.

    .. math::
        P(x) = x \\ \\text{if } \\|x\\|_1 \\le s, \\qquad
        P(x) = \\mathrm{sign}(x) \\odot P_{\\Delta_s}(|x|) \\ \\text{otherwise}

    (outside the ball the nearest point lies on the sphere, and there the projection onto the
    simplex keeps zero entries at zero). Both branches are computed and one is selected.

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` > 0, the radius. Default 1.

    Matches ``optax.projections.projection_l1_ball``.
    Reference: Duchi, Shalev-Shwartz, Singer, Chandra, ICML 2008, Figure 2.
    """
    check_positive(scale, "scale")
    l1_norm = sum((jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)), start=jnp.zeros([]))
    on_sphere = projection_l1_sphere(tree, scale)
    return jax.tree.map(lambda x, p: jnp.where(l1_norm <= scale, x, p), tree, on_sphere)


def projection_l2_sphere(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the l2 sphere ``{p : ||p||_2 = scale}``: ``p = scale x / ||x||_2``.

    .. math::
        P(x) = \\arg\\min_{\\|p\\|_2 = s} \\|x - p\\|_2^2 = s \\frac{x}{\\|x\\|_2}

    At ``x = 0`` every point of the sphere is nearest; gradtx returns ``s / sqrt(n)`` in every
    entry (the same choice as ``projection_l1_sphere``), where Optax returns NaN.

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` > 0, the radius. Default 1.

    Matches ``optax.projections.projection_l2_sphere`` for ``x != 0``.
    """
    check_positive(scale, "scale")
    norm, zero = _safe_norm(tree)
    size = sum(jnp.size(x) for x in jax.tree.leaves(tree))
    factor = scale / norm
    fallback = scale / jnp.sqrt(jnp.asarray(max(size, 1), norm.dtype))
    return jax.tree.map(lambda x: jnp.where(zero, fallback, factor * x).astype(jnp.result_type(x)), tree)


def projection_l2_ball(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the l2 ball ``{p : ||p||_2 <= scale}``: shrink ``x`` onto it if it is outside.

    .. math::
        P(x) = x \\min\\Big(1, \\frac{s}{\\|x\\|_2}\\Big)

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` >= 0, the radius. Default 1.

    Matches ``optax.projections.projection_l2_ball``.
    """
    check_non_negative(scale, "scale")
    norm, zero = _safe_norm(tree)
    inside = zero | (norm <= scale)
    factor = jnp.where(inside, 1, scale / jnp.where(inside, 1, norm))
    return jax.tree.map(lambda x: (factor * x).astype(jnp.result_type(x)), tree)


def projection_linf_ball(tree: PyTree, scale: Any = 1) -> PyTree:
    """Projection onto the l-infinity ball ``{p : max_i |p_i| <= scale}``: ``p_i = clip(x_i, -s, s)``.

    .. math::
        P(x) = \\arg\\min_{\\|p\\|_\\infty \\le s} \\|x - p\\|_2^2 = \\min(\\max(x, -s), s)

    Args:
      tree: the point ``x`` to project.
      scale: ``s`` >= 0, the radius. Default 1.

    Matches ``optax.projections.projection_linf_ball``.
    """
    check_non_negative(scale, "scale")
    return jax.tree.map(lambda x: jnp.clip(x, -scale, scale), tree)


def _safe_norm(tree: PyTree) -> tuple[jax.Array, jax.Array]:
    """``(||x||_2, ||x||_2 == 0)``, with a finite gradient at ``x = 0`` (the square root sees 1 there)."""
    squares = tree_sum_of_squares(tree)
    zero = squares == 0
    return jnp.sqrt(jnp.where(zero, 1, squares)), zero


def _ratio(numerator: jax.Array, a: PyTree) -> jax.Array:
    return numerator / tree_vdot(a, a)


def projection_vector(x: PyTree, a: PyTree) -> PyTree:
    """Projection of ``x`` onto the line spanned by ``a``: ``p = (<x, a> / <a, a>) a``.

    .. math::
        P(x) = \\frac{\\langle x, a \\rangle}{\\langle a, a \\rangle} a

    ``a`` must have the structure and shapes of ``x`` and be nonzero (``a = 0`` gives NaN).

    Matches ``optax.projections.projection_vector``.
    """
    check_trees_match(a, x, name="a", reference_name="x")
    factor = _ratio(tree_vdot(x, a), a)
    return jax.tree.map(lambda leaf: factor * leaf, a)


def projection_hyperplane(x: PyTree, a: PyTree, b: Any) -> PyTree:
    """Projection onto the hyperplane ``{p : <a, p> = b}``.

    .. math::
        P(x) = x + \\frac{b - \\langle a, x \\rangle}{\\langle a, a \\rangle} a

    ``a`` must have the structure and shapes of ``x`` and be nonzero.

    Matches ``optax.projections.projection_hyperplane``.
    """
    check_trees_match(a, x, name="a", reference_name="x")
    factor = _ratio(b - tree_vdot(a, x), a)
    return jax.tree.map(lambda xi, ai: xi + factor * ai, x, a)


def projection_halfspace(x: PyTree, a: PyTree, b: Any) -> PyTree:
    """Projection onto the halfspace ``{p : <a, p> <= b}``: ``x`` if it is inside, else onto the boundary.

    .. math::
        P(x) = x + \\frac{\\min(0, b - \\langle a, x \\rangle)}{\\langle a, a \\rangle} a

    ``a`` must have the structure and shapes of ``x`` and be nonzero.

    Matches ``optax.projections.projection_halfspace``.
    """
    check_trees_match(a, x, name="a", reference_name="x")
    factor = _ratio(jnp.minimum(b - tree_vdot(a, x), 0), a)
    return jax.tree.map(lambda xi, ai: xi + factor * ai, x, a)
