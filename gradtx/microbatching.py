"""Evaluate a function on a large batch one microbatch at a time: ``microbatch``, ``micro_vmap``, ``micro_grad``.

The batch axis of size ``B`` is split into ``n = B / m`` microbatches of ``m`` rows, evaluated one
after another in a ``jax.lax.fori_loop``, and the results are combined by an ``Accumulator``
(sum, mean, running mean or concatenation). Peak memory is that of one microbatch. Microbatch
``i`` holds the rows ``i, i + n, i + 2n, ...``: a batch sharded along its batch axis stays
sharded within each microbatch. This is Optax's ``optax.microbatching`` module.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import PyTree


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """How the results of the microbatches are combined.

    ``carry = init(shape_of_one_result)``; ``carry = update(carry, result_i, i)`` for each
    microbatch ``i``; the answer is ``finalize(carry)``. ``aggregate(stacked)`` reduces results
    stacked along axis 0 in one go (used by ``micro_vmap`` inside a microbatch).
    Matches ``optax.microbatching.Accumulator``.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


class AccumulationType(enum.Enum):
    """The built-in accumulators. Matches ``optax.microbatching.AccumulationType``.

    MEAN: ``(1/n) sum_i r_i`` (floating-point results only).
    SUM: ``sum_i r_i``.
    RUNNING_MEAN: the mean over the microbatches actually run (see ``num_real_microbatches``),
      kept as ``c_i = c_{i-1} i / (i + 1) + r_i / (i + 1)``.
    CONCAT: the results joined back along axis 0, in the original row order.
    """

    MEAN = enum.auto()
    SUM = enum.auto()
    RUNNING_MEAN = enum.auto()
    CONCAT = enum.auto()


def _zeros(shape_dtype: Any) -> jax.Array:
    return jnp.zeros(jnp.shape(shape_dtype), jnp.result_type(shape_dtype))


def _require_float(shape_dtype: Any) -> None:
    if not jnp.issubdtype(jnp.result_type(shape_dtype), jnp.inexact):
        raise ValueError(
            f"MEAN and RUNNING_MEAN accumulators need floating-point results, got dtype {jnp.result_type(shape_dtype)}."
        )


def _leafwise(accumulator: Accumulator) -> Accumulator:
    """An accumulator of arrays applied to every leaf of a result tree."""
    return Accumulator(
        init=lambda value: jax.tree.map(accumulator.init, value),
        update=lambda carry, value, i: jax.tree.map(lambda c, v: accumulator.update(c, v, i), carry, value),
        finalize=lambda carry: jax.tree.map(accumulator.finalize, carry),
        aggregate=lambda values: jax.tree.map(accumulator.aggregate, values),
    )


def _builtin(kind: AccumulationType, num_microbatches: int) -> Accumulator:
    if kind is AccumulationType.SUM:
        leaf = Accumulator(_zeros, lambda c, v, i: c + v, lambda c: c, functools.partial(jnp.sum, axis=0))
    elif kind is AccumulationType.MEAN:
        if num_microbatches < 1:
            raise ValueError(f"MEAN needs num_microbatches >= 1, got {num_microbatches}.")

        def init_mean(shape_dtype):
            _require_float(shape_dtype)
            return _zeros(shape_dtype)

        leaf = Accumulator(
            init_mean, lambda c, v, i: c + v, lambda c: c / num_microbatches, functools.partial(jnp.mean, axis=0)
        )
    elif kind is AccumulationType.RUNNING_MEAN:

        def init_running(shape_dtype):
            _require_float(shape_dtype)
            return _zeros(shape_dtype)

        def update_running(carry, value, index):
            kept = index / (index + 1)
            return carry * kept + value * (1 - kept)

        leaf = Accumulator(init_running, update_running, lambda c: c, functools.partial(jnp.mean, axis=0))
    elif kind is AccumulationType.CONCAT:
        if num_microbatches < 1:
            raise ValueError(f"CONCAT needs num_microbatches >= 1, got {num_microbatches}.")
        leaf = Accumulator(
            init=lambda s: jnp.zeros((num_microbatches, *jnp.shape(s)), jnp.result_type(s)),
            update=lambda carry, value, index: carry.at[index].set(value),
            # (n, m, ...) -> (n m, ...) column-major: row i + n j comes from microbatch i, row j.
            finalize=lambda carry: carry.reshape((-1, *carry.shape[2:]), order="F"),
            aggregate=lambda values: values,
        )
    else:
        raise ValueError(f"Unknown accumulator: {kind!r}.")
    return _leafwise(leaf)


