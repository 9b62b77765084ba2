"""Parameter-free methods: step sizes estimated from the distance travelled and the gradients seen.

Prodigy and D-Adaptation (AdamW) estimate the distance ``D = ||w_0 - w_*||`` and run Adam with
step ``D``; DoG and DoWG divide the largest distance from ``w_0`` by the accumulated gradient
norms; COCOB bets on each coordinate with coin-betting wealth. None needs a learning rate: the
``learning_rate`` argument is a multiplier (or schedule) around 1. Mechanic, a learning-rate tuner
that wraps any optimizer, is in ``gradtx.contrib.mechanic``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree as gtree
from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule, identity, value_at
from gradtx.combinators import chain
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    check_float_leaves,
    check_trees_match,
    saturating_increment,
    tree_sum_of_squares,
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

_NEEDS_PARAMS = "{name} needs the parameters: call update(updates, state, params)."


def _scalar_dtype(params: Params) -> Any:
    """The lowest float dtype of the leaves: scalar state never widens a leaf (Optax's choice)."""
    return gtree.dtype(params, "lowest") if jax.tree.leaves(params) else jnp.float32


def _l1(tree: PyTree) -> jax.Array:
    leaves = [jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)]
    return sum(leaves) if leaves else jnp.zeros([])


def _vdot(tree_a: PyTree, tree_b: PyTree) -> jax.Array:
    """``<a, b>`` over all leaves, each leaf's product contracted by ``tensordot`` at full precision.

    Why not ``tree_utils.tree_vdot``: the parameter-free estimates feed back into the step, so
    a rounding difference of 1e-17 can grow to 1e-2 over 150 steps (Mechanic); contracting as
    Optax does keeps the trajectories equal to the last bits.
    """
    products = [
        jnp.tensordot(jnp.conj(a) if jnp.iscomplexobj(a) else a, b, jnp.ndim(a), precision=jax.lax.Precision.HIGHEST)
        for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b))
    ]
    return sum(products[1:], products[0]) if products else jnp.zeros([])


def _adam_debias(b1: float, b2: float, step_count: jax.Array, enabled: bool) -> Any:
    """``sqrt(1 - b2^t) / (1 - b1^t)``, Adam's bias correction folded into the step size."""
    if not enabled:
        return 1.0
    return jnp.sqrt(1 - b2**step_count) / (1 - b1**step_count)


class ProdigyState(NamedTuple):
    """State of ``prodigy``.

    ``exp_avg``, ``exp_avg_sq``: Adam's moments of ``d_k g``; ``grad_sum``: the weighted gradient
    sum ``s``; ``params0``: ``w_0``; ``estim_lr``: the distance estimate ``d``;
    ``numerator_weighted``: the running numerator ``r``; ``count``: the step count.
    """

    exp_avg: PyTree
    exp_avg_sq: PyTree
    grad_sum: PyTree
    params0: PyTree
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


