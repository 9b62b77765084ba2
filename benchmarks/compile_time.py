"""Compile time of the Adam step against the number of leaves: gradtx default, gradtx fused, Optax.

Each measurement is the wall time of ``jax.jit(step).lower(*args).compile()`` (tracing,
lowering and XLA compilation: what the first call of a training step waits for) after
``jax.clear_caches()``, on a tree of ``L`` leaves of 4096 float32 parameters. Variants:

* gradtx default: ``adam`` on the tree, then ``apply_updates``;
* gradtx flatten: ``flatten(adam)`` on the tree (state in flat buffers), then ``apply_updates``;
* gradtx fused: ``fused_adam(...).step`` on a ``FlatTree`` with flat gradients (as
  ``fused_train_step`` has them), without and with ``chunk_size=CPU_CHUNK_SIZE``;
* gradtx fused, tree grads: the same with gradients given as a tree (one concatenation of ``L``
  operands in the program);
* Optax: ``optax.adam`` and ``optax.apply_updates``.

The growth exponent between two leaf counts is ``log(t2 / t1) / log(L2 / L1)``: 1 is linear.

    python benchmarks/compile_time.py [--quick] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import markdown_table

import gradtx
from gradtx import fused

LEAF_SIZE = 4096  # abstract shapes only: nothing is allocated


def _default(transform):
    def step(params, state, grads):
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


# The variants that are a transformation on the tree, followed by ``apply_updates``.
TREE_TRANSFORMS = {
    "gradtx default": lambda: gradtx.adam(1e-3),
    "gradtx flatten": lambda: gradtx.flatten(gradtx.adam(1e-3)),
    "Optax": lambda: optax.adam(1e-3),
}


def abstract_params(leaves: int) -> dict:
    return {f"p{i:05d}": jax.ShapeDtypeStruct((LEAF_SIZE,), np.float32) for i in range(leaves)}


def compile_seconds(variant: str, leaves: int) -> float:
    params = abstract_params(leaves)
    jax.clear_caches()
    start = time.perf_counter()
    if variant in TREE_TRANSFORMS:
        transform = TREE_TRANSFORMS[variant]()
        state = jax.eval_shape(transform.init, params)
        jax.jit(_default(transform)).lower(params, state, params).compile()
    else:
        optimizer = fused.fused_adam(1e-3, chunk_size=fused.CPU_CHUNK_SIZE if "chunked" in variant else 0)
        flat = jax.eval_shape(fused.flatten_tree, params)
        state = jax.eval_shape(optimizer.init, flat)
        grads = params if "tree grads" in variant else flat
        jax.jit(optimizer.step).lower(flat, grads, state).compile()
    return time.perf_counter() - start


VARIANTS = [
    "gradtx default",
    "gradtx flatten",
    "gradtx fused",
    "gradtx fused, chunked",
    "gradtx fused, tree grads",
    "Optax",
]


def _loss(tree, x):
    # The smallest model with one use of every leaf: what remains is the optimizer and the plumbing.
    return sum(jnp.sum(jnp.square(leaf - x)) for leaf in jax.tree.leaves(tree))


def train_step_seconds(variant: str, leaves: int) -> float:
    """Compile time of a whole training step (loss, gradient, Adam) on ``leaves`` leaves."""
    params = abstract_params(leaves)
    x = jax.ShapeDtypeStruct((LEAF_SIZE,), np.float32)
    jax.clear_caches()
    start = time.perf_counter()
    if variant == "gradtx fused_train_step":
        optimizer = fused.fused_adam(1e-3)
        flat = jax.eval_shape(fused.flatten_tree, params)
        state = jax.eval_shape(optimizer.init, flat)
        fused.fused_train_step(_loss, optimizer).lower(flat, state, x).compile()
    else:
        transform = TREE_TRANSFORMS[variant]()
        state = jax.eval_shape(transform.init, params)

        def step(params, state, x):
            value, grads = jax.value_and_grad(_loss)(params, x)
            updates, state = transform.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value

        jax.jit(step, donate_argnums=(0, 1)).lower(params, state, x).compile()
    return time.perf_counter() - start


TRAIN_STEP_VARIANTS = ["gradtx default", "gradtx fused_train_step", "Optax"]


def train_step_table(quick: bool) -> str:
    """Whole training steps: where unpacking the flat parameters (one slice per leaf) costs."""
    counts = (10, 100) if quick else (10, 100, 1000)
    rows = [[variant] + [f"{train_step_seconds(variant, n):.2f}" for n in counts] for variant in TRAIN_STEP_VARIANTS]
    print("[compile] train steps: " + "; ".join(" ".join(row) for row in rows), flush=True)
    return markdown_table(["training step (loss + grad + Adam)"] + [f"{n} leaves (s)" for n in counts], rows)


def main(quick: bool, repeats: int) -> tuple[str, str]:
    """(the table, a one-line summary for the README)."""
    counts = (10, 100, 300) if quick else (10, 100, 1000, 5000)
    seconds = {variant: {} for variant in VARIANTS}
    for leaves in counts:
        reps = repeats if leaves <= 1000 else 1
        samples = {variant: [] for variant in VARIANTS}
        for r in range(reps):
            for variant in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:
                samples[variant].append(compile_seconds(variant, leaves))
        for variant in VARIANTS:
            seconds[variant][leaves] = samples[variant]
        print(f"[compile] {leaves} leaves: " + ", ".join(f"{v} {np.median(s):.2f}s" for v, s in samples.items()),
              flush=True)  # fmt: skip

    rows = []
    for variant in VARIANTS:
        row = [variant] + [f"{np.median(seconds[variant][n]):.2f}" for n in counts]
        row.append(
            " / ".join(
                f"{np.log(np.median(seconds[variant][b]) / np.median(seconds[variant][a])) / np.log(b / a):.2f}"
                for a, b in zip(counts[-3:-1], counts[-2:])
            )
        )
        row.append(
            f"{np.median(np.asarray(seconds[variant][counts[-2]]) / np.asarray(seconds['Optax'][counts[-2]])):.2f}x"
        )
        rows.append(row)
    header = (
        ["Adam step"]
        + [f"{n} leaves (s)" for n in counts]
        + [f"growth exponent {counts[-3]}->{counts[-2]} / {counts[-2]}->{counts[-1]}", f"vs Optax at {counts[-2]}"]
    )
    middle = counts[-2]
    fused_ratio = np.median(np.asarray(seconds["gradtx fused"][middle]) / np.asarray(seconds["Optax"][middle]))
    summary = (
        f"Compile time of the Adam step at {middle} leaves: gradtx fused "
        f"{np.median(seconds['gradtx fused'][middle]):.2f} s, Optax {np.median(seconds['Optax'][middle]):.2f} s "
        f"({fused_ratio:.2f}x); from {counts[-3]} to {counts[-1]} leaves gradtx fused grows "
        f"{np.median(seconds['gradtx fused'][counts[-1]]) / np.median(seconds['gradtx fused'][counts[-3]]):.1f}x, "
        f"Optax {np.median(seconds['Optax'][counts[-1]]) / np.median(seconds['Optax'][counts[-3]]):.1f}x."
    )
    return markdown_table(header, rows) + "\n\n" + train_step_table(quick), summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10, 100 and 300 leaves")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    table, summary = main(args.quick, args.repeats)
    print(table + "\n\n" + summary)
