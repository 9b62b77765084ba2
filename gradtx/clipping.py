"""Clipping per block and per example: ``clip_by_block_rms`` and differentially private clipping.

Element-wise (``clip``), global-norm (``clip_by_global_norm``) and adaptive (``adaptive_grad_clip``)
clipping are in ``gradtx.regularization``. The per-example functions here are not
transformations: they take a batch of per-example gradients (a leading batch axis on every leaf,
as ``jax.vmap(jax.grad(loss))`` returns) and return the sum of the clipped gradients, the step
of DP-SGD before noise is added.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx.base import EmptyState, GradientTransformation, Params, PyTree
from gradtx.tree_utils import abs_sq, cast_like, check_updates_match_params, path_to_str, tree_global_norm
from gradtx.validation import check_empty_state, check_non_negative, check_positive, check_schedule_arguments


def _empty_init(params: Params) -> EmptyState:
    del params
    return EmptyState()


@check_schedule_arguments
def clip_by_block_rms(threshold: float) -> GradientTransformation:
    """Rescales each leaf (block) whose root mean square exceeds ``threshold`` down to it.

    For each leaf ``g`` with ``n`` entries:

    .. math::
        \\mathrm{rms}(g) = \\sqrt{\\tfrac{1}{n} \\textstyle\\sum_i |g_i|^2}, \\qquad
        u = \\frac{g}{\\max(1, \\mathrm{rms}(g) / \\tau)}

    A block is one leaf of the tree: a weight matrix, a bias vector. The RMS is accumulated in
    float32 or wider; each leaf keeps its dtype.

    Args:
      threshold: ``tau`` > 0, the largest root mean square a block may keep.

    State: ``EmptyState()``. Matches ``optax.clip_by_block_rms``.
    Reference: the per-block RMS clipping of Adafactor, Shazeer & Stern 2018, arXiv:1804.04235
    (there applied to the update).
    """
    check_positive(threshold, "threshold")

    def clip_block(g):
        squares = abs_sq(g)
        rms = jnp.sqrt(jnp.mean(squares.astype(jnp.promote_types(squares.dtype, jnp.float32))))
        return g / cast_like(jnp.maximum(1.0, rms / threshold), g)

    def update_fn(updates, state, params=None, **extra_args):
        check_empty_state(state, "clip_by_block_rms")
        check_updates_match_params(updates, params, "clip_by_block_rms")
        del params, extra_args
        return jax.tree.map(clip_block, updates), state

    return GradientTransformation(_empty_init, update_fn)


def _check_batch_axis(grads: PyTree, name: str) -> int:
    """The common size of the leading axis of every leaf; a ValueError naming the first leaf without it."""
    leaves = jax.tree.leaves_with_path(grads)
    if not leaves:
        raise ValueError(f"{name} needs per-example gradients, got a tree without leaves.")
    batch_size = None
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if not shape:
            raise ValueError(
                f"{name} expects every leaf of grads to have a batch axis first (per-example gradients); "
                f"leaf {path_to_str(path)} is a scalar."
            )
        if batch_size is None:
            batch_size, first = shape[0], path
        elif shape[0] != batch_size:
            raise ValueError(
                f"{name} expects every leaf of grads to have the same batch axis first; leaf "
                f"{path_to_str(path)} has shape {shape}, leaf {path_to_str(first)} has batch size {batch_size}."
            )
    return batch_size


def _clip_and_sum(grads: PyTree, max_norm: Any) -> tuple[PyTree, jax.Array]:
    norms = jax.vmap(tree_global_norm)(grads)
    # 0 / 0 (a zero gradient with a zero bound) and inf / inf leave the example as it is.
    multipliers = jnp.nan_to_num(jnp.minimum(max_norm / norms, 1.0), nan=1.0)
    clipped_sum = jax.tree.map(lambda g: jnp.tensordot(multipliers.astype(jnp.result_type(g, 1.0)), g, axes=1), grads)
    return clipped_sum, jnp.sum(multipliers < 1.0)


def per_example_global_norm_clip(grads: PyTree, l2_norm_clip: float) -> tuple[PyTree, jax.Array]:
    """Clips each example's gradient to global norm ``C`` and sums over the batch.

    With ``g_b`` the gradient of example ``b`` (all leaves, taken as one vector):

    .. math::
        \\bar g = \\sum_b g_b \\min\\Big(1, \\frac{C}{\\|g_b\\|_2}\\Big)

    Args:
      grads: per-example gradients, every leaf with the batch axis first (``[B, ...]``).
      l2_norm_clip: ``C`` >= 0, the largest norm one example may contribute (``inf``: no clipping).

    Returns:
      ``(clipped_sum, num_clipped)``: the tree of sums (leaves without the batch axis) and the
      int number of examples whose norm exceeded ``C``.

    Raises:
      ValueError: a leaf has no batch axis or batch sizes differ (naming the leaf), or ``C < 0``.

    Matches ``optax.per_example_global_norm_clip``.
    Reference: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, arXiv:1607.00133.
    """
    check_non_negative(l2_norm_clip, "l2_norm_clip")
    _check_batch_axis(grads, "per_example_global_norm_clip")
    return _clip_and_sum(grads, l2_norm_clip)


def per_example_layer_norm_clip(
    grads: PyTree, global_l2_norm_clip: float, uniform: bool = True
) -> tuple[PyTree, PyTree]:
    """Clips each example's gradient layer by layer (leaf by leaf) and sums over the batch.

    Each of the ``K`` leaves ``k`` is clipped on its own, per example, to a bound ``C_k`` chosen so
    that ``sum_k C_k^2 = C^2``:

    .. math::
        C_k = C / \\sqrt{K} \\ \\text{(uniform)}, \\qquad C_k = C \\sqrt{D_k / D} \\ \\text{(otherwise)}, \\qquad
        \\bar g^{(k)} = \\sum_b g^{(k)}_b \\min\\Big(1, \\frac{C_k}{\\|g^{(k)}_b\\|_2}\\Big)

    where ``D_k`` is the number of parameters of leaf ``k`` and ``D`` their total. With one leaf
    this is ``per_example_global_norm_clip``.

    Args:
      grads: per-example gradients, every leaf with the batch axis first (``[B, ...]``).
      global_l2_norm_clip: ``C`` >= 0, the overall bound.
      uniform: split ``C`` equally over the leaves (default) or in proportion to their sizes.

    Returns:
      ``(clipped_sum, num_clipped)``: two trees shaped like ``grads``, the sums (without the
      batch axis) and, per leaf, the number of examples clipped.

    Raises:
      ValueError: a leaf has no batch axis or batch sizes differ (naming the leaf), or ``C < 0``.

    Matches ``optax.per_example_layer_norm_clip``.
    Reference: McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language
    Models", ICLR 2018, arXiv:1710.06963.
    """
    check_non_negative(global_l2_norm_clip, "global_l2_norm_clip")
    _check_batch_axis(grads, "per_example_layer_norm_clip")
    leaves, treedef = jax.tree.flatten(grads)
    if uniform:
        bounds = [global_l2_norm_clip * (1.0 / len(leaves)) ** 0.5 for _ in leaves]
    else:
        sizes = [jnp.size(g) // jnp.shape(g)[0] for g in leaves]
        bounds = [global_l2_norm_clip * (size / sum(sizes)) ** 0.5 for size in sizes]
    results = [_clip_and_sum(g, bound) for g, bound in zip(leaves, bounds)]
    return (
        jax.tree.unflatten(treedef, [total for total, _ in results]),
        jax.tree.unflatten(treedef, [count for _, count in results]),
    )
