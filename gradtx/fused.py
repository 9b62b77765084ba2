"""The fused path: parameters and state in flat buffers, one per dtype, updated in place.

The default path runs a transformation leaf by leaf: for a tree of 1000 leaves XLA compiles and
runs about 3000 kernels, and compile time grows linearly with the number of leaves. The fused
path changes the storage, not the arithmetic:

* ``flatten_tree`` packs a pytree into a ``FlatTree``: one 1-D buffer per dtype plus a static
  layout. ``FlatTree.unflatten()`` gives the leaves back as slices, for the model to use; the
  gradient with respect to a ``FlatTree`` is a ``FlatTree``, so gradients arrive flat.
* ``fuse(inner)`` runs any *elementwise* gradtx transformation (Adam, SGD with momentum, RMSProp,
  AdamW, ...) on those buffers and applies the step: ``step(params, grads, state) -> (params,
  state)``. Its program has a fixed number of operations whatever the number of leaves, so it
  compiles in constant time.
* ``donated_step`` and ``fused_train_step`` jit the step with the parameters and state donated,
  so XLA writes the new values over the old buffers instead of allocating new ones.
* ``fuse(inner, chunk_size=CPU_CHUNK_SIZE)`` makes the step one pass over memory on a CPU (see
  ``fuse``): 28 bytes per float32 parameter for Adam instead of about 40, on one core.

The numbers are the default path's: ``fuse`` calls the inner transformation's own ``update``, so
``fused_adam(...)`` and ``adam(...)`` run the same floating-point operations on every element.

Example::

    params = gradtx.flatten_tree(model_params)
    optimizer = gradtx.fused_adam(1e-3)
    state = optimizer.init(params)
    train_step = gradtx.fused_train_step(loss_fn, optimizer)    # loss_fn(tree, *batch)
    for batch in batches:
        params, state, loss = train_step(params, state, *batch)
    model_params = params.unflatten()

References: the multi-tensor and fused kernels of ``torch.optim`` (``foreach=True``,
``fused=True``); NVIDIA Apex ``FusedAdam``; ``optax.flatten``, which flattens the state but not
the parameters.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from gradtx.adam import adam
from gradtx.base import GradientTransformation, OptState, Params, PyTree, ScalarOrSchedule, apply_updates
from gradtx.momentum import sgd
from gradtx.rms import rmsprop
from gradtx.tree_utils import check_trees_match, check_updates_match_params
from gradtx.validation import check_schedule_arguments, check_state_type

# A good ``chunk_size`` on a CPU: with Adam's four float32 streams a chunk is 256 KiB, half of a
# core's L2 cache, and the loop's fixed cost per chunk (a few microseconds of XLA:CPU's runtime)
# stays small next to the time to move it. See the chunk-size table in benchmarks/RESULTS.md.
CPU_CHUNK_SIZE = 16384


@dataclasses.dataclass(frozen=True)
class FlatLayout:
    """Where each leaf of a packed tree lives: static, hashable metadata of a ``FlatTree``.

    Attributes:
      treedef: the tree's structure.
      dtypes: the dtype of each buffer, in order of first appearance among the leaves.
      sizes: the number of elements of each buffer.
      leaves: for each leaf, ``(buffer index, offset, shape)``.
    """

    treedef: Any
    dtypes: tuple
    sizes: tuple
    leaves: tuple

    def leaf_indices(self, buffer: int) -> list[int]:
        """The leaves stored in ``buffer``, in storage order."""
        return [i for i, (b, _, _) in enumerate(self.leaves) if b == buffer]


@jax.tree_util.register_pytree_node_class
class FlatTree:
    """A pytree stored as one 1-D buffer per dtype (the children) and a ``FlatLayout`` (static).

    Being a pytree itself, a ``FlatTree`` passes through ``jit``, ``grad`` and every gradtx or
    Optax transformation, which then see one leaf per dtype instead of one per parameter.
    Build one with ``flatten_tree``; get the original tree back with ``unflatten()``.
    """

    def __init__(self, buffers: tuple, layout: FlatLayout):
        self.buffers = tuple(buffers)
        self.layout = layout

    def tree_flatten(self) -> tuple[tuple, FlatLayout]:
        return self.buffers, self.layout

    @classmethod
    def tree_unflatten(cls, layout: FlatLayout, buffers) -> FlatTree:
        return cls(tuple(buffers), layout)

    @property
    def size(self) -> int:
        """The number of scalars stored, over all buffers."""
        return int(sum(self.layout.sizes))

    def unflatten(self) -> PyTree:
        """The original tree, each leaf a slice of its buffer reshaped to its shape.

        Slices are taken with ``lax.split``, whose derivative is one concatenation, so the
        gradient of a loss of ``unflatten()`` with respect to this ``FlatTree`` is formed
        directly as flat buffers.

        Compile time: each slice is at a constant offset, so XLA:CPU compiles it as a kernel of
        its own (about 10 ms each with JAX 0.10): unpacking 1000 leaves inside a jitted step adds
        about 10 s. ``fused_train_step`` avoids this by reading the offsets from run-time
        arguments, which makes the slices of all leaves of one shape a single kernel.
        """
        leaves: list = [None] * len(self.layout.leaves)
        for buffer_index, buffer in enumerate(self.buffers):
            indices = self.layout.leaf_indices(buffer_index)
            sizes = [int(np.prod(self.layout.leaves[i][2], dtype=np.int64)) for i in indices]
            pieces = jax.lax.split(buffer, sizes) if len(sizes) > 1 else [buffer]
            for i, piece in zip(indices, pieces):
                leaves[i] = jnp.reshape(piece, self.layout.leaves[i][2])
        return jax.tree.unflatten(self.layout.treedef, leaves)

    def __repr__(self) -> str:
        groups = ", ".join(f"{np.dtype(d).name}[{n}]" for d, n in zip(self.layout.dtypes, self.layout.sizes))
        return f"FlatTree({len(self.layout.leaves)} leaves in {groups})"


def _layout_of(tree: PyTree) -> FlatLayout:
    leaves, treedef = jax.tree.flatten(tree)
    dtypes: list = []
    sizes: list = []
    placed = []
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if dtype not in dtypes:
            dtypes.append(dtype)
            sizes.append(0)
        buffer = dtypes.index(dtype)
        shape = tuple(jnp.shape(leaf))
        placed.append((buffer, sizes[buffer], shape))
        sizes[buffer] += int(np.prod(shape, dtype=np.int64))
    return FlatLayout(treedef, tuple(dtypes), tuple(sizes), tuple(placed))


def _pack(tree: PyTree, layout: FlatLayout, name: str) -> FlatTree:
    leaves, treedef = jax.tree.flatten(tree)
    if treedef != layout.treedef:
        raise ValueError(
            f"The {name} tree does not match the flat layout: expected structure {layout.treedef}, "
            f"found {treedef}."
        )
    buffers = []
    for buffer_index, dtype in enumerate(layout.dtypes):
        parts = []
        for i in layout.leaf_indices(buffer_index):
            shape = layout.leaves[i][2]
            if tuple(jnp.shape(leaves[i])) != shape:
                path = jax.tree_util.keystr(jax.tree.leaves_with_path(tree)[i][0])
                raise ValueError(
                    f"The {name} tree does not match the flat layout at {path}: shape "
                    f"{tuple(jnp.shape(leaves[i]))} vs {shape}."
                )
            parts.append(jnp.ravel(jnp.asarray(leaves[i], dtype)))
        buffers.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts))
    return FlatTree(tuple(buffers), layout)


def flatten_tree(tree: PyTree) -> FlatTree:
    """Packs ``tree`` into a ``FlatTree``: the leaves of each dtype concatenated, in tree order.

    ``None`` entries are empty subtrees and take no space. A one-leaf tree costs nothing to pack
    (the buffer is a reshape of the leaf); otherwise the leaves are copied once.
    """
    return _pack(tree, _layout_of(tree), "params")


class FusedState(NamedTuple):
    """State of a fused optimizer: the inner transformation's state for each buffer, in order."""

    groups: tuple


