"""Lion and Signum against Optax and pytorch_optimizer (150 float64 steps), the paper's rule, and the contract."""

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
decay_mask = {"w": True, "b": False}
schedule = lambda t: 3e-3 * 0.99**t

OPTAX_CASES = {
    "lion": (lambda: gradtx.lion(3e-3), lambda: optax.lion(3e-3)),
    "lion_all_options": (
        lambda: gradtx.lion(schedule, b1=0.8, b2=0.95, weight_decay=0.1, mask=decay_mask),
        lambda: optax.lion(schedule, b1=0.8, b2=0.95, weight_decay=0.1, mask=decay_mask),
    ),
    "scale_by_lion_smooth": (
        lambda: gradtx.chain(gradtx.scale_by_lion(mode="smooth", smooth_beta=5.0), gradtx.scale(-1e-2)),
        lambda: optax.chain(optax.scale_by_lion(mode="smooth", smooth_beta=5.0), optax.scale(-1e-2)),
    ),
    "scale_by_lion_refined": (
        lambda: gradtx.chain(gradtx.scale_by_lion(b1=0.5, mode="refined"), gradtx.scale(-0.1)),
        lambda: optax.chain(optax.scale_by_lion(b1=0.5, mode="refined"), optax.scale(-0.1)),
    ),
    "signum": (lambda: gradtx.signum(1e-3), lambda: optax.signum(1e-3)),
    "signum_schedule": (lambda: gradtx.signum(schedule, beta=0.7), lambda: optax.signum(schedule, beta=0.7)),
}


@pytest.mark.parametrize("name", sorted(OPTAX_CASES))
def test_matches_optax(name):
    make_gradtx, make_optax = OPTAX_CASES[name]
    ours, theirs = run_gradtx(make_gradtx(), STEPS), run_gradtx(make_optax(), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    # Not a trivial match: the parameters travel far from where they started.
    assert max_relative_error([ours[-1]], [initial_params()]) > 0.5


# pytorch_optimizer's Lion is the authors' PyTorch program; its SignSGD with momentum is Signum.
TORCH_CASES = {
    "lion": (
        lambda: gradtx.lion(3e-3, b1=0.8, b2=0.95, weight_decay=0.1),
        "Lion",
        {"lr": 3e-3, "betas": (0.8, 0.95), "weight_decay": 0.1},
    ),
    "signum": (lambda: gradtx.signum(1e-3, beta=0.8), "SignSGD", {"lr": 1e-3, "momentum": 0.8}),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_pytorch_optimizer(name):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    make_gradtx, class_name, kwargs = TORCH_CASES[name]
    make_torch = lambda p: getattr(pytorch_optimizer, class_name)(p, **kwargs)
    assert max_relative_error(run_gradtx(make_gradtx(), STEPS), run_torch(make_torch, STEPS)) < TOLERANCE


def test_lion_is_the_papers_program():
    # Chen et al. 2023, Program 1, written out: c = interp(g, m, b1); w -= lr (sign(c) + wd w); m = interp(g, m, b2).
    lr, b1, b2, wd = 3e-3, 0.9, 0.99, 0.1
    params = initial_params()
    m = jax.tree.map(jnp.zeros_like, params)
    expected = []
    for _ in range(STEPS):
        g = grad(params)
        c = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, g, m)
        params = jax.tree.map(lambda w, c: w - lr * (jnp.sign(c) + wd * w), params, c)
        m = jax.tree.map(lambda g, m: b2 * m + (1 - b2) * g, g, m)
        expected.append(params)
    assert max_relative_error(run_gradtx(gradtx.lion(lr, b1, b2, weight_decay=wd), STEPS), expected) < TOLERANCE


def test_lion_state_has_optax_fields_and_mu_dtype():
    params = {"w": jnp.ones((3, 2), jnp.float32)}
    state = gradtx.scale_by_lion(mu_dtype=jnp.bfloat16).init(params)
    assert state._fields == optax.ScaleByLionState._fields
    assert state.mu["w"].dtype == jnp.bfloat16
    grads = {"w": jnp.full((3, 2), 0.5, jnp.float32)}
    updates, state = gradtx.scale_by_lion(mu_dtype=jnp.bfloat16).update(grads, state)
    assert updates["w"].dtype == jnp.float32 and state.mu["w"].dtype == jnp.bfloat16
    assert int(state.count) == 1
    np.testing.assert_array_equal(updates["w"], 1.0)


CONTRACT = {
    "lion": lambda: gradtx.lion(1e-3, weight_decay=0.1),
    "scale_by_lion_smooth": lambda: gradtx.scale_by_lion(mode="smooth"),
    "signum": lambda: gradtx.signum(1e-3),
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
        (gradtx.lion, {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.99, "weight_decay": 0.1}),
        (gradtx.signum, {"learning_rate": 1e-2, "beta": 0.9}),
    ],
)
def test_hyperparameters_take_schedules(make, floats):
    check_schedules(make, floats)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: gradtx.lion(-1e-3), "learning_rate"),
        (lambda: gradtx.lion(1e-3, b1=1.0), "b1"),
        (lambda: gradtx.lion(1e-3, b2=-0.1), "b2"),
        (lambda: gradtx.lion(1e-3, weight_decay=-0.1), "weight_decay"),
        (lambda: gradtx.scale_by_lion(mode="soft"), "mode"),
        (lambda: gradtx.scale_by_lion(mode="smooth", smooth_beta=0.0), "smooth_beta"),
        (lambda: gradtx.signum(-1.0), "learning_rate"),
        (lambda: gradtx.signum(1e-3, beta=1.0), "beta"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_integer_leaf_is_rejected_with_its_path():
    with pytest.raises(TypeError, match=r"\['step'\]"):
        gradtx.lion(1e-3).init({"w": jnp.ones(2), "step": jnp.asarray(1)})


@pytest.mark.parametrize("name", ["lion", "scale_by_lion", "signum"])
def test_arguments_are_optaxs(name):
    check_signature_matches_optax(name)
