"""Polyak SGD and DoG against Optax and the papers' formulas (150 float64 steps), and the contract."""

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
from softmax_problem import initial_params, loss, max_relative_error, run_gradtx

import gradtx

STEPS = 150
TOLERANCE = 1e-8


def run_with_value(optimizer, num_steps):
    """The trajectory of an optimizer whose ``update`` takes ``value=loss(params)``."""
    params = initial_params()
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state, params, value=value)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    trajectory = []
    for _ in range(num_steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def run_polyak_formula(scaling, max_learning_rate, f_min, eps, plus, num_steps):
    """``w <- w - s_t min(gap / (||g||^2 + eps), gamma_max) g``, gap = f - f* (or its positive part)."""
    params = initial_params()
    trajectory = []
    for t in range(num_steps):
        value, g = jax.value_and_grad(loss)(params)
        gap = max(float(value) - f_min, 0.0) if plus else float(value) - f_min
        squared = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(g))
        step = scaling(t) * min(gap / (squared + eps), max_learning_rate)
        params = jax.tree.map(lambda w, g: w - step * g, params, g)
        trajectory.append(params)
    return trajectory


POLYAK_CASES = {
    "polyak_sgd": (lambda: gradtx.polyak_sgd(), lambda: optax.polyak_sgd()),
    "polyak_sgd_sps_plus": (
        lambda: gradtx.polyak_sgd(max_learning_rate=5.0, f_min=0.9, eps=1e-3, variant="sps+"),
        lambda: optax.polyak_sgd(max_learning_rate=5.0, f_min=0.9, eps=1e-3, variant="sps+"),
    ),
    "scale_by_polyak_then_sgd": (
        lambda: gradtx.chain(gradtx.scale_by_polyak(f_min=0.2, max_learning_rate=2.0), gradtx.sgd(0.5)),
        lambda: optax.chain(optax.scale_by_polyak(f_min=0.2, max_learning_rate=2.0), optax.sgd(0.5)),
    ),
}


