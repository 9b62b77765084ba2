"""Memory-light second moments: Adafactor's factored estimate and SM3's cover maxima.

Both keep, for an ``n x m`` matrix, ``O(n + m)`` statistics instead of Adam's ``O(n m)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import EmptyState, GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import ema
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale, scale_by_learning_rate, scale_by_schedule
from gradtx.tree_utils import (
    abs_sq,
    cast_like,
    check_float_leaves,
    check_trees_match,
    keep_dtype,
    real_dtype,
    saturating_increment,
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


def _decay_rate_pow(step: jax.Array, exponent: float = 0.8) -> jax.Array:
    """Adafactor's ``beta_2(t) = 1 - t^(-exponent)`` for the 0-based ``step = t - 1``.

    Evaluated in float32, as Optax does, so that float64 runs give Optax's numbers; pass your own
    ``decay_rate_fn`` for a float64 schedule (it moves a float64 trajectory by ~1e-7 relative).
    """
    t = jnp.asarray(step + 1, jnp.float32)
    return 1.0 - t ** (-jnp.asarray(exponent, jnp.float32))


def _factored_dims(shape: tuple, factored: bool, min_dim_size_to_factor: int) -> tuple[int, int] | None:
    """``(d1, d0)``: the second largest and largest axes, or None when the leaf is not factored."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _without(p: jax.Array, axis: int) -> tuple:
    shape = jnp.shape(p)
    return shape[:axis] + shape[axis + 1 :]


class FactoredState(NamedTuple):
    """State of ``scale_by_factored_rms`` (Optax's fields).

    ``v_row`` and ``v_col`` hold the factored statistics of factored leaves (the mean of
    ``g^2 + eps`` over the largest and over the second largest axis), ``v`` the full statistic of
    the other leaves; the unused ones are ``(1,)`` placeholders, as in Optax.
    """

    count: jax.Array
    v_row: PyTree
    v_col: PyTree
    v: PyTree


