"""Connectionist temporal classification (CTC): the forward algorithm of Graves et al. (2006), in log space.

A labelling ``l = (l_1, ..., l_L)`` is read off a frame-wise path by merging repeats and then
removing blanks. The loss is ``-log p(l | x)``, the sum over all paths that read ``l``, computed
by dynamic programming over the extended labelling ``l' = (b, l_1, b, l_2, ..., b, l_L, b)``
(``S = 2L + 1`` positions, ``b`` the blank):

    alpha_t(s) = y_t(l'_s) * (alpha_{t-1}(s) + alpha_{t-1}(s - 1) + [skip allowed] alpha_{t-1}(s - 2))

where the skip over a blank is allowed into a label position whose label differs from the one
two positions back (a repeated label needs a blank between its copies), and
``p(l | x) = alpha_T(S - 1) + alpha_T(S - 2)``. Everything here is the logarithm of these
quantities, with ``log_epsilon`` (default ``-1e5``) standing for ``log 0`` so that no ``-inf``
enters a ``logaddexp`` and gradients stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.losses._checks import as_floating, check_rank, check_same_shape


def ctc_loss_with_forward_probs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CTC loss and the forward variables, split into blank and label positions.

    With ``log y_t(k) = log_softmax(logits[b, t])_k`` and ``alpha`` the forward variables of the
    module docstring (``alpha_0`` puts all mass on the first blank, before the first frame):

    .. math::

        \\log\\alpha_t(s) = \\log y_t(l'_s) + \\operatorname{logsumexp}\\big(\\log\\alpha_{t-1}(s),\\,
            \\log\\alpha_{t-1}(s-1),\\, \\log\\alpha_{t-1}(s-2) + \\log \\mathbb{1}[\\text{skip}]\\big),
        \\qquad
        \\ell = -\\operatorname{logsumexp}\\big(\\log\\alpha_T(2L), \\log\\alpha_T(2L-1)\\big)

    A padded frame leaves ``alpha`` unchanged. The returned forward variables are
    ``log alpha_t(2n)`` ("blank after ``n`` labels") and ``log alpha_t(2n + 1)`` ("label ``n``
    emitted at frame ``t``"); in the last frame the blank ones also absorb the label before them,
    ``logsumexp(log alpha_T(2n), log alpha_T(2n - 1))``, so that the loss of a labelling of length
    ``L`` is ``-logalpha_blank[-1, b, L]``. Unreachable states hold values near ``log_epsilon``.

    Args:
      logits: ``[B, T, K]`` unnormalized log-probabilities of the ``K`` classes (blank included).
      logit_paddings: ``[B, T]``, ``1.0`` for padded frames, ``0.0`` otherwise.
      labels: ``[B, N]`` integer labels, right-padded.
      label_paddings: ``[B, N]``, ``1.0`` for padded labels (a run of zeros, then ones).
      blank_id: the blank's class index, default ``0``.
      log_epsilon: the stand-in for ``log 0``, default ``-1e5``. An impossible labelling (more
        labels and required blanks than frames) gets a loss of that order instead of ``inf``.

    Returns:
      ``(loss, logalpha_blank, logalpha_nonblank)``: the loss of each sequence ``[B]``, and the
      forward variables ``[T, B, N + 1]`` and ``[T, B, N]``.

    Raises:
      ValueError: wrong ranks, padding shapes that differ from ``labels`` / ``logits[..., 0]``,
        or different batch sizes.

    Matches ``optax.losses.ctc_loss_with_forward_probs`` (same loss and, on reachable states, the
    same forward variables) and ``torch.nn.functional.ctc_loss`` for possible labellings.

    References:
      Graves, Fernández, Gomez & Schmidhuber, "Connectionist Temporal Classification: Labelling
      Unsegmented Sequence Data with Recurrent Neural Networks", ICML 2006.
    """
    logits = as_floating(logits, "logits")
    labels, label_paddings, logit_paddings = map(jnp.asarray, (labels, label_paddings, logit_paddings))
    check_rank(logits, 3, "logits")
    check_rank(labels, 2, "labels")
    check_same_shape(label_paddings, labels, "label_paddings", "labels")
    check_same_shape(logit_paddings, logits[..., 0], "logit_paddings", "logits[..., 0]")
    batch_size, _, num_classes = logits.shape
    if labels.shape[0] != batch_size:
        raise ValueError(f"labels must have the batch size {batch_size} of logits, got shape {labels.shape}.")
    max_label_length = labels.shape[1]
    num_states = 2 * max_label_length + 1
    dtype = logits.dtype
    log_zero = jnp.asarray(log_epsilon, dtype)

    log_probs = jax.nn.log_softmax(logits, axis=-1)
    label_lengths = max_label_length - jnp.sum(label_paddings, axis=1).astype(jnp.int32)
    labels = labels.astype(jnp.int32)
    extended = jnp.full((batch_size, num_states), blank_id, jnp.int32).at[:, 1::2].set(labels)
    # y_t(l'_s) for every frame and position, [T, B, S]. A label id outside [0, K) (padding) emits
    # with log-probability 0, so nothing there is nan.
    in_range = (extended >= 0) & (extended < num_classes)
    emissions = jnp.take_along_axis(log_probs, jnp.clip(extended, 0, num_classes - 1)[:, None, :], axis=2)
    emissions = jnp.transpose(jnp.where(in_range[:, None, :], emissions, 0.0), (1, 0, 2))

    position = jnp.arange(num_states)
    differs_from_two_back = jnp.concatenate(
        [jnp.zeros((batch_size, 2), bool), extended[:, 2:] != extended[:, :-2]], axis=1)
    skip_allowed = (position % 2 == 1) & differs_from_two_back
    skip_log_weight = jnp.where(skip_allowed, 0.0, log_zero).astype(dtype)
    pad_one, pad_two = jnp.full((batch_size, 1), log_zero, dtype), jnp.full((batch_size, 2), log_zero, dtype)

    def frame(log_alpha: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        emission, padded = inputs
        from_previous = jnp.concatenate([pad_one, log_alpha[:, :-1]], axis=1)
        from_two_back = jnp.concatenate([pad_two, log_alpha[:, :-2]], axis=1) + skip_log_weight
        new = emission + jnp.logaddexp(jnp.logaddexp(log_alpha, from_previous), from_two_back)
        new = jnp.where(padded[:, None] > 0, log_alpha, new)
        return new, new

    log_alpha_0 = jnp.full((batch_size, num_states), log_zero, dtype).at[:, 0].set(0.0)
    _, log_alpha = jax.lax.scan(frame, log_alpha_0, (emissions, jnp.transpose(logit_paddings).astype(dtype)))
    log_alpha_blank, log_alpha_label = log_alpha[:, :, 0::2], log_alpha[:, :, 1::2]
    last_blank = jnp.concatenate(
        [log_alpha_blank[-1, :, :1], jnp.logaddexp(log_alpha_blank[-1, :, 1:], log_alpha_label[-1])], axis=1)
    log_alpha_blank = log_alpha_blank.at[-1].set(last_blank)
    loss = -jnp.take_along_axis(last_blank, label_lengths[:, None], axis=1)[:, 0]
    return loss, log_alpha_blank, log_alpha_label


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> jax.Array:
    """CTC loss ``-log p(labels | logits)`` of each sequence (Graves et al. 2006).

    .. math::

        \\ell = -\\log \\sum_{\\pi \\in \\mathcal{B}^{-1}(l)} \\prod_{t=1}^{T} y_t(\\pi_t)

    over the frame-wise paths ``pi`` that read the labelling ``l`` once repeats are merged and
    blanks removed, computed by :func:`ctc_loss_with_forward_probs`.

    Args:
      logits: ``[B, T, K]`` unnormalized log-probabilities (blank included).
      logit_paddings: ``[B, T]``, ``1.0`` for padded frames.
      labels: ``[B, N]`` integer labels, right-padded.
      label_paddings: ``[B, N]``, ``1.0`` for padded labels.
      blank_id: the blank's class index, default ``0``.
      log_epsilon: the stand-in for ``log 0``, default ``-1e5``.

    Returns:
      The loss of each sequence, shape ``[B]`` (not divided by the label length).

    Matches ``optax.losses.ctc_loss`` and ``torch.nn.functional.ctc_loss(log_softmax(logits),
    ..., reduction="none")`` for possible labellings.
    """
    loss, _, _ = ctc_loss_with_forward_probs(
        logits, logit_paddings, labels, label_paddings, blank_id=blank_id, log_epsilon=log_epsilon)
    return loss
