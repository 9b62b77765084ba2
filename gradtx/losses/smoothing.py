"""Label smoothing: mixing one-hot targets with the uniform distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradtx.losses._checks import Axis, as_floating


def smooth_labels(
    labels: ArrayLike,
    alpha: ArrayLike,
    *,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Label smoothing: moves a fraction ``alpha`` of each target's mass to the uniform distribution.

    .. math::

        \\tilde y = (1 - \\alpha)\\, y + \\alpha / K

    with ``K`` the number of classes along ``axis`` (or, with ``where``, the number of included
    classes of each example). Used with a cross entropy, it keeps logit gaps small and the model
    better calibrated.

    Args:
      labels: one-hot (or probability) targets, floating.
      alpha: the smoothing factor in ``[0, 1]``.
      axis: the class axis or axes, default ``-1``; ``None`` for all.
      where: optional boolean mask of the classes to count in ``K`` (masked entries are smoothed
        too; mask them in the loss).

    Returns:
      The smoothed targets, shape ``labels.shape``.

    Matches ``optax.losses.smooth_labels``.

    References:
      Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for
      Computer Vision", CVPR 2016; Müller, Kornblith & Hinton, "When Does Label Smoothing Help?",
      NeurIPS 2019 (arXiv:1906.02629).
    """
    labels = as_floating(labels, "labels")
    if where is None:
        axes = range(labels.ndim) if axis is None else np.atleast_1d(axis)
        num_classes = int(np.prod([labels.shape[a] for a in axes]))
    else:
        num_classes = jnp.sum(jnp.asarray(where), axis=axis, keepdims=True)
    return (1.0 - alpha) * labels + alpha / num_classes
