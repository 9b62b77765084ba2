"""Record measurements of the updates inside a chain: ``snapshot``, ``monitor``, ``measure_with_ema``.

These transformations pass the updates through unchanged and store what they measured in their
state, where ``state[i].measurement[name]`` (or a search by name) reads it back after a step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params, PyTree, stateless
from gradtx.combinators import chain
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
from gradtx.momentum import ema
from gradtx.tree_utils import check_updates_match_params
from gradtx.validation import check_state_type


class SnapshotState(NamedTuple):
    """State of ``snapshot``: ``measurement``, a dict ``{measure_name: measure(latest updates)}``."""

    measurement: dict[str, Any]


def snapshot(measure_name: str, measure: Callable[[PyTree], PyTree]) -> GradientTransformation:
    """Stores ``measure(u)`` of the updates reaching this point of a chain; passes ``u`` unchanged.

    .. math::
        u_t^{\\text{out}} = u_t, \\qquad \\text{state} = \\{\\text{name}: f(u_t)\\}

    ``init`` stores ``f(params)`` so that the state's structure is fixed from the start (the
    measurement must therefore accept a tree shaped like the parameters).

    Args:
      measure_name: the key of the measurement in ``SnapshotState.measurement``.
      measure: ``f``, any function of the updates returning a pytree of arrays, e.g.
        ``gradtx.tree_global_norm``.

    State: ``SnapshotState(measurement)``. Matches ``optax.snapshot``.
    """
    if not isinstance(measure_name, str):
        raise TypeError(f"measure_name must be a str, got {type(measure_name).__name__}.")
    if not callable(measure):
        raise TypeError(f"measure must be callable, got {type(measure).__name__}.")

    def init_fn(params: Params) -> SnapshotState:
        return SnapshotState({measure_name: measure(params)})

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, SnapshotState, "snapshot")
        check_updates_match_params(updates, params, "snapshot")
        del state, params, extra_args
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init_fn, update_fn)


class MonitorState(NamedTuple):
    """State of ``monitor``.

    measurements: dict ``{name: latest measurement}``, holding zeros of the right shapes after ``init``.
    measure_states: one state per measure, in the order of the dict given to ``monitor``.
    """

    measurements: dict[str, PyTree]
    measure_states: tuple[OptState, ...]


def monitor(
    measures: Mapping[str, GradientTransformation | Callable[[PyTree], PyTree]],
) -> GradientTransformationExtraArgs:
    """Records several measurements of the updates, stateless or stateful; passes ``u`` unchanged.

    For each entry ``name: M``:

    .. math::
        \\text{measurements}[\\text{name}] = f(u_t) \\ \\text{(a function)}, \\qquad
        (\\text{measurements}[\\text{name}], S_t) = M(u_t, S_{t-1}) \\ \\text{(a transformation)}

    A transformation measure (such as ``measure_with_ema``) keeps its own state and reports its
    output updates as the measurement. Extra keyword arguments of ``update`` reach every measure.

    Args:
      measures: a dict from names to functions of the updates or to transformations.

    State: ``MonitorState(measurements, measure_states)``. Matches ``optax.monitor``, except that
    ``init`` already fills ``measurements`` with zeros of each measurement's shape (Optax leaves the
    dict empty until the first update), so the state's structure never changes and the step can
    run inside ``jax.lax.scan``.
    """
    if not isinstance(measures, Mapping):
        raise TypeError(
            f"measures must be a dict of name -> function or transformation, got {type(measures).__name__}."
        )
    transforms = {}
    for name, measure in measures.items():
        if hasattr(measure, "init") and hasattr(measure, "update"):
            transforms[name] = with_extra_args_support(measure)
        elif callable(measure):
            transforms[name] = with_extra_args_support(stateless(lambda u, _, f=measure: f(u)))
        else:
            raise TypeError(
                f"monitor: measure {name!r} is {type(measure).__name__}; expected a function of the updates "
                "or a GradientTransformation."
            )
    names = tuple(transforms)

    def init_fn(params: Params) -> MonitorState:
        states = tuple(transforms[name].init(params) for name in names)
        measurements = {}
        for name, measure_state in zip(names, states):
            shapes = jax.eval_shape(lambda p, s, t=transforms[name]: t.update(p, s, p)[0], params, measure_state)
            measurements[name] = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return MonitorState(measurements, states)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, MonitorState, "monitor")
        measurements, new_states = {}, []
        for name, measure_state in zip(names, state.measure_states):
            measurements[name], measure_state = transforms[name].update(updates, measure_state, params, **extra_args)
            new_states.append(measure_state)
        return updates, MonitorState(measurements, tuple(new_states))

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _as_float(tree: PyTree) -> PyTree:
    """Bool and integer leaves in the default float dtype (a moving average of a flag is a frequency)."""
    float_dtype = jnp.result_type(float)
    return jax.tree.map(
        lambda x: x if jnp.issubdtype(jnp.result_type(x), jnp.inexact) else jnp.asarray(x, float_dtype), tree
    )


def measure_with_ema(
    measure: Callable[[PyTree], PyTree], decay: Any, debias: bool = True, accumulator_dtype: Any | None = None
) -> GradientTransformationExtraArgs:
    """The exponential moving average of a measurement of the updates, for ``monitor``.

    .. math::
        m_t = \\beta m_{t-1} + (1 - \\beta) f(u_t), \\qquad
        \\text{output}_t = m_t / (1 - \\beta^t) \\ (\\text{debias}), \\ \\text{else } m_t

    Its output is the average (not the updates), so use it as a value of ``monitor``'s dict, not
    as a stage of a chain. Boolean and integer measurements (``norm(u) > c``) are averaged as
    floats, which gives the recent frequency of the event.

    Args:
      measure: ``f``, a function of the updates.
      decay: ``beta`` in ``[0, 1)``.
      debias: divide by ``1 - beta^t`` (default True).
      accumulator_dtype: dtype of ``m``; default the measurement's.

    State: a ``chain`` state ``(EmptyState(), EmaState(step_count, ema))``. Matches
    ``optax.measure_with_ema``. Reference: the moving average and its debiasing are those of
    Kingma & Ba, "Adam", 2015, Section 3.
    """
    if not callable(measure):
        raise TypeError(f"measure must be callable, got {type(measure).__name__}.")
    average = ema(decay, debias, accumulator_dtype)
    average_init = average.init
    # The average has the measurement's shape, not the parameters'.
    average = GradientTransformation(lambda params: average_init(_as_float(measure(params))), average.update)
    return with_extra_args_support(chain(stateless(lambda updates, _: _as_float(measure(updates))), average))
