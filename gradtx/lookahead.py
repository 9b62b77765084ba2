"""Lookahead: ``k`` steps of a fast optimizer, then one step of the slow weights toward them.

The parameters are a pair ``LookaheadParams(fast, slow)``: gradients are taken at ``fast``,
``slow`` is the copy to evaluate. ``lookahead`` returns updates for both, so one
``apply_updates(params, updates)`` moves the pair.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params
from gradtx.extra_args import with_extra_args_support
from gradtx.tree_utils import cast_like, check_trees_match, zero_step_count
from gradtx.validation import check_non_negative, check_schedule_arguments


class LookaheadState(NamedTuple):
    """State of ``lookahead`` (Optax's field names).

    fast_state: the fast optimizer's state.
    steps_since_sync: int32 in ``[0, k)``, fast steps taken since the last synchronisation.
    """

    fast_state: OptState
    steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
    """The parameter pair of ``lookahead``: ``fast`` (take gradients here) and ``slow`` (evaluate these).

    ``LookaheadParams.init_synced(params)`` starts both at ``params``. Matches
    ``optax.LookaheadParams``. Reference: Zhang et al., "Lookahead Optimizer: k steps forward,
    1 step back", 2019 (arXiv:1907.08610).
    """

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """``LookaheadParams(fast=params, slow=params)``."""
        return cls(fast=params, slow=params)


@check_schedule_arguments
def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int,
    slow_step_size: Any,
    reset_state: bool = False,
) -> GradientTransformation:
    """Lookahead around ``fast_optimizer``: every ``k`` fast steps, ``slow`` moves a fraction ``alpha`` toward ``fast``.

    With ``d_t`` the fast optimizer's update at step ``t`` (taken at ``fast``), ``k = sync_period``
    and ``alpha = slow_step_size``:

    .. math::
        \\phi_{t} = \\theta_{t-1} + d_t, \\qquad
        \\begin{cases}
        \\theta_t = \\phi_t, \\ s_t = s_{t-1} & t \\bmod k \\ne 0 \\\\
        s_t = s_{t-1} + \\alpha (\\phi_t - s_{t-1}), \\ \\theta_t = s_t & t \\bmod k = 0
        \\end{cases}

    where ``theta`` are the fast and ``s`` the slow parameters. Both moves are returned as one
    ``LookaheadParams`` of updates, so apply them unmodified with ``apply_updates``.

    Args:
      fast_optimizer: the inner optimizer (``sgd``, ``adam``, ...).
      sync_period: ``k >= 1``, fast steps per synchronisation.
      slow_step_size: ``alpha >= 0`` (the paper uses ``alpha`` in ``(0, 1]``, e.g. 0.5).
      reset_state: re-initialise the fast optimizer's state at every synchronisation (default
        False: the paper keeps it).

    ``init`` takes a ``LookaheadParams`` (or the fast parameters alone); ``update`` needs
    ``params=LookaheadParams(fast, slow)``.

    State: ``LookaheadState(fast_state, steps_since_sync)``. Matches ``optax.lookahead``.

    References:
      Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS
      2019 (arXiv:1907.08610).
    """
    if isinstance(sync_period, bool) or not isinstance(sync_period, int):
        raise TypeError(f"sync_period must be an int >= 1, got {sync_period!r}.")
    if sync_period < 1:
        raise ValueError(f"sync_period must be >= 1, got {sync_period!r}.")
    check_non_negative(slow_step_size, "slow_step_size")
    fast_optimizer = with_extra_args_support(fast_optimizer)

    def init_fn(params: Params) -> LookaheadState:
        fast = params.fast if isinstance(params, LookaheadParams) else params
        return LookaheadState(fast_optimizer.init(fast), zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(params, LookaheadParams):
            raise TypeError(
                "lookahead's update needs params=LookaheadParams(fast, slow) (build them with "
                f"LookaheadParams.init_synced(params)), got {type(params).__name__}."
            )
        check_trees_match(updates, params.fast, name="updates", reference_name="params.fast")
        check_trees_match(params.slow, params.fast, name="params.slow", reference_name="params.fast")
        fast_updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast, **extra_args)
        sync = state.steps_since_sync == sync_period - 1

        def slow_move(u, fast, slow):
            # phi - s, the distance the slow weights close a fraction alpha of.
            return cast_like(slow_step_size, slow) * (fast + u - slow)

        slow_updates = jax.tree.map(
            lambda u, fast, slow: jnp.where(sync, slow_move(u, fast, slow), jnp.zeros_like(slow)),
            fast_updates,
            params.fast,
            params.slow,
        )
        # On a sync step the fast weights jump to the new slow ones: theta + d + delta = s + alpha (phi - s).
        fast_updates = jax.tree.map(
            lambda u, fast, slow: jnp.where(
                sync, u - cast_like(1 - slow_step_size, slow) * (fast + u - slow), u
            ),
            fast_updates,
            params.fast,
            params.slow,
        )
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(lambda current, init: jnp.where(sync, init, current), fast_state, fresh)
        steps_since_sync = (state.steps_since_sync + 1) % sync_period
        return LookaheadParams(fast=fast_updates, slow=slow_updates), LookaheadState(fast_state, steps_since_sync)

    return GradientTransformation(init_fn, update_fn)
