"""Saving and restoring optimizer states (or any pytree of arrays), exactly.

``save_state(path, tree)`` writes every leaf, bit for bit and with its dtype (bfloat16 and
other non-NumPy dtypes included), to one ``.npz`` file; ``load_state(path, like)`` reads it back
into the structure of ``like``, a tree of the same structure (a fresh ``optimizer.init(params)``,
or its ``jax.eval_shape``), checking every leaf's path, shape and dtype. Training resumed from a
restored state continues exactly as if it had not stopped::

    gradtx.save_state("ckpt.npz", (params, opt_state))
    params, opt_state = gradtx.load_state("ckpt.npz", like=(params, optimizer.init(params)))

With ``format="orbax"`` the same calls use Orbax's ``StandardCheckpointer`` (a directory instead
of a file; needed when arrays span several processes), if ``orbax-checkpoint`` is installed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import PyTree
from gradtx.tree_utils import path_to_str

_METADATA_KEY = "__gradtx_metadata__"
_FORMAT_VERSION = 1


def _is_key_array(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _leaf_record(path: tuple, leaf: Any) -> tuple[dict, np.ndarray]:
    """The metadata of one leaf and the NumPy array that stores its bytes."""
    if _is_key_array(leaf):
        data = np.asarray(jax.random.key_data(leaf))
        record = {"path": path_to_str(path), "kind": "prng_key", "impl": str(jax.random.key_impl(leaf))}
        return {**record, "dtype": str(data.dtype), "shape": list(np.shape(leaf))}, data
    array = np.asarray(leaf)
    record = {"path": path_to_str(path), "kind": "array", "dtype": array.dtype.name, "shape": list(array.shape)}
    if array.dtype.kind == "V" or array.dtype.type.__module__ != "numpy":
        # bfloat16, float8, int4 ...: ml_dtypes types that np.savez would store as raw void.
        array = array.view(np.dtype(f"u{array.dtype.itemsize}")) if array.dtype.itemsize in (1, 2, 4, 8) else array
    return record, array


def save_state(path: str | os.PathLike, tree: PyTree, *, format: str = "npz") -> None:
    """Writes every leaf of ``tree`` to ``path``, exactly.

    ``npz`` (default): one NumPy ``.npz`` file (``path`` is used as given, no suffix is added),
    written to a temporary name and renamed, so an interrupted save never leaves a truncated
    checkpoint. Arrays are gathered to the host (they must be fully addressable: a
    single-process run, or replicated); non-NumPy dtypes such as bfloat16 are stored as their
    raw bits with the dtype's name; typed PRNG keys as their key data. Leaves that are not
    arrays (Python numbers) are stored as 0-d arrays.

    ``orbax``: ``orbax.checkpoint.StandardCheckpointer`` writes the directory ``path`` (which
    must not exist); this also handles arrays sharded across processes.
    """
    if format == "orbax":
        checkpointer = _orbax_checkpointer()
        checkpointer.save(os.path.abspath(path), tree)
        checkpointer.wait_until_finished()
        return
    if format != "npz":
        raise ValueError(f"save_state: format must be 'npz' or 'orbax', got {format!r}.")
    records, arrays = [], {}
    for index, (leaf_path, leaf) in enumerate(jax.tree.leaves_with_path(tree)):
        record, array = _leaf_record(leaf_path, leaf)
        records.append(record)
        arrays[f"leaf_{index}"] = array
    metadata = json.dumps({"version": _FORMAT_VERSION, "leaves": records})
    arrays[_METADATA_KEY] = np.frombuffer(metadata.encode(), np.uint8)
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
    os.replace(temporary, path)


def _place(array: np.ndarray, like: Any) -> jax.Array:
    sharding = getattr(like, "sharding", None)
    if sharding is not None:
        return jax.device_put(array, sharding)
    return jnp.asarray(array)


def _is_loosely_typed(leaf: Any) -> bool:
    """Whether ``leaf``'s dtype is a default rather than a choice: a Python number or a weakly typed array.

    ``TrainState.create`` starts Flax's ``step`` as the Python int ``0``; after a jitted step it is
    an int32 (or int64 with ``jax_enable_x64``) array. A fresh state therefore cannot say which
    integer width the checkpoint holds, and the saved one is taken.
    """
    return isinstance(leaf, (bool, int, float, complex)) or bool(getattr(leaf, "weak_type", False))


def _leaf_dtype(leaf: Any) -> np.dtype:
    return jnp.dtype(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype)


def _dtypes_compatible(stored: np.dtype, like_leaf: Any) -> bool:
    """Same dtype, or a loosely typed ``like`` leaf of the same kind (int/float/bool/complex)."""
    like_dtype = _leaf_dtype(like_leaf)
    if stored == like_dtype:
        return True
    return _is_loosely_typed(like_leaf) and stored.kind == like_dtype.kind


def _exact_integer_cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``array`` as the integer ``dtype`` if every value survives the cast, else None."""
    if array.dtype.kind not in "iu" or dtype.kind not in "iu":
        return None
    cast = array.astype(dtype)
    return cast if np.array_equal(cast.astype(array.dtype), array) else None


