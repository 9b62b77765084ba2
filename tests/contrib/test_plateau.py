"""reduce_on_plateau against Optax and torch.optim.lr_scheduler.ReduceLROnPlateau."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from contrib_helpers import relative_gap, run_with_value
from softmax_problem import initial_params

import gradtx
from gradtx import contrib

STEPS = 150


def _losses(num=200, seed=0):
    """A loss that falls, then plateaus with noise, then falls again: every branch is taken."""
    rng = np.random.default_rng(seed)
    t = np.arange(num)
    return 1.0 / (1 + 0.05 * t) + 0.02 * rng.normal(size=num) + np.where(t > 120, -0.002 * (t - 120), 0.0)


def _scales(optimizer, values):
    params = {"w": jnp.zeros(3)}
    state = optimizer.init(params)
    step = jax.jit(lambda s, v: optimizer.update(params, s, params, value=v))
    scales, states = [], []
    for v in values:
        _, state = step(state, v)
        scales.append(float(state.scale))
        states.append(state)
    return np.asarray(scales), states


SETTINGS = [
    {},
    {"factor": 0.5, "patience": 3, "cooldown": 2},
    {"factor": 0.5, "patience": 2, "rtol": 0.0, "atol": 1e-3, "min_scale": 0.01},
    {"factor": 0.3, "patience": 2, "cooldown": 1, "accumulation_size": 4},
]


@pytest.mark.parametrize("kwargs", SETTINGS)
def test_matches_optax_state_by_state(kwargs):
    values = _losses()
    ours, our_states = _scales(contrib.reduce_on_plateau(**kwargs), values)
    theirs, their_states = _scales(optax.contrib.reduce_on_plateau(**kwargs), values)
    np.testing.assert_array_equal(ours, theirs)
    assert ours[-1] < 1.0  # the scale was reduced at least once
    for a, b in zip(our_states, their_states):
        assert a._fields == b._fields
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("kwargs", SETTINGS[:3])
def test_matches_torch_with_patience_shifted_by_one(kwargs):
    """torch reduces after patience + 1 bad epochs, this (as Optax and Keras) after patience."""
    torch = pytest.importorskip("torch")
    values = _losses()
    factor, patience = kwargs.get("factor", 0.1), kwargs.get("patience", 10)
    rtol, atol = kwargs.get("rtol", 1e-4), kwargs.get("atol", 0.0)
    parameter = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([parameter], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=factor, patience=patience - 1, threshold=rtol if rtol else atol,
        threshold_mode="rel" if rtol else "abs", cooldown=kwargs.get("cooldown", 0),
        min_lr=kwargs.get("min_scale", 0.0), eps=0.0,
    )
    torch_scales = []
    for v in values:
        scheduler.step(float(v))
        torch_scales.append(opt.param_groups[0]["lr"])
    ours, _ = _scales(contrib.reduce_on_plateau(**kwargs), values)
    np.testing.assert_allclose(ours, torch_scales, rtol=1e-12)


def test_training_with_adam_matches_optax():
    ours = run_with_value(gradtx.chain(gradtx.adam(0.3), contrib.reduce_on_plateau(0.5, patience=3, cooldown=2)), STEPS)
    theirs = run_with_value(
        optax.chain(optax.adam(0.3), optax.contrib.reduce_on_plateau(0.5, patience=3, cooldown=2)), STEPS
    )
    assert relative_gap(ours, theirs) < 1e-8
    assert relative_gap(ours, [initial_params()] * STEPS) > 0.1


def test_needs_value():
    params = initial_params()
    optimizer = contrib.reduce_on_plateau()
    with pytest.raises(ValueError, match="needs the loss"):
        optimizer.update(params, optimizer.init(params), params)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"factor": 1.0}, "factor"), ({"factor": 0.0}, "factor"), ({"rtol": -1.0}, "rtol"),
     ({"rtol": 0.0, "atol": 0.0}, "rtol"), ({"rtol": 2.0}, "rtol"), ({"patience": -1}, "patience")],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        contrib.reduce_on_plateau(**kwargs)
