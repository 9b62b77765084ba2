"""Finding and replacing values by name in optimizer states: ``gradtx.tree.get``, ``set``, ``get_all_with_path``.

An optimizer state is a tree of ``NamedTuple`` states and dicts (``chain`` gives a tuple of
them, ``inject_hyperparams`` a dict of hyperparameters). These functions look a value up by
its name, a dict key or a ``NamedTuple`` field, wherever it sits, so code that reads
``count`` or ``learning_rate`` need not know how the optimizer is assembled. A key may also
name a ``NamedTuple`` type (``"ScaleByAdamState"``): the whole sub-state is found.

Paths are JAX key paths, except that a ``NamedTuple`` field appears as a ``NamedTupleKey``
carrying the type's name too, so that a ``filtering`` function can tell apart two fields of
one name in two states. ``jax.tree_util.keystr(path)`` renders a path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

PyTree = Any
KeyPath = tuple[Any, ...]
Filtering = Callable[[KeyPath, Any], bool]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A path entry for field ``name`` of a ``NamedTuple`` of type ``tuple_name``; prints as ``tuple_name.name``.

    Matches ``optax.tree_utils.NamedTupleKey``.
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(type(node), "_fields")


def _children(path: KeyPath, node: Any) -> list[tuple[KeyPath, Any]]:
    """The direct children of ``node`` with their paths; none for a leaf."""
    if _is_named_tuple(node):
        return [((*path, NamedTupleKey(type(node).__name__, f)), getattr(node, f)) for f in node._fields]
    children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(children) == 1 and children[0][1] is node:
        return []
    return [((*path, *child_path), child) for child_path, child in children]


def _matches(path: KeyPath, node: Any, key: Any) -> list[tuple[KeyPath, Any]]:
    """What ``node`` itself holds under ``key``: the node (a NamedTuple of that name), a field or a dict entry."""
    if _is_named_tuple(node):
        if type(node).__name__ == key:
            return [(path, node)]
        if key in node._fields:
            return [((*path, NamedTupleKey(type(node).__name__, key)), getattr(node, key))]
    elif isinstance(node, dict) and key in node:
        return [((*path, jax.tree_util.DictKey(key)), node[key])]
    return []


def get_all_with_path(tree: PyTree, key: Any, filtering: Filtering | None = None) -> list[tuple[KeyPath, Any]]:
    """Every value of ``tree`` stored under ``key``, with its path, in depth-first order.

    A value matches when it is the entry ``key`` of a dict, the field ``key`` of a ``NamedTuple``,
    or a ``NamedTuple`` whose type is named ``key``. Matches nested inside a match are found too.

    Args:
      tree: the tree to search (an optimizer state).
      key: the dict key, field name or ``NamedTuple`` type name.
      filtering: keep only the pairs for which ``filtering(path, value)`` is true.

    Returns:
      A list of ``(path, value)`` pairs; ``[]`` when nothing matches.

    Matches ``optax.tree.get_all_with_path`` (Optax lists matches nested inside another match
    after all outer ones; here each follows its parent).
    """
    found: list[tuple[KeyPath, Any]] = []

    def walk(path, node):
        found.extend(_matches(path, node, key))
        for child_path, child in _children(path, node):
            walk(child_path, child)

    walk((), tree)
    if filtering is not None:
        found = [(path, value) for path, value in found if filtering(path, value)]
    return found


def get(tree: PyTree, key: Any, default: Any = None, filtering: Filtering | None = None) -> Any:
    """The one value of ``tree`` stored under ``key`` (see ``get_all_with_path``), or ``default``.

    ``gradtx.tree.get(state, "count")`` reads the step count of an Adam state however deep the
    chain holds it.

    Raises:
      KeyError: several values match; pass ``filtering`` to choose one.

    Matches ``optax.tree.get``.
    """
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = ", ".join(jax.tree_util.keystr(path) for path, _ in found)
        raise KeyError(f"get: {len(found)} values match {key!r} (at {paths}); pass filtering= to select one.")
    return found[0][1] if found else default


def set(tree: PyTree, filtering: Filtering | None = None, /, **kwargs: Any) -> PyTree:
    """A copy of ``tree`` with the values stored under each keyword replaced by its value.

    ``gradtx.tree.set(state, learning_rate=jnp.asarray(0.1))`` sets every ``learning_rate``
    (a dict entry, a ``NamedTuple`` field) that ``filtering(path, value)`` accepts; a keyword
    naming a ``NamedTuple`` type replaces that whole sub-state. The structure is otherwise kept.

    Raises:
      KeyError: some keyword matches nothing (after ``filtering``).

    Matches ``optax.tree.set``, except that Optax leaves a match unreplaced when it sits below
    a container without the key inside a matching state (the schedule's ``count`` of
    ``inject_hyperparams``' ``hyperparams_states``): here every value ``get_all_with_path``
    finds is replaced, as Optax's documentation says.
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            detail = " that filtering accepts" if filtering is not None else ""
            raise KeyError(f"set: no value{detail} is stored under {key!r} in the tree.")

    def accepted(path, value):
        return filtering is None or filtering(path, value)

    def rebuild(path, node):
        if _is_named_tuple(node):
            name = type(node).__name__
            if name in kwargs and accepted(path, node):
                return kwargs[name]
            fields = {}
            for f in node._fields:
                child_path, child = (*path, NamedTupleKey(name, f)), getattr(node, f)
                fields[f] = kwargs[f] if f in kwargs and accepted(child_path, child) else rebuild(child_path, child)
            return node._replace(**fields)
        if isinstance(node, dict):
            out = {}
            for k, child in node.items():
                child_path = (*path, jax.tree_util.DictKey(k))
                out[k] = kwargs[k] if k in kwargs and accepted(child_path, child) else rebuild(child_path, child)
            return type(node)(out) if type(node) is not dict else out
        children = _children(path, node)
        if not children:
            return node
        treedef = jax.tree.structure(node, is_leaf=lambda x: x is not node)
        return jax.tree.unflatten(treedef, [rebuild(p, c) for p, c in children])

    return rebuild((), tree)
