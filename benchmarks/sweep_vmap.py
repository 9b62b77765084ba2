"""Benchmark: a 64-configuration hyperparameter sweep, vmapped vs a Python loop of jitted runs.

An MLP 64-32-10 is trained on scikit-learn's digits (1,437 training images, no download) with
SGD + heavy-ball momentum, mini-batches of 64 images, for a grid of 8 learning rates x 8 momenta.
Every variant runs the same training, ``train(config) -> loss curve``, compiled once, with the
hyperparameters as array inputs:

* loop of jitted runs: ``run = jax.jit(train)`` (a ``lax.scan`` over the steps, via
  ``gradtx.sweep.loss_curve``), then ``run(config_k)`` for k = 1..64, one after another;
* loop of jitted steps: the usual training loop, ``params, state = step(params, state, ...)`` with
  ``step`` jitted, one Python call per step and per configuration;
* vmapped: ``sweep(train, configs)``, i.e. ``jax.jit(jax.vmap(train))`` on all 64 at once;
* vmapped in chunks: ``sweep(train, configs, batch_size=16)`` (``lax.map`` over vmapped chunks).

Compilation is excluded (each variant is warmed up once, and ``sweep`` caches its program); the
script prints each one's throughput (configurations trained per second), the ratios, and checks
that the curves agree: to float32 rounding for every run with an effective step
``eta / (1 - mu) <= 1``, and over the first 20 steps for all of them (the others are chaotic,
and the batched matmuls' different summation order sends them along other paths).

    python benchmarks/sweep_vmap.py [--steps 300] [--repeats 3] [--chunk 16]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from gradtx.sweep import config_grid, loss_curve, sweep

BATCH_SIZE = 64
HIDDEN = 32


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover
        raise SystemExit('This benchmark needs scikit-learn: pip install -e ".[demo]"') from error
    digits = sklearn_digits()
    x = digits.data.astype(np.float32) / 16.0
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], digits.target[order].astype(np.int32)
    split = int(0.8 * len(x))
    x = (x - x[:split].mean(0)) / (x[:split].std(0) + 1e-3)
    return x[:split], y[:split]


def init_mlp(key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, HIDDEN), jnp.float32) * np.sqrt(2.0 / 64),
        "b1": jnp.zeros(HIDDEN, jnp.float32),
        "w2": jax.random.normal(k2, (HIDDEN, 10), jnp.float32) * np.sqrt(2.0 / HIDDEN),
        "b2": jnp.zeros(10, jnp.float32),
    }


def cross_entropy(params: dict, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, y = batch
    logits = jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    # A one-hot product rather than take_along_axis: its gradient is a multiply, not a scatter.
    return -jnp.mean(jnp.sum(jax.nn.one_hot(y, 10, dtype=logits.dtype) * jax.nn.log_softmax(logits), axis=-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    parser.add_argument("--chunk", type=int, default=16, help="configurations per chunk in the chunked sweep")
    args = parser.parse_args()

    x, y = load_digits()
    rng = np.random.default_rng(1)
    index = np.stack([rng.choice(len(x), BATCH_SIZE, replace=False) for _ in range(args.steps)])
    batches = (jnp.asarray(x[index]), jnp.asarray(y[index]))  # [steps, 64, 64], [steps, 64]
    params = init_mlp(jax.random.key(0))

    def train(config: dict) -> jax.Array:
        optimizer = gradtx.sgd(config["learning_rate"], momentum=config["momentum"])
        return loss_curve(optimizer, cross_entropy, params, args.steps, batches)[1]

    configs = config_grid(
        learning_rate=np.geomspace(1e-3, 0.3, 8).tolist(), momentum=[0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
    )
    num_configs = len(configs["learning_rate"])
    per_config = [{name: jnp.asarray(values[k]) for name, values in configs.items()} for k in range(num_configs)]

    def timed(fn, repeats: int = args.repeats) -> tuple[float, np.ndarray]:
        """Best wall time of ``fn()`` over the repeats (after one warm-up call) and its curves."""
        curves = np.asarray(fn())
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            curves = np.asarray(fn())
            times.append(time.perf_counter() - start)
        return min(times), curves

    run = jax.jit(train)
    loop_time, loop_curves = timed(lambda: jax.block_until_ready([run(config) for config in per_config]))

    optimizer_of = lambda config: gradtx.sgd(config["learning_rate"], momentum=config["momentum"])

    @jax.jit
    def step(params, state, config, batch):
        loss, grads = jax.value_and_grad(cross_entropy)(params, batch)
        updates, state = optimizer_of(config).update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    def python_steps() -> list[list[jax.Array]]:
        curves = []
        for config in per_config:
            current, state, losses = params, optimizer_of(config).init(params), []
            for t in range(args.steps):
                current, state, loss = step(current, state, config, (batches[0][t], batches[1][t]))
                losses.append(loss)
            curves.append(jnp.stack(losses))
        return jax.block_until_ready(curves)

    steps_time, steps_curves = timed(python_steps, repeats=1)  # long enough to time once
    vmap_time, vmap_curves = timed(lambda: sweep(train, configs).curves)
    chunk_time, _ = timed(lambda: sweep(train, configs, batch_size=args.chunk).curves)
    result = sweep(train, configs)

    # With an effective step eta / (1 - mu) above 1 a run oscillates or blows up: it is chaotic, and
    # the different float32 summation order of the batched matmuls sends it along another path.
    # Elsewhere the curves must agree to float32 rounding; everywhere, their first 20 steps must.
    effective_step = configs["learning_rate"] / (1 - configs["momentum"])
    smooth = effective_step <= 1
    difference = np.abs(loop_curves - vmap_curves)
    smooth_ok = bool(np.all(difference[smooth] <= 1e-4 + 1e-3 * np.abs(loop_curves[smooth])))
    early = slice(0, 20)
    early_ok = bool(np.all(difference[:, early] <= 1e-4 + 1e-3 * np.abs(loop_curves[:, early])))
    max_smooth = float(difference[smooth].max())
    steps_match = bool(np.array_equal(steps_curves, loop_curves))

    print(f"{jax.devices()[0].platform}: {num_configs} configs x {args.steps} steps, batch {BATCH_SIZE}, "
          f"MLP 64-{HIDDEN}-10, SGD + momentum; best of {args.repeats}, compilation excluded")
    rows = [
        ("python loop of jitted runs (jit(train) per config)", loop_time),
        ("python loop of jitted steps (jit(step) per step)", steps_time),
        ("vmapped sweep, all 64 at once", vmap_time),
        (f"vmapped sweep, chunks of {args.chunk} (lax.map)", chunk_time),
    ]
    for label, seconds in rows:
        print(f"  {label:<52} {seconds:8.3f} s  {num_configs / seconds:8.1f} configs/s")
    print(f"throughput ratio vmapped / loop of jitted runs:  {loop_time / vmap_time:.2f}x "
          f"(chunked: {loop_time / chunk_time:.2f}x)")
    print(f"throughput ratio vmapped / loop of jitted steps: {steps_time / vmap_time:.2f}x "
          f"(chunked: {steps_time / chunk_time:.2f}x)")
    print(f"curves: vmapped vs loop max |diff| {max_smooth:.2e} over the {int(smooth.sum())} runs with "
          f"eta/(1-mu) <= 1 (agree: {smooth_ok}); first 20 steps of all {num_configs} agree: {early_ok}; "
          f"jitted steps == jitted runs bit for bit: {steps_match}")
    best = result.best_config
    print(f"best: learning_rate={best['learning_rate']:.4g} momentum={best['momentum']:.2f}, "
          f"final mini-batch loss {result.scores[result.best_index]:.4f}")
    if not (smooth_ok and early_ok):
        raise SystemExit("vmapped and looped curves disagree")


if __name__ == "__main__":
    main()