def _canonicalize(accumulator: Any, num_microbatches: int) -> Accumulator:
    """One ``Accumulator`` for a tree of ``Accumulator``/``AccumulationType`` (a prefix of the result tree)."""

    def resolve(item):
        if isinstance(item, Accumulator):
            return item
        if isinstance(item, AccumulationType):
            return _builtin(item, num_microbatches)
        raise ValueError(f"Unknown accumulator: {item!r} (expected an Accumulator or an AccumulationType).")

    accumulators = jax.tree.map(resolve, accumulator)

    def per_entry(method):
        def apply(*trees):
            return jax.tree.map(lambda acc, *values: getattr(acc, method)(*values), accumulators, *trees)

        return apply

    return Accumulator(
        init=per_entry("init"),
        update=lambda carry, value, index: jax.tree.map(
            lambda acc, c, v: acc.update(c, v, index), accumulators, carry, value
        ),
        finalize=per_entry("finalize"),
        aggregate=per_entry("aggregate"),
    )


def reshape_batch_axis(tree: PyTree, microbatch_size: int, axis: int = 0) -> PyTree:
    """Splits the batch axis of every leaf into ``(num_microbatches, microbatch_size)``, column-major.

    A leaf of shape ``(..., B, ...)`` (``B`` at ``axis``) becomes ``(..., n, m, ...)`` with
    ``n = B / m``, and ``x'[..., i, j, ...] = x[..., i + n j, ...]``: microbatch ``i`` takes every
    ``n``-th row starting at ``i``. Matches ``optax.microbatching.reshape_batch_axis`` (without its
    explicit-sharding path: under ``jax.sharding`` explicit axes pass ``out_sharding`` yourself).
    """

    def reshape(x):
        size = x.shape[axis]
        if size % microbatch_size:
            raise ValueError(f"batch size {size} must be divisible by microbatch_size={microbatch_size}.")
        return x.reshape((*x.shape[:axis], -1, microbatch_size, *x.shape[axis + 1 :]), order="F")

    return jax.tree.map(reshape, tree)


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, (int, str)):
        return (value,)
    return tuple(value)


