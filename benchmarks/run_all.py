"""Runs every optimizer benchmark and writes ``benchmarks/RESULTS.md``.

    python benchmarks/run_all.py            # the issue's trees: 16M, 1000 x 16K, 54M parameters
    python benchmarks/run_all.py --quick    # small trees and 10/100/300 leaves, a few minutes

A full run also replaces the README's results (between its ``benchmarks:begin`` and
``benchmarks:end`` markers) with the headline table of this run; ``--no-readme`` leaves it.

Sections: step time of Adam, SGD with momentum and RMSProp (gradtx fused and default, Optax with
and without donation, torch foreach and fused) with the memory-traffic floor; the fused path's
chunk size; compile time against the number of leaves; optimizer-state bytes per parameter.
The scripts are device-agnostic: on a machine with CUDA, torch runs there and JAX on its
default backend (GPU), with no change.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compile_time  # noqa: E402
import state_memory  # noqa: E402
import step_time  # noqa: E402
from common import environment  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with what lies between the ``BEGIN`` and ``END`` markers replaced by ``body``."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"README.md needs the markers {BEGIN} and {END}, in that order.")
    return text[: start + len(BEGIN)] + "\n" + body.strip() + "\n" + text[stop:]

HOW = """\
How it was measured: each ratio is the median over {rounds} interleaved rounds (every variant runs
once per round, the order rotated each round, 20 ms apart, after two warm-up calls) of the
pair-by-pair ratio to gradtx fused in the same round; absolute times are medians. "gradtx fused" is
`fused_adam`/`fused_sgd`/`fused_rmsprop` on a `FlatTree` with flat gradients (as
`fused_train_step` produces them), jitted with parameters and state donated; "chunked" is the
same with `chunk_size=CPU_CHUNK_SIZE` (one pass over memory, on one core); "tree grads" packs
gradients given as a tree inside the step. "gradtx default" is `adam`/`sgd`/`rmsprop` +
`apply_updates` on the tree, jitted and donated; "gradtx flatten" the same with
`gradtx.flatten(...)` around the optimizer; "Optax" is jitted without donation (its usual
use), "Optax, donated" with it. The floor moves each float32 stream once (Adam 28 bytes per
parameter, the others 20) at the bandwidth of a streaming kernel (`a <- a + s*b` in place, in JAX
and in torch, the faster one in each round, on as many elements as the tree has); "/ floor" is
the median of floor time over step time (100% = at the floor)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small trees, fewer leaf counts")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell (15; quick 7)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README's table")
    args = parser.parse_args()
    rounds = args.rounds or (7 if args.quick else 15)

    started = time.time()
    env = environment()
    memory = state_memory.main()
    print(memory, flush=True)
    compile_table, compile_summary = (
        ("(skipped)", "") if args.skip_compile else compile_time.main(args.quick, repeats=2)
    )
    print(compile_table, flush=True)
    steps, chunks, summary = step_time.main(args.quick, rounds)
    print(steps + "\n\n" + chunks, flush=True)
    minutes = (time.time() - started) / 60

    text = f"""# Optimizer benchmarks

Written by `python benchmarks/run_all.py{" --quick" if args.quick else ""}` in {minutes:.1f} minutes.

{env}
- load average at the end {os.getloadavg()[0]:.1f}

## Step time (ratio to gradtx fused; below 1 is faster than gradtx fused)

{steps}

{HOW.format(rounds=rounds)}

## The fused path's chunk size

{chunks}

## Compile time of the Adam step (seconds, trace + lower + compile)

{compile_table}

## Optimizer state (bytes per parameter, float32 parameters)

{memory}
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")
    if not (args.quick or args.no_readme):
        readme = os.path.join(ROOT, "README.md")
        with open(readme) as f:
            text = f.read()
        body = f"""{summary}

{compile_summary}

Measured by `python benchmarks/run_all.py` on {time.strftime("%Y-%m-%d")} ({minutes:.0f} minutes):
{env}

Each ratio is the median over {rounds} interleaved rounds of the pair-by-pair ratio of step times
(below 1: gradtx is faster). Full tables (SGD with momentum, RMSProp, the chunk size, compile time
against leaf count, state bytes): `benchmarks/RESULTS.md`."""
        with open(readme, "w") as f:
            f.write(replace_between_markers(text, body))
        print(f"updated {readme}")


if __name__ == "__main__":
    main()
