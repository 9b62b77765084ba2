"""LAMB, LARS, Fromage and the trust-ratio blocks against Optax, pytorch_optimizer and the papers (150 float64 steps).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from contract_checks import (
    check_dtypes_kept,
    check_jit_equals_eager,
    check_schedules,
    check_signature_matches_optax,
    check_vmap_equals_loop,
)
from softmax_problem import grad, initial_params, max_relative_error, run_gradtx, run_torch

import gradtx

STEPS = 150
TOLERANCE = 1e-8
mask = {"w": True, "b": False}
schedule = lambda t: 0.05 / (1 + 0.1 * t)

OPTAX_CASES = {
    "lamb": (lambda: gradtx.lamb(1e-2, weight_decay=0.1), lambda: optax.lamb(1e-2, weight_decay=0.1)),
    "lamb_all_options": (
        lambda: gradtx.lamb(schedule, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, weight_decay=0.1, mask=mask),
        lambda: optax.lamb(schedule, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, weight_decay=0.1, mask=mask),
    ),
    # Without weight decay the paper's LARS ratio and Optax's are the same.
    "lars": (lambda: gradtx.lars(0.5, trust_coefficient=0.1), lambda: optax.lars(0.5, trust_coefficient=0.1)),
    "lars_nesterov_masked_schedule": (
        lambda: gradtx.lars(schedule, trust_coefficient=0.1, eps=1e-3, trust_ratio_mask=mask, momentum=0.8,
                            nesterov=True),
        lambda: optax.lars(schedule, trust_coefficient=0.1, eps=1e-3, trust_ratio_mask=mask, momentum=0.8,
                           nesterov=True),
    ),
    "fromage": (lambda: gradtx.fromage(0.05), lambda: optax.fromage(0.05)),
    "fromage_schedule": (lambda: gradtx.fromage(schedule, min_norm=0.0), lambda: optax.fromage(schedule, min_norm=0.0)),
    "scale_by_trust_ratio": (
        lambda: gradtx.chain(gradtx.scale_by_trust_ratio(1e-3, trust_coefficient=0.5, eps=1e-4), gradtx.sgd(0.05)),
        lambda: optax.chain(optax.scale_by_trust_ratio(1e-3, trust_coefficient=0.5, eps=1e-4), optax.sgd(0.05)),
    ),
    "scale_by_param_block_norm": (
        lambda: gradtx.chain(gradtx.scale_by_param_block_norm(), gradtx.sgd(0.3)),
        lambda: optax.chain(optax.scale_by_param_block_norm(), optax.sgd(0.3)),
    ),
    "scale_by_param_block_rms": (
        lambda: gradtx.chain(gradtx.scale_by_param_block_rms(0.2), gradtx.sgd(0.3)),
        lambda: optax.chain(optax.scale_by_param_block_rms(0.2), optax.sgd(0.3)),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX_CASES))
def test_matches_optax(name):
    make_gradtx, make_optax = OPTAX_CASES[name]
    ours, theirs = run_gradtx(make_gradtx(), STEPS), run_gradtx(make_optax(), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    assert max_relative_error([ours[-1]], [initial_params()]) > 0.04  # the parameters moved


def test_lamb_is_the_papers_algorithm_2():
    # You et al. 2020, Algorithm 2 with phi = identity, written out leaf by leaf.
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-6, 0.1
    params = initial_params()
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    expected = []
    for t in range(1, STEPS + 1):
        g = grad(params)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g**2, v, g)
        r = jax.tree.map(lambda m, v: (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), m, v)
        d = jax.tree.map(lambda r, w: r + wd * w, r, params)
        params = jax.tree.map(lambda w, d: w - lr * jnp.linalg.norm(w) / jnp.linalg.norm(d) * d, params, d)
        expected.append(params)
    assert max_relative_error(run_gradtx(gradtx.lamb(lr, weight_decay=wd), STEPS), expected) < TOLERANCE


def test_lars_follows_the_paper_where_optax_does_not():
    # You, Gitman, Ginsburg 2017, Algorithm 1: rho = c ||w|| / (||g|| + wd ||w||), v = mu v + lr rho (g + wd w).
    lr, wd, c, mu = 0.5, 0.1, 0.1, 0.9
    params = initial_params()
    v = jax.tree.map(jnp.zeros_like, params)
    expected = []
    for _ in range(STEPS):
        g = grad(params)
        norm = jnp.linalg.norm
        rho = jax.tree.map(lambda g, w: c * norm(w) / (norm(g) + wd * norm(w)), g, params)
        v = jax.tree.map(lambda v, r, g, w: mu * v + lr * r * (g + wd * w), v, rho, g, params)
        params = jax.tree.map(lambda w, v: w - v, params, v)
        expected.append(params)
    ours = run_gradtx(gradtx.lars(lr, weight_decay=wd, trust_coefficient=c, momentum=mu), STEPS)
    assert max_relative_error(ours, expected) < TOLERANCE
    # Optax divides by ||g + wd w|| instead: another trajectory, which the documented chain reproduces.
    theirs = run_gradtx(optax.lars(lr, weight_decay=wd, trust_coefficient=c, momentum=mu), STEPS)
    assert max_relative_error(theirs, expected) > 1e-2
    optax_rule = gradtx.chain(
        gradtx.add_decayed_weights(wd),
        gradtx.masked(gradtx.scale_by_trust_ratio(trust_coefficient=c), True),
        gradtx.scale_by_learning_rate(lr),
        gradtx.trace(mu),
    )
    assert max_relative_error(run_gradtx(optax_rule, STEPS), theirs) < TOLERANCE


# pytorch_optimizer's LARS uses the paper's ratio on tensors with ndim > 1 only (plain momentum SGD on biases).
TORCH_CASES = {
    "lars": (
        lambda: gradtx.lars(0.5, 0.1, weight_decay_mask=mask, trust_coefficient=0.1, trust_ratio_mask=mask),
        "LARS",
        {"lr": 0.5, "weight_decay": 0.1, "trust_coefficient": 0.1},
    ),
    "lars_nesterov": (
        lambda: gradtx.lars(0.5, 0.05, mask, 0.1, 0.0, mask, momentum=0.8, nesterov=True),
        "LARS",
        {"lr": 0.5, "weight_decay": 0.05, "momentum": 0.8, "trust_coefficient": 0.1, "nesterov": True},
    ),
    "fromage": (lambda: gradtx.fromage(0.05), "Fromage", {"lr": 0.05}),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_pytorch_optimizer(name):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    make_gradtx, class_name, kwargs = TORCH_CASES[name]
    make_torch = lambda p: getattr(pytorch_optimizer, class_name)(p, **kwargs)
    assert max_relative_error(run_gradtx(make_gradtx(), STEPS), run_torch(make_torch, STEPS)) < TOLERANCE


def test_pytorch_optimizer_lamb_is_another_rule():
    # It skips debiasing v, clips ||w|| at 10 and adds eps to the ratio: not Algorithm 2, as the docstring says.
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    theirs = run_torch(lambda p: pytorch_optimizer.Lamb(p, lr=1e-2, weight_decay=0.1, weight_decouple=False), STEPS)
    assert max_relative_error(run_gradtx(gradtx.lamb(1e-2, weight_decay=0.1), STEPS), theirs) > 1e-3


def test_zero_blocks_keep_moving_and_params_are_required():
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    grads = {"w": jnp.full((2, 2), 0.5), "b": jnp.asarray([0.3, -0.4])}
    transform = gradtx.scale_by_trust_ratio()
    updates, _ = transform.update(grads, transform.init(params), params)
    np.testing.assert_allclose(updates["b"], grads["b"])  # ||w|| = 0: ratio 1
    np.testing.assert_allclose(updates["w"], grads["w"] * 2.0 / 1.0)  # ||w|| = 2, ||g|| = 1
    for make in (gradtx.scale_by_trust_ratio, gradtx.scale_by_param_block_norm, gradtx.scale_by_param_block_rms,
                 lambda: gradtx.lars(0.1), lambda: gradtx.fromage(0.1)):
        transform = make()
        with pytest.raises(ValueError, match="needs the parameters"):
            transform.update(grads, transform.init(params))


CONTRACT = {
    "lamb": lambda: gradtx.lamb(1e-3, weight_decay=0.1),
    "lars": lambda: gradtx.lars(0.1, 0.01, trust_ratio_mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
    "fromage": lambda: gradtx.fromage(0.01),
    "scale_by_param_block_norm": lambda: gradtx.chain(gradtx.scale_by_param_block_norm(), gradtx.sgd(0.01)),
    "scale_by_param_block_rms": lambda: gradtx.chain(gradtx.scale_by_param_block_rms(), gradtx.sgd(0.01)),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract(name):
    check_jit_equals_eager(CONTRACT[name])
    check_dtypes_kept(CONTRACT[name], jnp.float32)
    check_dtypes_kept(CONTRACT[name], jnp.bfloat16)
    check_vmap_equals_loop(CONTRACT[name])


@pytest.mark.parametrize(
    "make, floats",
    [
        (gradtx.lamb, {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.99, "weight_decay": 0.1}),
        (gradtx.lars, {"learning_rate": 0.1, "weight_decay": 0.1, "momentum": 0.9}),
        (gradtx.fromage, {"learning_rate": 0.1}),
    ],
)
def test_hyperparameters_take_schedules(make, floats):
    check_schedules(make, floats)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: gradtx.lamb(-1e-3), "learning_rate"),
        (lambda: gradtx.lamb(1e-3, b2=1.0), "b2"),
        (lambda: gradtx.lamb(1e-3, eps=0.0), "eps"),
        (lambda: gradtx.lamb(1e-3, weight_decay=-0.1), "weight_decay"),
        (lambda: gradtx.lars(-0.1), "learning_rate"),
        (lambda: gradtx.lars(0.1, weight_decay=-0.1), "weight_decay"),
        (lambda: gradtx.lars(0.1, trust_coefficient=-1.0), "trust_coefficient"),
        (lambda: gradtx.lars(0.1, eps=-1.0), "eps"),
        (lambda: gradtx.lars(0.1, momentum=1.0), "momentum"),
        (lambda: gradtx.fromage(-0.1), "learning_rate"),
        (lambda: gradtx.fromage(0.1, min_norm=-1.0), "min_norm"),
        (lambda: gradtx.scale_by_trust_ratio(min_norm=-1.0), "min_norm"),
        (lambda: gradtx.scale_by_param_block_norm(-1.0), "min_scale"),
        (lambda: gradtx.scale_by_param_block_rms(-1.0), "min_scale"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize(
    "name",
    ["lamb", "lars", "fromage", "scale_by_trust_ratio", "scale_by_param_block_norm", "scale_by_param_block_rms"],
)
def test_arguments_are_optaxs(name):
    check_signature_matches_optax(name)
