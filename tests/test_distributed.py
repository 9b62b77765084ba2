"""Sharded optimizer state, ZeRO-1, batch norm across devices, and data parallelism across processes.

The multi-device checks need 8 CPU devices, which XLA only creates at start-up
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``): this file, run as a script, is the worker
that performs them in a fresh process and prints its measurements as JSON. The multi-process check
launches ``examples/data_parallel.py`` twice (2 processes, gloo collectives) and compares it with
the same script run in one process on 2 devices (bit for bit) and on 1 (to rounding). All
subprocesses start together, once, so they overlap.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.distributed import (
    bytes_per_device,
    init_sharded,
    replicate,
    shard_batch,
    state_shardings,
    zero1,
    zero1_spec,
)

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE = REPOSITORY / "examples" / "data_parallel.py"
STEPS = 10
EXAMPLE_STEPS = 30
TIMEOUT = 300


# ------------------------------------------------------------------------------------------------
# The 8-device worker (runs in a subprocess, float32, x64 off).


def mlp_params(seed=0, width=64):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(16, width)) * 0.25, jnp.float32),
        "b1": jnp.zeros(width, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(width, 8)) * 0.125, jnp.float32),
        "b2": jnp.zeros(8, jnp.float32),
    }


def mlp_data(seed=1, rows=64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(rows, 16)), jnp.float32), jnp.asarray(rng.integers(0, 8, size=rows))


def mlp_loss(params, x, y):
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 8) * jax.nn.log_softmax(logits), axis=-1))


def fit(optimizer, params, state, x, y, steps=STEPS):
    @jax.jit
    def step(params, state, x, y):
        updates, state = optimizer.update(jax.grad(mlp_loss)(params, x, y), state, params)
        return gradtx.apply_updates(params, updates), state

    for _ in range(steps):
        # One step in flight at a time: XLA:CPU's in-process all-reduce can deadlock when many
        # multi-device steps are queued on a 2-core host.
        params, state = jax.block_until_ready(step(params, state, x, y))
    return params, state


def max_relative_difference(tree, reference):
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference))
    )


def same_layout(a, b):
    return all(x.sharding.is_equivalent_to(y.sharding, x.ndim) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def check_sharded_like_params(results, optimizer, reference):
    """Data x model parallel (Auto axes): state follows the parameters; abstract init allocates nothing."""
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}
    params, (x, y) = mlp_params(), mlp_data()
    sharded = {name: jax.device_put(value, NamedSharding(mesh, specs[name])) for name, value in params.items()}
    abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), sharded)
    abstract_state = init_sharded(optimizer, abstract_params)
    state = init_sharded(optimizer, sharded)
    adam_state = state[1][0]
    results["abstract_is_abstract"] = all(
        isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is not None for leaf in jax.tree.leaves(abstract_state)
    )
    results["abstract_bytes_match"] = bytes_per_device(abstract_state) == bytes_per_device(state)
    results["eval_shape_init_shapes"] = [
        list(leaf.shape) for leaf in jax.tree.leaves(jax.eval_shape(optimizer.init, abstract_params))
    ] == [list(leaf.shape) for leaf in jax.tree.leaves(state)]
    results["moments_follow_params"] = same_layout(adam_state.mu, sharded) and same_layout(adam_state.nu, sharded)
    batch = (jax.device_put(x, NamedSharding(mesh, P("data"))), jax.device_put(y, NamedSharding(mesh, P("data"))))
    trained, new_state = fit(optimizer, sharded, state, *batch)
    results["sharded_vs_unsharded"] = max_relative_difference(trained, reference)
    results["state_keeps_layout"] = same_layout(new_state[1][0].mu, sharded) and same_layout(trained, sharded)


def check_zero1(results, axis_type, key, optimizer, reference):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    params, (x, y) = mlp_params(), mlp_data()
    with jax.set_mesh(mesh):
        replicated = replicate(params, mesh)
        batch = shard_batch((np.asarray(x), np.asarray(y)), mesh, "data")
        sharded_optimizer = zero1(optimizer, mesh, "data")
        zero_state = jax.jit(sharded_optimizer.init)(replicated)
        everywhere = NamedSharding(mesh, P())
        replicated_state = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=everywhere),
            jax.eval_shape(optimizer.init, replicated),
        )
        results[f"{key}_bytes_replicated"] = bytes_per_device(replicated_state)
        results[f"{key}_bytes_zero1"] = bytes_per_device(zero_state)
        trained, new_state = fit(sharded_optimizer, replicated, zero_state, *batch)
    results[f"{key}_vs_unsharded"] = max_relative_difference(trained, reference)
    results[f"{key}_params_replicated"] = all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(trained))
    results[f"{key}_state_specs"] = sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves(new_state)})


def check_batch_norm(results):
    from gradtx import nn

    if not hasattr(nn, "batch_norm"):
        results["batch_norm"] = "gradtx.nn.batch_norm does not exist"
        return
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    layer = nn.batch_norm(6, momentum=0.9)
    params, state = layer.init(jax.random.key(0))
    params = {"scale": jnp.linspace(0.5, 1.5, 6), "bias": jnp.linspace(-1.0, 1.0, 6)}
    x = jnp.asarray(np.random.default_rng(2).normal(loc=3.0, scale=2.0, size=(64, 6)), jnp.float32)
    target = jnp.asarray(np.random.default_rng(3).normal(size=(64, 6)), jnp.float32)

    def loss(params, state, x, target, axis_name):
        y, new_state = layer.apply(params, state, x, train=True, axis_name=axis_name)
        local = jnp.mean((y - target) ** 2)
        total = local if axis_name is None else jax.lax.pmean(local, axis_name)
        return total, (y, new_state)

    full_grads, (full_y, full_state) = jax.jit(jax.grad(loss, has_aux=True), static_argnums=4)(
        params, state, x, target, None
    )

    @jax.jit
    @jax.shard_map(mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), (P("data"), P())))
    def per_device(params, state, x, target):
        return jax.grad(loss, has_aux=True)(params, state, x, target, "data")

    grads, (y, new_state) = per_device(params, state, x, target)
    results["batch_norm_output"] = max_relative_difference(y, full_y)
    results["batch_norm_running_stats"] = max_relative_difference(new_state, full_state)
    results["batch_norm_grads"] = max_relative_difference(grads, full_grads)
    local_y, _ = jax.jit(lambda x: layer.apply(params, state, x[:8], train=True))(x)
    results["batch_norm_local_stats_differ"] = max_relative_difference(local_y, full_y[:8])


MOMENT_OPTIMIZERS = ["adadelta", "adagrad", "adam", "adamax", "adamw", "amsgrad", "nadam", "rmsprop", "sgd"]


def check_explicit_init_keeps_types(results):
    """Plain ``init`` on Explicit-axis parameters: moments carry the parameters' shardings, so the
    state's types (shardings included) are the same before and after a jitted update."""
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit, AxisType.Explicit))
    specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}
    params = mlp_params()
    with jax.set_mesh(mesh):
        sharded = {name: jax.device_put(value, NamedSharding(mesh, specs[name])) for name, value in params.items()}
        grads = jax.tree.map(lambda p: 0.1 * jnp.sin(p) + 0.01, sharded)  # elementwise: sharded like p
        for name in MOMENT_OPTIMIZERS:
            make = getattr(gradtx, name)
            optimizer = make(1e-2, momentum=0.9) if name == "sgd" else make(1e-2)
            state = optimizer.init(sharded)
            _, new_state = jax.jit(optimizer.update)(grads, state, sharded)
            before = [str(jax.typeof(leaf)) for leaf in jax.tree.leaves(state)]
            after = [str(jax.typeof(leaf)) for leaf in jax.tree.leaves(new_state)]
            # Every state leaf shaped like a parameter carries that parameter's sharding.
            by_shape = {tuple(v.shape): v.sharding for v in sharded.values()}
            moments = [
                leaf.sharding.is_equivalent_to(by_shape[tuple(leaf.shape)], leaf.ndim)
                for leaf in jax.tree.leaves(state) if tuple(leaf.shape) in by_shape and leaf.ndim > 0
            ]
            results[f"explicit_init_{name}"] = {"types_equal": before == after, "moments_sharded": all(moments),
                                                "num_moments": len(moments)}


