"""``quantized_state`` under ZeRO-1 sharding and inside the vectorized sweep.

The other guarantees of the wrapped transformation (jit equals eager, vmap equals a loop,
``apply_if_finite`` leaving the quantized state bit-identical, checkpoints resuming bit for bit)
are in tests/test_lowbit.py. ZeRO-1 needs 8 CPU devices, which XLA only creates at start-up: this
file, run as a script, is the worker that runs the sharded and the single-device training in a fresh
process (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, float32) and prints the comparison
as JSON.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_distributed import eight_device_results

import gradtx
from gradtx.sweep import config_grid, loss_curve, sweep

STEPS = 6
# Small leaves and blocks so that the test model's weights are quantized and each device's
# shard of a quantized leaf holds whole blocks.
LOW_BIT = dict(min_size=256, block_size=64)


def mlp_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(16, 64)) * 0.25, jnp.float32),
        "b1": jnp.zeros(64, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(64, 8)) * 0.125, jnp.float32),
    }


def mlp_loss(params, x, y):
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]
    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 8) * jax.nn.log_softmax(logits), axis=-1))


def mlp_data(seed=1, rows=64):
    rng = np.random.default_rng(seed)
    return np.asarray(rng.normal(size=(rows, 16)), np.float32), np.asarray(rng.integers(0, 8, size=rows))


def is_quantized(node):
    return isinstance(node, gradtx.QuantizedArray)


def quantized_nodes(state):
    return [node for node in jax.tree.leaves(state, is_leaf=is_quantized) if is_quantized(node)]


# ---------------------------------------------------------------------------------------------
# The 8-device worker.


def run_zero1_checks() -> None:
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from gradtx.distributed import bytes_per_device, replicate, shard_batch, zero1

    assert jax.device_count() == 8, jax.devices()
    results = {}
    for name, optimizer in {
        "adamw_8bit": gradtx.adamw_8bit(1e-2, **LOW_BIT),
        "adamw_4bit": gradtx.adamw_4bit(1e-2, min_size=256, block_size=16),
    }.items():

        def fit(transform, params, state, x, y):
            @jax.jit
            def step(params, state, x, y):
                updates, state = transform.update(jax.grad(mlp_loss)(params, x, y), state, params)
                return gradtx.apply_updates(params, updates), state

            for _ in range(STEPS):
                params, state = jax.block_until_ready(step(params, state, x, y))
            return params, state

        x, y = mlp_data()
        params = mlp_params()
        reference, reference_state = fit(optimizer, params, optimizer.init(params), jnp.asarray(x), jnp.asarray(y))
        for axis_type in (AxisType.Explicit, AxisType.Auto):
            key = f"{name}_{axis_type.name.lower()}"
            mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
            with jax.set_mesh(mesh):
                replicated = replicate(params, mesh)
                sharded = zero1(optimizer, mesh, "data")
                state = jax.jit(sharded.init)(replicated)
                everywhere = NamedSharding(mesh, P())
                full = jax.tree.map(
                    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=everywhere),
                    jax.eval_shape(optimizer.init, replicated),
                )
                trained, new_state = fit(sharded, replicated, state, *shard_batch((x, y), mesh, "data"))
            quantized = quantized_nodes(new_state)
            results[key] = {
                "bytes_replicated": bytes_per_device(full),
                "bytes_zero1": bytes_per_device(new_state),
                "quantized_leaves": len(quantized),
                "codes_sharded": all("data" in str(node.codes.sharding.spec) for node in quantized),
                "params_replicated": all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(trained)),
                "params_max_abs_difference": max(
                    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(reference))
                ),
                "codes_equal_fraction": float(
                    np.mean(
                        np.concatenate(
                            [
                                np.asarray(a.codes) == np.asarray(b.codes)
                                for a, b in zip(
                                    quantized,
                                    quantized_nodes(reference_state),
                                )
                            ]
                        )
                    )
                ),
            }
    print("RESULTS " + json.dumps(results), flush=True)


@pytest.fixture(scope="module")
def zero1_results():
    return eight_device_results(__file__, "zero1")


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_zero1_shards_the_quantized_state_and_trains_like_one_device(zero1_results, bits, axis_type):
    result = zero1_results[f"adamw_{bits}bit_{axis_type}"]
    assert result["quantized_leaves"] == 4  # mu and nu of w1 and w2
    assert result["codes_sharded"] and result["params_replicated"]
    # Codes are 1/8 per device; what stays replicated is small (biases, counts, signs).
    assert result["bytes_zero1"] < 0.3 * result["bytes_replicated"]
    # Elementwise arithmetic and exact maxima on shards of whole blocks: the same codes and
    # parameters as on one device (up to rounding where XLA fuses a multiply-add differently).
    assert result["codes_equal_fraction"] > 0.999
    assert result["params_max_abs_difference"] < 1e-6


# ---------------------------------------------------------------------------------------------
# The vectorized sweep.


def test_sweep_over_a_quantized_optimizer_equals_separate_runs():
    x, y = (jnp.asarray(a) for a in mlp_data())
    loss = lambda params: mlp_loss(params, x, y)

    def train(config):
        optimizer = gradtx.adamw_8bit(config["learning_rate"], weight_decay=config["weight_decay"], **LOW_BIT)
        return loss_curve(optimizer, loss, mlp_params(), 20)[1]

    configs = config_grid(learning_rate=[3e-3, 3e-2], weight_decay=[0.0, 1e-2])
    result = sweep(train, configs)
    run_one = jax.jit(train)
    for k in range(4):
        single = run_one({name: values[k] for name, values in configs.items()})
        np.testing.assert_allclose(result.curves[k], single, rtol=2e-6)
    assert result.curves[:, -1].max() < result.curves[:, 0].min()  # every configuration trains
    assert result.best_config["learning_rate"] == 3e-2


if __name__ == "__main__" and sys.argv[1:2] == ["zero1"]:
    run_zero1_checks()
