"""Shared pieces of the optimizer benchmarks: the trees, the peers, interleaved timing, tables.

Device-agnostic: JAX runs on its default backend and torch on CUDA when it is available (else
the CPU), so the same scripts compare against ``torch.optim.Adam(fused=True)`` on a GPU.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

# JAX (XLA's thread pool) and torch (OpenMP) share the cores in one process: an OpenMP worker
# that keeps spinning after torch's step steals a core from the XLA step timed next. Workers
# that sleep at once keep the two out of each other's measurements (set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import gradtx  # noqa: E402
from gradtx import fused  # noqa: E402

TORCH_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------
# Trees: name -> list of (leaf name, shape). The same shapes build the JAX tree and torch's list.


def one_leaf(size: int) -> list[tuple[str, tuple]]:
    return [("w", (size,))]


def many_leaves(count: int, size: int) -> list[tuple[str, tuple]]:
    return [(f"p{i:04d}", (size,)) for i in range(count)]


def transformer_like(vocab: int, width: int, layers: int) -> list[tuple[str, tuple]]:
    """An embedding and ``layers`` pre-norm blocks of 12 leaves each: 1 + 12 * layers leaves."""
    shapes = [("embedding", (vocab, width))]
    for i in range(layers):
        block = [
            ("ln1_scale", (width,)), ("ln1_bias", (width,)),
            ("qkv_kernel", (width, 3 * width)), ("qkv_bias", (3 * width,)),
            ("out_kernel", (width, width)), ("out_bias", (width,)),
            ("ln2_scale", (width,)), ("ln2_bias", (width,)),
            ("mlp_in_kernel", (width, 4 * width)), ("mlp_in_bias", (4 * width,)),
            ("mlp_out_kernel", (4 * width, width)), ("mlp_out_bias", (width,)),
        ]  # fmt: skip
        shapes += [(f"block{i:02d}/{name}", shape) for name, shape in block]
    return shapes


def trees(quick: bool) -> dict[str, list[tuple[str, tuple]]]:
    if quick:
        return {
            "1 leaf x 1M": one_leaf(2**20),
            "100 leaves x 16K": many_leaves(100, 2**14),
            "transformer-like, 145 leaves, 3.6M": transformer_like(8000, 128, 12),
        }
    return {
        "1 leaf x 16M": one_leaf(2**24),
        "1000 leaves x 16K": many_leaves(1000, 2**14),
        "transformer-like, 145 leaves, 54M": transformer_like(32000, 512, 12),
    }


def num_params(shapes: list[tuple[str, tuple]]) -> int:
    return int(sum(np.prod(shape, dtype=np.int64) for _, shape in shapes))


def numpy_leaves(shapes: list[tuple[str, tuple]], seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (scale * rng.standard_normal(shape, np.float32)) for name, shape in shapes}


# ----------------------------------------------------------------------------------------------
# The optimizers under test, with the same hyperparameters in every library.

LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Method:
    """One optimizer, as each library spells it, and its memory-traffic floor."""

    name: str
    gradtx: Callable[[], gradtx.GradientTransformation]
    fused: Callable[..., fused.FusedOptimizer]  # (chunk_size=...)
    optax: Callable[[], optax.GradientTransformation]
    torch: Callable[..., torch.optim.Optimizer]  # (params, foreach=..., fused=...)
    torch_has_fused: bool
    bytes_per_param: int  # float32: each stream read or written once per step


METHODS = {
    "Adam": Method(
        "Adam",
        lambda: gradtx.adam(LEARNING_RATE),
        lambda **kw: fused.fused_adam(LEARNING_RATE, **kw),
        lambda: optax.adam(LEARNING_RATE),
        lambda params, **kw: torch.optim.Adam(params, lr=LEARNING_RATE, **kw),
        True,
        28,  # read w, g, m, v; write w, m, v
    ),
    "SGD+momentum": Method(
        "SGD+momentum",
        lambda: gradtx.sgd(LEARNING_RATE, momentum=0.9),
        lambda **kw: fused.fused_sgd(LEARNING_RATE, momentum=0.9, **kw),
        lambda: optax.sgd(LEARNING_RATE, momentum=0.9),
        lambda params, **kw: torch.optim.SGD(params, lr=LEARNING_RATE, momentum=0.9, **kw),
        True,
        20,  # read w, g, b; write w, b
    ),
    "RMSProp": Method(
        "RMSProp",
        lambda: gradtx.rmsprop(LEARNING_RATE, decay=0.99, eps_in_sqrt=False),
        lambda **kw: fused.fused_rmsprop(LEARNING_RATE, decay=0.99, eps_in_sqrt=False, **kw),
        lambda: optax.rmsprop(LEARNING_RATE, decay=0.99, eps_in_sqrt=False),
        lambda params, **kw: torch.optim.RMSprop(params, lr=LEARNING_RATE, **kw),
        False,  # torch.optim.RMSprop has no fused implementation
        20,  # read w, g, r; write w, r
    ),
}


# ----------------------------------------------------------------------------------------------
# Steps: each builder returns a zero-argument callable that runs one step and waits for it.


def jax_step(transform, params, grads, donate: bool) -> Callable[[], None]:
    def step(params, state, grads):
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
    box = [params, transform.init(params)]

    def run() -> None:
        box[0], box[1] = jitted(box[0], box[1], grads)
        jax.block_until_ready(box[0])

    return run


def fused_step(optimizer: fused.FusedOptimizer, params: fused.FlatTree, grads) -> Callable[[], None]:
    jitted = fused.donated_step(optimizer)
    box = [params, optimizer.init(params)]

    def run() -> None:
        box[0], box[1] = jitted(box[0], grads, box[1])
        jax.block_until_ready(box[0])

    return run


def torch_sync() -> None:
    if TORCH_DEVICE == "cuda":
        torch.cuda.synchronize()


def torch_step(make, leaves: dict[str, np.ndarray], grads: list, **flags) -> Callable[[], None]:
    params = [torch.tensor(x, device=TORCH_DEVICE) for x in leaves.values()]
    for p, g in zip(params, grads):
        p.grad = g
    optimizer = make(params, **flags)

    def run() -> None:
        optimizer.step()
        torch_sync()

    run.optimizer = optimizer  # for the state-size table
    return run


def jax_triad(size: int) -> Callable[[], None]:
    """The streaming reference in JAX: ``a <- a + s b`` in place (read 8, write 4 bytes per element)."""
    step = jax.jit(lambda a, b: a + jnp.float32(1e-7) * b, donate_argnums=0)
    box = [jnp.ones((size,), jnp.float32), jnp.ones((size,), jnp.float32)]

    def run() -> None:
        box[0] = step(box[0], box[1])
        jax.block_until_ready(box[0])

    return run


def torch_triad(size: int) -> Callable[[], None]:
    """The streaming reference in torch: ``a.add_(b, alpha=s)`` (read 8, write 4 bytes per element)."""
    a = torch.ones(size, device=TORCH_DEVICE)
    b = torch.ones(size, device=TORCH_DEVICE)

    def run() -> None:
        a.add_(b, alpha=1e-7)
        torch_sync()

    return run


TRIAD_BYTES_PER_ELEMENT = 12


# ----------------------------------------------------------------------------------------------
# Timing: interleaved rounds, ratios taken pair by pair within a round.


def interleaved(
    runs: dict[str, Callable[[], None]], rounds: int, warmup: int = 2, gap: float = 0.02
) -> dict[str, np.ndarray]:
    """Seconds per call of each run, ``rounds`` calls each, the order rotated every round.

    Every run is warmed up first (compilation, first touch of its buffers). Interleaving puts
    the runs of one round under the same load, so ratios within a round are fair on a shared
    machine even when absolute times drift. ``gap`` seconds pass (untimed) between calls, so
    that one library's idle worker threads have gone to sleep before the next call starts.
    """
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(gap)
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: np.asarray(t) for name, t in times.items()}


def median_ratio(times: dict[str, np.ndarray], name: str, reference: str) -> float:
    """The median over rounds of ``t_name / t_reference`` (pair by pair)."""
    return float(np.median(times[name] / times[reference]))


# ----------------------------------------------------------------------------------------------
# Reporting.


def environment() -> str:
    device = jax.devices()[0]
    lines = [
        f"- JAX {jax.__version__} on `{device.platform}` ({device.device_kind}), Optax {optax.__version__}, "
        f"torch {torch.__version__} on `{TORCH_DEVICE}` ({torch.get_num_threads()} threads)",
        f"- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.1f}",
    ]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
