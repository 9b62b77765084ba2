"""Listwise ranking losses: a cost of the ranking that item scores induce, against relevance labels.

The last axis holds the items of one list; leading axes are batch axes. Lists may be padded, with
``where`` marking the valid items.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.losses._checks import as_floating


def _reduce(loss: jax.Array, where: jax.Array | None, reduce_fn: Callable[..., ArrayLike] | None) -> jax.Array:
    """Reduces the per-list losses over the valid lists; an empty mean is 0, not nan."""
    if reduce_fn is None:
        return loss if where is None else jnp.where(where, loss, 0.0)
    reduced = reduce_fn(loss, where=where)
    if reduce_fn is jnp.mean:
        # Only the nan of a mean over no valid list becomes 0: a nan in the losses themselves stays.
        reduced = jnp.where(jnp.isnan(reduced) & ~jnp.any(jnp.isnan(loss)), 0.0, reduced)
    return reduced


def ranking_softmax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduce_fn: Callable[..., ArrayLike] | None = jnp.mean,
) -> jax.Array:
    """Listwise softmax loss: cross entropy between relevance labels and the softmax of the scores.

    .. math::

        \\ell(s, y) = -\\sum_i w_i y_i \\log \\frac{\\exp s_i}{\\sum_{j \\in V} \\exp s_j},
        \\qquad i \\in V

    over the valid items ``V`` of each list (all of them without ``where``). The labels are not
    normalized (ListNet-style losses normalize them; this one, like Optax's, does not).

    Args:
      logits: item scores, shape ``[..., list_size]``, floating.
      labels: relevance labels, shape ``[..., list_size]``; cast to the dtype of ``logits``.
      where: optional boolean mask of the valid items. A list with no valid item has loss ``0``
        and is left out of the reduction.
      weights: optional per-item weights ``w``, shape ``[..., list_size]``.
      reduce_fn: how to reduce the per-list losses: ``jnp.mean`` (default), ``jnp.sum``, or
        ``None`` for no reduction. It is called as ``reduce_fn(loss, where=valid_lists)``.

    Returns:
      The reduced loss, or the loss of each list (shape ``logits.shape[:-1]``) with ``reduce_fn=None``.

    Matches ``optax.losses.ranking_softmax_loss``.

    References:
      Cao, Qin, Liu, Tsai & Li, "Learning to Rank: From Pairwise Approach to Listwise Approach"
      (ListNet), ICML 2007; Bruch, Wang, Bendersky & Najork, "An Analysis of the Softmax Cross
      Entropy Loss for Learning-to-Rank with Binary Relevance", ICTIR 2019.
    """
    logits = as_floating(logits, "logits")
    labels = jnp.asarray(labels).astype(logits.dtype)
    if where is not None:
        where = jnp.asarray(where)
        labels = jnp.where(where, labels, 0.0)
        logits = jnp.where(where, logits, -jnp.inf)
    if weights is not None:
        labels = labels * weights
    loss = -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1, where=where)
    valid_lists = None if where is None else jnp.any(where, axis=-1)
    return _reduce(loss, valid_lists, reduce_fn)
