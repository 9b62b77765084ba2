"""ADOPT: Adam with the second moment of the *previous* step and momentum after normalization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.adam import AdamState
from gradtx.base import GradientTransformation, Params, ScalarOrSchedule
from gradtx.combinators import chain
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    cast_eps_like,
    cast_like,
    check_float_leaves,
    check_trees_match,
    saturating_increment,
    tree_cast,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import check_decay, check_positive, check_schedule_arguments, check_state_type


def _quarter_power(t: jax.Array) -> jax.Array:
    return t**0.25


@check_schedule_arguments
def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _quarter_power,
) -> GradientTransformation:
    """ADOPT scaling (Taniguchi et al. 2024, Algorithm 2).

    Step 0 only initializes ``v_0 = g_0^2`` (the update is zero). For ``t >= 1``:

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\,
        \\mathrm{clip}\\!\\left(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, c_t\\right), \\qquad
        u_t = m_t, \\qquad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

    with ``c_t = clip_value_fn(t) = t^(1/4)`` (no clipping if ``use_clipping=False``). Dividing by
    ``v_{t-1}``, which does not contain ``g_t``, is what makes ADOPT converge for any ``beta_2``.
    With ``nesterov`` the update is ``beta_1 m_t + (1 - beta_1) clip(...)``.

    Args:
      b1: ``beta_1`` in [0, 1). Default 0.9.
      b2: ``beta_2`` in [0, 1). Default 0.9999.
      eps: ``epsilon`` > 0, the floor of ``sqrt(v)``. Default 1e-6.
      mu_dtype: storage dtype of ``m``.
      nesterov: the Nesterov update above (default False).
      use_clipping: clip the normalized gradient to ``+-c_t`` (default True).
      clip_value_fn: ``t -> c_t``, called with the int32 step ``t`` (0 at the initializing step).
        Default ``t ** 0.25``.

    State: ``AdamState(step_count, mu=m, nu=v)``.
    Matches ``optax.contrib.scale_by_adopt``. The authors' code (and ``pytorch_optimizer.ADOPT``)
    counts the initializing call as step 1, so its ``clip_lambda(step)`` is ``c_{t+1}`` here: pass
    ``clip_value_fn=lambda t: (t + 1) ** 0.25`` to reproduce it. We follow Algorithm 2 of the paper
    (``c_1 = 1`` at the first update).

    References:
      Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa & Matsuo,
      "ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate", NeurIPS 2024,
      arXiv:2411.02853.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_positive(eps, "eps")

    def init_fn(params: Params) -> AdamState:
        check_float_leaves(params)
        return AdamState(zero_step_count(), tree_zeros_like(params, mu_dtype), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, AdamState, "scale_by_adopt")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="adopt state")
        first = state.step_count == 0
        # Step 0: v_0 = g_0^2 and m stays 0 (beta_2 -> 0 and beta_1 -> 1 for that step only).
        beta2 = jnp.where(first, 0.0, b2)
        beta1 = jnp.where(first, 1.0, b1)

        def normalized(g, v):
            scaled = g / jnp.maximum(jnp.sqrt(v), cast_eps_like(eps, v))
            if use_clipping:
                c = cast_like(clip_value_fn(state.step_count), scaled)
                scaled = jnp.clip(scaled, -c, c)
            return scaled

        steps = jax.tree.map(normalized, updates, state.nu)
        mix = lambda m, s: cast_like(beta1, m) * m + cast_like(1 - beta1, m) * s  # noqa: E731
        mu = jax.tree.map(mix, state.mu, steps)
        nu = jax.tree.map(lambda g, v: cast_like(beta2, v) * v + cast_like(1 - beta2, v) * jnp.square(g), updates,
                          state.nu)
        new_updates = jax.tree.map(mix, mu, steps) if nesterov else mu
        new_updates = jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates)
        return new_updates, AdamState(saturating_increment(state.step_count), tree_cast(mu, mu_dtype), nu)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _quarter_power,
) -> GradientTransformation:
    """ADOPT (Taniguchi et al. 2024): ``w_t = w_{t-1} - eta_t m_t`` with ``m_t`` from :func:`scale_by_adopt`.

    .. math::
        w_t = w_{t-1} - \\eta_t\\, m_t, \\qquad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\,\\mathrm{clip}(g_t / \\max(\\sqrt{v_{t-1}}, \\epsilon), t^{1/4})

    Args: as in :func:`scale_by_adopt`, plus ``learning_rate`` (``eta``, a float or a schedule).
    Defaults ``b1=0.9, b2=0.9999, eps=1e-6``.

    State: ``(AdamState, ScaleByScheduleState)``.
    Matches ``optax.contrib.adopt``, and ``pytorch_optimizer.ADOPT`` with
    ``clip_lambda=lambda step: (step - 1) ** 0.25`` (see :func:`scale_by_adopt` for the step index).

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate",
      NeurIPS 2024, arXiv:2411.02853.
    """
    return chain(
        scale_by_adopt(b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping,
                       clip_value_fn=clip_value_fn),
        scale_by_learning_rate(learning_rate),
    )


__all__ = ["adopt", "scale_by_adopt"]
