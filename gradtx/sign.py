"""Methods that use only the sign of the gradient: signSGD and Rprop."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import EmptyState, GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import chain
from gradtx.scaling import scale, scale_by_learning_rate
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    check_updates_match_params,
    tree_full_like,
    tree_zeros_like,
)
from gradtx.validation import (
    check_empty_state,
    check_greater_than,
    check_less_than,
    check_non_negative,
    check_positive,
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


class RpropState(NamedTuple):
    """State of ``scale_by_rprop``: per-weight step sizes and the previous (masked) gradient."""

    step_sizes: PyTree
    previous_gradient: PyTree

    @property
    def prev_updates(self) -> PyTree:
        """Optax's name for ``previous_gradient``: the same signs (Optax stores ``Delta sign(g)``, gradtx ``g``)."""
        return self.previous_gradient


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


def rprop(
    learning_rate: float,
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
    Reference: Riedmiller & Braun, "A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm", ICNN 1993.
    """
    return chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        scale(-1.0),
    )
