"""Data-parallel training of an MLP across processes (and hosts) with JAX's distributed runtime.

Every process runs this same script. Each one holds the parameters (replicated) and its own rows
of every batch; ``jax.jit`` compiles one program for the global mesh of all processes' devices,
and the gradient of the mean loss is all-reduced across them by XLA's collectives (gloo on CPU,
NCCL on GPU). The result is the training of one process on the whole batch.

One process (all local devices)::

    python examples/data_parallel.py --out single.npz

Two processes on this machine (CPU collectives over gloo)::

    python examples/data_parallel.py --num-processes 2 --process-id 0 --coordinator 127.0.0.1:23456 --out two.npz &
    python examples/data_parallel.py --num-processes 2 --process-id 1 --coordinator 127.0.0.1:23456

Several hosts: the same commands with the coordinator's address (host 0's IP and a free port)
and one process id per host; see ``docs/distributed.md``. ``--zero1`` also shards the Adam
state over the processes (``gradtx.zero1``). Process 0 writes the final parameters and the loss
curve to ``--out``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import gradtx
from gradtx.distributed import replicate, shard_batch, zero1

NUM_FEATURES, HIDDEN, NUM_CLASSES = 16, 32, 4
GLOBAL_BATCH = 256


def make_dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed synthetic classification set: labels of a random teacher network plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(GLOBAL_BATCH, NUM_FEATURES)).astype(np.float32)
    teacher = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    y = np.argmax(np.tanh(x @ teacher) + 0.3 * rng.normal(size=(GLOBAL_BATCH, NUM_CLASSES)), axis=1)
    return x, y.astype(np.int32)


def init_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {
        "w1": (rng.normal(size=(NUM_FEATURES, HIDDEN)) * np.sqrt(2.0 / NUM_FEATURES)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.normal(size=(HIDDEN, NUM_CLASSES)) * np.sqrt(1.0 / HIDDEN)).astype(np.float32),
        "b2": np.zeros(NUM_CLASSES, np.float32),
    }


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    one_hot = jax.nn.one_hot(y, NUM_CLASSES, dtype=logits.dtype)
    return -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(logits), axis=-1))


def local_rows(array: np.ndarray) -> np.ndarray:
    """This process's contiguous share of the global batch."""
    per_process = array.shape[0] // jax.process_count()
    start = jax.process_index() * per_process
    return array[start : start + per_process]


def train(mesh: Mesh, steps: int, *, use_zero1: bool = False, learning_rate: float = 1e-2) -> dict[str, np.ndarray]:
    """Full-batch Adam on the mesh's ``data`` axis; returns host copies of the results."""
    x, y = make_dataset()
    if GLOBAL_BATCH % mesh.size:
        raise ValueError(f"the global batch {GLOBAL_BATCH} must divide over {mesh.size} devices")
    optimizer = gradtx.adam(learning_rate)
    if use_zero1:
        optimizer = zero1(optimizer, mesh, "data")
    with jax.set_mesh(mesh):
        params = replicate(init_params(), mesh)
        batch = shard_batch((local_rows(x), local_rows(y)), mesh, "data")
        state = jax.jit(optimizer.init)(params)

        @jax.jit
        def step(params, state, batch):
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, state = optimizer.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state, loss

        losses = []
        for _ in range(steps):
            params, state, loss = step(params, state, batch)
            # One step in flight at a time: with several devices in one process, XLA:CPU (JAX
            # 0.10, 2 cores) can deadlock in its in-process all-reduce when many steps are queued.
            losses.append(jax.block_until_ready(loss))
    # Replicated results: every process holds a full copy on each of its devices.
    host = {name: np.asarray(value.addressable_data(0)) for name, value in params.items()}
    host["losses"] = np.stack([np.asarray(loss.addressable_data(0)) for loss in losses])
    return host


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default="127.0.0.1:23456", help="HOST:PORT of process 0")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--zero1", action="store_true", help="shard the optimizer state over the processes")
    parser.add_argument("--out", default=None, help="where process 0 writes the final parameters (.npz)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.num_processes > 1:
        # CPU devices need an explicit collectives backend to talk across processes.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    start = time.perf_counter()
    result = train(mesh, args.steps, use_zero1=args.zero1)
    if jax.process_index() == 0:
        print(
            f"{jax.process_count()} process(es), {jax.device_count()} device(s): loss "
            f"{result['losses'][0]:.4f} -> {result['losses'][-1]:.4f} in {args.steps} steps "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        if args.out:
            np.savez(args.out, **result)
    if args.num_processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