@check_schedule_arguments
def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
    *,
    bias_correction: bool = True,
) -> GradientTransformation:
    """Prodigy (Mishchenko & Defazio 2023): AdamW whose step size is a learned distance ``d_k``.

    With ``eta_k`` the ``learning_rate`` schedule, ``beta_3 = sqrt(beta_2)`` by default and
    ``c_k = sqrt(1 - beta_2^k) / (1 - beta_1^k)`` (1 without ``bias_correction``):

    .. math::
        \\lambda_k = d_k \\eta_k c_k, \\qquad
        r_k = \\beta_3 r_{k-1} + \\frac{d_k}{d_0} \\lambda_k \\langle g_k, w_0 - w_k \\rangle, \\qquad
        s_k = \\beta_3 s_{k-1} + \\frac{d_k}{d_0} \\lambda_k g_k

        m_k = \\beta_1 m_{k-1} + (1-\\beta_1) d_k g_k, \\qquad
        v_k = \\beta_2 v_{k-1} + (1-\\beta_2) d_k^2 g_k^2

        d_{k+1} = \\max\\Big(d_k, \\; \\gamma \\frac{r_k}{\\|s_k\\|_1}\\Big), \\qquad
        w_{k+1} = w_k - \\lambda_k \\omega w_k - \\lambda_k \\frac{m_k}{\\sqrt{v_k} + d_{k+1} \\epsilon}

    With ``safeguard_warmup`` the ``s`` update uses ``d_k`` in place of ``lambda_k`` (no schedule
    in the denominator during warm-up).

    Args:
      learning_rate: ``eta``, a multiplier (or schedule) around 1. Default 1.0; the authors
        recommend a linear decay from 1 to 0 with 0-20% warm-up.
      betas: ``(beta_1, beta_2)`` of Adam. Default (0.9, 0.999).
      beta3: ``beta_3`` of the distance estimate; None (default) is ``sqrt(beta_2)``.
      eps: ``epsilon``, scaled by ``d``. Default 1e-8.
      estim_lr0: ``d_0`` > 0, the initial under-estimate. Default 1e-6.
      estim_lr_coef: ``gamma`` > 0, multiplies each estimate. Default 1.0.
      weight_decay: ``omega`` >= 0, decoupled (AdamW) decay. Default 0.
      safeguard_warmup: as above. Default False.
      bias_correction: Adam's bias correction in ``lambda_k``. Default True (Optax always
        applies it); False is the default of the authors' code and of
        ``pytorch_optimizer.Prodigy``.

    When every gradient seen is zero (``||s_k||_1 = 0``) ``d`` is kept, where Optax's estimate
    becomes NaN (the authors' code skips such a step).

    State: ``ProdigyState(exp_avg, exp_avg_sq, grad_sum, params0, estim_lr, numerator_weighted,
    count)``. Needs ``params``.

    Matches ``optax.contrib.prodigy``, and ``pytorch_optimizer.Prodigy(bias_correction=True)``.

    References:
      Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML
      2024, arXiv:2306.06101.
    """
    beta1, beta2 = betas
    check_decay(beta1, "betas[0]")
    check_decay(beta2, "betas[1]")
    if beta3 is None:
        beta3 = beta2**0.5
    check_decay(beta3, "beta3")
    check_positive(eps, "eps")
    check_positive(estim_lr0, "estim_lr0")
    check_positive(estim_lr_coef, "estim_lr_coef")
    check_non_negative(weight_decay, "weight_decay")
    check_non_negative(learning_rate, "learning_rate")

    def init_fn(params: Params) -> ProdigyState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        zeros = tree_zeros_like(params)
        return ProdigyState(
            zeros, zeros, zeros, params, jnp.asarray(estim_lr0, dtype), jnp.zeros([], dtype), zero_step_count()
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ProdigyState, "prodigy")
        del extra_args
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name="prodigy"))
        check_trees_match(updates, state.exp_avg, name="updates", reference_name="prodigy state")
        count = saturating_increment(state.count)
        d = state.estim_lr
        dlr = jnp.asarray(d * value_at(learning_rate, state.count) * _adam_debias(beta1, beta2, count,
                                                                                 bias_correction), d.dtype)
        scaled = jax.tree.map(lambda g: d * g, updates)
        distance_dot = _vdot(updates, jax.tree.map(lambda p0, p: p0 - p, state.params0, params))
        exp_avg = jax.tree.map(lambda m, dg: beta1 * m + (1 - beta1) * dg, state.exp_avg, scaled)
        exp_avg_sq = jax.tree.map(lambda v, dg: beta2 * v + (1 - beta2) * dg * dg, state.exp_avg_sq, scaled)
        s_weight = d if safeguard_warmup else dlr
        grad_sum = jax.tree.map(lambda s, dg: beta3 * s + s_weight * dg / estim_lr0, state.grad_sum, scaled)
        numerator = beta3 * state.numerator_weighted + (d / estim_lr0) * dlr * distance_dot
        denominator = _l1(grad_sum)
        estimate = estim_lr_coef * numerator / jnp.where(denominator > 0, denominator, 1)
        new_d = jnp.where(denominator > 0, jnp.maximum(d, estimate), d).astype(d.dtype)
        new_updates = jax.tree.map(
            lambda m, v, p: -weight_decay * dlr * p - dlr * m / (jnp.sqrt(v) + new_d * eps), exp_avg, exp_avg_sq, params
        )
        return new_updates, ProdigyState(
            exp_avg, exp_avg_sq, grad_sum, state.params0, new_d, numerator.astype(d.dtype), count
        )

    return GradientTransformation(init_fn, update_fn)