class FusedOptimizer(NamedTuple):
    """An optimizer that owns the parameter update: ``init(params)`` and ``step(params, grads, state)``.

    ``step`` returns ``(new_params, new_state)`` rather than updates, because it applies them in
    the same pass that computes them. ``params`` must be a ``FlatTree``; ``grads`` a ``FlatTree``
    of the same layout or a tree of the parameters' structure (packed on the fly, one copy).
    """

    init: Callable[[FlatTree | PyTree], FusedState]
    step: Callable[[FlatTree, FlatTree | PyTree, FusedState], tuple[FlatTree, FusedState]]


# Primitives that mix elements or positions; a transformation using one cannot run chunk by chunk.
_CROSS_ELEMENT = frozenset(
    {
        "argmax", "argmin", "dot_general", "conv_general_dilated", "sort", "gather", "dynamic_slice",
        "dynamic_update_slice", "slice", "concatenate", "pad", "transpose", "rev", "top_k", "split",
        "iota", "while", "scan", "psum", "all_gather", "fft", "reduce_window",
    }
)  # fmt: skip
_CROSS_ELEMENT_PREFIXES = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                           "cum", "scatter", "random_", "rng", "threefry", "argsort")  # fmt: skip


def _sub_jaxprs(eqn) -> list:
    found = []
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                found.append(item.jaxpr)
            elif isinstance(item, jax_core.Jaxpr):
                found.append(item)
    return found


