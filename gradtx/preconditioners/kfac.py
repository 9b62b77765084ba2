"""K-FAC: Kronecker-factored approximate curvature for dense and convolutional layers.

Martens & Grosse (2015) approximate the Fisher block of a layer ``s = W^T a`` by
``A (x) G`` with ``A = E[a a^T]`` (input activations, a homogeneous 1 appended for the bias) and
``G = E[Ds Ds^T]`` (gradients of the log-likelihood with respect to the pre-activations ``s``,
with targets drawn from the model), and precondition the layer's gradient by
``(A + pi sqrt(lambda) I)^{-1} J (G + sqrt(lambda)/pi I)^{-1}``. Grosse & Martens (2016, KFC)
extend it to convolutions, summing ``A`` over the output locations and averaging ``G`` over them.

The layer structure comes from the model: write the loss with :func:`kfac_dense` and
:func:`kfac_conv` for the layers to precondition and :func:`kfac_softmax_cross_entropy` or
:func:`kfac_squared_error` for the loss. Outside :func:`kfac_statistics` they are ordinary
functions (``jax.grad`` of the same loss works unchanged); inside it, each layer adds a zero
perturbation ``e`` to its output and records its input, so that ``d loss / d e`` gives the
pre-activation gradients in the same backward pass as the parameter gradients::

    def loss_fn(params, x, y):
        h = jax.nn.relu(gradtx.kfac_dense(x, params["w1"], params["b1"]))
        return gradtx.kfac_softmax_cross_entropy(gradtx.kfac_dense(h, params["w2"], params["b2"]), y)

    layers = gradtx.kfac_layers(loss_fn, params, x, y)      # which leaves form which layer
    statistics = gradtx.kfac_statistics(loss_fn)             # (params, *args, key=) -> (loss, grads, factors)
    tx = gradtx.kfac(1e-2, layers)
    state = tx.init(params)
    loss, grads, factors = statistics(params, x, y, key=key)
    updates, state = tx.update(grads, state, params, kfac_factors=factors)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, PyTree, ScalarOrSchedule, identity, value_at
from gradtx.combinators import chain, masked
from gradtx.momentum import trace
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    check_float_leaves,
    check_trees_match,
    check_updates_match_params,
    path_to_str,
    saturating_increment,
    zero_step_count,
)
from gradtx.validation import check_decay, check_non_negative, check_schedule_arguments, check_state_type

_FISHER_MODES = ("sampled", "exact", "empirical")
_CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


class KfacLayer(NamedTuple):
    """A layer that K-FAC preconditions: its kind (``"dense"`` or ``"conv"``) and the key paths
    (``jax.tree_util.keystr``, e.g. ``"['dense']"``) of its weight leaf and of its bias leaf (or
    ``None``). :func:`kfac_layers` finds them; they can also be written by hand."""

    kind: str
    weight: str
    bias: str | None = None


class KfacFactors(NamedTuple):
    """The two Kronecker factors of one layer: ``activations`` ``A`` (input side, the bias row
    last) and ``gradients`` ``G`` (output side). Also used for their damped inverses."""

    activations: jax.Array
    gradients: jax.Array


# ---------------------------------------------------------------------------------------------
# Collecting the statistics: the tagged layers and losses, and the recorder they report to.


class _Recorder:
    """Trace-time bookkeeping of one :func:`kfac_statistics` (or :func:`kfac_layers`) call."""

    def __init__(self, params: PyTree, perturbations: Mapping[str, jax.Array] | None, fisher: str, key: Any):
        self.paths = {id(leaf): path_to_str(path) for path, leaf in jax.tree.leaves_with_path(params)}
        self.perturbations = perturbations
        self.fisher = fisher
        self.key = key
        self.layers: dict[str, KfacLayer] = {}
        self.outputs: dict[str, jax.ShapeDtypeStruct] = {}
        self.activations: dict[str, jax.Array] = {}
        self.curvature_losses: list[jax.Array] = []

    def path(self, leaf: Any, role: str, function: str) -> str:
        path = self.paths.get(id(leaf))
        if path is None:
            raise ValueError(
                f"{function}: its {role} is not a leaf of the params given to kfac_statistics/kfac_layers. "
                "Pass the parameter itself (params['...']), not a reshaped, cast or computed copy, so that "
                "K-FAC knows which leaf the layer's factors precondition."
            )
        return path

    def register(self, layer: KfacLayer, activations: jax.Array, outputs: jax.Array) -> jax.Array:
        if layer.weight in self.layers:
            raise ValueError(
                f"K-FAC: the weight {layer.weight} is used by two tagged layers; shared weights are not supported."
            )
        self.layers[layer.weight] = layer
        self.outputs[layer.weight] = jax.ShapeDtypeStruct(outputs.shape, outputs.dtype)
        self.activations[layer.weight] = jax.lax.stop_gradient(activations)
        if self.perturbations is None:
            return outputs
        return outputs + self.perturbations[layer.weight]

    def next_key(self) -> jax.Array:
        if self.key is None:
            raise ValueError("kfac_statistics(fisher='sampled') needs a PRNG key: call it with key=...")
        self.key, key = jax.random.split(self.key)
        return key


_RECORDERS: list[_Recorder] = []


@contextlib.contextmanager
def _recording(recorder: _Recorder) -> Iterator[_Recorder]:
    _RECORDERS.append(recorder)
    try:
        yield recorder
    finally:
        _RECORDERS.pop()


def _with_bias_column(a: jax.Array, bias: jax.Array | None) -> jax.Array:
    if bias is None:
        return a
    return jnp.concatenate([a, jnp.ones(a.shape[:-1] + (1,), a.dtype)], axis=-1)


def kfac_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """A dense layer ``s = x W + b`` that K-FAC preconditions.

    ``x`` is ``(batch, ..., d_in)``, ``kernel`` ``W`` is ``(d_in, d_out)`` and ``bias`` ``(d_out,)``
    or ``None``; the batch axis comes first. Positions between the batch and the feature axis
    (a sequence) are treated like the locations of a convolution (:func:`kfac_conv`). Outside
    :func:`kfac_statistics` this is exactly ``x @ kernel + bias``. Martens & Grosse 2015.
    """
    outputs = x @ kernel if bias is None else x @ kernel + bias
    if not _RECORDERS:
        return outputs
    recorder = _RECORDERS[-1]
    layer = KfacLayer(
        "dense",
        recorder.path(kernel, "kernel", "kfac_dense"),
        None if bias is None else recorder.path(bias, "bias", "kfac_dense"),
    )
    activations = _with_bias_column(x.reshape(x.shape[0], -1, x.shape[-1]), bias)
    return recorder.register(layer, activations, outputs)


def kfac_conv(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    window_strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
) -> jax.Array:
    """A 2-D convolution ``s = conv(x, K) + b`` (NHWC input, HWIO kernel) that K-FAC preconditions.

    ``jax.lax.conv_general_dilated(x, kernel, window_strides, padding, dimension_numbers=("NHWC",
    "HWIO", "NHWC")) + bias``; the factors treat it as a dense layer applied at every output
    location ``t`` to the patch ``a_t`` around it (KFC, Grosse & Martens 2016):
    ``A = E[sum_t a_t a_t^T]`` and ``G = E[sum_t Ds_t Ds_t^T] / |T|``.
    """
    outputs = jax.lax.conv_general_dilated(
        x, kernel, tuple(window_strides), padding, dimension_numbers=_CONV_DIMENSIONS
    )
    if bias is not None:
        outputs = outputs + bias
    if not _RECORDERS:
        return outputs
    recorder = _RECORDERS[-1]
    layer = KfacLayer(
        "conv",
        recorder.path(kernel, "kernel", "kfac_conv"),
        None if bias is None else recorder.path(bias, "bias", "kfac_conv"),
    )
    # Patch features are ordered (input channel, kernel row, kernel column): see _as_matrix.
    patches = jax.lax.conv_general_dilated_patches(
        x, kernel.shape[:2], tuple(window_strides), padding, dimension_numbers=_CONV_DIMENSIONS
    )
    activations = _with_bias_column(patches.reshape(x.shape[0], -1, patches.shape[-1]), bias)
    return recorder.register(layer, activations, outputs)


def kfac_softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``mean_n -log softmax(logits_n)[labels_n]``, registered as K-FAC's predictive distribution.

    ``logits`` is ``(batch, classes)`` and ``labels`` integer ``(batch,)``. Under
    :func:`kfac_statistics` it also supplies the backward passes that give ``G``: a loss at labels
    drawn from ``softmax(logits)`` (``fisher="sampled"``), or one pass per class with the columns
    ``sqrt(p_k) (e_k - p)`` of the square root of ``diag(p) - p p^T`` (``"exact"``). Martens & Grosse 2015.
    """
    log_probs = jax.nn.log_softmax(logits)
    value = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))
    if not _RECORDERS or _RECORDERS[-1].fisher == "empirical":
        return value
    recorder, batch = _RECORDERS[-1], logits.shape[0]
    fixed = jax.lax.stop_gradient(logits)
    if recorder.fisher == "sampled":
        sampled = jax.random.categorical(recorder.next_key(), fixed)
        recorder.curvature_losses.append(-jnp.mean(jnp.take_along_axis(log_probs, sampled[:, None], axis=-1)))
    else:
        probs = jax.nn.softmax(fixed)
        roots = jnp.sqrt(probs)
        for k in range(logits.shape[-1]):  # column k: sqrt(p_k) (e_k - p)
            column = roots[:, k : k + 1] * (jax.nn.one_hot(k, logits.shape[-1], dtype=probs.dtype) - probs)
            recorder.curvature_losses.append(jnp.sum(logits * column) / batch)
    return value