class DAdaptAdamWState(NamedTuple):
    """State of ``dadapt_adamw``.

    ``exp_avg``, ``exp_avg_sq``: Adam's moments (the first holds ``lambda_k g``); ``grad_sum``: the
    weighted gradient sum ``s``; ``estim_lr``: the distance estimate ``d``; ``numerator_weighted``:
    the running numerator ``r``; ``count``: the step count.
    """

    exp_avg: PyTree
    exp_avg_sq: PyTree
    grad_sum: PyTree
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


@check_schedule_arguments
def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    bias_correction: bool = True,
) -> GradientTransformation:
    """D-Adaptation AdamW (Defazio & Mishchenko 2023): AdamW with a learned distance ``d_k``.

    With ``eta_k`` the ``learning_rate`` schedule, ``b = sqrt(beta_2)`` and
    ``c_k = sqrt(1 - beta_2^k) / (1 - beta_1^k)`` (1 without ``bias_correction``):

    .. math::
        \\lambda_k = d_k \\eta_k c_k, \\qquad
        r_k = b\\, r_{k-1} + (1-b) \\lambda_k \\Big\\langle g_k, \\frac{s_{k-1}}{\\sqrt{v_{k-1}} + \\epsilon}
        \\Big\\rangle, \\qquad s_k = b\\, s_{k-1} + (1-b) \\lambda_k g_k

        m_k = \\beta_1 m_{k-1} + (1-\\beta_1) \\lambda_k g_k, \\qquad
        v_k = \\beta_2 v_{k-1} + (1-\\beta_2) g_k^2

        d_{k+1} = \\max\\Big(d_k, \\frac{r_k}{(1-b) \\|s_k\\|_1}\\Big), \\qquad
        w_{k+1} = w_k - \\lambda_k \\omega w_k - \\frac{m_k}{\\sqrt{v_k} + \\epsilon}

    Args:
      learning_rate: ``eta``, a multiplier (or schedule) around 1. Default 1.0.
      betas: ``(beta_1, beta_2)`` of Adam. Default (0.9, 0.999).
      eps: ``epsilon`` > 0. Default 1e-8.
      estim_lr0: ``d_0`` > 0, the initial under-estimate. Default 1e-6.
      weight_decay: ``omega`` >= 0, decoupled (AdamW) decay. Default 0.
      bias_correction: Adam's bias correction in ``lambda_k``. Default True (as in Optax);
        False is the default of the authors' ``DAdaptAdam`` and of
        ``pytorch_optimizer.DAdaptAdam``.

    When ``||s_k||_1 = 0`` (only zero gradients so far) ``d`` is kept, where Optax's estimate
    becomes NaN (the authors' code skips such a step).

    State: ``DAdaptAdamWState(exp_avg, exp_avg_sq, grad_sum, estim_lr, numerator_weighted, count)``.
    Needs ``params``.

    Matches ``optax.contrib.dadapt_adamw``, and
    ``pytorch_optimizer.DAdaptAdam(bias_correction=True, weight_decouple=True)``.

    References:
      Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023,
      arXiv:2301.07733.
    """
    beta1, beta2 = betas
    check_decay(beta1, "betas[0]")
    check_decay(beta2, "betas[1]")
    check_positive(eps, "eps")
    check_positive(estim_lr0, "estim_lr0")
    check_non_negative(weight_decay, "weight_decay")
    check_non_negative(learning_rate, "learning_rate")
    root_beta2 = beta2**0.5

    def init_fn(params: Params) -> DAdaptAdamWState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        zeros = tree_zeros_like(params)
        return DAdaptAdamWState(
            zeros, zeros, zeros, jnp.asarray(estim_lr0, dtype), jnp.zeros([], dtype), zero_step_count()
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, DAdaptAdamWState, "dadapt_adamw")
        del extra_args
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name="dadapt_adamw"))
        check_trees_match(updates, state.exp_avg, name="updates", reference_name="dadapt_adamw state")
        count = saturating_increment(state.count)
        d = state.estim_lr
        dtype = state.numerator_weighted.dtype
        dlr = jnp.asarray(d * value_at(learning_rate, state.count) * _adam_debias(beta1, beta2, count,
                                                                                 bias_correction), dtype)
        weighted_sum = jax.tree.map(lambda s, v: s / (jnp.sqrt(v) + eps), state.grad_sum, state.exp_avg_sq)
        inner = _vdot(updates, weighted_sum)
        exp_avg = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * dlr * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        grad_sum = jax.tree.map(lambda s, g: root_beta2 * s + (1 - root_beta2) * dlr * g, state.grad_sum, updates)
        numerator = root_beta2 * state.numerator_weighted + (1 - root_beta2) * dlr * inner
        denominator = (1 - root_beta2) * _l1(grad_sum)
        estimate = numerator / jnp.where(denominator > 0, denominator, 1)
        new_d = jnp.where(denominator > 0, jnp.maximum(d, estimate), d).astype(d.dtype)
        new_updates = jax.tree.map(
            lambda m, v, p: -weight_decay * dlr * p - m / (jnp.sqrt(v) + eps), exp_avg, exp_avg_sq, params
        )
        return new_updates, DAdaptAdamWState(exp_avg, exp_avg_sq, grad_sum, new_d, numerator.astype(dtype), count)

    return GradientTransformation(init_fn, update_fn)


