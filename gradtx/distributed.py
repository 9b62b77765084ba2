"""Optimizer state on a device mesh: sharding like the parameters, ZeRO-1, and data-parallel batches.

Three layouts, for parameters laid out on a ``jax.sharding.Mesh``:

* **like the parameters** (``state_shardings``, ``init_sharded``): every state leaf that mirrors a
  parameter (Adam's ``mu`` and ``nu``, a momentum buffer) gets that parameter's ``NamedSharding``;
  counters and scalars are replicated. A jitted step then keeps that layout by itself, because the
  new state is computed elementwise from the old state and the gradients.
* **ZeRO-1** (``zero1``): parameters replicated over the data-parallel axis, optimizer state
  sharded over it, so each device stores ``1 / n`` of the state (Rajbhandari et al. 2020, stage 1).
* **abstract**: for models too large to instantiate twice, ``jax.eval_shape(optimizer.init,
  abstract_params)`` gives the state's shapes and dtypes from ``jax.ShapeDtypeStruct``s without
  allocating anything, and ``init_sharded`` on such parameters gives them with their shardings.

The helpers work on meshes of both axis types: ``Explicit`` axes (``jax.make_mesh``'s default in
current JAX; shardings are part of the types, moved with ``jax.sharding.reshard``, and jitted code
runs under ``jax.set_mesh(mesh)``) and ``Auto`` axes (layouts are hints to the compiler, given with
``jax.lax.with_sharding_constraint``). Batches are split over the data axis with ``shard_batch``,
in one process or many; see ``docs/distributed.md`` for multi-process and multi-host training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from gradtx.base import GradientTransformation, OptState, Params, PyTree


def _sharding_of(leaf: Any) -> Sharding | None:
    return getattr(leaf, "sharding", None)


def _mesh_of(shardings: Sequence[Sharding | None]) -> Mesh | None:
    for sharding in shardings:
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def state_shardings(optimizer: GradientTransformation, params: Params) -> PyTree:
    """The sharding of every leaf of ``optimizer.init(params)``, following the parameters.

    A subtree of the state with the parameters' tree structure and shapes (``AdamState.mu``,
    ``TraceState.trace``, ...) gets the parameters' shardings leaf for leaf. Any other leaf gets
    the sharding of the parameters of its shape if they all share one (this covers ``masked``
    states, which hold a subset of the parameters), and is replicated over the mesh otherwise
    (step counts, hyperparameters, scalars).

    Args:
      optimizer: the transformation.
      params: the parameters, as ``jax.Array``s or as ``jax.ShapeDtypeStruct``s with a
        ``sharding``; at least one must carry a ``NamedSharding``.

    Returns:
      A pytree of ``Sharding``s with the state's structure, ready for ``jax.jit(...,
      out_shardings=...)``, ``jax.device_put`` or ``gradtx.load_state``.
    """
    param_leaves, param_def = jax.tree.flatten(params)
    param_shardings = [_sharding_of(leaf) for leaf in param_leaves]
    mesh = _mesh_of(param_shardings)
    if mesh is None:
        raise ValueError(
            "state_shardings: no parameter carries a NamedSharding; place the parameters on a mesh "
            "(jax.device_put(params, NamedSharding(mesh, spec))) or give ShapeDtypeStructs a sharding."
        )
    replicated = NamedSharding(mesh, PartitionSpec())
    param_shapes = [tuple(getattr(leaf, "shape", np.shape(leaf))) for leaf in param_leaves]
    by_shape: dict[tuple[int, ...], set] = {}
    for shape, sharding in zip(param_shapes, param_shardings):
        by_shape.setdefault(shape, set()).add(sharding)

    def mirrors_params(node: Any) -> bool:
        leaves, treedef = jax.tree.flatten(node)
        return (
            treedef == param_def
            and len(leaves) == len(param_shapes)
            and all(tuple(leaf.shape) == shape for leaf, shape in zip(leaves, param_shapes))
        )

    def assign(node: Any) -> Any:
        if mirrors_params(node):
            return jax.tree.unflatten(param_def, [s if s is not None else replicated for s in param_shardings])
        candidates = by_shape.get(tuple(node.shape), set())
        if len(candidates) == 1 and None not in candidates and tuple(node.shape) != ():
            return next(iter(candidates))
        return replicated

    abstract_state = jax.eval_shape(optimizer.init, params)
    return jax.tree.map(assign, abstract_state, is_leaf=mirrors_params)


def init_sharded(optimizer: GradientTransformation, params: Params) -> OptState:
    """``optimizer.init(params)`` computed on the mesh, each state leaf created in its final layout.

    Equivalent to ``jax.jit(optimizer.init, out_shardings=state_shardings(optimizer, params))(params)``:
    no device ever holds more of the state than its own shards. (A plain ``jax.jit(optimizer.init)``
    does not do this: zeros do not depend on the parameters' values, so nothing tells the compiler
    to lay them out like the parameters, and they come out on one device.)

    If every parameter is a ``jax.ShapeDtypeStruct`` (with a sharding), nothing is allocated or
    computed: the result is the abstract state, ``ShapeDtypeStruct``s carrying their shardings,
    e.g. as the target of ``gradtx.load_state`` or of ``out_shardings``.
    """
    init = jax.jit(optimizer.init, out_shardings=state_shardings(optimizer, params))
    if all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(params)):
        return jax.eval_shape(init, params)
    return init(params)


def _is_explicit(mesh: Mesh, axis_name: str) -> bool:
    return dict(zip(mesh.axis_names, mesh.axis_types))[axis_name] == jax.sharding.AxisType.Explicit


def _constrain(tree: PyTree, shardings: PyTree, explicit: bool) -> PyTree:
    """Moves each leaf to its sharding: ``reshard`` on an Explicit mesh axis, a constraint on an Auto one."""
    move = jax.sharding.reshard if explicit else jax.lax.with_sharding_constraint
    return jax.tree.map(move, tree, shardings)


def zero1_spec(shape: Sequence[int], axis_size: int, axis_name: str) -> PartitionSpec:
    """The ZeRO-1 layout of one state leaf: its first dimension divisible by ``axis_size`` is split.

    Leaves with no such dimension (scalars, a bias of 10 entries on 8 devices) are replicated;
    they are small, and padding them to a multiple of ``axis_size`` would change their shape.
    """
    for index, size in enumerate(shape):
        if size >= axis_size and size % axis_size == 0:
            return PartitionSpec(*([None] * index), axis_name)
    return PartitionSpec()


def zero1(inner: GradientTransformation, mesh: Mesh, axis_name: str = "data") -> GradientTransformation:
    """ZeRO stage 1: ``inner``'s state sharded over the data-parallel axis, parameters replicated.

    In data-parallel training each of the ``n`` devices of ``axis_name`` holds the parameters and,
    after the gradient all-reduce, the same gradients; computing the same optimizer update ``n``
    times on ``n`` copies of the state wastes memory. Here each state leaf is split along its
    first dimension divisible by ``n`` (``zero1_spec``), and each update runs as

    .. math::
        g^{(i)} = \\text{shard}_i(g), \\quad (u^{(i)}, s^{(i)}_t) = T(g^{(i)}, s^{(i)}_{t-1}, w^{(i)}),
        \\quad u = \\text{all\\_gather}_i(u^{(i)})

    so device ``i`` stores and updates only its shard ``s^{(i)}`` of the state (``1 / n`` of the
    bytes of every divisible leaf) and the replicated update ``u`` is rebuilt by all-gathers.
    Slicing the replicated gradient costs no communication. The arithmetic is ``inner``'s, element
    by element; transforms that reduce over the whole tree (``clip_by_global_norm``) add partial
    sums across devices, in another order than one device would.

    Use it under ``jax.jit`` for pure data parallelism: parameters replicated over the whole mesh
    and the batch sharded over ``axis_name`` (the layout ignores any model-parallel sharding of
    the parameters). The state keeps its layout from step to step. ``init`` outside ``jit`` builds
    the full state once before sharding it: call ``jax.jit(optimizer.init)(params)`` for large
    models.

    Args:
      inner: the transformation whose state is sharded (any gradtx or Optax transform).
      mesh: the device mesh.
      axis_name: the data-parallel mesh axis. Default ``"data"``.

    State: ``inner``'s state, unchanged in type, laid out as above. Updates: replicated.
    Reference: Rajbhandari, Rasley, Ruwase, He, "ZeRO: memory optimizations toward training
    trillion parameter models", SC 2020 (stage 1, optimizer state partitioning).
    """
    if axis_name not in mesh.axis_names:
        raise ValueError(f"zero1: the mesh has axes {mesh.axis_names}, not {axis_name!r}.")
    axis_size = mesh.shape[axis_name]
    explicit = _is_explicit(mesh, axis_name)
    replicated = NamedSharding(mesh, PartitionSpec())

    def layout(tree: PyTree) -> PyTree:
        return jax.tree.map(lambda leaf: NamedSharding(mesh, zero1_spec(np.shape(leaf), axis_size, axis_name)), tree)

    def init_fn(params: Params) -> OptState:
        state = inner.init(params)
        return _constrain(state, layout(state), explicit)

    def update_fn(updates, state, params=None, **extra_args):
        # Gradients and parameters are cut like the state they meet, so every elementwise
        # operation of the inner update runs on local shards.
        updates = _constrain(updates, layout(updates), explicit)
        if params is not None:
            params = _constrain(params, layout(params), explicit)
        if extra_args:
            new_updates, new_state = inner.update(updates, state, params, **extra_args)
        else:
            new_updates, new_state = inner.update(updates, state, params)
        new_state = _constrain(new_state, layout(new_state), explicit)
        new_updates = _constrain(new_updates, jax.tree.map(lambda _: replicated, new_updates), explicit)
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)


def bytes_per_device(tree: PyTree) -> int:
    """The most bytes of ``tree`` that any one device stores.

    Counts each device's shards of every ``jax.Array`` leaf (a replicated leaf counts in full on
    every device); for a ``jax.ShapeDtypeStruct`` with a sharding, the shard shape it implies.
    Leaves without a sharding (NumPy arrays, Python numbers) count in full.
    """
    per_device: dict[Any, int] = {}
    unplaced = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
            for shard in leaf.addressable_shards:
                per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
        elif isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is not None:
            shard_bytes = int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize
            for device in leaf.sharding.device_set:
                per_device[device] = per_device.get(device, 0) + shard_bytes
        else:
            unplaced += int(np.size(leaf)) * np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype)).itemsize
    return max(per_device.values(), default=0) + unplaced


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: str = "data") -> PyTree:
    """Assembles each process's rows of a batch into global arrays split over ``axis_name``.

    Every leaf of ``batch`` holds this process's rows (leading axis); the result's leaves are
    global ``jax.Array``s of ``sum over processes`` rows, sharded along the leading axis over the
    devices of ``axis_name``. In a single process the rows are the whole batch. Wraps
    ``jax.make_array_from_process_local_data``.
    """
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places the same host value on every device of ``mesh`` (all processes must pass equal values)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), tree)
