"""Adam's relatives, Adan, NovoGrad and optimistic methods: against Optax, torch and the papers."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_problem import grad, initial_params, max_relative_error, run_gradtx, run_torch

import gradtx

STEPS = 150
TOLERANCE = 1e-8
mask = {"w": True, "b": False}
schedule = lambda t: 0.01 * 0.98**t  # noqa: E731


def _optax_optimistic_adam(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.optimistic_adam(*args, **kwargs)


CASES = {
    "adabelief": (lambda: gradtx.adabelief(0.01), lambda: optax.adabelief(0.01)),
    "adabelief_nesterov_schedule": (
        lambda: gradtx.adabelief(schedule, b1=0.8, b2=0.99, eps=1e-12, eps_root=1e-10, nesterov=True),
        lambda: optax.adabelief(schedule, b1=0.8, b2=0.99, eps=1e-12, eps_root=1e-10, nesterov=True),
    ),
    "radam": (lambda: gradtx.radam(0.01), lambda: optax.radam(0.01)),
    "radam_nesterov_options": (
        lambda: gradtx.radam(schedule, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, threshold=4.5, nesterov=True),
        lambda: optax.radam(schedule, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, threshold=4.5, nesterov=True),
    ),
    "yogi": (lambda: gradtx.yogi(0.01), lambda: optax.yogi(0.01)),
    "scale_by_yogi_options": (
        lambda: gradtx.chain(gradtx.scale_by_yogi(0.8, 0.99, 1e-4, 1e-6, 0.1), gradtx.scale(-0.01)),
        lambda: optax.chain(optax.scale_by_yogi(0.8, 0.99, 1e-4, 1e-6, 0.1), optax.scale(-0.01)),
    ),
    "novograd": (lambda: gradtx.novograd(0.003), lambda: optax.novograd(0.003)),
    "novograd_weight_decay": (
        lambda: gradtx.novograd(0.002, b1=0.5, b2=0.5, eps=1e-8, eps_root=1e-10, weight_decay=0.01),
        lambda: optax.novograd(0.002, b1=0.5, b2=0.5, eps=1e-8, eps_root=1e-10, weight_decay=0.01),
    ),
    "adamaxw_masked": (
        lambda: gradtx.adamaxw(0.01, weight_decay=0.1, mask=mask),
        lambda: optax.adamaxw(0.01, weight_decay=0.1, mask=mask),
    ),
    "nadamw": (lambda: gradtx.nadamw(0.01, weight_decay=0.1), lambda: optax.nadamw(0.01, weight_decay=0.1)),
    "nadamw_no_nesterov_schedule": (
        lambda: gradtx.nadamw(schedule, nesterov=False, mask=mask),
        lambda: optax.nadamw(schedule, nesterov=False, mask=mask),
    ),
    "adan_no_prox_first_step": (lambda: gradtx.adan(0.01, no_prox=True), lambda: optax.adan(0.01)),
    "optimistic_gradient_descent": (
        lambda: gradtx.optimistic_gradient_descent(0.1, 1.0, 0.5),
        lambda: optax.optimistic_gradient_descent(0.1, 1.0, 0.5),
    ),
    "optimistic_adam": (lambda: gradtx.optimistic_adam(0.01, 0.02), lambda: _optax_optimistic_adam(0.01, 0.02)),
    "optimistic_adam_v2": (
        lambda: gradtx.optimistic_adam_v2(schedule, alpha=0.7, beta=0.5, nesterov=False),
        lambda: optax.optimistic_adam_v2(schedule, alpha=0.7, beta=0.5, nesterov=False),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name):
    make_gradtx, make_optax = CASES[name]
    # Adan's difference from Optax (see test_adan_follows_the_paper) starts at the second step.
    steps = 1 if name == "adan_no_prox_first_step" else STEPS
    ours, theirs = run_gradtx(make_gradtx(), steps), run_gradtx(make_optax(), steps)
    assert all(np.isfinite(p["w"]).all() for p in ours)
    assert max_relative_error(ours, theirs) < TOLERANCE


def _adan_reference(steps, lr, b1, b2, b3, eps, eps_root, wd, *, diff_weight, proximal):
    """Algorithm 1 of Xie et al. with the authors' bias correction, written from the paper in NumPy."""
    w = {k: np.asarray(v) for k, v in initial_params().items()}
    m, v, n, prev = ({k: np.zeros_like(x) for k, x in w.items()} for _ in range(4))
    out = []
    for t in range(1, steps + 1):
        g = {k: np.asarray(x) for k, x in grad({k: jnp.asarray(x) for k, x in w.items()}).items()}
        for k in w:
            d = g[k] - prev[k] if t > 1 else np.zeros_like(g[k])
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * d
            n[k] = b3 * n[k] + (1 - b3) * (g[k] + diff_weight * d) ** 2
            step = (m[k] / (1 - b1**t) + diff_weight * v[k] / (1 - b2**t)) / (
                np.sqrt(n[k] / (1 - b3**t) + eps_root) + eps
            )
            if proximal:
                w[k] = (w[k] - lr * step) / (1 + lr * wd)
            else:
                w[k] = w[k] - lr * (step + wd * w[k])
            prev[k] = g[k]
        out.append({k: jnp.asarray(x.copy()) for k, x in w.items()})
    return out


