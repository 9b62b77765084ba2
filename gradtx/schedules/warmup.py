"""Schedules joined from pieces: ``join_schedules``, linear warmups, warm restarts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.base import Schedule
from gradtx.schedules._steps import blend, float_step, half_cosine, progress, reached, since, steps_arg
from gradtx.schedules.decay import as_schedule, exponential_decay, linear_schedule
from gradtx.validation import check_positive


def join_schedules(
    schedules: Sequence[Schedule | jax.typing.ArrayLike],
    boundaries: Sequence[int],
) -> Schedule:
    """Runs ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, and so on.

    With boundaries ``b_1 <= b_2 <= ...`` (and ``b_0 = 0``)::

        eta_t = schedule_i(t - b_i)        for b_i <= t < b_{i+1}

    Each piece sees the steps elapsed since its own start, so it begins again at its ``t = 0``.

    Args:
      schedules: ``n >= 1`` schedules; a plain number or array is taken as a constant.
      boundaries: ``n - 1`` non-decreasing, non-negative integer steps. A piece between two
        equal boundaries is never used.

    Matches ``optax.join_schedules(schedules, boundaries)``. Torch's nearest is
    ``torch.optim.lr_scheduler.SequentialLR``, which switches between stateful schedulers at
    milestones; it is not compared here.
    """
    pieces = [as_schedule(piece) for piece in schedules]
    if not pieces:
        raise ValueError("schedules must hold at least one schedule, got none.")
    if len(boundaries) != len(pieces) - 1:
        raise ValueError(
            "boundaries must hold one step fewer than there are schedules, got "
            f"{len(boundaries)} boundaries for {len(pieces)} schedules."
        )
    steps = [steps_arg(step, f"boundaries[{i}]", positive=False) for i, step in enumerate(boundaries)]
    if any(later < earlier for earlier, later in zip(steps[:-1], steps[1:], strict=True)):
        raise ValueError(f"boundaries must be non-decreasing, got {list(boundaries)!r}.")

    def schedule(step_count: jax.Array) -> jax.Array:
        step_count = jnp.asarray(step_count)
        value = pieces[0](step_count)
        for boundary, piece in zip(steps, pieces[1:], strict=True):
            value = jnp.where(reached(step_count, boundary), piece(since(step_count, boundary)), value)
        return value

    return schedule


def warmup_constant_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then ``peak_value`` for good.

    With ``W = warmup_steps``::

        eta_t = (1 - t / W) * eta_0 + (t / W) * eta_peak      for t < W
        eta_t = eta_peak                                      for t >= W

    Args:
      init_value: ``eta_0``, the value at ``t = 0``.
      peak_value: ``eta_peak``, reached at ``t = W`` and held.
      warmup_steps: ``W >= 0`` (``0``: the constant ``eta_0``, as in Optax).

    Matches ``optax.warmup_constant_schedule(init_value, peak_value, warmup_steps)``; it is
    ``linear_schedule(init_value, peak_value, warmup_steps)``. Reference: Goyal et al.,
    "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (gradual warmup).
    """
    return linear_schedule(init_value, peak_value, warmup_steps)


def _checked_decay_length(warmup_steps: Any, decay_steps: Any) -> tuple[int, int]:
    warmup_steps = steps_arg(warmup_steps, "warmup_steps", positive=False)
    decay_steps = steps_arg(decay_steps, "decay_steps", positive=True)
    if decay_steps <= warmup_steps:
        raise ValueError(
            "decay_steps (the total length, warmup included) must be > warmup_steps, "
            f"got decay_steps={decay_steps!r} and warmup_steps={warmup_steps!r}."
        )
    return warmup_steps, decay_steps


