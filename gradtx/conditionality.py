"""Run a transformation only on the steps a condition selects.

``conditionally_transform`` passes the updates through unchanged on the other steps (e.g. an
expensive preconditioner refreshed every ``k`` steps); ``conditionally_mask`` zeroes them (the
parameters do not move). On both, the inner state is left untouched when the condition is false.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
from gradtx.tree_utils import saturating_increment, zero_step_count
from gradtx.validation import check_state_type


class ConditionFn(Protocol):
    """``fn(step, **extra_args) -> bool``: whether the inner transformation runs at ``step``.

    ``step`` is an int32 scalar counting earlier calls of ``update``; the result is a scalar bool
    array. Matches ``optax.ConditionFn``.
    """

    def __call__(self, step: jax.Array, **extra_args: Any) -> jax.Array: ...


class ConditionallyTransformState(NamedTuple):
    """State of ``conditionally_transform`` (Optax's field names).

    inner_state: the inner transformation's state, advanced only on selected steps.
    step: int32, calls of ``update`` so far.
    """

    inner_state: OptState
    step: jax.Array


class ConditionallyMaskState(NamedTuple):
    """State of ``conditionally_mask`` (Optax's field names and order).

    step: int32, calls of ``update`` so far.
    inner_state: the inner transformation's state, advanced only on selected steps.
    """

    step: jax.Array
    inner_state: OptState


def _condition(should_transform_fn: ConditionFn, step: jax.Array, extra_args: dict) -> jax.Array:
    condition = jnp.asarray(should_transform_fn(step, **extra_args))
    if condition.shape != () or not (condition.dtype == jnp.bool_ or jnp.issubdtype(condition.dtype, jnp.integer)):
        raise ValueError(
            "should_transform_fn must return a scalar bool, got an array of dtype "
            f"{condition.dtype} and shape {condition.shape}."
        )
    return condition.astype(jnp.bool_)


def _build(inner: Any, should_transform_fn: ConditionFn, forward_extra_args: bool, mask: bool):
    """The shared wrapper: ``inner`` under ``lax.cond``; the other branch passes or zeroes the updates."""
    if not callable(should_transform_fn):
        raise TypeError(f"should_transform_fn must be callable, got {type(should_transform_fn).__name__}.")
    inner = with_extra_args_support(inner)
    name = "conditionally_mask" if mask else "conditionally_transform"

    def make_state(step, inner_state):
        return ConditionallyMaskState(step, inner_state) if mask else ConditionallyTransformState(inner_state, step)

    def init_fn(params: Params):
        return make_state(zero_step_count(), inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ConditionallyMaskState if mask else ConditionallyTransformState, name)

        def run(operands):
            updates, inner_state = operands
            new_updates, new_state = inner.update(updates, inner_state, params, **extra_args)
            # Keep the state's dtypes across steps (a float64 schedule must not widen float32 state).
            return new_updates, jax.tree.map(lambda n, o: n.astype(jnp.result_type(o)), new_state, inner_state)

        def skip(operands):
            updates, inner_state = operands
            return (jax.tree.map(jnp.zeros_like, updates) if mask else updates), inner_state

        out_updates = jax.eval_shape(run, (updates, state.inner_state))[0]
        in_updates = jax.eval_shape(lambda u: u, updates)
        if jax.tree.structure(out_updates) != jax.tree.structure(in_updates) or any(
            (a.shape, a.dtype) != (b.shape, b.dtype)
            for a, b in zip(jax.tree.leaves(out_updates), jax.tree.leaves(in_updates))
        ):
            raise ValueError(
                f"{name}: the inner transformation must return updates with the structure, shapes and "
                "dtypes of its input updates (the skipped branch returns those)."
            )
        condition = _condition(should_transform_fn, state.step, extra_args if forward_extra_args else {})
        new_updates, inner_state = jax.lax.cond(condition, run, skip, (updates, state.inner_state))
        return new_updates, make_state(saturating_increment(state.step), inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Applies ``inner`` at the steps ``should_transform_fn`` selects; passes the updates unchanged elsewhere.

    With ``t`` the number of earlier calls and ``c_t = should_transform_fn(t)``:

    .. math::
        (u_t, S_t) = \\begin{cases} T(g_t, S_{t-1}) & c_t \\\\ (g_t, S_{t-1}) & \\text{otherwise}
        \\end{cases}

    ``inner`` runs under ``jax.lax.cond``, so its cost is only paid on selected steps; its updates
    must have the structure, shapes and dtypes of its input.

    Args:
      inner: the transformation to apply.
      should_transform_fn: ``fn(step) -> bool`` (see ``ConditionFn``).
      forward_extra_args: also pass ``update``'s extra keyword arguments to
        ``should_transform_fn`` (default False).

    State: ``ConditionallyTransformState(inner_state, step)``. Matches
    ``optax.conditionally_transform``; to zero the updates instead use ``conditionally_mask``.
    """
    return _build(inner, should_transform_fn, forward_extra_args, mask=False)


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Applies ``inner`` at the steps ``should_transform_fn`` selects; returns zero updates elsewhere.

    With ``t`` the number of earlier calls and ``c_t = should_transform_fn(t)``:

    .. math::
        (u_t, S_t) = \\begin{cases} T(g_t, S_{t-1}) & c_t \\\\ (0, S_{t-1}) & \\text{otherwise}
        \\end{cases}

    ``inner`` runs under ``jax.lax.cond``, so its cost is only paid on selected steps; its updates
    must have the structure, shapes and dtypes of its input.

    Args:
      inner: the transformation to apply.
      should_transform_fn: ``fn(step) -> bool`` (see ``ConditionFn``).
      forward_extra_args: also pass ``update``'s extra keyword arguments to
        ``should_transform_fn`` (default False).

    State: ``ConditionallyMaskState(step, inner_state)``. Matches ``optax.conditionally_mask``;
    to pass the updates through instead use ``conditionally_transform``.
    """
    return _build(inner, should_transform_fn, forward_extra_args, mask=True)
