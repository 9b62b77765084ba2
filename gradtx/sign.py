"""Methods that use only the sign of the gradient (or of a momentum): signSGD, Signum, Lion and Rprop."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import EmptyState, GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import ema
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale, scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    check_updates_match_params,
    keep_dtype,
    leaf_dtype,
    moving_average,
    saturating_increment,
    tree_cast,
    tree_full_like,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import (
    check_decay,
    check_empty_state,
    check_greater_than,
    check_less_than,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)


def scale_by_sign() -> GradientTransformation:
    """``u_i = sign(g_i)`` in {-1, 0, +1}; no state. Matches ``optax.scale_by_sign``."""

    def init_fn(params: Params) -> EmptyState:
        check_float_leaves(params)
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(state, "scale_by_sign")
        check_updates_match_params(updates, params, "scale_by_sign")
        return jax.tree.map(jnp.sign, updates), state

    return GradientTransformation(init_fn, update_fn)


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """signSGD: ``w_t = w_{t-1} - eta_t sign(g_t)``.

    Matches ``optax.sign_sgd``. Reference: Bernstein et al., "signSGD", ICML 2018.
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: ScalarOrSchedule, beta: ScalarOrSchedule = 0.9, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Signum: signSGD on a moving average of the gradient (sign momentum).

    .. math::
        m_t = \\beta m_{t-1} + (1 - \\beta) g_t, \\qquad w_t = w_{t-1} - \\eta_t \\operatorname{sign}(m_t)

    with ``m_0 = 0``. The average is not debiased: ``1 - beta^t`` > 0 does not change a sign.

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      beta: ``beta`` in [0, 1) or a schedule. Default 0.9.
      accumulator_dtype: dtype of ``m``; default the parameter's dtype.

    State: ``(EmaState(step_count, ema=m), EmptyState(), ScaleByScheduleState(step_count))``.
    Matches ``optax.signum`` and ``pytorch_optimizer.SignSGD(momentum=beta)``.
    Reference: Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: Compressed optimisation
    for non-convex problems", ICML 2018 (Algorithm 3), arXiv:1802.04434.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_decay(beta, "beta")
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


class ScaleByLionState(NamedTuple):
    """State of ``scale_by_lion``: the step ``count`` and the momentum ``mu`` (``m`` below)."""

    count: jax.Array
    mu: PyTree


_LION_MODES = ("hard", "smooth", "refined")


