"""Activations: elementwise nonlinearities, softmax and maxout, with their derivatives documented.

Each function computes what ``jax.nn`` computes where ``jax.nn`` has it (and calls it, so the
numerics, including the choice of derivative at kinks, are JAX's); ``maxout`` is new. The
docstrings state the derivative in the form the lectures use, written in terms of the output
``a = f(s)`` where that is possible, which is what backpropagation stores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.validation import check_positive


def sigmoid(x: ArrayLike) -> jax.Array:
    """Logistic sigmoid ``a = 1 / (1 + exp(-s))``; derivative ``a' = a (1 - a)``.

    Saturates for large ``|s|`` (``a' <= 1/4`` everywhere), the reason deep sigmoid networks
    train slowly.

    Args:
      x: pre-activations ``s``.

    Same as ``jax.nn.sigmoid`` and ``torch.sigmoid``.
    """
    return jax.nn.sigmoid(x)


def tanh(x: ArrayLike) -> jax.Array:
    """Hyperbolic tangent ``a = tanh(s)``; derivative ``a' = 1 - a^2``.

    Zero-centred, ``tanh(s) = 2 sigmoid(2 s) - 1``.

    Args:
      x: pre-activations ``s``.

    Same as ``jnp.tanh`` and ``torch.tanh``.
    """
    return jnp.tanh(x)


def relu(x: ArrayLike) -> jax.Array:
    """Rectified linear unit ``a = max(s, 0)``; derivative ``1[s > 0]`` (``0`` at ``s = 0``).

    Does not saturate for ``s > 0``; a unit whose input is negative for every example gets no
    gradient ("dead"), which a small positive bias init helps avoid.

    Args:
      x: pre-activations ``s``.

    Same as ``jax.nn.relu`` (whose derivative at 0 is 0) and ``torch.relu``.
    """
    return jax.nn.relu(x)


def leaky_relu(x: ArrayLike, negative_slope: float = 1e-2) -> jax.Array:
    """Leaky ReLU ``a = s`` for ``s >= 0``, ``a = negative_slope * s`` otherwise.

    Derivative ``1`` for ``s > 0`` and ``negative_slope`` for ``s < 0``, so no unit is ever dead.

    Args:
      x: pre-activations ``s``.
      negative_slope: slope for ``s < 0``, default ``0.01``.

    Same as ``jax.nn.leaky_relu`` and ``torch.nn.functional.leaky_relu`` (same default).
    """
    return jax.nn.leaky_relu(x, negative_slope)


def elu(x: ArrayLike, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit ``a = s`` for ``s > 0``, ``a = alpha (exp(s) - 1)`` otherwise.

    Derivative ``1`` for ``s > 0`` and ``alpha exp(s) = a + alpha`` for ``s < 0``. Negative
    outputs push mean activations towards zero; the curve saturates at ``-alpha``.

    Args:
      x: pre-activations ``s``.
      alpha: saturation value for ``s -> -inf``, default ``1.0``.

    Same as ``jax.nn.elu`` and ``torch.nn.functional.elu``. Reference: Clevert et al., 2016.
    """
    return jax.nn.elu(x, alpha)


def softmax(x: ArrayLike, axis: int = -1) -> jax.Array:
    """Softmax ``a_i = exp(s_i) / sum_j exp(s_j)`` along ``axis``.

    Jacobian ``da_i / ds_j = a_i (delta_ij - a_j)``, i.e. ``diag(a) - a a^T``. Computed after
    subtracting ``max_j s_j``, which changes nothing mathematically and avoids overflow.

    Args:
      x: logits ``s``.
      axis: the axis to normalise over, default ``-1``.

    Same as ``jax.nn.softmax`` and ``torch.softmax``.
    """
    return jax.nn.softmax(x, axis=axis)


def maxout(x: ArrayLike, num_pieces: int, axis: int = -1) -> jax.Array:
    """Maxout ``a_j = max_{k < K} s_{j K + k}``: the maximum over groups of ``K`` linear pieces.

    Feed it a dense layer of ``m K`` outputs to get ``m`` maxout units; each unit is a convex
    piecewise-linear function of the input (ReLU is the case ``K = 2`` with one piece fixed at
    zero). Groups are consecutive entries along ``axis``. Derivative: ``da_j / ds_i = 1`` for the
    ``i`` attaining the maximum of group ``j``, ``0`` otherwise (JAX splits the gradient evenly
    among tied maxima).

    Args:
      x: pre-activations ``s`` whose ``axis`` has size ``m * num_pieces``.
      num_pieces: ``K``, the pieces per unit (positive).
      axis: the feature axis, default ``-1``.

    Returns:
      An array like ``x`` with ``axis`` of size ``m``.

    Reference: Goodfellow et al., "Maxout Networks", 2013. Neither ``jax.nn`` nor torch has it.
    """
    check_positive(num_pieces, "maxout: num_pieces")
    x = jnp.asarray(x)
    axis = axis % x.ndim
    size = x.shape[axis]
    if size % num_pieces:
        raise ValueError(
            f"maxout: the size of axis {axis} ({size}) must be a multiple of num_pieces={num_pieces}; "
            f"input shape {x.shape}."
        )
    grouped = x.reshape(x.shape[:axis] + (size // num_pieces, num_pieces) + x.shape[axis + 1 :])
    return jnp.max(grouped, axis=axis + 1)
