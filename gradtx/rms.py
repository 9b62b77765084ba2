"""Per-parameter step sizes from squared-gradient statistics: AdaGrad, RMSProp, AdaDelta.

Each building block returns the *scaled gradient* (no learning rate, no sign flip); the named
optimizers chain it with ``scale_by_learning_rate``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import chain
from gradtx.momentum import bias_correction as debias
from gradtx.momentum import trace
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    abs_sq,
    cast_eps_like,
    cast_like,
    check_float_leaves,
    check_trees_match,
    clip_for_square,
    clip_for_square_unmerged,
    leaf_dtype,
    moving_average,
    saturate,
    saturating_increment,
    tree_real_full_like,
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


def _add(a: jax.Array, b: jax.Array) -> jax.Array:
    return jax.lax.add(a, b) if leaf_dtype(a) == leaf_dtype(b) else a + b


def _zero(x: jax.Array) -> jax.Array:
    return cast_like(0, x)


class AdagradState(NamedTuple):
    """State of ``scale_by_adagrad``: the running sum of squared gradients ``s``."""

    sum_of_squares: PyTree


@check_schedule_arguments
def scale_by_adagrad(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """AdaGrad scaling: divide by the root of the sum of all squared gradients so far.

    .. math::
        s_t = s_{t-1} + g_t^2, \\qquad
        u_t = g_t / \\sqrt{s_t + \\epsilon} \\ (\\text{eps\\_in\\_sqrt}), \\quad
        u_t = g_t / (\\sqrt{s_t} + \\epsilon) \\ (\\text{otherwise})

    with ``s_0 = initial_accumulator_value``; where ``s_t = 0`` the update is 0.

    Float range: ``g`` is clipped to ``+-sqrt(M)/2`` (``M`` the dtype's largest value, see
    ``tree_utils.clip_for_square``) and ``s`` saturates at ``M`` instead of becoming inf, so
    gradients of 1e30 in float32 leave the state finite; nothing changes below those bounds.
    ``overflow_guard=False`` leaves the clip out (Optax's arithmetic; ``s`` still saturates):
    same step time, a faster first compile on many small leaves (see ``scale_by_adam``).

    Args:
      initial_accumulator_value: ``s_0`` >= 0. Default 0.1 (Optax); torch uses 0.
      eps: ``epsilon`` > 0. Default 1e-7 (Optax); torch uses 1e-10 outside the root.
      eps_in_sqrt: where ``epsilon`` goes. Default True (Optax); False matches torch.
      overflow_guard: clip ``g`` before squaring (above). Default True.

    Complex leaves: ``g^2`` is ``|g|^2`` and ``s`` is real, with Optax's numbers.

    State: ``AdagradState(sum_of_squares=s)``.
    Reference: Duchi, Hazan, Singer, "Adaptive subgradient methods", JMLR 2011.
    """
    check_non_negative(initial_accumulator_value, "initial_accumulator_value")
    check_positive(eps, "eps")

    def init_fn(params: Params) -> AdagradState:
        check_float_leaves(params, allow_complex=True)
        return AdagradState(tree_real_full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, AdagradState, "scale_by_adagrad")
        check_trees_match(
            updates, state.sum_of_squares, name="updates", reference_name="adagrad state", context="scale_by_adagrad"
        )
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves the running sum; the
        # sum itself grows without bound, so it saturates at the dtype's largest value instead.
        if overflow_guard:
            clipped = jax.tree.map(clip_for_square, updates, state.sum_of_squares)
            # The step clips again, with other operations: one shared clipped array would be
            # written to memory (see clip_for_square_unmerged).
            updates = jax.tree.map(clip_for_square_unmerged, updates, state.sum_of_squares)
        else:
            clipped = updates
        sum_of_squares = jax.tree.map(lambda g, s: saturate(_add(s, abs_sq(g))), clipped, state.sum_of_squares)

        def scaled(g, s):
            lean = leaf_dtype(g) == leaf_dtype(s)  # lax directly: jnp operators trace as nested jits
            if eps_in_sqrt:
                if lean:
                    root = jax.lax.rsqrt(jax.lax.add(s, cast_eps_like(eps, s)))
                    return jax.lax.select(jax.lax.gt(s, _zero(s)), jax.lax.mul(g, root), jax.lax.full_like(g, 0))
                out_dtype = g.dtype if jnp.iscomplexobj(g) else s.dtype
                return jnp.where(s > 0, g * jax.lax.rsqrt(s + cast_eps_like(eps, s)), 0).astype(out_dtype)
            if lean:
                return jax.lax.div(g, jax.lax.add(jax.lax.sqrt(s), cast_eps_like(eps, s)))
            return g / (jnp.sqrt(s) + cast_eps_like(eps, s))

        return jax.tree.map(scaled, updates, sum_of_squares), AdagradState(sum_of_squares)

    return GradientTransformation(init_fn, update_fn)


# Optax's name for the state of its root-sum-of-squares block (``optax.ScaleByRssState``).
ScaleByRssState = AdagradState


@check_schedule_arguments
def scale_by_rss(initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> GradientTransformation:
    """Divides by the root of the sum of all squared gradients so far (AdaGrad's scaling).

    .. math::
        s_t = s_{t-1} + |g_t|^2, \\qquad u_t = g_t / \\sqrt{s_t + \\epsilon} \\ (0 \\text{ where } s_t = 0)

    with ``s_0 = initial_accumulator_value``: ``scale_by_adagrad`` with ``eps_in_sqrt=True``.

    Args:
      initial_accumulator_value: ``s_0`` >= 0. Default 0.1.
      eps: ``epsilon`` > 0, inside the root. Default 1e-7.

    State: ``ScaleByRssState(sum_of_squares=s)`` (the same type as ``AdagradState``).
    Matches ``optax.scale_by_rss``. Reference: Duchi, Hazan, Singer, "Adaptive subgradient
    methods", JMLR 2011.
    """
    return scale_by_adagrad(initial_accumulator_value, eps, eps_in_sqrt=True)


class RmsState(NamedTuple):
    """State of ``scale_by_rms``.

    ``nu`` is the moving average of ``g^2``; ``mu`` the moving average of ``g`` when
    ``centered=True`` and ``None`` otherwise.
    """

    step_count: jax.Array
    nu: PyTree
    mu: PyTree

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


# Optax's names: scale_by_rms and scale_by_stddev keep one state type here, whatever the flags.
ScaleByRmsState = RmsState
ScaleByRStdDevState = RmsState


@check_schedule_arguments
def scale_by_rms(
    decay: ScalarOrSchedule = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    bias_correction: bool = False,
    *,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """RMSProp scaling: divide by the root of a moving average of squared gradients.

    .. math::
        \\nu_t = \\rho \\nu_{t-1} + (1 - \\rho) g_t^2, \\qquad
        m_t = \\rho m_{t-1} + (1 - \\rho) g_t \\ (\\text{centered only})

        d_t = \\nu_t - m_t^2 \\ (\\text{centered}), \\ \\text{else } d_t = \\nu_t, \\qquad
        u_t = g_t / \\sqrt{d_t + \\epsilon} \\ (\\text{eps\\_in\\_sqrt}) \\ \\text{or} \\
        g_t / (\\sqrt{d_t} + \\epsilon)

    With ``bias_correction``, ``nu`` and ``m`` are divided by ``1 - rho^t`` first. Float range:
    ``g`` is clipped to ``+-sqrt(M)/2`` (``M`` the dtype's largest value) so that ``g^2`` stays
    finite; see ``tree_utils.clip_for_square``. ``overflow_guard=False`` leaves it out (Optax's
    arithmetic): same step time, a faster first compile on many small leaves (see ``scale_by_adam``).

    Args:
      decay: ``rho`` in [0, 1) or a schedule. Default 0.9 (Optax); torch's ``alpha`` is 0.99.
      eps: ``epsilon`` > 0. Default 1e-8.
      initial_scale: ``nu_0``. Default 0.
      eps_in_sqrt: where ``epsilon`` goes. Default True (Optax); False matches torch.
      centered: subtract the squared mean (Graves 2013). Default False.
      bias_correction: debias the averages. Default False.
      overflow_guard: clip ``g`` before squaring (above). Default True.

    Complex leaves: ``g^2`` and ``m^2`` are ``|g|^2`` and ``|m|^2``; ``nu`` is real.

    State: ``RmsState(step_count, nu, mu)``, with ``mu=None`` when not centered.
    Matches ``optax.scale_by_rms`` / ``optax.scale_by_stddev``; with ``eps_in_sqrt=False`` the
    denominator of ``torch.optim.RMSprop``. Reference: Tieleman & Hinton, Lecture 6.5, 2012.
    """
    check_decay(decay, "decay")
    check_positive(eps, "eps")
    check_non_negative(initial_scale, "initial_scale")

    def init_fn(params: Params) -> RmsState:
        check_float_leaves(params, allow_complex=True)
        mu = tree_zeros_like(params) if centered else None
        return RmsState(zero_step_count(), tree_real_full_like(params, initial_scale), mu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, RmsState, "scale_by_rms")
        check_trees_match(updates, state.nu, name="updates", reference_name="rms state", context="scale_by_rms")
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        raw_updates = updates
        if overflow_guard:
            updates = jax.tree.map(clip_for_square, updates, state.nu)
        rho = value_at(decay, state.step_count)
        step_count = saturating_increment(state.step_count)
        nu = jax.tree.map(lambda g, n: moving_average(abs_sq(g), n, rho), updates, state.nu)
        nu_hat = debias(nu, rho, step_count) if bias_correction else nu
        if centered:
            mu = jax.tree.map(lambda g, m: cast_like(rho, m) * m + cast_like(1 - rho, m) * g, updates, state.mu)
            mu_hat = debias(mu, rho, step_count) if bias_correction else mu
            # nu - m^2 >= 0 in exact arithmetic; rounding can make it slightly negative.
            denominator_sq = jax.tree.map(lambda n, m: jnp.maximum(n - abs_sq(m), 0), nu_hat, mu_hat)
        else:
            mu = None
            denominator_sq = nu_hat

        def scaled(g, d):
            if leaf_dtype(g) == leaf_dtype(d):  # lax directly: jnp operators trace as nested jits
                if eps_in_sqrt:
                    return jax.lax.mul(g, jax.lax.rsqrt(jax.lax.add(d, cast_eps_like(eps, d))))
                return jax.lax.div(g, jax.lax.add(jax.lax.sqrt(d), cast_eps_like(eps, d)))
            if eps_in_sqrt:
                return g * jax.lax.rsqrt(d + cast_eps_like(eps, d))
            return g / (jnp.sqrt(d) + cast_eps_like(eps, d))

        numerators = jax.tree.map(clip_for_square_unmerged, raw_updates, state.nu) if overflow_guard else updates
        return jax.tree.map(scaled, numerators, denominator_sq), RmsState(step_count, nu, mu)

    return GradientTransformation(init_fn, update_fn)


class AdadeltaState(NamedTuple):
    """State of ``scale_by_adadelta``: step count, moving averages of ``g^2`` and of ``Delta^2``."""

    step_count: jax.Array
    squared_gradient_avg: PyTree
    squared_delta_avg: PyTree

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count

    @property
    def e_g(self) -> PyTree:
        """Optax's name for ``squared_gradient_avg``."""
        return self.squared_gradient_avg

    @property
    def e_x(self) -> PyTree:
        """Optax's name for ``squared_delta_avg``."""
        return self.squared_delta_avg


ScaleByAdaDeltaState = AdadeltaState  # Optax's name for the same state


@check_schedule_arguments
def scale_by_adadelta(rho: ScalarOrSchedule = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """AdaDelta scaling (Zeiler 2012): a step with the units of the parameters.

    .. math::
        E[g^2]_t = \\rho E[g^2]_{t-1} + (1-\\rho) g_t^2, \\qquad
        \\Delta_t = \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}{\\sqrt{E[g^2]_t + \\epsilon}} g_t,
        \\qquad E[\\Delta^2]_t = \\rho E[\\Delta^2]_{t-1} + (1-\\rho) \\Delta_t^2

    Returns ``u_t = Delta_t`` (a direction to *subtract*); ``adadelta`` flips the sign. Float
    range: ``g`` is clipped to ``+-sqrt(M)/2`` (``M`` the dtype's largest value, see
    ``tree_utils.clip_for_square``) and ``E[Delta^2]`` saturates at ``M``.

    Args:
      rho: decay in [0, 1) or a schedule. Default 0.9.
      eps: ``epsilon`` > 0; it also sets the first step's size, ``sqrt(eps)``. Default 1e-6.

    State: ``AdadeltaState(step_count, squared_gradient_avg, squared_delta_avg)``.
    Matches ``optax.scale_by_adadelta`` and the inner step of ``torch.optim.Adadelta``.
    """
    check_decay(rho, "rho")
    check_positive(eps, "eps")

    def init_fn(params: Params) -> AdadeltaState:
        check_float_leaves(params)
        return AdadeltaState(zero_step_count(), tree_zeros_like(params), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, AdadeltaState, "scale_by_adadelta")
        check_trees_match(
            updates, state.squared_gradient_avg, name="updates", reference_name="adadelta state",
            context="scale_by_adadelta",
        )
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        updates = jax.tree.map(clip_for_square, updates, state.squared_gradient_avg)
        decay = value_at(rho, state.step_count)
        grad_avg = jax.tree.map(
            lambda g, e: cast_like(decay, e) * e + cast_like(1 - decay, e) * jnp.square(g),
            updates,
            state.squared_gradient_avg,
        )
        deltas = jax.tree.map(
            lambda g, eg, ex: jnp.sqrt(ex + cast_eps_like(eps, ex)) / jnp.sqrt(eg + cast_eps_like(eps, eg)) * g,
            updates,
            grad_avg,
            state.squared_delta_avg,
        )
        # Delta is the step and is not clipped; its average saturates instead of reaching inf.
        delta_avg = jax.tree.map(
            lambda d, e: saturate(cast_like(decay, e) * e + cast_like(1 - decay, e) * jnp.square(d)),
            deltas,
            state.squared_delta_avg,
        )
        return deltas, AdadeltaState(saturating_increment(state.step_count), grad_avg, delta_avg)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """AdaGrad: ``w_t = w_{t-1} - eta_t g_t / sqrt(s_t + eps)`` with ``s_t = s_{t-1} + g_t^2``.

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      initial_accumulator_value, eps, eps_in_sqrt, overflow_guard: see ``scale_by_adagrad``.

    Defaults are Optax's (``optax.adagrad``, same numbers). For ``torch.optim.Adagrad(lr)`` use
    ``adagrad(lr, initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False)``; torch's
    ``lr_decay`` is the schedule ``t -> lr / (1 + t * lr_decay)``.
    Reference: Duchi, Hazan, Singer, JMLR 2011.
    """
    return chain(
        scale_by_adagrad(initial_accumulator_value, eps, eps_in_sqrt=eps_in_sqrt, overflow_guard=overflow_guard),
        scale_by_learning_rate(learning_rate),
    )


@check_schedule_arguments
def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """RMSProp, optionally centered and with heavy-ball or Nesterov momentum.

    .. math::
        r_t = \\rho r_{t-1} + (1-\\rho) g_t^2, \\qquad s_t = \\eta_t g_t / \\sqrt{r_t + \\epsilon}

        \\text{no momentum: } w_t = w_{t-1} - s_t; \\qquad
        \\text{momentum: } b_t = \\mu b_{t-1} + s_t,\\ w_t = w_{t-1} - b_t
        \\ (\\text{Nesterov: } w_t = w_{t-1} - (s_t + \\mu b_t))

    With ``momentum`` and ``nesterov=True`` this is the lectures' "RMSProp with Nesterov
    momentum" (Goodfellow et al., Algorithm 8.6) in the reformulated variables ``w~ = w + mu v``,
    which takes the gradient at the current iterate instead of at an interim point.

    Args:
      learning_rate: ``eta`` >= 0 or a schedule.
      decay, eps, initial_scale, eps_in_sqrt, centered, bias_correction, overflow_guard: see
        ``scale_by_rms``.
      momentum: ``mu`` in [0, 1) or None. Default None.
      nesterov: Nesterov momentum. Default False.

    Arguments and defaults are ``optax.rmsprop``'s. ``torch.optim.RMSprop(lr, alpha, eps,
    momentum, centered)`` is ``rmsprop(lr, decay=alpha, eps=eps, eps_in_sqrt=False,
    centered=centered, momentum=momentum or None)``, step for step.
    """
    check_non_negative(learning_rate, "learning_rate")
    transforms = [
        scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, centered, bias_correction, overflow_guard=overflow_guard),
        scale_by_learning_rate(learning_rate),
    ]
    if momentum is not None:
        check_decay(momentum, "momentum")
        transforms.append(trace(decay=momentum, nesterov=nesterov))
    return chain(*transforms)


@check_schedule_arguments
def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: ScalarOrSchedule = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask=None,
) -> GradientTransformation:
    """AdaDelta (Zeiler 2012): ``w_t = w_{t-1} - eta_t Delta_t``; learning-rate free by default.

    ``Delta_t`` is defined in ``scale_by_adadelta``. With ``learning_rate=None`` the step is
    Zeiler's rule ``w_t = w_{t-1} - Delta_t`` (i.e. ``eta = 1``), which descends; this equals
    ``torch.optim.Adadelta(lr=1.0, rho, eps)`` step for step. A positive ``weight_decay`` adds
    ``lambda w`` to the gradient first (torch's ``weight_decay``).

    Args:
      learning_rate: ``eta`` >= 0, a schedule, or None (Zeiler's rule, ``eta = 1``). Default None.
      rho: decay in [0, 1). Default 0.9.
      eps: ``epsilon``. Default 1e-6.
      weight_decay: L2 coefficient ``lambda`` added to the gradient. Default 0.
      weight_decay_mask: tree of booleans (or function of params) choosing decayed leaves.

    Differs from ``optax.adadelta`` with ``learning_rate=None``, which does not move downhill.
    """
    check_non_negative(learning_rate if learning_rate is not None else 1.0, "learning_rate")
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )
