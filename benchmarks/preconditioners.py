"""Kronecker-factored preconditioners (Shampoo, SOAP, and PSGD-Kron when present) against tuned AdamW.

On both workloads of ``benchmarks/workloads.py`` (a CNN on scikit-learn's digits, a character-level
transformer on the Python standard library's source), with the workload's steps and batches:

1. AdamW at three learning rates (the workload's, /3 and x3); the one with the lowest final training
   loss (mean batch loss over the last 10% of steps, seed 0) is "tuned AdamW" and its final loss the
   target.
2. Shampoo (Adam grafting, blocks of 128, Newton roots every 10 steps), SOAP (the paper's settings, basis
   refreshed every 10 steps) and ``gradtx.psgd_kron`` (if this gradtx has it) at the same three
   learning rates; each method's best rate (fewest steps to the target, then lowest final loss).
3. Steps to the target: the first step at which the trailing mean of the batch losses (the same
   window of 10% of the steps) is at or below the target; the ratio is to tuned AdamW's own step
   count (goal for the best of Shampoo/SOAP: <= 0.7x).
4. Step time: jitted steps (gradient + update, 10 per call, so that a root recomputation every 10
   steps is counted once per call) of each method interleaved with AdamW's, median of per-round
   ratios. Wall time to the target = steps to it x the median step time (goal: <= 1.0x AdamW's).
5. State memory: bytes of the optimizer state per parameter (every leaf of ``init``'s state).

Curves go to ``benchmarks/preconditioners_steps.png`` (loss against steps) and
``benchmarks/preconditioners_seconds.png`` (against seconds: step index x median step time).

    python benchmarks/preconditioners.py           # full -> benchmarks/PRECONDITIONERS.md and the PNGs
    python benchmarks/preconditioners.py --quick   # digits only, 40 steps, one learning rate, 2 rounds
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import numpy as np
import workloads
from common import environment, interleaved, markdown_table

import gradtx

HERE = pathlib.Path(__file__).resolve().parent
FACTORS = (1 / 3, 1.0, 3.0, 10.0)  # x10 lets AdamW reach 1e-2, its best rate on the digits CNN (CONTRIB.md)
STEPS_PER_CALL = 10


def methods() -> dict:
    """label -> learning rate -> optimizer."""
    table = {
        "AdamW": lambda lr: gradtx.adamw(lr, weight_decay=1e-4),
        "Shampoo": lambda lr: gradtx.shampoo(
            lr, block_size=128, graft_type="adam", preconditioning_compute_steps=10, start_preconditioning_step=10,
            moving_average_for_momentum=True, weight_decay=1e-4, decoupled_weight_decay=True,
        ),
        "SOAP": lambda lr: gradtx.soap(lr, weight_decay=1e-4, precondition_frequency=10),
    }
    if hasattr(gradtx, "psgd_kron"):
        table["PSGD-Kron"] = lambda lr: gradtx.psgd_kron(lr)
    return table


def final_loss(losses: np.ndarray) -> float:
    window = max(1, len(losses) // 10)
    return float(np.mean(np.asarray(losses[-window:], np.float64)))


def steps_to_target(losses: np.ndarray, target: float) -> int | None:
    """The first step count ``s`` whose trailing mean over ``len/10`` steps is ``<= target`` (None: never)."""
    window = max(1, len(losses) // 10)
    trailing = np.convolve(losses, np.ones(window) / window, mode="valid")  # trailing[i] ends at step i + window
    hits = np.nonzero(trailing <= target * (1 + 1e-9))[0]
    return int(hits[0] + window) if hits.size else None


def state_bytes_per_param(optimizer, params) -> float:
    state = optimizer.init(params)
    total = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))
    return total / workloads.num_params(params)


def step_times(workload, optimizers: dict, rounds: int) -> dict[str, np.ndarray]:
    """Seconds per step of each optimizer (``STEPS_PER_CALL`` jitted steps per call), interleaved."""
    params = workload.init_params(jax.random.PRNGKey(0))
    batches = workload.batches(0, STEPS_PER_CALL)
    runs = {}
    for label, optimizer in optimizers.items():
        @jax.jit
        def step(params, state, batch, optimizer=optimizer):
            grads = jax.grad(workload.loss)(params, batch)
            updates, state = optimizer.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state

        carry = {"params": params, "state": optimizer.init(params)}

        def run(step=step, carry=carry):
            p, s = carry["params"], carry["state"]
            for i in range(STEPS_PER_CALL):
                p, s = step(p, s, jax.tree.map(lambda b: b[i], batches))
            jax.block_until_ready(p)
            carry["params"], carry["state"] = p, s

        runs[label] = run
    return {label: t / STEPS_PER_CALL for label, t in interleaved(runs, rounds, warmup=1).items()}


def evaluate(workload, steps: int, factors: tuple[float, ...], rounds: int) -> dict:
    """Curves, best learning rates, steps and seconds to AdamW's final loss, memory and step time."""
    table = methods()
    curves: dict[str, dict[float, np.ndarray]] = {}
    for label, make in table.items():
        curves[label] = {}
        for factor in factors:
            lr = workload.learning_rate * factor
            start = time.perf_counter()
            result = workloads.train(workload, make(lr), seeds=(0,), steps=steps)
            curves[label][lr] = result.losses[0]
            print(f"  {workload.name} {label} lr={lr:.2g}: final {final_loss(result.losses[0]):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    adamw_lr = min(curves["AdamW"], key=lambda lr: final_loss(curves["AdamW"][lr]))
    target = final_loss(curves["AdamW"][adamw_lr])
    best = {"AdamW": adamw_lr}
    for label in table:
        if label == "AdamW":
            continue

        def rank(lr, label=label):
            hit = steps_to_target(curves[label][lr], target)
            return (hit if hit is not None else np.inf, final_loss(curves[label][lr]))

        best[label] = min(curves[label], key=rank)
    chosen = {label: table[label](best[label]) for label in table}
    params = workload.init_params(jax.random.PRNGKey(0))
    memory = {label: state_bytes_per_param(opt, params) for label, opt in chosen.items()}
    times = step_times(workload, chosen, rounds)
    return {
        "name": workload.name,
        "steps": steps,
        "num_params": workloads.num_params(params),
        "curves": curves,
        "best": best,
        "target": target,
        "memory": memory,
        "times": times,
    }


def summary_rows(result: dict) -> list[list[str]]:
    """One row per method: learning rate, final loss, steps and wall time to the target (ratios to AdamW)."""
    times, best, curves, target = result["times"], result["best"], result["curves"], result["target"]
    adamw_steps = steps_to_target(curves["AdamW"][best["AdamW"]], target)
    adamw_time = np.median(times["AdamW"])
    rows = []
    for label in curves:
        losses = curves[label][best[label]]
        hit = steps_to_target(losses, target)
        ratio = np.median(times[label] / times["AdamW"])
        step_ms = 1e3 * np.median(times[label])
        if hit is None:
            steps_cell = wall_cell = f"not reached in {result['steps']}"
        else:
            steps_cell = f"{hit} ({hit / adamw_steps:.2f}x)"
            wall = hit * np.median(times[label])
            wall_cell = f"{wall:.1f} s ({wall / (adamw_steps * adamw_time):.2f}x)"
        rows.append([
            label, f"{best[label]:.2g}", f"{final_loss(losses):.4f}", steps_cell, wall_cell,
            f"{step_ms:.1f} ({ratio:.2f}x)", f"{result['memory'][label]:.1f}",
        ])
    return rows


def report(results: list[dict]) -> str:
    header = ["method", "best lr", "final train loss", "steps to AdamW's loss", "wall time to it",
              "step ms (vs AdamW)", "state bytes/param"]
    parts = []
    for result in results:
        parts.append(f"### {result['name']} ({result['num_params']:,} parameters, {result['steps']} steps)\n")
        parts.append(f"Target: tuned AdamW's final training loss {result['target']:.4f} "
                     f"(learning rate {result['best']['AdamW']:.2g}).\n")
        parts.append(markdown_table(header, summary_rows(result)))
        grid = ", ".join(
            f"{label}: " + " / ".join(f"{lr:.2g} -> {final_loss(c):.4f}" for lr, c in result["curves"][label].items())
            for label in result["curves"]
        )
        parts.append(f"\nAll learning rates (final training loss): {grid}.\n")
    return "\n".join(parts)


def plot(results: list[dict], stem: pathlib.Path) -> list[pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis_kind in ("steps", "seconds"):
        figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
        for axis, result in zip(axes[0], results):
            for label, lr in result["best"].items():
                losses = result["curves"][label][lr]
                window = max(1, len(losses) // 10)
                smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
                steps = np.arange(len(smooth)) + window
                x = steps if axis_kind == "steps" else steps * np.median(result["times"][label])
                axis.plot(x, smooth, label=f"{label} (lr {lr:.2g})")
            axis.axhline(result["target"], color="gray", linestyle=":", label="tuned AdamW's final loss")
            axis.set_title(result["name"])
            axis.set_xlabel("step" if axis_kind == "steps" else "seconds (step index x median step time)")
            axis.set_ylabel("training loss (trailing mean, 10% of steps)")
            axis.set_yscale("log")
            axis.legend(fontsize=8)
        figure.tight_layout()
        path = stem.with_name(f"{stem.name}_{axis_kind}.png")
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, 40 steps, one learning rate")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="folder for the report and the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = environment()
    if args.quick:
        plan = [(workloads.digits_cnn(), 40, (1.0,), 2)]
    else:
        plan = [(make(), None, FACTORS, 7) for make in workloads.WORKLOADS.values()]
    results = [evaluate(w, steps or w.steps, factors, rounds) for w, steps, factors, rounds in plan]
    text = report(results)
    paths = plot(results, args.out / "preconditioners")
    elapsed = time.perf_counter() - start
    print(text)
    (args.out / ("PRECONDITIONERS_quick.md" if args.quick else "PRECONDITIONERS.md")).write_text(
        "# Kronecker-factored preconditioners against tuned AdamW\n\n"
        f"Generated by `python benchmarks/preconditioners.py{' --quick' if args.quick else ''}` "
        f"in {elapsed / 60:.1f} min.\n\n{env}\n\n{text}\n"
        + "".join(f"\n![{p.stem}]({p.name})\n" for p in paths)
    )
    return results


if __name__ == "__main__":
    main()
