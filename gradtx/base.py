"""The transformation protocol: ``GradientTransformation``, ``apply_updates`` and trivial transforms.

Everything in gradtx is built on one idea, shared on purpose with Optax so that the two
interoperate: a gradient transformation is a pair of pure functions

    init(params) -> state
    update(updates, state, params=None, **extra_args) -> (new_updates, new_state)

The user applies the final ``new_updates`` with ``apply_updates(params, new_updates)``,
i.e. ``w <- w + u``. Signs follow that convention: a descent method returns ``u = -lr * d``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp

from gradtx.tree_utils import keep_dtype

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


class InitFn(Protocol):
    """``init(params) -> state``: builds a transformation's state from the parameters."""

    def __call__(self, params: Params) -> OptState: ...


class UpdateFn(Protocol):
    """``update(updates, state, params=None, **extra_args) -> (updates, state)``: one step."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None) -> (updates, state)``, without extra arguments.

    Optax's ``optax.TransformUpdateFn``. gradtx's own update functions all take ``**extra_args``
    (``TransformUpdateExtraArgsFn``), so they satisfy this protocol too.
    """

    def __call__(self, updates: Updates, state: OptState, params: Params | None = None) -> tuple[Updates, OptState]: ...


# Optax's names for the protocol types (``optax.TransformInitFn``, ``optax.TransformUpdateExtraArgsFn``).
TransformInitFn = InitFn
TransformUpdateExtraArgsFn = UpdateFn


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair.

    ``init(params)`` builds the state (a pytree of arrays, usually a ``NamedTuple``).
    ``update(updates, state, params=None, **extra_args)`` maps incoming updates (gradients at
    the start of a chain) to outgoing updates and returns the new state. Extra keyword
    arguments (``value_fn=`` for second-order methods, for example) are forwarded by ``chain``
    to every transform; transforms that do not need them ignore them.

    The layout equals ``optax.GradientTransformation``: a gradtx transform can be placed in
    ``optax.chain`` or used as the ``tx`` of a Flax ``TrainState``, and an Optax transform can be
    placed in ``gradtx.chain``.
    """

    init: InitFn
    update: UpdateFn


class EmptyState(NamedTuple):
    """State of a transformation that keeps none."""


def init_empty_state(params: Params) -> EmptyState:
    """An ``init`` that keeps no state: ``params -> EmptyState()``. Matches ``optax.init_empty_state``."""
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """The transformation ``u <- g`` with no state."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformation(init_fn, update_fn)


def stateless(
    update_fn: Callable[[Updates, Params | None], Updates],
) -> GradientTransformation:
    """Wraps ``f(updates, params) -> updates`` into a transformation with ``EmptyState``."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def wrapped_update(updates, state, params=None, **extra_args):
        del extra_args
        return update_fn(updates, params), state

    return GradientTransformation(init_fn, wrapped_update)


def stateless_with_tree_map(
    leaf_fn: Callable[[jax.Array], jax.Array],
) -> GradientTransformation:
    """Wraps a leaf-wise function ``f(u) -> u`` into a stateless transformation."""
    return stateless(lambda updates, params: jax.tree.map(leaf_fn, updates))


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``w + u`` leaf by leaf, keeping each parameter's dtype.

    The sum is formed in the wider of the two dtypes and cast back, so bfloat16 parameters
    receive float32 updates without an intermediate bfloat16 rounding of ``u``.
    ``None`` leaves (absent parameters) stay ``None``.
    """

    def add(param, update):
        if param is None:
            return None
        param = jnp.asarray(param)
        return keep_dtype(param + update, param.dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)


def value_at(hyperparameter: Any, step_count: jax.Array) -> Any:
    """The hyperparameter's value at ``step_count``: ``h(t)`` for a schedule, else ``h`` itself."""
    return hyperparameter(step_count) if callable(hyperparameter) else hyperparameter