class DoGState(NamedTuple):
    """State of ``scale_by_dog``: ``is_init_step`` (True before the first update), ``init_params``
    ``w_0``, ``max_dist`` the running ``r_bar`` and ``sum_sq_norm_grads`` the running ``G``."""

    is_init_step: jax.Array
    init_params: PyTree
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


InitStep = tuple[Literal["distance", "learning_rate", "heuristic"], float]


@check_schedule_arguments
def scale_by_dog(init_step: InitStep, eps: float = 1e-8) -> GradientTransformation:
    """Distance over Gradients scaling (Ivgi et al. 2023): ``u_t = eta_t g_t``.

    .. math::
        \\bar r_t = \\max\\big(r_\\epsilon, \\max_{k \\le t} \\|w_k - w_0\\|\\big), \\qquad
        G_t = \\sum_{k \\le t} \\|g_k\\|^2, \\qquad
        \\eta_t = \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}

    Args:
      init_step: ``(kind, value)``: ``("distance", r)`` sets ``r_epsilon = r``;
        ``("heuristic", alpha)`` sets ``r_epsilon = alpha (1 + ||w_0||)`` (so ``init`` must see
        the real parameters); ``("learning_rate", eta_0)`` takes ``r_epsilon = 0`` and
        ``eta_1 = eta_0``.
      eps: ``epsilon`` added to ``G``. Default 1e-8.

    State: ``DoGState``. Needs ``params``. Matches ``optax.contrib``'s ``scale_by_dog``.
    """
    kind, value = init_step
    if kind not in ("distance", "learning_rate", "heuristic"):
        raise ValueError(
            f"init_step[0] must be 'distance', 'learning_rate' or 'heuristic', got {kind!r}."
        )
    check_non_negative(value, "init_step[1]")
    check_non_negative(eps, "eps")

    def init_fn(params: Params) -> DoGState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        if kind == "distance":
            r_eps = value
        elif kind == "heuristic":
            r_eps = value * (1 + jnp.sqrt(tree_sum_of_squares(params)))
        else:
            r_eps = 0.0
        return DoGState(jnp.asarray(True), params, jnp.asarray(r_eps, dtype), jnp.zeros([], dtype))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, DoGState, "scale_by_dog")
        del extra_args
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name="scale_by_dog"))
        check_trees_match(updates, state.init_params, name="updates", reference_name="dog state")
        distance = jnp.sqrt(tree_sum_of_squares(jax.tree.map(jnp.subtract, state.init_params, params)))
        max_dist = jnp.maximum(state.max_dist, distance).astype(state.max_dist.dtype)
        sum_sq = (state.sum_sq_norm_grads + tree_sum_of_squares(updates)).astype(state.sum_sq_norm_grads.dtype)
        step = max_dist / jnp.sqrt(sum_sq + eps)
        if kind == "learning_rate":
            step = jnp.where(state.is_init_step, value, step)
        new_updates = jax.tree.map(lambda g: (step * g).astype(g.dtype), updates)
        return new_updates, DoGState(jnp.asarray(False), state.init_params, max_dist, sum_sq)

    return GradientTransformation(init_fn, update_fn)