def scale_by_lion(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    mu_dtype: Any = None,
    *,
    mode: Literal["hard", "smooth", "refined"] = "hard",
    smooth_beta: ScalarOrSchedule = 1.0,
) -> GradientTransformation:
    """Lion's direction: the sign of an interpolation of the momentum and the gradient.

    .. math::
        c_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\qquad u_t = s(c_t), \\qquad
        m_t = \\beta_2 m_{t-1} + (1 - \\beta_2) g_t

    with ``m_0 = 0`` and ``s = sign`` (``mode="hard"``, the paper's), ``s(c) = tanh(smooth_beta c)``
    (``"smooth"``) or ``s(c) = c`` where ``|c| < 1`` and ``sign(c)`` elsewhere (``"refined"``).
    The step uses ``beta_1``; the momentum kept for the next step uses ``beta_2``.

    Args:
      b1: ``beta_1`` in [0, 1) or a schedule. Default 0.9.
      b2: ``beta_2`` in [0, 1) or a schedule. Default 0.99.
      mu_dtype: storage dtype of ``m``; default the parameter's dtype.
      mode: ``"hard"``, ``"smooth"`` or ``"refined"``. Default ``"hard"``.
      smooth_beta: the slope of ``tanh`` in ``"smooth"`` mode, > 0. Default 1.

    State: ``ScaleByLionState(count, mu=m)``. Matches ``optax.scale_by_lion``.
    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
    arXiv:2302.06675 (Program 1).
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_positive(smooth_beta, "smooth_beta")
    if mode not in _LION_MODES:
        raise ValueError(f"mode must be one of {_LION_MODES}, got {mode!r}.")

    def direction(c):
        if mode == "hard":
            return jnp.sign(c)
        if mode == "smooth":
            return jnp.tanh(cast_like(smooth_beta, c) * c)
        return jnp.where(jnp.abs(c) < 1, c, jnp.sign(c))

    def init_fn(params: Params) -> ScaleByLionState:
        check_float_leaves(params)
        return ScaleByLionState(zero_step_count(), tree_zeros_like(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByLionState, "scale_by_lion")
        del params, extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="lion state")
        beta1, beta2 = value_at(b1, state.count), value_at(b2, state.count)

        def step(g, m):
            if mode == "hard" and leaf_dtype(g) == leaf_dtype(m):
                # lax directly: jnp operators trace as nested jits, several per leaf.
                c = jax.lax.add(jax.lax.mul(cast_like(1 - beta1, m), g), jax.lax.mul(cast_like(beta1, m), m))
                return jax.lax.sign(c)
            c = cast_like(1 - beta1, m) * g + cast_like(beta1, m) * m
            return keep_dtype(direction(c), g.dtype)

        new_updates = jax.tree.map(step, updates, state.mu)
        mu = jax.tree.map(lambda g, m: moving_average(g, m, beta2), updates, state.mu)
        return new_updates, ScaleByLionState(saturating_increment(state.count), tree_cast(mu, mu_dtype))

    return GradientTransformation(init_fn, update_fn)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """Lion (EvoLved Sign Momentum): a sign step on interpolated momentum, with decoupled weight decay.

    .. math::
        c_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\qquad
        w_t = w_{t-1} - \\eta_t (\\operatorname{sign}(c_t) + \\lambda w_{t-1}), \\qquad
        m_t = \\beta_2 m_{t-1} + (1 - \\beta_2) g_t

    Every coordinate moves by exactly ``eta`` (plus the decay), so Lion's learning rate is
    usually 3-10x smaller than AdamW's and its ``lambda`` 3-10x larger. The decay is multiplied
    by ``eta_t``, as in the paper's Program 1 and ``torch`` (not by a schedule multiplier only).

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      b1: ``beta_1`` in [0, 1) or a schedule. Default 0.9.
      b2: ``beta_2`` in [0, 1) or a schedule. Default 0.99.
      mu_dtype: storage dtype of ``m``; default the parameter's dtype.
      weight_decay: ``lambda`` >= 0 or a schedule. Default 1e-3.
      mask: tree of booleans (or ``params -> tree``) selecting the leaves to decay. Default all.

    State: ``(ScaleByLionState(count, mu), AddDecayedWeightsState(step_count),
    ScaleByScheduleState(step_count))``. Matches ``optax.lion`` and
    ``pytorch_optimizer.Lion(lr, betas=(b1, b2), weight_decay)``.
    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
    arXiv:2302.06675.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


class RpropState(NamedTuple):
    """State of ``scale_by_rprop``: per-weight step sizes and the previous (masked) gradient."""

    step_sizes: PyTree
    previous_gradient: PyTree

    @property
    def prev_updates(self) -> PyTree:
        """Optax's name for ``previous_gradient``: the same signs (Optax stores ``Delta sign(g)``, gradtx ``g``)."""
        return self.previous_gradient


ScaleByRpropState = RpropState  # Optax's name for the same state


