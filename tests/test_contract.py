"""The contract every transformation keeps: jit equals eager, any pytree, dtypes kept, vmap equals a loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

TRANSFORMS = {
    "identity": lambda: gradtx.identity(),
    "scale": lambda: gradtx.scale(0.5),
    "scale_by_learning_rate": lambda: gradtx.scale_by_learning_rate(0.1),
    "scale_by_learning_rate_schedule": lambda: gradtx.scale_by_learning_rate(lambda t: 0.1 / (1 + t)),
    "trace": lambda: gradtx.trace(0.9),
    "trace_nesterov": lambda: gradtx.trace(0.9, nesterov=True),
    "heavy_ball": lambda: gradtx.heavy_ball(0.1, 0.9),
    "ema": lambda: gradtx.ema(0.9),
    "scale_by_rms": lambda: gradtx.scale_by_rms(),
    "scale_by_rms_centered": lambda: gradtx.scale_by_rms(centered=True),
    "scale_by_adagrad": lambda: gradtx.scale_by_adagrad(),
    "scale_by_adadelta": lambda: gradtx.scale_by_adadelta(),
    "scale_by_adam": lambda: gradtx.scale_by_adam(),
    "scale_by_adam_nesterov": lambda: gradtx.scale_by_adam(nesterov=True),
    "scale_by_adamax": lambda: gradtx.scale_by_adamax(),
    "scale_by_amsgrad": lambda: gradtx.scale_by_amsgrad(),
    "scale_by_sign": lambda: gradtx.scale_by_sign(),
    "scale_by_rprop": lambda: gradtx.scale_by_rprop(0.01),
    "add_decayed_weights": lambda: gradtx.add_decayed_weights(0.1),
    "clip": lambda: gradtx.clip(0.5),
    "clip_by_global_norm": lambda: gradtx.clip_by_global_norm(0.5),
    "adaptive_grad_clip": lambda: gradtx.adaptive_grad_clip(0.1),
    "clip_by_block_rms": lambda: gradtx.clip_by_block_rms(0.1),
    "centralize": lambda: gradtx.centralize(),
    "normalize_by_update_norm": lambda: gradtx.normalize_by_update_norm(-0.1),
    "keep_params_nonnegative": lambda: gradtx.chain(gradtx.sgd(0.1), gradtx.keep_params_nonnegative()),
    "sgd": lambda: gradtx.sgd(0.1),
    "sgd_momentum": lambda: gradtx.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: gradtx.adagrad(0.1),
    "rmsprop": lambda: gradtx.rmsprop(0.01, centered=True, momentum=0.9),
    "adadelta": lambda: gradtx.adadelta(),
    "adam": lambda: gradtx.adam(1e-3),
    "adam_bf16_moments": lambda: gradtx.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
    "adamw": lambda: gradtx.adamw(1e-3),
    "adamax": lambda: gradtx.adamax(1e-3),
    "nadam": lambda: gradtx.nadam(1e-3),
    "amsgrad": lambda: gradtx.amsgrad(1e-3),
    "rprop": lambda: gradtx.rprop(1e-3),
    "sign_sgd": lambda: gradtx.sign_sgd(1e-3),
    "masked_adam": lambda: gradtx.masked(gradtx.adam(1e-3), lambda p: jax.tree.map(lambda x: x.ndim > 0, p)),
    "apply_every": lambda: gradtx.chain(gradtx.apply_every(2), gradtx.sgd(0.1)),
    "multi_steps_adam": lambda: gradtx.MultiSteps(gradtx.adam(1e-3), 2).gradient_transformation(),
    "multi_steps_skip_not_finite": lambda: gradtx.MultiSteps(
        gradtx.sgd(0.1, momentum=0.9), 2, should_skip_update_fn=gradtx.skip_not_finite
    ).gradient_transformation(),
    "conditionally_mask_adam": lambda: gradtx.conditionally_mask(gradtx.adam(1e-3), lambda step: step % 2 == 0),
    "conditionally_transform_adam": lambda: gradtx.chain(
        gradtx.conditionally_transform(gradtx.scale_by_adam(), lambda step: step % 2 == 1), gradtx.scale(-1e-3)
    ),
    "monitor_then_adam": lambda: gradtx.chain(
        gradtx.monitor({"norm": gradtx.tree_global_norm, "ema": gradtx.measure_with_ema(gradtx.tree_global_norm, 0.9)}),
        gradtx.adam(1e-3),
    ),
}


def nested_params(dtype, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "layers": [
            jax.random.normal(keys[0], (3, 4), dtype),
            None,
            (jax.random.normal(keys[1], (4,), dtype), jnp.asarray(0.7, dtype)),
        ],
        "head": {"kernel": jax.random.normal(keys[2], (2, 2), dtype)},
    }


def gradients(params, step):
    return jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)).astype(p.dtype) + 0.1, params)


def train(transform, params, steps, jit):
    update = jax.jit(transform.update) if jit else transform.update
    state = transform.init(params)
    for step in range(steps):
        updates, state = update(gradients(params, step), state, params)
        params = gradtx.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_jit_equals_eager_on_nested_tree_with_none_and_scalars(name):
    params = nested_params(jnp.float32)
    eager_params, eager_state = train(TRANSFORMS[name](), params, 3, jit=False)
    jit_params, jit_state = train(TRANSFORMS[name](), params, 3, jit=True)
    assert jax.tree.structure(eager_params) == jax.tree.structure(params)
    assert eager_params["layers"][1] is None
    # bfloat16 moments round differently once XLA fuses the arithmetic: compare at bf16 precision.
    rtol = 1e-2 if "bf16" in name else 2e-6
    for a, b in zip(jax.tree.leaves((eager_params, eager_state)), jax.tree.leaves((jit_params, jit_state))):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_params_and_state_keep_their_dtypes(name, dtype):
    transform = TRANSFORMS[name]()
    params = nested_params(dtype)
    initial_state_dtypes = jax.tree.map(lambda x: jnp.result_type(x), transform.init(params))
    new_params, new_state = train(transform, params, 2, jit=True)
    assert jax.tree.map(lambda x: x.dtype, new_params) == jax.tree.map(lambda x: x.dtype, params)
    assert jax.tree.map(lambda x: jnp.result_type(x), new_state) == initial_state_dtypes
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_params))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_vmap_over_a_batch_of_params_equals_a_loop(name):
    transform = TRANSFORMS[name]()
    batch = [nested_params(jnp.float32, seed) for seed in range(3)]
    batch = [jax.tree.map(lambda x: x, p) for p in batch]
    for p in batch:
        p["layers"][1] = None
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)

    def two_steps(params):
        state = transform.init(params)
        for step in range(2):
            updates, state = transform.update(gradients(params, step), state, params)
            params = gradtx.apply_updates(params, updates)
        return params

    vmapped = jax.jit(jax.vmap(two_steps))(stacked)
    for index, params in enumerate(batch):
        looped = jax.jit(two_steps)(params)
        for a, b in zip(jax.tree.leaves(looped), jax.tree.leaves(jax.tree.map(lambda x: x[index], vmapped))):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6 * max(1.0, float(jnp.max(jnp.abs(b)))))


SCHEDULABLE = {
    "sgd": (gradtx.sgd, {"learning_rate": 0.1, "momentum": 0.9}),
    "sgd_velocity": (lambda **kw: gradtx.sgd(**kw, velocity_form=True), {"learning_rate": 0.1, "momentum": 0.9}),
    "adagrad": (gradtx.adagrad, {"learning_rate": 0.1}),
    "rmsprop": (gradtx.rmsprop, {"learning_rate": 0.01, "decay": 0.9, "momentum": 0.5}),
    "adadelta": (gradtx.adadelta, {"learning_rate": 0.5, "rho": 0.9, "weight_decay": 0.01}),
    "adam": (gradtx.adam, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999}),
    "adamw": (gradtx.adamw, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "weight_decay": 0.01}),
    "adamax": (gradtx.adamax, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999}),
    "nadam": (gradtx.nadam, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999}),
    "amsgrad": (gradtx.amsgrad, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999}),
    "sign_sgd": (gradtx.sign_sgd, {"learning_rate": 1e-3}),
    "ema": (gradtx.ema, {"decay": 0.9}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULABLE))
def test_every_scaling_hyperparameter_takes_a_schedule(name):
    # A constant schedule must give exactly the float's numbers; a varying one must change them.
    make, floats = SCHEDULABLE[name]
    constant = {k: (lambda v: (lambda t: jnp.asarray(v, jnp.float32)))(v) for k, v in floats.items()}
    varying = {k: (lambda v: (lambda t: jnp.asarray(v, jnp.float32) * 0.5 ** (t % 2)))(v) for k, v in floats.items()}
    params = nested_params(jnp.float32)
    with_floats, _ = train(make(**floats), params, 3, jit=True)
    with_constant, _ = train(make(**constant), params, 3, jit=True)
    with_varying, _ = train(make(**varying), params, 3, jit=True)
    for a, b in zip(jax.tree.leaves(with_floats), jax.tree.leaves(with_constant)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(
        not np.allclose(a, b, rtol=1e-6) for a, b in zip(jax.tree.leaves(with_floats), jax.tree.leaves(with_varying))
    )
