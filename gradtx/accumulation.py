"""Gradient accumulation: one optimizer step per ``k`` micro-batches, as if on one ``k``-times larger batch.

``accumulate_gradients`` is the plain transformation; ``MultiSteps`` is Optax's wrapper with a
schedule for ``k`` and rules that skip mini-steps (``skip_not_finite``, ``skip_large_updates``);
``apply_every`` is Optax's accumulate-and-emit stage for a chain.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, OptState, Params, PyTree
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
from gradtx.tree_utils import (
    check_trees_match,
    keep_dtype,
    saturating_increment,
    tree_cast,
    tree_sum_of_squares,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import check_schedule_arguments, check_state_type


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


@check_schedule_arguments
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


def _check_every_k(value: Any, name: str) -> None:
    """A concrete step count must be an int >= 1 (traced values and schedules are checked where they are used)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= 1 or a schedule, got {value!r}.")
    if isinstance(value, numbers.Integral) or (isinstance(value, np.ndarray) and value.shape == ()):
        if not np.issubdtype(np.asarray(value).dtype, np.integer):
            raise TypeError(f"{name} must be an int >= 1 or a schedule, got {value!r}.")
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}.")
    elif isinstance(value, float):
        raise TypeError(f"{name} must be an int >= 1 or a schedule, got the float {value!r}.")


class ApplyEvery(NamedTuple):
    """State of ``apply_every`` (Optax's name for it).

    count: int32 in ``[0, k)``, the number of gradients already in ``grad_acc``.
    grad_acc: the sum of the gradients of the current round.
    """

    count: jax.Array
    grad_acc: PyTree


@check_schedule_arguments
def apply_every(k: int = 1) -> GradientTransformation:
    """Sums the updates of ``k`` consecutive steps and emits the sum on every ``k``-th step.

    Step ``j = 1, ..., k`` of each round:

    .. math::
        A_j = A_{j-1} + g_j \\ (A_0 = 0), \\qquad u_j = 0 \\ (j < k), \\qquad u_k = A_k

    Unlike ``MultiSteps`` (and ``accumulate_gradients``), this is a plain stage of a chain: the
    transforms before it still see every mini-batch gradient and advance their state on every
    step, so ``apply_every(k)`` after Adam is not Adam on a ``k``-times larger batch. The sum is
    not divided by ``k``.

    Args:
      k: the number of steps per emitted update, an int ``>= 1``. Default 1 (every step).

    State: ``ApplyEvery(count, grad_acc)``. Matches ``optax.apply_every``.
    """
    _check_every_k(k, "k")

    def init_fn(params: Params) -> ApplyEvery:
        return ApplyEvery(zero_step_count(), tree_zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ApplyEvery, "apply_every")
        del params, extra_args
        check_trees_match(updates, state.grad_acc, name="updates", reference_name="apply_every accumulator")
        position = state.count % k
        grad_acc = jax.tree.map(
            lambda g, a: jnp.where(position != 0, a, jnp.zeros_like(a)) + g, updates, state.grad_acc
        )
        emit = position == k - 1
        new_updates = jax.tree.map(lambda a: jnp.where(emit, a, jnp.zeros_like(a)), grad_acc)
        return new_updates, ApplyEvery(saturating_increment(state.count) % k, grad_acc)

    return GradientTransformation(init_fn, update_fn)


class ShouldSkipUpdateFunction(Protocol):
    """``fn(updates, gradient_step, params) -> (should_skip, skip_state)``, a rule of ``MultiSteps``.

    ``should_skip`` is a scalar bool array: True drops this mini-step as if it never happened.
    ``skip_state`` is any pytree (diagnostics), stored in ``MultiStepsState.skip_state``; its
    structure must not depend on the values. Matches ``optax.ShouldSkipUpdateFunction``.
    """

    def __call__(
        self, updates: PyTree, gradient_step: jax.Array, params: Params | None
    ) -> tuple[jax.Array, PyTree]: ...


