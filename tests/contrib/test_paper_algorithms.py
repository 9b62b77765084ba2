"""DoG, DoWG, Mechanic, D-Adaptation Adam and ACProp against the papers and the authors' own code.

Each reference is a plain NumPy float64 transcription of the paper's algorithm (or the authors'
code where the paper leaves a choice open), or the authors' package itself. Where Optax departs
from it, the test shows both: gradtx's default keeps Optax's numbers and the documented option (or
the transcription with Optax's choice switched in) gives the other.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from softmax_problem import grad, initial_params, max_relative_error, run_gradtx, run_torch

import gradtx
from gradtx import contrib

STEPS = 150
TOLERANCE = 1e-8


def _flat(params):
    return np.concatenate([np.ravel(params["w"]), np.ravel(params["b"])])


def _unflat(vector):
    w = vector[: initial_params()["w"].size].reshape(initial_params()["w"].shape)
    return {"w": jnp.asarray(w), "b": jnp.asarray(vector[w.size:])}


def _numpy_trajectory(step_rule, num_steps=STEPS):
    """Runs ``w <- step_rule(w, g)`` in NumPy on the flattened parameters (``w`` then ``b``)."""
    w = _flat(initial_params())
    trajectory = []
    for _ in range(num_steps):
        w = step_rule(w, _flat(grad(_unflat(w))))
        trajectory.append(_unflat(w))
    return trajectory


def _torch64(make_optimizer):
    """``run_torch`` with float64 as torch's default dtype (the authors' packages keep scalars in it)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return run_torch(make_optimizer, STEPS)
    finally:
        torch.set_default_dtype(previous)


def _moved(trajectory):
    return float(np.linalg.norm(_flat(trajectory[-1]) - _flat(initial_params())))


# ----------------------------------------------------------------------------------------- DoG


def test_dog_matches_the_authors_package():
    """``dog.DoG`` (Ivgi, Hinder & Carmon's ``dog-optimizer``) at its defaults (reps_rel 1e-6, lr 1,
    eps 1e-8) is Optax's and gradtx's ``dog()``: no departure."""
    dog = pytest.importorskip("dog")
    ours = run_gradtx(contrib.dog(), STEPS)
    assert max_relative_error(ours, _torch64(lambda p: dog.DoG(p))) < TOLERANCE
    assert _moved(ours) > 0.1
    # With weight decay (added to the gradient in both).
    ours = run_gradtx(contrib.dog(weight_decay=1e-2), STEPS)
    assert max_relative_error(ours, _torch64(lambda p: dog.DoG(p, weight_decay=1e-2))) < TOLERANCE


# ---------------------------------------------------------------------------------------- DoWG


def _dowg_paper(r_eps_sq, denominator_eps):
    """Khaled, Mishchenko & Jin 2023, Algorithm 1: ``r_bar^2 = max(r_bar^2, ||x - x0||^2)``,
    ``v += r_bar^2 ||g||^2``, ``x -= r_bar^2 / sqrt(v) g`` (plus ``denominator_eps`` as Optax)."""
    w0 = _flat(initial_params())
    state = {"r2": r_eps_sq, "v": 0.0}

    def rule(w, g):
        state["r2"] = max(state["r2"], float(np.sum((w - w0) ** 2)))
        state["v"] += state["r2"] * float(g @ g)
        return w - state["r2"] / (np.sqrt(state["v"]) + denominator_eps) * g

    return rule


def test_dowg_paper_and_optax_epsilon():
    """The paper has no epsilon in the denominator and leaves ``r_eps`` to the user; Optax (and the
    PyTorch DoWG code it follows) uses ``eps = 1e-4`` both as ``r_eps^2`` and in the denominator.
    gradtx keeps Optax's numbers; the paper's rule is the same with the denominator epsilon 0."""
    ours = run_gradtx(contrib.dowg(), STEPS)
    assert max_relative_error(ours, _numpy_trajectory(_dowg_paper(1e-4, 1e-4))) < TOLERANCE
    paper = _numpy_trajectory(_dowg_paper(1e-4, 0.0))
    assert max_relative_error(ours, paper) > 1e-6  # the epsilon shows, early on while v is small
    # An epsilon far below sqrt(v) is the paper's rule.
    close = run_gradtx(contrib.dowg(init_estim_sq_dist=1e-4, eps=1e-30), STEPS)
    assert max_relative_error(close, paper) < TOLERANCE
    assert _moved(paper) > 0.1


