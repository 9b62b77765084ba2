"""Classification losses: cross entropies on logits (sigmoid, softmax, focal, poly), hinge and perceptron.

Every loss takes unnormalized ``logits`` (scores) and works in log space: ``log_sigmoid`` and
``log_softmax`` instead of the log of a probability, so large logits neither overflow nor lose the
small probabilities. Losses are returned per example, unreduced: average them yourself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradtx.losses._checks import Axis, as_floating, as_integer, check_same_shape, expand_where, normalize_axes


def sigmoid_binary_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Binary cross entropy on logits, elementwise (independent binary decisions).

    .. math::

        \\ell(x, y) = -y \\log \\sigma(x) - (1 - y) \\log \\sigma(-x),
        \\qquad \\sigma(x) = 1 / (1 + e^{-x})

    ``log sigma(x)`` is computed as ``log_sigmoid(x)``, which stays finite for large ``|x|``.

    Args:
      logits: log-odds of class 1, any shape.
      labels: targets in ``[0, 1]`` (hard ``{0, 1}`` labels or probabilities), broadcastable
        against ``logits``; cast to the dtype of ``logits``.

    Returns:
      The loss of each element, of the broadcast shape of ``logits`` and ``labels``.

    Matches ``optax.losses.sigmoid_binary_cross_entropy`` and
    ``torch.nn.functional.binary_cross_entropy_with_logits(..., reduction="none")``.
    """
    logits = as_floating(logits, "logits")
    labels = jnp.asarray(labels).astype(logits.dtype)
    return -(labels * jax.nn.log_sigmoid(logits)) - (1.0 - labels) * jax.nn.log_sigmoid(-logits)


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
) -> jax.Array:
    """Focal loss: binary cross entropy scaled down on examples that are already classified well.

    .. math::

        p_t = y \\sigma(x) + (1 - y) (1 - \\sigma(x)), \\qquad
        \\ell(x, y) = -\\alpha_t (1 - p_t)^{\\gamma} \\log p_t,
        \\qquad \\alpha_t = \\alpha y + (1 - \\alpha)(1 - y)

    where ``-log p_t`` is :func:`sigmoid_binary_cross_entropy`. The factor is computed in log space,
    ``(1 - p_t)^gamma = exp(gamma log((1 - y) sigma(x) + y sigma(-x)))`` with a weighted
    ``logsumexp`` of ``log_sigmoid(x)`` and ``log_sigmoid(-x)``, so it is exact for large ``|x|``
    and soft labels ``y`` in ``[0, 1]``.

    Args:
      logits: log-odds of class 1, any shape.
      labels: targets in ``[0, 1]``, broadcastable against ``logits``.
      alpha: weight of the positive class in ``(0, 1)``; default ``None`` (no weighting,
        ``alpha_t = 1``).
      gamma: focusing exponent ``gamma >= 0``, default ``2.0`` (``0`` gives the cross entropy).

    Returns:
      The loss of each element, of the broadcast shape.

    Matches ``optax.losses.sigmoid_focal_loss``.

    References:
      Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017
      (arXiv:1708.02002).
    """
    logits = as_floating(logits, "logits")
    labels = jnp.asarray(labels).astype(logits.dtype)
    cross_entropy = sigmoid_binary_cross_entropy(logits, labels)
    log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    terms = jnp.stack(jnp.broadcast_arrays(log_p, log_not_p))
    coefficients = jnp.stack(jnp.broadcast_arrays(1.0 - labels, labels))
    log_one_minus_pt = jax.nn.logsumexp(terms, axis=0, b=coefficients)
    loss = cross_entropy * jnp.exp(gamma * log_one_minus_pt)
    if alpha is None:
        return loss
    return (alpha * labels + (1.0 - alpha) * (1.0 - labels)) * loss


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Cross entropy between target distributions and the softmax of logits.

    .. math::

        \\ell(x, y) = -\\sum_j y_j \\log \\operatorname{softmax}(x)_j
                   = \\operatorname{logsumexp}(x) - \\sum_j y_j x_j \\quad (\\textstyle\\sum_j y_j = 1)

    computed with ``log_softmax``. With ``where``, masked classes are left out of both the softmax
    normaliser and the sum, as if they did not exist. A logit of ``-inf`` with a zero label gives
    ``0 * (-inf) = nan`` here, as in Optax; :func:`safe_softmax_cross_entropy` treats it as ``0``.

    Args:
      logits: unnormalized log-probabilities, shape ``[..., num_classes]``.
      labels: target probabilities (e.g. one-hot), broadcastable against ``logits``.
      axis: the class axis or axes, default ``-1``; ``None`` normalises over all axes.
      where: optional boolean mask of the classes to include, of the shape of ``logits`` or of the
        batch shape (then broadcast along ``axis``).

    Returns:
      The loss of each example, shape ``logits.shape`` without ``axis``.

    Matches ``optax.losses.softmax_cross_entropy`` and
    ``torch.nn.functional.cross_entropy(logits, probabilities, reduction="none")``.
    """
    logits = as_floating(logits, "logits")
    labels = jnp.asarray(labels)
    where = expand_where(where, logits.ndim, axis)
    log_probs = jax.nn.log_softmax(logits, axis=axis, where=where)
    return -jnp.sum(labels * log_probs, axis=axis, where=where)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Softmax cross entropy with the correct class given as an integer index.

    .. math::

        \\ell(x, y) = -\\log \\operatorname{softmax}(x)_y = \\operatorname{logsumexp}_j(x_j) - x_y

    Only the label's logit is subtracted from the normaliser (no full ``log_softmax``), so a
    ``-inf`` logit of another class costs nothing and gives no ``nan``. With several class axes
    (``axis=(2, 3)``), the label is a flat index into the ``logits[..., axis]`` slice, in C order.
    With ``where``, masked classes are left out of the normaliser and an example with no class
    left has loss ``0``.

    Args:
      logits: unnormalized log-probabilities, shape ``[..., num_classes]``.
      labels: integer class indices in ``[0, num_classes)``, of the batch shape (``logits.shape``
        without ``axis``, or broadcastable to it).
      axis: the class axis (int) or axes (tuple), default ``-1``.
      where: optional boolean mask of the classes to include, of the shape of ``logits`` or of the
        batch shape.

    Returns:
      The loss of each example, of the batch shape.

    Raises:
      TypeError: ``labels`` not integer or ``logits`` not floating.
      ValueError: ``axis`` not an int or a tuple, or ``labels`` not of the batch shape.

    Matches ``optax.losses.softmax_cross_entropy_with_integer_labels`` and
    ``torch.nn.functional.cross_entropy(logits, labels, reduction="none")``.
    """
    logits = as_floating(logits, "logits")
    labels = as_integer(labels, "labels")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer, tuple)):
        raise ValueError(f"axis must be an int or a tuple of ints, got {axis!r}.")
    where = expand_where(where, logits.ndim, axis)
    class_axes = normalize_axes(axis, logits.ndim)
    batch_axes = tuple(a for a in range(logits.ndim) if a not in class_axes)
    batch_shape = tuple(logits.shape[a] for a in batch_axes)
    # Class axes last, flattened into one: a label is a flat index into them.
    order = batch_axes + class_axes
    if where is not None:
        where = jnp.transpose(jnp.broadcast_to(where, logits.shape), order).reshape(batch_shape + (-1,))
    logits = jnp.transpose(logits, order).reshape(batch_shape + (-1,))
    try:
        labels = jnp.broadcast_to(labels, batch_shape)
    except ValueError:
        raise ValueError(
            f"labels must have the batch shape {batch_shape} of logits (its shape without axis={axis!r}), "
            f"got {labels.shape}."
        ) from None
    label_logits = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    loss = jax.nn.logsumexp(logits, axis=-1, where=where) - label_logits
    if where is not None:
        loss = jnp.where(jnp.any(where, axis=-1), loss, 0.0)
    return loss


