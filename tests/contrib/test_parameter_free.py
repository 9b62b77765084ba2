"""Prodigy, D-Adaptation, DoG, DoWG and COCOB against Optax, the authors' code and the papers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from softmax_problem import grad, initial_params, max_relative_error, run_gradtx, run_torch

import gradtx
from gradtx import contrib

STEPS = 150
TOLERANCE = 1e-8
decay_mask = {"w": True, "b": False}


def schedule(t):
    return 1.0 * 0.99**t


CASES = {
    "prodigy": (lambda m: m.prodigy(), None),
    "prodigy_all_options": (
        lambda m: m.prodigy(schedule, betas=(0.8, 0.99), beta3=0.95, eps=1e-6, estim_lr0=1e-4, estim_lr_coef=0.5,
                            weight_decay=0.1, safeguard_warmup=True),
        None,
    ),
    "dadapt_adamw": (lambda m: m.dadapt_adamw(), None),
    "dadapt_adamw_all_options": (
        lambda m: m.dadapt_adamw(schedule, betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-4, weight_decay=0.1), None
    ),
    "dog": (lambda m: m.dog(), None),
    "dog_distance_decay": (lambda m: m.dog(0.5, ("distance", 1e-3), 1e-6, weight_decay=1e-2, mask=decay_mask), None),
    "dog_learning_rate": (lambda m: m.dog(init_step=("learning_rate", 0.1)), None),
    "dowg": (lambda m: m.dowg(), None),
    "dowg_options": (lambda m: m.dowg(schedule, init_estim_sq_dist=1e-3, eps=1e-6, weight_decay=1e-2), None),
    "cocob": (lambda m: m.cocob(), None),
    "cocob_options": (lambda m: m.cocob(0.5, alpha=20.0, eps=1e-6, weight_decay=1e-2, mask=decay_mask), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_optax(name):
    build, _ = CASES[name]
    ours = run_gradtx(build(contrib), STEPS)
    theirs = run_gradtx(build(optax.contrib), STEPS)
    assert max_relative_error(ours, theirs) < TOLERANCE
    # The problem is not trivial: each method moves far from the start.
    start = initial_params()
    assert float(jnp.linalg.norm(ours[-1]["w"] - start["w"])) > 0.1


def test_flat_names_are_contrib_names():
    for name in ("prodigy", "dadapt_adamw", "dog", "dowg", "cocob", "scale_by_cocob", "ProdigyState", "DoGState"):
        assert getattr(gradtx, name) is getattr(contrib, name)


TORCH_CASES = {
    # pytorch_optimizer's defaults leave Adam's bias correction off (as the authors' code does).
    "prodigy_authors_default": (
        lambda: contrib.prodigy(bias_correction=False),
        lambda p: __import__("pytorch_optimizer").Prodigy(p),
    ),
    "prodigy_bias_corrected_decay": (
        lambda: contrib.prodigy(weight_decay=0.1, safeguard_warmup=True, betas=(0.8, 0.99)),
        lambda p: __import__("pytorch_optimizer").Prodigy(
            p, bias_correction=True, weight_decay=0.1, safeguard_warmup=True, betas=(0.8, 0.99)
        ),
    ),
    "dadapt_authors_default": (
        lambda: contrib.dadapt_adamw(bias_correction=False),
        lambda p: __import__("pytorch_optimizer").DAdaptAdam(p, weight_decouple=True),
    ),
    "dadapt_bias_corrected_decay": (
        lambda: contrib.dadapt_adamw(weight_decay=0.1, betas=(0.8, 0.99)),
        lambda p: __import__("pytorch_optimizer").DAdaptAdam(
            p, bias_correction=True, weight_decay=0.1, weight_decouple=True, betas=(0.8, 0.99)
        ),
    ),
}


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_matches_pytorch_optimizer(name):
    pytest.importorskip("pytorch_optimizer")
    import torch

    ours, theirs = TORCH_CASES[name]
    # pytorch_optimizer keeps the distance statistics in tensors of the default dtype (float32).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        reference = run_torch(theirs, STEPS)
    finally:
        torch.set_default_dtype(previous)
    assert max_relative_error(run_gradtx(ours(), STEPS), reference) < TOLERANCE


def _flat(params):
    return np.concatenate([np.ravel(params["w"]), np.ravel(params["b"])])


def _unflat(vector):
    w = vector[: initial_params()["w"].size].reshape(initial_params()["w"].shape)
    return {"w": jnp.asarray(w), "b": jnp.asarray(vector[w.size:])}


def _paper_trajectory(step_rule, num_steps):
    """Runs ``w <- step_rule(k, w, g)`` in NumPy on the flattened parameters."""
    w = _flat(initial_params())
    trajectory = []
    for k in range(num_steps):
        g = _flat(grad(_unflat(w)))
        w = step_rule(k, w, g)
        trajectory.append(_unflat(w))
    return trajectory


def test_dog_dowg_cocob_follow_the_papers():
    """The update rules written out from the papers (Ivgi et al. 2023, eq. 1 with r_eps = 1e-6(1 +
    ||x_0||); Khaled et al. 2023, Algorithm 1 with Optax's epsilon; Orabona & Tommasi 2017,
    Algorithm 2) in plain NumPy."""
    w0 = _flat(initial_params())

    dog_state = {"r": 1e-6 * (1 + np.linalg.norm(w0)), "G": 1e-8}

    def dog_rule(k, w, g):
        dog_state["r"] = max(dog_state["r"], np.linalg.norm(w - w0))
        dog_state["G"] += g @ g
        return w - dog_state["r"] / np.sqrt(dog_state["G"]) * g

    dowg_state = {"r2": 1e-4, "v": 0.0}

    def dowg_rule(k, w, g):
        dowg_state["r2"] = max(dowg_state["r2"], np.sum((w - w0) ** 2))
        dowg_state["v"] += dowg_state["r2"] * (g @ g)
        return w - dowg_state["r2"] / (np.sqrt(dowg_state["v"]) + 1e-4) * g

    cocob_state = {"L": np.full_like(w0, 1e-8), "G": np.zeros_like(w0), "R": np.zeros_like(w0),
                   "theta": np.zeros_like(w0)}

    def cocob_rule(k, w, g):
        s = cocob_state
        s["L"] = np.maximum(s["L"], np.abs(g))
        s["G"] = s["G"] + np.abs(g)
        s["R"] = np.maximum(s["R"] - g * (w - w0), 0.0)
        s["theta"] = s["theta"] - g
        return w0 + s["theta"] / (s["L"] * np.maximum(s["G"] + s["L"], 100.0 * s["L"])) * (s["L"] + s["R"])

    for optimizer, rule in ((contrib.dog(), dog_rule), (contrib.dowg(), dowg_rule), (contrib.cocob(), cocob_rule)):
        assert max_relative_error(run_gradtx(optimizer, STEPS), _paper_trajectory(rule, STEPS)) < TOLERANCE


@pytest.mark.parametrize("build", [contrib.prodigy, contrib.dadapt_adamw])
def test_zero_gradients_keep_the_estimate(build):
    """Optax's estimate becomes 0/0 = NaN when every gradient so far is zero; ours keeps d_0."""
    params = initial_params()
    optimizer = build()
    state = optimizer.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = optimizer.update(zeros, state, params)
    assert float(state.estim_lr) == 1e-6
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    _, optax_state = build.__module__ and optax.contrib.__dict__[build.__name__]().update(
        zeros, optax.contrib.__dict__[build.__name__]().init(params), params
    )
    assert bool(jnp.isnan(optax_state.estim_lr))


