"""Shared runners for the contrib tests: the softmax problem with the loss passed as ``value=``."""

from __future__ import annotations

import jax
import numpy as np
from softmax_problem import initial_params, loss

value_and_grad = jax.jit(jax.value_and_grad(loss))


def run_with_value(optimizer, num_steps: int, params: dict | None = None, **kwargs) -> list[dict]:
    """The trajectory ``[w_1, ..., w_T]`` when ``update`` also receives ``value=f(w_t)``."""
    params = initial_params() if params is None else params
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        value, grads = value_and_grad(params)
        updates, state = optimizer.update(grads, state, params, value=value, **kwargs)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    trajectory = []
    for _ in range(num_steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def relative_gap(trajectory_a: list[dict], trajectory_b: list[dict]) -> float:
    """The largest relative distance between two trajectories (as ``max_relative_error``)."""
    worst = 0.0
    for a, b in zip(trajectory_a, trajectory_b):
        diff = np.sqrt(sum(float(np.sum((np.asarray(a[k]) - np.asarray(b[k])) ** 2)) for k in b))
        norm = np.sqrt(sum(float(np.sum(np.asarray(b[k]) ** 2)) for k in b))
        worst = max(worst, diff / norm)
    return worst
