"""GaLore: the base optimizer runs on low-rank projections of the matrix gradients."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from gradtx.adam import scale_by_adam
from gradtx.base import GradientTransformation, OptState, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import check_updates_match_params, saturating_increment, zero_step_count
from gradtx.validation import check_schedule_arguments, check_state_type


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a weight form GaLore's ``(m, n)`` matrix: ``reduction_axis`` (rows, default 0) and
    ``output_axis`` (columns, default 1), each an int or a tuple; together they must cover every axis.
    Matches ``optax.contrib.GaLoreDimensionNumbers``."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


GaLoreDimNumsOrFn = Union[GaLoreDimensionNumbers, PyTree, Callable[[Params], PyTree]]


class GaLoreState(NamedTuple):
    """State of ``scale_by_galore``: step ``count``, the base optimizer's state over the projected
    gradients (``base_optimizer_state``) and one ``projector`` per leaf (``(0, 0)`` for leaves GaLore
    leaves alone). Optax's fields."""

    count: jax.Array
    base_optimizer_state: OptState
    projector: PyTree


def _as_matrix(x: jax.Array, spec: GaLoreDimensionNumbers) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    if x.ndim < 2:
        raise ValueError(f"GaLore projects leaves of rank >= 2, got shape {x.shape}.")
    as_tuple = lambda axes: (axes % x.ndim,) if isinstance(axes, int) else tuple(a % x.ndim for a in axes)  # noqa: E731
    rows, cols = as_tuple(spec.reduction_axis), as_tuple(spec.output_axis)
    if set(rows) & set(cols) or len(set(rows) | set(cols)) != x.ndim:
        raise ValueError(f"GaLoreDimensionNumbers {spec} must split the axes of shape {x.shape} into disjoint "
                         "reduction and output axes that cover them all.")
    order = rows + cols
    moved = tuple(x.shape[a] for a in order)
    matrix = x.transpose(order).reshape(math.prod(moved[: len(rows)]), math.prod(moved[len(rows):]))
    inverse = tuple(order.index(a) for a in range(x.ndim))
    return matrix, lambda y: y.reshape(moved).transpose(inverse)


