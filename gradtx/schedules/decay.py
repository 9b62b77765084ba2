"""Decaying schedules: constant, step-wise, polynomial, exponential and cosine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.base import Schedule
from gradtx.schedules._steps import (
    blend,
    falling,
    float_step,
    half_cosine,
    held,
    opaque,
    progress,
    reached,
    stage,
    steps_arg,
)
from gradtx.validation import check_non_negative, check_positive


def as_schedule(value: Any) -> Schedule:
    """Returns ``value`` itself if it is callable, else the constant schedule ``t -> value``."""
    if callable(value):
        return value
    return constant_schedule(value)


def constant_schedule(value: Any) -> Schedule:
    """``eta_t = value`` for every step, as a float array shaped like ``step_count``.

    Matches ``optax.constant_schedule``.
    """

    def schedule(step_count: jax.Array) -> jax.Array:
        as_float = jnp.asarray(value, jnp.promote_types(jnp.result_type(value), jnp.float32))
        return jnp.broadcast_to(as_float, jnp.shape(step_count))

    return schedule










def piecewise_constant_schedule(
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """A value multiplied by a fixed factor each time a boundary step is reached.

    With boundaries ``b_1 < b_2 < ...`` and scales ``s_1, s_2, ...``::

        eta_t = eta_0 * prod_{i : b_i <= t} s_i

    so ``eta_t = eta_0`` for ``t < b_1``, ``eta_0 s_1`` for ``b_1 <= t < b_2``, and so on; the
    new value is used from step ``b_i`` on (the ``b_i``-th update counting from 0).

    Args:
      init_value: ``eta_0``, the value before the first boundary.
      boundaries_and_scales: ``{b_i: s_i}``; boundaries are non-negative integers, Python-number
        scales must be ``>= 0``. Default ``None``: no boundaries, a constant ``eta_0``.

    Matches ``optax.piecewise_constant_schedule(init_value, boundaries_and_scales)``, and
    ``torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma)`` when every scale is
    ``gamma`` (with ``lr=eta_0`` and one ``scheduler.step()`` per update).
    """
    items = []
    for boundary, scale in (boundaries_and_scales or {}).items():
        boundary = steps_arg(boundary, f"boundary {boundary!r} in boundaries_and_scales", positive=False)
        check_non_negative(scale, f"boundaries_and_scales[{boundary}]")
        items.append((boundary, scale))
    items.sort(key=lambda item: item[0])

    def schedule(step_count: jax.Array) -> jax.Array:
        value = init_value * jnp.ones_like(float_step(step_count))
        for boundary, scale in items:
            # Compared as integers, so exact past 2**24 steps under float32 too.
            value = jnp.where(reached(step_count, boundary), value * scale, value)
        return value

    return schedule


def step_decay_schedule(
    init_value: jax.typing.ArrayLike,
    factor: float,
    every_steps: int,
) -> Schedule:
    """Step decay: the value is multiplied by ``factor`` every ``every_steps`` steps.

    ::

        eta_t = eta_0 * factor ** floor(t / N)

    With ``factor=0.1`` and ``N`` the number of steps in ``k`` epochs this is the classic "divide
    the learning rate by 10 every ``k`` epochs".

    Args:
      init_value: ``eta_0``, the value for the first ``N`` steps.
      factor: the multiplier applied at each stage, ``> 0`` (``0.1`` divides by 10).
      every_steps: ``N > 0``, the length of a stage in steps.

    Matches ``torch.optim.lr_scheduler.StepLR(opt, step_size=N, gamma=factor)`` (with
    ``lr=eta_0`` and one ``scheduler.step()`` per update) and
    ``optax.exponential_decay(eta_0, N, factor, staircase=True)``.
    """
    check_positive(factor, "factor")
    every_steps = steps_arg(every_steps, "every_steps", positive=True)

    def schedule(step_count: jax.Array) -> jax.Array:
        return init_value * jnp.power(factor, stage(step_count, 0, every_steps))

    return schedule


def harmonic_decay_schedule(
    scale: jax.typing.ArrayLike,
    steps_per_stage: int,
    offset: float = 10.0,
) -> Schedule:
    """Harmonic (``1/k``) decay held constant within stages of ``steps_per_stage`` steps.

    ::

        eta_t = a / (floor(t / N) + b)

    with ``a = scale``, ``N = steps_per_stage`` and ``b = offset``: the value starts at ``a / b``
    and after ``k`` stages is ``a / (k + b)``. The offset keeps the first steps from being too
    large. The sequence satisfies the Robbins-Monro conditions ``sum_t eta_t = inf`` and
    ``sum_t eta_t^2 < inf`` under which SGD's convergence on convex problems is classically proven.

    Args:
      scale: ``a``, the numerator.
      steps_per_stage: ``N > 0``, how many steps share a value (``1`` for a per-step ``a/(t+b)``).
      offset: ``b > 0``, default ``10.0``.

    Neither Optax nor torch ships it; it equals
    ``torch.optim.lr_scheduler.LambdaLR(opt, lambda t: b / (t // N + b))`` with ``lr=a/b``.
    """
    steps_per_stage = steps_arg(steps_per_stage, "steps_per_stage", positive=True)
    check_positive(offset, "offset")

    def schedule(step_count: jax.Array) -> jax.Array:
        return scale / (stage(step_count, 0, steps_per_stage) + offset)

    return schedule


def polynomial_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial decay from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

    With ``s = clip(t - t_0, 0, T)``::

        eta_t = (eta_0 - eta_T) * (1 - s / T) ** p + eta_T

    that is ``eta_0`` until step ``t_0``, then a degree-``p`` polynomial reaching ``eta_T`` at
    step ``t_0 + T``, and ``eta_T`` from then on.

    Args:
      init_value: ``eta_0``.
      end_value: ``eta_T``.
      power: ``p > 0``.
      transition_steps: ``T >= 0``. ``T = 0`` turns the transition off and gives the constant
        ``eta_0``, as in Optax (which also does so for negative ``T``; here that is an error).
      transition_begin: ``t_0 >= 0``, default ``0`` (Optax replaces a negative ``t_0`` by 0;
        here that is an error).

    Matches ``optax.polynomial_schedule(init_value, end_value, power, transition_steps,
    transition_begin)``; with ``end_value=0`` and ``transition_begin=0`` it matches
    ``torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=T, power=p)`` with ``lr=eta_0``.
    """
    check_positive(power, "power")
    transition_steps = steps_arg(transition_steps, "transition_steps", positive=False)
    transition_begin = steps_arg(transition_begin, "transition_begin", positive=False)
    if transition_steps == 0:
        return held(init_value)

    def schedule(step_count: jax.Array) -> jax.Array:
        done = progress(float_step(step_count) - float(transition_begin), transition_steps)
        return blend(init_value, end_value, *falling(done, power))

    return schedule


def linear_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Linear decay from ``eps_0`` to ``eps_tau`` over ``tau`` steps, then constant.

    With ``alpha = clip(t - t_0, 0, tau) / tau``::

        eps_t = (1 - alpha) * eps_0 + alpha * eps_tau

    so ``eps_t = eps_0`` up to step ``t_0``, falls linearly to ``eps_tau`` at step ``t_0 + tau``
    and stays there. This is ``polynomial_schedule`` with ``power=1``.

    Args:
      init_value: ``eps_0``.
      end_value: ``eps_tau`` (Goodfellow et al. suggest about 1% of ``eps_0``).
      transition_steps: ``tau >= 0``. ``tau = 0`` gives the constant ``eps_0``, as in Optax.
      transition_begin: ``t_0 >= 0``, default ``0``.

    Matches ``optax.linear_schedule(init_value, end_value, transition_steps, transition_begin)``;
    with ``transition_begin=0`` it matches ``torch.optim.lr_scheduler.LinearLR(opt,
    start_factor=1.0, end_factor=eps_tau / eps_0, total_iters=tau)`` with ``lr=eps_0``.
    Reference: Goodfellow, Bengio and Courville, "Deep Learning", MIT Press 2016, section 8.3.1.
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def exponential_decay(
    init_value: jax.typing.ArrayLike,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: jax.typing.ArrayLike | None = None,
) -> Schedule:
    """Exponential decay by ``decay_rate`` every ``transition_steps`` steps.

    With ``e = max(t - t_0, 0) / T`` (rounded down to an integer when ``staircase``)::

        eta_t = eta_0 * gamma ** e

    and, when ``end_value`` is given, ``eta_t`` is clipped to it: ``max(eta_t, end_value)`` for
    ``gamma < 1`` (a floor), ``min(eta_t, end_value)`` for ``gamma >= 1`` (a ceiling). The clip
    applies at every step, before ``t_0`` too, as in Optax.

    Args:
      init_value: ``eta_0``.
      transition_steps: ``T >= 0``, the number of steps over which the value is multiplied by
        ``gamma``. ``T = 0`` gives the constant ``eta_0``, as in Optax.
      decay_rate: ``gamma > 0``. Optax documents that it must not be zero but then silently
        returns the constant ``eta_0``; here ``0`` is an error.
      transition_begin: ``t_0 >= 0``, default ``0``; the value is ``eta_0`` until then.
      staircase: default ``False``; if ``True`` the value changes only every ``T`` steps.
      end_value: default ``None`` (no clipping); the floor or ceiling described above.

    Matches ``optax.exponential_decay`` with the same arguments; with ``T = 1`` it matches
    ``torch.optim.lr_scheduler.ExponentialLR(opt, gamma)``, and with ``staircase=True``
    ``torch.optim.lr_scheduler.StepLR(opt, step_size=T, gamma)`` (both with ``lr=eta_0`` and
    ``transition_begin=0``).
    """
    transition_steps = steps_arg(transition_steps, "transition_steps", positive=False)
    check_positive(decay_rate, "decay_rate")
    transition_begin = steps_arg(transition_begin, "transition_begin", positive=False)
    if transition_steps == 0:
        return held(init_value)
    if end_value is None:
        clip = None
    else:
        clip = jnp.maximum if decay_rate < 1 else jnp.minimum

    def schedule(step_count: jax.Array) -> jax.Array:
        if staircase:
            exponent = stage(step_count, transition_begin, transition_steps)
        else:
            elapsed = jnp.maximum(float_step(step_count) - float(transition_begin), 0)
            exponent = elapsed / opaque(float(transition_steps), elapsed)  # a true division (see _steps)
        value = init_value * jnp.power(opaque(decay_rate, exponent), exponent)
        if clip is not None:
            value = clip(value, end_value)
        return value

    return schedule


def cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    decay_steps: int,
    alpha: jax.typing.ArrayLike = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Cosine decay (half a cosine period) from ``init_value`` to ``alpha * init_value``.

    With ``c_t = (1 + cos(pi * min(t, T) / T)) / 2``::

        eta_t = eta_0 * ((1 - alpha) * c_t ** p + alpha)

    so ``eta_0`` at ``t = 0`` and ``alpha * eta_0`` from ``t = T`` on.

    Args:
      init_value: ``eta_0``.
      decay_steps: ``T > 0``.
      alpha: the final value as a fraction of ``eta_0``, default ``0.0``.
      exponent: ``p > 0``, default ``1.0``.

    Matches ``optax.cosine_decay_schedule(init_value, decay_steps, alpha, exponent)``. With
    ``p = 1`` and for ``t <= T`` it equals ``torch.optim.lr_scheduler.CosineAnnealingLR(opt,
    T_max=T, eta_min=alpha * eta_0)`` with ``lr=eta_0``; past ``T`` torch keeps following the
    cosine back up while this schedule stays at ``alpha * eta_0``. Reference: Loshchilov and
    Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """
    decay_steps = steps_arg(decay_steps, "decay_steps", positive=True)
    check_positive(exponent, "exponent")

    def schedule(step_count: jax.Array) -> jax.Array:
        # eta_0 w + (alpha eta_0) (1 - w): Optax's eta_0 ((1 - alpha) w + alpha), with exact ends.
        t = float_step(step_count)
        weight, complement = half_cosine(progress(t, decay_steps), exponent)
        return blend(init_value, init_value * (alpha + jnp.zeros_like(t)), weight, complement)

    return schedule

