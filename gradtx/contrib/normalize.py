"""Normalizing the whole update to unit norm (the adversarial step of SAM)."""

from __future__ import annotations

import jax

from gradtx.base import EmptyState, GradientTransformation, Params
from gradtx.tree_utils import cast_like, tree_global_norm

NormalizeState = EmptyState


def normalize() -> GradientTransformation:
    """Divides the update by its global norm: ``u = g / ||g||``.

    .. math::
        u = \\frac{g}{\\|g\\|_2}, \\qquad \\|g\\|_2 = \\sqrt{\\textstyle\\sum_i g_i^2}
        \\text{ over all leaves}

    A zero gradient gives NaN (0 / 0), as in Optax; use ``gradtx.normalize_by_update_norm`` for a
    guarded version with a scale and an epsilon. Used with ``sgd(rho)`` as the adversarial
    optimizer of SAM (Foret et al. 2021), whose ascent step is ``rho g / ||g||``.

    State: ``EmptyState()`` (Optax's ``NormalizeState``). Matches ``optax.contrib.normalize``.

    References:
      Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
      Improving Generalization", ICLR 2021, arXiv:2010.01412.
    """

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = tree_global_norm(updates)
        return jax.tree.map(lambda g: g / cast_like(norm, g), updates), state

    return GradientTransformation(init_fn, update_fn)
