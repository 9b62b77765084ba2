"""Step arithmetic shared by the schedules: exact at the ends, the same jitted and eager.

Under ``jit`` XLA rewrites arithmetic with constants: ``s / T`` becomes ``s * (1/T)``,
``x ** 2.0`` becomes ``x * x``, ``(x * a) * b`` becomes ``x * (a * b)``, and a product feeding
a sum becomes a fused multiply-add. An eager call runs each operation on its own and rounds
each. Three rules keep a schedule's compiled values within an ulp of its eager ones, inside its
range, and exact at its ends:

* A fraction of a phase is ``s / T`` with ``T`` hidden from XLA as ``T + 0 s`` (``opaque``), so
  it stays a correctly rounded division, and exponents are hidden the same way. Its ends are
  then selected (``0`` before the phase, ``1`` from its last step on).
* A value between two ends ``a`` and ``b`` is ``a w_a + b w_b`` with weights computed without
  cancellation (``blend``): ``a`` and ``b`` exactly at the ends, no cancellation when they have
  the same sign, and a fused multiply-add changes it by at most an ulp. It is clipped to
  ``[min(a, b), max(a, b)]`` against the last rounding.
* No multiplication by a product of constants: ``x (a b)`` is written with ``a b`` formed once.
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


def opaque(value: Any, like: jax.Array) -> jax.Array:
    """``value + 0 * like``: the same number, but not a constant XLA could rewrite around.

    ``like`` is a finite float array (a step count), so ``0 * like`` is ``0``.
    """
    return value + 0.0 * like


def progress(elapsed: jax.Array, length: int) -> jax.Array:
    """``elapsed / length`` clipped to ``[0, 1]``: exactly ``0`` at the start and ``1`` at the end.

    ``elapsed`` is a float step count since the start of the phase (possibly negative or past
    ``length``); the quotient is a correctly rounded division, jitted or not (see ``opaque``).
    """
    length = float(length)  # a Python int past int32 would not convert to a JAX scalar
    fraction = jnp.clip(elapsed, 0.0, length) / opaque(length, elapsed)
    return jnp.where(elapsed >= length, 1.0, jnp.where(elapsed <= 0, 0.0, fraction)).astype(fraction.dtype)


def power(base: jax.Array, exponent: Any) -> jax.Array:
    """``base ** exponent`` computed by ``pow`` jitted and eager alike (not ``base * base`` for 2)."""
    return jnp.power(base, opaque(jnp.asarray(exponent, base.dtype), base))


def falling(done: jax.Array, exponent: Any) -> tuple[jax.Array, jax.Array]:
    """``w = (1 - x) ** p`` and ``1 - w``, both to a few ulps of themselves even when small.

    ``1 - w`` is ``-expm1(p log1p(-x))`` rather than a subtraction, which would cancel near
    ``x = 0``. For ``p = 1`` the weights are ``1 - x`` and ``x`` themselves.
    """
    if isinstance(exponent, (int, float)) and exponent == 1:
        return 1 - done, done
    log_w = opaque(jnp.asarray(exponent, done.dtype), done) * jnp.log1p(-done)
    return jnp.exp(log_w), -jnp.expm1(log_w)


def half_cosine(done: jax.Array, exponent: Any = 1.0) -> tuple[jax.Array, jax.Array]:
    """``w = ((1 + cos(pi x)) / 2) ** p`` and ``1 - w``: ``1, 0`` at ``x = 0`` and ``0, 1`` at ``x = 1``."""
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * done))
    weight = cosine if isinstance(exponent, (int, float)) and exponent == 1 else power(cosine, exponent)
    weight = jnp.where(done >= 1, 0.0, jnp.where(done <= 0, 1.0, weight)).astype(weight.dtype)
    return weight, 1 - weight


def blend(
    first: jax.typing.ArrayLike, last: jax.typing.ArrayLike, first_weight: jax.Array, last_weight: jax.Array
) -> jax.Array:
    """``first * w_first + last * w_last``, clipped to the range of its ends.

    The weights are ``1, 0`` at one end and ``0, 1`` at the other, which gives ``first`` and
    ``last`` exactly there; the value never leaves ``[min, max]``.
    """
    value = first * first_weight + last * last_weight
    return jnp.clip(value, jnp.minimum(first, last), jnp.maximum(first, last))


def held(value: jax.typing.ArrayLike) -> Schedule:
    """``eta_t = value`` as a float array shaped like ``t`` (for degenerate schedules)."""

    def schedule(step_count: jax.Array) -> jax.Array:
        return value * jnp.ones_like(float_step(step_count))

    return schedule
