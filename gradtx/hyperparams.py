"""Hyperparameters as optimizer state: read them back and change them between steps, never recompiling.

``inject_hyperparams(factory)`` takes any function that builds a transformation
(``gradtx.adam``, ``gradtx.sgd``, a user's own ``lambda lr, wd: chain(...)``) and returns a
function with the same arguments whose numeric hyperparameters live in the state as arrays::

    optimizer = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-3, b1=0.9)
    state = optimizer.init(params)
    state.hyperparams["learning_rate"]              # Array(0.001, dtype=float32)
    state = gradtx.set_hyperparams(state, learning_rate=3e-4)   # same jitted step, no recompile

Because the values are array inputs of the compiled step rather than constants baked into it, a
jitted ``step(params, state, batch)`` compiles once whatever values they take, and ``jax.vmap``
over the state trains several configurations at once (see ``gradtx.sweep``).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, GradientTransformationExtraArgs, OptState, Params
from gradtx.tree_utils import saturating_increment, zero_step_count
from gradtx.validation import check_state_type

DEFAULT_HYPERPARAM_DTYPE = jnp.float32


class InjectHyperparamsState(NamedTuple):
    """State of a transformation built by ``inject_hyperparams``.

    step_count: int32 number of updates applied; schedules are evaluated at it.
    hyperparams: ``{name: array}``, the numeric hyperparameters. Editable: the next update uses
      whatever values are here (``set_hyperparams`` edits them keeping dtype and shape).
    schedule_values: ``{name: array}``, each scheduled hyperparameter's value at the step just
      taken (at step 0 after ``init``). Read-only: recomputed from the schedule at every update.
    inner_state: the state of the wrapped transformation.
    """

    step_count: jax.Array
    hyperparams: dict[str, jax.Array]
    schedule_values: dict[str, jax.Array]
    inner_state: OptState

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


def _is_dtype(value: Any) -> bool:
    if isinstance(value, np.dtype):
        return True
    if isinstance(value, type):
        try:
            np.dtype(value)
        except TypeError:
            return False
        return True
    return False


def _annotation_is_int(parameter: inspect.Parameter) -> bool:
    return parameter.annotation in (int, "int")


def _kind(name: str, value: Any, parameter: inspect.Parameter, static_args: frozenset[str]) -> str:
    """``"static"``, ``"schedule"`` or ``"numeric"``: how ``inject_hyperparams`` treats an argument."""
    if name in static_args or value is None or isinstance(value, (bool, np.bool_, str)) or _is_dtype(value):
        return "static"
    if callable(value):
        return "static" if "mask" in name.lower() else "schedule"
    if isinstance(value, numbers.Real):
        return "static" if _annotation_is_int(parameter) and isinstance(value, numbers.Integral) else "numeric"
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        dtype = jnp.result_type(value)
        if jnp.issubdtype(dtype, jnp.bool_) or not jnp.issubdtype(dtype, jnp.number):
            return "static"
        return "numeric"
    return "static"


def _as_hyperparam(value: Any, dtype: Any) -> jax.Array:
    """A numeric hyperparameter as an array with a stable dtype.

    Python numbers (ints included) become ``dtype`` (float32 by default), so that neither
    ``jax_enable_x64`` nor writing ``1`` for ``1.0`` changes the state's type. Arrays keep their
    own dtype unless ``dtype`` was set explicitly by the caller.
    """
    if isinstance(value, numbers.Number) and not isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return jnp.asarray(value, dtype)
    if isinstance(value, np.generic) and isinstance(value, (float, int)):
        # np.float64 subclasses float: it came from NumPy arithmetic, not from a dtype choice.
        return jnp.asarray(value, dtype)
    return jnp.asarray(value)


def inject_hyperparams(
    factory: Callable[..., GradientTransformation],
    *,
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wraps ``factory`` so that its numeric hyperparameters are arrays in the state.

    ``inject_hyperparams(factory)(*args, **kwargs)`` returns a transformation ``T`` that, at
    every update ``t``, rebuilds ``factory`` from the *current* values in its state and applies it:

    .. math::
        h_t = \\text{state.hyperparams} \\cup \\{ s(t) : s \\text{ a schedule argument} \\}, \\qquad
        (u_t, \\text{inner}_t) = \\text{factory}(h_t, \\text{static}).\\text{update}(g_t, \\text{inner}_{t-1})

    Each argument of ``factory`` (defaults included) is sorted, once, when ``T`` is built:

    * numeric (Python ``float``/``int``, numeric NumPy/JAX arrays, tracers under ``vmap``): an
      array in ``state.hyperparams``. Python numbers are stored as ``hyperparam_dtype``
      (default float32, whether or not ``jax_enable_x64`` is on, and ``1`` is stored like ``1.0``);
      arrays keep their dtype unless ``hyperparam_dtype`` is given. Transforms cast them to
      each parameter's dtype where they are used (``tree_utils.cast_like``), so a float32
      ``b2 = 0.999`` is not rounded to bfloat16 in the state.
    * schedule (any other callable ``t -> value``): evaluated at ``state.step_count`` on every
      update; the value used is stored, as ``hyperparam_dtype``, in ``state.schedule_values``.
    * static (left as Python objects, closed over): ``None``, bools, strings, dtypes
      (``mu_dtype=jnp.bfloat16`` is not mistaken for a schedule), pytrees such as masks,
      callables whose argument name contains ``mask``, Python ints for parameters annotated
      ``int`` (step counts, sizes), and every name listed in ``static_args``.

    Changing a numeric hyperparameter between steps (``set_hyperparams``) changes an input
    value of the compiled step, not its types, so it never recompiles. To make schedule
    *parameters* editable, wrap a factory that builds the schedule from them::

        def warmup_adam(peak_lr, warmup_steps: int, b1=0.9):
            return gradtx.adam(gradtx.warmup_cosine_decay_schedule(0.0, peak_lr, warmup_steps, 10_000), b1)

        optimizer = gradtx.inject_hyperparams(warmup_adam)(peak_lr=1e-3, warmup_steps=100)
        # state.hyperparams == {"peak_lr": ..., "b1": ...}; warmup_steps is static (annotated int)

    Python-number hyperparameters are range-checked when ``T`` is built (by calling
    ``factory`` once with them), exactly as ``factory`` itself checks them.

    Args:
      factory: a function returning a ``GradientTransformation``; it must accept arrays for the
        arguments that end up numeric (every gradtx transform does). Arguments must be nameable
        (no ``*args``/``**kwargs``).
      static_args: names of arguments to keep static whatever their value.
      hyperparam_dtype: dtype of Python-number and scheduled hyperparameters. Default float32.
        Given explicitly, it also casts floating-point arrays.

    Returns:
      A function with ``factory``'s signature returning the wrapped transformation, whose
      state is ``InjectHyperparamsState(step_count, hyperparams, schedule_values, inner_state)``.

    Like ``optax.inject_hyperparams``, with these differences: hyperparameter dtypes do not
    follow the parameters' dtype (Optax stores them in the parameters' widest dtype, which
    rounds ``b2 = 0.999`` to ``1.0`` for bfloat16 parameters) nor the Python type (Optax keeps
    ``learning_rate=1`` as an int array, and a later ``0.5`` changes the state's type); dtypes
    and ``mask`` callables are static without being listed; editing a scheduled value raises
    instead of being silently overwritten (see ``set_hyperparams``).
    """
    static_names = frozenset([static_args] if isinstance(static_args, str) else static_args)
    signature = inspect.signature(factory)
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(
                f"inject_hyperparams: {getattr(factory, '__name__', factory)} takes *{parameter.name}; "
                "every argument needs a name to be stored in the state."
            )
    unknown = static_names - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"inject_hyperparams: static_args {sorted(unknown)} are not parameters of "
            f"{getattr(factory, '__name__', factory)}; its parameters are {list(signature.parameters)}."
        )
    number_dtype = DEFAULT_HYPERPARAM_DTYPE if hyperparam_dtype is None else hyperparam_dtype

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        kinds = {
            name: _kind(name, value, signature.parameters[name], static_names) for name, value in arguments.items()
        }
        static = {name: value for name, value in arguments.items() if kinds[name] == "static"}
        schedules = {name: value for name, value in arguments.items() if kinds[name] == "schedule"}
        numeric = {name: value for name, value in arguments.items() if kinds[name] == "numeric"}
        factory(*bound.args, **bound.kwargs)  # range checks of Python numbers, raised now, not in jit

        def build(values: dict[str, Any]) -> GradientTransformation:
            merged = {**static, **values}
            call = inspect.BoundArguments(signature, {name: merged[name] for name in arguments})
            return factory(*call.args, **call.kwargs)

        def initial_hyperparams() -> dict[str, jax.Array]:
            hyperparams = {name: _as_hyperparam(value, number_dtype) for name, value in numeric.items()}
            if hyperparam_dtype is not None:
                hyperparams = {
                    name: value.astype(hyperparam_dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value
                    for name, value in hyperparams.items()
                }
            return hyperparams

        def scheduled_at(step_count: jax.Array) -> dict[str, jax.Array]:
            return {name: jnp.asarray(fn(step_count)).astype(number_dtype) for name, fn in schedules.items()}

        def init_fn(params: Params) -> InjectHyperparamsState:
            step_count = zero_step_count()
            hyperparams = initial_hyperparams()
            schedule_values = scheduled_at(step_count)
            inner_state = build({**hyperparams, **schedule_values}).init(params)
            return InjectHyperparamsState(step_count, hyperparams, schedule_values, inner_state)

        def update_fn(updates, state, params=None, **extra_args):
            check_state_type(state, InjectHyperparamsState, f"inject_hyperparams({name})")
            schedule_values = scheduled_at(state.step_count)
            inner = build({**state.hyperparams, **schedule_values})
            if extra_args:
                updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            else:
                updates, inner_state = inner.update(updates, state.inner_state, params)
            new_state = InjectHyperparamsState(
                saturating_increment(state.step_count), state.hyperparams, schedule_values, inner_state
            )
            return updates, new_state

        return GradientTransformationExtraArgs(init_fn, update_fn)

    name = getattr(factory, "__name__", "factory")
    wrapped.__name__ = wrapped.__qualname__ = f"inject_hyperparams({name})"
    wrapped.__doc__ = f"``{name}`` with its numeric hyperparameters in the state (see ``inject_hyperparams``)."
    return wrapped


def _injected_states(state: OptState) -> list[InjectHyperparamsState]:
    is_injected = lambda node: isinstance(node, InjectHyperparamsState)
    return [node for node in jax.tree.leaves(state, is_leaf=is_injected) if is_injected(node)]


def get_hyperparams(state: OptState) -> dict[str, jax.Array]:
    """Every hyperparameter in ``state``: ``{name: value}``, editable and scheduled alike.

    Searches the whole state tree, so the ``InjectHyperparamsState`` may sit inside a ``chain``,
    ``masked`` or ``partition`` state.

    Which step the values belong to: an editable value is the one the *next* update will use
    (whatever ``set_hyperparams`` last wrote). A scheduled value is the one the *last* update
    used, ``s(t - 1)`` after ``t`` updates (``s(0)`` after ``init``, which is also what the first
    update uses), not the ``s(t)`` of the next update. This is what ``optax.inject_hyperparams``
    stores in ``state.hyperparams``, so logging code ports unchanged. For the value the next
    update will use, evaluate the schedule at the state's step count::

        learning_rate_next = schedule(state.step_count)   # state.count in Optax's spelling

    Raises:
      ValueError: if the state holds no ``InjectHyperparamsState``, or two of them share a name.
    """
    injected = _injected_states(state)
    if not injected:
        raise ValueError("get_hyperparams: the state holds no InjectHyperparamsState; build the optimizer "
                         "with gradtx.inject_hyperparams(factory)(...).")
    values: dict[str, jax.Array] = {}
    for inner in injected:
        for name, value in {**inner.hyperparams, **inner.schedule_values}.items():
            if name in values:
                raise ValueError(f"get_hyperparams: {name!r} appears in several injected states; read "
                                 "state.hyperparams of each one instead.")
            values[name] = value
    return values


def set_hyperparams(state: OptState, **values: Any) -> OptState:
    """Returns ``state`` with hyperparameters replaced, keeping each one's dtype and shape.

    Each new value is cast to the stored dtype and broadcast to the stored shape (under a
    ``vmap``-ed sweep the stored shape has the configuration axis, and a scalar sets every
    configuration), so the state's type never changes and a jitted step does not recompile.
    Works inside and outside ``jit``; every ``InjectHyperparamsState`` in the tree that holds a
    name is updated.

    Raises:
      ValueError: for a scheduled hyperparameter (its value is recomputed every step: change the
        schedule, or make its parameters hyperparameters, see ``inject_hyperparams``), or a value
        that does not broadcast to the stored shape.
      KeyError: for a name no injected state holds.
    """
    injected = _injected_states(state)
    editable = {name for inner in injected for name in inner.hyperparams}
    scheduled = {name for inner in injected for name in inner.schedule_values}
    for name in values:
        if name in scheduled:
            raise ValueError(f"set_hyperparams: {name!r} is scheduled; its value is recomputed from the schedule "
                             "at every update, so an edit would have no effect.")
        if name not in editable:
            raise KeyError(f"set_hyperparams: no injected hyperparameter {name!r}; editable ones are "
                           f"{sorted(editable)} (static arguments cannot change without rebuilding).")

    def replace(node: Any) -> Any:
        if not isinstance(node, InjectHyperparamsState):
            return node
        hyperparams = dict(node.hyperparams)
        for name, value in values.items():
            if name in hyperparams:
                old = hyperparams[name]
                new = jnp.asarray(value).astype(old.dtype)
                if not _broadcastable(jnp.shape(new), old.shape):
                    raise ValueError(f"set_hyperparams: {name!r} has shape {old.shape}; got a value of shape "
                                     f"{jnp.shape(new)}, which does not broadcast to it.")
                hyperparams[name] = jnp.broadcast_to(new, old.shape)
        return node._replace(hyperparams=hyperparams)

    return jax.tree.map(replace, state, is_leaf=lambda node: isinstance(node, InjectHyperparamsState))


def _broadcastable(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))