@pytest.mark.parametrize(
    "build",
    [contrib.prodigy, contrib.dadapt_adamw, contrib.dog, contrib.dowg, contrib.cocob],
)
def test_float32_and_state_fields(build):
    params = {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    optimizer = build()
    state = optimizer.init(params)
    g = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    step = jax.jit(optimizer.update)
    for _ in range(3):
        updates, state = step(g, state, params)
        params = gradtx.apply_updates(params, updates)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(updates))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(updates))
    # State types equal Optax's (same field names), so code reading the state ports unchanged.
    ours = jax.tree.structure(optimizer.init(params), is_leaf=lambda x: x is None)
    assert "State" in str(ours)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: contrib.prodigy(betas=(1.0, 0.999)), "betas\\[0\\]"),
        (lambda: contrib.prodigy(estim_lr0=0.0), "estim_lr0"),
        (lambda: contrib.prodigy(weight_decay=-1.0), "weight_decay"),
        (lambda: contrib.dadapt_adamw(eps=0.0), "eps"),
        (lambda: contrib.dog(init_step=("bogus", 1.0)), "init_step"),
        (lambda: contrib.dowg(eps=-1.0), "eps"),
        (lambda: contrib.cocob(alpha=0.0), "alpha"),
    ],
)
def test_invalid_hyperparameters(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("build", [contrib.prodigy, contrib.dadapt_adamw, contrib.dog, contrib.dowg, contrib.cocob])
def test_needs_params(build):
    params = initial_params()
    optimizer = build()
    with pytest.raises(ValueError, match="needs the parameters"):
        optimizer.update(params, optimizer.init(params))


def test_rejects_integer_leaves():
    with pytest.raises(TypeError, match="\\['n'\\]"):
        contrib.prodigy().init({"n": jnp.zeros(3, jnp.int32)})
