"""Weight decay and gradient clipping."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import EmptyState, GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import MaskOrFn, masked
from gradtx.tree_utils import (
    cast_like,
    check_trees_match,
    check_updates_match_params,
    saturating_increment,
    tree_global_norm,
    zero_step_count,
)
from gradtx.validation import (
    check_empty_state,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)

_PARAMS_REQUIRED = "{name} needs the parameters: call update(updates, state, params)."


# Optax's names for the (empty) states of its clipping transforms.
ClipState = EmptyState
AdaptiveGradClipState = EmptyState


class AddDecayedWeightsState(NamedTuple):
    """State of ``add_decayed_weights``: the step count, for a scheduled ``lambda``."""

    step_count: jax.Array

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0, mask: MaskOrFn | None = None) -> GradientTransformation:
    """Adds the gradient of an L2 penalty: ``u_t = g_t + lambda_t w_{t-1}``.

    Placed before an adaptive scaling this is L2 regularization; placed after it and before
    ``scale_by_learning_rate`` it is decoupled weight decay (AdamW, Loshchilov & Hutter 2019).

    Args:
      weight_decay: ``lambda`` >= 0 or a schedule. Default 0.
      mask: tree of booleans (or ``params -> tree``) selecting the leaves to decay; by
        convention biases and normalization scales are often excluded. Default: all leaves.

    A ``None`` update (a leaf, or the whole tree, without a gradient) stays ``None``, as in
    Optax; ``update(None, state, params)`` returns ``(None, state)``.

    State: ``AddDecayedWeightsState(step_count)`` (inside ``MaskedState`` when masked).
    Matches ``optax.add_decayed_weights``.
    """
    check_non_negative(weight_decay, "weight_decay")

    def init_fn(params: Params) -> AddDecayedWeightsState:
        del params
        return AddDecayedWeightsState(zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(_PARAMS_REQUIRED.format(name="add_decayed_weights"))
        if updates is None:
            return None, state
        check_state_type(state, AddDecayedWeightsState, "add_decayed_weights")
        check_trees_match(
            updates, _without_leaves_at_none(updates, params), name="updates", reference_name="params",
            context="add_decayed_weights",
        )
        decay = value_at(weight_decay, state.step_count)
        updates = jax.tree.map(
            lambda g, w: None if g is None else _add_decay(g, decay, w), updates, params, is_leaf=_is_none
        )
        return updates, AddDecayedWeightsState(saturating_increment(state.step_count))

    transform = GradientTransformation(init_fn, update_fn)
    return transform if mask is None else masked(transform, mask)


def _add_decay(g: jax.Array, decay: Any, w: jax.Array) -> jax.Array:
    """``g + decay * w`` with ``decay`` cast like ``g``; in lax when the dtypes agree (cheaper to trace)."""
    if isinstance(g, jax.Array) and isinstance(w, jax.Array) and g.dtype == w.dtype:
        return jax.lax.add(g, jax.lax.mul(cast_like(decay, g), w))
    return g + cast_like(decay, g) * w


def _is_none(x: Any) -> bool:
    return x is None


def _without_leaves_at_none(updates: PyTree, params: PyTree) -> PyTree:
    """``params`` with ``None`` wherever ``updates`` is ``None`` (a parameter without a gradient)."""
    try:
        return jax.tree.map(lambda g, w: None if g is None else w, updates, params, is_leaf=_is_none)
    except (ValueError, TypeError):
        return params  # the structures differ: check_trees_match names the path


@check_schedule_arguments
def clip(max_delta: float) -> GradientTransformation:
    """Element-wise clipping: ``u_i = min(max(g_i, -delta), delta)``; no state.

    Args:
      max_delta: ``delta`` >= 0.

    Matches ``optax.clip`` and ``torch.nn.utils.clip_grad_value_``.
    """
    check_non_negative(max_delta, "max_delta")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "clip")
        check_updates_match_params(updates, params, "clip")
        return jax.tree.map(
            lambda g: jnp.clip(g, -cast_like(max_delta, g), cast_like(max_delta, g)), updates
        ), state

    return GradientTransformation(init_fn, update_fn)


class ClipByGlobalNormState(NamedTuple):
    """State of ``clip_by_global_norm`` with a scheduled ``max_norm``: the step count."""

    step_count: jax.Array


def clip_by_global_norm(max_norm: ScalarOrSchedule) -> GradientTransformation:
    """Rescales the whole update tree so that its global norm is at most ``c``.

    .. math::
        u = g \\ \\text{if } \\|g\\|_2 < c_t, \\qquad u = g \\, c_t / \\|g\\|_2 \\ \\text{otherwise}

    where ``||g||_2`` is the norm of all leaves taken as one vector.

    Args:
      max_norm: ``c`` > 0, a number, an array or a schedule ``t -> c_t``.

    State: ``EmptyState()`` for a number or an array, as in Optax; ``ClipByGlobalNormState(step_count)``
    for a schedule, evaluated at the step count (Optax's takes no schedule).
    Matches ``optax.clip_by_global_norm``; ``torch.nn.utils.clip_grad_norm_`` uses
    ``c / (||g|| + 1e-6)`` and so differs in the sixth digit.
    Reference: Pascanu, Mikolov, Bengio, ICML 2013.
    """
    check_positive(max_norm, "max_norm")

    def clipped(updates, threshold):
        norm = tree_global_norm(updates)
        scale = jnp.where(norm < threshold, 1.0, threshold / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
        return jax.tree.map(lambda g: g * cast_like(scale, g), updates)

    if callable(max_norm):

        def scheduled_init(params: Params) -> ClipByGlobalNormState:
            del params
            return ClipByGlobalNormState(zero_step_count())

        def scheduled_update(updates, state, params=None, **extra_args):
            del params, extra_args
            new_state = ClipByGlobalNormState(saturating_increment(state.step_count))
            return clipped(updates, max_norm(state.step_count)), new_state

        return GradientTransformation(scheduled_init, scheduled_update)

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "clip_by_global_norm")
        check_updates_match_params(updates, params, "clip_by_global_norm")
        return clipped(updates, max_norm), state

    return GradientTransformation(init_fn, update_fn)


def unitwise_norm(x: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """The L2 norm of each output unit of ``x``, broadcast back to ``x``'s shape.

    ``||x_u||_2 = sqrt(sum_{i in u} x_i^2)`` for each unit ``u``, the quantity adaptive gradient
    clipping compares gradients against (Brock et al. 2021, Section 4).

    A unit is a slice over ``axis``. By default: scalars and vectors are one unit; for rank 2
    and 3 (dense ``[in, out]`` kernels) the norm runs over axis 0; for rank 4 (HWIO
    convolutions) over axes 0-2; for rank 5 (DHWIO) over axes 0-3.
    """
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            axis = tuple(range(x.ndim))
        elif x.ndim in (2, 3):
            axis = (0,)
        elif x.ndim in (4, 5):
            axis = tuple(range(x.ndim - 1))
        else:
            raise ValueError(f"unitwise_norm: cannot infer units for shape {x.shape}; pass axis=.")
    squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return jnp.broadcast_to(jnp.sqrt(squared), x.shape)


def unitwise_clip(g_norm: jax.Array, max_norm: jax.Array, grad: jax.Array, div_eps: float = 1e-6) -> jax.Array:
    """Rescales each unit of ``grad`` whose norm reaches ``max_norm`` down to that norm.

    .. math::
        u = g \\ \\text{if } \\|g\\| < m, \\qquad
        u = g \\, \\frac{m}{\\max(\\|g\\|, \\text{div\\_eps})} \\ \\text{otherwise},

    elementwise, with ``g_norm`` (``||g||``, e.g. from ``unitwise_norm``) and ``max_norm`` (``m``)
    broadcast to ``grad``'s shape already: a ``ValueError`` names a shape that differs.

    Args:
      g_norm: the unit norm of ``grad``, one value per element.
      max_norm: the largest allowed norm, one value per element.
      grad: the gradient leaf.
      div_eps: floor of the divisor. Default 1e-6.

    The step inside ``adaptive_grad_clip`` (Brock et al. 2021). Matches ``optax.transforms.unitwise_clip``.
    """
    shapes = {name: jnp.shape(value) for name, value in (("g_norm", g_norm), ("max_norm", max_norm), ("grad", grad))}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"unitwise_clip: g_norm, max_norm and grad must have one shape, got {shapes}.")
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped)


@check_schedule_arguments
def adaptive_grad_clip(
    clipping: float, eps: float = 1e-3, axis: int | tuple[int, ...] | None = None
) -> GradientTransformation:
    """Adaptive gradient clipping (Brock et al. 2021): clip each unit relative to its weights.

    .. math::
        u_i = g_i \\ \\text{if } \\|g_i\\| \\le \\lambda \\max(\\|w_i\\|, \\epsilon), \\qquad
        u_i = \\lambda \\frac{\\max(\\|w_i\\|, \\epsilon)}{\\|g_i\\|} g_i \\ \\text{otherwise}

    with norms taken unit-wise (see ``unitwise_norm``). Needs ``params``.

    Args:
      clipping: ``lambda`` > 0, the largest allowed ratio of gradient to weight norm.
      eps: ``epsilon`` > 0, so that zero-initialised weights still move. Default 1e-3.
      axis: unit axes; default inferred from each leaf's rank.

    State: none. Matches ``optax.adaptive_grad_clip``.
    """
    check_positive(clipping, "clipping")
    check_positive(eps, "eps")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(_PARAMS_REQUIRED.format(name="adaptive_grad_clip"))
        check_empty_state(state, "adaptive_grad_clip")
        check_trees_match(updates, params, name="updates", reference_name="params", context="adaptive_grad_clip")

        def clip_unitwise(g, w):
            g_norm = unitwise_norm(g, axis)
            max_norm = cast_like(clipping, g) * jnp.maximum(unitwise_norm(w, axis), cast_like(eps, g))
            safe_norm = jnp.maximum(g_norm, jnp.finfo(g_norm.dtype).tiny)
            return jnp.where(g_norm <= max_norm, g, g * (max_norm / safe_norm))

        return jax.tree.map(clip_unitwise, updates, params), state

    return GradientTransformation(init_fn, update_fn)