@pytest.mark.parametrize("name", sorted(POLYAK_CASES))
def test_polyak_matches_optax(name):
    make_gradtx, make_optax = POLYAK_CASES[name]
    ours, theirs = run_with_value(make_gradtx(), STEPS), run_with_value(make_optax(), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    assert max_relative_error([ours[-1]], [initial_params()]) > 0.5


def test_polyak_sgd_follows_the_formula_and_optax_code_scales_first():
    # With scaling s != 1, gradtx follows the documented s min(gap / ||g||^2, gamma_max); Optax's code
    # feeds -s g to the Polyak step and so computes s min(gap / (s^2 ||g||^2), gamma_max).
    scaling = lambda t: 0.5 * 0.99**t
    # f_min near the minimum and a loose cap, so that the Polyak ratio (not gamma_max) sets the step.
    f_min, cap = 0.4, 100.0
    formula = run_polyak_formula(scaling, cap, f_min, 0.0, False, 30)
    ours = run_with_value(gradtx.polyak_sgd(cap, scaling, f_min), 30)
    assert max_relative_error(ours, formula) < TOLERANCE
    theirs = run_with_value(optax.polyak_sgd(cap, scaling, f_min), 30)
    assert max_relative_error(theirs, formula) > 1e-2
    optax_code = run_with_value(
        gradtx.chain(gradtx.scale_by_learning_rate(scaling), gradtx.scale_by_polyak(f_min, cap)), 30
    )
    assert max_relative_error(optax_code, theirs) < TOLERANCE


def test_polyak_needs_the_value_and_takes_no_step_on_a_zero_gradient():
    optimizer = gradtx.polyak_sgd()
    params = {"w": jnp.ones(3)}
    state = optimizer.init(params)
    with pytest.raises(TypeError, match="value="):
        optimizer.update({"w": jnp.ones(3)}, state, params)
    updates, _ = optimizer.update({"w": jnp.zeros(3)}, state, params, value=1.0)
    np.testing.assert_array_equal(updates["w"], 0.0)
    updates, _ = optimizer.update({"w": jnp.full(3, 0.5)}, state, params, value=0.75)
    np.testing.assert_allclose(updates["w"], -0.5 * min(0.75 / 0.75, 1.0))


DOG_CASES = {
    "float64_start": (
        lambda: gradtx.scale_by_distance_over_gradients(reps_rel=1e-4, param_dtype=jnp.float64, global_scale=-1.0),
        lambda: optax.scale_by_distance_over_gradients(reps_rel=1e-4, param_dtype=jnp.float64, global_scale=-1.0),
    ),
    "defaults_then_sgd": (
        lambda: gradtx.chain(gradtx.scale_by_distance_over_gradients(), gradtx.sgd(1.0)),
        lambda: optax.chain(optax.scale_by_distance_over_gradients(), optax.sgd(1.0)),
    ),
}


@pytest.mark.parametrize("name", sorted(DOG_CASES))
def test_dog_matches_optax(name):
    make_gradtx, make_optax = DOG_CASES[name]
    ours, theirs = run_gradtx(make_gradtx(), STEPS), run_gradtx(make_optax(), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    assert max_relative_error([ours[-1]], [initial_params()]) > 0.5


def test_dog_is_the_papers_layerwise_rule():
    # Ivgi et al. 2023, L-DoG: eta = max(r_eps (1 + ||w_0||), max_i ||w_i - w_0||) / sqrt(sum_i ||g_i||^2).
    from softmax_problem import grad

    reps_rel, eps = 1e-4, 1e-8
    params = initial_params()
    start = params
    r = {k: reps_rel * (1 + jnp.linalg.norm(w)) for k, w in params.items()}
    total = {k: 0.0 for k in params}
    expected = []
    for _ in range(STEPS):
        g = grad(params)
        for k in params:
            r[k] = jnp.maximum(r[k], jnp.linalg.norm(params[k] - start[k]))
            total[k] = total[k] + jnp.sum(g[k] ** 2)
        params = {k: params[k] - r[k] / jnp.sqrt(total[k] + eps) * g[k] for k in params}
        expected.append(params)
    ours = run_gradtx(
        gradtx.scale_by_distance_over_gradients(reps_rel, eps, param_dtype=jnp.float64, global_scale=-1.0), STEPS
    )
    assert max_relative_error(ours, expected) < TOLERANCE


def test_dog_keeps_a_scalar_leafs_shape():
    params = {"scale": jnp.asarray(2.0), "w": jnp.ones(3)}
    transform = gradtx.scale_by_distance_over_gradients()
    updates, state = transform.update({"scale": jnp.asarray(0.5), "w": jnp.ones(3)}, transform.init(params), params)
    assert updates["scale"].shape == () and state.grad_sum_of_squares["scale"].shape == ()
    assert state._fields == optax._src.transform.ScaleByDistanceOverGradientsState._fields


class _WithValue:
    """Gives a transform that needs ``value=`` a stand-in value, so that the contract's loop can run it."""

    def __init__(self, transform):
        self.transform = transform
        self.init = transform.init

    def update(self, updates, state, params=None):
        value = sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(params)) + 1.0
        return self.transform.update(updates, state, params, value=value)


CONTRACT = {
    "polyak_sgd": lambda: _WithValue(gradtx.polyak_sgd(max_learning_rate=0.1)),
    # reps_rel=1e-2: the default first step, 1e-6 of the weights, is below bfloat16's resolution.
    "scale_by_distance_over_gradients": lambda: gradtx.scale_by_distance_over_gradients(1e-2, global_scale=-1.0),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract(name):
    check_jit_equals_eager(CONTRACT[name])
    check_dtypes_kept(CONTRACT[name], jnp.float32)
    check_dtypes_kept(CONTRACT[name], jnp.bfloat16)
    check_vmap_equals_loop(CONTRACT[name])


def test_polyak_scaling_takes_a_schedule():
    check_schedules(lambda scaling: _WithValue(gradtx.polyak_sgd(0.1, scaling)), {"scaling": 0.5})


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: gradtx.polyak_sgd(max_learning_rate=-1.0), "max_learning_rate"),
        (lambda: gradtx.polyak_sgd(scaling=-1.0), "scaling"),
        (lambda: gradtx.polyak_sgd(eps=-1.0), "eps"),
        (lambda: gradtx.polyak_sgd(variant="sps-"), "variant"),
        (lambda: gradtx.scale_by_distance_over_gradients(reps_rel=0.0), "reps_rel"),
        (lambda: gradtx.scale_by_distance_over_gradients(eps=-1.0), "eps"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize("name", ["polyak_sgd", "scale_by_polyak", "scale_by_distance_over_gradients"])
def test_arguments_are_optaxs(name):
    check_signature_matches_optax(name)
