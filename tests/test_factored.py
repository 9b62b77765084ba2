"""Adafactor and SM3: against Optax, torch.optim.Adafactor and the papers, on matrices and a 3-axis tensor."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_problem import initial_params, max_relative_error, run_gradtx, run_torch

import gradtx
from gradtx.factored import _clip_by_block_rms, _scale_by_param_block_rms

STEPS = 150
SHORT = 100  # the slower reference runs (torch steps eagerly)
TOLERANCE = 1e-8

# A second problem whose leaves factor along every axis order: (12, 6) has its largest axis first,
# (6, 12) last, and (3, 5, 8) factors its two last axes and keeps the first.
_rng = np.random.default_rng(3)
_X, _Y = jnp.asarray(_rng.normal(size=(20, 12))), jnp.asarray(_rng.normal(size=(20, 12)))
_T = jnp.asarray(_rng.normal(size=(3, 5, 8)))


def _tensor_loss(p):
    hidden = jnp.tanh(_X @ p["w"] + p["b"])
    fit = jnp.mean((hidden @ p["v"] - _Y) ** 2)
    return fit + jnp.mean(jnp.cos(p["t"]) * _T) + 0.05 * jnp.sum(p["t"] ** 2)


_tensor_grad = jax.jit(jax.grad(_tensor_loss))


def _tensor_params():
    rng = np.random.default_rng(4)
    shapes = {"w": (12, 6), "v": (6, 12), "t": (3, 5, 8), "b": (6,)}
    return {k: jnp.asarray(0.3 * rng.normal(size=s)) for k, s in shapes.items()}


def run_tensor_problem(optimizer, steps):
    params = _tensor_params()
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(_tensor_grad(params), state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    trajectory = []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


ALL_OPTIONS = dict(
    min_dim_size_to_factor=2,
    decay_rate=0.7,
    decay_offset=-3,  # the schedule starts 3 steps in, as when fine-tuning
    multiply_by_parameter_scale=False,
    clipping_threshold=0.5,
    momentum=0.9,
    dtype_momentum=jnp.float64,
    weight_decay_rate=1e-3,
    eps=1e-20,
    weight_decay_mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
)

CASES = {
    "adafactor_factored": (
        lambda: gradtx.adafactor(0.01, min_dim_size_to_factor=2),
        lambda: optax.adafactor(0.01, min_dim_size_to_factor=2),
    ),
    "adafactor_unfactored_default_size": (lambda: gradtx.adafactor(0.01), lambda: optax.adafactor(0.01)),
    "adafactor_all_options": (
        lambda: gradtx.adafactor(0.05, **ALL_OPTIONS),
        lambda: optax.adafactor(0.05, **ALL_OPTIONS),
    ),
    "adafactor_not_factored_no_clip": (
        lambda: gradtx.adafactor(0.01, factored=False, clipping_threshold=None, min_dim_size_to_factor=1),
        lambda: optax.adafactor(0.01, factored=False, clipping_threshold=None, min_dim_size_to_factor=1),
    ),
    "scale_by_factored_rms": (
        lambda: gradtx.chain(gradtx.scale_by_factored_rms(True, 0.6, -2, 3, 1e-25), gradtx.scale(-0.0005)),
        lambda: optax.chain(optax.scale_by_factored_rms(True, 0.6, -2, 3, 1e-25), optax.scale(-0.0005)),
    ),
    "sm3": (lambda: gradtx.sm3(0.05), lambda: optax.sm3(0.05)),
    "scale_by_sm3_options": (
        lambda: gradtx.chain(gradtx.scale_by_sm3(0.5, 0.9, 1e-6), gradtx.scale(-0.01)),
        lambda: optax.chain(optax.scale_by_sm3(0.5, 0.9, 1e-6), optax.scale(-0.01)),
    ),
}


@pytest.mark.parametrize("problem", ["softmax", "tensor"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name, problem):
    make_gradtx, make_optax = CASES[name]
    run = run_gradtx if problem == "softmax" else run_tensor_problem
    ours, theirs = run(make_gradtx(), STEPS), run(make_optax(), STEPS)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(ours))
    assert max_relative_error(ours, theirs) < TOLERANCE


def test_factoring_is_used():
    state = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2).init(_tensor_params())
    assert state.v_row["w"].shape == (6,) and state.v_col["w"].shape == (12,) and state.v["w"].shape == (1,)
    assert state.v_row["v"].shape == (6,) and state.v_col["v"].shape == (12,)
    assert state.v_row["t"].shape == (3, 5) and state.v_col["t"].shape == (3, 8)
    assert state.v["b"].shape == (6,) and state.v_row["b"].shape == (1,)
    sm3_state = gradtx.scale_by_sm3().init(_tensor_params())
    assert [a.shape for a in sm3_state.mu["t"]] == [(3,), (5,), (8,)]
    assert [a.shape for a in sm3_state.mu["b"]] == [(6,)]
    for ours, theirs in [
        (gradtx.scale_by_factored_rms(min_dim_size_to_factor=2), optax.scale_by_factored_rms(min_dim_size_to_factor=2)),
        (gradtx.scale_by_sm3(), optax.scale_by_sm3()),
    ]:
        a, b = ours.init(_tensor_params()), theirs.init(_tensor_params())
        assert a._fields == b._fields
        assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]


def test_adafactor_default_step_is_the_papers():
    # learning_rate=None: rho_t = min(1e-2, 1/sqrt(t)) (x 0.05 without the parameter scale), as in
    # Shazeer & Stern and tensor2tensor. Optax uses rho_t = 1 there.
    relative = lambda t: jnp.minimum(1e-2, 1 / jnp.sqrt(t + 1.0))  # noqa: E731
    ours = run_gradtx(gradtx.adafactor(), SHORT)
    assert max_relative_error(ours, run_gradtx(optax.adafactor(relative), SHORT)) < TOLERANCE
    assert max_relative_error(
        run_gradtx(gradtx.adafactor(multiply_by_parameter_scale=False), SHORT),
        run_gradtx(optax.adafactor(lambda t: 0.05 * relative(t), multiply_by_parameter_scale=False), SHORT),
    ) < TOLERANCE
    assert max_relative_error(ours, run_gradtx(optax.adafactor(), SHORT)) > 1e-2


def test_adafactor_matches_torch():
    import torch

    lr, wd = 1e-2, 0.1
    theirs = run_torch(lambda p: torch.optim.Adafactor(p, lr=lr, weight_decay=wd), SHORT)
    # torch evaluates beta_2(t) = 1 - t^-0.8 in float64, Optax (and adafactor) in float32.
    float64_decay = lambda step, rate: 1.0 - (step + 1.0) ** (-rate)  # noqa: E731
    same_rule = gradtx.chain(
        gradtx.scale_by_factored_rms(min_dim_size_to_factor=0, decay_rate_fn=float64_decay),
        _clip_by_block_rms(1.0),
        gradtx.scale_by_schedule(lambda t: jnp.minimum(lr, 1 / jnp.sqrt(t + 1.0))),
        _scale_by_param_block_rms(1e-3),
        gradtx.add_decayed_weights(lr * wd),
        gradtx.scale(-1.0),
    )
    assert max_relative_error(run_gradtx(same_rule, SHORT), theirs) < TOLERANCE
    ours = run_gradtx(gradtx.adafactor(min_dim_size_to_factor=0, weight_decay_rate=lr * wd), SHORT)
    assert max_relative_error(ours, theirs) < 1e-6


def test_sm3_first_step_by_hand():
    g = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    tx = gradtx.scale_by_sm3(b1=0.0, eps=0.0)
    u, state = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u, jnp.sign(g))
    np.testing.assert_allclose(state.mu[0], [4.0, 9.0])  # max over each row of g^2
    np.testing.assert_allclose(state.mu[1], [1.0, 9.0])  # max over each column
    g2 = jnp.array([[0.0, 1.0], [2.0, 0.0]])
    u2, _ = tx.update(g2, state)
    # nu' = g^2 + min(row bound, column bound): [[0 + 1, 1 + 4], [4 + 1, 0 + 9]]
    np.testing.assert_allclose(u2, g2 / jnp.sqrt(jnp.array([[1.0, 5.0], [5.0, 9.0]])))
    # A scalar leaf (which Optax cannot take) keeps a running sum like AdaGrad.
    s, state = tx.update(jnp.array(2.0), tx.init(jnp.array(0.0)))
    np.testing.assert_allclose(s, 1.0)


def test_errors():
    with pytest.raises(ValueError, match="clipping_threshold"):
        gradtx.adafactor(clipping_threshold=0.0)
    with pytest.raises(ValueError, match="momentum"):
        gradtx.adafactor(momentum=1.0)
    with pytest.raises(ValueError, match="min_dim_size_to_factor"):
        gradtx.scale_by_factored_rms(min_dim_size_to_factor=-1)
    with pytest.raises(ValueError, match="b2"):
        gradtx.scale_by_sm3(b2=1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        gradtx.sm3(-1.0)
    p = initial_params()
    for tx in (gradtx.adafactor(0.1, min_dim_size_to_factor=2), gradtx.sm3(0.1)):
        state = tx.init(p)
        with pytest.raises(ValueError, match=r"\['w'\]"):
            tx.update({"w": jnp.zeros((4, 10)), "b": p["b"]}, state, p)
    with pytest.raises(ValueError, match="parameters"):
        gradtx.adafactor(0.1).update(p, gradtx.adafactor(0.1).init(p))
    with pytest.raises(TypeError, match=r"\['i'\]"):
        gradtx.sm3(0.1).init({"i": jnp.zeros(3, jnp.int32)})
