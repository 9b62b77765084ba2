"""Gradient accumulation: k micro-batches equal one big batch, and the inner update runs once per k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import softmax_problem as sp

import gradtx
from gradtx.accumulation import AccumulationState, accumulate_gradients

K = 4
ROUNDS = 5


def batch_loss(params, x, y):
    """The softmax problem's loss on the rows (x, y): a mean over the batch, plus the L2 term."""
    log_probs = jax.nn.log_softmax(x @ params["w"] + params["b"])
    nll = -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))
    return nll + 0.5 * sp.L2 * jnp.sum(params["w"] ** 2)


def test_k_micro_batches_equal_one_big_batch():
    optimizer = gradtx.adamw(0.05, weight_decay=1e-2)
    accumulated = accumulate_gradients(optimizer, K)
    micro_x, micro_y = sp.X.reshape(K, -1, sp.NUM_FEATURES), sp.Y.reshape(K, -1)
    grad = jax.grad(batch_loss)

    @jax.jit
    def big_step(params, state):
        updates, state = optimizer.update(grad(params, sp.X, sp.Y), state, params)
        return gradtx.apply_updates(params, updates), state

    @jax.jit
    def micro_step(params, state, x, y):
        updates, state = accumulated.update(grad(params, x, y), state, params)
        return gradtx.apply_updates(params, updates), state

    big, big_state = sp.initial_params(), optimizer.init(sp.initial_params())
    micro, micro_state = sp.initial_params(), accumulated.init(sp.initial_params())
    for _ in range(ROUNDS):
        big, big_state = big_step(big, big_state)
        start = micro
        for j in range(K):
            micro, micro_state = micro_step(micro, micro_state, micro_x[j], micro_y[j])
            if j < K - 1:  # parameters do not move inside a round, exactly
                assert all(np.array_equal(micro[name], start[name]) for name in micro)
        for name in big:
            np.testing.assert_allclose(micro[name], big[name], rtol=1e-12, atol=1e-15)
    assert int(micro_state.inner_state[0].step_count) == ROUNDS  # Adam's own counter: once per round


def test_inner_update_runs_once_per_round():
    executed = []

    def counting(inner):
        def update(updates, state, params=None):
            jax.debug.callback(lambda: executed.append(1))  # runs only when this branch executes
            return inner.update(updates, state, params)

        return gradtx.GradientTransformation(inner.init, update)

    accumulated = accumulate_gradients(counting(gradtx.sgd(0.1, momentum=0.9)), 3)
    params = sp.initial_params()
    state = accumulated.init(params)
    step = jax.jit(accumulated.update)
    outputs = []
    for _ in range(7):
        updates, state = step(sp.grad(params), state, params)
        outputs.append(updates)
    jax.effects_barrier()
    assert len(executed) == 2  # micro-steps 3 and 6 of 7
    assert isinstance(state, AccumulationState) and int(state.micro_step) == 1
    for index, updates in enumerate(outputs):
        moved = any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))
        assert moved == (index in (2, 5))


def test_one_micro_batch_is_the_inner_transform_and_dtypes():
    assert sp.max_relative_error(
        sp.run_gradtx(accumulate_gradients(gradtx.sgd(0.1, momentum=0.9), 1), 5),
        sp.run_gradtx(gradtx.sgd(0.1, momentum=0.9), 5),
    ) < 1e-14  # the same arithmetic, up to how XLA fuses it
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = accumulate_gradients(gradtx.sgd(0.1), 2, accumulator_dtype=jnp.float32).init(params)
    assert state.gradient_sum["w"].dtype == jnp.float32
    updates, state = accumulate_gradients(gradtx.sgd(0.1), 2, accumulator_dtype=jnp.float32).update(
        {"w": jnp.full(3, 0.1, jnp.bfloat16)}, state, params
    )
    assert updates["w"].dtype == jnp.bfloat16 and state.gradient_sum["w"].dtype == jnp.float32
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_micro_batches"):
            accumulate_gradients(gradtx.sgd(0.1), bad)
