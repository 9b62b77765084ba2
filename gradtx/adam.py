"""The Adam family: Adam, AdamW, AdaMax, NAdam and AMSGrad.

The building blocks return the *scaled gradient* ``m_hat / (sqrt(v_hat) + eps)``; the named
optimizers chain them with ``scale_by_learning_rate`` (and weight decay for AdamW).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule, value_at
from gradtx.combinators import MaskOrFn, chain
from gradtx.momentum import bias_correction
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    abs_sq,
    cast_eps_like,
    cast_like,
    check_float_leaves,
    check_trees_match,
    clip_for_square,
    keep_dtype,
    leaf_dtype,
    moving_average,
    saturating_increment,
    tree_cast,
    tree_real_zeros_like,
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


class AdamState(NamedTuple):
    """State of ``scale_by_adam`` and ``scale_by_adamax``: step count, first and second moments.

    For AdaMax ``nu`` holds the exponentially weighted infinity norm ``u_t``.
    """

    step_count: jax.Array
    mu: PyTree
    nu: PyTree

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


ScaleByAdamState = AdamState  # Optax's name for the same state


def _first_moment(g, m, b1):
    return moving_average(g, m, b1)


def _second_moment(g, v, b2):
    return moving_average(abs_sq(g), v, b2)


def _debiased_first_moment(mu: PyTree, updates: PyTree, b1: Any, count: jax.Array, nesterov: bool) -> PyTree:
    """``m_t / (1 - b1^t)``, or with ``nesterov`` ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)``."""
    if not nesterov:
        return bias_correction(mu, b1, count)
    ahead = bias_correction(mu, b1, saturating_increment(count))
    now = bias_correction(updates, b1, count)
    return jax.tree.map(lambda m, g: moving_average(g, m, b1), ahead, now)


def _adaptive_step(mu_hat: PyTree, nu_hat: PyTree, updates: PyTree, eps: Any, eps_root: Any) -> PyTree:
    """``m_hat / (sqrt(v_hat + eps_root) + eps)`` in the gradient's dtype.

    bfloat16 moments and float16 gradients promote to float32 inside; the step keeps ``g``'s dtype.
    """
    # A zero eps_root given as a number adds nothing (v >= 0): one operation less per leaf to trace.
    skip_root = isinstance(eps_root, (int, float)) and eps_root == 0

    def step(m, v, g):
        dtype = leaf_dtype(m)
        if dtype == leaf_dtype(v) == leaf_dtype(g):
            # lax directly: a jnp operator traces as a nested jit, one per operation and leaf.
            root = v if skip_root else jax.lax.add(v, cast_like(eps_root, v))
            return jax.lax.div(m, jax.lax.add(jax.lax.sqrt(root), cast_eps_like(eps, v)))
        return keep_dtype(m / (jnp.sqrt(v + cast_like(eps_root, v)) + cast_eps_like(eps, v)), g.dtype)

    return jax.tree.map(step, mu_hat, nu_hat, updates)


def _check_betas(b1: Any, b2: Any) -> None:
    check_decay(b1, "b1")
    check_decay(b2, "b2")


@check_schedule_arguments
def scale_by_adam(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """Adam scaling (Kingma & Ba 2015), optionally with Nesterov momentum (Dozat 2016).

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

        \\hat m_t = \\frac{m_t}{1-\\beta_1^t} \\quad\\text{or, with nesterov,}\\quad
        \\hat m_t = \\frac{\\beta_1 m_t}{1-\\beta_1^{t+1}} + \\frac{(1-\\beta_1) g_t}{1-\\beta_1^t}

        \\hat v_t = \\frac{v_t}{1-\\beta_2^t}, \\qquad
        u_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}

    Args:
      b1: ``beta_1`` in [0, 1) or a schedule. Default 0.9.
      b2: ``beta_2`` in [0, 1) or a schedule. Default 0.999. (Scheduled betas are debiased with
        their current value, ``1 - beta_t^t``.)
      eps: ``epsilon`` > 0 outside the root. Default 1e-8.
      eps_root: ``epsilon_root`` inside the root (use > 0 when differentiating through Adam).
        Default 0.
      mu_dtype, nu_dtype: storage dtypes of ``m`` and ``v`` (e.g. ``jnp.bfloat16`` for 4 bytes of
        state per parameter); arithmetic runs in the wider of that and the gradient's dtype, and
        the update is returned in the gradient's dtype.
      nesterov: the NAdam first moment above.

    Float range: ``g`` is clipped to ``+-sqrt(M)/2`` (``M`` the largest value of ``v``'s dtype,
    about 9.2e18 in float32) before both moments, so ``g^2`` cannot overflow to inf; the update
    ``m / sqrt(v)`` does not depend on the gradient's scale, so the step is kept. See
    ``tree_utils.clip_for_square``; nothing changes below that bound. ``overflow_guard=False``
    leaves the clip out (Optax's arithmetic, ``g^2`` overflows above about 1.8e19 in float32):
    the step time is the same either way (the step is memory-bound), but the clip's three
    operations in each of the two moment kernels make the first compile of a step on many small
    leaves about 20% slower on a CPU (1000 leaves of 16K: 1.2x Optax's compile time with the
    guard, 0.9x without; benchmarks/RESULTS.md, "default path"). Default True.

    Complex leaves: ``g_t^2`` is ``|g_t|^2`` and ``v`` is stored in the real dtype, as Optax's numbers.

    State: ``AdamState(step_count, mu=m, nu=v)``.
    Matches ``optax.scale_by_adam``; with ``scale_by_learning_rate`` it is ``torch.optim.Adam``.
    """
    _check_betas(b1, b2)
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")

    def init_fn(params: Params) -> AdamState:
        check_float_leaves(params, allow_complex=True)
        return AdamState(zero_step_count(), tree_zeros_like(params, mu_dtype), tree_real_zeros_like(params, nu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, AdamState, "scale_by_adam")
        check_trees_match(updates, state.mu, name="updates", reference_name="adam state", context="scale_by_adam")
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        if overflow_guard:
            updates = jax.tree.map(clip_for_square, updates, state.nu)
        beta1 = value_at(b1, state.step_count)
        beta2 = value_at(b2, state.step_count)
        mu = jax.tree.map(lambda g, m: _first_moment(g, m, beta1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: _second_moment(g, v, beta2), updates, state.nu)
        step_count = saturating_increment(state.step_count)
        mu_hat = _debiased_first_moment(mu, updates, beta1, step_count, nesterov)
        nu_hat = bias_correction(nu, beta2, step_count)
        new_updates = _adaptive_step(mu_hat, nu_hat, updates, eps, eps_root)
        return new_updates, AdamState(step_count, tree_cast(mu, mu_dtype), tree_cast(nu, nu_dtype))

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def scale_by_adamax(
    b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """AdaMax scaling (Kingma & Ba 2015, Section 7.1): Adam with the infinity norm.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        u_t = \\max(\\beta_2 u_{t-1}, |g_t| + \\epsilon), \\qquad
        \\text{update} = \\frac{m_t}{(1-\\beta_1^t)\\, u_t}

    Args:
      b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
      eps: ``epsilon`` > 0 added to ``|g|``. Default 1e-8.

    State: ``AdamState(step_count, mu=m, nu=u)``, ``u`` real for complex leaves.
    Matches ``optax.scale_by_adamax`` and ``torch.optim.Adamax``.
    """
    _check_betas(b1, b2)
    check_positive(eps, "eps")

    def init_fn(params: Params) -> AdamState:
        check_float_leaves(params, allow_complex=True)
        return AdamState(zero_step_count(), tree_zeros_like(params), tree_real_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, AdamState, "scale_by_adamax")
        check_trees_match(updates, state.mu, name="updates", reference_name="adamax state", context="scale_by_adamax")
        beta1, beta2 = value_at(b1, state.step_count), value_at(b2, state.step_count)
        step_count = saturating_increment(state.step_count)
        mu = jax.tree.map(lambda g, m: _first_moment(g, m, beta1), updates, state.mu)
        nu = jax.tree.map(
            lambda g, u: jnp.maximum(cast_like(beta2, u) * u, jnp.abs(g) + cast_eps_like(eps, u)), updates, state.nu
        )
        mu_hat = bias_correction(mu, beta1, step_count)
        return jax.tree.map(lambda m, u: m / u, mu_hat, nu), AdamState(step_count, mu, nu)

    return GradientTransformation(init_fn, update_fn)


class AmsgradState(NamedTuple):
    """State of ``scale_by_amsgrad``: step count, moments and the running maximum ``v_max``."""

    step_count: jax.Array
    mu: PyTree
    nu: PyTree
    nu_max: PyTree

    @property
    def count(self) -> jax.Array:
        """Optax's name for ``step_count``."""
        return self.step_count


ScaleByAmsgradState = AmsgradState  # Optax's name for the same state


@check_schedule_arguments
def scale_by_amsgrad(
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    debias_before_max: bool = True,
) -> GradientTransformation:
    """AMSGrad scaling (Reddi, Kale, Kumar 2018): Adam with a non-decreasing second moment.

    .. math::
        m_t, v_t \\text{ as in Adam}, \\qquad
        \\hat v^{max}_t = \\max(\\hat v^{max}_{t-1}, v_t / (1-\\beta_2^t)), \\qquad
        u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{\\hat v^{max}_t + \\epsilon_{root}} + \\epsilon}

    With ``debias_before_max=False`` the maximum is taken of the raw ``v_t`` and debiased
    after: ``v^{max}_t = max(v^{max}_{t-1}, v_t)``, denominator ``sqrt(v^{max}_t/(1-beta_2^t))``.

    Args:
      b1, b2, eps, eps_root, mu_dtype: as in ``scale_by_adam``.
      debias_before_max: True (default) matches ``optax.scale_by_amsgrad``; False matches
        ``torch.optim.Adam(amsgrad=True)``.

    Float range: as in ``scale_by_adam``, ``g`` is clipped to ``+-sqrt(M)/2`` before the moments.

    State: ``AmsgradState(step_count, mu, nu, nu_max)``; complex leaves use ``|g|^2`` (real ``nu``).
    """
    _check_betas(b1, b2)
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")

    def init_fn(params: Params) -> AmsgradState:
        check_float_leaves(params, allow_complex=True)
        zeros = tree_real_zeros_like(params)
        return AmsgradState(zero_step_count(), tree_zeros_like(params, mu_dtype), zeros, zeros)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, AmsgradState, "scale_by_amsgrad")
        check_trees_match(updates, state.mu, name="updates", reference_name="amsgrad state", context="scale_by_amsgrad")
        # Why: in float32 g^2 is inf for |g| > 1.8e19, and an inf never leaves a moving average.
        updates = jax.tree.map(clip_for_square, updates, state.nu)
        beta1, beta2 = value_at(b1, state.step_count), value_at(b2, state.step_count)
        step_count = saturating_increment(state.step_count)
        mu = jax.tree.map(lambda g, m: _first_moment(g, m, beta1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: _second_moment(g, v, beta2), updates, state.nu)
        mu_hat = bias_correction(mu, beta1, step_count)
        if debias_before_max:
            nu_max = jax.tree.map(jnp.maximum, state.nu_max, bias_correction(nu, beta2, step_count))
            nu_eff = nu_max
        else:
            nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
            nu_eff = bias_correction(nu_max, beta2, step_count)
        # The step keeps the gradient's dtype (a narrower mu_dtype would otherwise promote it).
        new_updates = jax.tree.map(
            lambda m, v, g: keep_dtype(m / (jnp.sqrt(v + cast_like(eps_root, v)) + cast_eps_like(eps, v)), g.dtype),
            mu_hat,
            nu_eff,
            updates,
        )
        return new_updates, AmsgradState(step_count, tree_cast(mu, mu_dtype), nu, nu_max)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def adam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """Adam: ``w_t = w_{t-1} - eta_t m_hat_t / (sqrt(v_hat_t + eps_root) + eps)``.

    The moments are defined in ``scale_by_adam``. Arguments and defaults are ``optax.adam``'s;
    with ``eps_root=0`` it equals ``torch.optim.Adam(lr, betas=(b1, b2), eps)`` step for step.
    ``overflow_guard`` (default True) clips gradients above ``sqrt(M)/2`` before the moments;
    False gives Optax's arithmetic and a faster first compile on many leaves (see ``scale_by_adam``).

    Example::

        optimizer = gradtx.adam(1e-3)
        state = optimizer.init(params)
        updates, state = optimizer.update(grads, state)
        params = gradtx.apply_updates(params, updates)

    Reference: Kingma & Ba, "Adam: a method for stochastic optimization", ICLR 2015.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype,
                      overflow_guard=overflow_guard),
        scale_by_learning_rate(learning_rate),
    )


@check_schedule_arguments
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
    overflow_guard: bool = True,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}
        + \\lambda w_{t-1} \\right)

    Arguments and defaults are ``optax.adamw``'s (``weight_decay=1e-4``). It equals
    ``torch.optim.AdamW(lr, betas, eps, weight_decay)`` step for step (torch's default decay
    is 1e-2). ``mask`` selects the leaves that decay; ``overflow_guard`` as in ``scale_by_adam``.
    Reference: Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR 2019.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype,
                      overflow_guard=overflow_guard),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@check_schedule_arguments
def adamax(
    learning_rate: ScalarOrSchedule, b1: ScalarOrSchedule = 0.9, b2: ScalarOrSchedule = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """AdaMax: ``w_t = w_{t-1} - eta_t m_t / ((1 - beta_1^t) u_t)``.

    Here ``u_t = max(beta_2 u_{t-1}, |g_t| + eps)``.

    Arguments and defaults are ``optax.adamax``'s; equals ``torch.optim.Adamax(lr, betas, eps)``
    step for step. Reference: Kingma & Ba 2015, Section 7.1.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


@check_schedule_arguments
def nadam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """NAdam: Adam with a Nesterov first moment (see ``scale_by_adam(nesterov=True)``).

    .. math::
        w_t = w_{t-1} - \\eta_t \\frac{\\beta_1 m_t / (1-\\beta_1^{t+1}) + (1-\\beta_1) g_t / (1-\\beta_1^t)}
        {\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}

    Arguments and defaults are ``optax.nadam``'s and give the same numbers. ``torch.optim.NAdam``
    differs: it adds Dozat's momentum-decay schedule ``mu_t = beta_1 (1 - 0.5 * 0.96^(0.004 t))``.
    Reference: Dozat, "Incorporating Nesterov momentum into Adam", ICLR workshop 2016.
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)


@check_schedule_arguments
def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    debias_before_max: bool = True,
) -> GradientTransformation:
    """AMSGrad: Adam whose denominator never decreases (see ``scale_by_amsgrad``).

    Defaults are ``optax.amsgrad``'s (same numbers); ``debias_before_max=False`` equals
    ``torch.optim.Adam(lr, betas, eps, amsgrad=True)`` step for step.
    Reference: Reddi, Kale, Kumar, "On the convergence of Adam and beyond", ICLR 2018.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(
        scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, debias_before_max=debias_before_max),
        scale_by_learning_rate(learning_rate),
    )
