"""gradtx.contrib against optax.contrib: same names, same arguments, same numbers over 150 float64 steps.

Where gradtx follows the paper by default, the case passes the flag that selects Optax's variant
(``bias_correction=True``); ``test_contrib_paper.py`` shows the paper's variant.
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

ramp = lambda t: jnp.minimum(t, 50) / 50  # noqa: E731

CASES = {
    "muon": (lambda: gc.muon(0.02, bias_correction=True), lambda: oc.muon(0.02)),
    "muon_no_nesterov_decay": (
        lambda: gc.muon(0.02, nesterov=False, weight_decay=0.05, bias_correction=True, adam_learning_rate=0.01),
        lambda: oc.muon(0.02, nesterov=False, weight_decay=0.05, adam_learning_rate=0.01),
    ),
    "muon_aol_dion": (
        lambda: gc.muon(0.02, ns_coeffs="dion", preconditioning="aol", bias_correction=True),
        lambda: oc.muon(0.02, ns_coeffs="dion", preconditioning="aol"),
    ),
    "muon_schatten_adaptive_rms": (
        lambda: gc.muon(0.02, preconditioning="schatten", adaptive=True, consistent_rms=0.2, bias_correction=True),
        lambda: oc.muon(0.02, preconditioning="schatten", adaptive=True, consistent_rms=0.2),
    ),
    "muon_spectral": (
        lambda: gc.muon(0.02, preconditioning="spectral", bias_correction=True),
        lambda: oc.muon(0.02, preconditioning="spectral"),
    ),
    "muon_dimension_numbers": (
        lambda: gc.muon(0.02, bias_correction=True,
                        muon_weight_dimension_numbers={"w": gc.MuonDimensionNumbers(1, 0), "b": None}),
        lambda: oc.muon(0.02, muon_weight_dimension_numbers={"w": oc.MuonDimensionNumbers(1, 0), "b": None}),
    ),
    "schedule_free_sgd": (
        lambda: gc.schedule_free_sgd(0.5, weight_decay=0.01), lambda: oc.schedule_free_sgd(0.5, weight_decay=0.01)
    ),
    "schedule_free_adamw": (
        lambda: gc.schedule_free_adamw(0.02, b1=0.95, weight_decay=0.01),
        lambda: oc.schedule_free_adamw(0.02, b1=0.95, weight_decay=0.01),
    ),
    "schedule_free_wrapper_adam": (
        lambda: gc.schedule_free(gradtx.adam(0.02, b1=0.0), 0.02, weight_lr_power=1.0),
        lambda: oc.schedule_free(optax.adam(0.02, b1=0.0), 0.02, weight_lr_power=1.0),
    ),
    "adopt": (lambda: gc.adopt(0.01), lambda: oc.adopt(0.01)),
    "adopt_nesterov_unclipped": (
        lambda: gc.adopt(0.01, b2=0.99, nesterov=True, use_clipping=False),
        lambda: oc.adopt(0.01, b2=0.99, nesterov=True, use_clipping=False),
    ),
    "ademamix": (lambda: gc.ademamix(0.01, b3=0.999, weight_decay=0.01), lambda: oc.ademamix(0.01, b3=0.999,
                                                                                          weight_decay=0.01)),
    "ademamix_schedules": (
        lambda: gc.ademamix(0.01, b3=lambda t: 0.99 + 0.009 * ramp(t), alpha=lambda t: 5.0 * ramp(t)),
        lambda: oc.ademamix(0.01, b3=lambda t: 0.99 + 0.009 * ramp(t), alpha=lambda t: 5.0 * ramp(t)),
    ),
    "simplified_ademamix": (
        lambda: gc.simplified_ademamix(0.001, alpha=2.0, weight_decay=0.01),
        lambda: oc.simplified_ademamix(0.001, alpha=2.0, weight_decay=0.01),
    ),
    "madgrad": (lambda: gc.madgrad(0.01, weight_decay=0.01), lambda: oc.madgrad(0.01, weight_decay=0.01)),
    # Optax takes sqrt(k + 1) of an int32 in float32 (relative error ~3e-8 per step), so the case
    # uses a schedule that keeps lambda_k = (gamma_k + eps) sqrt(k + 1) exact there: sqrt(k+1) cancels.
    "madgrad_no_momentum_schedule": (
        lambda: gc.madgrad(lambda t: 0.02 / jnp.sqrt(t + 1.0) - 1e-6, momentum=0.0),
        lambda: oc.madgrad(lambda t: 0.02 / jnp.sqrt(t + 1.0) - 1e-6, momentum=0.0),
    ),
    "acprop": (
        lambda: gc.acprop(0.01, weight_decay=0.01, center_on_previous_mu=True),
        lambda: oc.acprop(0.01, weight_decay=0.01),
    ),
    "sam_sgd": (
        lambda: gc.sam(gradtx.sgd(0.1), gradtx.sgd(0.05)), lambda: oc.sam(optax.sgd(0.1), optax.sgd(0.05))
    ),
    "sam_adam_period3_keep_state": (
        lambda: gc.sam(gradtx.adam(0.01), gradtx.adam(0.005), sync_period=3, reset_state=False),
        lambda: oc.sam(optax.adam(0.01), optax.adam(0.005), sync_period=3, reset_state=False),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_contrib(name):
    make_gradtx, make_optax = CASES[name]
    assert max_relative_error(run_gradtx(make_gradtx(), STEPS), run_gradtx(make_optax(), STEPS)) < TOLERANCE


def run_with_objective(optimizer, num_steps, **update_kwargs):
    """Like ``run_gradtx``, passing ``obj_fn=loss`` (Sophia's Hutchinson estimator) and extra kwargs."""
    params, state = initial_params(), optimizer.init(initial_params())

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(grad(params), state, params, obj_fn=loss, **update_kwargs)
        return jax.tree.map(jnp.add, params, updates), state

    trajectory = []
    for _ in range(num_steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


@pytest.mark.parametrize("kwargs", [dict(update_interval=3), dict(update_interval=1, clip_threshold=None,
                                                                   gamma=0.5, weight_decay=0.0)])
def test_sophia_matches_optax_with_the_same_hutchinson_probes(kwargs):
    ours = run_with_objective(gc.sophia(0.01, bias_correction=True, **kwargs), STEPS)
    theirs = run_with_objective(oc.sophia(0.01, **kwargs), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE


def test_hutchinson_estimator_matches_optax():
    params = initial_params()
    key = jax.random.PRNGKey(3)
    ours, theirs = gc.hutchinson_estimator_diag_hessian(key), oc.hutchinson_estimator_diag_hessian(key)
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    for _ in range(3):
        h_ours, state_ours = ours.update(None, state_ours, params, obj_fn=loss)
        h_theirs, state_theirs = theirs.update(None, state_theirs, params, obj_fn=loss)
        for k in params:
            assert jnp.allclose(h_ours[k], h_theirs[k], rtol=1e-12, atol=0)
    # The estimate is unbiased: averaging many probes approaches the exact Hessian diagonal.
    exact_w = jnp.diagonal(jax.hessian(lambda w: loss({"w": w, "b": params["b"]}))(params["w"]).reshape(40, 40))
    estimator, state, total = gc.hutchinson_estimator_diag_hessian(), None, 0.0
    state = estimator.init(params)
    for _ in range(400):
        h, state = estimator.update(None, state, params, obj_fn=loss)
        total = total + h["w"].reshape(-1)
    assert jnp.max(jnp.abs(total / 400 - exact_w)) < 0.1 * jnp.max(jnp.abs(exact_w))


def test_schedule_free_eval_params_matches_optax():
    ours, theirs = gc.schedule_free_adamw(0.02), oc.schedule_free_adamw(0.02)
    params = initial_params()
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    p_ours = p_theirs = params
    for _ in range(20):
        u, state_ours = ours.update(grad(p_ours), state_ours, p_ours)
        p_ours = gradtx.apply_updates(p_ours, u)
        u, state_theirs = theirs.update(grad(p_theirs), state_theirs, p_theirs)
        p_theirs = optax.apply_updates(p_theirs, u)
    x_ours = gc.schedule_free_eval_params(state_ours, p_ours)
    x_theirs = oc.schedule_free_eval_params(state_theirs, p_theirs)
    assert max_relative_error([x_ours], [x_theirs]) < TOLERANCE


def test_state_fields_are_optax_names():
    params = initial_params()
    pairs = [
        (gc.scale_by_muon(), oc.scale_by_muon()),
        (gc.schedule_free_sgd(), oc.schedule_free_sgd()),
        (gc.scale_by_ademamix(), oc.scale_by_ademamix()),
        (gc.scale_by_simplified_ademamix(), oc.scale_by_simplified_ademamix()),
        (gc.scale_by_madgrad(0.1), oc.scale_by_madgrad(0.1)),
        (gc.scale_by_acprop(center_on_previous_mu=True), oc.scale_by_acprop()),
        (gc.sam(gradtx.sgd(0.1), gradtx.sgd(0.1)), oc.sam(optax.sgd(0.1), optax.sgd(0.1))),
        (gc.hutchinson_estimator_diag_hessian(), oc.hutchinson_estimator_diag_hessian()),
    ]
    for ours, theirs in pairs:
        assert type(ours.init(params))._fields == type(theirs.init(params))._fields
    sophia_state = gc.sophia(0.1).init(params)[0]
    assert sophia_state._fields == oc.SophiaState._fields


def run_matrix_problem(optimizer, num_steps):
    """The softmax problem with its weight as a (10, 4) matrix and a (2, 5, 4) reshape of it, plus the bias."""
    start = initial_params()
    params = {"w": start["w"], "w3": start["w"].reshape(2, 5, 4), "b": start["b"]}

    def objective(p):
        return loss({"w": 0.5 * (p["w"] + p["w3"].reshape(10, 4)), "b": p["b"]})

    state = optimizer.init(params)
    step = jax.jit(lambda p, s: optimizer.update(jax.grad(objective)(p), s, p))
    trajectory = []
    for _ in range(num_steps):
        updates, state = step(params, state)
        params = jax.tree.map(jnp.add, params, updates)
        trajectory.append(params)
    return trajectory


GALORE = {
    "galore_rank2": (lambda m: m.galore(0.02, rank=2, update_proj_gap=25, weight_decay=0.01), {}),
    "galore_full_rank_sgd_base": (
        lambda m, base: m.galore(0.1, rank=8, update_proj_gap=1, scale=0.5, base_optimizer=base), {}),
    "galore_dimension_numbers": (
        lambda m: m.galore(0.02, rank=3, update_proj_gap=40, weight_dimension_numbers={
            "w": m.GaLoreDimensionNumbers(1, 0), "w3": m.GaLoreDimensionNumbers((0, 2), 1), "b": None}), {}),
}


@pytest.mark.parametrize("name", sorted(GALORE))
def test_galore_matches_optax(name):
    build, _ = GALORE[name]
    if name == "galore_full_rank_sgd_base":
        ours, theirs = build(gc, gradtx.trace(0.9)), build(oc, optax.trace(0.9))
    else:
        ours, theirs = build(gc), build(oc)
    assert max_relative_error(run_matrix_problem(ours, STEPS), run_matrix_problem(theirs, STEPS)) < TOLERANCE
