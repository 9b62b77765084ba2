"""Every named optimizer that torch.optim also has, step for step over 150 float64 steps."""

import pytest
import torch
from softmax_problem import max_relative_error, run_gradtx, run_torch

import gradtx

STEPS = 150
TOLERANCE = 1e-8

CASES = {
    "sgd": (lambda: gradtx.sgd(0.5), lambda p: torch.optim.SGD(p, lr=0.5)),
    "momentum": (lambda: gradtx.sgd(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "nesterov": (
        lambda: gradtx.sgd(0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "momentum_velocity_form": (
        lambda: gradtx.sgd(0.1, momentum=0.9, velocity_form=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "nesterov_velocity_form": (
        lambda: gradtx.sgd(0.1, momentum=0.9, nesterov=True, velocity_form=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "adagrad": (
        lambda: gradtx.adagrad(0.3, initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False),
        lambda p: torch.optim.Adagrad(p, lr=0.3),
    ),
    "adagrad_initial_accumulator": (
        lambda: gradtx.adagrad(0.3, initial_accumulator_value=0.1, eps=1e-10, eps_in_sqrt=False),
        lambda p: torch.optim.Adagrad(p, lr=0.3, initial_accumulator_value=0.1),
    ),
    "adadelta_learning_rate_free": (lambda: gradtx.adadelta(), lambda p: torch.optim.Adadelta(p, lr=1.0)),
    "adadelta_scaled": (
        lambda: gradtx.adadelta(0.5, rho=0.95, eps=1e-5),
        lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.95, eps=1e-5),
    ),
    "adadelta_weight_decay": (
        lambda: gradtx.adadelta(weight_decay=0.1),
        lambda p: torch.optim.Adadelta(p, lr=1.0, weight_decay=0.1),
    ),
    "rmsprop": (
        lambda: gradtx.rmsprop(0.01, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        lambda p: torch.optim.RMSprop(p, lr=0.01),
    ),
    "rmsprop_centered_momentum": (
        lambda: gradtx.rmsprop(0.01, decay=0.9, eps=1e-8, eps_in_sqrt=False, centered=True, momentum=0.5),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, centered=True, momentum=0.5),
    ),
    "adam": (lambda: gradtx.adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam_betas": (
        lambda: gradtx.adam(0.02, b1=0.8, b2=0.99, eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    ),
    "adamw": (
        lambda: gradtx.adamw(0.01, weight_decay=0.05),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
    ),
    "adamax": (lambda: gradtx.adamax(0.02), lambda p: torch.optim.Adamax(p, lr=0.02)),
    "amsgrad": (
        lambda: gradtx.amsgrad(0.01, debias_before_max=False),
        lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    ),
    "rprop": (lambda: gradtx.rprop(0.01), lambda p: torch.optim.Rprop(p, lr=0.01)),
    "rprop_custom": (
        lambda: gradtx.rprop(0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-4, max_step_size=0.2),
        lambda p: torch.optim.Rprop(p, lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-4, 0.2)),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_step_for_step(name):
    make_gradtx, make_torch = CASES[name]
    ours = run_gradtx(make_gradtx(), STEPS)
    reference = run_torch(make_torch, STEPS)
    assert max_relative_error(ours, reference) < TOLERANCE


def test_adadelta_default_descends():
    from softmax_problem import initial_params, loss

    trajectory = run_gradtx(gradtx.adadelta(), 200)
    losses = [float(loss(p)) for p in trajectory]
    assert losses[-1] < float(loss(initial_params())) - 1e-3
    assert all(b <= a + 1e-12 for a, b in zip(losses[:50], losses[1:50]))


def test_rprop_step_uses_current_gradient():
    # On f(w) = w^2 / 2 from w = 1, Rprop's first step is -lr * sign(1): w_1 = 1 - lr.
    import jax.numpy as jnp

    optimizer = gradtx.rprop(0.1)
    params = jnp.asarray(1.0)
    state = optimizer.init(params)
    updates, state = optimizer.update(params, state, params)
    assert float(gradtx.apply_updates(params, updates)) == pytest.approx(0.9, abs=1e-15)
    params = gradtx.apply_updates(params, updates)
    updates, state = optimizer.update(params, state, params)
    assert float(updates) == pytest.approx(-0.12, abs=1e-15)
