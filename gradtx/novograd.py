"""NovoGrad (Ginsburg et al.): layer-wise second moments and a normalized-gradient momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import chain
from gradtx.scaling import scale_by_learning_rate
from gradtx.tree_utils import (
    abs_sq,
    cast_eps_like,
    cast_like,
    check_float_leaves,
    check_trees_match,
    keep_dtype,
    moving_average,
    real_dtype,
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


class ScaleByNovogradState(NamedTuple):
    """State of ``scale_by_novograd``: step count, momentum ``mu`` and per-leaf scalar ``nu``."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


@check_schedule_arguments
def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    """NovoGrad scaling: a layer-wise (per leaf) second moment and a normalized-gradient momentum.

    For each leaf ``l`` with gradient ``g^l`` and parameters ``w^l``:

    .. math::
        v^l_1 = \\|g^l_1\\|^2, \\qquad v^l_t = \\beta_2 v^l_{t-1} + (1-\\beta_2) \\|g^l_t\\|^2

        m^l_1 = \\frac{g^l_1}{\\sqrt{v^l_1 + \\epsilon_{root}} + \\epsilon} + \\lambda w^l, \\qquad
        m^l_t = \\beta_1 m^l_{t-1} + \\frac{g^l_t}{\\sqrt{v^l_t + \\epsilon_{root}} + \\epsilon} + \\lambda w^l

    and ``u_t = m_t``.

    Args:
      b1: momentum ``beta_1`` in [0, 1). Default 0.9.
      b2: decay of the norms ``beta_2`` in [0, 1). Default 0.25.
      eps, eps_root: outside and inside the root. Defaults 1e-8, 0.
      weight_decay: ``lambda`` >= 0, inside the momentum (needs ``params``). Default 0.
      mu_dtype: storage dtype of ``m``. Default the parameters' dtype.

    State: ``ScaleByNovogradState(count, mu, nu)``, ``nu`` one real scalar per leaf (``||g||^2`` of
    a complex leaf is the sum of ``|g_i|^2``).
    Matches ``optax.scale_by_novograd``.
    Reference: Ginsburg et al., "Stochastic gradient methods with layer-wise adaptive moments for
    training of deep networks", arXiv:1905.11286, 2019.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    check_positive(eps, "eps")
    check_non_negative(eps_root, "eps_root")
    check_non_negative(weight_decay, "weight_decay")

    def init_fn(params: Params) -> ScaleByNovogradState:
        check_float_leaves(params, allow_complex=True)
        nu = jax.tree.map(lambda p: jnp.zeros([], real_dtype(jnp.result_type(p))), params)
        return ScaleByNovogradState(zero_step_count(), tree_zeros_like(params, mu_dtype), nu)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ScaleByNovogradState, "scale_by_novograd")
        del extra_args
        check_trees_match(updates, state.mu, name="updates", reference_name="novograd state")
        if params is None:
            if weight_decay != 0:
                raise ValueError(
                    "scale_by_novograd(weight_decay != 0) needs the parameters: call update(g, state, params)."
                )
            params = jax.tree.map(jnp.zeros_like, updates)
        check_trees_match(params, state.mu, name="params", reference_name="novograd state")
        first = state.count == 0
        nu = jax.tree.map(
            lambda g, v: jnp.where(
                first, jnp.sum(abs_sq(g)), moving_average(jnp.sum(abs_sq(g)), v, b2)
            ).astype(v.dtype),
            updates,
            state.nu,
        )

        def momentum(g, w, v, m):
            step = g / (jnp.sqrt(v + cast_like(eps_root, v)) + cast_eps_like(eps, v)) + cast_like(weight_decay, w) * w
            return jnp.where(first, jnp.zeros_like(m), cast_like(b1, m) * m) + step

        mu = tree_cast(jax.tree.map(momentum, updates, params, nu, state.mu), mu_dtype)
        new_updates = jax.tree.map(lambda m, g: keep_dtype(m, g.dtype), mu, updates)
        return new_updates, ScaleByNovogradState(saturating_increment(state.count), mu, nu)

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad: ``w_t = w_{t-1} - eta_t m_t`` with the layer-wise momentum of ``scale_by_novograd``.

    Arguments, defaults and numbers are ``optax.novograd``'s (note ``eps=1e-6`` here, 1e-8 in the
    building block, as in Optax). Reference: Ginsburg et al., arXiv:1905.11286, 2019.
    """
    check_non_negative(learning_rate, "learning_rate")
    return chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay), scale_by_learning_rate(learning_rate))
