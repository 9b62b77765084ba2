"""Low-bit optimizer state (``gradtx.quantized_state``): quality, memory and step time.

Quality: both workloads of ``benchmarks/workloads.py`` (a CNN on scikit-learn's digits, a
character-level transformer on the Python standard library's source) are trained by AdamW, Lion
and SGD with momentum in float32 and with 8-bit state (AdamW also 4-bit), with the same
hyperparameters, steps and batches, 3 seeds each (vmapped). The final training loss is the mean
batch loss over the last 10% of the steps, averaged over the seeds; the table gives its ratio to
the float32 run of the same family (goals: 8-bit within 1%, 4-bit within 2%), the spread of
the final loss over the seeds (standard deviation / mean, a yardstick for those ratios) and the
held-out loss. On the language model, 8-bit AdamW also runs with the embeddings' state kept in
32 bits (``quantize_mask``), as the 8-bit paper advises. The loss curves (seed means, smoothed)
go to ``benchmarks/lowbit_curves.png``.

Memory: bytes per parameter of the optimizer state, counted from the state's own arrays (every
leaf, step counts and scales included) on a 16M-parameter leaf, a transformer-like tree and the
two workloads (whose small leaves, below ``min_size=4096`` entries, stay float32).

Speed: one jitted, donated Adam step on 16M float32 parameters (one leaf) and on the
transformer-like tree, float32 state vs 8-bit and 4-bit state: interleaved rounds, the median of
the per-round ratios of wall times (and of process CPU times, which a loaded machine disturbs
less). Goal for 8-bit: at most 1.3x.

    python benchmarks/lowbit.py            # full: 150/300 steps, 9 timing rounds  -> benchmarks/LOWBIT.md
    python benchmarks/lowbit.py --quick    # 60/100 steps, 5 timing rounds
    python benchmarks/lowbit.py --speed-only   # rewrites only the speed section of LOWBIT.md
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import workloads
from common import environment, interleaved, jax_step, markdown_table, median_ratio, transformer_like

import gradtx

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
# Per workload: the learning rates of AdamW (the workload's), Lion and SGD with momentum.
LEARNING_RATES = {
    "digits_cnn": {"adamw": 1e-3, "lion": 1e-3, "sgd": 0.05},
    "stdlib_char_lm": {"adamw": 3e-3, "lion": 6e-4, "sgd": 0.3},
}


def not_embeddings(params):
    """The 8-bit paper's "stable embedding" advice: keep the embeddings' state in 32 bits."""
    return {name: name not in ("embedding", "positions") for name in params}


def optimizers(name: str) -> dict[str, tuple[str, str, gradtx.GradientTransformation]]:
    """label -> (family, precision, optimizer): the same hyperparameters at every precision."""
    rates = LEARNING_RATES[name]
    adamw = dict(learning_rate=rates["adamw"], weight_decay=1e-4)
    lion = dict(learning_rate=rates["lion"], weight_decay=1e-3)
    embeddings = {}
    if name == "stdlib_char_lm":
        embeddings["AdamW 8-bit, 32-bit embeddings"] = (
            "AdamW", "8-bit", gradtx.adamw_8bit(**adamw, quantize_mask=not_embeddings)
        )  # fmt: skip
    return {
        "AdamW": ("AdamW", "float32", gradtx.adamw(**adamw)),
        "AdamW 8-bit": ("AdamW", "8-bit", gradtx.adamw_8bit(**adamw)),
        **embeddings,
        "AdamW 4-bit": ("AdamW", "4-bit", gradtx.adamw_4bit(**adamw)),
        "Lion": ("Lion", "float32", gradtx.lion(**lion)),
        "Lion 8-bit": ("Lion", "8-bit", gradtx.lion_8bit(**lion)),
        "SGD+momentum": ("SGD+momentum", "float32", gradtx.sgd(rates["sgd"], momentum=0.9)),
        "SGD+momentum 8-bit": ("SGD+momentum", "8-bit", gradtx.sgd_8bit(rates["sgd"], momentum=0.9)),
    }


def state_bytes(state) -> int:
    return int(sum(np.prod(np.shape(x), dtype=np.int64) * jnp.result_type(x).itemsize for x in jax.tree.leaves(state)))


def quality(quick: bool) -> tuple[str, dict]:
    curves, rows = {}, []
    for make in workloads.WORKLOADS.values():
        workload = make()
        steps = (60 if workload.name == "digits_cnn" else 100) if quick else workload.steps
        results = {}
        for name, (family, precision, optimizer) in optimizers(workload.name).items():
            start = time.perf_counter()
            result = workloads.train(workload, optimizer, SEEDS, steps)
            tail = max(1, steps // 10)
            results[name] = (family, precision, result)
            single = jax.tree.map(lambda x: x[0], result.state)
            params = jax.tree.map(lambda x: x[0], result.params)
            print(f"  {workload.name} {name}: {time.perf_counter() - start:.0f} s", flush=True)
            per_seed = result.losses[:, -tail:].mean(axis=1)
            results[name] += (
                float(np.mean(per_seed)),
                float(np.mean(result.eval_loss)),
                state_bytes(single) / workloads.num_params(params),
                float(np.std(per_seed) / np.mean(per_seed)),
            )
        curves[workload.name] = {name: r[2].losses.mean(axis=0) for name, r in results.items()}
        for name, (family, precision, _, final, held_out, per_param, spread) in results.items():
            reference = next(r[3] for r in results.values() if r[0] == family and r[1] == "float32")
            ratio = final / reference
            goal = {"8-bit": 1.01, "4-bit": 1.02}.get(precision)
            verdict = "" if goal is None else ("yes" if ratio <= goal else "no")
            rows.append([
                workload.name, name, str(steps), f"{final:.4f}", f"{100 * spread:.1f}%",
                f"{ratio:.4f}" if goal else "1", verdict, f"{held_out:.4f}", f"{per_param:.2f}",
            ])  # fmt: skip
    header = [
        "workload", "optimizer", "steps", "final train loss (3 seeds)", "seed spread", "/ float32", "within goal",
        "held-out loss", "state bytes/param",
    ]  # fmt: skip
    return markdown_table(header, rows), curves


def plot(curves: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"AdamW": "C0", "Lion": "C1", "SGD+momentum": "C2"}
    styles = {"float32": "-", "8-bit": "--", "4-bit": ":", "8-bit, 32-bit embeddings": "-."}
    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2))
    for axis, (name, runs) in zip(np.atleast_1d(axes), curves.items()):
        for label, losses in runs.items():
            family = label.split(" ")[0]
            precision = label.partition(" ")[2] or "float32"
            window = max(1, len(losses) // 20)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            axis.plot(np.arange(len(smooth)) + window, smooth, styles[precision], color=colors[family], label=label)
        axis.set_title(f"{name} (mean of {len(SEEDS)} seeds)")
        axis.set_xlabel("step")
        axis.set_ylabel("training loss (moving average)")
        axis.set_yscale("log")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def memory() -> str:
    trees = {
        "1 leaf x 16M": {"w": jax.ShapeDtypeStruct((2**24,), jnp.float32)},
        "transformer-like, 145 leaves, 3.6M": {
            name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in transformer_like(8000, 128, 12)
        },
    }
    builders = {
        "Adam float32": lambda: gradtx.adam(1e-3),
        "Adam 8-bit": lambda: gradtx.adam_8bit(1e-3),
        "Adam 4-bit": lambda: gradtx.adam_4bit(1e-3),
        "Lion 8-bit": lambda: gradtx.lion_8bit(1e-4),
        "SGD+momentum 8-bit": lambda: gradtx.sgd_8bit(1e-2),
    }
    rows = []
    for tree_name, params in trees.items():
        count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
        cells = [tree_name]
        for make in builders.values():
            cells.append(f"{state_bytes(jax.eval_shape(make().init, params)) / count:.3f}")
        rows.append(cells)
    return markdown_table(["tree", *builders], rows)


def speed(rounds: int) -> str:
    trees = {
        "1 leaf x 16M": [("w", (2**24,))],
        "transformer-like, 145 leaves, 3.6M": transformer_like(8000, 128, 12),
    }
    builders = {"Adam float32": gradtx.adam, "Adam 8-bit": gradtx.adam_8bit, "Adam 4-bit": gradtx.adam_4bit}
    rows = []
    for tree_name, shapes in trees.items():
        rng = np.random.default_rng(0)
        grads = {name: jnp.asarray(rng.standard_normal(shape, np.float32) * 1e-2) for name, shape in shapes}
        # Each run donates its own parameters.
        fresh = lambda: {name: jnp.asarray(rng.standard_normal(shape, np.float32)) for name, shape in shapes}
        runs = {name: jax_step(make(1e-3), fresh(), grads, donate=True) for name, make in builders.items()}
        cpu = {name: [] for name in runs}

        def with_cpu_time(name, run):
            def timed():
                start = time.process_time()
                run()
                cpu[name].append(time.process_time() - start)

            return timed

        times = interleaved({name: with_cpu_time(name, run) for name, run in runs.items()}, rounds=rounds)
        cpu = {name: np.asarray(values[-rounds:]) for name, values in cpu.items()}
        for name in runs:
            wall = median_ratio(times, name, "Adam float32")
            cpu_ratio = float(np.median(cpu[name] / np.maximum(cpu["Adam float32"], 1e-9)))
            goal = "" if name != "Adam 8-bit" else ("yes" if wall <= 1.3 else "no")
            rows.append([
                tree_name, name, f"{1e3 * np.median(times[name]):.1f}", f"{wall:.2f}x", goal,
                f"{1e3 * np.median(cpu[name]):.1f}", f"{cpu_ratio:.2f}x",
            ])  # fmt: skip
    header = [
        "tree", "state", "wall ms (median)", "/ float32 (median of ratios)", "<= 1.3x", "CPU ms", "CPU / float32",
    ]  # fmt: skip
    return f"One jitted, donated step; {rounds} interleaved rounds.\n\n" + markdown_table(header, rows)


SPEED_HEADING = "## Speed: one Adam step"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and timing rounds")
    parser.add_argument("--speed-only", action="store_true", help="rerun only the speed section of --out")
    parser.add_argument("--out", default=str(HERE / "LOWBIT.md"))
    args = parser.parse_args()

    started = time.perf_counter()
    env = environment()
    print("speed ...", flush=True)
    speed_table = speed(5 if args.quick else 9)
    print(speed_table, flush=True)
    if args.speed_only:
        path = pathlib.Path(args.out)
        report = path.read_text()
        head, _, rest = report.partition(SPEED_HEADING)
        tail = rest[rest.find("\n## ") :] if "\n## " in rest else "\n"
        command = f"python benchmarks/lowbit.py --speed-only{' --quick' if args.quick else ''}"
        section = f"{SPEED_HEADING}\n\nGenerated by `{command}`.\n\n{env}\n\n{speed_table}\n"
        path.write_text(head + section + tail.lstrip("\n") if tail.strip() else head + section)
        print(f"rewrote the speed section of {path}")
        return
    print("memory ...", flush=True)
    memory_table = memory()
    print(memory_table, flush=True)
    print("quality ...", flush=True)
    quality_table, curves = quality(args.quick)
    print(quality_table, flush=True)
    plot_path = HERE / "lowbit_curves.png"
    plot(curves, plot_path)
    report = f"""# Low-bit optimizer state: quality, memory, speed

Generated by `python benchmarks/lowbit.py{" --quick" if args.quick else ""}` in {time.perf_counter() - started:.0f} s.
See the script's docstring for the method.

{env}

Measured on a shared machine under heavy load from other jobs: wall-clock times are noisy (the
CPU-time columns are steadier); quality and memory numbers do not depend on the load.

## Quality (same hyperparameters, steps and batches; mean of {len(SEEDS)} seeds)

{quality_table}

![loss curves]({plot_path.name})

## Memory (bytes of optimizer state per parameter, from the state's arrays)

{memory_table}

{SPEED_HEADING}

{speed_table}
"""
    pathlib.Path(args.out).write_text(report)
    print(f"wrote {args.out} and {plot_path}")


if __name__ == "__main__":
    main()
