"""Sophia: clipped momentum preconditioned by a lazily refreshed diagonal Hessian estimate."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
from gradtx.momentum import bias_correction as debias
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.second_order.curvature import hessian_vector_product, random_like
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    moving_average,
    saturating_increment,
    tree_cast,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import (
    check_decay,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)


class HutchinsonState(NamedTuple):
    """State of ``hutchinson_estimator_diag_hessian``: the PRNG ``key`` of the next probe."""

    key: jax.Array


@check_schedule_arguments
def hutchinson_estimator_diag_hessian(random_seed: jax.Array | None = None) -> GradientTransformationExtraArgs:
    """Hutchinson's estimate of the Hessian diagonal as a transformation: ``g -> v * (H v)``.

    .. math::
        \\hat h = v \\odot (\\nabla^2 f(w)\\, v), \\qquad v_i = \\pm 1 \\text{ with probability } 1/2,
        \\qquad \\mathbb{E}[\\hat h] = \\mathrm{diag}(\\nabla^2 f(w))

    ``update(updates, state, params, obj_fn=f)`` ignores ``updates`` and returns ``h_hat`` at
    ``params``; ``H v`` is :func:`gradtx.second_order.hessian_vector_product` (forward over
    reverse) and ``v`` is :func:`gradtx.second_order.curvature.random_like` with a fresh key each call.

    Args:
      random_seed: a PRNG key; None (default) is ``jax.random.PRNGKey(0)``.

    State: ``HutchinsonState(key)``.
    Matches ``optax.contrib.hutchinson_estimator_diag_hessian`` (the same probes for the same key).

    References:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines", 1990. Liu et al., "Sophia", 2023, arXiv:2305.14342.
    """

    def init_fn(params: Params) -> HutchinsonState:
        del params
        return HutchinsonState(random_seed if random_seed is not None else jax.random.PRNGKey(0))

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        check_state_type(state, HutchinsonState, "hutchinson_estimator_diag_hessian")
        del updates, extra_args
        if params is None:
            raise ValueError("hutchinson_estimator_diag_hessian needs params: call update(g, state, params, "
                             "obj_fn=f).")
        if obj_fn is None:
            raise ValueError("hutchinson_estimator_diag_hessian needs the objective: call update(g, state, "
                             "params, obj_fn=f).")
        key, subkey = jax.random.split(state.key)
        probe = random_like(subkey, params, "rademacher")
        product = hessian_vector_product(obj_fn, params, probe)
        return jax.tree.map(lambda v, hv: v * hv, probe, product), HutchinsonState(key)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class SophiaState(NamedTuple):
    """State of ``scale_by_sophia``: step ``count``, momentum ``mu``, the EMA ``nu`` of Hessian-diagonal
    estimates and the estimator's state ``hessian_fn_state`` (Optax's fields)."""

    count: jax.Array
    mu: PyTree
    nu: PyTree
    hessian_fn_state: Any


@check_schedule_arguments
def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    bias_correction: bool = False,
) -> GradientTransformationExtraArgs:
    """Sophia scaling (Liu et al. 2023): momentum over a clipped diagonal-Newton denominator.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        u_t = \\mathrm{clip}\\!\\left(\\frac{m_t}{\\max(\\gamma h_{t-1}, \\epsilon)}, \\pm\\rho\\right)

        h_t = \\beta_2 h_{t-1} + (1-\\beta_2) \\hat h_t \\ \\text{ if } (t-1) \\bmod k = 0,
        \\text{ else } h_t = h_{t-1}

    with ``rho = clip_threshold`` (no clipping if None), ``k = update_interval`` and ``h_hat`` the
    estimate of ``hessian_diagonal_fn`` at the current parameters. Extra keyword arguments of
    ``update`` (``obj_fn=`` for Hutchinson) go to the estimator. ``h_0 = 0``, so the first ``k``
    steps are sign steps ``rho sign(m_t)``.

    Args:
      b1: ``beta_1`` in [0, 1). Default 0.965.
      b2: ``beta_2`` in [0, 1). Default 0.99.
      eps: ``epsilon`` > 0. Default 1e-8.
      gamma: ``gamma`` > 0, the Hessian scale. Default 0.01.
      clip_threshold: ``rho`` > 0 or None. Default 1.0.
      update_interval: ``k``, a positive int. Default 10.
      hessian_diagonal_fn: the estimator (a transformation returning ``h_hat``); None (default) is
        :func:`hutchinson_estimator_diag_hessian`.
      mu_dtype: storage dtype of ``m``.
      verbose: print the fraction of unclipped coordinates (the "win rate") with ``jax.debug.print``.
      print_win_rate_every_n_steps: print every n steps when ``verbose``.
      bias_correction: False (default) uses ``m_t`` as in the paper and the authors' code; True
        divides it by ``1 - beta_1^t`` first, as Optax does.

    State: ``SophiaState(count, mu=m, nu=h, hessian_fn_state)``.
    Matches Optax's Sophia transformation with ``bias_correction=True``. ``h_{t-1}`` (the estimate
    before this step's refresh) is used as in Optax and the authors' code, which refresh after the
    step; Algorithm 3 of the paper refreshes first.

    References:
      Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
      Model Pre-training", ICLR 2024, arXiv:2305.14342.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_positive(eps, "eps")
    check_positive(gamma, "gamma")
    if clip_threshold is not None:
        check_positive(clip_threshold, "clip_threshold")
    if not isinstance(update_interval, int) or isinstance(update_interval, bool) or update_interval < 1:
        raise ValueError(f"update_interval must be a positive int, got {update_interval!r}.")
    estimator = with_extra_args_support(
        hutchinson_estimator_diag_hessian() if hessian_diagonal_fn is None else hessian_diagonal_fn
    )

    def init_fn(params: Params) -> SophiaState:
        check_float_leaves(params)
        return SophiaState(zero_step_count(), tree_zeros_like(params, mu_dtype), tree_zeros_like(params),
                           estimator.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, SophiaState, "scale_by_sophia")
        if params is None:
            raise ValueError("sophia needs params: call update(updates, state, params, obj_fn=f).")
        check_trees_match(updates, state.mu, name="updates", reference_name="sophia state")
        count = saturating_increment(state.count)
        mu = jax.tree.map(lambda g, m: moving_average(g, m, b1), updates, state.mu)
        mu_hat = debias(mu, b1, count) if bias_correction else mu
        new_updates = jax.tree.map(
            lambda m, h: m / jnp.maximum(cast_like(gamma, h) * h, cast_like(eps, h)), mu_hat, state.nu
        )
        if clip_threshold is not None:
            if verbose:
                unclipped = sum(jnp.sum(jnp.abs(u) < clip_threshold) for u in jax.tree.leaves(new_updates))
                size = sum(u.size for u in jax.tree.leaves(new_updates))
                jax.lax.cond(
                    count % max(print_win_rate_every_n_steps, 1) == 0,
                    lambda: jax.debug.print("Sophia optimizer win rate: {}", unclipped / size),
                    lambda: None,
                )
            new_updates = jax.tree.map(lambda u: jnp.clip(u, -clip_threshold, clip_threshold), new_updates)

        def refresh(hessian_state, nu):
            estimate, hessian_state = estimator.update(updates, hessian_state, params, **extra_args)
            nu = jax.tree.map(lambda e, h: cast_like(b2, h) * h + cast_like(1 - b2, h) * e, estimate, nu)
            return hessian_state, nu

        hessian_state, nu = jax.lax.cond(
            state.count % update_interval == 0, refresh, lambda h, n: (h, n), state.hessian_fn_state, state.nu
        )
        return new_updates, SophiaState(count, tree_cast(mu, mu_dtype), nu, hessian_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


@check_schedule_arguments
def sophia(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    weight_decay_mask: MaskOrFn | None = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    bias_correction: bool = False,
) -> GradientTransformationExtraArgs:
    """Sophia (Liu et al. 2023) with decoupled weight decay.

    .. math::
        w_{t+1} = w_t - \\eta_t \\left( \\mathrm{clip}\\!\\left(\\frac{m_t}{\\max(\\gamma h_{t-1},
        \\epsilon)}, \\pm\\rho\\right) + \\lambda w_t \\right)

    with ``m``, ``h`` as in :func:`scale_by_sophia`. Call
    ``update(grads, state, params, obj_fn=loss)`` (``loss(params) -> scalar``) for the default
    Hutchinson estimator.

    Args:
      learning_rate: ``eta`` (a float or a schedule).
      b1, b2, eps, gamma: as in :func:`scale_by_sophia` (defaults 0.965, 0.99, 1e-8, 0.01).
      clip_threshold, update_interval, hessian_diagonal_fn: as there (defaults 1.0, 10, Hutchinson).
      mu_dtype, verbose, print_win_rate_every_n_steps: as there (defaults None, False, 0).
      bias_correction: as there (default False, the paper; True is Optax's).
      weight_decay: ``lambda`` >= 0, multiplied by ``eta``. Default 1e-4.
      weight_decay_mask: which leaves decay.

    State: ``(SophiaState, AddDecayedWeightsState, ScaleByScheduleState)``.
    Matches ``optax.contrib.sophia`` with ``bias_correction=True``; by default the momentum is not
    debiased, as in the paper (the two differ while ``beta_1^t`` is not small: about 100 steps).

    References:
      Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
      Model Pre-training", ICLR 2024, arXiv:2305.14342.
    """
    check_non_negative(weight_decay, "weight_decay")
    return with_extra_args_support(chain(
        scale_by_sophia(b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn, mu_dtype,
                        verbose, print_win_rate_every_n_steps, bias_correction=bias_correction),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    ))


__all__ = [
    "HutchinsonState",
    "SophiaState",
    "hutchinson_estimator_diag_hessian",
    "scale_by_sophia",
    "sophia",
]
