"""Kullback-Leibler divergences between a target distribution and a predicted one given in log space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.losses._checks import Axis, as_floating


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Kullback-Leibler divergence ``KL(t || q)`` of the predictions ``q`` from the targets ``t``.

    .. math::

        \\mathrm{KL}(t \\,\\|\\, q) = \\sum_i t_i (\\log t_i - \\log q_i), \\qquad 0 \\log 0 = 0

    The predictions come as ``log q`` (e.g. from ``log_softmax``) so that tiny probabilities do
    not underflow. Zero targets contribute ``0``, and their gradient with respect to ``targets`` is
    finite (``-log q_i``): the log is taken of ``t`` with its zeros replaced by ones.

    Args:
      log_predictions: ``log q``, shape ``[..., dim]``, floating.
      targets: probabilities ``t >= 0``, broadcastable against ``log_predictions``, floating.
      axis: the distribution axis or axes, default ``-1``.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergence of each distribution, the shape without ``axis``.

    Matches ``optax.losses.kl_divergence`` (whose gradient with respect to a zero target is
    ``nan``) and ``torch.nn.functional.kl_div(log_predictions, targets, reduction="none").sum(axis)``.

    References:
      Kullback & Leibler, "On Information and Sufficiency", Annals of Mathematical Statistics, 1951.
    """
    log_predictions = as_floating(log_predictions, "log_predictions")
    targets = as_floating(targets, "targets")
    is_zero = targets == 0
    log_targets = jnp.where(is_zero, 0.0, jnp.log(jnp.where(is_zero, 1.0, targets)))
    return jnp.sum(targets * (log_targets - log_predictions), axis=axis, where=where)


def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Kullback-Leibler divergence ``KL(t || q)`` with both distributions given in log space.

    .. math::

        \\mathrm{KL}(t \\,\\|\\, q) = \\sum_i e^{\\log t_i} (\\log t_i - \\log q_i)

    Args:
      log_predictions: ``log q``, shape ``[..., dim]``, floating.
      log_targets: ``log t``, broadcastable against ``log_predictions``, floating.
      axis: the distribution axis or axes, default ``-1``.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergence of each distribution, the shape without ``axis``.

    Matches ``optax.losses.kl_divergence_with_log_targets`` and
    ``torch.nn.functional.kl_div(log_predictions, log_targets, log_target=True, reduction="none").sum(axis)``.
    """
    log_predictions = as_floating(log_predictions, "log_predictions")
    log_targets = as_floating(log_targets, "log_targets")
    return jnp.sum(jnp.exp(log_targets) * (log_targets - log_predictions), axis=axis, where=where)


def generalized_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Generalized KL divergence, for unnormalized nonnegative measures ``t`` and ``q``.

    .. math::

        D(t \\,\\|\\, q) = \\sum_i \\left(t_i \\log \\frac{t_i}{q_i} - t_i + q_i\\right)

    the Bregman divergence of ``f(x) = x log x - x``; it equals :func:`kl_divergence` when both
    sum to one, and is ``>= 0`` with equality only at ``t = q`` in general.

    Args:
      log_predictions: ``log q``, shape ``[..., dim]``, floating.
      targets: ``t >= 0``, broadcastable against ``log_predictions``, floating.
      axis: the axis or axes to sum over, default ``-1``.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergence of each measure, the shape without ``axis``.

    Matches ``optax.losses.generalized_kl_divergence``.

    References:
      Bregman, "The relaxation method of finding the common point of convex sets ...", USSR
      Computational Mathematics and Mathematical Physics, 1967; Boyd & Vandenberghe, "Convex
      Optimization", 2004, p. 90.
    """
    log_predictions = as_floating(log_predictions, "log_predictions")
    targets = as_floating(targets, "targets")
    divergence = kl_divergence(log_predictions, targets, axis=axis, where=where)
    return divergence + jnp.sum(jnp.exp(log_predictions) - targets, axis=axis, where=where)


def convex_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Optax's former name of :func:`generalized_kl_divergence`, kept so ported code runs unchanged.

    .. math::

        D(t \\,\\|\\, q) = \\sum_i \\left(t_i \\log \\frac{t_i}{q_i} - t_i + q_i\\right)

    Args:
      log_predictions: ``log q``, shape ``[..., dim]``, floating.
      targets: ``t >= 0``, broadcastable against ``log_predictions``, floating.
      axis: the axis or axes to sum over, default ``-1``.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergence of each measure, the shape without ``axis``.

    Matches ``optax.losses.convex_kl_divergence`` (deprecated there, with a warning; none here).
    """
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)