def load_state(path: str | os.PathLike, like: PyTree, *, format: str = "npz") -> PyTree:
    """Reads a tree written by ``save_state`` into the structure of ``like``.

    Args:
      path: the file (``npz``) or directory (``orbax``) written by ``save_state``.
      like: a tree with the saved tree's structure, whose leaves are arrays or
        ``jax.ShapeDtypeStruct``s (e.g. ``optimizer.init(params)``, ``jax.eval_shape`` of it, or
        ``gradtx.init_sharded`` on abstract parameters). Only structure, shapes, dtypes and
        shardings are used: each restored leaf is placed with ``like``'s sharding when it has one.
        A fresh Flax ``TrainState.create(...)`` works as ``like``: leaves whose dtype is only a
        default (Python numbers such as its ``step = 0``, weakly typed arrays) take the
        checkpoint's dtype of the same kind (int, float, ...), so the restored tree equals the
        saved one bit for bit. A strongly typed integer leaf of another width receives the stored
        integers cast to its dtype when they all fit exactly.
      format: ``"npz"`` (default) or ``"orbax"``.

    Returns:
      The restored tree: ``jax.Array`` leaves, bit-identical to the saved ones.

    Raises:
      ValueError: naming the first leaf whose path, shape or dtype differs from ``like``'s, or
        if the number of leaves differs.
    """
    if format == "orbax":
        return _load_orbax(os.path.abspath(path), like)
    if format != "npz":
        raise ValueError(f"load_state: format must be 'npz' or 'orbax', got {format!r}.")
    like_leaves, treedef = jax.tree.flatten_with_path(like)
    with np.load(os.fspath(path), allow_pickle=False) as stored:
        if _METADATA_KEY not in stored.files:
            raise ValueError(f"load_state: {os.fspath(path)} was not written by gradtx.save_state.")
        metadata = json.loads(stored[_METADATA_KEY].tobytes().decode())
        records = metadata["leaves"]
        if len(records) != len(like_leaves):
            raise ValueError(
                f"load_state: the checkpoint has {len(records)} leaves, `like` has {len(like_leaves)}; "
                "was it saved from a different optimizer or parameter tree?"
            )
        restored = []
        for index, (record, (like_path, like_leaf)) in enumerate(zip(records, like_leaves)):
            where = path_to_str(like_path)
            if record["path"] != where:
                raise ValueError(f"load_state: leaf {index} is {record['path']} in the checkpoint, {where} in `like`.")
            array = stored[f"leaf_{index}"]
            if record["kind"] == "prng_key":
                restored.append(jax.random.wrap_key_data(_place(array, None), impl=record["impl"]))
                continue
            dtype = jnp.dtype(record["dtype"])
            array = array.view(dtype) if array.dtype != dtype else array
            like_shape = tuple(getattr(like_leaf, "shape", np.shape(like_leaf)))
            like_dtype = _leaf_dtype(like_leaf)
            if tuple(record["shape"]) == like_shape and not _dtypes_compatible(dtype, like_leaf):
                cast = _exact_integer_cast(array, like_dtype)
                if cast is not None:
                    array, dtype = cast, like_dtype
            if tuple(record["shape"]) != like_shape or not _dtypes_compatible(dtype, like_leaf):
                raise ValueError(
                    f"load_state: {where} is {dtype}{list(record['shape'])} in the checkpoint, "
                    f"{like_dtype}{list(like_shape)} in `like`."
                )
            restored.append(_place(array.reshape(like_shape), like_leaf))
    return jax.tree.unflatten(treedef, restored)


def _path_key(path: tuple) -> tuple[str, ...]:
    """A key path as strings, so that a dataclass field, a dict key and a list index written by
    Orbax as nested dicts and lists compare equal to ``like``'s own path."""
    names = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                names.append(str(getattr(entry, attribute)))
                break
        else:
            names.append(str(entry))
    return tuple(names)


def _load_orbax(path: str, like: PyTree) -> PyTree:
    checkpointer = _orbax_checkpointer()
    stored = {}
    try:
        metadata = checkpointer.metadata(path)
        tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
        if tree is not None:
            is_record = lambda node: hasattr(node, "dtype") and hasattr(node, "shape")  # noqa: E731
            for leaf_path, record in jax.tree.leaves_with_path(tree, is_leaf=is_record):
                stored[_path_key(leaf_path)] = record
    except Exception:  # noqa: BLE001 - metadata is an optional aid; restore still checks what it can
        stored = {}

    def abstract(leaf_path: tuple, leaf: Any) -> jax.ShapeDtypeStruct:
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
        dtype = _leaf_dtype(leaf)
        record = stored.get(_path_key(leaf_path))
        if record is not None:
            saved = jnp.dtype(record.dtype)
            if tuple(record.shape) != shape or not _dtypes_compatible(saved, leaf):
                exact_int = saved.kind in "iu" and dtype.kind in "iu" and tuple(record.shape) == shape
                if not exact_int:
                    raise ValueError(
                        f"load_state: {path_to_str(leaf_path)} is {saved}{list(record.shape)} in the checkpoint, "
                        f"{dtype}{list(shape)} in `like`."
                    )
            elif _is_loosely_typed(leaf):
                dtype = saved
        return jax.ShapeDtypeStruct(shape, dtype, sharding=getattr(leaf, "sharding", None))

    target = jax.tree.map_with_path(abstract, like)
    restored = checkpointer.restore(path, target)
    return jax.tree.map(lambda leaf, spec: leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf, spec.dtype),
                        restored, target)


def _orbax_checkpointer() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "format='orbax' needs the orbax-checkpoint package (pip install orbax-checkpoint); "
            "the default format='npz' needs nothing beyond NumPy."
        ) from error
    return ocp.StandardCheckpointer()
