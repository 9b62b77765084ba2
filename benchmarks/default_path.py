"""The default path against Optax: step and compile time of each named optimizer, and whole training steps.

Issue 15: ``gradtx.adam(...)`` on a parameter tree, the way most users call it, must cost no more
than ``optax.adam(...)``. For Adam, AdamW, SGD with momentum, RMSProp, AdaGrad and Lion on the three
benchmark trees this measures

* step time: ``update`` + the library's own ``apply_updates``, jitted with parameters and state
  donated for both libraries, timed in interleaved rounds; the ratio gradtx / Optax is the median
  of the ratios within each round;
* compile time: ``jax.jit(step).trace(...)``, ``.lower()``, ``.compile()`` on abstract shapes after
  ``jax.clear_caches()``, a fresh compile of each library in every round (the order alternating);
  the ratio is again the median of pairwise ratios, and the Optax seconds are given beside it.

Then a whole training step (loss, gradient, Adam) on 10, 100 and 1000 leaves of 4096 parameters:
the tree path (``gradtx.adam`` + ``apply_updates``), the fused path (``gradtx.fused_train_step``
on a ``FlatTree``) and Optax, compile and step time.

    python benchmarks/default_path.py            # the issue's trees; writes its section of RESULTS.md
    python benchmarks/default_path.py --quick    # small trees, one-minute smoke run (prints only)
    python benchmarks/default_path.py --only AdaGrad --only RMSProp   # those rows only, written over the same rows
    python benchmarks/default_path.py --train-step-only               # the training-step rows only

The section between the ``default_path:begin``/``end`` markers of ``benchmarks/RESULTS.md`` (and of
the README) is replaced; the rest of both files is left as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The checkout this script lives in, not an installed gradtx.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from common import environment, interleaved, markdown_table, numpy_leaves, trees  # noqa: E402

import gradtx  # noqa: E402

LR = 1e-3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- default_path:begin -->", "<!-- default_path:end -->"

# name -> (gradtx builder, Optax builder), the same hyperparameters in both.
OPTIMIZERS: dict[str, tuple[Callable, Callable]] = {
    "Adam": (lambda: gradtx.adam(LR), lambda: optax.adam(LR)),
    "Adam, overflow_guard=False": (lambda: gradtx.adam(LR, overflow_guard=False), lambda: optax.adam(LR)),
    "AdamW": (lambda: gradtx.adamw(LR), lambda: optax.adamw(LR)),
    "SGD+momentum": (lambda: gradtx.sgd(LR, momentum=0.9), lambda: optax.sgd(LR, momentum=0.9)),
    "RMSProp": (lambda: gradtx.rmsprop(LR), lambda: optax.rmsprop(LR)),
    "RMSProp, overflow_guard=False": (lambda: gradtx.rmsprop(LR, overflow_guard=False), lambda: optax.rmsprop(LR)),
    "AdaGrad": (lambda: gradtx.adagrad(LR), lambda: optax.adagrad(LR)),
    "AdaGrad, overflow_guard=False": (lambda: gradtx.adagrad(LR, overflow_guard=False), lambda: optax.adagrad(LR)),
    "Lion": (lambda: gradtx.lion(LR), lambda: optax.lion(LR)),
}
LIBRARIES = {"gradtx": gradtx.apply_updates, "Optax": optax.apply_updates}


def _step_fn(transform, apply_updates) -> Callable:
    def step(params, state, grads):
        updates, state = transform.update(grads, state, params)
        return apply_updates(params, updates), state

    return step


def _builder(name: str, library: str) -> Callable:
    return OPTIMIZERS[name][0 if library == "gradtx" else 1]


def compile_seconds(name: str, library: str, abstract: dict) -> tuple[float, float, float]:
    """(trace, lower, XLA compile) seconds of a fresh compile of one optimizer step."""
    transform = _builder(name, library)()
    state = jax.eval_shape(transform.init, abstract)
    jax.clear_caches()
    start = time.perf_counter()
    traced = jax.jit(_step_fn(transform, LIBRARIES[library]), donate_argnums=(0, 1)).trace(abstract, state, abstract)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    lowered.compile()
    return traced_at - start, lowered_at - traced_at, time.perf_counter() - lowered_at


def step_runner(name: str, library: str, leaves: dict[str, np.ndarray], grads: dict) -> Callable[[], None]:
    transform = _builder(name, library)()
    params = {k: jnp.asarray(v) for k, v in leaves.items()}
    jitted = jax.jit(_step_fn(transform, LIBRARIES[library]), donate_argnums=(0, 1))
    box = [params, transform.init(params)]

    def run() -> None:
        box[0], box[1] = jitted(box[0], box[1], grads)
        jax.block_until_ready(box[0])

    return run


def optimizer_table(
    tree_shapes: dict, rounds: int, compile_rounds: int, names: list[str] | None = None
) -> tuple[str, list[list]]:
    rows, summary = [], []
    for tree_name, shapes in tree_shapes.items():
        abstract = {name: jax.ShapeDtypeStruct(shape, np.float32) for name, shape in shapes}
        leaves = numpy_leaves(shapes, seed=0)
        grads = {k: jnp.asarray(v) for k, v in numpy_leaves(shapes, seed=1, scale=1e-2).items()}
        for name in names or OPTIMIZERS:
            seconds = {library: [] for library in LIBRARIES}
            order = list(LIBRARIES)
            for r in range(compile_rounds):
                for library in order[r % 2 :] + order[: r % 2]:
                    seconds[library].append(compile_seconds(name, library, abstract))
            ours, theirs = np.asarray(seconds["gradtx"]), np.asarray(seconds["Optax"])
            compile_ratio = float(np.median(ours.sum(1) / theirs.sum(1)))
            trace_lower = float(np.median(ours[:, :2].sum(1) / theirs[:, :2].sum(1)))
            xla = float(np.median(ours[:, 2] / theirs[:, 2]))
            runs = {library: step_runner(name, library, leaves, grads) for library in LIBRARIES}
            times = interleaved(runs, rounds)
            del runs
            step_ratio = float(np.median(times["gradtx"] / times["Optax"]))
            row = [
                tree_name, name, f"{np.median(times['Optax']) * 1e3:.1f}", f"{step_ratio:.2f}x",
                f"{np.median(theirs.sum(1)):.2f}", f"{compile_ratio:.2f}x", f"{trace_lower:.2f}x", f"{xla:.2f}x",
            ]  # fmt: skip
            print("[default path] " + " | ".join(row), flush=True)
            rows.append(row)
            summary.append([tree_name, name, step_ratio, compile_ratio])
    header = [
        "tree", "optimizer", "Optax step (ms)", "step gradtx / Optax", "Optax compile (s)",
        "compile gradtx / Optax", "trace + lower", "XLA compile",
    ]  # fmt: skip
    return markdown_table(header, rows), summary


# ----------------------------------------------------------------------------------------------
# Whole training steps: loss, gradient and Adam, on L leaves of LEAF_SIZE parameters.

LEAF_SIZE = 4096


def _loss(tree, x):
    # The smallest model with one use of every leaf: what remains is the optimizer and the plumbing.
    return sum(jnp.sum(jnp.square(leaf - x)) for leaf in jax.tree.leaves(tree))


TRAIN_VARIANTS = ["gradtx tree", "gradtx fused_train_step", "Optax"]


def _train_step(variant: str) -> tuple[Callable, Callable]:
    """(the jitted training step, init(params tree) -> (params, state) in the step's layout)."""
    if variant == "gradtx fused_train_step":
        optimizer = gradtx.fused_adam(LR)

        def init(tree):
            flat = gradtx.flatten_tree(tree)
            return flat, optimizer.init(flat)

        return gradtx.fused_train_step(_loss, optimizer), init
    transform = gradtx.adam(LR) if variant == "gradtx tree" else optax.adam(LR)
    apply_updates = gradtx.apply_updates if variant == "gradtx tree" else optax.apply_updates

    def step(params, state, x):
        value, grads = jax.value_and_grad(_loss)(params, x)
        updates, state = transform.update(grads, state, params)
        return apply_updates(params, updates), state, value

    return jax.jit(step, donate_argnums=(0, 1)), lambda tree: (tree, transform.init(tree))


def train_compile_seconds(variant: str, leaves: int) -> float:
    abstract = {f"p{i:05d}": jax.ShapeDtypeStruct((LEAF_SIZE,), np.float32) for i in range(leaves)}
    step, init = _train_step(variant)
    params, state = jax.eval_shape(init, abstract)
    jax.clear_caches()
    start = time.perf_counter()
    step.trace(params, state, jax.ShapeDtypeStruct((LEAF_SIZE,), np.float32)).lower().compile()
    return time.perf_counter() - start


def train_runner(variant: str, leaves: int) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    tree = {f"p{i:05d}": jnp.asarray(rng.standard_normal(LEAF_SIZE, np.float32)) for i in range(leaves)}
    step, init = _train_step(variant)
    box = list(init(tree))
    x = jnp.asarray(rng.standard_normal(LEAF_SIZE, np.float32))

    def run() -> None:
        box[0], box[1], value = step(box[0], box[1], x)
        jax.block_until_ready(value)

    return run


def train_step_table(counts: tuple[int, ...], rounds: int, compile_rounds: int) -> tuple[str, dict]:
    compile_s = {v: {} for v in TRAIN_VARIANTS}
    step_s = {}
    for n in counts:
        samples = {v: [] for v in TRAIN_VARIANTS}
        for r in range(compile_rounds):
            for v in TRAIN_VARIANTS[r % 3 :] + TRAIN_VARIANTS[: r % 3]:
                samples[v].append(train_compile_seconds(v, n))
        for v in TRAIN_VARIANTS:
            compile_s[v][n] = np.asarray(samples[v])
        step_s[n] = interleaved({v: train_runner(v, n) for v in TRAIN_VARIANTS}, rounds)
        print(f"[training step] {n} leaves: compile " + ", ".join(
            f"{v} {np.median(compile_s[v][n]):.2f}s" for v in TRAIN_VARIANTS), flush=True)  # fmt: skip
    rows = []
    ratios = {}
    for v in TRAIN_VARIANTS:
        row = [v]
        for n in counts:
            c = np.median(compile_s[v][n] / compile_s["Optax"][n])
            s = np.median(step_s[n][v] / step_s[n]["Optax"])
            row.append(f"{np.median(compile_s[v][n]):.2f} s ({c:.2f}x)")
            row.append(f"{np.median(step_s[n][v]) * 1e3:.2f} ms ({s:.2f}x)")
            ratios[(v, n)] = (c, s)
        rows.append(row)
    header = ["training step (loss + grad + Adam)"]
    for n in counts:
        header += [f"compile, {n} leaves", f"step, {n} leaves"]
    return markdown_table(header, rows), ratios


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with the part between BEGIN and END replaced by ``body`` (both appended when missing)."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        return text.rstrip("\n") + f"\n\n{BEGIN}\n{body.strip()}\n{END}\n"
    return text[: start + len(BEGIN)] + "\n" + body.strip() + "\n" + text[stop:]


def replace_rows(text: str, table: str, key_cells: int, note: str) -> str:
    """``text`` with each row of the markdown ``table`` written over the row of its section whose first
    ``key_cells`` cells match (rows not found are reported), and ``note`` added before the END marker."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"no {BEGIN} section in the file: run the full benchmark first")
    lines = text[start:stop].split("\n")
    for row in table.strip().split("\n")[2:]:
        key = row.split("|")[1 : key_cells + 1]
        hits = [i for i, line in enumerate(lines) if line.startswith("|") and line.split("|")[1 : key_cells + 1] == key]
        if hits:
            lines[hits[0]] = row
            continue
        # A new row (an optimizer added since the full run): after the rows of the same tree and
        # optimizer family ("RMSProp, overflow_guard=False" after "RMSProp"), else of the same tree.
        family = key[1].split(",")[0].strip() if len(key) > 1 else ""
        same = [i for i, line in enumerate(lines) if line.startswith("|") and line.split("|")[1:2] == key[:1]]
        same = [i for i in same if lines[i].split("|")[2].strip().startswith(family)] or same
        if not same:
            print(f"row not in the section, not written: {row}")
            continue
        lines.insert(same[-1] + 1, row)
    section = "\n".join(lines).rstrip("\n") + "\n" + note + "\n"
    return text[:start] + section + text[stop:]


def goals(summary: list, train: dict, n: int) -> str:
    lines = []
    for tree_name, name, step_ratio, compile_ratio in summary:
        if name.endswith("overflow_guard=False"):
            continue
        met = step_ratio <= 1.0 and compile_ratio <= 1.0
        if not met:
            lines.append(f"{name} on {tree_name}: step {step_ratio:.2f}x, compile {compile_ratio:.2f}x")
    tree_c = train[("gradtx tree", n)][0]
    fused_c = train[("gradtx fused_train_step", n)][0]
    out = [
        f"- Optimizer steps at or below 1.0x Optax in both step and compile time: "
        f"{sum(1 for s in summary if not s[1].endswith('False')) - len(lines)} of "
        f"{sum(1 for s in summary if not s[1].endswith('False'))} cells."
        + (" Not met: " + "; ".join(lines) + "." if lines else ""),
        f"- Training step compile at {n} leaves, tree path: {tree_c:.2f}x Optax (goal <= 1.0x: "
        f"{'met' if tree_c <= 1.0 else 'not met'}); fused path: {fused_c:.2f}x (goal <= 0.5x: "
        f"{'met' if fused_c <= 0.5 else 'not met'}).",
    ]
    return "\n".join(out)


SMOKE_TREES = {"1 leaf x 1K": [("w", (1024,))], "3 leaves": [("a", (8, 4)), ("b", (4,)), ("c", (16,))]}


def _partial_run(args, rounds: int, compile_rounds: int) -> str:
    """``--only`` / ``--train-step-only``: measure only those rows and write them over the same rows."""
    started = time.time()
    env = "; ".join(line.removeprefix("- ") for line in environment().split("\n"))
    parts, what = [], []
    if args.only:
        names = [n for n in OPTIMIZERS if any(o.lower() in n.lower() for o in args.only)]
        if not names:
            raise SystemExit(f"--only {args.only}: no optimizer among {list(OPTIMIZERS)}")
        table, _ = optimizer_table(trees(False), rounds, compile_rounds, names)
        parts.append((table, 2))
        what.append(", ".join(names))
    if args.train_step_only:
        table, _ = train_step_table((10, 100, 1000), rounds, max(1, compile_rounds - 1))
        parts.append((table, 1))
        what.append("the training-step rows")
    for table, _ in parts:
        print(table)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    flags = [f"--only '{o}'" for o in args.only or []] + (["--train-step-only"] if args.train_step_only else [])
    note = (
        f"- Rows of {'; '.join(what)} rewritten {stamp} by `python benchmarks/default_path.py {' '.join(flags)}` in "
        f"{(time.time() - started) / 60:.1f} minutes ({env}; load average at the end {os.getloadavg()[0]:.1f})."
    )
    print(note)
    with open(args.out) as f:
        text = f.read()
    for table, key_cells in parts:
        text = replace_rows(text, table, key_cells, "")
    text = replace_rows(text, "", 1, note)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote the rows into {args.out}")
    return note


def main(argv: list[str] | None = None) -> str:
    """Runs the benchmark; returns its results section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small trees, 10 and 100 leaves; prints only")
    parser.add_argument("--smoke", action="store_true", help="tiny trees, one round: checks the script runs")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved step-time rounds (15; quick 3)")
    parser.add_argument("--compile-rounds", type=int, default=None, help="fresh compiles per library (3; quick 1)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    parser.add_argument("--only", action="append", help="only optimizers whose name contains this (repeatable); "
                        "the issue's trees; writes those rows over the same rows of RESULTS.md")  # fmt: skip
    parser.add_argument("--train-step-only", action="store_true", help="only the training-step table (10, 100, "
                        "1000 leaves); writes its rows over the same rows of RESULTS.md")  # fmt: skip
    args = parser.parse_args(argv)
    short = args.quick or args.smoke
    rounds = args.rounds or (1 if args.smoke else 3 if args.quick else 15)
    compile_rounds = args.compile_rounds or (1 if short else 3)
    if args.only or args.train_step_only:
        return _partial_run(args, args.rounds or 15, args.compile_rounds or 3)
    counts = (2, 3) if args.smoke else (10, 100) if args.quick else (10, 100, 1000)
    started = time.time()
    env = environment()
    table, summary = optimizer_table(SMOKE_TREES if args.smoke else trees(args.quick), rounds, compile_rounds)
    train_table, train = train_step_table(counts, rounds, max(1, compile_rounds - 1))
    minutes = (time.time() - started) / 60
    verdict = goals(summary, train, counts[-1])
    section = f"""## Default path against Optax (issue 15)

Written by `python benchmarks/default_path.py{" --quick" if short else ""}` in {minutes:.1f} minutes.

{env}
- load average at the end {os.getloadavg()[0]:.1f}

{table}

Step: `update` + each library's `apply_updates`, jitted with parameters and state donated, median of
{rounds} interleaved pairwise ratios. Compile: trace + lower + XLA compile after `jax.clear_caches()`,
{compile_rounds} fresh compiles per library alternating, median of pairwise ratios ("trace + lower" and
"XLA compile" split the ratio). Both below 1.0x: gradtx is cheaper.

{train_table}

Loss `sum_l |w_l - x|^2` over L leaves of {LEAF_SIZE} parameters, `value_and_grad` and Adam in one
jitted, donated step; each cell is the median time and the median pairwise ratio to Optax.

{verdict}
"""
    print(section)
    if short:
        return section
    with open(args.out) as f:
        text = f.read()
    with open(args.out, "w") as f:
        f.write(replace_between_markers(text, section))
    print(f"wrote {args.out}")
    return section


if __name__ == "__main__":
    main()
