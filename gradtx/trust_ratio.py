"""Layer-wise trust ratios: steps sized relative to each parameter block (LARS, LAMB, Fromage).

A *block* is one leaf of the parameter tree (a weight matrix, a bias vector). These methods
rescale the update of each block by ``||w|| / ||u||`` (a *trust ratio*), so that every layer
moves by the same fraction of its own norm whatever the scale of its gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.adam import scale_by_adam
from gradtx.base import EmptyState, GradientTransformation, Params, ScalarOrSchedule, value_at
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import trace
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_trees_match,
    keep_dtype,
    saturating_increment,
    zero_step_count,
)
from gradtx.validation import check_decay, check_empty_state, check_non_negative, check_schedule_arguments

_PARAMS_REQUIRED = "{name} needs the parameters: call update(updates, state, params)."


ScaleByTrustRatioState = EmptyState  # Optax's name for the state of ``scale_by_trust_ratio``


def _require_params(updates, params, name: str) -> None:
    if params is None:
        raise ValueError(_PARAMS_REQUIRED.format(name=name))
    check_trees_match(updates, params, name="updates", reference_name="params")


def _norm(x: jax.Array) -> jax.Array:
    """``||x||_2`` of a whole leaf, in float32 or wider (a bfloat16 sum of squares loses digits)."""
    wide = jnp.promote_types(jnp.result_type(x), jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(keep_dtype(jnp.asarray(x), wide))))


def _rms(x: jax.Array) -> jax.Array:
    """``sqrt(mean(x^2))`` of a whole leaf, in float32 or wider."""
    wide = jnp.promote_types(jnp.result_type(x), jnp.float32)
    return jnp.sqrt(jnp.mean(jnp.square(keep_dtype(jnp.asarray(x), wide))))


@check_schedule_arguments
def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    """Scales each block's update by its trust ratio ``||w|| / ||u||``; needs ``params``.

    For each leaf ``w`` with incoming update ``u``:

    .. math::
        n_w = \\max(\\|w\\|_2, n_{min}), \\quad n_u = \\max(\\|u\\|_2, n_{min}), \\qquad
        u \\leftarrow u \\cdot \\begin{cases} 1 & n_w = 0 \\text{ or } n_u = 0 \\\\
        \\dfrac{c \\, n_w}{n_u + \\epsilon} & \\text{otherwise} \\end{cases}

    The ratio is 1 where either norm is 0, so zero-initialised blocks (biases) still move; the
    papers leave that case undefined.

    Args:
      min_norm: ``n_min`` >= 0, a floor for both norms. Default 0 (no floor).
      trust_coefficient: ``c`` >= 0. Default 1.
      eps: ``epsilon`` >= 0 added to the denominator. Default 0.

    State: ``EmptyState()``. Matches ``optax.scale_by_trust_ratio``.
    Reference: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
    arXiv:1708.03888, 2017; You et al., "Large Batch Optimization for Deep Learning: Training
    BERT in 76 minutes", ICLR 2020, arXiv:1904.00962.
    """
    check_non_negative(min_norm, "min_norm")
    check_non_negative(trust_coefficient, "trust_coefficient")
    check_non_negative(eps, "eps")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "scale_by_trust_ratio")
        del extra_args
        _require_params(updates, params, "scale_by_trust_ratio")

        def scaled(u, w):
            w_norm, u_norm = _norm(w), _norm(u)
            w_norm = jnp.maximum(w_norm, cast_like(min_norm, w_norm))
            u_norm = jnp.maximum(u_norm, cast_like(min_norm, u_norm))
            ratio = cast_like(trust_coefficient, w_norm) * w_norm / (u_norm + cast_like(eps, w_norm))
            ratio = jnp.where((w_norm == 0) | (u_norm == 0), jnp.ones_like(ratio), ratio)
            return u * cast_like(ratio, u)

        return jax.tree.map(scaled, updates, params), state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def scale_by_param_block_norm(min_scale: float = 1e-3) -> GradientTransformation:
    """Multiplies each block's update by the norm of that block's parameters; needs ``params``.

    .. math::
        u \\leftarrow u \\cdot \\max(\\|w\\|_2, s_{min})

    Followed by a normalised direction (``u / ||u||``) this makes steps relative to the size of
    each layer, as in LARS and Fromage.

    Args:
      min_scale: ``s_min`` >= 0, the smallest factor, so zero blocks still move. Default 1e-3.

    State: ``EmptyState()``. Matches ``optax.scale_by_param_block_norm``.
    Reference: You, Gitman, Ginsburg, arXiv:1708.03888, 2017 (layer-wise step sizes).
    """
    check_non_negative(min_scale, "min_scale")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "scale_by_param_block_norm")
        del extra_args
        _require_params(updates, params, "scale_by_param_block_norm")

        def scaled(u, w):
            norm = _norm(w)
            return u * cast_like(jnp.maximum(norm, cast_like(min_scale, norm)), u)

        return jax.tree.map(scaled, updates, params), state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """Multiplies each block's update by the root mean square of that block's parameters.

    .. math::
        u \\leftarrow u \\cdot \\max(\\mathrm{RMS}(w), s_{min}), \\qquad
        \\mathrm{RMS}(w) = \\sqrt{\\tfrac{1}{n} \\textstyle\\sum_i w_i^2}

    Adafactor's *relative step size* (``multiply_by_parameter_scale``). Needs ``params``.

    Args:
      min_scale: ``s_min`` >= 0 (Adafactor's ``epsilon_2``). Default 1e-3.

    State: ``EmptyState()``. Matches ``optax.scale_by_param_block_rms``.
    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018, arXiv:1804.04235 (Section 8).
    """
    check_non_negative(min_scale, "min_scale")

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "scale_by_param_block_rms")
        del extra_args
        _require_params(updates, params, "scale_by_param_block_rms")

        def scaled(u, w):
            rms = _rms(w)
            return u * cast_like(jnp.maximum(rms, cast_like(min_scale, rms)), u)

        return jax.tree.map(scaled, updates, params), state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """LAMB: Adam's direction plus decoupled weight decay, rescaled per block by its trust ratio.

    .. math::
        r_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}
        \\ (\\text{Adam, debiased}), \\qquad d_t = r_t + \\lambda_t w_{t-1}

        w_t = w_{t-1} - \\eta_t \\frac{\\|w_{t-1}\\|}{\\|d_t\\|} d_t \\quad \\text{per block}

    with ratio 1 where ``||w|| = 0`` or ``||d|| = 0``. This is Algorithm 2 of the paper with
    ``phi`` the identity (as in its experiments); ``pytorch_optimizer.Lamb`` differs (no
    debiasing of ``v``, ``||w||`` clipped at 10, ``eps`` in the ratio).

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      b1, b2: ``beta_1``, ``beta_2`` in [0, 1) or schedules. Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0 outside the root. Default 1e-6.
      eps_root: ``epsilon_root`` >= 0 inside the root. Default 0.
      weight_decay: ``lambda`` >= 0 or a schedule. Default 0.
      mask: tree of booleans (or ``params -> tree``) selecting the leaves to decay. Default all.

    State: ``(AdamState, AddDecayedWeightsState, EmptyState, ScaleByScheduleState)``.
    Matches ``optax.lamb``.
    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020, arXiv:1904.00962.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