def skip_not_finite(
    updates: PyTree, gradient_step: jax.Array, params: Params | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Skips a mini-step whose updates hold an inf or a NaN.

    ``n = sum_i [g_i not finite]``, ``should_skip = n > 0``. For ``MultiSteps``'s
    ``should_skip_update_fn``.

    Returns:
      ``(should_skip, {"should_skip": should_skip, "num_not_finite": n})``.

    Matches ``optax.skip_not_finite``.
    """
    del gradient_step, params
    counts = [jnp.sum(jnp.logical_not(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(updates)]
    num_not_finite = sum(counts) if counts else jnp.zeros([], jnp.int32)
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: PyTree, gradient_step: jax.Array, params: Params | None, max_squared_norm: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Skips a mini-step whose updates have a squared global norm of ``max_squared_norm`` or more.

    ``should_skip = not (||g||^2 < max_squared_norm)``, so a NaN norm is skipped too. Bind the
    bound with ``functools.partial(skip_large_updates, max_squared_norm=...)`` to use it as
    ``MultiSteps``'s ``should_skip_update_fn``. The sum of squares is formed in float32 or wider.

    Returns:
      ``(should_skip, {"should_skip": should_skip, "norm_squared": ||g||^2})``.

    Matches ``optax.skip_large_updates``.
    """
    del gradient_step, params
    norm_squared = tree_sum_of_squares(updates)
    should_skip = jnp.logical_not(norm_squared < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}


class MultiStepsState(NamedTuple):
    """State of ``MultiSteps`` (Optax's field names).

    mini_step: int32, mini-steps accumulated in the current round (reset to 0 when one emits).
    gradient_step: int32, inner updates made so far (rounds completed).
    inner_opt_state: the wrapped optimizer's state, advanced once per round.
    acc_grads: the running mean (or sum) of the round's gradients, in ``accumulator_dtype``.
    skip_state: the latest diagnostics of ``should_skip_update_fn`` (``()`` without one).
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: OptState
    acc_grads: PyTree
    skip_state: PyTree = ()


def _never_skip(updates: PyTree, gradient_step: jax.Array, params: Params | None) -> tuple[jax.Array, tuple]:
    del updates, gradient_step, params
    return jnp.asarray(False), ()


class MultiSteps:
    """Accumulates ``k`` mini-step gradients, then makes one step of ``opt`` with their mean.

    Mini-step ``j = 1, ..., k`` of round ``t`` (``k = every_k_schedule(t)``), with the running mean
    kept by Welford's update (or the running sum when ``use_grad_mean=False``):

    .. math::
        A_j = A_{j-1} + \\frac{g_j - A_{j-1}}{j} \\ (A_0 = 0), \\qquad
        u_j = 0 \\ (j < k), \\qquad (u_k, s_t) = \\text{opt}(A_k, s_{t-1}, w)

    after which ``A`` is reset to zero and ``t`` advances. A mini-step that
    ``should_skip_update_fn`` rejects changes nothing but ``skip_state`` and returns zeros.

    The inner update runs inside ``jax.lax.cond``, so under ``jit`` it executes once per round
    (Optax runs it on every mini-step and discards the result; the numbers are the same).

    Args:
      opt: the wrapped transformation.
      every_k_schedule: ``k``, an int ``>= 1``, or a function of the round count
        ``gradient_step`` returning it (a growing batch size).
      use_grad_mean: average the round's gradients (default True); else sum them.
      should_skip_update_fn: an optional ``ShouldSkipUpdateFunction`` such as
        ``skip_not_finite`` or ``functools.partial(skip_large_updates, max_squared_norm=...)``.
      accumulator_dtype: dtype of ``A``; default ``float32``, as in Optax (the mean handed to
        ``opt`` is cast back to each gradient's dtype; pass ``jnp.float64`` to keep float64
        gradients exact).

    State: ``MultiStepsState(mini_step, gradient_step, inner_opt_state, acc_grads, skip_state)``.
    ``has_updated(state)`` tells whether the latest call emitted an update;
    ``gradient_transformation()`` returns the ``(init, update)`` pair.

    Matches ``optax.MultiSteps``. References: Welford, "Note on a method for calculating
    corrected sums of squares and products", 1962 (the running mean); the large-batch equivalence
    is that of Goyal et al., "Accurate, large minibatch SGD", 2017.
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        accumulator_dtype: Any = jnp.float32,
    ):
        self._opt = with_extra_args_support(opt)
        if not callable(every_k_schedule):
            _check_every_k(every_k_schedule, "every_k_schedule")
        self._every_k_schedule = every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._should_skip_update_fn = _never_skip if should_skip_update_fn is None else should_skip_update_fn
        self._accumulator_dtype = None if accumulator_dtype is None else jax.dtypes.canonicalize_dtype(
            accumulator_dtype
        )

    @property
    def inner_opt(self) -> GradientTransformationExtraArgs:
        """The wrapped transformation."""
        return self._opt

    def _k_at(self, gradient_step: jax.Array) -> Any:
        k = self._every_k_schedule(gradient_step) if callable(self._every_k_schedule) else self._every_k_schedule
        _check_every_k(k, "every_k_schedule")
        return k

    def init(self, params: Params) -> MultiStepsState:
        """Zero accumulator and counters, and ``opt``'s initial state."""
        gradient_step = zero_step_count()
        _, skip_state = self._should_skip_update_fn(tree_zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=zero_step_count(),
            gradient_step=gradient_step,
            inner_opt_state=self._opt.init(params),
            acc_grads=tree_zeros_like(params, self._accumulator_dtype),
            skip_state=skip_state,
        )

    def update(
        self, updates: PyTree, state: MultiStepsState, params: Params | None = None, **extra_args: Any
    ) -> tuple[PyTree, MultiStepsState]:
        """Adds ``updates`` to the round; on its last mini-step returns ``opt``'s update, else zeros."""
        check_trees_match(updates, state.acc_grads, name="updates", reference_name="MultiSteps accumulator")
        k = self._k_at(state.gradient_step)
        should_skip, skip_state = self._should_skip_update_fn(updates, state.gradient_step, params)
        should_skip = jnp.asarray(should_skip)
        if should_skip.dtype != jnp.bool_ or should_skip.shape != ():
            raise ValueError(
                "should_skip_update_fn must return a scalar bool array as its first output, got dtype "
                f"{should_skip.dtype} and shape {should_skip.shape}."
            )
        count = state.mini_step
        if self._use_grad_mean:
            acc_grads = jax.tree.map(lambda g, a: a + (g - a) / (count + 1), updates, state.acc_grads)
        else:
            acc_grads = jax.tree.map(lambda g, a: g + a, updates, state.acc_grads)
        emit = state.mini_step == k - 1
        step_now = jnp.logical_and(emit, jnp.logical_not(should_skip))
        mean = jax.tree.map(lambda a, g: keep_dtype(a, jnp.result_type(g)), acc_grads, updates)

        def inner_step(operands):
            mean, inner_state = operands
            new_updates, new_state = self._opt.update(mean, inner_state, params, **extra_args)
            return new_updates, jax.tree.map(lambda n, o: keep_dtype(n, jnp.result_type(o)), new_state, inner_state)

        def no_step(operands):
            _, inner_state = operands
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), output_shapes), inner_state

        output_shapes = jax.eval_shape(inner_step, (mean, state.inner_opt_state))[0]
        new_updates, inner_opt_state = jax.lax.cond(step_now, inner_step, no_step, (mean, state.inner_opt_state))

        acc_dtype = self._accumulator_dtype
        acc_grads = jax.tree.map(
            lambda new, old: jnp.where(
                should_skip, old, jnp.where(emit, jnp.zeros_like(new), new).astype(acc_dtype or old.dtype)
            ),
            acc_grads,
            state.acc_grads,
        )
        mini_step = jnp.where(should_skip, state.mini_step, saturating_increment(state.mini_step) % k)
        gradient_step = jnp.where(step_now, saturating_increment(state.gradient_step), state.gradient_step)
        new_state = MultiStepsState(
            mini_step=mini_step.astype(jnp.int32),
            gradient_step=gradient_step,
            inner_opt_state=inner_opt_state,
            acc_grads=acc_grads,
            skip_state=skip_state,
        )
        return new_updates, new_state

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """``mini_step == 0 and gradient_step > 0``: whether the latest ``update`` emitted an inner step."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformationExtraArgs:
        """This wrapper as a ``GradientTransformationExtraArgs(init, update)``."""
        return GradientTransformationExtraArgs(self.init, self.update)
