"""Working with optimizer states: map over the parameter-shaped parts, read a stored value and gradient.

``tree_map_params`` finds which parts of a state have the parameters' structure (moments, traces)
by running ``init`` on a placeholder, so sharding specs or dtype casts written for the parameters
carry over to the state. ``value_and_grad_from_state`` reuses the objective value and gradient that
a line search left in the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.base import OptState, Params, PyTree


@jax.tree_util.register_pytree_node_class
class _ParamsPlaceholder:
    """Stands for the whole parameter tree while ``init`` runs; it has no leaves."""

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux, children
        return cls()


def tree_map_params(
    initable: Any,
    f: Callable[..., Any],
    state: OptState,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> OptState:
    """Applies ``f`` to every copy of the parameter tree inside ``state``, leaf by leaf.

    ``initable.init`` (or ``initable`` itself, if it is a function) is called on a placeholder that
    stands for the parameters; every part of the resulting state that *is* the placeholder (a
    moment, a trace) is a parameter-shaped subtree of ``state``, and becomes
    ``jax.tree.map(f, subtree, *rest)``. The other leaves (step counts) become
    ``transform_non_params(leaf)``, or stay as they are. The classic use: a sharding spec per
    parameter turned into one per state leaf.

    Works for transformations whose ``init`` only maps over the parameters (``tree_zeros_like``
    and the like); one that reads their shapes or values (``masked`` with a mask tree, ``flatten``)
    cannot run on the placeholder.

    Args:
      initable: a ``GradientTransformation`` (any object with ``init``) or an ``init`` function.
      f: ``f(state_leaf, *rest_leaves)``, applied to each leaf of each parameter-shaped subtree.
      state: the state to map over.
      *rest: trees with the parameters' structure, passed leaf by leaf to ``f``.
      transform_non_params: applied to every other leaf of the state; default keep it.
      is_leaf: passed to ``jax.tree.map`` over the parameter-shaped subtrees.

    Returns:
      A tree with the structure of ``state``.

    Matches ``optax.tree_map_params``.
    """
    init = initable.init if hasattr(initable, "init") else initable
    if not callable(init):
        raise TypeError(
            f"tree_map_params: initable must be a GradientTransformation or an init function, "
            f"got {type(initable).__name__}."
        )
    with_placeholders = init(_ParamsPlaceholder())

    def map_params(template, value):
        if isinstance(template, _ParamsPlaceholder):
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    return jax.tree.map(
        map_params, with_placeholders, state, is_leaf=lambda x: isinstance(x, _ParamsPlaceholder)
    )


def _find_all(tree: PyTree, key: str, path: str = "state") -> list[tuple[str, Any]]:
    """Every ``(path, value)`` of a NamedTuple field or dict entry named ``key``, searched depth first."""
    found = []
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        for field in tree._fields:
            value = getattr(tree, field)
            if field == key:
                found.append((f"{path}.{field}", value))
            else:
                found += _find_all(value, key, f"{path}.{field}")
    elif isinstance(tree, dict):
        for name, value in tree.items():
            if name == key:
                found.append((f"{path}[{name!r}]", value))
            else:
                found += _find_all(value, key, f"{path}[{name!r}]")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            found += _find_all(value, key, f"{path}[{index}]")
    return found


def _get_one(state: OptState, key: str) -> Any:
    found = _find_all(state, key)
    if len(found) > 1:
        raise KeyError(f"value_and_grad_from_state: found several {key!r} in the state, at {[p for p, _ in found]}.")
    if not found or found[0][1] is None:
        raise ValueError(
            f"value_and_grad_from_state: no {key!r} in the state; use a transformation that stores the "
            "objective's value and grad (e.g. a line search with store_grad=True)."
        )
    return found[0][1]


def value_and_grad_from_state(
    value_fn: Callable[..., jax.Array],
) -> Callable[..., tuple[jax.Array, PyTree]]:
    """Like ``jax.value_and_grad(value_fn)``, but reuses the ``value`` and ``grad`` stored in the state.

    The returned function is ``f(params, *args, state, **kwargs) -> (value, grad)``:

    .. math::
        (f, \\nabla f) = (\\text{state.value}, \\text{state.grad}) \\ \\text{if state.value is finite,
        else } \\text{value\\_and\\_grad}(\\text{value\\_fn})(w, \\ldots)

    A line search evaluates the objective and its gradient at the point it accepts; the next
    iteration starts there, so recomputing them would double the cost. The first step (a state
    holding ``inf``) and any non-finite stored value fall back to ``jax.value_and_grad``, under
    ``jax.lax.cond``.

    Args:
      value_fn: the scalar objective ``value_fn(params, *args, **kwargs)``.

    Raises ``ValueError`` if the state holds no ``value`` or no ``grad`` field, ``KeyError`` if it
    holds several. Matches ``optax.value_and_grad_from_state``.
    """
    if not callable(value_fn):
        raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}.")

    def value_and_grad(params: Params, *fn_args: Any, state: OptState, **fn_kwargs: Any):
        value, grad = _get_one(state, "value"), _get_one(state, "grad")
        return jax.lax.cond(
            jnp.isfinite(value),
            lambda p, a, kw: (value, grad),
            lambda p, a, kw: jax.value_and_grad(value_fn)(p, *a, **kw),
            params,
            fn_args,
            fn_kwargs,
        )

    return value_and_grad