@check_schedule_arguments
def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun 1993), the variant without weight backtracking (Rprop-).

    For each weight, with ``s_t = g_t g_{t-1}``:

    .. math::
        \\Delta_t = \\mathrm{clip}(\\Delta_{t-1} \\cdot \\begin{cases} \\eta^+ & s_t > 0 \\\\
        \\eta^- & s_t < 0 \\\\ 1 & s_t = 0 \\end{cases}, \\Delta_{min}, \\Delta_{max})

        \\tilde g_t = 0 \\text{ if } s_t < 0 \\text{ else } g_t, \\qquad
        u_t = \\Delta_t \\operatorname{sign}(\\tilde g_t), \\qquad g_{t-1} \\leftarrow \\tilde g_t

    with ``Delta_0 = learning_rate`` and ``g_0 = 0``. When the sign flips the weight is not moved
    and the stored gradient is zeroed, so the next step neither grows nor shrinks. The step at
    ``t`` uses ``g_t``. Returns ``+Delta sign(g)``; ``rprop`` flips the sign.

    Args:
      learning_rate: initial step size ``Delta_0`` > 0.
      eta_minus: shrink factor in (0, 1). Default 0.5.
      eta_plus: growth factor > 1. Default 1.2.
      min_step_size, max_step_size: bounds, ``0 <= min <= max``. Defaults 1e-6 and 50.

    State: ``RpropState(step_sizes, previous_gradient)``. Matches ``torch.optim.Rprop`` step for
    step; ``optax.scale_by_rprop`` applies each step one iteration late.
    """
    check_positive(learning_rate, "learning_rate")
    check_positive(eta_minus, "eta_minus")
    check_less_than(eta_minus, 1.0, "eta_minus")
    check_greater_than(eta_plus, 1.0, "eta_plus")
    check_non_negative(min_step_size, "min_step_size")
    if isinstance(min_step_size, (int, float)) and isinstance(max_step_size, (int, float)):
        if min_step_size > max_step_size:
            raise ValueError(
                f"min_step_size ({min_step_size}) must not exceed max_step_size ({max_step_size})."
            )

    def init_fn(params: Params) -> RpropState:
        check_float_leaves(params)
        return RpropState(tree_full_like(params, learning_rate), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, RpropState, "scale_by_rprop")
        check_trees_match(
            updates, state.step_sizes, name="updates", reference_name="rprop state", context="scale_by_rprop"
        )
        if not jax.tree.leaves(updates):
            # Nothing to do, and jax.tree.transpose below cannot rebuild a tree without leaves.
            return updates, state

        def leaf_step(g, step_size, previous):
            # Why signs, not ``g * previous``: that product underflows to 0 for gradients below
            # ~1e-23 in float32 (and overflows for large ones), which would freeze the step size.
            agreement = jnp.sign(g) * jnp.sign(previous)
            factor = jnp.where(
                agreement > 0,
                cast_like(eta_plus, step_size),
                jnp.where(agreement < 0, cast_like(eta_minus, step_size), jnp.ones_like(step_size)),
            )
            new_step = jnp.clip(
                step_size * factor, cast_like(min_step_size, step_size), cast_like(max_step_size, step_size)
            )
            effective_g = jnp.where(agreement < 0, jnp.zeros_like(g), g)
            return new_step * jnp.sign(effective_g), new_step, effective_g

        triples = jax.tree.map(leaf_step, updates, state.step_sizes, state.previous_gradient)
        outer = jax.tree.structure(updates)
        inner = jax.tree.structure((0, 0, 0))
        new_updates, step_sizes, previous = jax.tree.transpose(outer, inner, triples)
        return new_updates, RpropState(step_sizes, previous)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def rprop(
    learning_rate: ScalarOrSchedule,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    """Rprop: ``w_t = w_{t-1} - Delta_t sign(g~_t)`` with the adaptive ``Delta`` of ``scale_by_rprop``.

    Arguments and defaults are ``optax.rprop``'s (torch's ``lr``, ``etas=(eta_minus, eta_plus)``,
    ``step_sizes=(min, max)``); the iterates equal ``torch.optim.Rprop`` step for step.

    The numbers differ from ``optax.rprop``'s, deliberately. Optax's update at step ``t`` returns
    the move it computed at step ``t - 1`` (``-Delta_{t-1} sign(g_{t-1})``, stored in its state as
    ``prev_updates``): its first update is zero and every later one lags one gradient behind,
    so the weight keeps moving for one step after the gradient changed sign. gradtx follows the
    paper and ``torch.optim.Rprop``: step ``t`` moves by ``-Delta_t sign(g~_t)`` using ``g_t``.
    On the same problem the two runs separate quickly (a maximum parameter difference of 488
    after a few steps was measured in one program); ``tests/test_interop.py`` shows both.
    Full-batch only in spirit: with mini-batches the sign flips with the noise (see notebook 5).
    A schedule ``eta_t`` for ``learning_rate`` starts the step sizes at ``Delta_0 = eta_0 > 0`` and
    scales each update by ``eta_t / eta_0``: ``w_t = w_{t-1} - (eta_t / eta_0) Delta_t sign(g~_t)``
    (neither Optax nor torch scales Rprop's steps by a schedule; a constant one changes nothing).
    Reference: Riedmiller & Braun, "A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm", ICNN 1993.
    """
    if callable(learning_rate):
        initial = learning_rate(jnp.zeros([], jnp.int32))
        if not isinstance(initial, jax.core.Tracer) and not float(jnp.min(initial)) > 0:
            raise ValueError(f"rprop: a learning_rate schedule must start above 0 (it sets Delta_0), got {initial}.")
        steps = scale_by_rprop(initial, eta_minus, eta_plus, min_step_size, max_step_size)
        return chain(steps, scale(lambda step_count: -learning_rate(step_count) / initial))
    return chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        scale(-1.0),
    )
