"""Constraints on the update: non-negative parameters, centralized gradients, updates of fixed norm.

Each transformation here maps the update onto a set: ``keep_params_nonnegative`` keeps
``w + u`` in the non-negative orthant, ``centralize`` projects each gradient onto the zero-mean
subspace, ``normalize_by_update_norm`` puts the whole update on a sphere. None keeps state.
Projections of arbitrary trees onto convex sets are in ``gradtx.projections``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx.base import EmptyState, GradientTransformation, Params
from gradtx.tree_utils import cast_like, check_trees_match, check_updates_match_params, tree_global_norm
from gradtx.validation import check_empty_state, check_non_negative, check_schedule_arguments

NonNegativeParamsState = EmptyState


def _empty_init(params: Params) -> EmptyState:
    del params
    return EmptyState()


def keep_params_nonnegative() -> GradientTransformation:
    """Changes the update so that the parameters stay non-negative: ``w + u >= 0``.

    .. math::
        u_i = -w_i \\ \\text{if } w_i + g_i < 0, \\qquad u_i = g_i \\ \\text{otherwise}

    so that ``apply_updates`` puts a parameter that would cross zero exactly at zero (the
    projection of ``w + g`` onto the non-negative orthant, see
    ``gradtx.projections.projection_non_negative``). Place it last in a chain, after
    ``scale_by_learning_rate``: it constrains the final step. A negative parameter is moved to
    zero by the first update. Needs ``params``.

    The result has the common dtype of ``g`` and ``w``, as in Optax.

    State: ``EmptyState()`` (Optax's ``NonNegativeParamsState``).
    Matches ``optax.keep_params_nonnegative``.
    """

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "keep_params_nonnegative")
        del extra_args
        if params is None:
            raise ValueError("keep_params_nonnegative needs the parameters: call update(updates, state, params).")
        check_trees_match(updates, params, name="updates", reference_name="params")
        updates = jax.tree.map(lambda g, w: jnp.where(w + g < 0, -w, g), updates, params)
        return updates, state

    return GradientTransformation(_empty_init, update_fn)


def _subtract_mean(g: jax.Array) -> jax.Array:
    if jnp.ndim(g) <= 1:
        return g
    return g - jnp.mean(g, axis=tuple(range(1, jnp.ndim(g))), keepdims=True)


def centralize() -> GradientTransformation:
    """Gradient centralization: subtracts from each slice ``g[i]`` of a leaf its mean.

    For a leaf of rank ``>= 2``, with ``i`` its first index and ``j`` running over all other axes
    (``n`` entries):

    .. math::
        u_{i j} = g_{i j} - \\frac{1}{n} \\sum_{j'} g_{i j'}

    Scalars and vectors (biases, normalization scales) pass unchanged. The paper centralizes the
    gradient of each output neuron's weight vector; that is this rule for weights stored
    output-first (PyTorch's ``[out, in]``, convolutions ``[out, in, h, w]``). For Flax's
    ``[in, out]`` dense kernels the slices are rows of inputs instead, as in Optax.

    State: ``EmptyState()``. Matches ``optax.centralize``.
    Reference: Yong, Huang, Hua, Zhang, "Gradient Centralization: A New Optimization Technique for
    Deep Neural Networks", ECCV 2020, arXiv:2004.01461.
    """

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "centralize")
        check_updates_match_params(updates, params, "centralize")
        del params, extra_args
        return jax.tree.map(_subtract_mean, updates), state

    return GradientTransformation(_empty_init, update_fn)


@check_schedule_arguments
def normalize_by_update_norm(scale_factor: float = 1.0, eps: float = 1e-6) -> GradientTransformation:
    """Divides the update by its global norm: a step of fixed length ``scale_factor``.

    .. math::
        u = s \\frac{g}{\\|g\\|_2 + \\epsilon}

    where ``||g||_2`` is the norm of all leaves taken as one vector (accumulated in float32 or
    wider; each leaf keeps its dtype).

    Args:
      scale_factor: ``s``, the length of the step; negative for descent when this is the last
        transformation (Optax's example uses ``-1.0``). Default 1.
      eps: ``epsilon`` >= 0, keeps a zero gradient from dividing by zero. Default 1e-6.

    State: ``EmptyState()``. Matches ``optax.normalize_by_update_norm``.
    Reference: normalized gradient descent, Nesterov 1984; Hazan, Levy, Shalev-Shwartz,
    "Beyond Convexity: Stochastic Quasi-Convex Optimization", NeurIPS 2015.
    """
    check_non_negative(eps, "eps")

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "normalize_by_update_norm")
        check_updates_match_params(updates, params, "normalize_by_update_norm")
        del params, extra_args
        factor = scale_factor / (tree_global_norm(updates) + eps)
        return jax.tree.map(lambda g: g * cast_like(factor, g), updates), state

    return GradientTransformation(_empty_init, update_fn)
