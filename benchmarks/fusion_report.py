"""Why the fused Adam step stops at about 70% of the memory floor on XLA:CPU: the compiled kernels.

Compiles ``fused_adam(1e-3).step`` on one float32 buffer and lists the kernels (fusions) of the
optimized HLO, with the arrays each one reads and writes, then adds up the bytes per parameter
that this schedule moves. Adam's floor is 28 bytes per parameter (read ``w, g, m, v``, write
``w, m, v``): one pass that produces all three outputs. XLA:CPU builds one loop per output (it has
no multi-output loop fusion), and the loop that writes ``w`` reads the new ``m`` and ``v`` back
from memory: 40 bytes per parameter, so at most 28 / 40 = 70% of the floor. With
``chunk_size=CPU_CHUNK_SIZE`` the step is one pass (28 bytes) but runs as an in-place loop of
dynamic-update-slices, which XLA:CPU executes on one thread. torch's ``Adam(fused=True)`` is a
hand-written kernel that does the single pass on all cores. On a GPU, XLA's multi-output fusion
puts the step into one kernel; run this script there to see it.

    python benchmarks/fusion_report.py [--size 16777216] [--chunked]
"""

from __future__ import annotations

import argparse
import re
import time

import jax
import jax.numpy as jnp

import gradtx

# An instruction of the optimized HLO's entry: ``%name = type opcode(operands), ...``.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(\S+) = (\(.*?\)(?= [\w-]+\()|\S+) ([\w-]+)\((.*?)\)")
KERNELS = ("fusion", "while", "copy")


def entry_instructions(size: int, chunk_size: int) -> list[tuple[str, str, str, list[str]]]:
    """(name, type, opcode, operand names) of each instruction of the compiled step's entry."""
    optimizer = gradtx.fused_adam(1e-3, chunk_size=chunk_size)
    params = jax.eval_shape(gradtx.flatten_tree, {"w": jax.ShapeDtypeStruct((size,), jnp.float32)})
    state = jax.eval_shape(optimizer.init, params)
    text = jax.jit(optimizer.step, donate_argnums=(0, 2)).lower(params, params, state).compile().as_text()
    found = []
    for line in text[text.index("ENTRY") :].splitlines()[1:]:
        if line.startswith("}"):
            break
        match = _INSTRUCTION.match(line)
        if match:
            name, out_type, opcode, operands = match.groups()
            found.append((name, out_type, opcode, [op.strip().lstrip("%") for op in operands.split(",") if op.strip()]))
    return found


def cores_busy(size: int, chunk_size: int, steps: int = 20) -> tuple[float, float]:
    """(seconds per step, process CPU time over wall time) of the donated fused Adam step."""
    optimizer = gradtx.fused_adam(1e-3, chunk_size=chunk_size)
    params = gradtx.flatten_tree({"w": jnp.ones((size,), jnp.float32)})
    grads = gradtx.flatten_tree({"w": jnp.full((size,), 1e-3, jnp.float32)})
    state = optimizer.init(params)
    step = gradtx.donated_step(optimizer)
    for _ in range(3):
        params, state = step(params, grads, state)
    jax.block_until_ready(params)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        params, state = step(params, grads, state)
        jax.block_until_ready(params)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / steps, cpu / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 24)
    parser.add_argument("--chunked", action="store_true", help="chunk_size=CPU_CHUNK_SIZE")
    args = parser.parse_args()
    chunk = gradtx.CPU_CHUNK_SIZE if args.chunked else 0
    instructions = entry_instructions(args.size, chunk)
    types = {name: out_type for name, out_type, _, _ in instructions}
    full = f"[{args.size}]"
    print(f"fused_adam(1e-3, chunk_size={chunk}).step on {args.size:,} float32 parameters ({jax.default_backend()}):")
    total, scalar_kernels = 0, 0
    for name, out_type, opcode, operands in instructions:
        if opcode not in KERNELS:
            continue
        if opcode == "while":
            # The chunk loop carries w, g, m, v: each chunk is read once, and w, m, v written once.
            carried = out_type.count(full)
            moved = 4 * carried + 4 * (carried - 1)
            print(f"  while  {name:28} carries {carried} arrays, one pass: {moved} B/param, on one thread")
        else:
            streams_in = [op for op in operands if full in types.get(op, "")]
            streams_out = out_type.count(full)
            moved = 4 * (len(streams_in) + streams_out)
            if not moved:
                scalar_kernels += 1
                continue
            print(f"  {opcode:6} {name:28} reads {len(streams_in)} arrays, writes {streams_out}: {moved} B/param")
        total += moved
    print(f"  (and {scalar_kernels} kernels on scalars: step counts, bias corrections)")
    print(f"total about {total} bytes per parameter per step; Adam's floor is 28.")
    seconds, busy = cores_busy(args.size, chunk)
    print(f"measured: {1e3 * seconds:.1f} ms per step, {busy:.2f} cores busy (CPU time / wall time)")


if __name__ == "__main__":
    main()
