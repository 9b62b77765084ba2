"""Self-supervised and metric-learning losses on embeddings: NT-Xent (SimCLR) and the triplet margin loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gradtx.losses._checks import as_floating, check_rank
from gradtx.losses.regression import cosine_similarity


def ntxent(embeddings: ArrayLike, labels: ArrayLike, temperature: ArrayLike = 0.07) -> jax.Array:
    """Normalized temperature-scaled cross entropy (NT-Xent), averaged over all positive pairs.

    With ``s_ij = cos(e_i, e_j) / temperature``, positives ``P`` the pairs ``i != j`` of equal
    label and ``N(i)`` the items whose label differs from ``i``'s:

    .. math::

        \\ell = \\frac{1}{|P|} \\sum_{(i, j) \\in P}
                -\\log \\frac{e^{s_{ij}}}{e^{s_{ij}} + \\sum_{k \\in N(i)} e^{s_{ik}}}
              = \\frac{1}{|P|} \\sum_{(i, j) \\in P}
                \\operatorname{softplus}\\Big(\\operatorname{logsumexp}_{k \\in N(i)} s_{ik} - s_{ij}\\Big)

    Each positive competes only with the anchor's negatives (not with its other positives). The
    ``logsumexp`` is shifted by its maximum, so small temperatures do not overflow; an anchor
    without negatives contributes ``0``. A batch without positive pairs gives ``nan`` (``0/0``),
    as in Optax.

    Args:
      embeddings: shape ``[batch, dim]``, floating.
      labels: shape ``[batch]``; items with equal labels are positives of each other.
      temperature: ``tau > 0``, default ``0.07``.

    Returns:
      A scalar.

    Raises:
      ValueError: ``embeddings`` not 2-D, or ``labels`` of another length.

    Matches ``optax.losses.ntxent``.

    References:
      Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
      Representations" (SimCLR), ICML 2020 (arXiv:2002.05709).
    """
    embeddings = as_floating(embeddings, "embeddings")
    labels = jnp.asarray(labels)
    check_rank(embeddings, 2, "embeddings")
    if labels.shape[:1] != embeddings.shape[:1]:
        raise ValueError(f"labels must have one entry per embedding ({embeddings.shape[0]}), got shape {labels.shape}.")
    epsilon = jnp.finfo(embeddings.dtype).eps
    similarity = cosine_similarity(embeddings[:, None, :], embeddings[None, :, :], epsilon=epsilon) / temperature
    same_label = labels[:, None] == labels[None, :]
    positives = same_label & ~jnp.eye(labels.shape[0], dtype=bool)
    negatives = ~same_label
    has_negatives = jnp.any(negatives, axis=1, keepdims=True)
    shift = lax.stop_gradient(jnp.where(has_negatives, jnp.max(jnp.where(negatives, similarity, -jnp.inf), axis=1,
                                                                keepdims=True), 0.0))
    # exp(-inf) = 0 for the masked entries, with a zero (not nan) gradient.
    negative_mass = jnp.sum(jnp.exp(jnp.where(negatives, similarity - shift, -jnp.inf)), axis=1, keepdims=True)
    safe_mass = jnp.where(has_negatives, negative_mass, 1.0)
    log_negative_mass = jnp.where(has_negatives, jnp.log(safe_mass) + shift, -jnp.inf)
    per_pair = jax.nn.softplus(log_negative_mass - similarity)
    return jnp.sum(jnp.where(positives, per_pair, 0.0)) / jnp.sum(positives)


def triplet_margin_loss(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike,
    axis: int = -1,
    norm_degree: ArrayLike = 2,
    margin: ArrayLike = 1.0,
    eps: ArrayLike = 1e-6,
) -> jax.Array:
    """Triplet margin loss: the positive must be closer to the anchor than the negative by ``margin``.

    .. math::

        d(a, b) = \\Big(\\sum_i |a_i - b_i|^p + \\epsilon\\Big)^{1/p}, \\qquad
        \\ell = \\max\\big(d(a, x^+) - d(a, x^-) + \\text{margin},\\, 0\\big)

    Args:
      anchors: anchor embeddings ``[batch, dim]``, floating.
      positives: embeddings like the anchors, broadcastable against ``anchors``.
      negatives: embeddings unlike the anchors, broadcastable against ``anchors``.
      axis: the embedding axis, default ``-1``.
      norm_degree: ``p``, default ``2``.
      margin: default ``1.0``.
      eps: added inside the root so its gradient is finite at ``a = b``, default ``1e-6``.

    Returns:
      The loss of each triplet, the shape without ``axis``.

    Matches ``optax.losses.triplet_margin_loss`` for even ``norm_degree`` (2, the default). For odd
    degrees Optax sums ``(a_i - b_i)^p`` without the absolute value, which is not a distance; here
    ``|a_i - b_i|^p`` is used, as in the p-norm of the reference and of
    ``torch.nn.functional.triplet_margin_loss`` (which adds ``eps`` to the difference instead).

    References:
      Balntas, Riba, Ponsa & Mikolajczyk, "Learning local feature descriptors with triplets and
      shallow convolutional neural networks", BMVC 2016; Schroff, Kalenichenko & Philbin, "FaceNet",
      CVPR 2015.
    """
    anchors = as_floating(anchors, "anchors")
    positives = as_floating(positives, "positives")
    negatives = as_floating(negatives, "negatives")

    def distance(other: jax.Array) -> jax.Array:
        return jnp.power(jnp.sum(jnp.power(jnp.abs(anchors - other), norm_degree), axis=axis) + eps, 1 / norm_degree)

    return jnp.maximum(distance(positives) - distance(negatives) + margin, 0)
