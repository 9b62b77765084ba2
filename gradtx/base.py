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
import numpy as np

from gradtx.tree_utils import check_trees_match, check_updates_match_params, keep_dtype, path_to_str
from gradtx.validation import check_empty_state

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


class GradientTransformationExtraArgs(GradientTransformation):
    """A ``GradientTransformation`` whose ``update`` accepts extra keyword arguments.

    ``update(updates, state, params=None, **extra_args)``: arguments the transformation does not
    use are ignored, and wrappers (``chain``, ``masked``, ...) forward them to the transforms
    inside. Builders return this class where Optax returns ``optax.GradientTransformationExtraArgs``
    (``chain``, ``named_chain``, ``masked``, ``partition``, ``apply_if_finite``,
    ``inject_hyperparams``, so every named optimizer), so ``isinstance(tx,
    gradtx.GradientTransformationExtraArgs)`` reads as it does in Optax.

    It is not a subclass of Optax's class (gradtx does not import Optax), so
    ``isinstance(tx, optax.GradientTransformationExtraArgs)`` is False: ``optax.chain`` then wraps
    a gradtx transform with ``optax.with_extra_args_support`` and drops extra arguments (such as
    ``value_fn=``) before they reach it. Use ``gradtx.chain``, which forwards them to any
    transform whose ``update`` takes ``**kwargs``, Optax's included.
    """


class EmptyState(NamedTuple):
    """State of a transformation that keeps none."""


def init_empty_state(params: Params) -> EmptyState:
    """An ``init`` that keeps no state: ``params -> EmptyState()``. Matches ``optax.init_empty_state``."""
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """The transformation ``u <- g`` with no state. Matches ``optax.identity``."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "identity")
        check_updates_match_params(updates, params, "identity")
        return updates, state

    return GradientTransformation(init_fn, update_fn)


def stateless(
    update_fn: Callable[[Updates, Params | None], Updates],
) -> GradientTransformation:
    """Wraps ``f(updates, params) -> updates`` into a transformation with ``EmptyState``.

    When ``params`` is given, the updates must have its structure and leaf shapes (``ValueError``
    naming the first differing path otherwise). Matches ``optax.stateless``.
    """

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def wrapped_update(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "stateless")
        check_updates_match_params(updates, params, "stateless")
        return update_fn(updates, params), state

    return GradientTransformation(init_fn, wrapped_update)


def stateless_with_tree_map(
    leaf_fn: Callable[[jax.Array, jax.Array | None], jax.Array],
) -> GradientTransformation:
    """Wraps a leaf-wise function ``f(u, w) -> u`` into a stateless transformation.

    ``u_i <- f(g_i, w_i)`` for every leaf, with ``w_i = None`` when ``update`` is called without
    ``params``. Matches ``optax.stateless_with_tree_map`` (same ``(update, param)`` arguments).
    """

    def update_fn(updates: Updates, params: Params | None) -> Updates:
        if params is None:
            return jax.tree.map(lambda g: leaf_fn(g, None), updates)
        return jax.tree.map(leaf_fn, updates, params)

    return stateless(update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``w + u`` leaf by leaf, keeping each parameter's dtype.

    The sum is formed in the wider of the two dtypes and cast back, so bfloat16 parameters
    receive float32 updates without an intermediate bfloat16 rounding of ``u``.
    ``None`` leaves (absent parameters) stay ``None``, and ``params=None`` gives ``None``, as in Optax.

    Raises:
      ValueError: if ``updates`` does not have the structure and leaf shapes of ``params``
        (naming the first differing path), instead of broadcasting a ``(1, 2)`` update onto a
        ``(3, 2)`` parameter.
      TypeError: for an integer or boolean parameter receiving a floating-point (or complex)
        update, which the cast back to the parameter's dtype would truncate, usually to no change
        at all. Integer updates of integer parameters are added exactly. Optax truncates silently.
    """
    if params is None:
        return None
    check_trees_match(updates, params, name="updates", reference_name="params", context="apply_updates")
    for index, (param, update) in enumerate(zip(jax.tree.leaves(params), jax.tree.leaves(updates))):
        param_dtype = _dtype_of(param)
        if _is_inexact(param_dtype):
            continue
        update_dtype = _dtype_of(update)
        if param_dtype.kind == "b" or _is_inexact(update_dtype):
            path = path_to_str(jax.tree.leaves_with_path(params)[index][0])
            raise TypeError(
                f"apply_updates: params leaf {path} has dtype {param_dtype} and its update "
                f"{update_dtype}; the sum would be truncated back to {param_dtype} (a step smaller "
                "than 1 is lost). Make the parameter floating-point, or keep it out of the "
                "optimizer (gradtx.masked/freeze, or a separate non-trainable collection)."
            )

    def add(param, update):
        if param is None:
            return None
        if isinstance(param, jax.Array) and isinstance(update, jax.Array) and param.dtype == update.dtype:
            return jax.lax.add(param, update)  # lax: ``+`` traces as a nested jit, once per leaf
        param = jnp.asarray(param)
        return keep_dtype(param + update, param.dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)


def _dtype_of(leaf: Any) -> Any:
    """A leaf's dtype, read from the attribute when it has one (``jnp.result_type`` is slow per leaf)."""
    dtype = getattr(leaf, "dtype", None)
    return dtype if isinstance(dtype, np.dtype) else np.dtype(jnp.result_type(leaf))


def _is_inexact(dtype: np.dtype) -> bool:
    # bfloat16, float8 (and int4) from ml_dtypes are NumPy kind "V": ask JAX only for those.
    return dtype.kind in "fc" or (dtype.kind == "V" and bool(jnp.issubdtype(dtype, jnp.inexact)))


def value_at(hyperparameter: Any, step_count: jax.Array) -> Any:
    """The hyperparameter's value at ``step_count``: ``h(t)`` for a schedule, else ``h`` itself."""
    return hyperparameter(step_count) if callable(hyperparameter) else hyperparameter
