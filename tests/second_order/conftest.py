"""Shared fixtures for the second-order tests: an L2-regularized logistic regression whose optimum
comes from ``scipy.optimize.minimize``, and a runner that applies a transformation for a fixed
number of steps inside one jitted ``lax.scan``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from gradtx.base import apply_updates

FLOAT = jnp.float64


@dataclasses.dataclass(frozen=True)
class LogisticProblem:
    """``f(w, b) = mean(log(1 + exp(z)) - y z) + l2 (|w|^2 + b^2) / 2`` with ``z = X w + b``."""

    features: jax.Array
    labels: jax.Array
    l2: float
    optimum: dict  # SciPy's minimizer, as params

    def model(self, params: dict) -> tuple:
        """Outputs for the Gauss-Newton split: the logits and the params (for the regularizer)."""
        return self.features @ params["w"] + params["b"], params

    def output_loss(self, outputs: tuple) -> jax.Array:
        logits, params = outputs
        data_term = jnp.mean(jnp.logaddexp(0.0, logits) - self.labels * logits)
        return data_term + 0.5 * self.l2 * (jnp.sum(params["w"] ** 2) + params["b"] ** 2)

    def loss(self, params: dict) -> jax.Array:
        return self.output_loss(self.model(params))

    def initial_params(self) -> dict:
        dim = self.features.shape[1]
        return {"w": jnp.zeros(dim, FLOAT), "b": jnp.zeros((), FLOAT)}

    def error(self, params: dict) -> jax.Array:
        """Largest absolute difference from SciPy's optimum over all parameters."""
        return jnp.maximum(jnp.max(jnp.abs(params["w"] - self.optimum["w"])), jnp.abs(params["b"] - self.optimum["b"]))


@pytest.fixture(scope="session")
def logistic_problem() -> LogisticProblem:
    rng = np.random.default_rng(0)
    num_samples, dim = 80, 5
    features = rng.normal(size=(num_samples, dim)) * np.array([1.0, 2.0, 0.5, 1.5, 1.0])
    true_weights = rng.normal(size=dim)
    probabilities = 1 / (1 + np.exp(-(features @ true_weights + 0.3)))
    labels = (rng.uniform(size=num_samples) < probabilities).astype(np.float64)
    problem = LogisticProblem(jnp.asarray(features, FLOAT), jnp.asarray(labels, FLOAT), 0.1, {})

    def flat_loss(v):
        return problem.loss({"w": v[:dim], "b": v[dim]})

    value = jax.jit(flat_loss)
    grad = jax.jit(jax.grad(flat_loss))
    hess = jax.jit(jax.hessian(flat_loss))
    result = scipy.optimize.minimize(
        lambda v: float(value(jnp.asarray(v))),
        np.zeros(dim + 1),
        jac=lambda v: np.asarray(grad(jnp.asarray(v))),
        hess=lambda v: np.asarray(hess(jnp.asarray(v))),
        method="trust-exact",
        options={"gtol": 1e-12},
    )
    assert np.linalg.norm(result.jac) < 1e-9, result
    optimum = {"w": jnp.asarray(result.x[:dim], FLOAT), "b": jnp.asarray(result.x[dim], FLOAT)}
    return dataclasses.replace(problem, optimum=optimum)


def _run(
    tx,
    params: Any,
    num_steps: int,
    grad_fn: Callable,
    extra_args: Callable[[Any], dict],
    record: Callable[[Any, Any], Any],
):
    """``num_steps`` updates ``w <- w + u`` in one jitted scan; returns final params, state, records."""

    @jax.jit
    def loop(params):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(grad_fn(params), state, params, **extra_args(params))
            params = apply_updates(params, updates)
            return (params, state), record(params, state)

        (params, state), records = jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)
        return params, state, records

    return loop(params)


@pytest.fixture
def run_transformation():
    """``run(tx, params, num_steps, value_fn, extra_args=None, record=None)``.

    The gradient is ``jax.grad(value_fn)``; ``value_fn=value_fn`` is passed to ``update`` unless
    ``extra_args`` (a dict) replaces it; ``record(params, state)`` is stacked over the steps.
    """

    def run(tx, params, num_steps, value_fn, extra_args=None, record=None):
        kwargs = {"value_fn": value_fn} if extra_args is None else extra_args
        return _run(
            tx,
            params,
            num_steps,
            jax.grad(value_fn),
            lambda _: kwargs,
            record or (lambda params, state: ()),
        )

    return run
