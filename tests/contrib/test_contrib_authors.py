"""gradtx.contrib against the authors' reference implementations (PyTorch), 150 float64 steps.

``schedulefree`` (Defazio et al.) for schedule-free SGD and AdamW; ``pytorch_optimizer`` for
ADOPT, MADGRAD, AdEMAMix and Muon. Every optimizer gets the same JAX gradients
(``softmax_problem.run_torch``). Skipped where a package is not installed.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from softmax_problem import grad, initial_params, max_relative_error, run_gradtx, run_torch

import gradtx.contrib as gc

torch = pytest.importorskip("torch")
STEPS = 150
TOLERANCE = 1e-8


def _train_mode(optimizer):
    optimizer.train()
    return optimizer


@pytest.mark.parametrize("warmup_steps", [None, 10])
def test_schedule_free_sgd_matches_schedulefree(warmup_steps):
    schedulefree = pytest.importorskip("schedulefree")
    ours = run_gradtx(gc.schedule_free_sgd(0.5, warmup_steps, b1=0.9, weight_decay=0.01), STEPS)
    theirs = run_torch(lambda p: _train_mode(schedulefree.SGDScheduleFree(
        p, lr=0.5, momentum=0.9, weight_decay=0.01, warmup_steps=warmup_steps or 0, foreach=False)), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE


@pytest.mark.parametrize("warmup_steps", [None, 20])
def test_schedule_free_adamw_matches_schedulefree(warmup_steps):
    schedulefree = pytest.importorskip("schedulefree")
    ours = run_gradtx(gc.schedule_free_adamw(0.02, warmup_steps, b1=0.95, b2=0.99, weight_decay=0.01), STEPS)
    theirs = run_torch(lambda p: _train_mode(schedulefree.AdamWScheduleFree(
        p, lr=0.02, betas=(0.95, 0.99), weight_decay=0.01, warmup_steps=warmup_steps or 0, foreach=False)), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE


def test_schedule_free_eval_params_is_schedulefree_eval():
    schedulefree = pytest.importorskip("schedulefree")
    optimizer = gc.schedule_free_adamw(0.02)
    params, state = initial_params(), optimizer.init(initial_params())
    tensors = [torch.tensor(np.asarray(params[k]), requires_grad=True) for k in ("w", "b")]
    reference = _train_mode(schedulefree.AdamWScheduleFree(tensors, lr=0.02, foreach=False))
    for _ in range(30):
        g = grad(params)
        updates, state = optimizer.update(g, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        for t, k in zip(tensors, ("w", "b")):
            t.grad = torch.tensor(np.asarray(g[k]))
        reference.step()
    reference.eval()
    x = gc.schedule_free_eval_params(state, params)
    expected = {k: jnp.asarray(t.detach().numpy()) for k, t in zip(("w", "b"), tensors)}
    assert max_relative_error([x], [expected]) < TOLERANCE


def test_adopt_matches_pytorch_optimizer():
    po = pytest.importorskip("pytorch_optimizer")
    ours = run_gradtx(gc.adopt(0.01, b2=0.999), STEPS)
    # pytorch_optimizer counts the initializing call as step 1; Algorithm 2 clips the first update
    # at c_1 = 1, so its clip_lambda is shifted by one step (see gradtx.contrib.scale_by_adopt).
    theirs = run_torch(lambda p: po.ADOPT(p, lr=0.01, betas=(0.9, 0.999), foreach=False,
                                          clip_lambda=lambda step: (step - 1) ** 0.25), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    authors_clip = run_gradtx(gc.adopt(0.01, b2=0.999, clip_value_fn=lambda t: (t + 1) ** 0.25), STEPS)
    theirs_default = run_torch(lambda p: po.ADOPT(p, lr=0.01, betas=(0.9, 0.999), foreach=False), STEPS)
    assert max_relative_error(authors_clip, theirs_default) < TOLERANCE


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_madgrad_matches_pytorch_optimizer(momentum):
    po = pytest.importorskip("pytorch_optimizer")
    ours = run_gradtx(gc.madgrad(0.01, momentum=momentum, weight_decay=0.01), STEPS)
    theirs = run_torch(lambda p: po.MADGRAD(p, lr=0.01, momentum=momentum, weight_decay=0.01, foreach=False), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE


def test_ademamix_matches_pytorch_optimizer():
    po = pytest.importorskip("pytorch_optimizer")
    ours = run_gradtx(gc.ademamix(0.01, b3=0.999, alpha=5.0, weight_decay=0.01), STEPS)
    theirs = run_torch(lambda p: po.AdEMAMix(p, lr=0.01, betas=(0.9, 0.999, 0.999), alpha=5.0, weight_decay=0.01,
                                             weight_decouple=True, foreach=False), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE


@pytest.fixture
def float64_newton_schulz(monkeypatch):
    """pytorch_optimizer iterates Newton–Schulz in bfloat16; the comparison runs it in float64."""
    pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer.optimizer.muon import base
    from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5

    monkeypatch.setattr(base, "zero_power_via_newton_schulz_5",
                        functools.partial(zero_power_via_newton_schulz_5, dtype=torch.float64))


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_pytorch_optimizer(float64_newton_schulz, nesterov):
    import pytorch_optimizer as po

    # torch stores a weight as (out, in); w here is (in, out), so its reduction axis is 0 in JAX
    # and its rows are torch's outputs: MuonDimensionNumbers(1, 0) makes both read it as (out, in).
    dims = {"w": gc.MuonDimensionNumbers(reduction_axis=1, output_axis=0)}
    if not nesterov:
        dims["b"] = None
    # Jordan's Muon has no bias correction and a plain Adam fallback (betas 0.9, 0.95; eps 1e-10).
    # Muon's steps have a fixed size, so near the optimum it circles and the direction of the tiny
    # momentum is sensitive to rounding and to the eps added to its norm (the reference has none):
    # a small learning rate keeps the 150 steps descending, and the w-only run uses a negligible eps.
    ours = gc.muon(0.005, eps=1e-30 if nesterov else 1e-10, weight_decay=0.01, nesterov=nesterov, adam_b2=0.95,
                   adam_learning_rate=0.003, muon_weight_dimension_numbers=dims)
    if nesterov:  # gradtx's (Optax's) fallback is NAdam with nesterov: compare the Muon leaf alone.
        b = initial_params()["b"]
        w_only = {"w": initial_params()["w"]}
        trajectory, state, params = [], ours.init(w_only), w_only
        step = jax.jit(lambda p, s: ours.update({"w": grad({"w": p["w"], "b": b})["w"]}, s, p))
        for _ in range(STEPS):
            updates, state = step(params, state)
            params = jax.tree.map(jnp.add, params, updates)
            trajectory.append({"w": params["w"], "b": b})
    else:
        trajectory = run_gradtx(ours, STEPS)

    def make(p):
        w, b = p
        groups = [{"params": [w], "use_muon": True}]
        groups.append({"params": [b], "use_muon": True, "lr": 0.0} if nesterov else {"params": [b], "use_muon": False})
        return po.Muon(groups, lr=0.005, momentum=0.95, weight_decay=0.01, nesterov=nesterov, adamw_lr=0.003,
                       adamw_betas=(0.9, 0.95), adamw_eps=1e-10, foreach=False)

    # With nesterov, b is a Muon leaf with learning rate 0 there: it stays put, as in our w-only run.
    theirs = run_torch(make, STEPS)
    assert max_relative_error(trajectory, theirs) < TOLERANCE
    assert math.isfinite(float(jnp.sum(trajectory[-1]["w"])))
