"""Same name, same arguments, same numbers: gradtx against Optax over 150 float64 steps."""

import jax.numpy as jnp
import optax
import pytest
from softmax_problem import initial_params, max_relative_error, run_gradtx

import gradtx

STEPS = 150
TOLERANCE = 1e-8

schedule_gradtx = lambda t: 0.05 * 0.97 ** t
schedule_optax = lambda t: 0.05 * 0.97 ** t
decay_mask = {"w": True, "b": False}

CASES = {
    "sgd": (lambda: gradtx.sgd(0.3), lambda: optax.sgd(0.3)),
    "sgd_nesterov_schedule": (
        lambda: gradtx.sgd(schedule_gradtx, momentum=0.8, nesterov=True),
        lambda: optax.sgd(schedule_optax, momentum=0.8, nesterov=True),
    ),
    "adagrad": (lambda: gradtx.adagrad(0.3), lambda: optax.adagrad(0.3)),
    "rmsprop": (lambda: gradtx.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    "rmsprop_all_options": (
        lambda: gradtx.rmsprop(0.01, decay=0.95, eps=1e-6, initial_scale=0.1, centered=True, momentum=0.7,
                               nesterov=True, bias_correction=True),
        lambda: optax.rmsprop(0.01, decay=0.95, eps=1e-6, initial_scale=0.1, centered=True, momentum=0.7,
                              nesterov=True, bias_correction=True),
    ),
    "rmsprop_eps_outside": (
        lambda: gradtx.rmsprop(0.01, eps_in_sqrt=False, bias_correction=True),
        lambda: optax.rmsprop(0.01, eps_in_sqrt=False, bias_correction=True),
    ),
    "adam": (lambda: gradtx.adam(0.01), lambda: optax.adam(0.01)),
    "adam_eps_root_schedule": (
        lambda: gradtx.adam(schedule_gradtx, eps_root=1e-8), lambda: optax.adam(schedule_optax, eps_root=1e-8)
    ),
    "adam_nesterov": (lambda: gradtx.adam(0.01, nesterov=True), lambda: optax.adam(0.01, nesterov=True)),
    "adamw_masked": (
        lambda: gradtx.adamw(0.01, weight_decay=0.1, mask=decay_mask),
        lambda: optax.adamw(0.01, weight_decay=0.1, mask=decay_mask),
    ),
    "adamax": (lambda: gradtx.adamax(0.02), lambda: optax.adamax(0.02)),
    "nadam": (lambda: gradtx.nadam(0.01), lambda: optax.nadam(0.01)),
    "amsgrad": (lambda: gradtx.amsgrad(0.01), lambda: optax.amsgrad(0.01)),
    "sign_sgd": (lambda: gradtx.sign_sgd(0.001), lambda: optax.sign_sgd(0.001)),
    "ema_then_sgd": (
        lambda: gradtx.chain(gradtx.ema(0.9), gradtx.scale_by_learning_rate(0.2)),
        lambda: optax.chain(optax.ema(0.9), optax.scale_by_learning_rate(0.2)),
    ),
    "clip_then_sgd": (
        lambda: gradtx.chain(gradtx.clip(0.05), gradtx.sgd(0.5)),
        lambda: optax.chain(optax.clip(0.05), optax.sgd(0.5)),
    ),
    "clip_by_global_norm_adam": (
        lambda: gradtx.chain(gradtx.clip_by_global_norm(0.1), gradtx.adam(0.01)),
        lambda: optax.chain(optax.clip_by_global_norm(0.1), optax.adam(0.01)),
    ),
    "adaptive_grad_clip_sgd": (
        lambda: gradtx.chain(gradtx.adaptive_grad_clip(0.02), gradtx.sgd(0.5)),
        lambda: optax.chain(optax.adaptive_grad_clip(0.02), optax.sgd(0.5)),
    ),
    "add_decayed_weights_schedule": (
        lambda: gradtx.chain(gradtx.add_decayed_weights(lambda t: 0.1 / (1.0 + t)), gradtx.sgd(0.3)),
        lambda: optax.chain(optax.add_decayed_weights(0.0), optax.sgd(0.3)),
    ),
    "partition": (
        lambda: gradtx.partition({"fast": gradtx.adam(0.02), "slow": gradtx.sgd(0.1)}, {"w": "fast", "b": "slow"}),
        lambda: optax.partition({"fast": optax.adam(0.02), "slow": optax.sgd(0.1)}, {"w": "fast", "b": "slow"}),
    ),
    "masked": (
        lambda: gradtx.chain(gradtx.masked(gradtx.scale_by_adam(), decay_mask), gradtx.scale(-0.01)),
        lambda: optax.chain(optax.masked(optax.scale_by_adam(), decay_mask), optax.scale(-0.01)),
    ),
    "freeze": (
        lambda: gradtx.chain(gradtx.freeze({"w": False, "b": True}), gradtx.sgd(0.3)),
        lambda: optax.chain(optax.freeze({"w": False, "b": True}), optax.sgd(0.3)),
    ),
    "named_chain": (
        lambda: gradtx.named_chain(("clip", gradtx.clip(0.1)), ("adam", gradtx.adam(0.01))),
        lambda: optax.named_chain(("clip", optax.clip(0.1)), ("adam", optax.adam(0.01))),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name):
    if name == "add_decayed_weights_schedule":
        pytest.skip("Optax's add_decayed_weights takes no schedule; covered by test_scheduled_weight_decay")
    make_gradtx, make_optax = CASES[name]
    assert max_relative_error(run_gradtx(make_gradtx(), STEPS), run_gradtx(make_optax(), STEPS)) < TOLERANCE


def test_scheduled_weight_decay():
    # Written from the formula: u_t = -eta (g_t + lambda_t w_{t-1}), lambda_t = 0.1 / (1 + t).
    from softmax_problem import grad

    params = initial_params()
    expected = []
    for t in range(20):
        g = grad(params)
        params = {k: params[k] - 0.3 * (g[k] + 0.1 / (1.0 + t) * params[k]) for k in params}
        expected.append(params)
    ours = run_gradtx(CASES["add_decayed_weights_schedule"][0](), 20)
    assert max_relative_error(ours, expected) < TOLERANCE


def test_freeze_keeps_frozen_leaf():
    trajectory = run_gradtx(gradtx.chain(gradtx.freeze({"w": False, "b": True}), gradtx.sgd(0.3)), 5)
    assert jnp.array_equal(trajectory[-1]["b"], initial_params()["b"])
    assert not jnp.array_equal(trajectory[-1]["w"], initial_params()["w"])