# ------------------------------------------------------------------------------------ Mechanic

BETAS = np.array([1 - 10.0**-i for i in range(1, 7)])


def _mechanic(s_init, lam=0.01, eps=1e-8, lr=1.0, optax_style=False):
    """Cutkosky, Defazio & Mehta 2023, Algorithm 1 over SGD(lr) in NumPy.

    ``optax_style=False``: the authors' ``mechanic-pytorch`` 0.0.1 (``s_1 = 0``, ``m_0 = 1e-6``,
    ``r_t = max(0, beta r_{t-1} - s_t h_t)``, and the decay term of ``h`` formed at ``x_t + u_t``,
    the point after the base step, where the paper writes ``x_t``). ``optax_style=True`` switches in
    Optax's five choices: ``s_1 = s_init``, ``m_0 = 0`` with ``m_t = max(beta m_{t-1}, |h_t| + eps)``,
    ``h_t`` clipped to ``[-m_{t-1}, m_{t-1}]`` in the reward, ``r`` kept unclamped (clamped only in
    the wealth) and the decay term formed at ``x_t`` as in the paper.
    """
    n = len(BETAS)
    x_ref = _flat(initial_params())
    st = {
        "s": np.full(n, s_init) if optax_style else np.zeros(n),
        "m": np.zeros(n) if optax_style else np.full(n, 1e-6),
        "v": np.zeros(n), "r": np.zeros(n),
    }

    def rule(x, g):
        base = -lr * g
        s_sum = st["s"].sum()
        delta = (x - x_ref) / (s_sum + eps)
        # The authors' code reads x after the base optimizer's step when it forms the decay term.
        x_decay = x if optax_style else x + base
        h = delta @ (g + lam * s_sum * np.linalg.norm(g) / (np.linalg.norm(x_decay) + eps) * x_decay)
        if optax_style:
            reward_h = np.clip(h, -st["m"], st["m"])
            st["m"] = np.maximum(BETAS * st["m"], abs(h) + eps)
            st["r"] = BETAS * st["r"] - reward_h * st["s"]
        else:
            st["m"] = np.maximum(BETAS * st["m"], abs(h))
            st["r"] = np.maximum(BETAS * st["r"] - st["s"] * h, 0.0)
        st["v"] = BETAS**2 * st["v"] + h * h
        st["s"] = (s_init / n * st["m"] + np.maximum(st["r"], 0.0)) / (np.sqrt(st["v"]) + eps)
        return x_ref + max(st["s"].sum(), 0.0) * (delta + base)

    return rule


def test_mechanic_transcription_is_the_authors_package_and_optax():
    """The transcription reproduces ``mechanic_pytorch.mechanize(torch.optim.SGD)`` at its defaults
    (s_init 1e-8) and, with Optax's five choices switched in, gradtx's ``mechanize`` (= Optax's)."""
    mechanic_pytorch = pytest.importorskip("mechanic_pytorch")
    import torch

    # Mechanic's feedback (the learned s multiplies the whole displacement) makes this trajectory
    # sensitive: last-bit differences (torch against NumPy, gradtx against NumPy) measured 1e-15 at
    # step 60, 1e-10 at step 80 and up to 2e-5 (elementwise, relative) at step 100; 1e-1 by step
    # 150. Hence 1e-8 over 80 steps and 1e-4 over 100.
    authors = _torch64(lambda p: mechanic_pytorch.mechanize(torch.optim.SGD)(p, lr=1.0))
    paper = _numpy_trajectory(_mechanic(1e-8), 100)
    assert max_relative_error(paper[:80], authors[:80]) < TOLERANCE
    assert max_relative_error(paper, authors[:100]) < 1e-4
    assert _moved(authors) > 0.1
    for s_init in (1e-8, 1e-6):
        ours = run_gradtx(contrib.mechanize(gradtx.sgd(1.0), s_init=s_init), 100)
        optax_style = _numpy_trajectory(_mechanic(s_init, optax_style=True), 100)
        assert max_relative_error(ours[:80], optax_style[:80]) < TOLERANCE
        assert max_relative_error(ours, optax_style) < 1e-4
        # gradtx (Optax's choices) and the authors' package part ways early: 0.4 to 1.0 relative by step 60.
        assert max_relative_error(ours[:60], authors[:60]) > 0.1


