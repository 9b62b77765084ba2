"""Segmentation losses: soft Dice (and Tversky) overlap losses over the spatial axes.

Predictions and targets are ``[batch, *spatial, classes]``; the overlap is summed over the spatial
axes, one Dice loss per example and class, then reduced over the classes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradtx.losses._checks import check_rank, check_same_shape

_REDUCTIONS = ("mean", "sum", "none")


def dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    smooth: ArrayLike = 1.0,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: Any = None,
) -> jax.Array:
    """Soft Dice loss per class, with Tversky weights for false positives and negatives.

    With probabilities ``p`` (softmax of the logits over classes, or sigmoid for one channel) and
    targets ``t``, summed over the spatial axes for each class ``c``:

    .. math::

        I_c = \\sum_i p_{ic} t_{ic}, \\quad P_c = \\sum_i p_{ic}, \\quad T_c = \\sum_i t_{ic},
        \\qquad
        \\ell_c = 1 - \\frac{I_c + s}{I_c + \\alpha (P_c - I_c) + \\beta (T_c - I_c) + s}

    ``alpha = beta = 1/2`` is the Dice loss ``1 - (2 I + 2 s) / (P + T + 2 s)``; other values give
    the Tversky loss (``alpha`` weighs false positives, ``beta`` false negatives).

    Args:
      predictions: logits ``[..., num_classes]`` (or ``[..., 1]`` / ``[...]`` for binary), or
        probabilities with ``apply_softmax=False``.
      targets: one-hot targets of the same shape (a missing channel axis on either is added).
      class_weights: optional weights of the per-class losses, shape ``[num_classes]``.
      smooth: smoothing ``s`` added to numerator and denominator, default ``1.0``.
      alpha: false-positive weight, default ``0.5``.
      beta: false-negative weight, default ``0.5``.
      apply_softmax: turn logits into probabilities (softmax, or sigmoid for one channel),
        default ``True``.
      reduction: ``"mean"`` (default) or ``"sum"`` over the classes, or ``"none"``.
      ignore_background: leave class 0 out, default ``False``.
      axis: the axes to sum over; default ``None``: all but the first and the last.

    Returns:
      Shape ``[batch]`` for ``"mean"``/``"sum"``, ``[batch, num_classes]`` for ``"none"``.

    Raises:
      ValueError: shapes differ, ``class_weights`` is not a vector, ``reduction`` is unknown, or
        (for concrete inputs) ``apply_softmax=False`` with several classes whose probabilities do
        not sum to one.

    Matches ``optax.losses.dice_loss``, except that with ``apply_softmax=False`` and a single
    channel the probabilities are not required to sum to one (Optax requires it, so that
    ``binary_dice_loss(..., apply_sigmoid=False)`` rejects any probability but 1).

    References:
      Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
      Medical Image Segmentation", 3DV 2016; Salehi, Erdogmus & Gholipour, "Tversky loss function
      for image segmentation using 3D fully convolutional deep networks", 2017.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.ndim == targets.ndim - 1:
        predictions = predictions[..., None]
    if targets.ndim == predictions.ndim - 1:
        targets = targets[..., None]
    check_same_shape(targets, predictions, "targets", "predictions")
    if class_weights is not None:
        check_rank(class_weights, 1, "class_weights")
    if apply_softmax:
        probs = jax.nn.sigmoid(predictions) if predictions.shape[-1] == 1 else jax.nn.softmax(predictions, axis=-1)
    else:
        probs = predictions
        if predictions.shape[-1] > 1 and not isinstance(predictions, jax.core.Tracer):
            sums = np.asarray(jnp.sum(predictions, axis=-1))
            if not np.allclose(sums, 1.0, rtol=1e-5):
                raise ValueError(
                    "predictions must be valid probability distributions (summing to 1 over the class axis) when "
                    f"apply_softmax=False; their sums range over [{sums.min():.6f}, {sums.max():.6f}]."
                )
    axis = tuple(range(1, probs.ndim - 1)) if axis is None else axis
    intersection = jnp.sum(probs * targets, axis=axis)
    false_positives = jnp.sum(probs, axis=axis) - intersection
    false_negatives = jnp.sum(targets, axis=axis) - intersection
    loss = 1.0 - (intersection + smooth) / (intersection + alpha * false_positives + beta * false_negatives + smooth)
    if class_weights is not None:
        loss = loss * class_weights
    if ignore_background and probs.shape[-1] > 1:
        loss = loss[..., 1:]
    if reduction == "mean":
        return jnp.mean(loss, axis=-1)
    if reduction == "sum":
        return jnp.sum(loss, axis=-1)
    return loss


