"""Combinators: build one transformation out of several.

``chain`` composes, ``named_chain`` composes with readable state keys, ``masked`` and
``partition`` route subsets of the parameter tree, ``freeze``/``set_to_zero`` stop updates.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple, Union

import jax

from gradtx.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    PyTree,
)
from gradtx.tree_utils import check_updates_match_params, path_to_str
from gradtx.validation import check_empty_state, check_schedule_arguments, check_state_type


def _accepts_extra_args(update_fn: Callable) -> bool:
    """Whether ``update_fn`` takes ``**kwargs`` (gradtx transforms and Optax's ExtraArgs ones)."""
    if isinstance(getattr(update_fn, "__self__", None), GradientTransformationExtraArgs):
        return True
    try:
        parameters = inspect.signature(update_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _call_update(transform: Any, updates, state, params, extra_args):
    """Calls a gradtx or Optax transform's update, passing extra arguments only where accepted."""
    if extra_args and (isinstance(transform, GradientTransformationExtraArgs) or _accepts_extra_args(transform.update)):
        return transform.update(updates, state, params, **extra_args)
    return transform.update(updates, state, params)


def chain(*transforms: GradientTransformation) -> GradientTransformationExtraArgs:
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

    return GradientTransformationExtraArgs(init_fn, update_fn)


def named_chain(*named_transforms: tuple[str, GradientTransformation]) -> GradientTransformationExtraArgs:
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
        check_state_type(state, Mapping, "named_chain")
        new_state = {}
        for name, transform in named_transforms:
            if name not in state:
                raise ValueError(f"named_chain state has no entry {name!r}; found {sorted(state)}.")
            updates, new_state[name] = _call_update(transform, updates, state[name], params, extra_args)
        return updates, new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)


class MaskedNode(NamedTuple):
    """Stands in for a leaf that a mask excludes; it holds nothing and has no leaves."""


class MaskedState(NamedTuple):
    """State of ``masked``: the inner transform's state over the selected leaves only."""

    inner_state: OptState


MaskOrFn = Union[PyTree, Callable[[Params], PyTree]]


def _mask_is_function(mask: MaskOrFn) -> bool:
    """Whether ``mask`` is a function ``params -> mask`` rather than a mask tree.

    Optax's rule: a function iff every leaf of the mask is callable. A callable pytree (an
    Equinox module whose ``__call__`` is the forward pass, holding booleans) is a tree of
    non-callable leaves, so it is used as the mask itself, not called.
    """
    callable_leaves = jax.tree.leaves(jax.tree.map(callable, mask))
    return len(callable_leaves) > 0 and all(callable_leaves)


def _resolve_mask(mask: MaskOrFn, params: Params, where: str = "masked") -> PyTree:
    mask_tree = mask(params) if _mask_is_function(mask) else mask
    check_mask_matches(mask_tree, params, where)
    return mask_tree


def check_mask_matches(mask: PyTree, tree: PyTree, where: str = "masked") -> None:
    """Raises ``ValueError`` naming a path unless ``mask`` is ``tree``'s structure or a prefix of it.

    Every leaf of ``tree`` must lie under exactly one leaf of ``mask`` (a boolean or a label),
    and every mask leaf must cover a part of ``tree``.
    """
    try:
        jax.tree.structure(mask).flatten_up_to(tree)
        return
    except (ValueError, TypeError):
        pass
    mask_paths = [path for path, _ in jax.tree.leaves_with_path(mask)]
    tree_paths = [path for path, _ in jax.tree.leaves_with_path(tree)]

    def covers(mask_path: tuple, path: tuple) -> bool:
        return path[: len(mask_path)] == mask_path

    for path in tree_paths:
        if not any(covers(mask_path, path) for mask_path in mask_paths):
            raise ValueError(
                f"{where}: the mask has no entry for the leaf at {path_to_str(path)}; give the mask the "
                "structure of the parameters (or a prefix of it), with a boolean for every leaf or subtree."
            )
    for mask_path in mask_paths:
        if not any(covers(mask_path, path) for path in tree_paths):
            raise ValueError(
                f"{where}: the mask has an entry at {path_to_str(mask_path)}, which the parameters do not "
                "have; give the mask the structure of the parameters (or a prefix of it)."
            )
    raise ValueError(
        f"{where}: the mask's structure {jax.tree.structure(mask)} is not a prefix of the parameters' "
        f"structure {jax.tree.structure(tree)} (a container of another type?)."
    )


def _select(tree: PyTree, mask: PyTree) -> PyTree:
    """Leaves where the mask is True, ``MaskedNode()`` elsewhere (keeps the structure)."""
    return jax.tree.map(lambda keep, leaf: leaf if keep else MaskedNode(), mask, tree)


def _mask_extra_args(extra_args: dict, reference: PyTree, mask_tree: PyTree, enabled: bool) -> dict:
    """Extra arguments with the reference's structure, masked like it (when ``enabled``)."""
    if not enabled:
        return extra_args
    structure = jax.tree.structure(reference)
    return {
        name: _select(value, mask_tree) if jax.tree.structure(value) == structure else value
        for name, value in extra_args.items()
    }


def masked(
    inner: GradientTransformation, mask: MaskOrFn, *, mask_compatible_extra_args: bool = False
) -> GradientTransformationExtraArgs:
    """Applies ``inner`` to the leaves where ``mask`` is True; other updates pass unchanged.

    ``u_i <- T(g)_i`` if ``mask_i`` else ``g_i``. The mask is a tree of booleans with the
    structure of the parameters (or a prefix of it), or a function ``params -> mask``. As in
    Optax, ``mask`` counts as a function only if all its leaves are callable: a callable pytree
    (an Equinox module holding booleans) is used as the mask tree, not called. A mask that does
    not fit the parameters is a ``ValueError`` naming the path. The inner state covers only the
    selected leaves, so masking out large embeddings saves their optimizer memory.

    Args:
      inner: the transformation applied to the selected leaves.
      mask: the mask tree, or a function ``params -> mask``.
      mask_compatible_extra_args: also mask extra ``update`` arguments that have the updates'
        structure (per-parameter tags, for example). Default False.

    State: ``MaskedState(inner_state)``. Matches ``optax.masked``.
    """

    def init_fn(params: Params) -> MaskedState:
        mask_tree = _resolve_mask(mask, params)
        return MaskedState(inner.init(_select(params, mask_tree)))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, MaskedState, "masked")
        check_updates_match_params(updates, params, "masked")
        mask_tree = _resolve_mask(mask, updates if params is None else params)
        selected_updates = _select(updates, mask_tree)
        selected_params = None if params is None else _select(params, mask_tree)
        extra_args = _mask_extra_args(extra_args, updates, mask_tree, mask_compatible_extra_args)
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

    return GradientTransformationExtraArgs(init_fn, update_fn)