def kfac_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``mean_n 0.5 ||predictions_n - targets_n||^2``: the Gaussian log-likelihood with unit variance.

    The batch axis comes first and the squares are summed over the others. Under
    :func:`kfac_statistics` the targets are redrawn from ``N(predictions, I)`` (``"sampled"``), or
    each output coordinate gives one backward pass (``"exact"``: the output Hessian is ``I``).
    Martens & Grosse 2015.
    """
    value = 0.5 * jnp.sum(jnp.square(predictions - targets)) / predictions.shape[0]
    if not _RECORDERS or _RECORDERS[-1].fisher == "empirical":
        return value
    recorder, batch = _RECORDERS[-1], predictions.shape[0]
    if recorder.fisher == "sampled":
        noise = jax.random.normal(recorder.next_key(), predictions.shape, predictions.dtype)
        sampled = jax.lax.stop_gradient(predictions) + noise
        recorder.curvature_losses.append(0.5 * jnp.sum(jnp.square(predictions - sampled)) / batch)
    else:
        flat = predictions.reshape(batch, -1)
        recorder.curvature_losses.extend(jnp.sum(flat[:, k]) / batch for k in range(flat.shape[1]))
    return value


def kfac_layers(loss_fn: Callable[..., jax.Array], params: PyTree, *args: Any) -> tuple[KfacLayer, ...]:
    """The layers that ``loss_fn(params, *args)`` tags, found by tracing it once (no computation).

    Returns a tuple of :class:`KfacLayer` in call order, to give to :func:`kfac` at construction.
    The layers are the blocks of K-FAC's block-diagonal Fisher (Martens & Grosse 2015, section 3).
    """
    return _discover(loss_fn, params, *args)[0]


def _discover(loss_fn: Callable[..., jax.Array], params: PyTree, *args: Any) -> tuple[tuple[KfacLayer, ...], dict]:
    """The tagged layers and their output shapes, from one abstract trace of ``loss_fn``."""
    found: list[_Recorder] = []

    def trace_once(params, *args):
        with _recording(_Recorder(params, None, "empirical", None)) as recorder:
            loss_fn(params, *args)
        found.append(recorder)
        return 0.0

    jax.eval_shape(trace_once, params, *args)
    if not found[0].layers:
        raise ValueError("kfac_layers: loss_fn calls no kfac_dense or kfac_conv layer.")
    return tuple(found[0].layers.values()), dict(found[0].outputs)


def kfac_statistics(
    loss_fn: Callable[..., jax.Array], fisher: str = "sampled"
) -> Callable[..., tuple[jax.Array, PyTree, dict[str, KfacFactors]]]:
    """``loss_fn`` -> ``f(params, *args, key=None) -> (loss, grads, factors)``, K-FAC's per-batch statistics.

    ``factors`` maps each tagged layer's weight path to ``KfacFactors(A_hat, G_hat)`` of this batch
    (batch size ``N``, output locations ``T``, ``a`` with a 1 appended when there is a bias):

    .. math::

        \\hat A = \\frac{1}{N} \\sum_{n, t} a_{n,t} a_{n,t}^T, \\qquad
        \\hat G = \\frac{N}{|T|} \\sum_{c} \\sum_{n, t} g^{(c)}_{n,t} g^{(c)\\,T}_{n,t}

    where ``g^(c) = d l_c / d s`` is the gradient of a curvature loss ``l_c`` (a mean over the
    batch) with respect to the layer's pre-activations, taken with a zero perturbation of ``s``.
    ``fisher`` chooses the ``l_c``: ``"sampled"`` (default, the paper's): one loss at targets drawn
    from the model's predictive distribution, an unbiased estimate of the Fisher's ``G`` at the
    cost of one more backward pass (needs ``key``); ``"exact"``: one backward pass per output
    coordinate, the exact Fisher (= generalized Gauss-Newton) factor; ``"empirical"``: the
    training loss itself (no extra pass; the empirical Fisher, a biased curvature estimate).
    With ``"sampled"`` the ``i``-th registered loss draws its targets with the key ``k_i`` of
    ``key_0 = key``, ``(key_i, k_i) = jax.random.split(key_{i-1})``.

    ``loss_fn(params, *args)`` must return a scalar and use :func:`kfac_dense` / :func:`kfac_conv`
    on leaves of ``params`` and :func:`kfac_softmax_cross_entropy` / :func:`kfac_squared_error`
    (means over the batch) for the loss. ``loss`` and ``grads`` are ``jax.value_and_grad(loss_fn)``.
    """
    if fisher not in _FISHER_MODES:
        raise ValueError(f"kfac_statistics: fisher must be one of {_FISHER_MODES}, got {fisher!r}.")

    def statistics(params: PyTree, *args: Any, key: jax.Array | None = None):
        layers, shapes = _discover(loss_fn, params, *args)
        perturbations = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}

        def perturbed(params, perturbations):
            with _recording(_Recorder(params, perturbations, fisher, key)) as recorder:
                value = loss_fn(params, *args)
            losses = jnp.stack([value, *[jnp.asarray(c, value.dtype) for c in recorder.curvature_losses]])
            return losses, recorder.activations

        losses, pullback, activations = jax.vjp(perturbed, params, perturbations, has_aux=True)
        if fisher != "empirical" and losses.shape[0] == 1:
            raise ValueError(
                f"kfac_statistics(fisher={fisher!r}): loss_fn registers no loss; use kfac_softmax_cross_entropy "
                "or kfac_squared_error (or fisher='empirical')."
            )
        cotangents = jnp.eye(losses.shape[0], dtype=losses.dtype)
        param_grads, output_grads = jax.vmap(pullback)(cotangents)
        grads = jax.tree.map(lambda g: g[0], param_grads)
        factors = {}
        for layer in layers:
            a = activations[layer.weight]
            batch, locations = a.shape[0], a.shape[1]
            a = a.reshape(-1, a.shape[-1])
            g = output_grads[layer.weight]
            g = g[:1] if fisher == "empirical" else g[1:]
            g = g.reshape(-1, g.shape[-1])
            factors[layer.weight] = KfacFactors(a.T @ a / batch, (batch / locations) * (g.T @ g))
        return losses[0], grads, factors

    return statistics


# ---------------------------------------------------------------------------------------------
# The transformation.


class ScaleByKfacState(NamedTuple):
    """State of :func:`scale_by_kfac` and of the K-FAC step of :func:`kfac`.

    Attributes:
      count: number of updates so far (int32, saturating).
      factors: weight path -> ``KfacFactors(A, G)``, the moving averages of the batch factors.
      inverses: weight path -> ``KfacFactors((A + pi sqrt(lambda) I)^{-1}, (G + sqrt(lambda)/pi I)^{-1})``,
        recomputed every ``inverse_update_period`` steps.
      fallback_state: the state of the transformation used for leaves outside the tagged layers.
    """

    count: jax.Array
    factors: dict[str, KfacFactors]
    inverses: dict[str, KfacFactors]
    fallback_state: Any


def _factor_dims(layer: KfacLayer, weight: jax.Array) -> tuple[int, int]:
    extra = 0 if layer.bias is None else 1
    if layer.kind == "dense":
        return weight.shape[0] + extra, weight.shape[1]
    return int(np.prod(weight.shape[:3])) + extra, weight.shape[3]


def _as_matrix(layer: KfacLayer, weight: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The layer's gradient as a ``(d_A, d_G)`` matrix whose rows match ``A`` (bias row last)."""
    if layer.kind == "conv":  # HWIO -> (I, H, W) rows, the order of conv_general_dilated_patches
        weight = jnp.transpose(weight, (2, 0, 1, 3)).reshape(-1, weight.shape[3])
    return weight if bias is None else jnp.concatenate([weight, bias[None, :]], axis=0)


def _from_matrix(layer: KfacLayer, matrix: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array | None]:
    weight, bias = (matrix, None) if layer.bias is None else (matrix[:-1], matrix[-1])
    if layer.kind == "conv":
        h, w, i, o = shape
        weight = jnp.transpose(weight.reshape(i, h, w, o), (1, 2, 0, 3))
    return weight, bias


def _damped_inverse(matrix: jax.Array, shift: jax.Array) -> jax.Array:
    damped = matrix + shift * jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(damped), jnp.eye(matrix.shape[0], dtype=matrix.dtype))


