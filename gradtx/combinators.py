"""Combinators: build one transformation out of several.

``chain`` composes, ``named_chain`` composes with readable state keys, ``masked`` and
``partition`` route subsets of the parameter tree, ``freeze``/``set_to_zero`` stop updates.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple, Union

import jax

from gradtx.base import EmptyState, GradientTransformation, OptState, Params, PyTree


def _accepts_extra_args(update_fn: Callable) -> bool:
    """Whether ``update_fn`` takes ``**kwargs`` (gradtx transforms and Optax's ExtraArgs ones)."""
    try:
        parameters = inspect.signature(update_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _call_update(transform: Any, updates, state, params, extra_args):
    """Calls a gradtx or Optax transform's update, passing extra arguments only where accepted."""
    if extra_args and _accepts_extra_args(transform.update):
        return transform.update(updates, state, params, **extra_args)
    return transform.update(updates, state, params)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transforms in sequence: ``u <- T_k(... T_2(T_1(g)))``.

    State: a tuple with one entry per transform, in order. Extra keyword arguments of ``update``
    are forwarded to every transform that accepts ``**kwargs``. Any object with ``init`` and
    ``update`` is accepted, Optax transforms included.

    Matches ``optax.chain``.
    """
    for index, transform in enumerate(transforms):
        if not (hasattr(transform, "init") and hasattr(transform, "update")):
            raise TypeError(
                f"chain argument {index} is {type(transform).__name__}, expected a "
                "GradientTransformation (an object with init and update)."
            )

    def init_fn(params: Params) -> tuple:
        return tuple(transform.init(params) for transform in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transforms received a state with "
                f"{len(state) if isinstance(state, tuple) else type(state).__name__} entries; "
                "was it built by this chain's init?"
            )
        new_states = []
        for transform, inner_state in zip(transforms, state):
            updates, inner_state = _call_update(transform, updates, inner_state, params, extra_args)
            new_states.append(inner_state)
        return updates, tuple(new_states)

    return GradientTransformation(init_fn, update_fn)


def named_chain(*named_transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like ``chain``, with the state a dict keyed by the given names.

    ``named_chain(("clip", clip_by_global_norm(1.0)), ("adam", adam(1e-3)))`` has state
    ``{"clip": ..., "adam": ...}``, so ``state["adam"]`` reads back the moments.
    Matches ``optax.named_chain``.
    """
    names = [name for name, _ in named_transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain names must be unique, got {names}.")

    def init_fn(params: Params) -> dict:
        return {name: transform.init(params) for name, transform in named_transforms}

    def update_fn(updates, state, params=None, **extra_args):
        new_state = {}
        for name, transform in named_transforms:
            if name not in state:
                raise ValueError(f"named_chain state has no entry {name!r}; found {sorted(state)}.")
            updates, new_state[name] = _call_update(transform, updates, state[name], params, extra_args)
        return updates, new_state

    return GradientTransformation(init_fn, update_fn)


class MaskedNode(NamedTuple):
    """Stands in for a leaf that a mask excludes; it holds nothing and has no leaves."""


class MaskedState(NamedTuple):
    """State of ``masked``: the inner transform's state over the selected leaves only."""

    inner_state: OptState


MaskOrFn = Union[PyTree, Callable[[Params], PyTree]]


def _resolve_mask(mask: MaskOrFn, params: Params) -> PyTree:
    return mask(params) if callable(mask) else mask


def _select(tree: PyTree, mask: PyTree) -> PyTree:
    """Leaves where the mask is True, ``MaskedNode()`` elsewhere (keeps the structure)."""
    return jax.tree.map(lambda keep, leaf: leaf if keep else MaskedNode(), mask, tree)


def masked(inner: GradientTransformation, mask: MaskOrFn) -> GradientTransformation:
    """Applies ``inner`` to the leaves where ``mask`` is True; other updates pass unchanged.

    ``u_i <- T(g)_i`` if ``mask_i`` else ``g_i``. The mask is a tree of booleans with the
    structure of the parameters (or a prefix of it), or a function ``params -> mask``. The
    inner state covers only the selected leaves, so masking out large embeddings saves
    their optimizer memory. Matches ``optax.masked``.
    """

    def init_fn(params: Params) -> MaskedState:
        mask_tree = _resolve_mask(mask, params)
        return MaskedState(inner.init(_select(params, mask_tree)))

    def update_fn(updates, state, params=None, **extra_args):
        mask_tree = _resolve_mask(mask, updates if params is None else params)
        selected_updates = _select(updates, mask_tree)
        selected_params = None if params is None else _select(params, mask_tree)
        new_selected, inner_state = _call_update(
            inner, selected_updates, state.inner_state, selected_params, extra_args
        )
        merged = jax.tree.map(
            lambda keep, new, old: new if keep else old,
            mask_tree,
            new_selected,
            updates,
            is_leaf=lambda x: isinstance(x, MaskedNode),
        )
        return merged, MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


class PartitionState(NamedTuple):
    """State of ``partition``: one inner state per label."""

    inner_states: dict


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: PyTree | Callable[[Params], PyTree],
) -> GradientTransformation:
    """Routes each leaf to the transform of its label: ``u_i <- T_{label(i)}(g)_i``.

    ``param_labels`` is a tree of labels with the parameters' structure, or a function
    ``params -> labels``. Every label must have a transform. Matches ``optax.partition``
    (formerly ``multi_transform``).
    """

    def labels_of(params: Params) -> PyTree:
        labels = param_labels(params) if callable(param_labels) else param_labels
        missing = set(jax.tree.leaves(labels)) - set(transforms)
        if missing:
            raise ValueError(
                f"partition: labels {sorted(map(str, missing))} have no transform; "
                f"transforms are given for {sorted(map(str, transforms))}."
            )
        return labels

    def masks_of(labels: PyTree) -> dict:
        return {label: jax.tree.map(lambda leaf_label: leaf_label == label, labels) for label in transforms}

    def init_fn(params: Params) -> PartitionState:
        masks = masks_of(labels_of(params))
        return PartitionState(
            {label: masked(tx, masks[label]).init(params) for label, tx in transforms.items()}
        )

    def update_fn(updates, state, params=None, **extra_args):
        masks = masks_of(labels_of(updates if params is None else params))
        new_states = {}
        for label, tx in transforms.items():
            updates, new_states[label] = masked(tx, masks[label]).update(
                updates, state.inner_states[label], params, **extra_args
            )
        return updates, PartitionState(new_states)

    return GradientTransformation(init_fn, update_fn)


def set_to_zero() -> GradientTransformation:
    """``u <- 0`` for every leaf; no state. Matches ``optax.set_to_zero``."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(lambda u: u * 0, updates), state

    return GradientTransformation(init_fn, update_fn)


def freeze(mask: MaskOrFn) -> GradientTransformation:
    """Zeroes the updates of leaves where ``mask`` is True (frozen parameters keep no state).

    Matches ``optax.freeze``.
    """
    return masked(set_to_zero(), mask)


def selective_transform(
    optimizer: GradientTransformation, *, freeze_mask: bool | jax.Array | PyTree
) -> GradientTransformation:
    """Applies ``optimizer`` to the trainable leaves and zeroes the frozen ones.

    ``u_i <- 0`` where ``freeze_mask_i`` is True, ``u_i <- T(g)_i`` elsewhere, with ``T`` seeing
    (and keeping state for) only the trainable leaves: ``partition({"train": optimizer,
    "freeze": set_to_zero()}, labels)``.

    Args:
      optimizer: ``T``, the transformation for the trainable leaves.
      freeze_mask: keyword-only and static: a bool (freeze all or nothing) or a tree of bools
        with the parameters' structure or a prefix of it (True freezes a whole subtree).

    State: ``PartitionState`` with the labels ``"train"`` and ``"freeze"``.
    Matches ``optax.transforms.selective_transform``.
    """

    def labels(params: Params) -> PyTree:
        del params
        return jax.tree.map(lambda frozen: "freeze" if frozen else "train", freeze_mask)

    return partition({"train": optimizer, "freeze": set_to_zero()}, param_labels=labels)


# Optax's former names for ``partition`` and its state (``optax.multi_transform``, ``optax.MultiTransformState``).
multi_transform = partition
MultiTransformState = PartitionState
