"""Gradient accumulation: one optimizer step per ``k`` micro-batches, as if on one ``k``-times larger batch."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params, PyTree
from gradtx.tree_utils import check_trees_match, tree_cast, tree_zeros_like
from gradtx.validation import check_state_type


class AccumulationState(NamedTuple):
    """State of ``accumulate_gradients``.

    micro_step: int32 in ``[0, k)``, the number of gradients already in ``gradient_sum``.
    gradient_sum: the sum of those gradients (zeros right after each optimizer step).
    inner_state: the inner transformation's state, advanced once per ``k`` micro-steps.
    """

    micro_step: jax.Array
    gradient_sum: PyTree
    inner_state: OptState

    @property
    def mini_step(self) -> jax.Array:
        """``micro_step`` under the name of ``optax.MultiStepsState``."""
        return self.micro_step

    @property
    def acc_grads(self) -> PyTree:
        """The mean of the gradients accumulated so far, what ``optax.MultiStepsState.acc_grads`` holds."""
        count = jnp.maximum(self.micro_step, 1)
        return jax.tree.map(lambda s: s / count.astype(s.dtype), self.gradient_sum)

    @property
    def inner_opt_state(self) -> OptState:
        """``inner_state`` under the name of ``optax.MultiStepsState``."""
        return self.inner_state


def accumulate_gradients(
    inner: GradientTransformation, num_micro_batches: int, *, accumulator_dtype: Any = None
) -> GradientTransformation:
    """Applies ``inner`` once every ``k = num_micro_batches`` updates, to the mean gradient.

    Micro-steps ``j = 1, ..., k`` of each round:

    .. math::
        S_j = S_{j-1} + g_j \\ (S_0 = 0), \\qquad
        u_j = 0 \\ (j < k), \\qquad
        (u_k, s_t) = T\\!\\left(\\tfrac{1}{k} S_k,\\ s_{t-1},\\ w\\right), \\ S \\leftarrow 0

    The parameters stay fixed during a round (``w + 0 = w`` exactly), so every ``g_j`` is taken at
    the same ``w``; when the loss is a mean over equally sized micro-batches, ``S_k / k`` is the
    gradient of the mean over their union, and ``k`` rounds of accumulation make the same step as
    ``inner`` on one batch ``k`` times larger (to rounding: the sum is formed in another order).

    The inner update runs inside ``jax.lax.cond``, so under ``jit`` it executes once per round, not
    on every micro-step (under ``vmap`` the condition becomes batched and both branches run).
    Inner step counts, schedules included, therefore advance once per round.

    Args:
      inner: the transformation to apply to the accumulated gradient.
      num_micro_batches: ``k >= 1``.
      accumulator_dtype: dtype of ``S``; default each gradient's dtype. A wider one (float32 for
        bfloat16 gradients) avoids rounding the running sum.

    State: ``AccumulationState(micro_step, gradient_sum, inner_state)``.
    Like ``optax.MultiSteps(inner, every_k_schedule=k)`` with a fixed ``k``, as a plain
    transformation. Reference: the large-batch equivalence is that of Goyal et al., "Accurate,
    large minibatch SGD", 2017, Section 2.
    """
    if isinstance(num_micro_batches, bool) or not isinstance(num_micro_batches, int) or num_micro_batches < 1:
        raise ValueError(f"num_micro_batches must be an int >= 1, got {num_micro_batches!r}.")
    k = num_micro_batches

    def init_fn(params: Params) -> AccumulationState:
        return AccumulationState(
            jnp.zeros([], jnp.int32), tree_zeros_like(params, accumulator_dtype), inner.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, AccumulationState, "accumulate_gradients")
        check_trees_match(
            updates, state.gradient_sum, name="updates", reference_name="gradient accumulator",
            context="accumulate_gradients",
        )
        gradient_sum = jax.tree.map(lambda g, s: s + g.astype(s.dtype), updates, state.gradient_sum)

        def apply_inner(operands):
            gradient_sum, inner_state = operands
            mean = jax.tree.map(lambda s, g: (s / k).astype(g.dtype), gradient_sum, updates)
            if extra_args:
                new_updates, inner_state = inner.update(mean, inner_state, params, **extra_args)
            else:
                new_updates, inner_state = inner.update(mean, inner_state, params)
            return new_updates, inner_state, tree_zeros_like(gradient_sum)

        def keep_accumulating(operands):
            gradient_sum, inner_state = operands
            zeros = jax.tree.map(lambda shape: jnp.zeros(shape.shape, shape.dtype), output_shapes)
            return zeros, inner_state, gradient_sum

        output_shapes = jax.eval_shape(apply_inner, (gradient_sum, state.inner_state))[0]
        new_updates, inner_state, gradient_sum = jax.lax.cond(
            state.micro_step == k - 1, apply_inner, keep_accumulating, (gradient_sum, state.inner_state)
        )
        micro_step = jnp.where(state.micro_step == k - 1, 0, state.micro_step + 1).astype(jnp.int32)
        return new_updates, AccumulationState(micro_step, tree_cast(gradient_sum, accumulator_dtype), inner_state)

    return GradientTransformation(init_fn, update_fn)