def _cross_element_primitives(jaxpr, length: int) -> set[str]:
    """Names of the primitives that mix elements of the arrays of ``length`` (the probe chunk).

    Scalar arithmetic (a schedule's table lookup, say) may use any primitive; only operations
    that touch a per-parameter array count.
    """
    names = set()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        touches = any(length in getattr(v.aval, "shape", ()) for v in (*eqn.invars, *eqn.outvars))
        if touches and (name in _CROSS_ELEMENT or name.startswith(_CROSS_ELEMENT_PREFIXES)):
            names.add(name)
        for sub in _sub_jaxprs(eqn):
            names |= _cross_element_primitives(sub, length)
    return names


def _live_inputs(jaxpr, live_outputs: list[bool]) -> list[bool]:
    """Which inputs of ``jaxpr`` the chosen outputs depend on (conservative through sub-programs)."""
    live = {v for v, keep in zip(jaxpr.outvars, live_outputs) if keep and isinstance(v, jax_core.Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
    return [v in live for v in jaxpr.invars]


def _abstract_chunk(state: OptState, size: int, length: int) -> PyTree:
    """Shapes and dtypes of ``state`` with its per-parameter leaves cut to ``length`` elements."""

    def spec(x):
        shape = (length,) if jnp.ndim(x) == 1 and jnp.shape(x)[0] == size else jnp.shape(x)
        return jax.ShapeDtypeStruct(shape, jnp.result_type(x))

    return jax.tree.map(spec, state)


def _per_parameter(state: OptState, size: int) -> PyTree:
    """True for the state leaves that hold one value per parameter (moments), False for the rest."""
    return jax.tree.map(lambda x: jnp.ndim(x) == 1 and jnp.shape(x)[0] == size, state)


def _as_bits(x: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * jnp.dtype(x.dtype).itemsize}"))


def _slice_state(state: OptState, per_parameter: PyTree, dtypes: PyTree, start: Any, size: int) -> OptState:
    """The chunk ``[start, start + size)`` of the per-parameter leaves, in their own dtypes."""

    def cut(keep, x, dtype):
        if not keep:
            return x
        chunk = jax.lax.dynamic_slice(x, (start,), (size,))
        return chunk if chunk.dtype == dtype else jax.lax.bitcast_convert_type(chunk, dtype)

    return jax.tree.map(cut, per_parameter, state, dtypes)


def _write_state(state: OptState, per_parameter: PyTree, dtypes: PyTree, new: OptState, start: Any) -> OptState:
    def write(keep, x, dtype, y):
        if not keep:
            return x
        y = y.astype(dtype)
        return jax.lax.dynamic_update_slice(x, y if x.dtype == dtype else _as_bits(y), (start,))

    return jax.tree.map(write, per_parameter, state, dtypes, new)


def _after(index: jax.Array, value: jax.Array) -> jax.Array:
    """``index`` itself, made to depend on ``value`` so that XLA must compute ``value`` first.

    ``min(i, i + min(bits(value) >> 1, 1))`` equals ``i`` for every bit pattern, but XLA cannot
    fold it away. It orders the in-place write of a chunk's moments after the write of its
    parameters, which still reads the old moments; without the order XLA copies the buffers.
    """
    bits = jax.lax.bitcast_convert_type(value, jnp.dtype(f"uint{8 * jnp.dtype(value.dtype).itemsize}"))
    return jnp.minimum(index, index + jnp.minimum(bits >> 1, 1).astype(index.dtype))


def _check_elementwise(inner: GradientTransformation, params: jax.Array, state: OptState) -> None:
    length = 97  # a probe length no hyperparameter table is likely to share
    probe = jax.ShapeDtypeStruct((length,), params.dtype)
    probe_state = _abstract_chunk(state, params.shape[0], length)
    jaxpr = jax.make_jaxpr(lambda g, s, p: inner.update(g, s, p))(probe, probe_state, probe).jaxpr
    found = _cross_element_primitives(jaxpr, length)
    if found:
        raise ValueError(
            "fuse needs an elementwise transformation (each output element a function of the same "
            f"element of the gradient, parameters and state), but its update uses {sorted(found)}. "
            "Apply clipping by global norm or per-leaf transformations outside the fused step."
        )


def _state_reads_params(inner: GradientTransformation, size: int, params, grads, state) -> bool:
    chunk = _abstract_chunk(state, params.shape[0], size)
    probe = jax.ShapeDtypeStruct((size,), params.dtype)
    probe_grad = jax.ShapeDtypeStruct((size,), grads.dtype)
    closed = jax.make_jaxpr(lambda g, s, p: inner.update(g, s, p)[1])(probe_grad, chunk, probe)
    live = _live_inputs(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return any(live[-1:])


def _buffer_step(
    inner: GradientTransformation, params: jax.Array, grads: jax.Array, state: OptState, chunk_size: int
) -> tuple[jax.Array, OptState]:
    """One step on one buffer; in cache-sized chunks, in place, when ``chunk_size`` allows it."""
    size = params.shape[0]
    if not chunk_size or size <= chunk_size or _state_reads_params(inner, chunk_size, params, grads, state):
        updates, state = inner.update(grads, state, params)
        return apply_updates(params, updates), state

    per_parameter = _per_parameter(state, size)
    # Counters and other per-buffer scalars advance once per step: read them from a call on
    # zero elements, and keep the old ones inside the loop, where every chunk needs them.
    _, scalar_state = inner.update(grads[:0], jax.tree.map(lambda keep, x: x[:0] if keep else x, per_parameter, state),
                                   params[:0])
    # Moments stored in another dtype than the parameters (bfloat16 moments) are carried through
    # the loop as unsigned integers of their width: XLA would otherwise move their conversion
    # out of the chunk and onto the whole buffer, which then cannot be updated in place. (The
    # reinterpretation costs one copy of those moments on entry and one on exit.)
    dtypes = jax.tree.map(lambda x: jnp.result_type(x), state)
    state = jax.tree.map(
        lambda keep, x: _as_bits(x) if keep and x.dtype != params.dtype else x, per_parameter, state
    )

    def chunk_step(params, state, start, length):
        old_params = jax.lax.dynamic_slice(params, (start,), (length,))
        chunk_grads = jax.lax.dynamic_slice(grads, (start,), (length,))
        chunk_state = _slice_state(state, per_parameter, dtypes, start, length)
        updates, _ = inner.update(chunk_grads, chunk_state, old_params)
        params = jax.lax.dynamic_update_slice(params, apply_updates(old_params, updates), (start,))
        # The moments are recomputed from the same old values (in cache) and written second;
        # they do not depend on the parameters (checked above), so old_params is unused here.
        start = _after(start, jax.lax.dynamic_index_in_dim(params, start, keepdims=False))
        chunk_grads = jax.lax.dynamic_slice(grads, (start,), (length,))
        chunk_state = _slice_state(state, per_parameter, dtypes, start, length)
        _, new_state = inner.update(chunk_grads, chunk_state, old_params)
        return params, _write_state(state, per_parameter, dtypes, new_state, start)

    num_chunks, tail = divmod(size, chunk_size)
    params, state = jax.lax.fori_loop(
        0, num_chunks, lambda i, carry: chunk_step(*carry, i * chunk_size, chunk_size), (params, state)
    )
    if tail:
        params, state = chunk_step(params, state, jnp.asarray(num_chunks * chunk_size, jnp.int32), tail)
    def finish(keep, x, dtype, scalar):
        if not keep:
            return scalar
        return x if x.dtype == dtype else jax.lax.bitcast_convert_type(x, dtype)

    state = jax.tree.map(finish, per_parameter, state, dtypes, scalar_state)
    return params, state


@check_schedule_arguments
def fuse(inner: GradientTransformation, *, chunk_size: int = 0) -> FusedOptimizer:
    """Runs an elementwise transformation on flat buffers and applies its step in place.

    .. math::
        (u_t, s_t) = \\mathrm{inner.update}(g_t, s_{t-1}, w_{t-1}), \\qquad w_t = w_{t-1} + u_t

    computed for every element of every buffer of the ``FlatTree`` ``w``, exactly as the default
    path computes it leaf by leaf.

    With ``chunk_size=0`` (the default) XLA runs one multi-threaded pass per output (``w``, and
    each moment); XLA:CPU does not fuse several outputs into one loop, so Adam reads the new
    moments back and moves about 40 bytes per float32 parameter. With ``chunk_size=c > 0`` the
    buffers are walked in chunks of ``c`` elements: each chunk's ``w``, ``g`` and moments are
    read from memory once, the new parameters are written over the old ones, and the new
    moments (recomputed from the same values, now in cache) after them: 28 bytes per parameter
    for Adam, but on one core, since XLA:CPU runs each in-place update on a single thread. It
    pays where one core can draw most of the memory bandwidth (few cores, or a working set
    that fits in the last-level cache); see ``CPU_CHUNK_SIZE`` and benchmarks/RESULTS.md. On a
    GPU, leave it at 0: XLA fuses all outputs of the step into one kernel there. Transformations
    whose state depends on the parameters (weight decay added to the gradient before the
    moments) always take the one-pass-per-output route. The numbers are the same either way.

    Args:
      inner: an elementwise gradtx (or Optax) transformation: every output element depends only
        on the same element of the gradient, the parameters and the per-parameter state, and on
        scalar state such as step counts. Adam, AdamW, NAdam, AMSGrad, AdaMax, SGD (with or
        without momentum), RMSProp, AdaGrad, AdaDelta, sign methods and Rprop are; clipping by
        global norm, ``masked``/``partition`` by leaf and per-leaf norms are not, and raise
        ``ValueError`` at ``init``.
      chunk_size: elements per chunk of the one-pass update, or 0 (default) for none.

    State: ``FusedState(groups)``, ``inner``'s state for each dtype buffer of the parameters.

    Returns:
      ``FusedOptimizer(init, step)``; jit ``step`` with ``donated_step`` (or use
      ``fused_train_step``) so that the update happens in place.
    """
    if not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be an int >= 0, got {chunk_size!r}.")

    def init_fn(params: FlatTree | PyTree) -> FusedState:
        flat = params if isinstance(params, FlatTree) else flatten_tree(params)
        groups = tuple(inner.init(buffer) for buffer in flat.buffers)
        for buffer, state in zip(flat.buffers, groups):
            _check_elementwise(inner, buffer, state)
        return FusedState(groups)

    def step_fn(
        params: FlatTree, grads: FlatTree | PyTree, state: FusedState
    ) -> tuple[FlatTree, FusedState]:
        if not isinstance(params, FlatTree):
            raise TypeError(
                f"fused step expects params as a FlatTree, found {type(params).__name__}; "
                "pack them once with gradtx.flatten_tree(params)."
            )
        if not isinstance(grads, FlatTree) or grads.layout != params.layout:
            grads = _pack(grads.unflatten() if isinstance(grads, FlatTree) else grads, params.layout, "grads")
        if not isinstance(state, FusedState) or len(state.groups) != len(params.buffers):
            raise ValueError(
                f"fused step expects a FusedState with {len(params.buffers)} groups (one per dtype "
                f"buffer); found {type(state).__name__}. Was it built by this optimizer's init?"
            )
        results = [
            _buffer_step(inner, p, g, s, chunk_size) for p, g, s in zip(params.buffers, grads.buffers, state.groups)
        ]
        new_params = FlatTree(tuple(p for p, _ in results), params.layout)
        return new_params, FusedState(tuple(s for _, s in results))

    return FusedOptimizer(init_fn, step_fn)


class FlattenState(NamedTuple):
    """State of ``flatten``: the inner transformation's state over flat buffers (a ``FlatTree``)."""

    inner_state: OptState


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on the gradients packed into one flat buffer per dtype; returns a tree.

    .. math::
        (U, s_t) = \\mathrm{inner.update}(\\mathrm{pack}(g_t), s_{t-1}, \\mathrm{pack}(w_{t-1})),
        \\qquad u_t = \\mathrm{unpack}(U)

    For code that keeps its parameters as a tree (an Optax-style training loop): the state is a
    few flat buffers instead of one array per leaf (one file entry per dtype in a checkpoint), and
    the optimizer's arithmetic is a fixed number of operations whatever the number of leaves; the
    step adds one concatenation of the gradients and one split of the updates. Parameters are
    packed only if given. For the in-place step on parameters kept flat, use ``fuse`` instead.

    Not a speed feature on a CPU: XLA:CPU compiles each slice of the split about as slowly as a
    leaf's whole Adam update, and the copies in and out cost more than the per-leaf kernels they
    replace (Adam on 1000 leaves: compile 21 s against 14 s for the tree transformation, step
    1.6x slower; see benchmarks/RESULTS.md).

    ``inner`` sees each buffer as one leaf, so it must not depend on where leaves begin and end:
    elementwise methods (Adam, SGD, RMSProp, ...) and global reductions (``clip_by_global_norm``)
    give the unflattened numbers; per-leaf norms (``adaptive_grad_clip``) and masks by leaf do not.

    Args:
      inner: the transformation to run on the flat buffers.

    State: ``FlattenState(inner_state)``, ``inner``'s state over a ``FlatTree``.
    Matches ``optax.flatten``.
    """

    def init_fn(params: Params) -> FlattenState:
        return FlattenState(inner.init(flatten_tree(params)))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, FlattenState, "flatten")
        check_updates_match_params(updates, params, "flatten")
        _check_against_state_layout(updates, state.inner_state)
        flat_updates = flatten_tree(updates)
        flat_params = None if params is None else _pack(params, flat_updates.layout, "params")
        new_updates, inner_state = inner.update(flat_updates, state.inner_state, flat_params, **extra_args)
        return new_updates.unflatten(), FlattenState(inner_state)

    return GradientTransformation(init_fn, update_fn)


def _check_against_state_layout(updates: PyTree, inner_state: OptState) -> None:
    """Names the path where ``updates`` differ from the tree the flat state was packed from."""
    is_flat = lambda node: isinstance(node, FlatTree)  # noqa: E731
    flat = [node for node in jax.tree.leaves(inner_state, is_leaf=is_flat) if is_flat(node)]
    if flat:
        layout = flat[0].layout
        reference = layout.treedef.unflatten(
            [jax.ShapeDtypeStruct(shape, layout.dtypes[buffer]) for buffer, _, shape in layout.leaves]
        )
        check_trees_match(updates, reference, name="updates", reference_name="params", context="flatten")


@check_schedule_arguments
def fused_adam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
    chunk_size: int = 0,
) -> FusedOptimizer:
    """Adam on flat buffers, updated in place: ``fuse(adam(...), chunk_size=chunk_size)``.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,
        \\quad w_t = w_{t-1} - \\eta_t \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t) + \\epsilon_{root}}
        + \\epsilon}

    Args:
      learning_rate, b1, b2, eps, eps_root, nesterov: as in ``adam`` (defaults 0.9, 0.999, 1e-8, 0).
      mu_dtype, nu_dtype: storage dtypes of ``m`` and ``v``; ``jnp.bfloat16`` for both halves the
        state to 4 bytes per parameter (arithmetic stays in the parameters' dtype).
      chunk_size: elements per chunk of the one-pass CPU update, or 0 (default); see ``fuse``.

    State: ``FusedState(groups)`` with an ``adam`` state per dtype buffer.
    Same numbers as ``adam`` (and so ``torch.optim.Adam(fused=True)``); reference: Kingma & Ba 2015.
    """
    inner = adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype)
    return fuse(inner, chunk_size=chunk_size)


@check_schedule_arguments
def fused_sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    chunk_size: int = 0,
) -> FusedOptimizer:
    """SGD, optionally with heavy-ball or Nesterov momentum, on flat buffers in place: ``fuse(sgd(...))``.

    .. math::
        b_t = \\mu b_{t-1} + g_t, \\qquad w_t = w_{t-1} - \\eta_t b_t
        \\quad (\\text{Nesterov: } w_t = w_{t-1} - \\eta_t (g_t + \\mu b_t)); \\qquad
        \\text{without momentum } w_t = w_{t-1} - \\eta_t g_t

    Args:
      learning_rate, momentum, nesterov, accumulator_dtype: as in ``sgd`` (momentum None, no Nesterov).
      chunk_size: elements per chunk of the one-pass CPU update, or 0 (default); see ``fuse``.

    State: ``FusedState(groups)`` with an ``sgd`` state per dtype buffer.
    Same numbers as ``sgd`` and ``torch.optim.SGD(lr, momentum, nesterov=...)``.
    """
    return fuse(sgd(learning_rate, momentum, nesterov, accumulator_dtype), chunk_size=chunk_size)


@check_schedule_arguments
def fused_rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    *,
    chunk_size: int = 0,
) -> FusedOptimizer:
    """RMSProp on flat buffers, updated in place: ``fuse(rmsprop(...))``.

    .. math::
        r_t = \\rho r_{t-1} + (1-\\rho) g_t^2, \\qquad w_t = w_{t-1} - \\eta_t g_t / \\sqrt{r_t + \\epsilon}

    (``g_t / (\\sqrt{r_t} + \\epsilon)`` with ``eps_in_sqrt=False``; centered and momentum variants
    as in ``rmsprop``).

    Args:
      learning_rate, decay, eps, initial_scale, eps_in_sqrt, centered, momentum, nesterov: as in
        ``rmsprop`` (defaults 0.9, 1e-8, 0, True, False, None, False).
      chunk_size: elements per chunk of the one-pass CPU update, or 0 (default); see ``fuse``.

    State: ``FusedState(groups)`` with an ``rmsprop`` state per dtype buffer.
    Same numbers as ``rmsprop``; ``torch.optim.RMSprop(lr, alpha, eps)`` is
    ``fused_rmsprop(lr, decay=alpha, eps=eps, eps_in_sqrt=False)``.
    """
    inner = rmsprop(learning_rate, decay, eps, initial_scale, eps_in_sqrt, centered, momentum, nesterov)
    return fuse(inner, chunk_size=chunk_size)


def donated_step(optimizer: FusedOptimizer) -> Callable[[FlatTree, Any, FusedState], tuple[FlatTree, FusedState]]:
    """``jit(optimizer.step)`` with the parameters and the state donated: updated in place.

    The arrays passed as ``params`` and ``state`` are consumed (deleted) by the call; use the
    returned ones. Gradients are not donated.
    """
    return jax.jit(optimizer.step, donate_argnums=(0, 2))


_MAX_INT32 = 2**31 - 1


def _slice_leaves(buffers: tuple, starts: tuple, layout: FlatLayout) -> list:
    leaves: list = [None] * len(layout.leaves)
    for buffer_index, buffer in enumerate(buffers):
        indices = layout.leaf_indices(buffer_index)
        for i in indices:
            shape = layout.leaves[i][2]
            size = int(np.prod(shape, dtype=np.int64))
            if len(indices) == 1:
                piece = buffer
            elif layout.sizes[buffer_index] > _MAX_INT32:  # offsets past int32: constant-offset slices
                offset = layout.leaves[i][1]
                piece = jax.lax.slice(buffer, (offset,), (offset + size,))
            else:
                piece = jax.lax.dynamic_slice(buffer, (starts[i],), (size,), allow_negative_indices=False)
            leaves[i] = piece if piece.shape == shape else jax.lax.reshape(piece, shape)
    return leaves


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _unflatten_at(buffers: tuple, starts: tuple, layout: FlatLayout) -> list:
    return _slice_leaves(buffers, starts, layout)


def _unflatten_at_fwd(buffers: tuple, starts: tuple, layout: FlatLayout) -> tuple:
    return _slice_leaves(buffers, starts, layout), None


def _as_flat(x: jax.Array, dtype) -> jax.Array:
    x = x if x.ndim == 1 else jax.lax.reshape(x, (x.size,))
    return x if x.dtype == dtype else x.astype(dtype)


def _unflatten_at_bwd(layout: FlatLayout, _, cotangents: list) -> tuple:
    grads = []
    for buffer_index, dtype in enumerate(layout.dtypes):
        if not jnp.issubdtype(dtype, jnp.inexact):
            grads.append(None)
            continue
        parts = [_as_flat(cotangents[i], dtype) for i in layout.leaf_indices(buffer_index)]
        grads.append(parts[0] if len(parts) == 1 else jnp.concatenate(parts))
    return tuple(grads), None


_unflatten_at.defvjp(_unflatten_at_fwd, _unflatten_at_bwd)


def _unflatten_at_starts(flat: FlatTree, starts: tuple) -> PyTree:
    """``flat.unflatten()`` with each leaf's offset read from ``starts`` at run time (used by ``fused_train_step``).

    Same values and same gradient as ``unflatten()``; ``starts`` is ``_leaf_starts(flat.layout)``, passed as an
    argument of the jitted function. A slice at a constant offset is a kernel of its own for XLA,
    compiled separately for every leaf (about 10 ms each on a CPU); a slice at an offset read from
    an argument is the same kernel for every leaf of one shape, compiled once. The gradient is one
    concatenation of the leaves' cotangents per buffer.
    """
    leaves = _unflatten_at(tuple(flat.buffers), tuple(starts), flat.layout)
    return jax.tree.unflatten(flat.layout.treedef, leaves)


@functools.lru_cache(maxsize=64)
def _leaf_starts(layout: FlatLayout) -> tuple:
    """Each leaf's offset in its buffer, for ``_unflatten_at_starts``: Python ints, which jit takes as int32
    arguments (about 0.16 ms per call for 1000 of them on a CPU, half the cost of device scalars)."""
    return tuple(min(offset, _MAX_INT32) for _, offset, _ in layout.leaves)


class _TrainStep:
    """The jitted step of ``fused_train_step``, with the leaves' offsets passed as run-time arguments."""

    def __init__(self, jitted: Callable):
        self._jitted = jitted

    def __call__(self, params: FlatTree, state: FusedState, *batch):
        return self._jitted(params, state, _leaf_starts(params.layout), *batch)

    def trace(self, params: FlatTree, state: FusedState, *batch):
        return self._jitted.trace(params, state, _leaf_starts(params.layout), *batch)

    def lower(self, params: FlatTree, state: FusedState, *batch):
        return self._jitted.lower(params, state, _leaf_starts(params.layout), *batch)


def fused_train_step(
    loss_fn: Callable[..., Any],
    optimizer: FusedOptimizer,
    *,
    has_aux: bool = False,
    run_time_offsets: bool = True,
) -> Callable[..., tuple]:
    """A jitted, donated training step on flat parameters.

    ``train_step(params, state, *batch) -> (params, state, loss)`` (``loss`` is ``(loss, aux)``
    with ``has_aux``) computes ``loss_fn(params.unflatten(), *batch)``, its gradient with respect
    to the ``FlatTree`` (flat by construction) and one ``optimizer.step``, with ``params`` and
    ``state`` donated. ``train_step.trace`` and ``train_step.lower`` take the same arguments.

    Args:
      loss_fn: ``loss_fn(params_tree, *batch)`` -> scalar loss (or ``(loss, aux)`` with ``has_aux``).
      optimizer: a ``FusedOptimizer`` (``fuse(...)``, ``fused_adam(...)``, ...).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``. Default False.
      run_time_offsets: cut the leaves from the buffers at offsets passed as run-time arguments
        (default True) rather than at constant offsets (``unflatten()``). Same numbers either way.
        A slice at a constant offset is a kernel of its own for XLA:CPU (about 10 ms of compile
        time per leaf); at run-time offsets all leaves of one shape share one kernel: at 1000
        leaves the step compiled in 0.46x Optax's time instead of 2.08x (benchmarks/RESULTS.md).
        The price is on every step: one int32 argument per leaf and slower slicing kernels, about
        16% of a 1000-leaf step on a CPU (18.0 ms against 15.5 ms), so runs of many thousands of
        steps are faster with ``False``.
    """
    if not run_time_offsets:

        def static_step(params: FlatTree, state: FusedState, *batch):
            value, grads = jax.value_and_grad(lambda flat: loss_fn(flat.unflatten(), *batch), has_aux=has_aux)(params)
            params, state = optimizer.step(params, grads, state)
            return params, state, value

        return jax.jit(static_step, donate_argnums=(0, 1))

    def train_step(params: FlatTree, state: FusedState, starts: tuple, *batch):
        def loss_of_flat(flat: FlatTree):
            return loss_fn(_unflatten_at_starts(flat, starts), *batch)

        value, grads = jax.value_and_grad(loss_of_flat, has_aux=has_aux)(params)
        params, state = optimizer.step(params, grads, state)
        return params, state, value

    return _TrainStep(jax.jit(train_step, donate_argnums=(0, 1)))
