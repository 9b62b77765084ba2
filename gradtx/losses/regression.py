"""Regression losses: squared error, Huber, log-cosh, and cosine similarity and distance.

The elementwise losses take ``targets=None`` to mean zero targets, so ``l2_loss(x)`` is a penalty
on ``x`` itself. All are returned unreduced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradtx.losses._checks import Axis, as_floating, check_same_shape


def _errors(predictions: jax.Array, targets: ArrayLike | None) -> jax.Array:
    return predictions if targets is None else predictions - jnp.asarray(targets)


def squared_error(predictions: ArrayLike, targets: ArrayLike | None = None) -> jax.Array:
    """Elementwise squared error ``(p - t)^2``; its mean is the MSE.

    .. math::

        \\ell(p, t) = (p - t)^2

    Args:
      predictions: predictions ``p``, any shape, floating.
      targets: targets ``t`` of the same shape (no broadcasting, which hides shape bugs), or
        ``None`` (default) for zeros.

    Returns:
      The squared error of each element, shape ``predictions.shape``.

    Raises:
      ValueError: ``targets`` and ``predictions`` differ in shape.

    Matches ``optax.losses.squared_error`` and ``torch.nn.functional.mse_loss(..., reduction="none")``.
    """
    predictions = as_floating(predictions, "predictions")
    if targets is not None:
        check_same_shape(targets, predictions, "targets", "predictions")
    return _errors(predictions, targets) ** 2


def l2_loss(predictions: ArrayLike, targets: ArrayLike | None = None) -> jax.Array:
    """Half the squared error, ``(p - t)^2 / 2``, whose gradient is the plain residual ``p - t``.

    .. math::

        \\ell(p, t) = \\tfrac12 (p - t)^2

    Args:
      predictions: predictions ``p``, any shape, floating.
      targets: targets ``t`` of the same shape, or ``None`` (default) for zeros.

    Returns:
      The loss of each element, shape ``predictions.shape``.

    Matches ``optax.losses.l2_loss`` (the ``1/2`` of Bishop, "Pattern Recognition and Machine
    Learning", 2006).
    """
    return 0.5 * squared_error(predictions, targets)


def huber_loss(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    delta: ArrayLike = 1.0,
) -> jax.Array:
    """Huber loss: quadratic for errors up to ``delta``, linear beyond (gradients clipped to ``delta``).

    .. math::

        \\ell(e) = \\begin{cases} \\tfrac12 e^2 & |e| \\le \\delta \\\\
                   \\delta (|e| - \\tfrac12 \\delta) & |e| > \\delta \\end{cases},
        \\qquad e = p - t

    computed as ``q^2 / 2 + delta (|e| - q)`` with ``q = min(|e|, delta)``, whose gradient is
    ``clip(e, -delta, delta)`` with no doubled term at ``|e| = delta``.

    Args:
      predictions: predictions ``p``, floating.
      targets: targets ``t``, broadcastable against ``predictions``, or ``None`` (default) for zeros.
      delta: the threshold ``delta > 0``, default ``1.0``.

    Returns:
      The loss of each element.

    Matches ``optax.losses.huber_loss`` and ``torch.nn.functional.huber_loss(..., delta=delta)``.

    References:
      Huber, "Robust Estimation of a Location Parameter", Annals of Mathematical Statistics, 1964.
    """
    predictions = as_floating(predictions, "predictions")
    abs_errors = jnp.abs(_errors(predictions, targets))
    quadratic = jnp.minimum(abs_errors, delta)
    return 0.5 * quadratic**2 + delta * (abs_errors - quadratic)


def log_cosh(predictions: ArrayLike, targets: ArrayLike | None = None) -> jax.Array:
    """Log-cosh loss ``log cosh(p - t)``: about ``e^2 / 2`` near zero and ``|e| - log 2`` far away.

    .. math::

        \\ell(e) = \\log\\cosh e = \\operatorname{logaddexp}(e, -e) - \\log 2

    The ``logaddexp`` form does not overflow for large ``|e|`` (``cosh`` itself would).

    Args:
      predictions: predictions ``p``, floating.
      targets: targets ``t``, broadcastable against ``predictions``, or ``None`` (default) for zeros.

    Returns:
      The loss of each element.

    Matches ``optax.losses.log_cosh``.

    References:
      Chen, Tao, Kim & Srebro, "Log Hyperbolic Cosine Loss Improves Variational Auto-Encoder",
      2019 (openreview.net/pdf?id=rkglvsC9Ym).
    """
    predictions = as_floating(predictions, "predictions")
    errors = _errors(predictions, targets)
    return jnp.logaddexp(errors, -errors) - np.log(2.0).astype(errors.dtype)


def cosine_similarity(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Cosine of the angle between predictions and targets, along ``axis``.

    .. math::

        \\cos(p, t) = \\sum_i \\frac{p_i}{\\max(\\|p\\|^2, \\epsilon)^{1/2}}
                              \\frac{t_i}{\\max(\\|t\\|^2, \\epsilon)^{1/2}}

    ``epsilon`` bounds the squared norms from below, so a zero vector gives ``0`` (not ``nan``)
    when ``epsilon > 0``.

    Args:
      predictions: vectors of shape ``[..., dim]``, floating.
      targets: vectors broadcastable against ``predictions``, floating.
      epsilon: lower bound of the squared norms, default ``0.0``.
      axis: the vector axis or axes, default ``-1``.
      where: optional boolean mask of the coordinates to include.

    Returns:
      The cosine similarity of each pair, the shape without ``axis``.

    Matches ``optax.losses.cosine_similarity`` (and ``torch.nn.functional.cosine_similarity`` for
    vectors whose norms exceed its ``eps``).
    """
    predictions = as_floating(predictions, "predictions")
    targets = as_floating(targets, "targets")

    def unit(v: jax.Array) -> jax.Array:
        norm2 = jnp.sum(jnp.square(v), axis=axis, where=where, keepdims=True)
        return v / jnp.sqrt(jnp.clip(norm2, epsilon))

    return jnp.sum(unit(predictions) * unit(targets), axis=axis, where=where)


def cosine_distance(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Cosine distance ``1 - cos(p, t)``, in ``[0, 2]``.

    .. math::

        d(p, t) = 1 - \\cos(p, t)

    with ``cos`` as in :func:`cosine_similarity` (same ``epsilon``, ``axis`` and ``where``).

    Args:
      predictions: vectors of shape ``[..., dim]``, floating.
      targets: vectors broadcastable against ``predictions``, floating.
      epsilon: lower bound of the squared norms, default ``0.0``.
      axis: the vector axis or axes, default ``-1``.
      where: optional boolean mask of the coordinates to include.

    Returns:
      The cosine distance of each pair, the shape without ``axis``.

    Matches ``optax.losses.cosine_distance``.
    """
    return 1.0 - cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis, where=where)
