"""Step sizes set by the problem rather than tuned: Polyak's step and distance over gradients (DoG).

Both need something beyond the gradient: the Polyak step the loss value (``update(...,
value=loss)``), DoG the parameters (``update(updates, state, params)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import EmptyState, GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import chain
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    check_updates_match_params,
    tree_cast,
    tree_sum_of_squares,
)
from gradtx.validation import (
    check_empty_state,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)

_POLYAK_VARIANTS = ("sps", "sps+")
# Optax's guard: below this ||g||^2 + eps the step is 0 rather than a division by ~0.
_POLYAK_TINY = float(np.finfo(np.float64).eps)


@check_schedule_arguments
def scale_by_polyak(
    f_min: float = 0.0, max_learning_rate: float = 1.0, eps: float = 0.0, variant: str = "sps"
) -> GradientTransformation:
    """Scales the update by Polyak's step size; ``update`` needs ``value=f(w)``.

    .. math::
        \\gamma = \\min\\left(\\frac{f(w) - f^\\star}{\\|g\\|_2^2 + \\epsilon}, \\gamma_{max}\\right),
        \\qquad u = \\gamma \\, g

    with ``||g||`` the norm of the whole tree, ``gamma = 0`` where ``||g||^2 + eps <= 2.2e-16``,
    and, for ``variant="sps+"``, ``f(w) - f*`` replaced by ``max(f(w) - f*, 0)``.

    Args:
      f_min: ``f*``, a lower bound on the objective (0 for models that interpolate the data).
        Default 0.
      max_learning_rate: ``gamma_max`` >= 0. Default 1.
      eps: ``epsilon`` >= 0 in the denominator. Default 0.
      variant: ``"sps"`` (Loizou et al.) or ``"sps+"`` (Garrigos et al.). Default ``"sps"``.

    State: ``EmptyState()``. Matches ``optax.scale_by_polyak``.
    Reference: Loizou, Vaswani, Laradji, Lacoste-Julien, "Stochastic Polyak step-size for SGD",
    AISTATS 2021, arXiv:2002.10542; Garrigos, Gower, Schaipp, arXiv:2307.14528, 2023 (SPS+).
    """
    check_non_negative(max_learning_rate, "max_learning_rate")
    check_non_negative(eps, "eps")
    if variant not in _POLYAK_VARIANTS:
        raise ValueError(f"variant must be one of {_POLYAK_VARIANTS}, got {variant!r}.")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, *, value: Any = None, **extra_args):
        check_empty_state(state, "scale_by_polyak")
        check_updates_match_params(updates, params, "scale_by_polyak")
        del params, extra_args
        if value is None:
            raise TypeError(  # a missing required argument, as Optax's signature makes it
                "scale_by_polyak needs the objective's value: call update(updates, state, params, value=loss)."
            )
        squared_norm = tree_sum_of_squares(updates)
        gap = jnp.asarray(value - f_min).astype(squared_norm.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = squared_norm + cast_like(eps, squared_norm)
        too_small = denominator <= _POLYAK_TINY
        safe_denominator = jnp.where(too_small, jnp.ones_like(denominator), denominator)
        step = jnp.where(
            too_small, jnp.zeros_like(gap), jnp.minimum(gap / safe_denominator, cast_like(max_learning_rate, gap))
        )
        return jax.tree.map(lambda g: g * cast_like(step, g), updates), state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """SGD with the stochastic Polyak step size (SPS_max); ``update`` needs ``value=f(w)``.

    .. math::
        w_t = w_{t-1} - s_t \\min\\left(\\frac{f(w_{t-1}) - f^\\star}{\\|g_t\\|_2^2 + \\epsilon},
        \\gamma_{max}\\right) g_t

    (``variant="sps+"``: the gap is ``max(f - f*, 0)``). Usage::

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state, params, value=value)

    Args:
      max_learning_rate: ``gamma_max`` >= 0. Default 1.
      scaling: ``s`` >= 0 or a schedule. Default 1.
      f_min: ``f*``. Default 0.
      eps: ``epsilon`` >= 0. Default 0.
      variant: ``"sps"`` or ``"sps+"``. Default ``"sps"``.

    State: ``(EmptyState(), ScaleByScheduleState(step_count))``.
    Matches ``optax.polyak_sgd`` for ``scaling = 1`` (the default). For other ``scaling`` this
    follows the formula above, which is Optax's documented one; Optax's code scales the
    gradient first and so computes ``s min((f - f*) / (s^2 ||g||^2 + eps), gamma_max)``.
    Reference: Loizou, Vaswani, Laradji, Lacoste-Julien, "Stochastic Polyak step-size for SGD",
    AISTATS 2021, arXiv:2002.10542.
    """
    check_non_negative(scaling, "scaling")
    return chain(
        scale_by_polyak(f_min=f_min, max_learning_rate=max_learning_rate, eps=eps, variant=variant),
        scale_by_learning_rate(scaling),
    )


class ScaleByDistanceOverGradientsState(NamedTuple):
    """State of ``scale_by_distance_over_gradients``, one entry per parameter block.

    ``max_dist`` is ``r_t`` (a scalar per leaf), ``grad_sum_of_squares`` is ``G_t`` (a scalar per
    leaf) and ``init_params`` holds ``w_0`` in ``param_dtype``.
    """

    max_dist: PyTree
    grad_sum_of_squares: PyTree
    init_params: PyTree


def _wide(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@check_schedule_arguments
def scale_by_distance_over_gradients(
    reps_rel: float = 1e-6, eps: float = 1e-8, param_dtype: Any = jnp.float32, global_scale: float = 1.0
) -> GradientTransformation:
    """Layer-wise DoG: a learning-rate-free step size, distance travelled over gradient norms.

    Per block, with ``w`` the parameters passed to ``update`` (before this step):

    .. math::
        r_t = \\max\\left(r_{t-1}, \\|w_{t-1} - w_0\\|_2\\right), \\quad
        r_0 = r_\\epsilon (1 + \\|w_0\\|_2), \\qquad G_t = G_{t-1} + \\|g_t\\|_2^2

        u_t = s \\, \\frac{r_t}{\\sqrt{G_t + \\epsilon}} \\, g_t

    Returns ``+`` the scaled gradient: use ``global_scale=-1`` (or chain ``scale(-1)``) to descend.
    The authors recommend averaging the iterates. Needs ``params``.

    Args:
      reps_rel: ``r_eps`` > 0, the relative size of the first step (1e-4 with batch norm,
        1e-6 otherwise). Default 1e-6.
      eps: ``epsilon`` >= 0 under the root. Default 1e-8.
      param_dtype: dtype of the stored ``w_0``. Default float32 (as Optax; pass float64 to
        keep float64 parameters exact).
      global_scale: ``s``, typically 1 or -1. Default 1.

    State: ``ScaleByDistanceOverGradientsState(max_dist, grad_sum_of_squares, init_params)``.
    Matches ``optax.scale_by_distance_over_gradients``; here ``grad_sum_of_squares`` holds
    scalars (Optax: shape ``(1,)``, which also turns a scalar leaf's update into shape ``(1,)``).
    Reference: Ivgi, Hinder, Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule", ICML 2023, arXiv:2302.12022.
    """
    check_positive(reps_rel, "reps_rel")
    check_non_negative(eps, "eps")

    def init_fn(params: Params) -> ScaleByDistanceOverGradientsState:
        check_float_leaves(params)
        max_dist = jax.tree.map(
            lambda w: cast_like(reps_rel, _wide(w)) * (1 + jnp.sqrt(jnp.sum(jnp.square(_wide(w))))), params
        )
        sums = jax.tree.map(lambda w: jnp.zeros([], _wide(w).dtype), params)
        return ScaleByDistanceOverGradientsState(max_dist, sums, tree_cast(params, param_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByDistanceOverGradientsState, "scale_by_distance_over_gradients")
        del extra_args
        if params is None:
            raise ValueError(
                "scale_by_distance_over_gradients needs the parameters: call update(updates, state, params)."
            )
        check_trees_match(updates, params, name="updates", reference_name="params")
        max_dist = jax.tree.map(
            lambda r, w, w0: jnp.maximum(r, jnp.sqrt(jnp.sum(jnp.square(_wide(w) - _wide(w0)))).astype(r.dtype)),
            state.max_dist,
            params,
            state.init_params,
        )
        sums = jax.tree.map(
            lambda total, g: total + jnp.sum(jnp.square(_wide(g))).astype(total.dtype),
            state.grad_sum_of_squares,
            updates,
        )

        def scaled(g, r, total):
            denominator = jnp.sqrt(total + cast_like(eps, total))
            safe = jnp.where(denominator > 0, denominator, jnp.ones_like(denominator))
            step = jnp.where(denominator > 0, cast_like(global_scale, r) * r / safe, jnp.zeros_like(r))
            return g * cast_like(step, g)

        new_updates = jax.tree.map(scaled, updates, max_dist, sums)
        return new_updates, ScaleByDistanceOverGradientsState(max_dist, sums, state.init_params)

    return GradientTransformation(init_fn, update_fn)
