"""Mechanic against Optax's implementation (written by the paper's authors)."""

import jax
import jax.numpy as jnp
import optax
import optax.contrib
import pytest
from softmax_problem import initial_params, max_relative_error, run_gradtx

import gradtx
from gradtx import contrib

STEPS = 150
TOLERANCE = 1e-8

CASES = {
    "sgd": (lambda: contrib.mechanize(gradtx.sgd(0.1)), lambda: optax.contrib.mechanize(optax.sgd(0.1))),
    "sgd_unit_lr_small_s": (
        lambda: contrib.mechanize(gradtx.sgd(1.0), s_init=1e-8),
        lambda: optax.contrib.mechanize(optax.sgd(1.0), s_init=1e-8),
    ),
    "momentum_options": (
        lambda: contrib.mechanize(gradtx.sgd(0.1, momentum=0.9), weight_decay=0.1, eps=1e-6, num_betas=3),
        lambda: optax.contrib.mechanize(optax.sgd(0.1, momentum=0.9), weight_decay=0.1, eps=1e-6, num_betas=3),
    ),
    # The same (Optax) base optimizer in both: Mechanic amplifies any rounding difference of the
    # base optimizer's steps, so this isolates Mechanic's own arithmetic.
    "adam_base": (
        lambda: contrib.mechanize(optax.adam(1.0)),
        lambda: optax.contrib.mechanize(optax.adam(1.0)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_optax(name):
    ours, theirs = CASES[name]
    trajectory = run_gradtx(ours(), STEPS)
    assert max_relative_error(trajectory, run_gradtx(theirs(), STEPS)) < TOLERANCE
    assert float(jnp.linalg.norm(trajectory[-1]["w"] - initial_params()["w"])) > 0.1


def test_learns_a_scale_and_passes_extra_args():
    params = initial_params()
    optimizer = contrib.mechanize(gradtx.sgd(1.0))
    state = optimizer.init(params)
    assert isinstance(state, contrib.MechanicState) and state.s.shape == (6,)
    g = jax.tree.map(jnp.ones_like, params)
    _, state = optimizer.update(g, state, params, value=1.0)  # extra args are accepted
    assert int(state.count) == 1


def test_reference_point_is_taken_at_the_first_update():
    """Parameters loaded after init (a checkpoint) are the start, not the init-time ones."""
    params = initial_params()
    optimizer = contrib.mechanize(gradtx.sgd(1.0))
    state = optimizer.init(jax.tree.map(jnp.zeros_like, params))
    _, state = optimizer.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(state.x0), jax.tree.leaves(params)))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"weight_decay": -1.0}, "weight_decay"), ({"eps": 0.0}, "eps"), ({"s_init": 0.0}, "s_init"),
     ({"num_betas": 0}, "num_betas")],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        contrib.mechanize(gradtx.sgd(1.0), **kwargs)


def test_needs_params():
    params = initial_params()
    optimizer = contrib.mechanize(gradtx.sgd(1.0))
    with pytest.raises(ValueError, match="needs the parameters"):
        optimizer.update(params, optimizer.init(params))