def _maybe_decay(weight_decay: Any, mask: Any) -> GradientTransformation:
    return identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)


@check_schedule_arguments
def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: InitStep = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: float | None = None,
    mask: Any | Callable[[Params], Any] | None = None,
) -> GradientTransformation:
    """DoG, Distance over Gradients (Ivgi et al. 2023): SGD with the step ``r_bar_t / sqrt(G_t)``.

    .. math::
        \\tilde g_t = g_t + \\omega w_t, \\qquad
        \\bar r_t = \\max\\big(r_\\epsilon, \\max_{k \\le t} \\|w_k - w_0\\|\\big), \\qquad
        G_t = \\sum_{k \\le t} \\|\\tilde g_k\\|^2

        w_{t+1} = w_t - c_t \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}} \\tilde g_t

    Args:
      learning_rate: ``c_t``, a multiplier (or schedule); the authors advise 1. Default 1.0.
      init_step: see ``scale_by_dog``. Default ``("heuristic", 1e-6)``, i.e.
        ``r_epsilon = 1e-6 (1 + ||w_0||)`` (the authors suggest 1e-4 with batch normalization).
      eps: ``epsilon`` added to ``G``. Default 1e-8.
      weight_decay: ``omega``, an L2 term added to the gradient; None (default) for none.
      mask: which leaves get ``weight_decay`` (see ``add_decayed_weights``).

    The authors recommend iterate averaging on top. ``init`` must see the real parameters.
    State: the ``chain`` of ``add_decayed_weights`` (or ``identity``), ``scale_by_dog`` and
    ``scale_by_learning_rate``. Matches ``optax.contrib.dog`` and the authors' ``dog.DoG``
    (with ``init_step=("learning_rate", eta)`` the first step here is ``c_1 eta``; theirs is ``eta``).

    References:
      Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
      Schedule", ICML 2023, arXiv:2302.12022.
    """
    return chain(_maybe_decay(weight_decay, mask), scale_by_dog(init_step, eps), scale_by_learning_rate(learning_rate))


class DoWGState(NamedTuple):
    """State of ``scale_by_dowg``: ``init_params`` ``w_0``, ``weighted_sq_norm_grads`` the running
    ``v`` and ``estim_sq_dist`` the running ``r_bar^2``."""

    init_params: PyTree
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


