"""Gradient noise and the gradient's spread: noisy SGD, ``scale_by_stddev``, and ``scale_gradient`` for the
backward pass. (Optimistic gradient descent lives in ``gradtx.optimistic``.)
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import chain
from gradtx.rms import scale_by_rms
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_updates_match_params,
    saturating_increment,
    zero_step_count,
)
from gradtx.validation import check_non_negative, check_schedule_arguments, check_state_type


class AddNoiseState(NamedTuple):
    """State of ``add_noise``: the step ``count`` (for the annealing) and the PRNG ``rng_key``."""

    count: jax.Array
    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    """A typed PRNG key from an int seed, a typed key, or a raw ``uint32[2]`` key (``PRNGKey``)."""
    if key is None:
        key = 0
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"key must be an int seed or a PRNG key (jax.random.key or jax.random.PRNGKey), got {key!r}."
    )


@check_schedule_arguments
def add_noise(eta: float, gamma: float, key: jax.Array | int | None = None) -> GradientTransformation:
    """Adds annealed Gaussian noise to the updates.

    .. math::
        u_t = g_t + \\sigma_t \\xi_t, \\qquad \\xi_t \\sim N(0, I), \\qquad
        \\sigma_t^2 = \\frac{\\eta}{t^\\gamma}, \\quad t = 1, 2, \\dots

    Each step splits the state's key into the next key and a sample key; the sample key is split
    once more, one key per leaf in tree order. With the same key the draws are Optax's, number
    for number.

    Args:
      eta: ``eta`` >= 0, the variance at the first step.
      gamma: ``gamma`` >= 0, the annealing exponent (0.55 in the paper).
      key: an int seed, a ``jax.random.key`` or a ``jax.random.PRNGKey``. Default None, seed 0
        (as Optax, which warns that a key will be required).

    State: ``AddNoiseState(count, rng_key)``. Matches ``optax.add_noise``.
    Reference: Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
    Networks", arXiv:1511.06807, 2015.
    """
    check_non_negative(eta, "eta")
    check_non_negative(gamma, "gamma")
    initial_key = _as_key(key)

    def init_fn(params: Params) -> AddNoiseState:
        check_float_leaves(params)
        return AddNoiseState(zero_step_count(), initial_key)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, AddNoiseState, "add_noise")
        check_updates_match_params(updates, params, "add_noise")
        del params, extra_args
        count = saturating_increment(state.count)
        rng_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        leaf_keys = jax.random.split(sample_key, len(leaves))
        std = jnp.sqrt(eta / count.astype(jnp.promote_types(jnp.result_type(eta), jnp.float32)) ** gamma)
        noisy = [
            g + cast_like(std, g) * jax.random.normal(leaf_key, jnp.shape(g), jnp.result_type(g))
            for g, leaf_key in zip(leaves, leaf_keys)
        ]
        return jax.tree.unflatten(treedef, noisy), AddNoiseState(count, rng_key)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def noisy_sgd(
    learning_rate: ScalarOrSchedule, eta: float = 0.01, gamma: float = 0.55, key: jax.Array | int | None = None
) -> GradientTransformation:
    """SGD on gradients with annealed Gaussian noise.

    .. math::
        w_t = w_{t-1} - \\eta^{lr}_t \\left(g_t + \\sqrt{\\eta / t^\\gamma} \\, \\xi_t\\right),
        \\qquad \\xi_t \\sim N(0, I), \\quad t = 1, 2, \\dots

    Args:
      learning_rate: ``eta^lr`` >= 0 or a schedule.
      eta: the noise variance at the first step, >= 0. Default 0.01.
      gamma: the annealing exponent, >= 0. Default 0.55.
      key: PRNG key or int seed (see ``add_noise``). Default None, seed 0.

    State: ``(AddNoiseState(count, rng_key), ScaleByScheduleState(step_count))``.
    Matches ``optax.noisy_sgd`` draw for draw with the same key.
    Reference: Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
    Networks", arXiv:1511.06807, 2015.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))


@check_schedule_arguments
def scale_by_stddev(
    decay: ScalarOrSchedule = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Divides by the gradient's moving standard deviation (centered RMSProp's scaling).

    .. math::
        m_t = \\rho m_{t-1} + (1-\\rho) g_t, \\qquad \\nu_t = \\rho \\nu_{t-1} + (1-\\rho) g_t^2,
        \\qquad u_t = \\frac{g_t}{\\sqrt{\\nu_t - m_t^2 + \\epsilon}}

    (``eps_in_sqrt=False``: ``g / (sqrt(nu - m^2) + eps)``; ``bias_correction``: ``m`` and ``nu``
    divided by ``1 - rho^t`` first). This is ``scale_by_rms(..., centered=True)``.

    Args:
      decay: ``rho`` in [0, 1) or a schedule. Default 0.9.
      eps: ``epsilon`` > 0. Default 1e-8.
      initial_scale: ``nu_0`` >= 0. Default 0.
      eps_in_sqrt: where ``epsilon`` goes. Default True.
      bias_correction: debias the averages. Default False.

    State: ``RmsState(step_count, nu, mu)`` whatever the flags (Optax's is
    ``ScaleByRStdDevState(mu, nu)``, with a count only when debiasing).
    Matches ``optax.scale_by_stddev``. Reference: Graves, "Generating Sequences With Recurrent
    Neural Networks", arXiv:1308.0850, 2013 (Eq. 38-41).
    """
    return scale_by_rms(
        decay=decay,
        eps=eps,
        initial_scale=initial_scale,
        eps_in_sqrt=eps_in_sqrt,
        centered=True,
        bias_correction=bias_correction,
    )


@jax.custom_vjp
def _scaled_backward(inputs: PyTree, scale: Any) -> PyTree:
    return inputs


def _scaled_backward_fwd(inputs, scale):
    return inputs, scale


def _scaled_backward_bwd(scale, cotangent):
    return jax.tree.map(lambda c: c * cast_like(scale, c), cotangent), jnp.zeros_like(scale)


_scaled_backward.defvjp(_scaled_backward_fwd, _scaled_backward_bwd)


def scale_gradient(inputs: PyTree, scale: float | jax.Array) -> PyTree:
    """The identity on the forward pass; multiplies the gradient by ``scale`` on the backward pass.

    .. math::
        y = x, \\qquad \\frac{\\partial L}{\\partial x} = s \\, \\frac{\\partial L}{\\partial y}

    ``scale = -1`` is a gradient reversal layer; ``scale = 0`` is ``jax.lax.stop_gradient``.

    Args:
      inputs: a pytree of arrays.
      scale: ``s``, a number or a scalar array.

    Matches ``optax.scale_gradient``. Reference: Ganin & Lempitsky, "Unsupervised Domain
    Adaptation by Backpropagation", ICML 2015 (gradient reversal).
    """
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        if scale == 1:
            return inputs
        if scale == 0:
            return jax.lax.stop_gradient(inputs)
    return _scaled_backward(inputs, jnp.asarray(scale))
