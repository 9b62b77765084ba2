"""The shared reference problem: L2-regularised softmax regression in float64.

Gradients come from JAX for every library, so that a comparison measures the optimizers and
not the autodiff engines.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_SAMPLES, NUM_FEATURES, NUM_CLASSES = 64, 10, 4
L2 = 1e-2


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_SAMPLES, NUM_FEATURES))
    true_w = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    labels = np.argmax(x @ true_w + 0.5 * rng.normal(size=(NUM_SAMPLES, NUM_CLASSES)), axis=1)
    return jnp.asarray(x), jnp.asarray(labels)


X, Y = make_data()


def initial_params(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(0.1 * rng.normal(size=(NUM_FEATURES, NUM_CLASSES))),
        "b": jnp.asarray(0.1 * rng.normal(size=(NUM_CLASSES,))),
    }


def loss(params: dict) -> jax.Array:
    logits = X @ params["w"] + params["b"]
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.mean(jnp.take_along_axis(log_probs, Y[:, None], axis=1))
    return nll + 0.5 * L2 * jnp.sum(params["w"] ** 2)


grad = jax.jit(jax.grad(loss))


def run_gradtx(optimizer, num_steps: int, params: dict | None = None) -> list[dict]:
    """The parameter trajectory ``[w_1, ..., w_T]`` of a gradtx/Optax optimizer."""
    params = initial_params() if params is None else params
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(grad(params), state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    trajectory = []
    for _ in range(num_steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def run_torch(make_optimizer, num_steps: int) -> list[dict]:
    """The trajectory of a ``torch.optim`` optimizer fed the same JAX gradients."""
    import torch

    start = initial_params()
    tensors = {k: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True) for k, v in start.items()}
    optimizer = make_optimizer(list(tensors.values()))
    trajectory = []
    for _ in range(num_steps):
        current = {k: jnp.asarray(t.detach().numpy()) for k, t in tensors.items()}
        grads = grad(current)
        for k, t in tensors.items():
            t.grad = torch.tensor(np.asarray(grads[k]), dtype=torch.float64)
        optimizer.step()
        trajectory.append({k: jnp.asarray(t.detach().numpy().copy()) for k, t in tensors.items()})
    return trajectory


def max_relative_error(trajectory_a: list[dict], trajectory_b: list[dict]) -> float:
    """``max_t ||w_t^a - w_t^b|| / ||w_t^b||`` over the whole trajectory."""
    assert len(trajectory_a) == len(trajectory_b)
    worst = 0.0
    for a, b in zip(trajectory_a, trajectory_b):
        diff = np.sqrt(sum(float(jnp.sum((a[k] - b[k]) ** 2)) for k in b))
        norm = np.sqrt(sum(float(jnp.sum(b[k] ** 2)) for k in b))
        worst = max(worst, diff / norm)
    return worst