@check_schedule_arguments
def scale_by_dowg(init_estim_sq_dist: float | None = None, eps: float = 1e-4) -> GradientTransformation:
    """Distance over Weighted Gradients scaling (Khaled et al. 2023): ``u_t = eta_t g_t``.

    .. math::
        \\bar r_t^2 = \\max\\big(\\bar r_{t-1}^2, \\|w_t - w_0\\|^2\\big), \\qquad
        v_t = v_{t-1} + \\bar r_t^2 \\|g_t\\|^2, \\qquad
        \\eta_t = \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon}

    Args:
      init_estim_sq_dist: ``r_bar_0^2 > 0``; None (default) uses ``eps``.
      eps: ``epsilon`` > 0 in the denominator. Default 1e-4.

    State: ``DoWGState``. Needs ``params``. Matches ``optax.contrib``'s ``scale_by_dowg``.
    """
    check_positive(eps, "eps")
    if init_estim_sq_dist is not None:
        check_positive(init_estim_sq_dist, "init_estim_sq_dist")
    r0_sq = eps if init_estim_sq_dist is None else init_estim_sq_dist

    def init_fn(params: Params) -> DoWGState:
        check_float_leaves(params)
        dtype = _scalar_dtype(params)
        return DoWGState(params, jnp.zeros([], dtype), jnp.asarray(r0_sq, dtype))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, DoWGState, "scale_by_dowg")
        del extra_args
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name="scale_by_dowg"))
        check_trees_match(updates, state.init_params, name="updates", reference_name="dowg state")
        sq_dist = tree_sum_of_squares(jax.tree.map(jnp.subtract, state.init_params, params))
        estim_sq_dist = jnp.maximum(state.estim_sq_dist, sq_dist).astype(state.estim_sq_dist.dtype)
        weighted = (state.weighted_sq_norm_grads + estim_sq_dist * tree_sum_of_squares(updates)).astype(
            state.weighted_sq_norm_grads.dtype
        )
        step = estim_sq_dist / (jnp.sqrt(weighted) + eps)
        new_updates = jax.tree.map(lambda g: (step * g).astype(g.dtype), updates)
        return new_updates, DoWGState(state.init_params, weighted, estim_sq_dist)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: float | None = None,
    eps: float = 1e-4,
    weight_decay: float | None = None,
    mask: Any | Callable[[Params], Any] | None = None,
) -> GradientTransformation:
    """DoWG, Distance over Weighted Gradients (Khaled et al. 2023).

    .. math::
        \\tilde g_t = g_t + \\omega w_t, \\qquad
        \\bar r_t^2 = \\max\\big(\\bar r_{t-1}^2, \\|w_t - w_0\\|^2\\big), \\qquad
        v_t = v_{t-1} + \\bar r_t^2 \\|\\tilde g_t\\|^2

        w_{t+1} = w_t - c_t \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon} \\tilde g_t

    Args:
      learning_rate: ``c_t``, a multiplier (or schedule). Default 1.0.
      init_estim_sq_dist: ``r_bar_0^2``; None (default) uses ``eps``.
      eps: ``epsilon`` > 0. Default 1e-4 (the paper has no ``epsilon`` in the denominator).
      weight_decay: ``omega``, an L2 term added to the gradient; None (default) for none.
      mask: which leaves get ``weight_decay``.

    State: the ``chain`` of ``add_decayed_weights`` (or ``identity``), ``scale_by_dowg`` and
    ``scale_by_learning_rate``. Matches ``optax.contrib.dowg``.

    References:
      Khaled, Mishchenko & Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free
      Gradient Descent Method", NeurIPS 2023, arXiv:2305.16284.
    """
    return chain(
        _maybe_decay(weight_decay, mask), scale_by_dowg(init_estim_sq_dist, eps), scale_by_learning_rate(learning_rate)
    )


class COCOBState(NamedTuple):
    """State of ``scale_by_cocob``, per coordinate: ``init_particles`` ``w_1``,
    ``cumulative_gradients`` ``theta = -sum g``, ``scale`` ``L = max |g|``, ``subgradients``
    ``G = sum |g|`` and ``reward`` the wealth won so far."""

    init_particles: PyTree
    cumulative_gradients: PyTree
    scale: PyTree
    subgradients: PyTree
    reward: PyTree