def run_example_references(path, steps):
    """``examples/data_parallel.py`` in this one process, on 2 of its devices and on 1."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("data_parallel", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    two = example.train(jax.make_mesh((2,), ("data",), devices=jax.devices()[:2]), steps)
    one = example.train(jax.make_mesh((1,), ("data",), devices=jax.devices()[:1]), steps)
    np.savez(path, **{f"two_{k}": v for k, v in two.items()}, **{f"one_{k}": v for k, v in one.items()})


def run_eight_device_checks(reference_path, steps):
    assert jax.device_count() == 8, jax.devices()
    results = {"device_count": jax.device_count()}
    # AdamW needs the parameters in its update (weight decay): they are sharded too.
    optimizer = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2, weight_decay=1e-3))
    reference, _ = fit(optimizer, mlp_params(), optimizer.init(mlp_params()), *mlp_data())
    check_sharded_like_params(results, optimizer, reference)
    check_zero1(results, AxisType.Explicit, "zero1_explicit", optimizer, reference)
    check_zero1(results, AxisType.Auto, "zero1_auto", optimizer, reference)
    check_batch_norm(results)
    check_explicit_init_keeps_types(results)
    run_example_references(reference_path, steps)
    print("RESULTS " + json.dumps(results), flush=True)


# ------------------------------------------------------------------------------------------------
# The tests.


def subprocess_env(device_count):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count}")
    # Importable from a source checkout too, not only from an installed gradtx.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return env


def eight_device_results(script, mode: str) -> dict:
    """Runs ``python script mode`` on 8 CPU devices and returns the JSON its worker prints after ``RESULTS``."""
    process = subprocess.run(
        [sys.executable, str(script), mode], env=subprocess_env(8), cwd=REPOSITORY,
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert process.returncode == 0, f"exit {process.returncode}:\n{process.stdout[-2000:]}\n{process.stderr[-4000:]}"
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Starts every subprocess at once: the 8-device worker (which also runs the example in one
    process, for reference) and the two data-parallel processes; tests wait for what they need."""
    directory = tmp_path_factory.mktemp("distributed")
    spawn = lambda args, devices: subprocess.Popen(
        [sys.executable, *args], env=subprocess_env(devices), cwd=REPOSITORY,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    coordinator = f"127.0.0.1:{free_port()}"
    steps = str(EXAMPLE_STEPS)
    processes = {
        "eight": spawn([__file__, "eight-devices", str(directory / "reference.npz"), steps], 8),
        "rank0": spawn([str(EXAMPLE), "--num-processes", "2", "--process-id", "0", "--coordinator", coordinator,
                        "--steps", steps, "--out", str(directory / "two_processes.npz")], 1),
        "rank1": spawn([str(EXAMPLE), "--num-processes", "2", "--process-id", "1", "--coordinator", coordinator,
                        "--steps", steps], 1),
    }
    yield processes, directory
    for process in processes.values():
        if process.poll() is None:
            process.kill()


def finished(process):
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == 0, f"exit {process.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return stdout


@pytest.fixture(scope="module")
def eight_devices(launched):
    processes, _ = launched
    if not hasattr(processes["eight"], "results"):
        line = next(line for line in finished(processes["eight"]).splitlines() if line.startswith("RESULTS "))
        processes["eight"].results = json.loads(line[len("RESULTS "):])
    return processes["eight"].results


def test_state_is_sharded_like_the_parameters(eight_devices):
    assert eight_devices["device_count"] == 8
    assert eight_devices["moments_follow_params"]
    assert eight_devices["abstract_is_abstract"] and eight_devices["abstract_bytes_match"]
    assert eight_devices["eval_shape_init_shapes"]
    assert eight_devices["state_keeps_layout"]
    assert eight_devices["sharded_vs_unsharded"] <= 1e-5


@pytest.mark.parametrize("key", ["zero1_explicit", "zero1_auto"])
def test_zero1_divides_state_bytes_by_the_axis_size(eight_devices, key):
    replicated, sharded = eight_devices[f"{key}_bytes_replicated"], eight_devices[f"{key}_bytes_zero1"]
    # Every parameter-shaped leaf divides by 8 except the 8-entry output bias, which is split
    # over 8 too; only the int32 step counters stay whole.
    assert replicated / sharded > 7.9, (replicated, sharded)
    assert eight_devices[f"{key}_params_replicated"]
    assert any("'data'" in spec for spec in eight_devices[f"{key}_state_specs"])
    assert eight_devices[f"{key}_vs_unsharded"] <= 1e-5


@pytest.mark.parametrize("name", MOMENT_OPTIMIZERS)
def test_init_on_explicit_sharding_gives_the_state_type_of_update(eight_devices, name):
    """Optax's init follows the parameters' sharding; gradtx's did not for moment-based methods."""
    result = eight_devices[f"explicit_init_{name}"]
    assert result == {"types_equal": True, "moments_sharded": True, "num_moments": result["num_moments"]}
    assert result["num_moments"] >= 4  # at least one buffer per parameter was checked


def test_batch_norm_statistics_across_devices(eight_devices):
    assert eight_devices.get("batch_norm") != "gradtx.nn.batch_norm does not exist"
    assert eight_devices["batch_norm_output"] <= 1e-5
    assert eight_devices["batch_norm_running_stats"] <= 1e-5
    assert eight_devices["batch_norm_grads"] <= 1e-5
    assert eight_devices["batch_norm_local_stats_differ"] > 1e-2  # without axis_name the result differs


def test_two_processes_equal_one(launched, eight_devices):
    processes, directory = launched
    output = finished(processes["rank0"])
    finished(processes["rank1"])
    assert "2 process(es), 2 device(s)" in output
    distributed = np.load(directory / "two_processes.npz")
    reference = np.load(directory / "reference.npz")
    assert distributed["losses"][-1] < 0.5 * distributed["losses"][0]
    for name in distributed.files:
        # The same partitioned program on 2 devices of one process: the same bits.
        np.testing.assert_array_equal(distributed[name], reference["two_" + name], err_msg=name)
        # One device sums the batch in another order: equal to float32 rounding.
        one = reference["one_" + name]
        assert np.max(np.abs(distributed[name] - one)) <= 1e-5 * np.max(np.abs(one)), name


def test_single_device_helpers():
    assert zero1_spec((64, 16), 8, "data") == P("data")
    assert zero1_spec((10, 16), 8, "data") == P(None, "data")
    assert zero1_spec((10,), 8, "data") == P()
    assert zero1_spec((), 8, "data") == P()
    params = {"w": jnp.ones((4, 2), jnp.float32)}
    # init on abstract parameters: shapes and dtypes of the state, nothing allocated.
    huge = {"w": jax.ShapeDtypeStruct((4096, 4096), jnp.float32)}
    abstract = jax.eval_shape(gradtx.adam(1e-3, mu_dtype=jnp.bfloat16).init, huge)
    assert abstract[0].mu["w"] == jax.ShapeDtypeStruct((4096, 4096), jnp.bfloat16)
    with pytest.raises(ValueError, match="NamedSharding"):
        state_shardings(gradtx.adam(1e-3), jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params))
    assert bytes_per_device(gradtx.adam(1e-3).init(params)) == 2 * 4 * 2 * 4 + 2 * 4
    mesh = jax.make_mesh((1,), ("data",))
    with pytest.raises(ValueError, match="not 'batch'"):
        zero1(gradtx.adam(1e-3), mesh, "batch")
    placed = shard_batch({"x": np.ones((4, 3), np.float32)}, mesh)
    assert placed["x"].shape == (4, 3) and placed["x"].sharding.spec == P("data")


if __name__ == "__main__" and sys.argv[1:2] == ["eight-devices"]:
    run_eight_device_checks(sys.argv[2], int(sys.argv[3]))