def multiclass_generalized_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_softmax: bool = True,
    ignore_background: bool = False,
) -> jax.Array:
    """Dice loss with classes weighted by their inverse squared frequency in the batch, as one scalar.

    .. math::

        w_c \\propto \\frac{1}{F_c^2 + 10^{-7}}, \\quad F_c = \\sum_{b,i} t_{bic}, \\quad
        \\textstyle\\sum_c w_c = C, \\qquad
        \\ell = \\operatorname{mean}_{b,c}\\; w_c\\, \\ell^{\\mathrm{Dice}}_{bc}

    with ``ell^Dice`` the per-class loss of :func:`dice_loss` (``alpha = beta = 1/2``).

    Args:
      predictions: logits (or probabilities), ``[batch, *spatial, num_classes]``.
      targets: one-hot targets of the same shape.
      smooth: smoothing added to numerator and denominator, default ``1.0``.
      apply_softmax: apply a softmax to ``predictions``, default ``True``.
      ignore_background: leave class 0 out of the mean (its weight still counts in the
        normalization), default ``False``.

    Returns:
      A scalar.

    Matches ``optax.losses.multiclass_generalized_dice_loss``: the mean of the weighted per-class
    losses. Sudre et al.'s generalised Dice is instead one ratio of weighted sums,
    ``1 - 2 sum_c w_c I_c / sum_c w_c (P_c + T_c)``; the class weights are theirs.

    References:
      Sudre, Li, Vercauteren, Ourselin & Cardoso, "Generalised Dice overlap as a deep learning loss
      function for highly unbalanced segmentations", DLMIA 2017 (arXiv:1707.03237).
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    check_same_shape(targets, predictions, "targets", "predictions")
    frequencies = jnp.sum(targets, axis=tuple(range(targets.ndim - 1)))
    weights = 1.0 / (frequencies**2 + 1e-7)
    weights = weights / jnp.sum(weights) * weights.shape[0]
    per_class = dice_loss(predictions, targets, class_weights=weights, smooth=smooth, apply_softmax=apply_softmax,
                          reduction="none", ignore_background=ignore_background)
    return jnp.mean(per_class)


def binary_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_sigmoid: bool = True,
) -> jax.Array:
    """Dice loss of one foreground class, with a sigmoid on the logits.

    .. math::

        p = \\sigma(x), \\qquad
        \\ell = 1 - \\frac{2 \\sum_i p_i t_i + 2 s}{\\sum_i p_i + \\sum_i t_i + 2 s}

    summed over all axes but the first (the batch axis).

    Args:
      predictions: logits ``[batch, ...]`` or ``[batch, ..., 1]`` (probabilities with
        ``apply_sigmoid=False``).
      targets: binary targets of the same shape.
      smooth: smoothing ``s``, default ``1.0``.
      apply_sigmoid: apply a sigmoid to ``predictions``, default ``True``.

    Returns:
      The loss of each example, shape ``[batch]``.

    Matches ``optax.losses.binary_dice_loss`` (except that probabilities are accepted with
    ``apply_sigmoid=False``; see :func:`dice_loss`).

    References:
      Milletari, Navab & Ahmadi, "V-Net", 3DV 2016.
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.ndim == targets.ndim and predictions.shape[-1] != 1:
        predictions, targets = predictions[..., None], targets[..., None]
    return dice_loss(predictions, targets, smooth=smooth, apply_softmax=apply_sigmoid, reduction="mean")
