"""Schedules that interpolate between values at boundaries: piecewise interpolation and one-cycle."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from gradtx.base import Schedule
from gradtx.schedules._steps import blend, falling, float_step, half_cosine, progress, reached, steps_arg
from gradtx.validation import check_non_negative


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """Values at boundary steps, joined by linear or cosine interpolation.

    With boundaries ``b_1 < b_2 < ... < b_n`` (and ``b_0 = 0``), scales ``s_1, ..., s_n`` and the
    values ``v_0 = eta_0``, ``v_i = v_{i-1} s_i`` (the scales accumulate)::

        eta_t = v_i * w + v_{i+1} * (1 - w)       for b_i <= t < b_{i+1}
        eta_t = v_n                               for t >= b_n

    with ``a = (t - b_i) / (b_{i+1} - b_i)`` and ``w = 1 - a`` (``'linear'``) or
    ``w = (1 + cos(pi a)) / 2`` (``'cosine'``). Each ``v_i`` is hit exactly at ``b_i``.

    Args:
      interpolate_type: ``'linear'`` or ``'cosine'``.
      init_value: ``eta_0 = v_0``.
      boundaries_and_scales: ``{b_i: s_i}``; boundaries are non-negative integers, Python-number
        scales must be ``>= 0``. Default ``None``: the constant ``eta_0``.

    Matches ``optax.piecewise_interpolate_schedule(interpolate_type, init_value,
    boundaries_and_scales)`` at every step ``t >= 0`` (to rounding: Optax's ``v_i + (v_{i+1} - v_i) a``
    and ``v_{i+1} + (v_i - v_{i+1}) (cos(pi a) + 1) / 2`` need not give ``v_i`` exactly at ``b_i``).
    Reference: Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """
    if interpolate_type not in ("linear", "cosine"):
        raise ValueError(f"interpolate_type must be 'linear' or 'cosine', got {interpolate_type!r}.")
    items = []
    for boundary, scale in (boundaries_and_scales or {}).items():
        boundary = steps_arg(boundary, f"boundary {boundary!r} in boundaries_and_scales", positive=False)
        check_non_negative(scale, f"boundaries_and_scales[{boundary}]")
        items.append((boundary, scale))
    items.sort(key=lambda item: item[0])
    starts = [0] + [boundary for boundary, _ in items]

    def schedule(step_count: jax.Array) -> jax.Array:
        t = float_step(step_count)
        values = [init_value * jnp.ones_like(t)]
        for _, scale in items:
            values.append(values[-1] * scale)
        value = values[0]
        for i in range(len(items)):
            start, end = starts[i], starts[i + 1]
            done = progress(t - float(start), max(end - start, 1))
            weights = falling(done, 1) if interpolate_type == "linear" else half_cosine(done)
            value = jnp.where(reached(step_count, start), blend(values[i], values[i + 1], *weights), value)
        if items:
            value = jnp.where(reached(step_count, starts[-1]), values[-1], value)
        return value

    return schedule


def _check_transition_steps(transition_steps: int) -> int:
    return steps_arg(transition_steps, "transition_steps", positive=True)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy with linear phases: up to ``peak_value``, back down, then annealed.

    With ``T = transition_steps``, ``eta_0 = peak_value / div_factor``::

        0 -> int(pct_start T):              eta_0 -> peak_value               (linear)
        int(pct_start T) -> int(pct_final T): peak_value -> eta_0             (linear)
        int(pct_final T) -> T:              eta_0 -> eta_0 / final_div_factor (linear)

    and ``eta_0 / final_div_factor`` from ``T`` on. It is ``piecewise_interpolate_schedule('linear',
    eta_0, {int(pct_start T): div_factor, int(pct_final T): 1 / div_factor, T: 1 / final_div_factor})``.

    Args:
      transition_steps: ``T > 0``, the length of the cycle.
      peak_value: the largest value, reached at step ``int(pct_start T)``.
      pct_start: fraction of the cycle spent rising, default ``0.3``.
      pct_final: fraction of the cycle after which the annealing phase starts, default ``0.85``.
      div_factor: ``peak_value / eta_0``, default ``25.0``.
      final_div_factor: ``eta_0 / eta_final``, default ``1e4``.

    Matches ``optax.linear_onecycle_schedule`` with the same arguments. Reference: Smith and
    Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates",
    2017 (arXiv:1708.07120).
    """
    transition_steps = _check_transition_steps(transition_steps)
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(pct_final * transition_steps): 1.0 / div_factor,
            transition_steps: 1.0 / final_div_factor,
        },
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy with cosine phases: up to ``peak_value``, then down to a small final value.

    With ``T = transition_steps``, ``eta_0 = peak_value / div_factor``::

        0 -> int(pct_start T): eta_0 -> peak_value                        (cosine)
        int(pct_start T) -> T: peak_value -> eta_0 / final_div_factor     (cosine)

    and ``eta_0 / final_div_factor`` from ``T`` on; a cosine phase from ``a`` to ``b`` is
    ``a w + b (1 - w)`` with ``w = (1 + cos(pi s / S)) / 2`` after ``s`` of its ``S`` steps.

    Args:
      transition_steps: ``T > 0``, the length of the cycle.
      peak_value: the largest value, reached at step ``int(pct_start T)``.
      pct_start: fraction of the cycle spent rising, default ``0.3``.
      div_factor: ``peak_value / eta_0``, default ``25.0``.
      final_div_factor: ``eta_0 / eta_final``, default ``1e4``.

    Matches ``optax.cosine_onecycle_schedule`` with the same arguments. Reference: Smith and
    Topin, "Super-Convergence", 2017 (arXiv:1708.07120).
    """
    transition_steps = _check_transition_steps(transition_steps)
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(transition_steps): 1.0 / (div_factor * final_div_factor),
        },
    )