@check_schedule_arguments
def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn: Callable[[jax.Array, float], jax.Array] = _decay_rate_pow,
) -> GradientTransformation:
    """Adafactor's scaling by a factored estimate of the root mean square gradient.

    With ``beta_t = decay_rate_fn(t - 1 - step_offset, decay_rate)`` (default ``1 - t^-0.8``) and
    ``G_t = g_t^2 + eps`` for a leaf whose two largest axes ``d0`` (largest) and ``d1`` both have
    at least ``min_dim_size_to_factor`` entries:

    .. math::
        R_t = \\beta_t R_{t-1} + (1-\\beta_t)\\, \\mathrm{mean}_{d_0} G_t, \\qquad
        C_t = \\beta_t C_{t-1} + (1-\\beta_t)\\, \\mathrm{mean}_{d_1} G_t

        \\hat V_t = \\frac{R_t C_t}{\\mathrm{mean}_{d_1} R_t}, \\qquad u_t = g_t / \\sqrt{\\hat V_t}

    (the rank-1 approximation of ``V`` that minimises the I-divergence). Other leaves keep the
    full ``V_t = beta_t V_{t-1} + (1 - beta_t) G_t`` and ``u_t = g_t / sqrt(V_t)``.

    Args:
      factored: factor matrices at all. Default True.
      decay_rate: exponent of the decay schedule (0.8 in the paper). Default 0.8.
      step_offset: steps to subtract from ``t`` (to restart the schedule when fine-tuning). Default 0.
      min_dim_size_to_factor: factor only when the second largest axis is at least this long.
        Default 128.
      epsilon: ``eps_1`` added to ``g^2``. Default 1e-30.
      decay_rate_fn: ``(step, decay_rate) -> beta``, ``step`` counted from 0. Default
        ``1 - (step + 1)^-decay_rate``.

    State: ``FactoredState(count, v_row, v_col, v)``. Complex leaves use ``|g|^2`` (statistics in
    the real dtype, where Optax keeps them complex with a zero imaginary part).
    Matches ``optax.scale_by_factored_rms`` (see ``_decay_rate_pow`` for the float32 schedule).
    Reference: Shazeer & Stern, "Adafactor: adaptive learning rates with sublinear memory cost",
    ICML 2018 (Algorithms 4 and 5).
    """
    check_non_negative(decay_rate, "decay_rate")
    check_non_negative(epsilon, "epsilon")
    if not isinstance(min_dim_size_to_factor, (int, np.integer)) or min_dim_size_to_factor < 0:
        raise ValueError(f"min_dim_size_to_factor must be an int >= 0, got {min_dim_size_to_factor!r}.")

    def _expected_shapes(state: FactoredState, updates: PyTree) -> PyTree:
        """The update shapes the state was built for (a factored leaf's shape, from its two statistics)."""
        if jax.tree.structure(updates) != jax.tree.structure(state.v):
            return state.v  # check_trees_match names the first path that differs

        def shape_of(g, v_row, v_col, v):
            dims = _factored_dims(jnp.shape(g), factored, min_dim_size_to_factor)
            if dims is None:
                return jax.ShapeDtypeStruct(jnp.shape(v), v.dtype)
            d1, d0 = dims
            ok = jnp.shape(v_row) == _without(g, d0) and jnp.shape(v_col) == _without(g, d1)
            return jax.ShapeDtypeStruct(jnp.shape(g) if ok else jnp.shape(v_row), v_row.dtype)

        return jax.tree.map(shape_of, updates, state.v_row, state.v_col, state.v)

    def init_fn(params: Params) -> FactoredState:
        check_float_leaves(params, allow_complex=True)

        def placeholder(p):
            return jnp.zeros((1,), real_dtype(jnp.result_type(p)))

        def row(p):
            dims = _factored_dims(jnp.shape(p), factored, min_dim_size_to_factor)
            return placeholder(p) if dims is None else jnp.zeros(_without(p, dims[1]), real_dtype(jnp.result_type(p)))

        def col(p):
            dims = _factored_dims(jnp.shape(p), factored, min_dim_size_to_factor)
            return placeholder(p) if dims is None else jnp.zeros(_without(p, dims[0]), real_dtype(jnp.result_type(p)))

        def full(p):
            dims = _factored_dims(jnp.shape(p), factored, min_dim_size_to_factor)
            return jnp.zeros(jnp.shape(p), real_dtype(jnp.result_type(p))) if dims is None else placeholder(p)

        return FactoredState(
            zero_step_count(), jax.tree.map(row, params), jax.tree.map(col, params), jax.tree.map(full, params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, FactoredState, "scale_by_factored_rms")
        del params, extra_args
        check_trees_match(updates, _expected_shapes(state, updates), name="updates", reference_name="factored state")
        beta = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf(g, v_row, v_col, v):
            dims = _factored_dims(jnp.shape(g), factored, min_dim_size_to_factor)
            squares = abs_sq(g) + cast_like(epsilon, v)
            b = cast_like(beta, v)
            if dims is None:
                new_v = b * v + (1 - b) * squares
                return keep_dtype(g * jax.lax.rsqrt(new_v), g.dtype), v_row, v_col, new_v
            d1, d0 = dims
            new_row = b * v_row + (1 - b) * jnp.mean(squares, axis=d0)
            new_col = b * v_col + (1 - b) * jnp.mean(squares, axis=d1)
            row_axis = d1 - 1 if d1 > d0 else d1  # d1's position once d0 is removed
            row_factor = jax.lax.rsqrt(new_row / jnp.mean(new_row, axis=row_axis, keepdims=True))
            col_factor = jax.lax.rsqrt(new_col)
            scaled = g * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
            return keep_dtype(scaled, g.dtype), new_row, new_col, v

        outer = jax.tree.structure(updates)
        results = outer.flatten_up_to(jax.tree.map(leaf, updates, state.v_row, state.v_col, state.v))
        new_updates, v_row, v_col, v = (outer.unflatten([r[i] for r in results]) for i in range(4))
        return new_updates, FactoredState(saturating_increment(state.count), v_row, v_col, v)

    return GradientTransformation(init_fn, update_fn)


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(abs_sq(x)))