def test_adan_follows_the_paper():
    # The paper weighs d_t = g_t - g_{t-1} by (1 - beta_2^paper) = b2; optax 0.2.8 uses 1 - b2.
    args = dict(lr=0.01, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8)
    ours = run_gradtx(gradtx.adan(0.01, weight_decay=0.05), STEPS)
    ours_no_prox = run_gradtx(gradtx.adan(0.01, weight_decay=0.05, no_prox=True), STEPS)
    theirs = run_gradtx(optax.adan(0.01, weight_decay=0.05), STEPS)
    assert max_relative_error(ours, _adan_reference(STEPS, wd=0.05, diff_weight=0.92, proximal=True, **args)) < 1e-8
    assert max_relative_error(
        ours_no_prox, _adan_reference(STEPS, wd=0.05, diff_weight=0.92, proximal=False, **args)
    ) < TOLERANCE
    # The same reference with Optax's weight reproduces Optax: the coefficient is the whole difference.
    assert max_relative_error(
        theirs, _adan_reference(STEPS, wd=0.05, diff_weight=0.08, proximal=False, **args)
    ) < TOLERANCE
    assert max_relative_error(ours_no_prox, theirs) > 1e-3


def test_radam_matches_torch():
    import torch

    # torch adds eps to sqrt(v) before debiasing and switches at rho_t > 5; with a tiny eps the rules agree.
    ours = run_gradtx(gradtx.radam(0.01, eps=1e-14), STEPS)
    theirs = run_torch(lambda p: torch.optim.RAdam(p, lr=0.01, eps=1e-14), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE


def test_nadam_with_momentum_schedule_matches_torch_nadamw():
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch keeps prod(mu_i) in the default dtype
    try:
        theirs = run_torch(
            lambda p: torch.optim.NAdam(
                p, lr=0.003, weight_decay=0.1, momentum_decay=4e-3, decoupled_weight_decay=True
            ),
            STEPS,
        )
    finally:
        torch.set_default_dtype(previous)
    # lr 0.003: at 0.01 this run is chaotic (rounding differences grow 1000x every 15 steps).
    dozat = gradtx.chain(gradtx.scale_by_nadam(), gradtx.add_decayed_weights(0.1), gradtx.scale_by_learning_rate(0.003))
    assert max_relative_error(run_gradtx(dozat, STEPS), theirs) < TOLERANCE
    # Optax's nadamw has no momentum schedule: a different method, visibly.
    assert max_relative_error(run_gradtx(gradtx.nadamw(0.003, weight_decay=0.1), STEPS), theirs) > 1e-4


def test_first_steps_by_hand():
    # AdaBelief step 1: m = 0.1 g, s = 0.001 (0.9 g)^2 + eps_root; m_hat = g, s_hat = 0.81 g^2 + 1e3 eps_root.
    g = jnp.array([0.3, -2.0])
    u, _ = gradtx.scale_by_belief(eps=1e-30, eps_root=0.0).update(g, gradtx.scale_by_belief().init(g))
    np.testing.assert_allclose(u, g / np.sqrt(0.81 * g**2), rtol=1e-14)
    # Yogi step 1 from v_0 = 1e-6 < g^2: v_1 = v_0 + (1 - b2) g^2.
    tx = gradtx.scale_by_yogi(eps=1e-30, initial_accumulator_value=1e-6)
    u, state = tx.update(g, tx.init(g))
    m, v = 0.9e-6 + 0.1 * g, 1e-6 + 1e-3 * g**2
    np.testing.assert_allclose(state.nu, v, rtol=1e-14)
    np.testing.assert_allclose(u, (m / 0.1) / np.sqrt(v / 1e-3), rtol=1e-14)
    # Optimistic: u_1 = alpha g_1, u_2 = (alpha + beta) g_2 - beta g_1.
    tx = gradtx.scale_by_optimistic_gradient(0.7, 0.5)
    u1, state = tx.update(g, tx.init(g))
    u2, _ = tx.update(2 * g, state)
    np.testing.assert_allclose(u1, 0.7 * g)
    np.testing.assert_allclose(u2, 1.2 * 2 * g - 0.5 * g)


def test_states_use_optax_field_names():
    p = initial_params()
    pairs = [
        (gradtx.scale_by_belief(), optax.scale_by_belief()),
        (gradtx.scale_by_radam(), optax.scale_by_radam()),
        (gradtx.scale_by_yogi(), optax.scale_by_yogi()),
        (gradtx.scale_by_adan(), optax.scale_by_adan()),
        (gradtx.scale_by_novograd(), optax.scale_by_novograd()),
        (gradtx.scale_by_optimistic_gradient(), optax.scale_by_optimistic_gradient()),
    ]
    for ours, theirs in pairs:
        a, b = ours.init(p), theirs.init(p)
        assert a._fields == b._fields
        assert [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(a)] == [
            (jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(b)
        ]


def test_bad_hyperparameters_are_refused_at_construction():
    with pytest.raises(ValueError, match="b1"):
        gradtx.adabelief(0.1, b1=1.0)
    with pytest.raises(ValueError, match="b2"):
        gradtx.radam(0.1, b2=-0.1)
    with pytest.raises(ValueError, match="eps"):
        gradtx.yogi(0.1, eps=0.0)
    with pytest.raises(ValueError, match="b3"):
        gradtx.adan(0.1, b3=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        gradtx.novograd(0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        gradtx.adamaxw(-0.1)
    with pytest.raises(ValueError, match="momentum_decay"):
        gradtx.scale_by_nadam(momentum_decay=-1.0)
    with pytest.raises(TypeError, match="optimistic_adam_v2"):
        gradtx.optimistic_adam(schedule)
    with pytest.raises(TypeError, match="beta"):
        gradtx.scale_by_optimistic_gradient(beta=schedule)


def test_wrong_trees_and_leaves_name_the_path():
    p = initial_params()
    for tx in (gradtx.radam(0.1), gradtx.adan(0.1), gradtx.novograd(0.1), gradtx.adabelief(0.1)):
        state = tx.init(p)
        with pytest.raises(ValueError, match=r"\['w'\]"):
            tx.update({"w": jnp.zeros((3, 4)), "b": p["b"]}, state, p)
    with pytest.raises(TypeError, match=r"\['n'\]"):
        gradtx.novograd(0.1).init({"n": jnp.zeros(3, jnp.int32)})
    with pytest.raises(ValueError, match="parameters"):
        gradtx.adan(0.1, weight_decay=0.1).update(p, gradtx.adan(0.1, weight_decay=0.1).init(p))
