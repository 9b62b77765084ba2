"""Equilibrated SGD (Dauphin, de Vries & Bengio 2015): precondition by the RMS of ``H v``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import validation
from gradtx.base import GradientTransformation, value_at
from gradtx.schedules import as_schedule
from gradtx.second_order._common import check_positive_int, refuse_schedules, require_params, require_value_fn
from gradtx.second_order.curvature import hessian_vector_product, random_like
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_zeros_like, zero_step_count
from gradtx.validation import check_schedule_arguments, check_state_type

PyTree = Any


class ESGDState(NamedTuple):
    """State of :func:`scale_by_esgd` and :func:`esgd`.

    Attributes:
      step_count: number of updates so far (int32, saturating).
      key: the PRNG key the probes ``v`` are drawn from (folded with the step count).
      curvature_sum: ``D = sum_i (H_i v_i)^2`` over the probes so far, shaped like the params.
      num_samples: how many probes ``D`` holds.
    """

    step_count: jax.Array
    key: jax.Array
    curvature_sum: PyTree
    num_samples: jax.Array


@check_schedule_arguments
def scale_by_esgd(
    damping: float | jax.Array | Callable[[jax.Array], jax.Array] = 1e-4,
    update_interval: int = 20,
    seed: int = 0,
) -> GradientTransformation:
    """Divides the gradient by the equilibration preconditioner ``sqrt(D / i) + lambda``.

        every update_interval steps (and on the first):  v ~ N(0, I),  D <- D + (H v)^2,  i <- i + 1
        u_t = g_t / (sqrt(D / i) + lambda)

    Since ``E[(H v)_j^2] = sum_k H_jk^2 = ||H_{j,:}||^2``, ``sqrt(D / i)`` estimates the row norms of
    the Hessian: the equilibration preconditioner, which stays positive and meaningful where
    ``H`` is indefinite (near saddle points), unlike the Jacobi preconditioner ``|diag H|``. ``D``
    is a running sum (not a moving average) as in the paper's Algorithm 1, and it is refreshed
    every ``update_interval`` steps. The paper's Algorithm 1 probes every step
    (``update_interval=1``); the default 20 amortizes the product, which costs about two gradient
    evaluations. No sign or learning rate is applied: see :func:`esgd`.

    The objective is given to ``update`` as ``value_fn`` (``params -> scalar loss``, e.g. the
    current minibatch loss); the Hessian-vector products are taken at ``params``.

    Args:
      damping: ``lambda > 0`` added to the RMS, a float or a schedule (default 1e-4, our choice;
        it bounds the step on flat coordinates and is tuned together with the learning rate).
      update_interval: steps between probes (default 20; 1 is the paper's Algorithm 1).
      seed: seed of the probe PRNG key (default 0).

    State:
      :class:`ESGDState`.

    References:
      Dauphin, de Vries & Bengio, "Equilibrated adaptive learning rates for non-convex
      optimization", NeurIPS 2015, Algorithm 1.
    """
    refuse_schedules("scale_by_esgd", update_interval=update_interval, seed=seed)
    validation.check_positive(damping, "damping")
    check_positive_int(update_interval, "update_interval")

    def init_fn(params):
        return ESGDState(
            step_count=zero_step_count(),
            key=jax.random.PRNGKey(seed),
            curvature_sum=tree_zeros_like(params),
            num_samples=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        value_fn = require_value_fn(value_fn, "esgd")
        params = require_params(params, "esgd")
        check_state_type(state, ESGDState, "scale_by_esgd")
        check_trees_match(updates, params, name="updates", reference_name="params")

        def probe():
            v = random_like(jax.random.fold_in(state.key, state.step_count), params, "normal")
            hv = hessian_vector_product(value_fn, params, v)
            total = jax.tree.map(lambda d, x: d + jnp.square(x).astype(d.dtype), state.curvature_sum, hv)
            return total, state.num_samples + 1

        sample = state.step_count % update_interval == 0
        curvature_sum, num_samples = jax.lax.cond(sample, probe, lambda: (state.curvature_sum, state.num_samples))
        count = jnp.maximum(num_samples, 1)
        damping_t = value_at(damping, state.step_count)
        new_updates = jax.tree.map(
            lambda g, d: (g / (jnp.sqrt(d / count) + damping_t)).astype(jnp.result_type(g)),
            updates,
            curvature_sum,
        )
        new_state = ESGDState(
            step_count=saturating_increment(state.step_count),
            key=state.key,
            curvature_sum=curvature_sum,
            num_samples=num_samples,
        )
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def esgd(
    learning_rate: float | jax.Array | Callable[[jax.Array], jax.Array],
    damping: float | jax.Array | Callable[[jax.Array], jax.Array] = 1e-4,
    update_interval: int = 20,
    seed: int = 0,
) -> GradientTransformation:
    """Equilibrated SGD: SGD preconditioned by the running RMS of Hessian-vector products.

        every update_interval steps:  v ~ N(0, I),  D <- D + (H v)^2,  i <- i + 1
        u_t = -eta_t g_t / (sqrt(D / i) + lambda)

    :func:`scale_by_esgd` followed by the step ``-eta_t``. The effective step along coordinate
    ``j`` is ``eta / ||H_{j,:}||``, so ``eta`` is dimensionless; with a diagonal Hessian
    ``sqrt(D / i) -> |H_jj|`` and ESGD becomes Jacobi-preconditioned descent, for which
    ``eta`` below 2 converges on a convex quadratic.

    Pass the objective to ``update`` as ``value_fn`` (``params -> scalar loss``)::

        updates, state = tx.update(grads, state, params, value_fn=loss)

    Args:
      learning_rate: ``eta``, a float or a schedule.
      damping: ``lambda``, a float or a schedule (default 1e-4, see :func:`scale_by_esgd`).
      update_interval: steps between Hessian-vector products (default 20).
      seed: probe PRNG seed (default 0).

    State:
      :class:`ESGDState`.

    Optax and ``torch.optim`` have no ESGD; RMSProp is its biased, first-order cousin (the
    paper, section 5).

    References:
      Dauphin, de Vries & Bengio, "Equilibrated adaptive learning rates for non-convex
      optimization", NeurIPS 2015.
    """
    if not callable(learning_rate):
        validation.check_non_negative(learning_rate, "learning_rate")
    schedule = as_schedule(learning_rate)
    preconditioner = scale_by_esgd(damping, update_interval, seed)

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, ESGDState, "esgd")
        eta = schedule(state.step_count)
        updates, new_state = preconditioner.update(updates, state, params, **extra_args)
        return jax.tree.map(lambda u: (-eta * u).astype(jnp.result_type(u)), updates), new_state

    return GradientTransformation(preconditioner.init, update_fn)