class PartitionState(NamedTuple):
    """State of ``partition``: one inner state per label."""

    inner_states: dict


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: PyTree | Callable[[Params], PyTree],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Routes each leaf to the transform of its label: ``u_i <- T_{label(i)}(g)_i``.

    ``param_labels`` is a tree of labels with the parameters' structure (or a prefix of it), or a
    function ``params -> labels`` (a function iff all its leaves are callable, as for ``masked``).
    Every label must have a transform. ``mask_compatible_extra_args`` is passed to ``masked``.
    Matches ``optax.partition`` (formerly ``multi_transform``).
    """

    def labels_of(params: Params) -> PyTree:
        labels = param_labels(params) if _mask_is_function(param_labels) else param_labels
        check_mask_matches(labels, params, "partition")
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
        check_state_type(state, PartitionState, "partition")
        check_updates_match_params(updates, params, "partition")
        masks = masks_of(labels_of(updates if params is None else params))
        new_states = {}
        for label, tx in transforms.items():
            updates, new_states[label] = masked(
                tx, masks[label], mask_compatible_extra_args=mask_compatible_extra_args
            ).update(updates, state.inner_states[label], params, **extra_args)
        return updates, PartitionState(new_states)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def set_to_zero() -> GradientTransformation:
    """``u <- 0`` for every leaf; no state. Matches ``optax.set_to_zero``."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "set_to_zero")
        check_updates_match_params(updates, params, "set_to_zero")
        return jax.tree.map(lambda u: u * 0, updates), state

    return GradientTransformation(init_fn, update_fn)


def freeze(mask: MaskOrFn) -> GradientTransformation:
    """Zeroes the updates of leaves where ``mask`` is True (frozen parameters keep no state).

    Matches ``optax.freeze``.
    """
    return masked(set_to_zero(), mask)


@check_schedule_arguments
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
