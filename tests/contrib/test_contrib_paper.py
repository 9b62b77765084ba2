"""Where gradtx.contrib follows the paper and Optax does not: both variants, each against its reference.

* Muon: Jordan's reference does not debias the Nesterov momentum; Optax does (``bias_correction``).
* Sophia: the paper and the authors' code do not debias ``m``; Optax does (``bias_correction``).
* Schedule-free SGD/AdamW with warmup: Optax's base optimizer reads the schedule one step late.
* ADOPT: the authors' code counts the initializing call as a step in the clipping bound.
"""

import jax
import jax.numpy as jnp
import optax
import pytest
from softmax_problem import grad, initial_params, loss, max_relative_error, run_gradtx

import gradtx
import gradtx.contrib as gc

oc = optax.contrib
STEPS = 150
TOLERANCE = 1e-8


def _muon_by_hand(learning_rate, beta, num_steps, debias):
    """Muon on the softmax problem from its formulas (Frobenius normalization, 5 quintic steps)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    params = initial_params()
    adam = optax.nadamw(learning_rate, eps=1e-8, weight_decay=0.0)  # Optax's fallback for b with nesterov
    adam_state = adam.init(params["b"])
    m = jnp.zeros_like(params["w"])
    trajectory = []
    for t in range(1, num_steps + 1):
        g = grad(params)
        m = beta * m + (1 - beta) * g["w"]
        if debias:
            mixed = beta * m / (1 - beta ** (t + 1)) + (1 - beta) * g["w"] / (1 - beta**t)
        else:
            mixed = beta * m + (1 - beta) * g["w"]
        x = mixed.T / (jnp.linalg.norm(mixed) + 1e-8)  # (4, 10): iterate on the smaller Gram matrix
        for _ in range(5):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        u_b, adam_state = adam.update(g["b"], adam_state, params["b"])
        params = {"w": params["w"] - learning_rate * x.T, "b": params["b"] + u_b}  # fan_out < fan_in: scale 1
        trajectory.append(params)
    return trajectory


@pytest.mark.parametrize("debias", [False, True])
def test_muon_nesterov_debiasing_both_ways(debias):
    ours = run_gradtx(gc.muon(0.02, bias_correction=debias), STEPS)
    assert max_relative_error(ours, _muon_by_hand(0.02, 0.95, STEPS, debias)) < TOLERANCE
    optax_run = run_gradtx(oc.muon(0.02), STEPS)
    assert (max_relative_error(ours, optax_run) < TOLERANCE) == debias


def _sophia_run(optimizer, num_steps):
    params, state = initial_params(), optimizer.init(initial_params())
    step = jax.jit(lambda p, s: optimizer.update(grad(p), s, p, obj_fn=loss))
    trajectory = []
    for _ in range(num_steps):
        updates, state = step(params, state)
        params = jax.tree.map(jnp.add, params, updates)
        trajectory.append(params)
    return trajectory


def _exact_diagonal():
    """A deterministic estimator (the exact Hessian diagonal) so the formulas can be written out."""

    def update(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        hessian = jax.hessian(lambda v: obj_fn(unravel(v)))(flat)
        return unravel(jnp.diagonal(hessian)), state

    # Optax's type, so that Optax forwards obj_fn to it too (gradtx forwards it to either).
    return optax.GradientTransformationExtraArgs(lambda params: gradtx.EmptyState(), update)


@pytest.mark.parametrize("debias", [False, True])
def test_sophia_momentum_debiasing_both_ways(debias):
    b1, b2, gamma, k, lr, wd = 0.965, 0.99, 0.05, 3, 0.01, 1e-4
    ours = _sophia_run(gc.sophia(lr, b1, b2, gamma=gamma, update_interval=k, weight_decay=wd,
                                 hessian_diagonal_fn=_exact_diagonal(), bias_correction=debias), STEPS)
    params = initial_params()
    m = h = jax.tree.map(jnp.zeros_like, params)
    exact = jax.jit(lambda p: _exact_diagonal().update(None, None, p, obj_fn=loss)[0])
    expected = []
    for t in range(1, STEPS + 1):
        g = grad(params)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        m_used = jax.tree.map(lambda m: m / (1 - b1**t), m) if debias else m
        u = jax.tree.map(lambda m, h: jnp.clip(m / jnp.maximum(gamma * h, 1e-8), -1, 1), m_used, h)
        if (t - 1) % k == 0:  # refresh h after the step, from the current parameters
            estimate = exact(params)
            h = jax.tree.map(lambda h, e: b2 * h + (1 - b2) * e, h, estimate)
        params = jax.tree.map(lambda p, u: p - lr * (u + wd * p), params, u)
        expected.append(params)
    assert max_relative_error(ours, expected) < TOLERANCE
    theirs = _sophia_run(oc.sophia(lr, b1, b2, gamma=gamma, update_interval=k, weight_decay=wd,
                                   hessian_diagonal_fn=_exact_diagonal()), STEPS)
    assert (max_relative_error(ours, theirs) < TOLERANCE) == debias


def test_schedule_free_warmup_both_ways():
    # gradtx: z moves with gamma_t = lr min(1, t / W) in step t, the gamma its averaging weight uses
    # (matched to schedulefree in test_contrib_authors.py). Optax's SGD reads the schedule at t - 1.
    ours = run_gradtx(gc.schedule_free_sgd(0.5, warmup_steps=10), STEPS)
    theirs = run_gradtx(oc.schedule_free_sgd(0.5, warmup_steps=10), STEPS)
    assert max_relative_error(ours, theirs) > 1e-3
    warmup = optax.warmup_constant_schedule(0.0, 0.5, 10)
    optax_recipe = run_gradtx(gc.schedule_free(gradtx.sgd(warmup), warmup), STEPS)
    assert max_relative_error(optax_recipe, theirs) < TOLERANCE
    no_warmup = run_gradtx(gc.schedule_free_sgd(0.5), STEPS), run_gradtx(oc.schedule_free_sgd(0.5), STEPS)
    assert max_relative_error(*no_warmup) < TOLERANCE


def test_adopt_clip_index_both_ways():
    # Algorithm 2 clips the first update (t = 1) at 1; the authors' code calls it step 2, clip 2^(1/4).
    paper = run_gradtx(gc.adopt(0.05, b2=0.999), STEPS)
    code = run_gradtx(gc.adopt(0.05, b2=0.999, clip_value_fn=lambda t: (t + 1) ** 0.25), STEPS)
    assert max_relative_error(paper, run_gradtx(oc.adopt(0.05, b2=0.999), STEPS)) < TOLERANCE
    assert max_relative_error(paper, code) > 1e-6
