"""A fully connected layer ``y = x W + b`` in the ``Layer`` protocol, for MLPs without a framework."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradtx.base import EmptyState
from gradtx.nn.initializers import Initializer, lecun_normal, zeros
from gradtx.nn.layer import Layer, Params


def dense(
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    kernel_init: Initializer | None = None,
    bias_init: Initializer = zeros,
    param_dtype: DTypeLike = jnp.float32,
) -> Layer:
    """Affine layer ``y = x W + b`` on the last axis of ``x``.

    ``W`` has shape ``(in_features, out_features)`` (so ``fan_in = in_features``), ``b`` shape
    ``(out_features,)``; ``x`` may have any leading axes.

    Args:
      in_features: size of the last axis of ``x``.
      out_features: size of the last axis of ``y``.
      use_bias: add ``b``, default ``True``.
      kernel_init: initializer of ``W``; default ``None`` means ``lecun_normal()`` (Flax's
        default). For ReLU networks use ``he_normal()``.
      bias_init: initializer of ``b``, default ``zeros``; ``constant(0.01)`` is the lectures'
        heuristic for ReLU hidden units.
      param_dtype: dtype of ``W`` and ``b``, default ``float32``.

    Params: ``{"kernel": W, "bias": b}`` (no ``"bias"`` if ``use_bias=False``). State:
    ``EmptyState()``; ``train`` and ``axis_name`` are ignored.

    Matches ``flax.linen.Dense(out_features)`` applied to the same params (same names and
    layout). ``torch.nn.Linear`` stores ``W^T`` (``(out, in)``) and initialises both ``W`` and
    ``b`` from ``U[-1/sqrt(in), 1/sqrt(in)]``.
    """

    if kernel_init is None:
        kernel_init = lecun_normal()

    def init(key: jax.Array | None) -> tuple[Params, EmptyState]:
        kernel_key, bias_key = jax.random.split(key) if key is not None else (None, None)
        params = {"kernel": kernel_init(kernel_key, (in_features, out_features), param_dtype)}
        if use_bias:
            params["bias"] = bias_init(bias_key, (out_features,), param_dtype)
        return params, EmptyState()

    def apply(
        params: Params, state: EmptyState, x: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, EmptyState]:
        del train, axis_name
        if x.shape[-1] != in_features:
            raise ValueError(f"dense: input with last axis {in_features} expected, got shape {x.shape}.")
        y = jnp.matmul(x, params["kernel"])
        if use_bias:
            y = y + params["bias"]
        return y, state

    return Layer(init, apply)
