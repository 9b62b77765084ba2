"""The protocol is Optax's: gradtx inside Optax and Flax, Optax inside gradtx."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from softmax_problem import max_relative_error, run_gradtx

import gradtx


def test_gradtx_transform_inside_optax_chain():
    mixed = optax.chain(optax.clip_by_global_norm(1.0), gradtx.scale_by_adam(), optax.scale(-0.01))
    pure = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.01))
    assert max_relative_error(run_gradtx(mixed, 50), run_gradtx(pure, 50)) < 1e-12


def test_optax_transform_inside_gradtx_chain():
    mixed = gradtx.chain(optax.clip_by_global_norm(1.0), gradtx.adam(0.01))
    pure = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(0.01))
    assert max_relative_error(run_gradtx(mixed, 50), run_gradtx(pure, 50)) < 1e-12


def test_optax_apply_updates_and_multi_steps_accept_gradtx():
    params = {"w": jnp.ones(3)}
    accumulate = optax.MultiSteps(gradtx.sgd(0.1), every_k_schedule=2)
    state = accumulate.init(params)
    for _ in range(2):
        updates, state = accumulate.update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], 0.9, rtol=1e-12)


def test_gradtx_optimizer_as_flax_train_state_tx():
    from flax.training import train_state

    def apply_fn(variables, x):
        return x @ variables["params"]["w"]

    params = {"w": jnp.ones((3, 1))}
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=gradtx.adam(0.1))
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))

    @jax.jit
    def step(state):
        loss = lambda p: jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    reference = gradtx.adam(0.1)
    ref_params, ref_state = params, reference.init(params)
    for _ in range(5):
        state = step(state)
        grads = jax.grad(lambda p: jnp.mean((x @ p["w"] - y) ** 2))(ref_params)
        updates, ref_state = reference.update(grads, ref_state, ref_params)
        ref_params = gradtx.apply_updates(ref_params, updates)
    np.testing.assert_allclose(state.params["w"], ref_params["w"], rtol=1e-12)
    assert int(state.step) == 5
