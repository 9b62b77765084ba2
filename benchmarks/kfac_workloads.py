"""K-FAC on the digits CNN of ``benchmarks/workloads.py`` against tuned AdamW.

The workload's network (two 3x3 convolutions, a dense layer of 64, the 10-way output) is written
again with ``gradtx.kfac_conv`` / ``gradtx.kfac_dense`` / ``gradtx.kfac_softmax_cross_entropy``
(``tagged_loss``: the same function of the same parameters, checked against ``workload.loss`` at
start), so that ``gradtx.kfac_statistics`` can collect the Kronecker factors of its four layers.

* AdamW (``gradtx.adamw``, default weight decay) at each learning rate of ``ADAMW_GRID``: the one
  with the lowest final training loss is "tuned AdamW", its final loss the target;
* K-FAC (``gradtx.kfac``, momentum 0.9, sampled Fisher, factor decay 0.95, inverses every 5 steps)
  at each (learning rate, damping) of ``KFAC_GRID``.

Same batches, same seeds, ``STEPS`` steps. The final training loss is the seed mean of
the batch losses over the last 10% of the steps; "steps to target" is the first step where the
seed-mean loss, averaged over a trailing window of 10% of the steps, is at or below tuned AdamW's
final loss. Step time is measured on one seed, after compilation, alternating AdamW and K-FAC
steps (``TIMING_ROUNDS`` rounds of ``TIMING_STEPS`` steps each); the table gives medians and the
median of the pair-by-pair ratios, wall clock and CPU time (``time.process_time``). Wall time to
target = steps to target x median step time. Memory: bytes of optimizer state per parameter.

    PYTHONPATH=. python benchmarks/kfac_workloads.py           # 3 seeds, 150 steps -> KFAC.md, kfac_curves.png
    PYTHONPATH=. python benchmarks/kfac_workloads.py --quick   # 2 seeds, 40 steps, one config each (CI smoke run)
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workloads  # noqa: E402

import gradtx  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ADAMW_GRID = (3e-4, 1e-3, 3e-3, 1e-2)
KFAC_GRID = ((0.03, 0.1), (0.01, 0.1), (0.1, 0.1), (0.1, 1.0))  # damping <= 1e-2 diverged at lr >= 0.03
SEEDS = (0, 1, 2)
STEPS = 150
TIMING_ROUNDS, TIMING_STEPS = 7, 10


def _conv(x, params, name, stride):
    return jax.nn.relu(
        gradtx.kfac_conv(x, params[name], params[f"{name}_bias"], window_strides=(stride, stride), padding="SAME")
    )


def tagged_loss(params, batch):
    """``workloads.digits_cnn().loss`` with its four layers and its loss tagged for K-FAC."""
    x, y = batch
    h = _conv(x, params, "conv1", 1)
    h = _conv(h, params, "conv2", 2)
    h = jax.nn.relu(gradtx.kfac_dense(h.reshape(h.shape[0], -1), params["dense"], params["dense_bias"]))
    logits = gradtx.kfac_dense(h, params["out"], params["out_bias"])
    return gradtx.kfac_softmax_cross_entropy(logits.astype(jnp.float32), y)


def run(workload, make_tx, seeds, steps, kfac_layers=None):
    """Per-step training losses ``[seeds, steps]`` of one optimizer, each seed one jitted scan."""
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    params = jax.vmap(workload.init_params)(keys)
    batches = jax.tree.map(lambda *xs: jnp.stack(xs), *[workload.batches(s, steps) for s in seeds])
    tx = make_tx()
    statistics = gradtx.kfac_statistics(tagged_loss)

    def one_seed(params, batches, key):
        def step(carry, inputs):
            params, state = carry
            batch, step_key = inputs
            if kfac_layers is None:
                value, grads = jax.value_and_grad(workload.loss)(params, batch)
                updates, state = tx.update(grads, state, params)
            else:
                value, grads, factors = statistics(params, batch, key=step_key)
                updates, state = tx.update(grads, state, params, kfac_factors=factors)
            return (gradtx.apply_updates(params, updates), state), value

        step_keys = jax.random.split(key, steps)
        _, losses = jax.lax.scan(step, (params, tx.init(params)), (batches, step_keys))
        return losses

    # Seeds run one after another through one compiled program: vmapping K-FAC's batched Cholesky
    # factorizations over the seeds deadlocked XLA's CPU runtime here (jax 0.10.2, 2 cores).
    compiled = jax.jit(one_seed)
    pick = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
    return np.stack([np.asarray(compiled(pick(params, i), pick(batches, i), keys[i])) for i in range(len(seeds))])


def final_loss(losses: np.ndarray) -> float:
    tail = max(1, losses.shape[1] // 10)
    return float(np.mean(losses[:, -tail:]))


def steps_to(losses: np.ndarray, target: float) -> int | None:
    window = max(1, losses.shape[1] // 10)
    mean = np.mean(losses, axis=0)
    smoothed = np.convolve(mean, np.ones(window) / window, mode="valid")  # entry i covers steps i..i+window-1
    hits = np.nonzero(smoothed <= target)[0]
    return None if len(hits) == 0 else int(hits[0] + window)


def step_times(workload, make_adamw, make_kfac, layers):
    """Median wall and CPU seconds per step of each optimizer (one seed), interleaved, and the ratios."""
    params = workload.init_params(jax.random.PRNGKey(0))
    batches = workload.batches(0, TIMING_STEPS)
    statistics = gradtx.kfac_statistics(tagged_loss)

    def loop(make, kfac):
        tx = make()

        @jax.jit
        def many(params, state, batches, key):
            def step(carry, inputs):
                params, state = carry
                batch, k = inputs
                if kfac:
                    _, grads, factors = statistics(params, batch, key=k)
                    updates, state = tx.update(grads, state, params, kfac_factors=factors)
                else:
                    grads = jax.grad(workload.loss)(params, batch)
                    updates, state = tx.update(grads, state, params)
                return (gradtx.apply_updates(params, updates), state), None

            return jax.lax.scan(step, (params, state), (batches, jax.random.split(key, TIMING_STEPS)))[0]

        state = tx.init(params)
        jax.block_until_ready(many(params, state, batches, jax.random.PRNGKey(1)))  # compile

        def timed():
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(many(params, state, batches, jax.random.PRNGKey(1)))
            return (time.perf_counter() - wall) / TIMING_STEPS, (time.process_time() - cpu) / TIMING_STEPS

        return timed, state

    adamw_timed, adamw_state = loop(make_adamw, False)
    kfac_timed, kfac_state = loop(make_kfac, True)
    pairs = [(adamw_timed(), kfac_timed()) for _ in range(TIMING_ROUNDS)]
    a_wall, k_wall = [p[0][0] for p in pairs], [p[1][0] for p in pairs]
    a_cpu, k_cpu = [p[0][1] for p in pairs], [p[1][1] for p in pairs]
    return {
        "adamw_wall": float(np.median(a_wall)),
        "kfac_wall": float(np.median(k_wall)),
        "adamw_cpu": float(np.median(a_cpu)),
        "kfac_cpu": float(np.median(k_cpu)),
        "wall_ratio": float(np.median(np.divide(k_wall, a_wall))),
        "cpu_ratio": float(np.median(np.divide(k_cpu, a_cpu))),
        "adamw_bytes": state_bytes(adamw_state) / workloads.num_params(params),
        "kfac_bytes": state_bytes(kfac_state) / workloads.num_params(params),
    }


def state_bytes(state) -> int:
    return int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 40 steps, one configuration each")
    args = parser.parse_args()
    seeds, steps = ((0, 1), 40) if args.quick else (SEEDS, STEPS)
    adamw_grid = (1e-3,) if args.quick else ADAMW_GRID
    kfac_grid = KFAC_GRID[:1] if args.quick else KFAC_GRID
    workload = workloads.digits_cnn()
    start = time.perf_counter()

    params0 = workload.init_params(jax.random.PRNGKey(0))
    batch0 = jax.tree.map(lambda x: x[0], workload.batches(0, 1))
    np.testing.assert_allclose(tagged_loss(params0, batch0), workload.loss(params0, batch0), rtol=1e-6)
    layers = gradtx.kfac_layers(tagged_loss, params0, batch0)

    curves = {}
    for lr in adamw_grid:
        curves[f"adamw lr={lr:g}"] = run(workload, lambda lr=lr: gradtx.adamw(lr), seeds, steps)
    adamw_name = min((n for n in curves if n.startswith("adamw")), key=lambda n: final_loss(curves[n]))
    target = final_loss(curves[adamw_name])
    for lr, damping in kfac_grid:
        name = f"kfac lr={lr:g} damping={damping:g}"
        curves[name] = run(workload, lambda lr=lr, d=damping: gradtx.kfac(lr, layers, damping=d), seeds, steps, layers)
    finite = [n for n in curves if n.startswith("kfac") and np.isfinite(final_loss(curves[n]))]
    kfac_name = min(finite, key=lambda n: final_loss(curves[n]))
    best_lr, best_damping = (float(part.split("=")[1]) for part in kfac_name.split()[1:])

    adamw_lr = float(adamw_name.split("=")[1])
    timing = step_times(
        workload, lambda: gradtx.adamw(adamw_lr), lambda: gradtx.kfac(best_lr, layers, damping=best_damping), layers
    )
    adamw_steps, kfac_steps = steps_to(curves[adamw_name], target), steps_to(curves[kfac_name], target)

    lines = [
        f"Digits CNN ({workloads.num_params(params0):,} parameters), {len(seeds)} seeds, {steps} steps, batch 128. "
        f"Target: tuned AdamW's final training loss {target:.4f} ({adamw_name}).",
        "",
        "| run | final train loss | steps to target |",
        "|---|---|---|",
    ]
    for name, losses in curves.items():
        hit = steps_to(losses, target)
        lines.append(f"| {name} | {final_loss(losses):.4f} | {hit if hit is not None else 'not reached'} |")
    ratio = "n/a" if kfac_steps is None or adamw_steps is None else f"{kfac_steps / adamw_steps:.2f}x"
    time_to = lambda hit, per_step: "n/a" if hit is None else f"{hit * per_step:.2f} s"  # noqa: E731
    lines += [
        "",
        f"Best K-FAC: {kfac_name}; tuned AdamW: {adamw_name}.",
        "",
        "| | AdamW | K-FAC | K-FAC / AdamW |",
        "|---|---|---|---|",
        f"| steps to target | {adamw_steps} | {kfac_steps} | {ratio} |",
        f"| step time, wall (median) | {timing['adamw_wall'] * 1e3:.2f} ms | {timing['kfac_wall'] * 1e3:.2f} ms | "
        f"{timing['wall_ratio']:.2f}x (median of pair ratios) |",
        f"| step time, CPU (median) | {timing['adamw_cpu'] * 1e3:.2f} ms | {timing['kfac_cpu'] * 1e3:.2f} ms | "
        f"{timing['cpu_ratio']:.2f}x |",
        f"| wall time to target | {time_to(adamw_steps, timing['adamw_wall'])} | "
        f"{time_to(kfac_steps, timing['kfac_wall'])} | |",
        f"| optimizer state, bytes per parameter | {timing['adamw_bytes']:.2f} | {timing['kfac_bytes']:.2f} | "
        f"{timing['kfac_bytes'] / timing['adamw_bytes']:.2f}x |",
        "",
        f"Total benchmark time {time.perf_counter() - start:.0f} s.",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.quick:
        plot(curves, [adamw_name, kfac_name], timing, target)
        (HERE / "KFAC.md").write_text(HEADER + report + "\n")


HEADER = """# K-FAC on the digits CNN

Generated by `PYTHONPATH=. python benchmarks/kfac_workloads.py` (method in its docstring; curves in
`kfac_curves.png`). Timings on 2 CPU cores shared with other jobs: compare ratios, not absolute times.

"""


def plot(curves, names, timing, target) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(10, 4))
    for name in names:
        mean = np.mean(curves[name], axis=0)
        per_step = timing["kfac_wall"] if name.startswith("kfac") else timing["adamw_wall"]
        steps = np.arange(1, len(mean) + 1)
        by_step.plot(steps, mean, label=name)
        by_time.plot(steps * per_step, mean, label=name)
    for axis, label in ((by_step, "step"), (by_time, "seconds (median step time x steps)")):
        axis.axhline(target, color="gray", linestyle=":", label="tuned AdamW final loss")
        axis.set_xlabel(label)
        axis.set_ylabel("training loss (seed mean)")
        axis.set_yscale("log")
    by_step.legend()
    figure.tight_layout()
    figure.savefig(HERE / "kfac_curves.png", dpi=100)


if __name__ == "__main__":
    main()
