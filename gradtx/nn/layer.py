"""The layer protocol: a ``Layer`` is a pair of pure functions, ``init`` and ``apply``.

    params, state = layer.init(key)
    y, new_state  = layer.apply(params, state, x, *, train, axis_name=None)

``params`` is a dict of arrays that training updates by gradient (``{"kernel", "bias"}``,
``{"scale", "bias"}``: the same names as the Flax layer of the same kind, so parameters move
between the two without renaming). ``state`` is a ``NamedTuple`` of arrays that ``apply``
updates itself (a batch norm's running averages), ``EmptyState()`` for layers that keep none.
``train`` must be a Python bool (it selects a code path, so under ``jit`` mark it static or close
over it). ``axis_name`` names a mapped axis (``jax.vmap``, ``jax.shard_map``, ``jax.pmap``) over
which statistics are averaged; layers without statistics ignore it. Hyperparameters are closed
over by the function that builds the layer, as in ``GradientTransformation``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax

from gradtx.base import EmptyState

Params = dict[str, Any]
LayerState = Any


class InitFn(Protocol):
    """``init(key) -> (params, state)``; the key may be ``None`` when every initializer ignores it."""

    def __call__(self, key: jax.Array | None) -> tuple[Params, LayerState]: ...


class ApplyFn(Protocol):
    """``apply(params, state, x, *, train, axis_name=None) -> (y, new_state)``."""

    def __call__(
        self,
        params: Params,
        state: LayerState,
        x: jax.Array,
        *,
        train: bool,
        axis_name: str | None = None,
    ) -> tuple[jax.Array, LayerState]: ...


class Layer(NamedTuple):
    """A pure ``(init, apply)`` pair; see the module docstring for the calling convention."""

    init: InitFn
    apply: ApplyFn


__all__ = ["ApplyFn", "EmptyState", "InitFn", "Layer", "LayerState", "Params"]
