"""Optimizer-state bytes per parameter: gradtx default and fused, Optax, torch.optim.

Counted from the state each library actually holds after one step on a tree of 10 leaves of
100,000 float32 parameters: every array (or tensor) in the state, step counters included,
divided by the number of parameters.

    python benchmarks/state_memory.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from common import TORCH_DEVICE, many_leaves, markdown_table, num_params, numpy_leaves

import gradtx
from gradtx import fused

SHAPES = many_leaves(10, 100_000)


def _jax_state_bytes(state) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))


def _torch_state_bytes(make) -> int:
    params = [torch.tensor(x, device=TORCH_DEVICE) for x in numpy_leaves(SHAPES, seed=0).values()]
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer = make(params)
    optimizer.step()
    return int(
        sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    )


def main() -> str:
    n = num_params(SHAPES)
    params = {k: jnp.asarray(v) for k, v in numpy_leaves(SHAPES, seed=0).items()}
    flat = fused.flatten_tree(params)
    bf16 = jnp.bfloat16
    cases = [
        (
            "Adam",
            gradtx.adam(1e-3).init(params),
            fused.fused_adam(1e-3).init(flat),
            optax.adam(1e-3).init(params),
            lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
        ),
        (
            "Adam, bfloat16 moments",
            gradtx.adam(1e-3, mu_dtype=bf16, nu_dtype=bf16).init(params),
            fused.fused_adam(1e-3, mu_dtype=bf16, nu_dtype=bf16).init(flat),
            optax.adam(1e-3, mu_dtype=bf16).init(params),  # Optax has no nu_dtype
            None,
        ),
        (
            "SGD+momentum",
            gradtx.sgd(1e-3, momentum=0.9).init(params),
            fused.fused_sgd(1e-3, momentum=0.9).init(flat),
            optax.sgd(1e-3, momentum=0.9).init(params),
            lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True),
        ),
        (
            "RMSProp",
            gradtx.rmsprop(1e-3).init(params),
            fused.fused_rmsprop(1e-3).init(flat),
            optax.rmsprop(1e-3).init(params),
            lambda p: torch.optim.RMSprop(p, lr=1e-3, foreach=True),
        ),
    ]
    rows = []
    for name, default_state, fused_state, optax_state, make_torch in cases:
        row = [name] + [f"{_jax_state_bytes(s) / n:.2f}" for s in (default_state, fused_state, optax_state)]
        row.append("n/a" if make_torch is None else f"{_torch_state_bytes(make_torch) / n:.2f}")
        rows.append(row)
    return markdown_table(["optimizer", "gradtx default", "gradtx fused", "Optax", "torch.optim"], rows)


if __name__ == "__main__":
    print(main())
