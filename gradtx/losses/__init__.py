"""gradtx.losses: the loss functions of ``optax.losses``, with Optax's names, arguments and defaults.

Losses are plain functions of arrays, returned per example (unreduced, except where Optax
reduces: ``ntxent``, ``ranking_softmax_loss``, the Dice losses); average them yourself::

    import jax
    from gradtx import losses

    def loss_fn(params, x, y):
        logits = x @ params["w"] + params["b"]
        return losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss_fn)(params, x, y)

Modules by family: ``classification`` (sigmoid, softmax, focal, poly, hinge, perceptron),
``regression`` (squared error, Huber, log-cosh, cosine), ``divergences`` (Kullback-Leibler),
``fenchel_young`` (sparsemax and the generic construction), ``ctc``, ``self_supervised``
(NT-Xent, triplet), ``segmentation`` (Dice), ``ranking`` and ``smoothing``.
"""

from gradtx.losses import (
    classification,
    ctc,
    divergences,
    fenchel_young,
    ranking,
    regression,
    segmentation,
    self_supervised,
    smoothing,
)
from gradtx.losses.classification import (
    hinge_loss,
    multiclass_hinge_loss,
    multiclass_perceptron_loss,
    perceptron_loss,
    poly_loss_cross_entropy,
    safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
)
from gradtx.losses.ctc import ctc_loss, ctc_loss_with_forward_probs
from gradtx.losses.divergences import (
    convex_kl_divergence,
    generalized_kl_divergence,
    kl_divergence,
    kl_divergence_with_log_targets,
)
from gradtx.losses.fenchel_young import make_fenchel_young_loss, multiclass_sparsemax_loss, sparsemax_loss
from gradtx.losses.ranking import ranking_softmax_loss
from gradtx.losses.regression import cosine_distance, cosine_similarity, huber_loss, l2_loss, log_cosh, squared_error
from gradtx.losses.segmentation import binary_dice_loss, dice_loss, multiclass_generalized_dice_loss
from gradtx.losses.self_supervised import ntxent, triplet_margin_loss
from gradtx.losses.smoothing import smooth_labels

__all__ = [
    "binary_dice_loss",
    "classification",
    "convex_kl_divergence",
    "cosine_distance",
    "cosine_similarity",
    "ctc",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "dice_loss",
    "divergences",
    "fenchel_young",
    "generalized_kl_divergence",
    "hinge_loss",
    "huber_loss",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "l2_loss",
    "log_cosh",
    "make_fenchel_young_loss",
    "multiclass_generalized_dice_loss",
    "multiclass_hinge_loss",
    "multiclass_perceptron_loss",
    "multiclass_sparsemax_loss",
    "ntxent",
    "perceptron_loss",
    "poly_loss_cross_entropy",
    "ranking",
    "ranking_softmax_loss",
    "regression",
    "safe_softmax_cross_entropy",
    "segmentation",
    "self_supervised",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_labels",
    "smoothing",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "sparsemax_loss",
    "squared_error",
    "triplet_margin_loss",
]
