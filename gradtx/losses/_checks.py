"""Argument checks shared by the loss modules, raised at trace time with the argument's name."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Axis = int | tuple[int, ...] | None


def as_floating(x: ArrayLike, name: str) -> jax.Array:
    """``x`` as an array, or a TypeError naming ``name`` if its dtype is not floating."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}.")
    return x


def as_integer(x: ArrayLike, name: str) -> jax.Array:
    """``x`` as an array, or a TypeError naming ``name`` if its dtype is not an integer one."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}.")
    return x


def check_same_shape(a: Any, b: Any, name: str, reference_name: str) -> None:
    """A ValueError naming both arguments when their shapes differ."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"{name} must have the shape of {reference_name} {np.shape(b)}, got {np.shape(a)}.")


def check_rank(x: Any, rank: int, name: str) -> None:
    """A ValueError naming ``name`` unless ``x`` has ``rank`` dimensions."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {np.shape(x)}.")


def normalize_axes(axis: int | Sequence[int], ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Non-negative axis indices, or a ValueError naming ``name`` for an index out of range."""
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}={axis!r} is out of range for an array of {ndim} dimensions.")
        out.append(a % ndim)
    return tuple(out)


def expand_where(where: ArrayLike | None, ndim: int, axis: Axis) -> jax.Array | None:
    """A mask over the batch dimensions only (the reduced ``axis`` removed) gets that axis back."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.ndim != ndim:
        if axis is None:
            raise ValueError(f"where must have the shape of the inputs when axis=None, got shape {where.shape}.")
        where = jnp.expand_dims(where, axis)
    return where
