"""Lookahead against Optax (same slow and fast parameters) and against the paper's nested loops."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import softmax_problem as sp

import gradtx
from gradtx.lookahead import LookaheadParams, LookaheadState, lookahead

STEPS = 120


def record(fast, slow):
    return {**{"fast_" + k: v for k, v in fast.items()}, **{"slow_" + k: v for k, v in slow.items()}}


def run(optimizer, params_type, steps=STEPS):
    """Trajectory of (fast, slow); slow starts away from fast so that both matter."""
    start = sp.initial_params()
    params = params_type(fast=start, slow=jax.tree.map(lambda x: 0.5 * x, start))
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(sp.grad(params.fast), state, params)
        return gradtx.apply_updates(params, updates), state

    trajectory = []
    for _ in range(steps):
        params, state = step(params, state)
        trajectory.append(record(params.fast, params.slow))
    return trajectory, state


@pytest.mark.parametrize("inner", ["sgd", "adam"])
@pytest.mark.parametrize("reset_state", [False, True])
def test_matches_optax(inner, reset_state):
    make = {"sgd": lambda m: m.sgd(0.3, momentum=0.5), "adam": lambda m: m.adam(0.02)}[inner]
    ours, state = run(lookahead(make(gradtx), 5, 0.5, reset_state), LookaheadParams)
    theirs, _ = run(optax.lookahead(make(optax), 5, 0.5, reset_state), optax.LookaheadParams)
    assert sp.max_relative_error(ours, theirs) < 1e-8
    assert isinstance(state, LookaheadState) and LookaheadState._fields == optax.LookaheadState._fields
    assert int(state.steps_since_sync) == STEPS % 5


def test_follows_the_papers_nested_loops():
    """Zhang et al. 2019, Algorithm 1 with SGD inside: k fast steps from the slow weights, then one slow step."""
    k, alpha, lr = 4, 0.6, 0.3
    ours, _ = run(lookahead(gradtx.sgd(lr), k, alpha), LookaheadParams, steps=40)
    slow = jax.tree.map(lambda x: 0.5 * x, sp.initial_params())
    fast = sp.initial_params()  # the first round starts from the given fast weights
    reference = []
    for _ in range(10):
        for j in range(k):
            fast = jax.tree.map(lambda w, g: w - lr * g, fast, sp.grad(fast))
            if j < k - 1:
                reference.append(record(fast, slow))
        slow = jax.tree.map(lambda s, f: s + alpha * (f - s), slow, fast)
        fast = slow
        reference.append(record(fast, slow))
    assert sp.max_relative_error(ours, reference) < 1e-10
    # After each synchronisation fast and slow agree.
    for t in range(k - 1, 40, k):
        np.testing.assert_allclose(ours[t]["fast_w"], ours[t]["slow_w"], rtol=1e-12)


def test_init_accepts_fast_params_alone_and_bad_input():
    params = sp.initial_params()
    transform = lookahead(gradtx.adam(0.01), 3, 0.5)
    state = transform.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(transform.init(LookaheadParams.init_synced(params)))
    synced = LookaheadParams.init_synced(params)
    assert synced.fast is params and synced.slow is params
    with pytest.raises(TypeError, match="LookaheadParams"):
        transform.update(sp.grad(params), state, params)
    with pytest.raises(ValueError, match=r"\['w'\]"):
        transform.update({"b": params["b"], "w": params["w"][:3]}, state, synced)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="sync_period"):
            lookahead(gradtx.sgd(0.1), bad, 0.5)
    for bad in (1.5, True):
        with pytest.raises(TypeError, match="sync_period"):
            lookahead(gradtx.sgd(0.1), bad, 0.5)
    with pytest.raises(ValueError, match="slow_step_size"):
        lookahead(gradtx.sgd(0.1), 2, -0.5)
    # dtypes of float32 parameters are kept.
    params32 = LookaheadParams.init_synced({"w": jnp.ones(3, jnp.float32)})
    updates, _ = transform.update({"w": jnp.ones(3, jnp.float32)}, transform.init(params32), params32)
    assert updates.fast["w"].dtype == jnp.float32 and updates.slow["w"].dtype == jnp.float32
