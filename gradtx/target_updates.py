"""Slow copies of the parameters: a Polyak (moving) average and a periodically refreshed copy.

Both are functions on parameter trees, called beside the optimizer step: evaluation weights
(``incremental_update``), target networks of temporal-difference learning and self-distillation
(``periodic_update``, or ``incremental_update`` with a small step).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import Params
from gradtx.tree_utils import cast_like, check_trees_match
from gradtx.validation import check_closed_unit


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    """The moving average ``step_size * new + (1 - step_size) * old``, leaf by leaf.

    .. math::
        \\bar w_t = \\tau w_t + (1 - \\tau) \\bar w_{t-1}

    Args:
      new_tensors: ``w_t``, the latest parameters.
      old_tensors: ``w_bar_{t-1}``, the average so far (same structure and shapes).
      step_size: ``tau`` in ``[0, 1]`` (a number or a scalar array); ``tau = 1`` copies.

    Returns:
      ``w_bar_t`` in the dtypes of ``old_tensors``; ``None`` leaves stay ``None``.

    Matches ``optax.incremental_update`` (Optax leaves the result in the promoted dtype). Reference:
    Polyak & Juditsky, "Acceleration of stochastic approximation by averaging", SIAM J. Control
    Optim., 1992.
    """
    check_closed_unit(step_size, "step_size")
    if new_tensors is None:
        return None  # as Optax's tree map over an empty tree
    check_trees_match(new_tensors, old_tensors, name="new_tensors", reference_name="old_tensors")

    def average(new, old):
        if new is None:
            return None
        old = jnp.asarray(old)
        tau = cast_like(step_size, old)
        return (tau * new + (1 - tau) * old).astype(old.dtype)

    return jax.tree.map(average, new_tensors, old_tensors, is_leaf=lambda x: x is None)


def periodic_update(new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any) -> Params:
    """``new_tensors`` on every ``update_period``-th step, else ``old_tensors``.

    .. math::
        \\bar w_t = w_t \\ \\text{if } t \\bmod K = 0, \\qquad \\bar w_t = \\bar w_{t-1} \\ \\text{otherwise}

    Args:
      new_tensors: ``w_t``, the online parameters.
      old_tensors: ``w_bar_{t-1}``, the slow copy (same structure and shapes).
      steps: ``t``, the number of updates of the online parameters (an int or int array).
      update_period: ``K >= 1``.

    Returns:
      The slow copy after step ``t`` (selected by ``jax.lax.cond``).

    Matches ``optax.periodic_update``. References: Mnih et al., "Human-level control through deep
    reinforcement learning", Nature 2015 (target networks); Grill et al., "Bootstrap your own
    latent", 2020.
    """
    if isinstance(update_period, bool) or isinstance(update_period, float):
        raise TypeError(f"update_period must be an int >= 1, got {update_period!r}.")
    if isinstance(update_period, (numbers.Integral, np.integer)) and update_period < 1:
        raise ValueError(f"update_period must be >= 1, got {update_period!r}.")
    check_trees_match(new_tensors, old_tensors, name="new_tensors", reference_name="old_tensors")
    return jax.lax.cond(jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors)
