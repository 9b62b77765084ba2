"""Step arithmetic shared by the schedules: exact at the ends, the same jitted and eager.

Two rules keep every schedule inside its range and its compiled values equal to its eager ones:

* A fraction of a phase is ``s * (1/T)`` with ``1/T`` a constant, never ``s / T``. Under ``jit``
  XLA rewrites a division by a constant into that multiplication while an eager scalar division
  stays a true division, so writing the multiplication makes both compute the same number; and
  its ends are then selected (``0`` before the phase, ``1`` from its last step on), because
  ``T * (1/T)`` need not be ``1``.
* A value between two end values is their convex combination ``a w + b (1 - w)`` (which is
  ``a`` at ``w = 1`` and ``b`` at ``w = 0`` exactly, with no cancellation), clipped to
  ``[min(a, b), max(a, b)]`` against the last rounding.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.base import Schedule
from gradtx.validation import check_non_negative, check_positive


def steps_arg(value: Any, name: str, *, positive: bool) -> int:
    """``value`` as a Python int, checked to be an integer that is ``> 0`` or ``>= 0``."""
    try:
        steps = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer number of steps, got {value!r}.") from None
    if positive:
        check_positive(steps, name)
    else:
        check_non_negative(steps, name)
    return steps


def float_step(step_count: jax.Array | int) -> jax.Array:
    """The step count in JAX's default float dtype, clamped at 0.

    Working in floats avoids int32 overflow of ``t - transition_begin`` with large Python ints
    and makes every schedule return a float even when all its arguments are ints.
    """
    t = jnp.asarray(step_count).astype(jnp.result_type(float))
    return jnp.maximum(t, 0.0)


def reached(step_count: jax.Array | int, boundary: int) -> jax.Array:
    """``t >= boundary``, compared as integers when ``t`` is one (exact past ``2**24`` steps).

    A boundary beyond the range of ``t``'s integer dtype is never reached, instead of overflowing.
    """
    t = jnp.asarray(step_count)
    if jnp.issubdtype(t.dtype, jnp.integer):
        info = jnp.iinfo(t.dtype)
        if boundary > info.max:
            return jnp.zeros(t.shape, bool)
        if boundary <= info.min:
            return jnp.ones(t.shape, bool)
        return t >= boundary
    return t >= float(boundary)


def since(step_count: jax.Array | int, boundary: int) -> jax.Array:
    """``t - boundary`` without integer overflow: in floats when the boundary does not fit ``t``'s dtype."""
    t = jnp.asarray(step_count)
    if jnp.issubdtype(t.dtype, jnp.integer) and boundary <= jnp.iinfo(t.dtype).max:
        return t - boundary
    return t.astype(jnp.result_type(float)) - float(boundary)


def stage(step_count: jax.Array | int, begin: int, length: int) -> jax.Array:
    """``floor(max(t - begin, 0) / length)`` in JAX's default float dtype.

    Integer step counts are divided as integers: under ``jit`` XLA computes a float ``t / N`` as
    ``t * (1/N)``, which for some ``N`` (49, 98, 103, ...) falls just below an integer at
    ``t = kN`` and would make the value step down one update late.
    """
    t = jnp.asarray(step_count)
    if jnp.issubdtype(t.dtype, jnp.unsignedinteger):
        t = t.astype(jnp.result_type(int))
    if jnp.issubdtype(t.dtype, jnp.integer) and max(begin, length) <= jnp.iinfo(t.dtype).max:
        whole = jnp.maximum(t - begin, 0) // length
    else:
        whole = jnp.floor(jnp.maximum(t.astype(jnp.result_type(float)) - float(begin), 0.0) / float(length))
    return whole.astype(jnp.result_type(float))


def progress(elapsed: jax.Array, length: int) -> jax.Array:
    """``elapsed / length`` clipped to ``[0, 1]``: exactly ``0`` at the start and ``1`` at the end.

    ``elapsed`` is a float step count since the start of the phase (possibly negative or past
    ``length``); the interior is ``elapsed * (1/length)``, see the module docstring.
    """
    length = float(length)  # a Python int past int32 would not convert to a JAX scalar
    fraction = jnp.clip(elapsed, 0.0, length) * (1.0 / length)
    return jnp.where(elapsed >= length, 1.0, jnp.where(elapsed <= 0, 0.0, fraction)).astype(fraction.dtype)


def blend(first: jax.typing.ArrayLike, last: jax.typing.ArrayLike, weight: jax.Array) -> jax.Array:
    """``first * w + last * (1 - w)`` for ``w`` in ``[0, 1]``, clipped to the range of its ends.

    ``first`` at ``w = 1`` and ``last`` at ``w = 0`` exactly, and never outside ``[min, max]``.
    """
    value = first * weight + last * (1 - weight)
    return jnp.clip(value, jnp.minimum(first, last), jnp.maximum(first, last))


def held(value: jax.typing.ArrayLike) -> Schedule:
    """``eta_t = value`` as a float array shaped like ``t`` (for degenerate schedules)."""

    def schedule(step_count: jax.Array) -> jax.Array:
        return value * jnp.ones_like(float_step(step_count))

    return schedule
