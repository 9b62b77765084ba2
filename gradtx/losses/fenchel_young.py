"""Fenchel-Young losses: the generic construction and its sparsemax instances.

A regularized max ``Omega*(s) = max_{p in simplex} <p, s> - Omega(p)`` defines the loss
``Omega*(s) - <y, s> + Omega(y)``, whose gradient is ``argmax - y``. ``logsumexp`` (``Omega`` the
negative entropy) gives the softmax cross entropy; the Gini negentropy gives the sparsemax loss,
whose prediction is the Euclidean projection of ``s`` on the simplex and may be exactly sparse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.losses._checks import as_integer


def make_fenchel_young_loss(max_fun: Callable[..., ArrayLike]) -> Callable[..., jax.Array]:
    """Builds the Fenchel-Young loss of a regularized max function, over the last axis.

    .. math::

        \\ell(s, y) = \\Omega^*(s) - \\langle y, s \\rangle, \\qquad
        \\Omega^*(s) = \\max_{p} \\langle p, s \\rangle - \\Omega(p)

    (the constant ``Omega(y)`` is left out, as in Optax, so the loss is not zero at its minimum
    unless ``Omega(y) = 0``: for one-hot ``y`` and ``max_fun = logsumexp`` it is the softmax cross
    entropy exactly).

    Args:
      max_fun: ``Omega*``, a function of one vector (``[n] -> []``), e.g.
        ``jax.scipy.special.logsumexp``. Extra positional and keyword arguments given to the loss
        are passed on to it unchanged.

    Returns:
      ``loss(scores, targets, *args, **kwargs)``: ``scores`` and ``targets`` of shape
      ``[..., n]`` (broadcastable against each other), the loss of shape ``[...]``. Leading axes
      are batch axes (``max_fun`` is vectorized over them), not flattened into one vector.

    Matches ``optax.losses.make_fenchel_young_loss``.

    References:
      Blondel, Martins & Niculae, "Learning with Fenchel-Young Losses", JMLR 2020
      (arXiv:1901.02324).
    """

    def fenchel_young_loss(scores: ArrayLike, targets: ArrayLike, *args: Any, **kwargs: Any) -> jax.Array:
        scores, targets = jnp.asarray(scores), jnp.asarray(targets)
        regularized_max = jnp.vectorize(lambda s: max_fun(s, *args, **kwargs), signature="(n)->()")
        return regularized_max(scores) - jnp.sum(targets * scores, axis=-1)

    return fenchel_young_loss


def sparsemax_loss(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Binary sparsemax loss: zero exactly when ``sparse_sigmoid(logits)`` equals the label.

    With ``z = -x`` for label ``1`` and ``z = x`` for label ``0``, the loss is the "sparse plus"
    of ``z``, a piecewise-quadratic softplus:

    .. math::

        \\ell(x, y) = \\operatorname{sparseplus}(z) =
        \\begin{cases} 0 & z \\le -1 \\\\ (z + 1)^2 / 4 & -1 < z < 1 \\\\ z & z \\ge 1 \\end{cases}

    Args:
      logits: scores ``x``, any shape.
      labels: labels in ``{0, 1}`` (truthy means ``1``), broadcastable against ``logits``.

    Returns:
      The loss of each element.

    Matches ``optax.losses.sparsemax_loss``.

    References:
      Blondel, Martins & Niculae, "Learning with Fenchel-Young Losses", JMLR 2020, Sec. 4.4.
    """
    logits = jnp.asarray(logits)
    return jax.nn.sparse_plus(jnp.where(jnp.asarray(labels), -logits, logits))


@jax.custom_jvp
def _sparsemax(scores: jax.Array) -> jax.Array:
    """Euclidean projection of each ``scores[..., :]`` on the probability simplex."""
    # p = max(s - tau, 0); with s sorted down, the support is the k largest, k the largest index with
    # 1 + k s_(k) > sum_{j <= k} s_(j), and tau = (sum_{j <= k} s_(j) - 1) / k.
    sorted_scores = jnp.flip(jnp.sort(scores, axis=-1), axis=-1)
    partial_sums = jnp.cumsum(sorted_scores, axis=-1)
    ranks = jnp.arange(1, scores.shape[-1] + 1, dtype=scores.dtype)
    support_size = jnp.sum(1 + ranks * sorted_scores > partial_sums, axis=-1, keepdims=True)
    tau = (jnp.take_along_axis(partial_sums, support_size - 1, axis=-1) - 1) / support_size.astype(scores.dtype)
    return jnp.maximum(scores - tau, 0)


@_sparsemax.defjvp
def _sparsemax_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    # The Jacobian is diag(m) - m m^T / |S|, m the support indicator (Martins & Astudillo 2016, Prop. 2).
    (scores,), (d_scores,) = primals, tangents
    probs = _sparsemax(scores)
    support = (probs > 0).astype(scores.dtype)
    mean_on_support = jnp.sum(support * d_scores, axis=-1, keepdims=True) / jnp.sum(support, axis=-1, keepdims=True)
    return probs, support * (d_scores - mean_on_support)


def multiclass_sparsemax_loss(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Multiclass sparsemax loss: the Fenchel-Young loss of the Gini negentropy.

    With ``p = sparsemax(s)``, the Euclidean projection of the scores on the simplex,

    .. math::

        \\ell(s, y) = \\langle p, s - s_y \\rangle + \\tfrac12 (1 - \\|p\\|^2)
                   = -s_y + \\tfrac12 \\sum_{j \\in S(s)} (s_j^2 - \\tau^2) + \\tfrac12

    which is ``>= 0``, zero exactly when ``p`` is the one-hot of ``y``, and has gradient
    ``p - onehot(y)``. The scores are shifted by ``s_y`` before the inner product, so large scores
    cancel exactly; only coordinates in the support enter it.

    Args:
      scores: scores of shape ``[..., num_classes]``.
      labels: integer labels of shape ``scores.shape[:-1]``.

    Returns:
      The loss of each example, shape ``scores.shape[:-1]``.

    Matches ``optax.losses.multiclass_sparsemax_loss`` (which takes exactly one batch axis; any
    number of leading axes work here).

    References:
      Martins & Astudillo, "From Softmax to Sparsemax: A Sparse Model of Attention and
      Multi-Label Classification", ICML 2016 (arXiv:1602.02068).
    """
    scores = jnp.asarray(scores)
    labels = as_integer(labels, "labels")
    if labels.shape != scores.shape[:-1]:
        raise ValueError(f"labels must have the shape {scores.shape[:-1]} of scores without the class axis, "
                         f"got {labels.shape}.")
    probs = _sparsemax(scores)
    shifted = scores - jnp.take_along_axis(scores, labels[..., None], axis=-1)
    inner = jnp.sum(probs * jnp.where(probs > 0, shifted, 0.0), axis=-1)
    return inner + 0.5 * (1.0 - jnp.sum(probs * probs, axis=-1))
