"""Step time of one optimizer update, gradtx against Optax and torch.optim, with the memory floor.

For each optimizer (Adam, SGD with momentum, RMSProp) and each tree, every variant below runs
one step ``(params, grads, state) -> (params, state)`` on the same float32 data, interleaved
round by round with the others:

* gradtx fused: ``fused_adam`` etc. on a ``FlatTree``, gradients flat (as ``fused_train_step``
  produces them), jitted with the parameters and state donated;
* gradtx fused, chunked: the same with ``chunk_size=CPU_CHUNK_SIZE`` (one pass over memory, one core);
* gradtx fused, tree grads: the same as gradtx fused, with the gradients given as a tree (packed
  in the step);
* gradtx default: ``adam`` etc. on the tree, ``apply_updates``, jitted and donated;
* gradtx flatten: the same with ``gradtx.flatten(adam(...))`` (state in flat buffers, the
  gradients packed and the updates split inside the step);
* Optax: ``optax.adam`` etc. and ``optax.apply_updates``, jitted, without and with donation;
* torch foreach / fused: ``torch.optim.Adam(foreach=True)`` / ``(fused=True)``, ``.step()``.

The floor is the time to move each stream once at the bandwidth of a streaming reference (an
in-place ``a <- a + s b`` in JAX and in torch, the faster of the two, timed in the same rounds on
as many elements as the tree has): 28 bytes per parameter for Adam, 20 for SGD with momentum and
RMSProp. Ratios are medians over rounds of pair-by-pair ratios to gradtx fused.

    python benchmarks/step_time.py [--quick] [--rounds 15]
"""

from __future__ import annotations

import argparse
import gc

import jax
import jax.numpy as jnp
import numpy as np
import torch
from common import (
    METHODS,
    TORCH_DEVICE,
    TRIAD_BYTES_PER_ELEMENT,
    fmt_ratio,
    fused_step,
    interleaved,
    jax_step,
    jax_triad,
    markdown_table,
    median_ratio,
    num_params,
    numpy_leaves,
    torch_step,
    torch_triad,
    trees,
)

import gradtx
from gradtx import fused

COLUMNS = [
    "gradtx fused, chunked",
    "gradtx fused, tree grads",
    "gradtx default",
    "gradtx flatten",
    "Optax",
    "Optax, donated",
    "torch foreach",
    "torch fused",
]


def measure_tree(shapes, methods, rounds: int) -> dict:
    """{method: {"times": {variant: seconds per round}, "size": n}} for one tree."""
    size = num_params(shapes)
    leaves = numpy_leaves(shapes, seed=0)
    grad_leaves = numpy_leaves(shapes, seed=1, scale=1e-3)
    grads = {k: jnp.asarray(v) for k, v in grad_leaves.items()}
    flat_grads = fused.flatten_tree(grads)
    torch_grads = [torch.tensor(g, device=TORCH_DEVICE) for g in grad_leaves.values()]
    results = {}
    for method in methods:

        def fresh_params():
            return {k: jnp.array(v, copy=True) for k, v in leaves.items()}

        runs = {
            "gradtx fused": fused_step(method.fused(), fused.flatten_tree(fresh_params()), flat_grads),
            "gradtx fused, chunked": fused_step(
                method.fused(chunk_size=fused.CPU_CHUNK_SIZE), fused.flatten_tree(fresh_params()), flat_grads
            ),
            "gradtx fused, tree grads": fused_step(method.fused(), fused.flatten_tree(fresh_params()), grads),
            "gradtx default": jax_step(method.gradtx(), fresh_params(), grads, donate=True),
            "gradtx flatten": jax_step(gradtx.flatten(method.gradtx()), fresh_params(), grads, donate=True),
            "Optax": jax_step(method.optax(), fresh_params(), grads, donate=False),
            "Optax, donated": jax_step(method.optax(), fresh_params(), grads, donate=True),
            "torch foreach": torch_step(method.torch, leaves, torch_grads, foreach=True),
            "stream (JAX)": jax_triad(size),
            "stream (torch)": torch_triad(size),
        }
        if method.torch_has_fused:
            runs["torch fused"] = torch_step(method.torch, leaves, torch_grads, fused=True)
        if jax.default_backend() != "cpu":  # chunking is for CPUs: on a GPU XLA fuses all outputs
            del runs["gradtx fused, chunked"]
        times = interleaved(runs, rounds)
        results[method.name] = {"times": times, "size": size, "bytes": method.bytes_per_param}
        del runs
        gc.collect()
    return results


def floor_fractions(result: dict) -> tuple[float, dict]:
    """The floor in seconds and, per variant, the median over rounds of floor / time."""
    times = result["times"]
    stream = np.minimum(times["stream (JAX)"], times["stream (torch)"])
    floor = stream * result["bytes"] / TRIAD_BYTES_PER_ELEMENT
    fractions = {name: float(np.median(floor / t)) for name, t in times.items() if not name.startswith("stream")}
    return float(np.median(floor)), fractions