@jax.custom_jvp
def _weighted_log_softmax(x: jax.Array, weights: jax.Array) -> jax.Array:
    """``weights * log_softmax(x)`` over the last axis, with ``0 * log 0 = 0`` where ``weights == 0``."""
    log_probs = jax.nn.log_softmax(x, axis=-1)
    return jnp.where(weights != 0, weights * log_probs, 0.0)


@_weighted_log_softmax.defjvp
def _weighted_log_softmax_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    # d(w_i log p_i) = w_i (dx_i - <p, dx>) + dw_i log p_i. The formula is written out so that the
    # -inf logits of zero-weight classes never meet a zero and make a nan.
    x, weights = primals
    dx, dweights = tangents
    log_probs = jax.nn.log_softmax(x, axis=-1)
    out = jnp.where(weights != 0, weights * log_probs, 0.0)
    mean_dx = jnp.sum(jax.nn.softmax(x, axis=-1) * dx, axis=-1, keepdims=True)
    return out, weights * (dx - mean_dx) + dweights * log_probs


def safe_softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Softmax cross entropy that reads ``0 log 0`` as ``0``: ``-inf`` logits with zero labels are allowed.

    .. math::

        \\ell(x, y) = -\\sum_{j:\\, y_j \\neq 0} y_j \\log \\operatorname{softmax}(x)_j

    The gradient is written out, ``d ell / d x = (sum_j y_j) softmax(x) - y``, so classes masked
    by a ``-inf`` logit get a zero gradient rather than ``nan``.

    Args:
      logits: unnormalized log-probabilities, shape ``[..., num_classes]`` (class axis last).
      labels: target probabilities, broadcastable to ``logits``.

    Returns:
      The loss of each example, shape ``logits.shape[:-1]``.

    Matches ``optax.losses.safe_softmax_cross_entropy``.
    """
    logits = as_floating(logits, "logits")
    labels = jnp.asarray(labels)
    logits, labels = jnp.broadcast_arrays(logits, labels.astype(jnp.result_type(labels, logits)))
    return -jnp.sum(_weighted_log_softmax(logits, labels), axis=-1)


def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Poly-1 loss: softmax cross entropy plus ``epsilon`` times the first polynomial term.

    Expanding the cross entropy in powers of ``1 - P_t`` (``P_t`` the target-weighted probability)
    gives ``-log P_t = sum_j (1 - P_t)^j / j``; Poly-1 raises the first coefficient by ``epsilon``:

    .. math::

        \\ell(x, y) = -\\sum_j y_j \\log \\operatorname{softmax}(x)_j
                     + \\epsilon \\sum_j y_j (1 - \\operatorname{softmax}(x)_j)

    Args:
      logits: unnormalized log-probabilities, shape ``[..., num_classes]``.
      labels: target probabilities (floating), broadcastable against ``logits``.
      epsilon: coefficient of the first polynomial term, default ``2.0`` (the paper's value for
        ImageNet classification; ``-1.0`` for detection).
      axis: the class axis or axes, default ``-1``.
      where: optional boolean mask of the classes to include, as in :func:`softmax_cross_entropy`.

    Returns:
      The loss of each example, shape ``logits.shape`` without ``axis``.

    Matches ``optax.losses.poly_loss_cross_entropy`` (which takes ``where`` only of the shape of
    ``logits``; a batch-shaped mask is broadcast along ``axis`` here too).

    References:
      Leng, Xu, Tan, Tan, Cheng, Shi, Anguelov & Chen, "PolyLoss: A Polynomial Expansion
      Perspective of Classification Loss Functions", ICLR 2022 (arXiv:2204.12511).
    """
    logits = as_floating(logits, "logits")
    labels = as_floating(labels, "labels")
    where = expand_where(where, logits.ndim, axis)
    probs = jax.nn.softmax(logits, axis=axis, where=where)
    one_minus_pt = jnp.sum(labels * (1.0 - probs), axis=axis, where=where)
    return softmax_cross_entropy(logits, labels, axis=axis, where=where) + epsilon * one_minus_pt


