"""Normalization layers: batch norm, batch renorm, layer/instance/group/RMS norm, weight norm.

All are ``Layer``s (see ``gradtx.nn.layer``). The normalizing layers share one computation:

    mu  = mean of x over the reduction axes
    var = mean of (x - mu)^2 over the reduction axes          (biased: divides by m, not m - 1)
    y   = scale * (x - mu) / sqrt(var + eps) + bias             (scale, bias per feature)

and differ in which axes they reduce over. Statistics are computed in at least ``float32`` (so a
``bfloat16`` input is normalized in ``float32``) and with two passes (mean, then the mean of the
squared deviations), which is more accurate than ``E[x^2] - E[x]^2``; Flax's default
``use_fast_variance=True`` uses the latter, so in ``float32`` results can differ from Flax's
in the last few bits, in ``float64`` they agree to ~1e-15.

With ``axis_name``, the per-device means are averaged with ``lax.pmean`` over that mapped axis
before use (two collectives: the mean, then the variance around the global mean). With equal
per-device batch sizes this gives exactly the statistics of the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import DTypeLike

from gradtx.base import EmptyState, value_at
from gradtx.nn.initializers import Initializer, ones, zeros
from gradtx.nn.layer import Layer, LayerState, Params
from gradtx.tree_utils import saturating_increment, zero_step_count
from gradtx.validation import check_decay, check_non_negative, check_positive

Axes = int | Sequence[int]
FloatOrSchedule = float | Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# Shared helpers


def _canonical_axes(ndim: int, axes: Axes) -> tuple[int, ...]:
    """Sorted, deduplicated, non-negative axes."""
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted({a % ndim for a in axes}))


def _as_shape(num_features: int | Sequence[int]) -> tuple[int, ...]:
    return (num_features,) if isinstance(num_features, int) else tuple(num_features)


def _check_feature_shape(
    where: str, x: jax.Array, feature_axes: tuple[int, ...], feature_shape: tuple[int, ...]
) -> None:
    found = tuple(x.shape[a] for a in feature_axes)
    if found != feature_shape:
        raise ValueError(
            f"{where}: features of shape {feature_shape} expected on axes {feature_axes}, found {found} "
            f"(input shape {x.shape})."
        )


def _broadcast_to_axes(values: jax.Array, ndim: int, axes: tuple[int, ...]) -> jax.Array:
    """Reshapes per-feature ``values`` (shape ``[x.shape[a] for a in axes]``) to broadcast with x."""
    shape = [1] * ndim
    for a, size in zip(axes, values.shape, strict=True):
        shape[a] = size
    return values.reshape(shape)


def _stats_dtype(x: jax.Array) -> jnp.dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


def _moments(
    x: jax.Array, reduction_axes: tuple[int, ...], axis_name: str | None, centered: bool = True
) -> tuple[jax.Array, jax.Array]:
    """``(mu, var)`` over ``reduction_axes`` (and over ``axis_name``), with kept dims.

    ``centered=False`` returns ``(0, E[x^2])``, the second moment RMSNorm uses.
    """
    x = x.astype(_stats_dtype(x))

    def mean(values: jax.Array) -> jax.Array:
        m = jnp.mean(values, axis=reduction_axes, keepdims=True)
        return m if axis_name is None else lax.pmean(m, axis_name)

    if not centered:
        second_moment = mean(jnp.square(x))
        return jnp.zeros_like(second_moment), second_moment
    mu = mean(x)
    return mu, mean(jnp.square(x - mu))


def _init_affine(
    key: jax.Array | None,
    feature_shape: tuple[int, ...],
    use_scale: bool,
    use_bias: bool,
    scale_init: Initializer,
    bias_init: Initializer,
    param_dtype: DTypeLike,
) -> Params:
    scale_key, bias_key = jax.random.split(key) if key is not None else (None, None)
    params = {}
    if use_scale:
        params["scale"] = scale_init(scale_key, feature_shape, param_dtype)
    if use_bias:
        params["bias"] = bias_init(bias_key, feature_shape, param_dtype)
    return params


def _scale_and_shift(
    params: Params, x_hat: jax.Array, feature_axes: tuple[int, ...], use_scale: bool, use_bias: bool
) -> jax.Array:
    """``scale * x_hat + bias`` per feature, each term only if the layer has it."""
    y = x_hat
    if use_scale:
        y = y * _broadcast_to_axes(params["scale"], x_hat.ndim, feature_axes)
    if use_bias:
        y = y + _broadcast_to_axes(params["bias"], x_hat.ndim, feature_axes)
    return y


# ----------------------------------------------------------------------------------------------
# Batch normalization


class BatchNormState(NamedTuple):
    """Running averages of a ``batch_norm`` layer, one entry per feature.

    mean: running mean ``mu_run``, initially 0.
    var: running (biased) variance ``var_run``, initially 1.
    """

    mean: jax.Array
    var: jax.Array


def batch_norm(
    num_features: int | Sequence[int],
    *,
    momentum: float = 0.99,
    eps: float = 1e-5,
    axis: Axes = -1,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init: Initializer = ones,
    bias_init: Initializer = zeros,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """Batch normalization: normalize each feature with batch statistics, keep running averages.

    Training (``train=True``), with ``mu_B, var_B`` the mean and biased variance of each feature
    over every axis except ``axis`` (and over ``axis_name`` devices):

        y       = scale * (x - mu_B) / sqrt(var_B + eps) + bias
        mu_run  <- momentum * mu_run  + (1 - momentum) * mu_B
        var_run <- momentum * var_run + (1 - momentum) * var_B

    Evaluation (``train=False``): ``y = scale * (x - mu_run) / sqrt(var_run + eps) + bias``, the
    state is returned unchanged and ``axis_name`` is ignored. The two modes differ: in training
    each example's output depends on the rest of its batch, which for tiny batches is far from
    what evaluation sees (``batch_renorm`` reduces this). Gradients flow through ``mu_B`` and
    ``var_B``, as in the paper.

    Args:
      num_features: size (or shape, for several feature axes) of the feature axes.
      momentum: decay of the running averages, default ``0.99`` (Flax's convention and default).
      eps: added to the variance, default ``1e-5``.
      axis: feature axis or axes, default ``-1`` (channels last, also for NHWC images).
      use_scale, use_bias: learn ``scale`` (gamma) and ``bias`` (beta), default ``True``.
      scale_init, bias_init: their initializers, default ``ones`` and ``zeros``.
      param_dtype: dtype of params and running averages, default ``float32``; the new state is
        cast back to it so its dtype never changes between steps.

    Params: ``{"scale", "bias"}``. State: ``BatchNormState(mean, var)``.

    Matches ``flax.linen.BatchNorm(momentum, epsilon=eps, axis=axis, axis_name=...)`` with
    ``use_running_average = not train``: same outputs and running averages (tested over several
    updates). ``torch.nn.BatchNorm*d`` differs in two ways: its ``momentum=0.1`` is the weight of
    the *new* statistic (decay ``0.9``, i.e. ``momentum=0.9`` here), and its ``running_var``
    averages the *unbiased* batch variance ``m / (m - 1) * var_B`` while normalizing with the
    biased one. Reference: Ioffe & Szegedy, 2015.
    """
    check_decay(momentum, "batch_norm: momentum")
    check_positive(eps, "batch_norm: eps")
    feature_shape = _as_shape(num_features)

    def init(key: jax.Array | None = None) -> tuple[Params, BatchNormState]:
        params = _init_affine(key, feature_shape, use_scale, use_bias, scale_init, bias_init, param_dtype)
        state = BatchNormState(jnp.zeros(feature_shape, param_dtype), jnp.ones(feature_shape, param_dtype))
        return params, state

    def apply(
        params: Params, state: BatchNormState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, BatchNormState]:
        feature_axes = _canonical_axes(x.ndim, axis)
        _check_feature_shape("batch_norm", x, feature_axes, feature_shape)
        if train:
            reduction_axes = tuple(a for a in range(x.ndim) if a not in feature_axes)
            mu, var = _moments(x, reduction_axes, axis_name)
            state = BatchNormState(
                (momentum * state.mean + (1 - momentum) * mu.reshape(feature_shape)).astype(state.mean.dtype),
                (momentum * state.var + (1 - momentum) * var.reshape(feature_shape)).astype(state.var.dtype),
            )
        else:
            mu = _broadcast_to_axes(state.mean, x.ndim, feature_axes)
            var = _broadcast_to_axes(state.var, x.ndim, feature_axes)
        return _scale_and_shift(params, (x - mu) * lax.rsqrt(var + eps), feature_axes, use_scale, use_bias), state

    return Layer(init, apply)


def fold_batch_norm(
    dense_params: Params,
    bn_params: Params,
    bn_state: BatchNormState | BatchRenormState,
    *,
    eps: float = 1e-5,
) -> Params:
    """Merges an evaluation-mode batch norm into the affine layer before it, for inference.

    For ``z = x W + b`` followed by ``y = scale * (z - mu_run) / sigma + bias`` (per output
    feature ``j``; ``sigma = sqrt(var_run + eps)`` for ``batch_norm``, the running ``std`` for
    ``batch_renorm``), ``y = x W' + b'`` with

        s_j     = scale_j / sigma_j
        W'[..., j] = W[..., j] * s_j
        b'_j    = (b_j - mu_run_j) * s_j + bias_j

    so inference costs one affine layer. The kernel's last axis must be the output features (a
    ``dense`` kernel ``(in, out)`` or a convolution kernel ``(..., in, out)``); a missing
    ``"bias"`` counts as zero, a batch norm without ``scale`` or ``bias`` as ones or zeros.

    Args:
      dense_params: ``{"kernel", "bias"?}`` of the preceding layer.
      bn_params: ``{"scale"?, "bias"?}`` of the batch norm.
      bn_state: its ``BatchNormState`` or ``BatchRenormState``.
      eps: the batch norm's ``eps``, default ``1e-5`` (``batch_norm``'s default); unused for
        ``BatchRenormState``, whose ``std`` already contains it.

    Returns:
      ``{"kernel": W', "bias": b'}``, equal (to rounding) to the two layers in evaluation mode.
    """
    kernel = dense_params["kernel"]
    if isinstance(bn_state, BatchRenormState):
        inv_sigma = 1.0 / bn_state.std
    else:
        inv_sigma = lax.rsqrt(bn_state.var + eps)
    s = inv_sigma * bn_params["scale"] if "scale" in bn_params else inv_sigma
    b = dense_params.get("bias", jnp.zeros(kernel.shape[-1], kernel.dtype))
    new_bias = (b - bn_state.mean) * s
    if "bias" in bn_params:
        new_bias = new_bias + bn_params["bias"]
    return {"kernel": kernel * s, "bias": new_bias}


# ----------------------------------------------------------------------------------------------
# Batch renormalization


class BatchRenormState(NamedTuple):
    """Moving statistics of a ``batch_renorm`` layer.

    mean: moving mean ``mu``, initially 0.
    std: moving standard deviation ``sigma`` (of ``sqrt(var_B + eps)``), initially 1.
    step_count: training steps taken, int32, ``0`` before the first; ``rmax`` and ``dmax``
      schedules are evaluated at it.
    """

    mean: jax.Array
    std: jax.Array
    step_count: jax.Array


def batch_renorm(
    num_features: int | Sequence[int],
    *,
    momentum: float = 0.99,
    eps: float = 1e-5,
    rmax: FloatOrSchedule = 3.0,
    dmax: FloatOrSchedule = 5.0,
    axis: Axes = -1,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init: Initializer = ones,
    bias_init: Initializer = zeros,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """Batch renormalization: batch norm whose training output is corrected towards evaluation's.

    Training (Algorithm 1 of the paper, with ``alpha = 1 - momentum``), per feature, with
    ``mu_B`` and ``var_B`` as in ``batch_norm`` and ``t`` the step count:

        sigma_B = sqrt(var_B + eps)
        r  = stop_gradient(clip(sigma_B / sigma, 1 / rmax(t), rmax(t)))
        d  = stop_gradient(clip((mu_B - mu) / sigma, -dmax(t), dmax(t)))
        y  = scale * ((x - mu_B) / sigma_B * r + d) + bias
        mu    <- mu    + alpha * (mu_B - mu)
        sigma <- sigma + alpha * (sigma_B - sigma)

    Evaluation: ``y = scale * (x - mu) / sigma + bias``. When the clips are inactive,
    ``(x - mu_B) / sigma_B * r + d = (x - mu) / sigma``: the training output *is* the evaluation
    output (with gradients still flowing through ``mu_B, sigma_B``), which removes batch norm's
    train/eval mismatch for small or non-i.i.d. batches. With ``rmax = 1, dmax = 0`` it is batch
    norm (with a moving standard deviation instead of a moving variance).

    Args:
      num_features: size (or shape) of the feature axes.
      momentum: ``1 - alpha``, decay of the moving statistics, default ``0.99`` (``alpha = 0.01``
        as in the paper).
      eps: added to the batch variance, default ``1e-5``.
      rmax: bound of ``r`` (``>= 1``), a float or a schedule ``t -> rmax``, default ``3.0``. The
        paper starts at ``1`` (and ``dmax`` at ``0``) for 5k steps, then relaxes to ``rmax = 3``
        and ``dmax = 5``, e.g. ``rmax=lambda t: jnp.clip(1 + 2 * (t - 5000) / 35000, 1, 3)``.
      dmax: bound of ``|d|`` (``>= 0``), a float or a schedule, default ``5.0``.
      axis, use_scale, use_bias, scale_init, bias_init, param_dtype: as in ``batch_norm``.

    Params: ``{"scale", "bias"}``. State: ``BatchRenormState(mean, std, step_count)``.

    Follows Ioffe, "Batch Renormalization", 2017, Algorithm 1 (moving ``sigma``, not the variance).
    Flax and torch have no batch renorm; Keras' ``BatchNormalization(renorm=True)`` is the closest.
    """
    check_decay(momentum, "batch_renorm: momentum")
    check_positive(eps, "batch_renorm: eps")
    if isinstance(rmax, int | float) and not rmax >= 1:
        raise ValueError(f"batch_renorm: rmax must be >= 1, got {rmax!r}.")
    if not callable(dmax):
        check_non_negative(dmax, "batch_renorm: dmax")
    feature_shape = _as_shape(num_features)

    def init(key: jax.Array | None = None) -> tuple[Params, BatchRenormState]:
        params = _init_affine(key, feature_shape, use_scale, use_bias, scale_init, bias_init, param_dtype)
        state = BatchRenormState(
            jnp.zeros(feature_shape, param_dtype),
            jnp.ones(feature_shape, param_dtype),
            zero_step_count(),
        )
        return params, state

    def apply(
        params: Params, state: BatchRenormState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, BatchRenormState]:
        feature_axes = _canonical_axes(x.ndim, axis)
        _check_feature_shape("batch_renorm", x, feature_axes, feature_shape)
        mu = _broadcast_to_axes(state.mean, x.ndim, feature_axes)
        sigma = _broadcast_to_axes(state.std, x.ndim, feature_axes)
        if not train:
            return _scale_and_shift(params, (x - mu) / sigma, feature_axes, use_scale, use_bias), state
        reduction_axes = tuple(a for a in range(x.ndim) if a not in feature_axes)
        mu_batch, var_batch = _moments(x, reduction_axes, axis_name)
        sigma_batch = jnp.sqrt(var_batch + eps)
        r_bound = value_at(rmax, state.step_count)
        d_bound = value_at(dmax, state.step_count)
        r = lax.stop_gradient(jnp.clip(sigma_batch / sigma, 1.0 / r_bound, r_bound))
        d = lax.stop_gradient(jnp.clip((mu_batch - mu) / sigma, -d_bound, d_bound))
        y = _scale_and_shift(params, (x - mu_batch) / sigma_batch * r + d, feature_axes, use_scale, use_bias)
        alpha = 1 - momentum
        new_mean = state.mean + alpha * (mu_batch.reshape(feature_shape) - state.mean)
        new_std = state.std + alpha * (sigma_batch.reshape(feature_shape) - state.std)
        new_state = BatchRenormState(
            new_mean.astype(state.mean.dtype), new_std.astype(state.std.dtype), saturating_increment(state.step_count)
        )
        return y, new_state

    return Layer(init, apply)


# ----------------------------------------------------------------------------------------------
# Per-example normalizations


def layer_norm(
    num_features: int | Sequence[int],
    *,
    eps: float = 1e-6,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init: Initializer = ones,
    bias_init: Initializer = zeros,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """Layer normalization: normalize each example over its features, no batch dependence.

        mu, var = mean and biased variance of x over reduction_axes (per example)
        y = scale * (x - mu) / sqrt(var + eps) + bias

    Training and evaluation compute the same thing (``train`` is ignored), so there is no
    train/eval mismatch and batch size 1 is fine.

    Args:
      num_features: size (or shape) of the feature axes, which carry ``scale`` and ``bias``.
      eps: added to the variance, default ``1e-6`` (Flax's; torch's ``nn.LayerNorm`` uses
        ``1e-5``).
      reduction_axes: axes of the statistics, default ``-1``.
      feature_axes: axes of ``scale`` and ``bias``, default ``-1``.
      use_scale, use_bias, scale_init, bias_init, param_dtype: as in ``batch_norm``.

    Params: ``{"scale", "bias"}``. State: ``EmptyState()``. ``axis_name``: averages the
    statistics over that mapped axis too (for features sharded across devices).

    Matches ``flax.linen.LayerNorm(epsilon=eps, reduction_axes=, feature_axes=)`` and, with
    ``eps=1e-5``, ``torch.nn.LayerNorm``. Reference: Ba, Kiros & Hinton, 2016.
    """
    check_positive(eps, "layer_norm: eps")
    feature_shape = _as_shape(num_features)

    def init(key: jax.Array | None = None) -> tuple[Params, EmptyState]:
        params = _init_affine(key, feature_shape, use_scale, use_bias, scale_init, bias_init, param_dtype)
        return params, EmptyState()

    def apply(
        params: Params, state: EmptyState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, EmptyState]:
        del train
        features = _canonical_axes(x.ndim, feature_axes)
        _check_feature_shape("layer_norm", x, features, feature_shape)
        mu, var = _moments(x, _canonical_axes(x.ndim, reduction_axes), axis_name)
        return _scale_and_shift(params, (x - mu) * lax.rsqrt(var + eps), features, use_scale, use_bias), state

    return Layer(init, apply)


def rms_norm(
    num_features: int | Sequence[int],
    *,
    eps: float = 1e-6,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    use_scale: bool = True,
    scale_init: Initializer = ones,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """RMS normalization: divide by the root mean square, no centring and no bias.

        y = scale * x / sqrt(mean(x^2 over reduction_axes) + eps)

    Cheaper than ``layer_norm`` and, per the paper, as effective: the re-centring is not what
    helps. ``train`` is ignored.

    Args:
      num_features: size (or shape) of the feature axes.
      eps: added to the mean square, default ``1e-6`` (Flax's; ``torch.nn.RMSNorm`` defaults to
        the dtype's machine epsilon).
      reduction_axes: axes of the mean square, default ``-1``.
      feature_axes: axes of ``scale``, default ``-1``.
      use_scale, scale_init, param_dtype: as in ``batch_norm``.

    Params: ``{"scale"}``. State: ``EmptyState()``. ``axis_name``: as in ``layer_norm``.

    Matches ``flax.linen.RMSNorm(epsilon=eps)`` and ``torch.nn.RMSNorm(eps=eps)``. Reference:
    Zhang & Sennrich, 2019.
    """
    check_positive(eps, "rms_norm: eps")
    feature_shape = _as_shape(num_features)

    def init(key: jax.Array | None = None) -> tuple[Params, EmptyState]:
        params = _init_affine(key, feature_shape, use_scale, False, scale_init, zeros, param_dtype)
        return params, EmptyState()

    def apply(
        params: Params, state: EmptyState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, EmptyState]:
        del train
        features = _canonical_axes(x.ndim, feature_axes)
        _check_feature_shape("rms_norm", x, features, feature_shape)
        _, mean_square = _moments(x, _canonical_axes(x.ndim, reduction_axes), axis_name, centered=False)
        return _scale_and_shift(params, x * lax.rsqrt(mean_square + eps), features, use_scale, False), state

    return Layer(init, apply)


def instance_norm(
    num_features: int | Sequence[int],
    *,
    eps: float = 1e-6,
    feature_axes: Axes = -1,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init: Initializer = ones,
    bias_init: Initializer = zeros,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """Instance normalization: normalize each example and each channel over the remaining axes.

        mu, var = mean and biased variance over every axis except 0 (batch) and feature_axes
        y = scale * (x - mu) / sqrt(var + eps) + bias

    For images ``(N, H, W, C)``: per image and channel, over ``H, W``. ``train`` is ignored.

    Args:
      num_features: size (or shape) of the feature axes.
      eps: added to the variance, default ``1e-6`` (Flax's; torch's ``nn.InstanceNorm*d`` uses
        ``1e-5``, and ``affine=False`` by default).
      feature_axes: channel axes, default ``-1``; must not contain the batch axis 0.
      use_scale, use_bias, scale_init, bias_init, param_dtype: as in ``batch_norm``.

    Params: ``{"scale", "bias"}``. State: ``EmptyState()``. ``axis_name``: as in ``layer_norm``.

    Matches ``flax.linen.InstanceNorm(epsilon=eps, feature_axes=)``. Reference: Ulyanov et al.,
    2016.
    """
    check_positive(eps, "instance_norm: eps")
    feature_shape = _as_shape(num_features)

    def init(key: jax.Array | None = None) -> tuple[Params, EmptyState]:
        params = _init_affine(key, feature_shape, use_scale, use_bias, scale_init, bias_init, param_dtype)
        return params, EmptyState()

    def apply(
        params: Params, state: EmptyState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, EmptyState]:
        del train
        features = _canonical_axes(x.ndim, feature_axes)
        if 0 in features:
            raise ValueError(f"instance_norm: axis 0 is the batch axis, it cannot be a feature axis {features}.")
        _check_feature_shape("instance_norm", x, features, feature_shape)
        reduction_axes = tuple(a for a in range(1, x.ndim) if a not in features)
        mu, var = _moments(x, reduction_axes, axis_name)
        return _scale_and_shift(params, (x - mu) * lax.rsqrt(var + eps), features, use_scale, use_bias), state

    return Layer(init, apply)


def group_norm(
    num_features: int,
    *,
    num_groups: int | None = 32,
    group_size: int | None = None,
    eps: float = 1e-6,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init: Initializer = ones,
    bias_init: Initializer = zeros,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """Group normalization: split the channels into groups, normalize each example and group.

    For ``x`` of shape ``(N, ..., C)`` (batch first, channels last) and ``G`` groups of
    ``C / G`` consecutive channels:

        mu, var = mean and biased variance over the axes ``...`` and the channels of the group
        y = scale * (x - mu) / sqrt(var + eps) + bias        (scale, bias per channel)

    ``G = 1`` is layer norm over ``(..., C)``, ``G = C`` is instance norm. Independent of the
    batch size, so it suits small-batch training (detection, segmentation). ``train`` is ignored.

    Args:
      num_features: ``C``, the number of channels.
      num_groups: ``G``, default ``32`` (the paper's and Flax's); must divide ``C``.
      group_size: channels per group instead (then pass ``num_groups=None``).
      eps: added to the variance, default ``1e-6`` (Flax's; torch's ``nn.GroupNorm`` uses
        ``1e-5``).
      use_scale, use_bias, scale_init, bias_init, param_dtype: as in ``batch_norm``.

    Params: ``{"scale", "bias"}`` of shape ``(C,)``. State: ``EmptyState()``. ``axis_name``: as
    in ``layer_norm``.

    Matches ``flax.linen.GroupNorm(num_groups, group_size, epsilon=eps)`` (default reduction
    axes) and, with ``eps=1e-5`` and channels moved first, ``torch.nn.GroupNorm``. Reference: Wu &
    He, 2018.
    """
    check_positive(eps, "group_norm: eps")
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            "group_norm: exactly one of num_groups and group_size is expected (pass num_groups=None to "
            f"use group_size), got num_groups={num_groups}, group_size={group_size}."
        )
    if group_size is not None:
        if group_size <= 0 or num_features % group_size:
            raise ValueError(f"group_norm: group_size={group_size} must divide num_features={num_features}.")
        num_groups = num_features // group_size
    if num_groups <= 0 or num_features % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups} must divide num_features={num_features}.")
    channels_per_group = num_features // num_groups

    def init(key: jax.Array | None = None) -> tuple[Params, EmptyState]:
        params = _init_affine(key, (num_features,), use_scale, use_bias, scale_init, bias_init, param_dtype)
        return params, EmptyState()

    def apply(
        params: Params, state: EmptyState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, EmptyState]:
        del train
        if x.ndim < 2:
            raise ValueError(f"group_norm: input (N, ..., C) of rank >= 2 expected, got shape {x.shape}.")
        _check_feature_shape("group_norm", x, (x.ndim - 1,), (num_features,))
        grouped = x.reshape(x.shape[:-1] + (num_groups, channels_per_group))
        # Reduce over the spatial axes and the channels within a group, keeping batch and group.
        reduction_axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
        mu, var = _moments(grouped, reduction_axes, axis_name)
        x_hat = ((grouped - mu) * lax.rsqrt(var + eps)).reshape(x.shape)
        return _scale_and_shift(params, x_hat, (x.ndim - 1,), use_scale, use_bias), state

    return Layer(init, apply)


# ----------------------------------------------------------------------------------------------
# Weight normalization


def weight_normalize(
    direction: jax.Array, scale: jax.Array, *, feature_axes: Axes = -1, eps: float = 1e-12
) -> jax.Array:
    """``w = g * v / ||v||``, the norm taken per feature over every other axis.

        w[..., j] = g_j * v[..., j] / sqrt(sum_{other axes} v^2 + eps)

    Args:
      direction: ``v``, e.g. a kernel ``(in, out)`` or ``(..., in, out)``.
      scale: ``g``, shape ``[v.shape[a] for a in feature_axes]``.
      feature_axes: axes that keep their own norm, default ``-1`` (one per output unit).
      eps: inside the square root, default ``1e-12`` (Flax's; torch's weight norm has none).
    """
    features = _canonical_axes(direction.ndim, feature_axes)
    reduction_axes = tuple(a for a in range(direction.ndim) if a not in features)
    squared_norm = jnp.sum(jnp.square(direction), axis=reduction_axes, keepdims=True)
    return direction * lax.rsqrt(squared_norm + eps) * _broadcast_to_axes(scale, direction.ndim, features)


def weight_norm(
    layer: Layer,
    *,
    param_name: str = "kernel",
    feature_axes: Axes = -1,
    eps: float = 1e-12,
    scale_init: Initializer | None = None,
) -> Layer:
    """Weight normalization of a layer's weight: ``w = g v / ||v||``, learning ``g`` and ``v``.

    Reparametrizes ``params[param_name]`` of ``layer`` as a direction ``v`` (stored under
    ``param_name``) and a per-feature length ``g`` (stored under ``param_name + "_scale"``); on
    every ``apply`` the layer sees ``w = weight_normalize(v, g)``. Decoupling length from
    direction conditions the gradient better than ``w`` itself, without batch statistics:

        dL/dg = (dL/dw . v) / ||v||,      dL/dv = g / ||v|| (I - v v^T / ||v||^2) dL/dw

    Args:
      layer: the layer whose weight is reparametrized (e.g. ``dense(...)``).
      param_name: which of its params, default ``"kernel"``.
      feature_axes: axes with their own ``g``, default ``-1`` (one per output unit).
      eps: see ``weight_normalize``, default ``1e-12``.
      scale_init: initializer of ``g``; default ``None`` sets ``g = ||v||`` so that the initial
        ``w`` equals the wrapped layer's initial weight (what ``torch.nn.utils.weight_norm``
        does). Flax's ``WeightNorm`` uses ``ones``.

    Params: the layer's params with ``param_name`` holding ``v``, plus ``param_name + "_scale"``.
    State: the layer's.

    Matches ``flax.linen.WeightNorm(layer)`` and ``torch.nn.utils.parametrizations.weight_norm``
    (``dim`` = the output axis) given the same ``v`` and ``g``. Reference: Salimans & Kingma, 2016.
    """
    check_positive(eps, "weight_norm: eps")
    scale_name = f"{param_name}_scale"

    def init(key: jax.Array | None) -> tuple[Params, LayerState]:
        layer_key, scale_key = jax.random.split(key) if key is not None else (None, None)
        params, state = layer.init(layer_key)
        if param_name not in params:
            raise ValueError(f"weight_norm: the layer has no param {param_name!r}; its params are {list(params)}.")
        if scale_name in params:
            raise ValueError(f"weight_norm: the layer already has a param named {scale_name!r}.")
        direction = params[param_name]
        features = _canonical_axes(direction.ndim, feature_axes)
        if scale_init is None:
            reduction_axes = tuple(a for a in range(direction.ndim) if a not in features)
            scale = jnp.sqrt(jnp.sum(jnp.square(direction), axis=reduction_axes))
        else:
            scale = scale_init(scale_key, tuple(direction.shape[a] for a in features), direction.dtype)
        return {**params, scale_name: scale}, state

    def apply(
        params: Params, state: LayerState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, LayerState]:
        layer_params = {name: value for name, value in params.items() if name != scale_name}
        layer_params[param_name] = weight_normalize(
            params[param_name], params[scale_name], feature_axes=feature_axes, eps=eps
        )
        return layer.apply(layer_params, state, x, train=train, axis_name=axis_name)

    return Layer(init, apply)
