"""MoMo and MoMo-Adam against Optax (no weight decay) and the authors' algorithm (weight decay)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax.contrib
import pytest
from contrib_helpers import relative_gap, run_with_value, value_and_grad
from softmax_problem import initial_params, loss

from gradtx import contrib

STEPS = 150
TOLERANCE = 1e-8


def schedule(t):
    return 0.5 * 0.99**t


CASES = {
    "momo": lambda m: m.momo(),
    "momo_options": lambda m: m.momo(schedule, beta=0.8, lower_bound=0.1),
    "momo_adapt_lower_bound": lambda m: m.momo(0.5, lower_bound=0.05, adapt_lower_bound=True),
    "momo_adam": lambda m: m.momo_adam(),
    "momo_adam_options": lambda m: m.momo_adam(0.05, b1=0.8, b2=0.99, eps=1e-6, lower_bound=0.1),
    "momo_adam_adapt_lower_bound": lambda m: m.momo_adam(0.1, adapt_lower_bound=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_optax_without_weight_decay(name):
    ours = run_with_value(CASES[name](contrib), STEPS)
    theirs = run_with_value(CASES[name](optax.contrib), STEPS)
    assert relative_gap(ours, theirs) < TOLERANCE
    assert float(loss(ours[-1])) < 0.5 * float(loss(initial_params()))


def _authors_momo(num_steps, lr, weight_decay, beta=0.9, adam=False, b2=0.999, eps=1e-8):
    """The authors' Momo / MomoAdam(divide=True) step (Schaipp et al. 2023, Algorithms 1 and 2 with
    weight decay) in NumPy, lower bound 0: ``w <- (w - tau d / D) / (1 + lr lambda)``."""
    params = initial_params()
    keys = sorted(params)
    w = {k: np.asarray(params[k]) for k in keys}
    d = {k: np.zeros_like(w[k]) for k in keys}
    v = {k: np.zeros_like(w[k]) for k in keys}
    fbar = gamma = 0.0
    trajectory = []
    for k in range(1, num_steps + 1):
        value, g = value_and_grad({kk: jnp.asarray(w[kk]) for kk in keys})
        g = {kk: np.asarray(g[kk]) for kk in keys}
        b = 0.0 if (k == 1 and not adam) else beta
        fbar = b * fbar + (1 - b) * float(value)
        gamma = b * gamma + (1 - b) * sum(float(np.sum(g[kk] * w[kk])) for kk in keys)
        for kk in keys:
            d[kk] = b * d[kk] + (1 - b) * g[kk]
            v[kk] = b2 * v[kk] + (1 - b2) * g[kk] ** 2
        rho = 1 - beta**k if adam else 1.0
        big_d = {kk: (np.sqrt(v[kk] / (1 - b2**k)) + eps) if adam else np.ones_like(w[kk]) for kk in keys}
        norm = sum(float(np.sum(d[kk] ** 2 / big_d[kk])) for kk in keys)
        dot = sum(float(np.sum(d[kk] * w[kk])) for kk in keys)
        shrink = 1 + lr * weight_decay
        tau = min(lr / rho, max(shrink * (fbar - gamma) + dot, 0.0) / norm)
        w = {kk: (w[kk] - tau * d[kk] / big_d[kk]) / shrink for kk in keys}
        trajectory.append({kk: jnp.asarray(w[kk]) for kk in keys})
    return trajectory


@pytest.mark.parametrize("adam", [False, True])
def test_weight_decay_follows_the_paper_not_optax(adam):
    """With weight decay the paper divides the whole step by (1 + lr lambda); Optax divides only w."""
    lr, weight_decay = (0.05, 0.5) if adam else (1.0, 0.1)
    build = "momo_adam" if adam else "momo"
    ours = run_with_value(getattr(contrib, build)(lr, weight_decay=weight_decay), STEPS)
    theirs = run_with_value(getattr(optax.contrib, build)(lr, weight_decay=weight_decay), STEPS)
    paper = _authors_momo(STEPS, lr, weight_decay, adam=adam)
    assert relative_gap(ours, paper) < TOLERANCE
    assert relative_gap(theirs, paper) > 1e-3


def test_needs_value_and_params():
    params = initial_params()
    for optimizer in (contrib.momo(), contrib.momo_adam()):
        state = optimizer.init(params)
        with pytest.raises(ValueError, match="needs the loss"):
            optimizer.update(params, state, params)
        with pytest.raises(ValueError, match="needs the parameters"):
            optimizer.update(params, state, value=1.0)


def test_zero_momentum_takes_no_step():
    params = initial_params()
    optimizer = contrib.momo()
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params, value=1.0)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
    "call, message",
    [(lambda: contrib.momo(beta=1.0), "beta"), (lambda: contrib.momo(weight_decay=-1.0), "weight_decay"),
     (lambda: contrib.momo_adam(b2=1.5), "b2"), (lambda: contrib.momo_adam(eps=0.0), "eps")],
)
def test_invalid_hyperparameters(call, message):
    with pytest.raises(ValueError, match=message):
        call()