def hinge_loss(predictor_outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Binary hinge loss ``max(0, 1 - y f)`` for targets ``y`` in ``{-1, 1}``, elementwise.

    .. math::

        \\ell(f, y) = \\max(0,\\, 1 - y f)

    Args:
      predictor_outputs: decision function values ``f``.
      targets: targets ``y`` in ``{-1, 1}``, broadcastable against ``predictor_outputs``.

    Returns:
      The loss of each element.

    Matches ``optax.losses.hinge_loss``. Reference: Cortes & Vapnik, "Support-vector networks", 1995.
    """
    return jnp.maximum(0, 1 - jnp.asarray(predictor_outputs) * jnp.asarray(targets))


def perceptron_loss(predictor_outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Binary perceptron loss ``max(0, -y f)`` for targets ``y`` in ``{-1, 1}``, elementwise.

    .. math::

        \\ell(f, y) = \\max(0,\\, -y f)

    Args:
      predictor_outputs: scores ``f``.
      targets: targets ``y`` in ``{-1, 1}``, of the shape of ``predictor_outputs``.

    Returns:
      The loss of each element.

    Raises:
      ValueError: ``targets`` and ``predictor_outputs`` differ in shape.

    Matches ``optax.losses.perceptron_loss``. Reference: Rosenblatt, "The perceptron", 1958.
    """
    check_same_shape(targets, predictor_outputs, "targets", "predictor_outputs")
    return jnp.maximum(0, -jnp.asarray(predictor_outputs) * jnp.asarray(targets))


def _label_scores(scores: jax.Array, labels: jax.Array) -> jax.Array:
    labels = as_integer(labels, "labels")
    if labels.shape != scores.shape[:-1]:
        raise ValueError(f"labels must have the shape {scores.shape[:-1]} of scores without the class axis, "
                         f"got {labels.shape}.")
    return jnp.take_along_axis(scores, labels[..., None], axis=-1)[..., 0]


def multiclass_hinge_loss(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Multiclass hinge loss (Crammer & Singer): the largest margin violation over wrong classes.

    .. math::

        \\ell(s, y) = \\max_k \\left(s_k + 1 - [k = y]\\right) - s_y

    which is ``max(0, 1 + max_{k != y} s_k - s_y)``.

    Args:
      scores: scores of shape ``[..., num_classes]``.
      labels: integer labels of shape ``scores.shape[:-1]``.

    Returns:
      The loss of each example, shape ``scores.shape[:-1]``.

    Matches ``optax.losses.multiclass_hinge_loss``.

    References:
      Crammer & Singer, "On the Algorithmic Implementation of Multiclass Kernel-based Vector
      Machines", JMLR 2001.
    """
    scores = jnp.asarray(scores)
    label_scores = _label_scores(scores, labels)
    margins = 1.0 - jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    return jnp.max(scores + margins, axis=-1) - label_scores


def multiclass_perceptron_loss(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Multiclass perceptron loss: how far the best score is above the label's score.

    .. math::

        \\ell(s, y) = \\max_k s_k - s_y

    Args:
      scores: scores of shape ``[..., num_classes]``.
      labels: integer labels of shape ``scores.shape[:-1]``.

    Returns:
      The loss of each example, shape ``scores.shape[:-1]``.

    Matches ``optax.losses.multiclass_perceptron_loss``.

    References:
      Collins, "Discriminative Training Methods for Hidden Markov Models: Theory and Experiments
      with Perceptron Algorithms", EMNLP 2002.
    """
    scores = jnp.asarray(scores)
    return jnp.max(scores, axis=-1) - _label_scores(scores, labels)