def _clip_by_block_rms(threshold: float) -> GradientTransformation:
    """``u <- u / max(1, RMS(u) / d)`` per leaf (``optax.clip_by_block_rms``)."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(lambda u: u / jnp.maximum(1, _rms(u) / cast_like(threshold, _rms(u))), updates), state

    return GradientTransformation(init_fn, update_fn)


def _scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    """``u <- u max(RMS(w), min_scale)`` per leaf (``optax.scale_by_param_block_rms``)."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "adafactor(multiply_by_parameter_scale=True) needs the parameters: call update(g, state, params)."
            )
        check_trees_match(updates, params, name="updates", reference_name="params")
        scaled = jax.tree.map(lambda u, w: u * jnp.maximum(_rms(w), cast_like(min_scale, _rms(w))), updates, params)
        return scaled, state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """Adafactor: factored second moments, update clipping and a step relative to the parameter scale.

    With ``u_t`` from ``scale_by_factored_rms``:

    .. math::
        \\hat u_t = \\frac{u_t}{\\max(1, \\mathrm{RMS}(u_t) / d)}, \\qquad
        \\alpha_t = \\rho_t \\max(\\epsilon_2, \\mathrm{RMS}(w_{t-1})), \\qquad
        w_t = w_{t-1} - \\alpha_t \\hat u_t - \\lambda_t w_{t-1}

    ``d = clipping_threshold`` (no clipping when None), ``epsilon_2 = 1e-3`` (the factor is 1 when
    ``multiply_by_parameter_scale=False``), ``rho_t = learning_rate``, ``lambda = weight_decay_rate``
    (not multiplied by the learning rate, as in Optax). With ``momentum`` the step
    ``alpha_t u_hat_t`` is averaged first, ``m_t = b1 m_{t-1} + (1 - b1) alpha_t u_hat_t`` (no
    debiasing, stored in ``dtype_momentum``).

    With ``learning_rate=None`` (the default) ``rho_t`` is the paper's relative step size
    ``min(1e-2, 1/sqrt(t))``, times 0.05 without the parameter scale, as in the authors' code
    (tensor2tensor). ``optax.adafactor`` uses ``rho_t = 1`` then; pass ``learning_rate`` to get
    Optax's numbers, which are otherwise the same (arguments and defaults are Optax's).
    ``torch.optim.Adafactor(lr, weight_decay=wd)`` equals ``adafactor(None if lr == 1e-2 else
    (lambda t: min(lr, 1/sqrt(t+1))), min_dim_size_to_factor=0, weight_decay_rate=lr * wd)`` on
    leaves of at most 2 axes, up to where its ``eps`` enters (it clamps where Optax adds 1e-30).

    State: a ``chain`` state of ``FactoredState``, the step counter and, with momentum,
    ``EmaState``. Reference: Shazeer & Stern, "Adafactor: adaptive learning rates with sublinear
    memory cost", ICML 2018.
    """
    if learning_rate is not None:
        check_non_negative(learning_rate, "learning_rate")
    if clipping_threshold is not None:
        check_positive(clipping_threshold, "clipping_threshold")
    if momentum is not None:
        check_decay(momentum, "momentum")
    if weight_decay_rate is not None:
        check_non_negative(weight_decay_rate, "weight_decay_rate")
    transforms = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        transforms.append(_clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        transforms.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    else:
        factor = 1.0 if multiply_by_parameter_scale else 0.05
        transforms.append(scale_by_schedule(lambda step: factor * jnp.minimum(1e-2, jax.lax.rsqrt(step + 1.0))))
    if multiply_by_parameter_scale:
        transforms.append(_scale_by_param_block_rms())
    if momentum is not None:
        transforms.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        transforms.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    transforms.append(scale(-1.0))
    return chain(*transforms)


class ScaleBySM3State(NamedTuple):
    """State of ``scale_by_sm3`` (Optax's fields).

    ``mu``: per leaf, a list with one accumulator per axis (the maxima over each cover, a slice
    along that axis); ``nu``: the momentum of the scaled gradient.
    """

    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> GradientTransformation:
    """SM3-II scaling: a second moment bounded by one accumulator per row, column, ... of each leaf.

    For a leaf with axes ``k = 1..r`` and accumulators ``mu^(k)`` (one entry per index of axis
    ``k``):

    .. math::
        \\nu'_t(i) = c\\, g_t(i)^2 + \\beta_2 \\min_k \\mu^{(k)}_{t-1}(i_k), \\qquad
        \\mu^{(k)}_t(j) = \\max_{i:\\, i_k = j} \\nu'_t(i)

        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\frac{g_t}{\\sqrt{\\nu'_t + \\epsilon}}, \\qquad u_t = m_t

    with ``c = 1 - b2`` (``c = 1`` when ``b2 = 1``, the paper's sum) and ``g / sqrt(nu' + eps) = 0``
    where ``nu' = 0``. Vectors (and scalars) keep a per-entry accumulator, as in AdaGrad.

    Args:
      b1: momentum in [0, 1). Default 0.9.
      b2: decay of the accumulators in [0, 1]; 1 is SM3's running sum. Default 1.
      eps: ``epsilon`` >= 0 inside the root. Default 1e-8.

    State: ``ScaleBySM3State(mu, nu)``. Real leaves only (as in Optax).
    Matches ``optax.scale_by_sm3`` (which also takes scalar leaves here, where Optax fails).
    Reference: Anil, Gupta, Koren, Singer, "Memory-efficient adaptive optimization", NeurIPS 2019.
    """
    check_decay(b1, "b1")
    check_non_negative(b2, "b2")
    if isinstance(b2, (int, float)) and b2 > 1:
        raise ValueError(f"b2 must be in [0, 1], got {b2!r}.")
    check_non_negative(eps, "eps")
    coefficient = 1.0 if b2 == 1.0 else 1.0 - b2

    def covers(p):
        shape, dtype = jnp.shape(p), jnp.result_type(p)
        if len(shape) < 2:
            return [jnp.zeros(shape, dtype)]
        return [jnp.zeros((n,), dtype) for n in shape]

    def init_fn(params: Params) -> ScaleBySM3State:
        check_float_leaves(params)
        return ScaleBySM3State(jax.tree.map(covers, params), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleBySM3State, "scale_by_sm3")
        del params, extra_args
        check_trees_match(updates, state.nu, name="updates", reference_name="sm3 state")

        def leaf(g, mu, m):
            if g.ndim < 2:
                bound = mu[0]
            else:
                shapes = [[1] * k + [g.shape[k]] + [1] * (g.ndim - k - 1) for k in range(g.ndim)]
                bound = functools.reduce(jnp.minimum, [jnp.reshape(a, s) for a, s in zip(mu, shapes)])
            accumulator = cast_like(coefficient, g) * jnp.square(g) + cast_like(b2, g) * bound
            scaled = jnp.where(accumulator > 0, g * jax.lax.rsqrt(accumulator + cast_like(eps, g)), 0)
            momentum = cast_like(b1, m) * m + cast_like(1 - b1, m) * scaled.astype(m.dtype)
            if g.ndim < 2:
                new_mu = [accumulator]
            else:
                others = [tuple(a for a in range(g.ndim) if a != k) for k in range(g.ndim)]
                new_mu = [jnp.max(accumulator, axis=axes) for axes in others]
            return momentum, new_mu

        outer = jax.tree.structure(updates)
        results = outer.flatten_up_to(jax.tree.map(leaf, updates, state.mu, state.nu))
        nu = outer.unflatten([momentum for momentum, _ in results])
        mu = outer.unflatten([new_mu for _, new_mu in results])
        return nu, ScaleBySM3State(mu, nu)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def sm3(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> GradientTransformation:
    """SM3: ``w_t = w_{t-1} - eta_t m_t`` with ``m_t`` from ``scale_by_sm3(b1=momentum)``.

    Arguments, defaults and numbers are ``optax.sm3``'s; here ``learning_rate`` may also be a
    schedule. Reference: Anil, Gupta, Koren, Singer, NeurIPS 2019.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(scale_by_sm3(momentum), scale_by_learning_rate(learning_rate))