@check_schedule_arguments
def scale_by_cocob(alpha: float = 100.0, eps: float = 1e-8) -> GradientTransformation:
    """COCOB-Backprop (Orabona & Tommasi 2017, Algorithm 2): coordinate-wise coin betting.

    Per coordinate, with ``L_0 = epsilon`` and ``G_0 = R_0 = theta_0 = 0``:

    .. math::
        L_t = \\max(L_{t-1}, |g_t|), \\quad G_t = G_{t-1} + |g_t|, \\quad
        R_t = \\max\\big(R_{t-1} - g_t (w_t - w_1), 0\\big), \\quad \\theta_t = \\theta_{t-1} - g_t

        w_{t+1} = w_1 + \\frac{\\theta_t}{L_t \\max(G_t + L_t, \\alpha L_t)} (L_t + R_t),
        \\qquad u_t = w_{t+1} - w_t

    Args:
      alpha: ``alpha`` > 0, bounds the fraction of wealth bet early on. Default 100.
      eps: ``epsilon`` > 0, the initial ``L``. Default 1e-8.

    State: ``COCOBState``. Needs ``params``. Matches ``optax.contrib.scale_by_cocob``.
    """
    check_positive(alpha, "alpha")
    check_positive(eps, "eps")

    def init_fn(params: Params) -> COCOBState:
        check_float_leaves(params)
        zeros = tree_zeros_like(params)
        return COCOBState(params, zeros, jax.tree.map(lambda p: jnp.full_like(p, eps), params), zeros, zeros)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, COCOBState, "scale_by_cocob")
        del extra_args
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name="scale_by_cocob"))
        check_trees_match(updates, state.scale, name="updates", reference_name="cocob state")
        scale = jax.tree.map(lambda big_l, g: jnp.maximum(big_l, jnp.abs(g)), state.scale, updates)
        subgradients = jax.tree.map(lambda big_g, g: big_g + jnp.abs(g), state.subgradients, updates)
        reward = jax.tree.map(
            lambda r, g, p, p0: jnp.maximum(r - g * (p - p0), 0), state.reward, updates, params, state.init_particles
        )
        theta = jax.tree.map(jnp.subtract, state.cumulative_gradients, updates)

        def step(p, p0, th, big_l, big_g, r):
            return p0 + th / (big_l * jnp.maximum(big_g + big_l, alpha * big_l)) * (big_l + r) - p

        new_updates = jax.tree.map(step, params, state.init_particles, theta, scale, subgradients, reward)
        return new_updates, COCOBState(state.init_particles, theta, scale, subgradients, reward)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any | Callable[[Params], Any] | None = None,
) -> GradientTransformation:
    """COCOB-Backprop (Orabona & Tommasi 2017): training without a learning rate by coin betting.

    ``scale_by_cocob`` applied to ``c_t (g_t + omega w_t)``:

    .. math::
        \\tilde g_t = c_t (g_t + \\omega w_t), \\qquad
        w_{t+1} = w_1 + \\frac{-\\sum_{k \\le t} \\tilde g_k}{L_t \\max(G_t + L_t, \\alpha L_t)}
        (L_t + R_t)

    with ``L_t``, ``G_t``, ``R_t`` as in ``scale_by_cocob``.

    Args:
      learning_rate: ``c_t``, scales the gradient fed to the bettor (1, the default, is COCOB).
      alpha: ``alpha`` > 0. Default 100.
      eps: ``epsilon`` > 0, the initial ``L``. Default 1e-8.
      weight_decay: ``omega`` >= 0, an L2 term. Default 0.
      mask: which leaves get ``weight_decay``.

    State: the ``chain`` of ``add_decayed_weights``, ``scale_by_learning_rate(flip_sign=False)``
    and ``scale_by_cocob``. Matches ``optax.contrib.cocob``.

    References:
      Orabona & Tommasi, "Training Deep Networks without Learning Rates Through Coin Betting",
      NeurIPS 2017, arXiv:1705.07795.
    """
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )
