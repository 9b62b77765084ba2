"""Hyperparameters as optimizer state: read them back and change them between steps, never recompiling.

``inject_hyperparams(factory)`` takes any function that builds a transformation
(``gradtx.adam``, ``gradtx.sgd``, a user's own ``lambda lr, wd: chain(...)``) and returns a
function with the same arguments whose numeric hyperparameters live in the state as arrays::

    optimizer = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-3, b1=0.9)
    state = optimizer.init(params)
    state.hyperparams["learning_rate"]              # Array(0.001, dtype=float32) for float32 params
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
from gradtx.schedules.stateful import StatefulSchedule, WrappedSchedule
from gradtx.tree_utils import saturating_increment, zero_step_count
from gradtx.validation import check_state_type


class InjectStatefulHyperparamsState(NamedTuple):
    """State of a transformation built by ``inject_hyperparams``; Optax's fields and their meaning.

    count: int32 number of updates applied.
    hyperparams: ``{name: array}``, every numeric and scheduled hyperparameter. A numeric one is
      editable: the next update uses whatever value is here (``set_hyperparams`` edits it keeping
      dtype and shape). A scheduled one holds the value its schedule gave for the last update (for
      step 0 after ``init``) and is recomputed at every update.
    hyperparams_states: ``{name: schedule state}`` for each scheduled hyperparameter: a
      ``WrappedScheduleState(count)`` for a plain schedule ``t -> value``, the schedule's own
      state for a ``StatefulSchedule``.
    inner_state: the state of the wrapped transformation.
    """

    count: jax.Array
    hyperparams: dict[str, jax.Array]
    hyperparams_states: dict[str, Any]
    inner_state: OptState


InjectHyperparamsState = InjectStatefulHyperparamsState  # Optax's older name for the same state


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
    """Annotated as an integer (``int``, or a union naming ``int`` and no float: a PRNG seed or key)."""
    if parameter.annotation in (int, "int"):
        return True
    text = str(parameter.annotation)
    words = set(text.replace("|", " ").replace(",", " ").replace("[", " ").replace("]", " ").split())
    return "int" in words and not words & {"float", "ScalarOrSchedule", "Schedule"}


def _kind(name: str, value: Any, parameter: inspect.Parameter, static_args: frozenset[str]) -> str:
    """``"static"``, ``"stateful"``, ``"schedule"`` or ``"numeric"``: how an argument is injected."""
    if name in static_args or value is None or isinstance(value, (bool, np.bool_, str)) or _is_dtype(value):
        return "static"
    if isinstance(value, StatefulSchedule):
        return "stateful"
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


def _hyperparam_dtype(params: Params, hyperparam_dtype: Any) -> Any:
    """``hyperparam_dtype`` if given, else the widest float dtype of the parameters (the real one
    for complex parameters), else JAX's default float dtype."""
    if hyperparam_dtype is not None:
        return hyperparam_dtype
    dtype = None
    for leaf in jax.tree.leaves(params):
        leaf_dtype = jnp.result_type(leaf)
        if jnp.issubdtype(leaf_dtype, jnp.complexfloating):
            leaf_dtype = jnp.finfo(leaf_dtype).dtype
        if jnp.issubdtype(leaf_dtype, jnp.floating):
            dtype = leaf_dtype if dtype is None else jnp.promote_types(dtype, leaf_dtype)
    return jnp.result_type(float) if dtype is None else dtype


def _as_hyperparam(value: Any, dtype: Any) -> Any:
    """A hyperparameter value in the state, converted as Optax converts it.

    A strongly typed JAX array is kept as it is; any other floating-point value (Python and NumPy
    floats, weakly typed arrays) becomes ``dtype``. Python ints become ``dtype`` too (Optax keeps
    them as int arrays, so that a later ``0.5`` would be truncated or change the state's type);
    other integer values are kept.
    """
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_, np.ndarray, np.generic)):
        return jnp.asarray(value, dtype)
    current = value.dtype if hasattr(value, "dtype") else type(value)
    if jnp.issubdtype(current, jnp.floating):
        return jnp.asarray(value, dtype)
    return value


def _scheduled_value(value: Any, previous: Any, dtype: Any) -> Any:
    """A schedule's value converted as ``_as_hyperparam`` converts numbers (a strongly typed array
    keeps its dtype), except that a weakly typed float takes the dtype the state already holds for
    it, so that an ``update`` without ``params`` does not change the state's type."""
    if isinstance(previous, jax.Array) and jnp.issubdtype(previous.dtype, jnp.floating):
        dtype = previous.dtype
    return jnp.asarray(_as_hyperparam(value, dtype))


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Wraps ``inner_factory`` so that its numeric and scheduled hyperparameters are arrays in the state.

    ``inject_hyperparams(inner_factory)(*args, **kwargs)`` returns a transformation ``T`` that, at
    every update ``t``, rebuilds ``inner_factory`` from the *current* values in its state and
    applies it:

    .. math::
        h_t = \\text{state.hyperparams} \\cup \\{ s(\\sigma_t) : s \\text{ a schedule argument} \\}, \\qquad
        (u_t, \\text{inner}_t) = \\text{factory}(h_t, \\text{static}).\\text{update}(g_t, \\text{inner}_{t-1})

    where ``sigma_t`` is the schedule's state (the step count ``t`` for a plain schedule).

    Each argument of ``inner_factory`` (defaults included) is sorted, once, when ``T`` is built:

    * numeric (Python ``float``/``int``, numeric NumPy/JAX arrays, tracers under ``vmap``): an
      array in ``state.hyperparams``, of dtype ``hyperparam_dtype`` or, by default, the widest
      float dtype of the parameters given to ``init`` (as in Optax). A strongly typed JAX array
      keeps its own dtype. Transforms cast hyperparameters to each parameter's dtype where they
      are used. With bfloat16 parameters ``b2 = 0.999`` is stored as bfloat16, that is ``1.0``,
      as in Optax: pass ``hyperparam_dtype=jnp.float32`` to keep such values.
    * schedule: a ``StatefulSchedule`` (any object with ``init``, ``update`` and ``__call__``, such
      as Optax's), or any other callable ``t -> value``, wrapped in a ``WrappedSchedule``. Its
      state is kept in ``state.hyperparams_states`` and its value in ``state.hyperparams`` next
      to the numeric ones, converted like them (gradtx's schedules return strongly typed arrays of
      JAX's default float dtype, which are kept). ``update``'s extra keyword arguments (a loss,
      say) are passed to the schedule.
    * static (left as Python objects, closed over): ``None``, bools, strings, dtypes
      (``mu_dtype=jnp.bfloat16`` is not mistaken for a schedule), pytrees such as masks,
      callables whose argument name contains ``mask``, Python ints for parameters annotated
      ``int`` (step counts, sizes), and every name listed in ``static_args``.

    Changing a numeric hyperparameter between steps (``set_hyperparams``, or assigning into
    ``state.hyperparams`` as in Optax) changes an input value of the compiled step, not its
    types, so it never recompiles. To make schedule *parameters* editable, wrap a factory that
    builds the schedule from them::

        def warmup_adam(peak_lr, warmup_steps: int, b1=0.9):
            return gradtx.adam(gradtx.warmup_cosine_decay_schedule(0.0, peak_lr, warmup_steps, 10_000), b1)

        optimizer = gradtx.inject_hyperparams(warmup_adam)(peak_lr=1e-3, warmup_steps=100)
        # state.hyperparams == {"peak_lr": ..., "b1": ...}; warmup_steps is static (annotated int)

    Python-number hyperparameters are range-checked when ``T`` is built (by calling
    ``inner_factory`` once with them), exactly as ``inner_factory`` itself checks them.

    Args:
      inner_factory: a function returning a ``GradientTransformation``; it must accept arrays for
        the arguments that end up numeric (every gradtx transform does). Arguments must be
        nameable (no ``*args``/``**kwargs``).
      static_args: names of arguments to keep static whatever their value.
      hyperparam_dtype: dtype of floating-point hyperparameters. Default ``None``: the widest
        float dtype of the parameters.

    Returns:
      A function with ``inner_factory``'s signature returning the wrapped transformation, whose
      state is ``InjectStatefulHyperparamsState(count, hyperparams, hyperparams_states, inner_state)``.

    Matches ``optax.inject_hyperparams`` (same arguments, state fields and dtypes), with these
    differences: dtypes, ``mask`` callables and ints for ``int``-annotated parameters are static
    without being listed; a Python int for any other parameter is stored as a float (Optax keeps
    an int array, which a later ``0.5`` would change); a weakly typed scheduled value keeps the
    dtype it had after ``init`` when ``update`` gets no ``params`` (Optax then uses JAX's default
    float, which changes the state's type under ``jax_enable_x64``); editing a scheduled value
    with ``set_hyperparams`` raises instead of being silently overwritten.
    """
    static_names = frozenset([static_args] if isinstance(static_args, str) else static_args)
    signature = inspect.signature(inner_factory)
    name = getattr(inner_factory, "__name__", "factory")
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(
                f"inject_hyperparams: {name} takes *{parameter.name}; "
                "every argument needs a name to be stored in the state."
            )
    unknown = static_names - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"inject_hyperparams: static_args {sorted(unknown)} are not parameters of "
            f"{name}; its parameters are {list(signature.parameters)}."
        )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        kinds = {
            key: _kind(key, value, signature.parameters[key], static_names) for key, value in arguments.items()
        }
        static = {key: value for key, value in arguments.items() if kinds[key] == "static"}
        numeric = {key: value for key, value in arguments.items() if kinds[key] == "numeric"}
        schedules = {
            key: value if kinds[key] == "stateful" else WrappedSchedule(value)
            for key, value in arguments.items()
            if kinds[key] in ("schedule", "stateful")
        }
        if not any(kind == "stateful" for kind in kinds.values()):
            inner_factory(*bound.args, **bound.kwargs)  # range checks of Python numbers, raised now, not in jit

        def build(values: dict[str, Any]) -> GradientTransformation:
            merged = {**static, **values}
            call = inspect.BoundArguments(signature, {key: merged[key] for key in arguments})
            return inner_factory(*call.args, **call.kwargs)

        def init_fn(params: Params) -> InjectStatefulHyperparamsState:
            dtype = _hyperparam_dtype(params, hyperparam_dtype)
            hyperparams = {key: jnp.asarray(_as_hyperparam(value, dtype)) for key, value in numeric.items()}
            schedule_states = {key: schedule.init() for key, schedule in schedules.items()}
            for key, schedule in schedules.items():
                hyperparams[key] = _scheduled_value(schedule(schedule_states[key]), None, dtype)
            inner_state = build(hyperparams).init(params)
            return InjectStatefulHyperparamsState(zero_step_count(), hyperparams, schedule_states, inner_state)

        def update_fn(updates, state, params=None, **extra_args):
            check_state_type(state, InjectHyperparamsState, f"inject_hyperparams({name})")
            dtype = _hyperparam_dtype(params, hyperparam_dtype)
            hyperparams = {
                key: _as_hyperparam(value, dtype) for key, value in state.hyperparams.items() if key not in schedules
            }
            for key, schedule in schedules.items():
                value = schedule(state.hyperparams_states[key], **extra_args)
                hyperparams[key] = _scheduled_value(value, state.hyperparams.get(key), dtype)
            schedule_states = {
                key: schedule.update(state.hyperparams_states[key], **extra_args) for key, schedule in schedules.items()
            }
            inner = build(hyperparams)
            if extra_args:
                updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            else:
                updates, inner_state = inner.update(updates, state.inner_state, params)
            new_state = InjectStatefulHyperparamsState(
                saturating_increment(state.count), hyperparams, schedule_states, inner_state
            )
            return updates, new_state

        return GradientTransformationExtraArgs(init_fn, update_fn)

    wrapped.__name__ = wrapped.__qualname__ = f"inject_hyperparams({name})"
    wrapped.__doc__ = f"``{name}`` with its numeric hyperparameters in the state (see ``inject_hyperparams``)."
    return wrapped


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """``inject_hyperparams`` under Optax's older name for it: both take stateful schedules.

    ``h_t = state.hyperparams ∪ {s(sigma_t)}`` as in ``inject_hyperparams``, with the same
    arguments, state and behaviour. Matches ``optax.inject_stateful_hyperparams`` (which Optax
    keeps, deprecated, as an alias of ``optax.inject_hyperparams``).
    """
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)


def _injected_states(state: OptState) -> list[InjectStatefulHyperparamsState]:
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

        learning_rate_next = schedule(state.count)

    Raises:
      ValueError: if the state holds no ``InjectHyperparamsState``, or two of them share a name.
    """
    injected = _injected_states(state)
    if not injected:
        raise ValueError("get_hyperparams: the state holds no InjectHyperparamsState; build the optimizer "
                         "with gradtx.inject_hyperparams(factory)(...).")
    values: dict[str, jax.Array] = {}
    for inner in injected:
        for name, value in inner.hyperparams.items():
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
    scheduled = {name for inner in injected for name in inner.hyperparams_states}
    editable = {name for inner in injected for name in inner.hyperparams} - scheduled
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
                old = jnp.asarray(hyperparams[name])
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
