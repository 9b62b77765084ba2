"""Differentially private SGD: per-example clipping plus Gaussian noise (Abadi et al. 2016)."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, ScalarOrSchedule, identity
from gradtx.clipping import per_example_global_norm_clip
from gradtx.combinators import chain
from gradtx.momentum import trace
from gradtx.scaling import scale_by_learning_rate
from gradtx.validation import check_non_negative, check_schedule_arguments


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of ``differentially_private_aggregate``: ``rng_key``, the typed PRNG key of the next noise."""

    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, (jax.Array,)) and key.dtype == jnp.uint32 and key.ndim == 1:
        return jax.random.wrap_key_data(key)  # a legacy ``jax.random.PRNGKey``
    if isinstance(key, int) and not isinstance(key, bool):
        return jax.random.key(key)
    raise TypeError(f"key must be a jax.random.key, a legacy PRNGKey or an int seed, got {type(key).__name__}.")


@check_schedule_arguments
def differentially_private_aggregate(
    l2_norm_clip: float,
    noise_multiplier: float,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """The DP-SGD aggregate (Abadi et al. 2016): clip each example's gradient, sum, add noise, average.

    The updates hold per-example gradients ``g_b`` (every leaf with the batch axis first, e.g.
    from ``jax.vmap(jax.grad(loss))``); with ``B`` the batch size, ``C = l2_norm_clip`` and
    ``sigma = noise_multiplier``:

    .. math::
        \\bar g = \\frac{1}{B}\\Big(\\sum_{b=1}^B g_b \\min\\Big(1, \\frac{C}{\\|g_b\\|_2}\\Big)
        + \\mathcal N(0, \\sigma^2 C^2 I)\\Big)

    ``||g_b||`` is the norm over all leaves. The noise of each leaf is drawn with its own key,
    split from the state's key as ``split(key, n_leaves + 1) = (next_key, k_1, ..., k_n)``.
    It must come first in a chain; accumulation wrappers (``MultiSteps``, ``apply_every``) would
    average already-privatized means.

    Args:
      l2_norm_clip: ``C`` >= 0.
      noise_multiplier: ``sigma`` >= 0, the noise's standard deviation relative to ``C``.
      key: a ``jax.random.key`` (or a legacy ``PRNGKey``, or an int seed). None uses
        ``jax.random.key(0)`` with a warning, as Optax does.
      seed: an int seed instead of ``key`` (Optax's older argument).

    State: ``DifferentiallyPrivateAggregateState(rng_key)``.

    Matches ``optax.contrib.differentially_private_aggregate``: the same key gives the same
    noise.

    References:
      Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang, "Deep Learning with Differential
      Privacy", CCS 2016, arXiv:1607.00133.
    """
    check_non_negative(l2_norm_clip, "l2_norm_clip")
    check_non_negative(noise_multiplier, "noise_multiplier")
    if seed is not None:
        if key is not None:
            raise ValueError("Give only one of key and seed.")
        key = seed
    if key is None:
        warnings.warn(
            "differentially_private_aggregate: no key given; using jax.random.key(0), so every run "
            "draws the same noise. Pass key=jax.random.key(...).",
            stacklevel=2,
        )
        key = 0
    key = _as_key(key)
    noise_std = l2_norm_clip * noise_multiplier

    def init_fn(params):
        del params
        return DifferentiallyPrivateAggregateState(rng_key=key)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates, state
        batch_size = leaves[0].shape[0] if jnp.ndim(leaves[0]) else None
        clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        next_key, *leaf_keys = jax.random.split(state.rng_key, len(leaves) + 1)
        noised = [
            (g + noise_std * jax.random.normal(k, g.shape, g.dtype)) / batch_size for g, k in zip(clipped, leaf_keys)
        ]
        return jax.tree.unflatten(treedef, noised), DifferentiallyPrivateAggregateState(rng_key=next_key)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: float,
    noise_multiplier: float,
    seed: int,
    momentum: float | None = None,
    nesterov: bool = False,
) -> GradientTransformation:
    """DP-SGD (Abadi et al. 2016): SGD (optionally with momentum) on the private aggregate.

    .. math::
        \\bar g_t = \\frac{1}{B}\\Big(\\sum_b g_{t,b} \\min\\Big(1, \\frac{C}{\\|g_{t,b}\\|}\\Big)
        + \\mathcal N(0, \\sigma^2 C^2 I)\\Big), \\qquad
        b_t = \\bar g_t + \\mu b_{t-1}, \\qquad w_{t+1} = w_t - \\eta_t b_t

    (``b_t = bar g_t`` without momentum; Nesterov uses ``bar g_t + mu b_t``.)

    Args:
      learning_rate: ``eta`` (a float or schedule).
      l2_norm_clip: ``C`` >= 0, the per-example clipping norm.
      noise_multiplier: ``sigma`` >= 0.
      seed: int seed of the noise key, ``jax.random.key(seed)``.
      momentum: ``mu`` in [0, 1), or None (default) for plain SGD.
      nesterov: Nesterov momentum. Default False.

    The updates are per-example gradients (batch axis first), as in
    ``differentially_private_aggregate``. State: the ``chain`` of
    ``differentially_private_aggregate``, ``trace`` (or ``identity``) and ``scale_by_learning_rate``.
    Matches ``optax.contrib.dpsgd`` (same seed, same noise).

    References:
      Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, arXiv:1607.00133.
    """
    return chain(
        differentially_private_aggregate(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier, seed=seed),
        trace(decay=momentum, nesterov=nesterov) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )
