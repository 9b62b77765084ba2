"""Numerical safety: skip non-finite steps, zero NaNs, norms with finite gradients at zero.

One overflow in a backward pass puts an ``inf`` or ``nan`` into the gradient; fed to an adaptive
method it enters the moving averages and stays there for good. ``apply_if_finite`` wraps any
transformation and skips such steps without touching its state; ``zero_nans`` replaces NaN
entries by zero and records where it did so. ``safe_norm`` and ``safe_root_mean_squares`` bound a
norm from below without the NaN gradient that ``jnp.maximum(norm, bound)`` has at zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, GradientTransformationExtraArgs, OptState, Params, PyTree
from gradtx.combinators import _call_update
from gradtx.tree_utils import (
    abs_sq,
    check_trees_match,
    check_updates_match_params,
    saturating_increment,
    zero_step_count,
)
from gradtx.validation import check_schedule_arguments, check_state_type


def tree_all_finite(tree: PyTree) -> jax.Array:
    """A scalar bool: ``True`` iff every element of every leaf is finite (no NaN, no +-inf).

    ``all_finite = AND_{leaves l} AND_i isfinite(l_i)``, the test ``apply_if_finite`` applies to
    each gradient (the check inside ``optax.apply_if_finite``).

    An empty tree (or one whose leaves are all empty) counts as finite. Integer and boolean
    leaves are always finite.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


class ApplyIfFiniteState(NamedTuple):
    """State of ``apply_if_finite``, with Optax's field names and order.

    ``notfinite_count``: int32, non-finite steps in a row (reset to 0 by a finite step).
    ``last_finite``: bool, whether the latest gradient was finite.
    ``total_notfinite``: int32, non-finite steps since ``init`` (never reset).
    ``inner_state``: the wrapped transformation's state, untouched by skipped steps.
    Both counters saturate at the int32 maximum instead of wrapping around. The earlier gradtx
    names ``consecutive_errors`` and ``total_errors`` remain as read-only aliases.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: OptState

    @property
    def consecutive_errors(self) -> jax.Array:
        """Alias of ``notfinite_count`` (gradtx's earlier name)."""
        return self.notfinite_count

    @property
    def total_errors(self) -> jax.Array:
        """Alias of ``total_notfinite`` (gradtx's earlier name)."""
        return self.total_notfinite


@check_schedule_arguments
def apply_if_finite(inner: GradientTransformation, max_consecutive_errors: int) -> GradientTransformationExtraArgs:
    """Runs ``inner`` only on finite gradients; a non-finite step leaves everything as it was.

    With ``finite_t`` = "every entry of ``g_t`` is finite" and ``c_t`` the number of non-finite
    steps in a row:

    .. math::
        c_t = 0 \\ \\text{if finite}_t \\text{ else } c_{t-1} + 1, \\qquad
        (u_t, S_t) = \\begin{cases} T(g_t, S_{t-1}) & \\text{finite}_t \\text{ or } c_t > N \\\\
        (0, S_{t-1}) & \\text{otherwise} \\end{cases}

    where ``T`` is ``inner``'s update and ``S`` its state. A skipped step returns zero updates
    (so ``apply_updates`` leaves the parameters unchanged) and keeps ``inner``'s state exactly, so
    a run with skipped steps continues bit for bit like a run that never saw them.

    Giving up: after more than ``N`` non-finite steps in a row, the updates are passed to
    ``inner`` again, non-finite as they are. This is Optax's choice, kept on purpose: a run whose
    gradients stay non-finite is broken, and letting the NaN reach the parameters makes that
    visible instead of silently freezing training forever. Use a large ``N`` to skip without
    limit (the counters saturate at the int32 maximum, so even ``N = 2**31 - 1`` never gives up).

    Only the incoming gradients are checked; finiteness of ``inner``'s output is ``inner``'s
    business. Extra keyword arguments of ``update`` are forwarded to ``inner``. Unlike Optax,
    which branches with ``lax.cond``, ``inner`` runs on every step and its result is selected
    or discarded: the same numbers, one program for both cases, and no recompilation of branches
    when called outside ``jit``.

    Args:
      inner: the transformation to protect, e.g. ``gradtx.adam(1e-3)``.
      max_consecutive_errors: ``N`` >= 0, the number of consecutive non-finite steps to skip.

    State: ``ApplyIfFiniteState(notfinite_count, last_finite, total_notfinite, inner_state)``, Optax's
    fields. Matches ``optax.apply_if_finite`` step for step.
    """
    if isinstance(max_consecutive_errors, bool) or not isinstance(max_consecutive_errors, int):
        raise TypeError(
            f"max_consecutive_errors must be an int, got {type(max_consecutive_errors).__name__}."
        )
    if max_consecutive_errors < 0:
        raise ValueError(f"max_consecutive_errors must be >= 0, got {max_consecutive_errors!r}.")
    # The counter is an int32 that saturates, so any larger N means "never give up".
    limit = min(max_consecutive_errors, int(np.iinfo(np.int32).max))

    def init_fn(params: Params) -> ApplyIfFiniteState:
        return ApplyIfFiniteState(
            notfinite_count=zero_step_count(),
            last_finite=jnp.asarray(True),
            total_notfinite=zero_step_count(),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ApplyIfFiniteState, "apply_if_finite")
        finite = tree_all_finite(updates)
        consecutive_errors = jnp.where(
            finite, jnp.zeros_like(state.notfinite_count), saturating_increment(state.notfinite_count)
        )
        total_errors = jnp.where(finite, state.total_notfinite, saturating_increment(state.total_notfinite))

        take = jnp.logical_or(finite, consecutive_errors > limit)
        # A select rather than ``lax.cond``: the same program runs on every step (``cond`` becomes a
        # select under ``vmap`` anyway), and eager calls do not recompile the branches each time.
        new_updates, inner_state = _call_update(inner, updates, state.inner_state, params, extra_args)
        new_updates = jax.tree.map(lambda u: jnp.where(take, u, jnp.zeros_like(u)), new_updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(take, new, old), inner_state, state.inner_state)
        return new_updates, ApplyIfFiniteState(consecutive_errors, finite, total_errors, inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ZeroNansState(NamedTuple):
    """State of ``zero_nans``: ``found_nan``, one bool per leaf, True where the latest update had a NaN."""

    found_nan: PyTree


def zero_nans() -> GradientTransformation:
    """Replaces every NaN entry of the updates by zero and records which leaves had one.

    .. math::
        u_i = 0 \\ \\text{if } g_i \\text{ is NaN}, \\qquad u_i = g_i \\ \\text{otherwise}

    Infinities pass unchanged: an ``inf`` has a sign and a direction, and clipping
    (``clip``, ``clip_by_global_norm``) or ``apply_if_finite`` is the tool for it. Zeroing a
    NaN entry still feeds a zero into every later transform of a chain (momentum decays, Adam's
    step count advances); to leave the state untouched use ``apply_if_finite`` instead.

    State: ``ZeroNansState(found_nan)``, a tree of scalar bools with the updates' structure,
    overwritten at each step (it is a report, not used by the update).
    Matches ``optax.zero_nans``.
    """

    def init_fn(params: Params) -> ZeroNansState:
        return ZeroNansState(jax.tree.map(lambda _: jnp.asarray(False), params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        check_state_type(state, ZeroNansState, "zero_nans")
        check_updates_match_params(updates, params, "zero_nans")
        check_trees_match(
            updates, state.found_nan, name="updates", reference_name="params", context="zero_nans", compare_shapes=False
        )
        found_nan = jax.tree.map(lambda g: jnp.any(jnp.isnan(g)), updates)
        updates = jax.tree.map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
        return updates, ZeroNansState(found_nan)

    return GradientTransformation(init_fn, update_fn)


def safe_norm(
    x: jax.Array,
    min_norm: Any,
    ord: int | float | str | None = None,
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(||x||, min_norm)`` whose gradient is finite everywhere, also at ``x = 0``.

    .. math::
        n(x) = \\max(\\|x\\|_{ord}, \\nu), \\qquad
        \\nabla n(x) = 0 \\ \\text{where } \\|x\\|_{ord} \\le \\nu

    ``jnp.maximum(jnp.linalg.norm(x), min_norm)`` has the right value but a NaN gradient at
    ``x = 0``: the norm's derivative ``x / ||x||`` is ``0 / 0`` there, and the chain rule multiplies
    it by the zero that ``maximum`` passes to the unselected branch (``0 * NaN = NaN``). Here the
    norm is evaluated on ``x`` replaced by ones wherever the bound is selected, so the unselected
    branch is finite.

    Args:
      x: an array.
      min_norm: ``nu``, the lower bound of the result.
      ord: the order of the norm, as in ``jnp.linalg.norm`` (default: 2-norm of a vector,
        Frobenius norm of a matrix).
      axis: the axis or pair of axes to reduce, as in ``jnp.linalg.norm``; default: all.
      keepdims: keep the reduced axes with size one.

    Matches ``optax.safe_norm`` (value and gradient).
    """
    x = jnp.asarray(x)
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    small = norm <= min_norm
    # Why ones: any point with a finite norm derivative does; the branch it feeds is discarded.
    masked_norm = jnp.linalg.norm(jnp.where(small, jnp.ones_like(x), x), ord=ord, axis=axis, keepdims=keepdims)
    if not keepdims:
        small = jnp.squeeze(small, axis=axis) if axis is not None else jnp.reshape(small, ())
    return jnp.where(small, min_norm, masked_norm)


def safe_root_mean_squares(x: jax.Array, min_rms: Any) -> jax.Array:
    """``max(sqrt(mean(|x|^2)), min_rms)`` whose gradient is finite everywhere, also at ``x = 0``.

    .. math::
        r(x) = \\max\\Big(\\sqrt{\\tfrac{1}{n} \\textstyle\\sum_i |x_i|^2}, \\rho\\Big), \\qquad
        \\nabla r(x) = 0 \\ \\text{where the bound } \\rho \\text{ is selected}

    The square root is evaluated on ones wherever the bound is selected (see ``safe_norm``), so
    its ``1 / (2 sqrt(0))`` never enters the gradient. Complex ``x`` contributes ``|x_i|^2``.

    Args:
      x: an array (all of its elements are averaged).
      min_rms: ``rho``, the lower bound of the result.

    Matches ``optax.safe_root_mean_squares`` (value and gradient).
    """
    x = jnp.asarray(x)
    small = jnp.sqrt(jnp.mean(abs_sq(x))) <= min_rms
    masked = jnp.where(small, jnp.ones_like(x), x)
    return jnp.where(small, min_rms, jnp.sqrt(jnp.mean(abs_sq(masked))))
