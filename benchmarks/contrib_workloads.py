"""``gradtx.contrib`` on the small workloads: each method at its defaults against tuned AdamW.

Both workloads of ``benchmarks/workloads.py`` (a CNN on scikit-learn's digits, a character-level
transformer on the Python standard library's source) are trained, same steps, same batches, same
seeds (vmapped), by:

* AdamW (``gradtx.adamw``, default weight decay) at each learning rate of ``ADAMW_GRID``; the one
  with the lowest final training loss is "tuned AdamW", the yardstick;
* every ``gradtx.contrib`` optimizer with its defaults. A method whose ``learning_rate`` has a
  default runs at it; one without a default runs at the single learning rate of ``LEARNING_RATES``
  (its source is printed in the table: the workload's AdamW rate, documented in
  ``workloads.py``, for the Adam-like methods; the authors' reference default otherwise). The
  parameter-free methods (``PARAMETER_FREE``) get no learning rate at all.

Methods that need more than gradients at ``update`` get it: ``momo``, ``momo_adam`` and
``reduce_on_plateau`` the batch loss (``value=``), ``sophia`` the batch objective (``obj_fn=``,
for its Hutchinson estimator), and schedule-free's held-out loss is taken at
``schedule_free_eval_params``. ``sam`` runs in its transparent mode (every other call is an
ascent step, so it makes half as many outer steps on the same gradient budget); its training loss
counts only the calls at the outer iterate. Methods that are not optimizers on these workloads
are listed in ``EXCLUDED`` with the reason.

The final training loss is the mean batch loss over the last 10% of the steps, averaged over the
seeds; the ratio is to tuned AdamW's. Goal for the parameter-free methods: ratio <= 1.10.

    python benchmarks/contrib_workloads.py           # 3 seeds, each workload's full run (150/300 steps) -> CONTRIB.md
    python benchmarks/contrib_workloads.py --quick   # 2 seeds, 60/60 steps

48 compilations and runs. Measured on 2 CPU cores shared with other jobs (load 5-7): ``--quick``
231 s, the full mode 1,511 s.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import workloads
from common import markdown_table

import gradtx
from gradtx import contrib

HERE = pathlib.Path(__file__).resolve().parent
ADAMW_GRID = (3e-4, 1e-3, 3e-3, 1e-2)
STEPS = {"digits_cnn": 150, "stdlib_char_lm": 300}  # each workload's full run (workload.steps)
QUICK_STEPS = {"digits_cnn": 60, "stdlib_char_lm": 60}
GOAL = 1.10
KEPT = "<!-- kept on regeneration -->"
PARAMETER_FREE = ("prodigy", "dadapt_adamw", "dog", "dowg", "cocob", "mechanize(adam)")
# Learning rates for the methods whose learning_rate has no default: (value or "workload", source).
LEARNING_RATES: dict[str, tuple[float | str, str]] = {
    "acprop": ("workload", "workload AdamW lr"),
    "ademamix": ("workload", "workload AdamW lr"),
    "simplified_ademamix": ("workload", "workload AdamW lr"),
    "adopt": ("workload", "workload AdamW lr"),
    "galore": ("workload", "workload AdamW lr"),
    "sam(adamw)": ("workload", "workload AdamW lr, rho 0.05"),
    "reduce_on_plateau(adamw)": ("workload", "workload AdamW lr"),
    "madgrad": (1e-2, "authors' default"),
    "muon": (0.02, "authors' default"),
    "sophia": (1e-4, "authors' default (SophiaG)"),
}
EXCLUDED = {
    "dpsgd / differentially_private_aggregate": "needs per-example gradients and a privacy budget "
    "(l2_norm_clip, noise_multiplier have no defaults); not a loss-matching optimizer",
    "normalize": "a building block (gradient normalization, used inside sam), not an optimizer",
    "split_real_and_imaginary": "a wrapper for complex parameters; both workloads are real",
}


@dataclass
class Method:
    name: str
    build: Callable[[workloads.Workload], gradtx.GradientTransformation]
    lr_source: str
    extra: Callable[[Callable, Any, Any, Any], dict] | None = None  # (loss_fn, params, batch, value) -> kwargs
    eval_params: Callable[[Any, Any], Any] | None = None  # (state, params) -> params for the held-out loss
    loss_steps: Callable[[int], np.ndarray] | None = None  # which steps' losses count
    notes: list[str] = field(default_factory=list)


def _lr(name: str, workload: workloads.Workload) -> float:
    value = LEARNING_RATES[name][0]
    return workload.learning_rate if value == "workload" else float(value)


def methods() -> list[Method]:
    value_kw = lambda loss_fn, params, batch, value: {"value": value}  # noqa: E731
    obj_kw = lambda loss_fn, params, batch, value: {"obj_fn": lambda p: loss_fn(p, batch)}  # noqa: E731
    with_lr = lambda name, make: Method(name, lambda w: make(_lr(name, w)), LEARNING_RATES[name][1])  # noqa: E731
    return [
        with_lr("acprop", contrib.acprop),
        with_lr("ademamix", contrib.ademamix),
        with_lr("simplified_ademamix", contrib.simplified_ademamix),
        with_lr("adopt", contrib.adopt),
        with_lr("galore", contrib.galore),
        with_lr("madgrad", contrib.madgrad),
        with_lr("muon", contrib.muon),
        Method("momo", lambda w: contrib.momo(), "default 1.0", extra=value_kw),
        Method("momo_adam", lambda w: contrib.momo_adam(), "default 0.01", extra=value_kw),
        Method(
            "sophia",
            lambda w: contrib.sophia(_lr("sophia", w)),
            LEARNING_RATES["sophia"][1],
            extra=obj_kw,
        ),
        Method(
            "sam(adamw)",
            lambda w: contrib.sam(
                gradtx.adamw(_lr("sam(adamw)", w)), gradtx.chain(contrib.normalize(), gradtx.sgd(0.05))
            ),
            LEARNING_RATES["sam(adamw)"][1],
            loss_steps=lambda steps: np.arange(0, steps, 2),  # the calls at the outer iterate
        ),
        Method(
            "reduce_on_plateau(adamw)",
            lambda w: gradtx.chain(gradtx.adamw(_lr("reduce_on_plateau(adamw)", w)), contrib.reduce_on_plateau()),
            LEARNING_RATES["reduce_on_plateau(adamw)"][1],
            extra=value_kw,
        ),
        Method(
            "schedule_free_sgd",
            lambda w: contrib.schedule_free_sgd(),
            "default 1.0",
            eval_params=contrib.schedule_free_eval_params,
        ),
        Method(
            "schedule_free_adamw",
            lambda w: contrib.schedule_free_adamw(),
            "default 0.0025",
            eval_params=contrib.schedule_free_eval_params,
        ),
        Method("prodigy", lambda w: contrib.prodigy(), "none (parameter-free)"),
        Method("dadapt_adamw", lambda w: contrib.dadapt_adamw(), "none (parameter-free)"),
        Method("dog", lambda w: contrib.dog(), "none (parameter-free)"),
        Method("dowg", lambda w: contrib.dowg(), "none (parameter-free)"),
        Method("cocob", lambda w: contrib.cocob(), "none (parameter-free)"),
        # Mechanic learns the scale of the base updates; the base runs at learning rate 1 (the authors' usage).
        Method("mechanize(adam)", lambda w: contrib.mechanize(gradtx.adam(1.0)), "none (parameter-free)"),
    ]


def train(workload: workloads.Workload, method: Method, seeds: tuple[int, ...], steps: int) -> workloads.TrainResult:
    """``workloads.train``, plus the extra ``update`` arguments and evaluation parameters a method needs."""
    optimizer = method.build(workload)
    if method.extra is None and method.eval_params is None:
        return workloads.train(workload, optimizer, seeds, steps)
    keys = jax.numpy.stack([jax.random.PRNGKey(seed) for seed in seeds])
    params = jax.vmap(workload.init_params)(keys)
    batches = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *[workload.batches(seed, steps) for seed in seeds])

    def run(params, batches):
        def step(carry, batch):
            params, state = carry
            value, grads = jax.value_and_grad(workload.loss)(params, batch)
            extra = {} if method.extra is None else method.extra(workload.loss, params, batch, value)
            updates, state = optimizer.update(grads, state, params, **extra)
            return (gradtx.apply_updates(params, updates), state), value

        (params, state), losses = jax.lax.scan(step, (params, optimizer.init(params)), batches)
        evaluated = params if method.eval_params is None else method.eval_params(state, params)
        return params, state, losses, workload.eval_loss(evaluated)

    params, state, losses, held_out = jax.jit(jax.vmap(run))(params, batches)
    return workloads.TrainResult(np.asarray(losses), np.asarray(held_out), params, state)


def final_loss(losses: np.ndarray, counted: np.ndarray | None = None) -> float:
    """Mean over seeds of the mean batch loss over the last 10% of the (counted) steps."""
    losses = losses if counted is None else losses[:, counted]
    tail = max(1, losses.shape[1] // 10)
    return float(np.mean(losses[:, -tail:]))


def report_table(rows: list[dict], adamw: dict) -> str:
    """The markdown table of one workload. ``rows``: dicts with name, lr, train, held_out (nan if diverged)."""
    header = ["method", "learning rate", "final train loss", "held-out loss", "ratio to tuned AdamW", "10% goal"]
    lines = []
    for row in [adamw, *rows]:
        ratio = row["train"] / adamw["train"]
        finite = np.isfinite(row["train"])
        if row["name"] in PARAMETER_FREE:
            goal = "pass" if finite and ratio <= GOAL else "FAIL"
        else:
            goal = ""
        lines.append(
            [
                row["name"],
                row["lr"],
                f"{row['train']:.4f}" if finite else "diverged",
                f"{row['held_out']:.4f}" if np.isfinite(row["held_out"]) else "diverged",
                f"{ratio:.2f}x" if finite else "n/a",
                goal,
            ]
        )
    return markdown_table(header, lines)


def run_workload(workload: workloads.Workload, seeds: tuple[int, ...], steps: int) -> tuple[str, dict]:
    grid = []
    for lr in ADAMW_GRID:
        result = workloads.train(workload, gradtx.adamw(lr), seeds, steps)
        grid.append({"lr": lr, "train": final_loss(result.losses), "held_out": float(np.mean(result.eval_loss))})
        print(f"  adamw {lr:g}: {grid[-1]['train']:.4f}", flush=True)
    best = min(grid, key=lambda row: row["train"] if np.isfinite(row["train"]) else np.inf)
    adamw = {"name": "adamw (tuned)", "lr": f"{best['lr']:g} (grid {', '.join(f'{lr:g}' for lr in ADAMW_GRID)})"}
    adamw |= {"train": best["train"], "held_out": best["held_out"]}
    rows = []
    for method in methods():
        started = time.perf_counter()
        result = train(workload, method, seeds, steps)
        counted = None if method.loss_steps is None else method.loss_steps(steps)
        rows.append(
            {
                "name": method.name,
                "lr": method.lr_source
                if method.lr_source.startswith(("none", "default"))
                else f"{_lr(method.name, workload):g} ({method.lr_source})",
                "train": final_loss(result.losses, counted),
                "held_out": float(np.mean(result.eval_loss)),
            }
        )
        print(f"  {method.name}: {rows[-1]['train']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return report_table(rows, adamw), {"adamw": adamw, "rows": rows, "grid": grid}


def goal_summary(results: dict[str, dict]) -> str:
    lines = []
    for name in PARAMETER_FREE:
        verdicts = []
        for workload, result in results.items():
            row = next(row for row in result["rows"] if row["name"] == name)
            ratio = row["train"] / result["adamw"]["train"]
            ok = bool(np.isfinite(ratio) and ratio <= GOAL)
            verdicts.append(f"{workload} {ratio:.2f}x {'pass' if ok else 'FAIL'}")
        lines.append(f"- {name}: " + "; ".join(verdicts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds and 60 steps per workload")
    parser.add_argument("--out", default=str(HERE / "CONTRIB.md"))
    args = parser.parse_args()
    seeds = (0, 1) if args.quick else (0, 1, 2)
    steps_of = QUICK_STEPS if args.quick else STEPS
    started = time.perf_counter()
    tables, results = [], {}
    for make in workloads.WORKLOADS.values():
        workload = make()
        steps = steps_of[workload.name]
        print(f"{workload.name}: {steps} steps (workload default {workload.steps}), seeds {seeds}", flush=True)
        table, results[workload.name] = run_workload(workload, seeds, steps)
        print(table, flush=True)
        title = f"## {workload.name}: {steps} steps (of the workload's {workload.steps}), seeds {seeds}"
        tables.append(f"{title}\n\n{table}")
    wall = time.perf_counter() - started
    excluded = "\n".join(f"- `{name}`: {reason}" for name, reason in EXCLUDED.items())
    text = f"""# gradtx.contrib on the small workloads

Generated by `python benchmarks/contrib_workloads.py{" --quick" if args.quick else ""}` in {wall:.0f} s
(all compilations included; JAX {jax.__version__} on `{jax.devices()[0].platform}`). How the table is made:
see the script's docstring. Final train loss: mean batch loss over the last 10% of the steps, mean
over the seeds. Goal: the parameter-free methods (no learning rate given) within {100 * (GOAL - 1):.0f}% of tuned
AdamW's final training loss (ratio <= {GOAL:.2f}x).

{chr(10).join(tables)}

## Parameter-free goal

{goal_summary(results)}

## Excluded

{excluded}
"""
    out = pathlib.Path(args.out)
    if out.exists() and KEPT in out.read_text():  # hand-written analysis below the marker survives regeneration
        text += "\n" + out.read_text()[out.read_text().index(KEPT):]
    out.write_text(text)
    print(f"\nwall time {wall:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