@check_schedule_arguments
def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_dimension_numbers: GaLoreDimNumsOrFn | None = None,
) -> GradientTransformation:
    """GaLore scaling (Zhao et al. 2024): the base optimizer sees ``P^T G``, its update returns as ``P u``.

    For a matrix leaf ``G`` (``m x n``, ``m >= n``; otherwise the same on the right):

    .. math::
        P_t = U_{[:, :r]} \\text{ of } \\mathrm{svd}(G_t) \\text{ if } t \\bmod T = 0 \\text{ else } P_{t-1},
        \\qquad R_t = P_t^\\top G_t \\ (r \\times n)

        u_t = \\alpha\\, P_t\\, \\mathrm{base}(R_t)

    with ``r = min(rank, m, n)``, ``T = update_proj_gap``, ``alpha = scale``. The base optimizer's
    state lives in the ``r x n`` space (the memory saving). Other leaves pass to the base
    optimizer unprojected. The SVD runs in float32, as in the authors' code and Optax.

    Args:
      rank: ``r``, a positive int. Default 128.
      update_proj_gap: ``T``, steps between projector refreshes. Default 200.
      scale: ``alpha``. Default 1.0.
      base_optimizer: the optimizer of the projected gradients; None (default) is
        ``scale_by_adam()``.
      weight_dimension_numbers: a ``GaLoreDimensionNumbers`` (applied to every leaf of rank >= 2), a
        tree of them and ``None`` with the params' structure, or a function of the params returning
        one. None (default): the rank-2 leaves with ``GaLoreDimensionNumbers()``.

    State: ``GaLoreState(count, base_optimizer_state, projector)``.
    Matches ``optax.contrib.scale_by_galore``, including its layout: the *larger* side is projected
    (state ``r x min(m, n)``). The paper (Algorithm 2) and the authors' ``std`` projector reduce the
    smaller side (state ``r x max(m, n)``) and refresh ``P`` at steps 1, T, 2T, ...; Optax's own
    tests fix its layout, so it is kept here (the projected-back gradient ``P P^T G = G Q Q^T`` is
    the same rank-``r`` approximation either way; the base optimizer's coordinates differ).

    References:
      Zhao, Zhang, Chen, Wang, Anandkumar & Tian, "GaLore: Memory-Efficient LLM Training by Gradient
      Low-Rank Projection", ICML 2024, arXiv:2403.03507.
    """
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise TypeError(f"rank must be an int, got {type(rank).__name__}.")
    if rank <= 0:
        raise ValueError(f"rank must be positive, got {rank}.")
    if not isinstance(update_proj_gap, int) or isinstance(update_proj_gap, bool) or update_proj_gap < 1:
        raise ValueError(f"update_proj_gap must be a positive int, got {update_proj_gap!r}.")
    base = scale_by_adam() if base_optimizer is None else base_optimizer

    def specs_for(tree: PyTree) -> list:
        leaves, treedef = jax.tree.flatten(tree)
        spec = weight_dimension_numbers
        if spec is None:
            return [GaLoreDimensionNumbers() if jnp.ndim(x) == 2 else None for x in leaves]
        if isinstance(spec, GaLoreDimensionNumbers):
            return [spec if jnp.ndim(x) >= 2 else None for x in leaves]
        spec = spec(tree) if callable(spec) else spec
        return treedef.flatten_up_to(spec)

    def shapes(x: jax.Array, spec: GaLoreDimensionNumbers | None) -> tuple[tuple[int, int], tuple[int, int], bool]:
        """(projector shape, projected shape, project on the left)."""
        matrix, _ = _as_matrix(x, spec)
        m, n = matrix.shape
        r = min(rank, m, n)
        return ((m, r), (r, n), True) if m >= n else ((n, r), (m, r), False)

    def init_fn(params: Params) -> GaLoreState:
        leaves, treedef = jax.tree.flatten(params)
        projectors, projected = [], []
        for x, spec in zip(leaves, specs_for(params)):
            if spec is None:
                projectors.append(jnp.zeros((0, 0), jnp.result_type(x)))
                projected.append(jnp.zeros_like(x))
            else:
                p_shape, r_shape, _ = shapes(x, spec)
                projectors.append(jnp.zeros(p_shape, jnp.result_type(x)))
                projected.append(jnp.zeros(r_shape, jnp.result_type(x)))
        unflatten = lambda xs: jax.tree.unflatten(treedef, xs)  # noqa: E731
        return GaLoreState(zero_step_count(), base.init(unflatten(projected)), unflatten(projectors))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, GaLoreState, "scale_by_galore")
        check_updates_match_params(updates, params, "scale_by_galore")
        del params, extra_args
        refresh = state.count % update_proj_gap == 0
        leaves, treedef = jax.tree.flatten(updates)
        specs = specs_for(updates)
        old_projectors = treedef.flatten_up_to(state.projector)
        projected, projectors = [], []
        for g, spec, projector in zip(leaves, specs, old_projectors):
            if spec is None:
                projected.append(g)
                projectors.append(projector)
                continue
            matrix, _ = _as_matrix(g, spec)
            _, _, left = shapes(g, spec)
            r = projector.shape[1]

            def new_projector(matrix=matrix, left=left, r=r):
                u, _, vh = jnp.linalg.svd(matrix.astype(jnp.float32), full_matrices=False)
                return (u[:, :r] if left else vh[:r, :].T).astype(g.dtype)

            projector = jax.lax.cond(refresh, new_projector, lambda projector=projector: projector)
            projected.append(projector.T @ matrix if left else matrix @ projector)
            projectors.append(projector)
        low_rank, base_state = base.update(jax.tree.unflatten(treedef, projected), state.base_optimizer_state, None)
        out = []
        for u, g, spec, projector in zip(treedef.flatten_up_to(low_rank), leaves, specs, projectors):
            if spec is None:
                out.append(u)
                continue
            _, restore = _as_matrix(g, spec)
            _, _, left = shapes(g, spec)
            full = projector @ u if left else u @ projector.T
            out.append((scale * restore(full)).astype(g.dtype))
        new_state = GaLoreState(saturating_increment(state.count), base_state, jax.tree.unflatten(treedef, projectors))
        return jax.tree.unflatten(treedef, out), new_state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn | None = None,
    weight_dimension_numbers: GaLoreDimNumsOrFn | None = None,
) -> GradientTransformation:
    """GaLore (Zhao et al. 2024): Adam (by default) on low-rank gradient projections, with weight decay.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\alpha P_t\\, \\mathrm{Adam}(P_t^\\top G_t) + \\lambda w_{t-1} \\right)

    with ``P_t`` the top-``r`` singular vectors of the gradient, refreshed every
    ``update_proj_gap`` steps (see :func:`scale_by_galore`).

    Args:
      learning_rate: ``eta`` (a float or a schedule).
      rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers: as in
        :func:`scale_by_galore` (defaults 128, 200, 1.0, ``scale_by_adam()``, rank-2 leaves).
      weight_decay: ``lambda`` >= 0, decoupled and multiplied by ``eta``. Default 0.
      mask: which leaves decay.

    State: ``(GaLoreState, AddDecayedWeightsState, ScaleByScheduleState)``.
    Matches ``optax.contrib.galore``.

    References:
      Zhao, Zhang, Chen, Wang, Anandkumar & Tian, "GaLore: Memory-Efficient LLM Training by Gradient
      Low-Rank Projection", ICML 2024, arXiv:2403.03507.
    """
    return chain(
        scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "galore", "scale_by_galore"]