def microbatch(
    fun: Callable[..., Any],
    argnums: int | Sequence[int],
    microbatch_size: int | None,
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: str | Sequence[str] = (),
    in_axes: int | Sequence[int] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``fun`` evaluated on ``n`` microbatches in sequence, the results combined by ``accumulator``.

    With ``x_i`` the ``i``-th microbatch of the batch arguments and ``A`` the accumulator
    (``SUM`` by default):

    .. math::
        c_0 = A.\\text{init}, \\quad c_{i+1} = A.\\text{update}(c_i, \\text{fun}(x_i), i), \\quad
        \\text{result} = A.\\text{finalize}(c_n)

    Args:
      fun: any function.
      argnums: the positions of the arguments with a batch axis.
      microbatch_size: rows per microbatch (must divide the batch size); ``None`` returns ``fun``.
      accumulator: an ``AccumulationType`` or ``Accumulator``, or a tree of them that is a prefix
        of ``fun``'s output (e.g. ``(CONCAT, SUM)`` for a pair).
      argnames: the keyword arguments with a batch axis.
      in_axes: the batch axis of each of ``argnums + argnames`` (one int for all). Default 0.
      num_real_microbatches: run only the first this many microbatches (padding batches to a
        fixed size without recompiling); may be a traced int.

    Matches ``optax.microbatching.microbatch`` (``optax.microbatch``). Reference: Huang et al.,
    "GPipe: efficient training of giant neural networks using pipeline parallelism", 2019 (the
    micro-batch split of a mini-batch).
    """
    if microbatch_size is None:
        return fun
    if isinstance(microbatch_size, bool) or not isinstance(microbatch_size, int) or microbatch_size < 1:
        raise ValueError(f"microbatch_size must be an int >= 1 or None, got {microbatch_size!r}.")
    argnums, argnames = _as_tuple(argnums), _as_tuple(argnames)
    in_axes = (in_axes,) * (len(argnums) + len(argnames)) if isinstance(in_axes, int) else tuple(in_axes)
    if len(in_axes) != len(argnums) + len(argnames):
        raise ValueError(
            f"in_axes has {len(in_axes)} entries for {len(argnums)} argnums and {len(argnames)} argnames."
        )

    def microbatched(*args, **kwargs):
        batched = [args[i] for i in argnums] + [kwargs[name] for name in argnames]
        sizes = {
            leaf.shape[axis]
            for axis, tree in zip(in_axes, batched)
            for leaf in jax.tree.leaves(tree)
        }
        if len(sizes) > 1:
            raise ValueError(f"batch arguments must have batch axes of one size, found {sorted(sizes)}.")
        if not sizes:
            raise ValueError("microbatch found no array with a batch axis in argnums/argnames.")
        (batch_size,) = sizes
        if batch_size % microbatch_size:
            raise ValueError(f"batch size {batch_size} must be divisible by microbatch_size={microbatch_size}.")
        num_microbatches = batch_size // microbatch_size
        args, kwargs = list(args), dict(kwargs)
        for i, axis in zip(argnums, in_axes):
            args[i] = reshape_batch_axis(args[i], microbatch_size, axis)
        for name, axis in zip(argnames, in_axes[len(argnums) :]):
            kwargs[name] = reshape_batch_axis(kwargs[name], microbatch_size, axis)
        combine = _canonicalize(accumulator, num_microbatches)

        def evaluate(index):
            take = lambda tree, axis: jax.tree.map(lambda x: jnp.take(x, index, axis=axis), tree)  # noqa: E731
            call_args, call_kwargs = list(args), dict(kwargs)
            for i, axis in zip(argnums, in_axes):
                call_args[i] = take(args[i], axis)
            for name, axis in zip(argnames, in_axes[len(argnums) :]):
                call_kwargs[name] = take(kwargs[name], axis)
            return fun(*call_args, **call_kwargs)

        carry = combine.init(jax.eval_shape(evaluate, 0))
        bound = num_microbatches if num_real_microbatches is None else num_real_microbatches
        carry = jax.lax.fori_loop(0, bound, lambda i, c: combine.update(c, evaluate(i), i), carry)
        return combine.finalize(carry)

    return microbatched


def micro_vmap(
    fun: Callable[..., Any],
    in_axes: int | Sequence[int | None] = 0,
    out_axes: Any = 0,
    *,
    microbatch_size: int | None = None,
    vmap_fn: Callable[..., Any] = jax.vmap,
    accumulator: Any = AccumulationType.CONCAT,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``jax.vmap(fun)`` evaluated ``microbatch_size`` rows at a time, optionally reduced over the batch.

    With the default ``CONCAT`` it equals ``jax.vmap(fun, in_axes)``; with ``SUM`` or ``MEAN`` it
    returns ``sum_b fun(x_b)`` or ``(1/B) sum_b fun(x_b)`` without ever holding all ``B`` results.

    Args:
      fun: the per-example function.
      in_axes: the batch axis of each positional argument (``None``: not batched); an int applies
        to the first argument only, as in Optax. Keyword arguments are batched along axis 0.
      out_axes: must be 0.
      microbatch_size: examples per microbatch; ``None`` vectorizes the whole batch at once.
      vmap_fn: the vectorizing map, ``vmap_fn(fun, in_axes, out_axes)``. Default ``jax.vmap``.
      accumulator: how to combine results over the batch (a tree prefix of ``fun``'s output).
      num_real_microbatches: see ``microbatch``.

    Matches ``optax.microbatching.micro_vmap``.
    """
    if out_axes != 0:
        raise NotImplementedError("micro_vmap supports out_axes=0 only.")
    in_axes = (in_axes,) if isinstance(in_axes, int) else tuple(in_axes)

    def vectorized_then_reduced(*args, kwargs):
        output = vmap_fn(fun, in_axes, out_axes)(*args, **kwargs)
        rows = jax.tree.leaves(output)[0].shape[0]
        return _canonicalize(accumulator, rows).aggregate(output)

    mapped = microbatch(
        vectorized_then_reduced,
        argnums=tuple(i for i, axis in enumerate(in_axes) if axis is not None),
        argnames="kwargs",
        microbatch_size=microbatch_size,
        accumulator=accumulator,
        in_axes=tuple(axis for axis in in_axes if axis is not None) + (0,),
        num_real_microbatches=num_real_microbatches,
    )
    return lambda *args, **kwargs: mapped(*args, kwargs=kwargs)


class IndividualOutputs(NamedTuple):
    """Per-example outputs of ``micro_grad``: ``values`` (the losses), ``metrics`` (``metrics_fn`` of each
    gradient) and ``aux`` (``fun``'s auxiliary output), each with a leading batch axis."""

    values: Any
    metrics: Any
    aux: Any


def micro_grad(
    fun: Callable[..., Any],
    has_aux: bool = False,
    argnums: int | Sequence[int] = 0,
    *,
    batch_argnums: int | Sequence[int] = 1,
    keep_batch_dim: bool = True,
    microbatch_size: int | None = None,
    accumulator: Any = AccumulationType.SUM,
    transform_fn: Callable[[PyTree], PyTree] = lambda x: x,
    metrics_fn: Callable[[PyTree], PyTree] = lambda x: None,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., tuple[Any, IndividualOutputs]]:
    """Per-example gradients, transformed and then combined over the batch, computed microbatch by microbatch.

    For examples ``b = 1, ..., B`` with gradients ``g_b = grad fun(w; x_b)`` and ``T = transform_fn``:

    .. math::
        \\text{result} = \\sum_b T(g_b) \\ (\\text{SUM}), \\quad \\tfrac{1}{B} \\sum_b T(g_b) \\ (\\text{MEAN})

    plus, per example, the loss, ``metrics_fn(g_b)`` and the auxiliary output. With
    ``T`` = clip to norm ``C`` this is the per-example clipping of DP-SGD.

    Args:
      fun: ``fun(params, batch, ...)``, the loss of a batch (of one example, see
        ``keep_batch_dim``); with ``has_aux`` it returns ``(loss, aux)``.
      has_aux: whether ``fun`` returns auxiliary output (default False).
      argnums: the arguments to differentiate (default 0).
      batch_argnums: the arguments with a batch axis (default 1).
      keep_batch_dim: give ``fun`` each example as a batch of one (default True).
      microbatch_size: examples per microbatch (default None: all at once).
      accumulator: how to combine the transformed gradients (default SUM).
      transform_fn: applied to each per-example gradient (default identity).
      metrics_fn: per-example diagnostics of each gradient (default none).
      num_real_microbatches: see ``microbatch``.

    Returns:
      A function of ``fun``'s arguments returning ``(combined, IndividualOutputs(values, metrics, aux))``.

    Matches ``optax.microbatching.micro_grad``. Reference: Abadi et al., "Deep learning with
    differential privacy", 2016 (per-example gradient clipping).
    """
    batch_argnums = _as_tuple(batch_argnums)
    with_aux = fun if has_aux else (lambda *args, **kwargs: (fun(*args, **kwargs), None))
    value_and_grad = jax.value_and_grad(with_aux, argnums, has_aux=True)

    def per_example(*args, **kwargs):
        (value, aux), grad = value_and_grad(*args, **kwargs)
        return transform_fn(grad), IndividualOutputs(values=value, metrics=metrics_fn(grad), aux=aux)

    axes = [None] * (max(batch_argnums) + 1)
    for i in batch_argnums:
        axes[i] = 0
    mapped = micro_vmap(
        per_example,
        in_axes=axes,
        accumulator=(accumulator, AccumulationType.CONCAT),
        microbatch_size=microbatch_size,
        num_real_microbatches=num_real_microbatches,
    )
    if not keep_batch_dim:
        return mapped

    def with_batch_of_one(*args, **kwargs):
        args = list(args)
        for i in batch_argnums:
            args[i] = jax.tree.map(lambda x: jnp.expand_dims(x, 1), args[i])
        return mapped(*args, **kwargs)

    return with_batch_of_one