def warmup_cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

    With ``W = warmup_steps``, ``T = decay_steps`` (the total length, warmup included) and
    ``c_t = (1 + cos(pi * min(t - W, T - W) / (T - W))) / 2``::

        eta_t = (1 - t / W) * eta_0 + (t / W) * eta_peak        for t < W
        eta_t = c_t ** p * eta_peak + (1 - c_t ** p) * eta_end  for t >= W

    so ``eta_0`` at ``t = 0``, ``eta_peak`` at ``t = W`` and ``eta_end`` from ``t = T`` on, each
    exactly, and every value between its phase's two ends. If ``eta_peak = 0`` the decay phase is
    ``0`` whatever ``eta_end`` is, as in Optax (which writes the decay as
    ``eta_peak ((1 - alpha) c_t^p + alpha)`` with ``alpha = eta_end / eta_peak``, and ``alpha = 0``
    when ``eta_peak = 0``).

    Args:
      init_value: ``eta_0``, the value at ``t = 0``.
      peak_value: ``eta_peak``, reached at ``t = W``.
      warmup_steps: ``W >= 0`` (``0``: no warmup).
      decay_steps: ``T > W``, the step from which ``eta_end`` is held.
      end_value: ``eta_end``, default ``0.0``.
      exponent: ``p > 0``, default ``1.0``.

    Matches ``optax.warmup_cosine_decay_schedule`` with the same arguments (to rounding: the
    form above hits ``eta_end`` exactly where Optax's ``eta_peak * alpha`` may be an ulp off).
    Reference: Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017; Goyal et al., "Accurate, Large Minibatch SGD", 2017 (warmup).
    """
    warmup_steps, decay_steps = _checked_decay_length(warmup_steps, decay_steps)
    check_positive(exponent, "exponent")
    cosine_steps = decay_steps - warmup_steps

    def cosine_part(step_count: jax.Array) -> jax.Array:
        weight, complement = half_cosine(progress(float_step(step_count), cosine_steps), exponent)
        value = blend(peak_value, end_value, weight, complement)
        return jnp.where(jnp.asarray(peak_value) == 0, jnp.zeros_like(value), value)

    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    return join_schedules([warmup, cosine_part], [warmup_steps])


def warmup_exponential_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: jax.typing.ArrayLike | None = None,
) -> Schedule:
    """Linear warmup to ``peak_value``, then exponential decay by ``decay_rate`` per ``transition_steps``.

    With ``W = warmup_steps``, ``T = transition_steps``, ``t_0 = transition_begin`` and
    ``e = max(t - W - t_0, 0) / T`` (rounded down when ``staircase``)::

        eta_t = (1 - t / W) * eta_0 + (t / W) * eta_peak      for t < W
        eta_t = eta_peak * gamma ** e                         for t >= W

    the decay clipped at ``end_value`` as in ``exponential_decay`` (a floor for ``gamma < 1``,
    a ceiling otherwise).

    Args:
      init_value: ``eta_0``, the value at ``t = 0``.
      peak_value: ``eta_peak``, reached at ``t = W``.
      warmup_steps: ``W >= 0`` (``0``: no warmup).
      transition_steps: ``T >= 0``; ``0`` holds ``eta_peak`` after the warmup.
      decay_rate: ``gamma > 0``.
      transition_begin: ``t_0 >= 0``, default ``0``: steps after the warmup before the decay starts.
      staircase: default ``False``; if ``True`` the value changes only every ``T`` steps.
      end_value: default ``None``; the floor (or ceiling) of the decay.

    Matches ``optax.warmup_exponential_decay_schedule`` with the same arguments (Optax's
    ``exponential_decay`` is constant for ``decay_rate = 0``; here that is an error).
    Reference: Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """
    warmup_steps = steps_arg(warmup_steps, "warmup_steps", positive=False)
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value)
    return join_schedules([warmup, decay], [warmup_steps])


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """SGD with warm restarts: ``warmup_cosine_decay_schedule`` cycles run one after another.

    Cycle ``k`` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` and lasts its
    ``decay_steps`` ``T_k``; it starts at step ``B_k = T_0 + ... + T_{k-1}`` and sees ``t - B_k``::

        eta_t = cycle_k(t - B_k)        for B_k <= t < B_{k+1}

    The last cycle holds its ``end_value`` after it ends.

    Args:
      cosine_kwargs: one dict of ``warmup_cosine_decay_schedule`` arguments per cycle
        (``init_value``, ``peak_value``, ``warmup_steps``, ``decay_steps``, optionally
        ``end_value`` and ``exponent``); at least one.

    Matches ``optax.sgdr_schedule(cosine_kwargs)``. Reference: Loshchilov and Hutter, "SGDR:
    Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """
    cycles, boundaries, start = [], [], 0
    for k, kwargs in enumerate(cosine_kwargs):
        if "decay_steps" not in kwargs:
            raise ValueError(f"cosine_kwargs[{k}] needs decay_steps (the length of cycle {k}), got {dict(kwargs)!r}.")
        cycles.append(warmup_cosine_decay_schedule(**kwargs))
        start += steps_arg(kwargs["decay_steps"], f"cosine_kwargs[{k}]['decay_steps']", positive=True)
        boundaries.append(start)
    if not cycles:
        raise ValueError("cosine_kwargs must hold at least one cycle, got none.")
    return join_schedules(cycles, boundaries[:-1])