# ------------------------------------------------------------------------- D-Adaptation (Adam)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_dadapt_adamw_matches_dadaptation(bias_correction):
    """``dadaptation.DAdaptAdam`` (Defazio & Mishchenko's package, decoupled decay): the authors
    default to no bias correction (``bias_correction=False`` here); Optax always applies it."""
    dadaptation = pytest.importorskip("dadaptation")
    ours = run_gradtx(contrib.dadapt_adamw(weight_decay=1e-2, bias_correction=bias_correction), STEPS)
    theirs = _torch64(
        lambda p: dadaptation.DAdaptAdam(p, weight_decay=1e-2, decouple=True, use_bias_correction=bias_correction)
    )
    assert max_relative_error(ours, theirs) < TOLERANCE
    assert _moved(ours) > 0.1


# -------------------------------------------------------------------------------------- ACProp


def _acprop_authors(lr, eps, b1=0.9, b2=0.999):
    """The authors' ``ACProp.step`` (juntang-zhuang/ACProp-Optimizer, ``rectify=False``, no decay,
    their experiments' setting) in NumPy: ``eps`` is added into ``s`` before each use and outside
    the root; the residual is taken against the updated ``m_t`` (paper, Algorithm 2)."""
    st = {"m": None, "s": None, "t": 0}

    def rule(w, g):
        if st["m"] is None:
            st["m"], st["s"] = np.zeros_like(w), np.zeros_like(w)
        st["t"] += 1
        t = st["t"]
        st["m"] = b1 * st["m"] + (1 - b1) * g
        if t == 1:
            w = w - lr * st["m"] / (1 - b1)
        else:
            st["s"] = st["s"] + eps
            denom = np.sqrt(st["s"]) / np.sqrt(1 - b2 ** (t - 1)) + eps
            w = w - lr / (1 - b1**t) * (g * (1 - b1**t)) / denom
        st["s"] = b2 * st["s"] + (1 - b2) * (g - st["m"]) ** 2
        return w

    return rule


@pytest.mark.parametrize("eps", [1e-16, 1e-8])
def test_acprop_paper_centring_and_optax(eps):
    """The default (``center_on_previous_mu=False``) is the authors' code (their ``eps`` is both ``eps``
    and ``eps_root`` here); ``center_on_previous_mu=True`` is Optax's centring on ``m_{t-1}``, which differs."""
    import optax.contrib

    authors = _numpy_trajectory(_acprop_authors(1e-2, eps))
    ours = run_gradtx(contrib.acprop(1e-2, eps=eps, eps_root=eps), STEPS)
    assert max_relative_error(ours, authors) < TOLERANCE
    assert _moved(ours) > 0.1
    optax_form = run_gradtx(contrib.acprop(1e-2, eps=eps, eps_root=eps, center_on_previous_mu=True), STEPS)
    optax_numbers = run_gradtx(optax.contrib.acprop(1e-2, eps=eps, eps_root=eps), STEPS)
    assert max_relative_error(optax_form, optax_numbers) < TOLERANCE
    assert max_relative_error(optax_form, authors) > 1e-3
    scale = run_gradtx(contrib.scale_by_acprop(), 3)
    assert all(np.all(np.isfinite(p["w"])) for p in scale)
