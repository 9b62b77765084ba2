"""The house contract for gradtx.contrib (jit = eager, dtypes kept, vmap = loop, None and scalar leaves),
construction-time errors, and properties of Muon's orthogonalization and SAM's two modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract_checks import check_vmap_equals_loop
from softmax_problem import grad, initial_params, loss, max_relative_error, run_gradtx
from test_contract import nested_params, train

import gradtx
import gradtx.contrib as gc

TRANSFORMS = {
    "muon": lambda: gc.muon(0.01),
    "muon_adaptive_aol": lambda: gc.muon(0.01, adaptive=True, preconditioning="aol", ns_coeffs="dion"),
    "scale_by_muon_dimension_numbers": lambda: gradtx.chain(
        gradtx.masked(gc.scale_by_muon(weight_dimension_numbers=gc.MuonDimensionNumbers(1, 0)),
                      lambda p: jax.tree.map(lambda x: x.ndim == 2, p)),
        gradtx.scale(-0.01)),
    "schedule_free_sgd": lambda: gc.schedule_free_sgd(0.1, warmup_steps=2, weight_decay=0.01),
    "schedule_free_adamw": lambda: gc.schedule_free_adamw(0.01, warmup_steps=2),
    "adopt": lambda: gc.adopt(0.01),
    "adopt_nesterov": lambda: gc.adopt(0.01, nesterov=True),
    "ademamix": lambda: gc.ademamix(0.01, b3=lambda t: 0.99 + 0.0 * t),
    "simplified_ademamix": lambda: gc.simplified_ademamix(0.01, alpha=1.0),
    "madgrad": lambda: gc.madgrad(0.01, weight_decay=0.01),
    "acprop": lambda: gc.acprop(0.01),
    "sam": lambda: gc.sam(gradtx.sgd(0.1), gradtx.sgd(0.05)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_jit_equals_eager_on_nested_tree_with_none_and_scalars(name):
    params = nested_params(jnp.float32)
    eager_params, eager_state = train(TRANSFORMS[name](), params, 3, jit=False)
    jit_params, jit_state = train(TRANSFORMS[name](), params, 3, jit=True)
    assert jax.tree.structure(eager_params) == jax.tree.structure(params)
    assert eager_params["layers"][1] is None
    for a, b in zip(jax.tree.leaves((eager_params, eager_state)), jax.tree.leaves((jit_params, jit_state))):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_params_and_state_keep_their_dtypes(name, dtype):
    transform = TRANSFORMS[name]()
    params = nested_params(dtype)
    initial_state_dtypes = jax.tree.map(lambda x: jnp.result_type(x), transform.init(params))
    new_params, new_state = train(transform, params, 2, jit=True)
    assert jax.tree.map(lambda x: x.dtype, new_params) == jax.tree.map(lambda x: x.dtype, params)
    assert jax.tree.map(lambda x: jnp.result_type(x), new_state) == initial_state_dtypes
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_params))


@pytest.mark.parametrize("name", ["muon", "schedule_free_adamw", "adopt", "madgrad", "sam"])
def test_vmap_over_a_batch_of_params_equals_a_loop(name):
    check_vmap_equals_loop(TRANSFORMS[name], rtol=2e-5)


INVALID = [
    (lambda: gc.muon(0.1, beta=1.0), "beta"),
    (lambda: gc.muon(0.1, ns_steps=0), "ns_steps"),
    (lambda: gc.muon(0.1, ns_coeffs="fast"), "ns_coeffs"),
    (lambda: gc.muon(0.1, ns_coeffs=(1.0, 2.0)), "ns_coeffs"),
    (lambda: gc.scale_by_muon(ns_coeffs="dion", ns_steps=3), "ns_coeffs"),
    (lambda: gc.muon(0.1, preconditioning="qr"), "preconditioning"),
    (lambda: gc.schedule_free_sgd(b1=0.0), "b1"),
    (lambda: gc.schedule_free_sgd(warmup_steps=0), "warmup_steps"),
    (lambda: gc.schedule_free_adamw(b2=1.0), "b2"),
    (lambda: gc.schedule_free(gradtx.sgd(0.1), -1.0), "learning_rate"),
    (lambda: gc.adopt(0.1, eps=0.0), "eps"),
    (lambda: gc.ademamix(0.1, b3=1.5), "b3"),
    (lambda: gc.simplified_ademamix(0.1, alpha=-1.0), "alpha"),
    (lambda: gc.madgrad(0.1, momentum=1.5), "momentum"),
    (lambda: gc.acprop(0.1, b2=-0.1), "b2"),
    (lambda: gc.sam(gradtx.sgd(0.1), gradtx.sgd(0.1), sync_period=0), "sync_period"),
    (lambda: gc.sophia(0.1, update_interval=0), "update_interval"),
    (lambda: gc.sophia(0.1, gamma=0.0), "gamma"),
]


@pytest.mark.parametrize("case", range(len(INVALID)))
def test_invalid_hyperparameters_raise_at_construction(case):
    build, name = INVALID[case]
    with pytest.raises(ValueError, match=name):
        build()


def test_missing_update_arguments_are_named():
    params = initial_params()
    for tx, message in [(gc.madgrad(0.1), "params"), (gc.schedule_free_sgd(), "params"),
                        (gc.sophia(0.1), "obj_fn|objective"),
                        (gc.sam(gradtx.sgd(0.1), gradtx.sgd(0.1), opaque_mode=True), "grad_fn")]:
        state = tx.init(params)
        with pytest.raises(ValueError, match=message):
            tx.update(grad(params), state, None if message == "params" else params)
    with pytest.raises(ValueError, match="ScheduleFreeState"):
        gc.schedule_free_eval_params(gradtx.sgd(0.1).init(params), params)
    with pytest.raises(ValueError, match="rank >= 2"):
        gc.scale_by_muon().update({"b": params["b"]}, gc.scale_by_muon().init({"b": params["b"]}))


@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (8, 8)])
def test_muon_update_is_nearly_orthogonal(preconditioning, shape):
    g = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
    tx = gc.scale_by_muon(ns_coeffs="dion" if preconditioning in ("aol", "schatten") else (3.4445, -4.7750, 2.0315),
                          nesterov=False, preconditioning=preconditioning)
    u, _ = tx.update({"w": g}, tx.init({"w": g}))
    singular_values = jnp.linalg.svd(u["w"], compute_uv=False)
    assert 0.6 < float(singular_values.min()) and float(singular_values.max()) < 1.25
    if preconditioning == "aol":  # its row scaling changes the singular vectors, not only the values
        return
    # Same singular vectors as g: u ~ U f(S) V^T, so u^T g is symmetric positive definite.
    cross = u["w"].T @ g if shape[0] >= shape[1] else g @ u["w"].T
    assert jnp.allclose(cross, cross.T, atol=1e-10) and float(jnp.linalg.eigvalsh(cross).min()) > 0


def test_muon_batch_axes_are_orthogonalized_per_slice():
    stack = jax.random.normal(jax.random.PRNGKey(1), (3, 6, 4), jnp.float64)
    dims = gc.MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    tx = gc.scale_by_muon(nesterov=False, weight_dimension_numbers=dims)
    stacked, _ = tx.update({"w": stack}, tx.init({"w": stack}))
    single = gc.scale_by_muon(nesterov=False)
    for i in range(3):
        one, _ = single.update({"w": stack[i]}, single.init({"w": stack[i]}))
        assert jnp.allclose(stacked["w"][i], one["w"], atol=1e-12)


def test_muon_routes_non_matrices_to_adamw():
    params = initial_params()
    state = gc.muon(0.01).init(params)
    routed = state.inner_states
    assert isinstance(routed["muon"].inner_state[0], gc.MuonState)
    assert isinstance(routed["muon"].inner_state[0].mu["b"], gradtx.MaskedNode)
    assert isinstance(routed["adam"].inner_state[0].mu["w"], gradtx.MaskedNode)


def test_sam_opaque_mode_equals_transparent_mode():
    transparent = run_gradtx(gc.sam(gradtx.adam(0.01), gradtx.sgd(0.05), sync_period=3), 60)[2::3]
    opaque_tx = gc.sam(gradtx.adam(0.01), gradtx.sgd(0.05), sync_period=3, opaque_mode=True)
    params, state, opaque = initial_params(), opaque_tx.init(initial_params()), []
    for _ in range(20):
        updates, state = opaque_tx.update(grad(params), state, params, grad_fn=lambda p, i: grad(p))
        params = gradtx.apply_updates(params, updates)
        opaque.append(params)
    assert max_relative_error(opaque, transparent) < 1e-12


def test_sam_is_foret_et_al():
    # w_{t+1} = w_t - eta grad L(w_t + rho g_t / ||g_t||), written out.
    eta, rho = 0.3, 0.05
    normalize = gradtx.stateless(lambda g, params: jax.tree.map(lambda x: x / gradtx.tree_global_norm(g), g))
    ours = run_gradtx(gc.sam(gradtx.sgd(eta), gradtx.chain(normalize, gradtx.sgd(rho))), 100)[1::2]
    params, expected = initial_params(), []
    for _ in range(50):
        g = grad(params)
        norm = gradtx.tree_global_norm(g)
        g_adv = grad(jax.tree.map(lambda p, gi: p + rho * gi / norm, params, g))
        params = jax.tree.map(lambda p, gi: p - eta * gi, params, g_adv)
        expected.append(params)
    assert max_relative_error(ours, expected) < 1e-10


@pytest.mark.parametrize("name", ["muon", "schedule_free_adamw", "adopt", "ademamix", "madgrad", "acprop"])
def test_trains_the_softmax_problem(name):
    start = float(loss(initial_params()))
    final = run_gradtx(TRANSFORMS[name](), 150)[-1]
    assert float(loss(final)) < 0.7 * start