class ScaleByLarsState(NamedTuple):
    """State of the first stage of ``lars``: the step count, for a scheduled weight decay."""

    step_count: jax.Array


def _full_mask(mask: MaskOrFn, params: Params) -> Any:
    """The mask (a bool, a prefix tree or ``params -> tree``) as one bool per leaf of ``params``."""
    mask_tree = mask(params) if callable(mask) else mask
    return jax.tree.map(lambda keep, sub: jax.tree.map(lambda _: bool(keep), sub), mask_tree, params)


def _scale_by_lars(
    weight_decay: ScalarOrSchedule,
    weight_decay_mask: MaskOrFn,
    trust_coefficient: float,
    eps: float,
    trust_ratio_mask: MaskOrFn,
) -> GradientTransformation:
    """LARS's scaled direction ``trust(w, g) (g + lambda w)``, the paper's trust ratio, per block."""

    def init_fn(params: Params) -> ScaleByLarsState:
        del params
        return ScaleByLarsState(zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _require_params(updates, params, "lars")
        decay_mask = _full_mask(weight_decay_mask, params)
        ratio_mask = _full_mask(trust_ratio_mask, params)
        decay = value_at(weight_decay, state.step_count)

        def direction(g, w, decays, scaled):
            lam = cast_like(decay, g) if decays else jnp.zeros([], jnp.result_type(g))
            d = g + lam * w
            if not scaled:
                return d
            w_norm, g_norm = _norm(w), _norm(g)
            denominator = g_norm + cast_like(lam, w_norm) * w_norm + cast_like(eps, w_norm)
            ratio = cast_like(trust_coefficient, w_norm) * w_norm / denominator
            ratio = jnp.where((w_norm == 0) | (denominator == 0), jnp.ones_like(ratio), ratio)
            return d * cast_like(ratio, d)

        new_updates = jax.tree.map(direction, updates, params, decay_mask, ratio_mask)
        return new_updates, ScaleByLarsState(saturating_increment(state.step_count))

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: MaskOrFn = True,
    momentum: ScalarOrSchedule = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS: momentum SGD with a layer-wise learning rate ``eta ||w|| / (||g|| + lambda ||w||)``.

    Per block (Algorithm 1 of the paper, learning rate inside the momentum):

    .. math::
        \\rho_t = \\frac{c \\, \\|w_{t-1}\\|}{\\|g_t\\| + \\lambda_t \\|w_{t-1}\\| + \\epsilon}, \\qquad
        v_t = \\mu v_{t-1} + \\eta_t \\rho_t (g_t + \\lambda_t w_{t-1}), \\qquad w_t = w_{t-1} - v_t

    with ``rho = 1`` where ``||w|| = 0`` or the denominator is 0, ``lambda = 0`` on leaves outside
    ``weight_decay_mask`` and ``rho = 1`` outside ``trust_ratio_mask``. With ``nesterov`` the
    step is ``eta rho d + mu v_t`` as in ``trace``.

    Differs from ``optax.lars`` when ``weight_decay > 0``: Optax's ratio divides by
    ``||g + lambda w||``, the paper's (followed here, and by ``pytorch_optimizer.LARS``) by
    ``||g|| + lambda ||w||``. With ``weight_decay = 0`` the two are the same. Optax's rule is
    ``chain(add_decayed_weights(wd, mask), masked(scale_by_trust_ratio(trust_coefficient=c, eps=eps),
    trust_ratio_mask), scale_by_learning_rate(lr), trace(momentum, nesterov))``.

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      weight_decay: ``lambda`` >= 0 or a schedule. Default 0.
      weight_decay_mask: bool, tree of booleans or ``params -> tree``: leaves to decay. Default all.
      trust_coefficient: ``c`` >= 0. Default 0.001.
      eps: ``epsilon`` >= 0 in the ratio's denominator. Default 0.
      trust_ratio_mask: as ``weight_decay_mask``, the leaves that get a trust ratio. Default all.
      momentum: ``mu`` in [0, 1) or a schedule. Default 0.9.
      nesterov: Nesterov momentum. Default False.

    State: ``(ScaleByLarsState(step_count), ScaleByScheduleState(step_count), TraceState)``.
    Reference: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
    arXiv:1708.03888, 2017.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_non_negative(weight_decay, "weight_decay")
    check_non_negative(trust_coefficient, "trust_coefficient")
    check_non_negative(eps, "eps")
    check_decay(momentum, "momentum")
    return chain(
        _scale_by_lars(weight_decay, weight_decay_mask, trust_coefficient, eps, trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov),
    )


class FromageState(NamedTuple):
    """State of the second stage of ``fromage``: the step count, for a scheduled learning rate."""

    step_count: jax.Array


def _fromage_step(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """``u = (w - eta r) / sqrt(1 + eta^2) - w`` for an already trust-scaled ``r``."""

    def init_fn(params: Params) -> FromageState:
        del params
        return FromageState(zero_step_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _require_params(updates, params, "fromage")
        eta = value_at(learning_rate, state.step_count)
        shrink = 1 / jnp.sqrt(1 + jnp.square(jnp.asarray(eta)))

        def step(r, w):
            s = cast_like(shrink, r)
            return -cast_like(eta, r) * s * r + (s - 1) * w

        return jax.tree.map(step, updates, params), FromageState(saturating_increment(state.step_count))

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def fromage(learning_rate: ScalarOrSchedule, min_norm: float = 1e-6) -> GradientTransformation:
    """Fromage (Frobenius matched gradient descent): a relative step, then a shrink by ``sqrt(1 + eta^2)``.

    Per block:

    .. math::
        w_t = \\frac{1}{\\sqrt{1 + \\eta_t^2}}
        \\left(w_{t-1} - \\eta_t \\frac{\\max(\\|w_{t-1}\\|, n_{min})}{\\max(\\|g_t\\|, n_{min})} g_t\\right)

    with ratio 1 where a norm is 0 (only reachable with ``min_norm = 0``). The shrink undoes
    the growth of ``||w||`` that a step orthogonal to ``w`` causes.

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      min_norm: ``n_min`` >= 0, a floor for both norms. Default 1e-6.

    State: ``(EmptyState(), FromageState(step_count))``. Matches ``optax.fromage`` (whose
    state is the equivalent three-stage chain) and ``pytorch_optimizer.Fromage``.
    Reference: Bernstein, Vahdat, Yue, Liu, "On the distance between two neural networks and
    the stability of learning", NeurIPS 2020, arXiv:2002.03432 (Algorithm 1).
    """
    check_non_negative(learning_rate, "learning_rate")
    check_non_negative(min_norm, "min_norm")
    return chain(scale_by_trust_ratio(min_norm), _fromage_step(learning_rate))
