"""SAM: sharpness-aware minimization, as an outer optimizer driven by an adversarial inner one."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params, apply_updates
from gradtx.extra_args import GradientTransformationExtraArgs
from gradtx.validation import check_schedule_arguments, check_state_type


class SAMState(NamedTuple):
    """State of ``sam``: ``steps_since_sync`` in ``[0, sync_period)``, the outer ``opt_state``, the
    adversarial ``adv_state`` and ``cache``, the outer parameters (None in opaque mode)."""

    steps_since_sync: jax.Array
    opt_state: OptState
    adv_state: OptState
    cache: Params | None


def _select(condition: jax.Array, if_true: Any, if_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def _negate(tree: Any) -> Any:
    return jax.tree.map(lambda x: -x, tree)


@check_schedule_arguments
def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformationExtraArgs:
    """Sharpness-aware minimization (Foret et al. 2021) with any outer and adversarial optimizers.

    With ``adv_optimizer = chain(normalize(), sgd(rho))`` and ``sync_period=2`` this is the SAM of
    the paper:

    .. math::
        \\tilde w_t = w_t + \\rho \\frac{\\nabla L(w_t)}{\\|\\nabla L(w_t)\\|}, \\qquad
        w_{t+1} = w_t + \\mathrm{optimizer}(\\nabla L(\\tilde w_t))

    In general ``sync_period - 1`` ascent steps ``w <- w - adv_optimizer(g)`` are followed by one
    outer step from the cached ``w_t`` with the last gradient.

    In the default (transparent) mode every call of ``update`` is one gradient evaluation: the
    adversarial calls return the ascent step, and the call that ends the period returns
    ``w_t - w~ + optimizer(g)``, so the parameters jump back to the outer point and take the outer
    step. In ``opaque_mode`` one call does the whole period: ``update(g, state, params,
    grad_fn=grad_fn)`` calls ``grad_fn(params, i)`` for the ascent gradients and returns the outer
    update only.

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the adversarial optimizer (its update is subtracted: it ascends).
      sync_period: calls per outer step, >= 1. Default 2.
      reset_state: re-initialize ``adv_optimizer`` after each outer step (default True).
      opaque_mode: the one-call mode above (default False).
      batch_axis_name: in opaque mode, the ``pmap``/``shard_map`` axis over which ``grad_fn``'s
        gradients are averaged (``jax.lax.pmean``); None (default) for none.

    State: ``SAMState(steps_since_sync, opt_state, adv_state, cache)``.
    Matches ``optax.contrib.sam``.

    References:
      Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
      Generalization", ICLR 2021, arXiv:2010.01412.
    """
    if not isinstance(sync_period, int) or isinstance(sync_period, bool) or sync_period < 1:
        raise ValueError(f"sync_period must be an int >= 1, got {sync_period!r}.")

    def init_fn(params: Params) -> SAMState:
        return SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=None if opaque_mode else params,
        )

    def transparent_update(updates, state, params=None, **extra_args):
        del extra_args
        check_state_type(state, SAMState, "sam")
        if params is None:
            raise ValueError("sam needs the parameters: call update(updates, state, params).")
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
        adv_updates = _negate(adv_updates)
        outer_updates, opt_state = optimizer.update(updates, state.opt_state, state.cache)
        outer_updates = jax.tree.map(lambda c, p, u: c - p + u, state.cache, params, outer_updates)
        new_updates = _select(last, outer_updates, adv_updates)
        if reset_state:
            adv_state = _select(last, adv_optimizer.init(params), adv_state)
        else:
            adv_state = _select(last, state.adv_state, adv_state)
        return new_updates, SAMState(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            opt_state=_select(last, opt_state, state.opt_state),
            adv_state=adv_state,
            cache=_select(first, params, state.cache),
        )

    def opaque_update(updates, state, params=None, *, grad_fn=None, **extra_args):
        del extra_args
        check_state_type(state, SAMState, "sam")
        if grad_fn is None:
            raise ValueError("sam(opaque_mode=True) needs grad_fn: call update(g, state, params, grad_fn=fn), "
                             "with fn(params, i) the gradient at params.")
        if params is None:
            raise ValueError("sam needs the parameters: call update(updates, state, params, grad_fn=...).")
        adv_params, gradient, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(gradient, adv_state, adv_params)
            adv_params = apply_updates(adv_params, _negate(adv_updates))
            gradient = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                gradient = jax.lax.pmean(gradient, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        new_updates, opt_state = optimizer.update(gradient, state.opt_state, params)
        return new_updates, SAMState(jnp.zeros([], jnp.int32), opt_state, adv_state, None)

    return GradientTransformationExtraArgs(init_fn, opaque_update if opaque_mode else transparent_update)


__all__ = ["SAMState", "sam"]