def _inverses(factors: KfacFactors, damping: Any) -> KfacFactors:
    """Factored Tikhonov damping (Martens & Grosse 2015, section 6.3) and the two inverses."""
    a, g = factors
    mean_a = jnp.trace(a) / a.shape[0]
    mean_g = jnp.trace(g) / g.shape[0]
    tiny = jnp.finfo(a.dtype).tiny
    pi = jnp.sqrt(jnp.maximum(mean_a, tiny) / jnp.maximum(mean_g, tiny))
    root = jnp.sqrt(jnp.asarray(damping, a.dtype))
    return KfacFactors(_damped_inverse(a, pi * root), _damped_inverse(g, root / pi))


def _leaves_by_path(tree: PyTree) -> dict[str, Any]:
    return {path_to_str(path): leaf for path, leaf in jax.tree.leaves_with_path(tree)}


@check_schedule_arguments
def scale_by_kfac(
    layers: Sequence[KfacLayer],
    damping: ScalarOrSchedule = 1e-3,
    factor_decay: float | jax.Array = 0.95,
    inverse_update_period: int = 5,
    fallback: GradientTransformation | None = None,
) -> GradientTransformation:
    """Preconditions each tagged layer's gradient by the inverse of its damped Kronecker factors.

    With ``t`` the 1-based step, per layer (``J`` its gradient as a ``(d_A, d_G)`` matrix, the bias
    gradient as the last row; ``A_hat, G_hat`` from :func:`kfac_statistics`):

    .. math::

        &\\rho_t = \\min(1 - 1/t,\\ \\text{factor\\_decay}), \\quad
          A_t = \\rho_t A_{t-1} + (1 - \\rho_t) \\hat A_t, \\quad
          G_t = \\rho_t G_{t-1} + (1 - \\rho_t) \\hat G_t \\\\
        &\\text{every inverse\\_update\\_period steps: } \\pi = \\sqrt{\\frac{\\mathrm{tr}(A_t)/d_A}
          {\\mathrm{tr}(G_t)/d_G}}, \\ \\ \\bar A^{-1} = (A_t + \\pi \\sqrt{\\lambda} I)^{-1}, \\ \\
          \\bar G^{-1} = (G_t + \\tfrac{\\sqrt{\\lambda}}{\\pi} I)^{-1} \\\\
        &u = \\bar A^{-1} J \\bar G^{-1}

    ``(A + pi sqrt(lambda) I) (x) (G + sqrt(lambda)/pi I)`` is the paper's factored Tikhonov
    damping: the Kronecker product closest to ``A (x) G + lambda I`` with ``pi`` balancing the
    two factors' scales. ``rho_t`` is the paper's ``min(1 - 1/k, 0.95)``: an average over the
    first steps, an exponential moving average afterwards (``factor_decay=0`` keeps only the
    current batch). Leaves outside the tagged layers get ``fallback`` (default: the gradient
    unchanged). No sign or learning rate is applied: see :func:`kfac`.

    ``update`` needs the batch factors: ``tx.update(grads, state, params, kfac_factors=factors)``
    with ``factors`` from :func:`kfac_statistics`.

    Args:
      layers: the tagged layers, from :func:`kfac_layers` (a sequence of :class:`KfacLayer`).
      damping: ``lambda >= 0``, a number or a schedule (default 1e-3). Read when the inverses are
        recomputed.
      factor_decay: the cap of ``rho_t`` in ``[0, 1)`` (default 0.95, the paper's).
      inverse_update_period: steps between inverse recomputations (default 5; the paper's ``T_3``
        is 20, kfac-jax's default 5). The first step always computes them.
      fallback: a transformation for the untagged leaves (default ``identity()``).

    State:
      :class:`ScaleByKfacState`.

    Memory and cost: per layer ``2 (d_A^2 + d_G^2)`` (factors and inverses); per step
    ``O(N |T| (d_A^2 + d_G^2))`` for the batch factors, one extra backward pass (``"sampled"``),
    ``O(d_A^2 d_G + d_A d_G^2)`` for the preconditioning and ``O(d_A^3 + d_G^3)`` per inversion.

    Optax and ``torch.optim`` have no K-FAC; see :func:`kfac` for kfac-jax.

    References:
      Martens & Grosse, "Optimizing neural networks with Kronecker-factored approximate
      curvature", ICML 2015 (arXiv:1503.05671); Grosse & Martens, "A Kronecker-factored
      approximate Fisher matrix for convolution layers", ICML 2016 (arXiv:1602.01407).
    """
    layers = tuple(layers)
    if not layers or not all(isinstance(layer, KfacLayer) for layer in layers):
        raise ValueError(f"layers must be a non-empty sequence of KfacLayer (see kfac_layers), got {layers!r}.")
    for layer in layers:
        if layer.kind not in ("dense", "conv"):
            raise ValueError(f"layers: kind must be 'dense' or 'conv', got {layer.kind!r} for {layer.weight}.")
    check_non_negative(damping, "damping")
    check_decay(factor_decay, "factor_decay")
    if isinstance(inverse_update_period, bool) or not isinstance(inverse_update_period, (int, np.integer)) or (
        inverse_update_period < 1
    ):
        raise ValueError(f"inverse_update_period must be an int >= 1, got {inverse_update_period!r}.")
    tagged = {layer.weight for layer in layers} | {layer.bias for layer in layers if layer.bias is not None}
    untagged_mask = lambda params: jax.tree.map_with_path(  # noqa: E731
        lambda path, _: path_to_str(path) not in tagged, params
    )
    fallback_tx = masked(identity() if fallback is None else fallback, untagged_mask)

    def check_layers(leaves: dict[str, Any], where: str) -> None:
        for name in sorted(tagged):
            if name not in leaves:
                raise ValueError(f"scale_by_kfac: the layer leaf {name} is not in the {where}.")

    def init_fn(params):
        check_float_leaves(params)
        leaves = _leaves_by_path(params)
        check_layers(leaves, "params")
        factors, inverses = {}, {}
        for layer in layers:
            weight = leaves[layer.weight]
            d_a, d_g = _factor_dims(layer, weight)
            zeros = KfacFactors(jnp.zeros((d_a, d_a), weight.dtype), jnp.zeros((d_g, d_g), weight.dtype))
            factors[layer.weight] = zeros
            inverses[layer.weight] = KfacFactors(jnp.eye(d_a, dtype=weight.dtype), jnp.eye(d_g, dtype=weight.dtype))
        return ScaleByKfacState(zero_step_count(), factors, inverses, fallback_tx.init(params))

    def update_fn(updates, state, params=None, *, kfac_factors=None, **extra_args):
        check_state_type(state, ScaleByKfacState, "scale_by_kfac")
        if kfac_factors is None:
            raise ValueError(
                "scale_by_kfac: update needs kfac_factors=, the per-batch factors that kfac_statistics returns: "
                "tx.update(grads, state, params, kfac_factors=factors)."
            )
        if set(kfac_factors) != set(state.factors):
            raise ValueError(
                f"scale_by_kfac: kfac_factors has the layers {sorted(kfac_factors)}, the state {sorted(state.factors)}."
            )
        check_trees_match(kfac_factors, state.factors, name="kfac_factors", reference_name="kfac state")
        check_updates_match_params(updates, params, "scale_by_kfac")
        leaves = _leaves_by_path(updates)
        check_layers(leaves, "updates")
        for layer in layers:
            weight, expected = leaves[layer.weight], state.factors[layer.weight]
            dims = (expected.activations.shape[0], expected.gradients.shape[0])
            if _factor_dims(layer, weight) != dims:
                raise ValueError(
                    f"scale_by_kfac: the updates at {layer.weight} have shape {weight.shape}, which does not fit the "
                    f"layer's factors ({dims[0]} x {dims[0]} and {dims[1]} x {dims[1]})."
                )
        count = saturating_increment(state.count)
        new_updates, fallback_state = fallback_tx.update(updates, state.fallback_state, params, **extra_args)

        dtype = next(iter(state.factors.values())).activations.dtype
        rho = jnp.minimum(1.0 - 1.0 / count.astype(dtype), jnp.asarray(factor_decay, dtype))
        factors = jax.tree.map(lambda old, new: rho * old + (1.0 - rho) * new.astype(old.dtype), state.factors,
                               dict(kfac_factors))
        damping_t = value_at(damping, state.count)
        inverses = jax.lax.cond(
            state.count % inverse_update_period == 0,
            lambda: {name: _inverses(f, damping_t) for name, f in factors.items()},
            lambda: state.inverses,
        )

        preconditioned = {}
        for layer in layers:
            weight, bias = leaves[layer.weight], None if layer.bias is None else leaves[layer.bias]
            inverse = inverses[layer.weight]
            matrix = inverse.activations @ _as_matrix(layer, weight, bias).astype(dtype) @ inverse.gradients
            new_weight, new_bias = _from_matrix(layer, matrix, weight.shape)
            preconditioned[layer.weight] = new_weight.astype(weight.dtype)
            if bias is not None:
                preconditioned[layer.bias] = new_bias.astype(bias.dtype)
        new_updates = jax.tree.map_with_path(
            lambda path, u: preconditioned.get(path_to_str(path), u), new_updates
        )
        return new_updates, ScaleByKfacState(count, factors, inverses, fallback_state)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def kfac(
    learning_rate: ScalarOrSchedule,
    layers: Sequence[KfacLayer],
    momentum: float | jax.Array = 0.9,
    damping: ScalarOrSchedule = 1e-3,
    factor_decay: float | jax.Array = 0.95,
    inverse_update_period: int = 5,
    weight_decay: ScalarOrSchedule = 0.0,
    fallback: GradientTransformation | None = None,
) -> GradientTransformation:
    """K-FAC with a fixed learning rate and momentum (Martens & Grosse 2015).

    .. math::

        \\Delta_t = -F_{\\text{K-FAC}}^{-1} (\\nabla h(w_{t-1}) + \\eta w_{t-1}), \\quad
        \\delta_t = \\mu \\delta_{t-1} + \\Delta_t, \\quad w_t = w_{t-1} + \\alpha_t \\delta_t

    ``chain(add_decayed_weights(weight_decay), scale_by_kfac(...), trace(momentum),
    scale_by_learning_rate(learning_rate))``: the L2 term ``eta w`` (weight decay) is part of the
    objective, the K-FAC step of :func:`scale_by_kfac` preconditions it, heavy-ball momentum
    ``mu`` accumulates the steps and ``alpha_t`` scales them. Pass the batch factors to ``update``
    as ``kfac_factors=`` (see the module example and :func:`kfac_statistics`).

    The paper chooses ``alpha`` and ``mu`` each step by minimizing the damped quadratic model and
    adapts ``lambda`` by Levenberg-Marquardt; here the three are fixed hyperparameters (schedules
    allowed for ``alpha`` and ``lambda``), as in kfac-jax with ``use_adaptive_learning_rate``,
    ``use_adaptive_momentum`` and ``use_adaptive_damping`` off. Untagged leaves get ``fallback``
    (default: plain gradient, i.e. SGD with momentum on them).

    Args:
      learning_rate: ``alpha``, a number or a schedule.
      layers: the tagged layers, from :func:`kfac_layers`.
      momentum: ``mu`` in ``[0, 1)`` (default 0.9).
      damping: ``lambda``, see :func:`scale_by_kfac` (default 1e-3).
      factor_decay: see :func:`scale_by_kfac` (default 0.95).
      inverse_update_period: see :func:`scale_by_kfac` (default 5).
      weight_decay: ``eta >= 0``, an L2 term added before preconditioning (default 0).
      fallback: the transformation of the untagged leaves (default ``identity()``).

    State:
      ``(AddDecayedWeightsState, ScaleByKfacState, TraceState, ScaleByScheduleState-or-ScaleState)``.

    References:
      Martens & Grosse, ICML 2015 (arXiv:1503.05671); Grosse & Martens, ICML 2016 (arXiv:1602.01407).
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_kfac(layers, damping, factor_decay, inverse_update_period, fallback),
        trace(momentum),
        scale_by_learning_rate(learning_rate),
    )