def chunk_sweep(size: int, rounds: int, chunks=(0, 4096, 16384, 65536, 262144)) -> dict:
    """Seconds per Adam step of ``fused_adam(chunk_size=c)`` on one buffer of ``size`` elements."""
    leaves = numpy_leaves([("w", (size,))], seed=0)
    grads = fused.flatten_tree({"w": jnp.asarray(numpy_leaves([("w", (size,))], seed=1, scale=1e-3)["w"])})
    runs = {
        f"chunk {c}": fused_step(
            fused.fused_adam(1e-3, chunk_size=c), fused.flatten_tree({"w": jnp.array(leaves["w"], copy=True)}), grads
        )
        for c in chunks
    }
    runs["stream (JAX)"] = jax_triad(size)
    return interleaved(runs, rounds)


def fastest_gradtx(times: dict) -> str:
    """The faster of gradtx fused and its chunked variant (absent off CPU), by median time."""
    candidates = [name for name in ("gradtx fused", "gradtx fused, chunked") if name in times]
    return min(candidates, key=lambda name: np.median(times[name]))


def report(all_results: dict) -> str:
    """One Markdown table per optimizer: rows are trees."""
    sections = []
    present = {name for per_method in all_results.values() for name in per_method}
    for method_name in [name for name in METHODS if name in present]:
        rows = []
        for tree_name, per_method in all_results.items():
            if method_name not in per_method:
                continue
            result = per_method[method_name]
            times = result["times"]
            floor, fractions = floor_fractions(result)
            row = [tree_name, f"{1e3 * floor:.1f}", f"{1e3 * np.median(times['gradtx fused']):.1f}"]
            for column in COLUMNS:
                row.append(fmt_ratio(median_ratio(times, column, "gradtx fused") if column in times else None))
            best = fastest_gradtx(times)
            row.append(f"{100 * fractions[best]:.0f}% ({'chunked' if 'chunked' in best else 'fused'})")
            row.append(f"{100 * fractions['torch fused']:.0f}%" if "torch fused" in fractions else "n/a")
            rows.append(row)
        header = ["tree", "floor (ms)", "gradtx fused (ms)"] + COLUMNS + ["best gradtx / floor", "torch fused / floor"]
        bytes_per_param = next(iter(all_results.values()))[method_name]["bytes"]
        sections.append(
            f"**{method_name}** (floor: {bytes_per_param} bytes per parameter)\n\n" + markdown_table(header, rows)
        )
    return "\n\n".join(sections)


# Nominal memory bandwidth (GB/s) of accelerators the suite may meet, to state the fraction reached.
PEAK_BANDWIDTH_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}


def peak_bandwidth() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((value for name, value in PEAK_BANDWIDTH_GBS.items() if name in kind), None)


def headline(all_results: dict, method_name: str = "Adam") -> str:
    """The README's table: gradtx fused time over each peer's (below 1: gradtx is faster)."""
    peak = peak_bandwidth()
    rows = []
    for tree_name, per_method in all_results.items():
        result = per_method.get(method_name)
        if result is None:
            continue
        times = result["times"]
        _, fractions = floor_fractions(result)
        seconds = float(np.median(times["gradtx fused"]))
        gbs = result["bytes"] * result["size"] / seconds / 1e9
        of_peak = f" ({100 * gbs / peak:.0f}% of peak)" if peak else ""
        row = [tree_name, f"{1e3 * seconds:.1f}", f"{gbs:.0f}{of_peak}"]
        for peer in ("Optax", "Optax, donated", "torch fused"):
            row.append(fmt_ratio(median_ratio(times, "gradtx fused", peer)) if peer in times else "n/a")
        best = fastest_gradtx(times)
        row.append(f"{100 * fractions[best]:.0f}%" + (" (chunked)" if "chunked" in best else ""))
        rows.append(row)
    header = [
        f"{method_name} step, float32",
        "gradtx fused (ms)",
        f"GB/s at {next(iter(all_results.values()))[method_name]['bytes']} B/param",
        "gradtx / Optax",
        "gradtx / Optax donated",
        "gradtx / torch fused",
        "best gradtx / memory floor",
    ]
    return markdown_table(header, rows)


def report_chunks(times: dict, size: int) -> str:
    rows = []
    for name in times:
        if name.startswith("chunk"):
            chunk = int(name.split()[1])
            label = "off (one pass per output)" if chunk == 0 else f"{chunk}"
            rows.append([label, f"{1e3 * np.median(times[name]):.1f}", fmt_ratio(median_ratio(times, name, "chunk 0"))])
    return f"Adam, one buffer of {size:,} float32 parameters\n\n" + markdown_table(
        ["chunk_size", "ms per step (median)", "time vs no chunking"], rows
    )


def main(quick: bool, rounds: int, method_names=None) -> tuple[str, str, str]:
    """(step-time tables, chunk-size table, README headline) for the chosen optimizers."""
    methods = [METHODS[name] for name in (method_names or METHODS)]
    all_results = {}
    for tree_name, shapes in trees(quick).items():
        print(f"[step time] {tree_name}: {num_params(shapes):,} parameters", flush=True)
        all_results[tree_name] = measure_tree(shapes, methods, rounds)
        jax.clear_caches()
        gc.collect()
    size = num_params(next(iter(trees(quick).values())))
    if jax.default_backend() != "cpu":
        return report(all_results), "(CPU only)", headline(all_results)
    print(f"[step time] chunk sweep on {size:,} parameters", flush=True)
    chunk_times = chunk_sweep(size, rounds)
    return report(all_results), report_chunks(chunk_times, size), headline(all_results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small trees")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    tables, chunks, summary = main(args.quick, args.rounds)
    print(summary + "\n\n" + tables + "\n\n" + chunks)
