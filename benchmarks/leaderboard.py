"""Which optimizer should I use? Every gradtx optimizer, tuned by the vmapped sweep, on three workloads.

For each workload (``logistic_regression``, ``digits_cnn``, ``stdlib_char_lm`` of ``workloads.py``)
and each optimizer of the registry (``registry()``: every first-order optimizer gradtx ships, the
Optax-named and contrib ones, the low-bit variants, and the preconditioned ones as they land):

1. tune: ``gradtx.sweep`` over a log grid of learning rates (and one more key hyperparameter
   where the optimizer has one), all configurations in one ``jit(vmap(train))`` program, on a
   fixed step budget (``TUNE_STEPS``), seed 0. The score is the mean training loss over the last
   10% of the steps (a diverged run scores ``+inf``). Parameter-free methods run once, at their
   defaults;
2. rerun the best configuration over seeds 0, 1, 2 on the full budget (``FULL_STEPS``), one
   independent program (``vmap`` over seeds, the hyperparameters as Python numbers). Its seed-0
   curve must reproduce the sweep's curve of that configuration (the same data and start): the
   "repro" column is the relative difference of the two scores;
3. where Optax has the same optimizer, the same 3-seed run with Optax: the largest difference of
   the loss curves, and the step-time ratio gradtx / Optax (interleaved runs, median of the
   pair-by-pair ratios);
4. sweep vs loops: 64 Adam configurations (16 learning rates x 4 ``b2``) trained by the vmapped
   sweep, by a Python loop over one jitted run compiled once (hyperparameters as traced
   arguments), and by a loop that rebuilds the optimizer (and so recompiles) per configuration,
   with each program's FLOP count (XLA's cost analysis) to explain the ratios.

Everything uses the same data, steps and seeds for every optimizer. The results go to
``LEADERBOARD.md`` (tables and the sweep-vs-loop ratios), ``leaderboard_results.json`` (raw numbers)
and ``leaderboard_<workload>_{curves,lr}.png`` beside this script.

    python benchmarks/leaderboard.py                 # the published numbers (see LEADERBOARD.md for the time)
    python benchmarks/leaderboard.py --quick         # CI: tiny budget, a few optimizers, all workloads
    python benchmarks/leaderboard.py --quick --workloads logistic_regression --optimizers adam,sgd
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workloads  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
TAIL = 0.1  # the final loss is the mean over the last 10% of the steps


# ---------------------------------------------------------------------------------------------
# Workloads and budgets.


@dataclasses.dataclass(frozen=True)
class Budget:
    tune_steps: int
    full_steps: int
    lr_points: int  # learning rates in the grid, half a decade apart, centred on the optimizer's default
    extra_values: int  # how many values of the second hyperparameter (1: only its default)
    target: float  # the training loss the "steps to target" column counts to
    loop_steps: int  # steps per run in the sweep-vs-loops timing
    rebuild_configs: int  # configurations timed in the rebuilding loop (then scaled to 64)


def make_workload(name: str) -> workloads.Workload:
    """The leaderboard's three workloads (the character LM at a reduced size, see LEADERBOARD.md)."""
    if name == "logistic_regression":
        return workloads.logistic_regression()
    if name == "digits_cnn":
        return workloads.digits_cnn(conv="patches")
    if name == "stdlib_char_lm":
        return workloads.stdlib_char_lm(width=64, layers=2, heads=4, context=32, batch_size=16)
    raise ValueError(f"unknown workload {name!r}")


WORKLOAD_NAMES = ("logistic_regression", "digits_cnn", "stdlib_char_lm")
FULL = {
    "logistic_regression": Budget(200, 200, 7, 2, target=0.15, loop_steps=200, rebuild_configs=8),
    "digits_cnn": Budget(60, 150, 7, 2, target=0.1, loop_steps=30, rebuild_configs=4),
    "stdlib_char_lm": Budget(50, 150, 7, 2, target=2.8, loop_steps=20, rebuild_configs=4),
}
QUICK = {
    "logistic_regression": Budget(30, 40, 3, 1, target=0.3, loop_steps=20, rebuild_configs=2),
    "digits_cnn": Budget(10, 20, 3, 1, target=1.5, loop_steps=5, rebuild_configs=2),
    "stdlib_char_lm": Budget(10, 20, 3, 1, target=3.5, loop_steps=5, rebuild_configs=2),
}
QUICK_OPTIMIZERS = ("sgd", "adam", "prodigy")
# Optax comparisons on the larger workloads in full mode (all pairs on logistic regression).
OPTAX_CORE = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "nadam", "lion")


# ---------------------------------------------------------------------------------------------
# The optimizer registry.


@dataclasses.dataclass(frozen=True)
class Entry:
    """One leaderboard optimizer: ``function(**fixed, **config)`` in gradtx (and in Optax, if any).

    ``learning_rate`` is the centre of the learning-rate grid, ``None`` for a parameter-free
    method (run at its defaults only). ``extra`` is the second hyperparameter and its values (the
    first is gradtx's default). ``update_args`` names what ``update`` needs beyond the gradients:
    ``"value"`` (the batch loss) or ``"obj_fn"`` (the batch objective).
    """

    name: str
    function: str
    family: str
    learning_rate: float | None
    extra: tuple[str, tuple[float, ...]] | None = None
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    optax: str | None = None  # "adam" or "contrib.prodigy"
    full_batch_only: bool = False
    update_args: str | None = None
    schedule_free: bool = False

    def build(self, config: Mapping[str, Any]) -> gradtx.GradientTransformation:
        kwargs = {name: value for name, value in config.items() if name != "run"}
        return _resolve(gradtx, self.function)(**self.fixed, **kwargs)

    def build_optax(self, config: Mapping[str, Any]) -> Any:
        import optax
        import optax.contrib  # noqa: F401

        kwargs = {name: value for name, value in config.items() if name != "run"}
        return _resolve(optax, self.optax)(**self.fixed, **kwargs)


def _resolve(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _entries() -> list[Entry]:
    b2 = ("b2", (0.999, 0.99))
    momentum = ("momentum", (0.9, 0.99))
    lr_only: dict[str, Any] = {}
    table = [
        # Classic.
        Entry("sgd", "sgd", "classic", 0.1, optax="sgd"),
        Entry("momentum", "sgd", "classic", 0.03, momentum, optax="sgd"),
        Entry("nesterov", "sgd", "classic", 0.03, momentum, fixed={"nesterov": True}, optax="sgd"),
        Entry("adagrad", "adagrad", "classic", 0.03, optax="adagrad"),
        Entry("adadelta", "adadelta", "classic", 1.0, ("rho", (0.9, 0.99)), optax="adadelta"),
        Entry("rmsprop", "rmsprop", "classic", 1e-3, ("decay", (0.9, 0.99)), optax="rmsprop"),
        Entry("adam", "adam", "classic", 3e-3, b2, optax="adam"),
        Entry("adamw", "adamw", "classic", 3e-3, b2, optax="adamw"),
        Entry("adamax", "adamax", "classic", 3e-3, b2, optax="adamax"),
        Entry("adamaxw", "adamaxw", "classic", 3e-3, optax="adamaxw"),
        Entry("nadam", "nadam", "classic", 3e-3, b2, optax="nadam"),
        Entry("nadamw", "nadamw", "classic", 3e-3, b2, optax="nadamw"),
        Entry("radam", "radam", "classic", 3e-3, optax="radam"),
        Entry("amsgrad", "amsgrad", "classic", 3e-3, b2, optax="amsgrad"),
        Entry("adabelief", "adabelief", "classic", 3e-3, optax="adabelief"),
        Entry("yogi", "yogi", "classic", 1e-2, optax="yogi"),
        Entry("novograd", "novograd", "classic", 1e-2, optax="novograd"),
        Entry("adafactor", "adafactor", "classic", 1e-2, optax="adafactor"),
        Entry("sm3", "sm3", "classic", 0.1, optax="sm3"),
        Entry("lamb", "lamb", "classic", 3e-3, b2, optax="lamb"),
        Entry("lars", "lars", "classic", 1.0, momentum, optax="lars"),
        Entry("lion", "lion", "classic", 3e-4, ("b1", (0.9, 0.95)), optax="lion"),
        Entry("rprop", "rprop", "classic", 1e-2, optax="rprop", full_batch_only=True),
        Entry("sign_sgd", "sign_sgd", "classic", 1e-3, optax="sign_sgd"),
        Entry("signum", "signum", "classic", 1e-3, ("beta", (0.9, 0.99)), optax="signum"),
        Entry("fromage", "fromage", "classic", 1e-2, optax="fromage"),
        Entry("noisy_sgd", "noisy_sgd", "classic", 0.1, optax="noisy_sgd"),
        Entry("optimistic_gradient_descent", "optimistic_gradient_descent", "classic", 0.1,
              optax="optimistic_gradient_descent"),
        Entry("optimistic_adam", "optimistic_adam", "classic", 3e-3, optax="optimistic_adam"),
        Entry("adan", "adan", "classic", 3e-3, optax="adan"),
        # Optax contrib names.
        Entry("acprop", "acprop", "contrib", 3e-3, optax="contrib.acprop"),
        Entry("adopt", "adopt", "contrib", 3e-3, optax="contrib.adopt"),
        Entry("ademamix", "ademamix", "contrib", 3e-3, ("alpha", (5.0, 2.0)), optax="contrib.ademamix"),
        Entry("simplified_ademamix", "simplified_ademamix", "contrib", 3e-3, optax="contrib.simplified_ademamix"),
        Entry("madgrad", "madgrad", "contrib", 1e-2, optax="contrib.madgrad"),
        Entry("muon", "muon", "contrib", 0.02, optax="contrib.muon"),
        Entry("galore", "galore", "contrib", 3e-3, optax="contrib.galore"),
        Entry("sophia", "sophia", "contrib", 1e-3, optax="contrib.sophia", update_args="obj_fn"),
        Entry("momo", "momo", "contrib", 1.0, optax="contrib.momo", update_args="value"),
        Entry("momo_adam", "momo_adam", "contrib", 1e-2, optax="contrib.momo_adam", update_args="value"),
        Entry("schedule_free_sgd", "schedule_free_sgd", "contrib", 1.0, optax="contrib.schedule_free_sgd",
              schedule_free=True),
        Entry("schedule_free_adamw", "schedule_free_adamw", "contrib", 3e-3, optax="contrib.schedule_free_adamw",
              schedule_free=True),
        # Parameter-free: their defaults only.
        Entry("prodigy", "prodigy", "parameter-free", None, optax="contrib.prodigy"),
        Entry("dadapt_adamw", "dadapt_adamw", "parameter-free", None, optax="contrib.dadapt_adamw"),
        Entry("dog", "dog", "parameter-free", None, optax="contrib.dog"),
        Entry("dowg", "dowg", "parameter-free", None, optax="contrib.dowg"),
        Entry("cocob", "cocob", "parameter-free", None, optax="contrib.cocob"),
        Entry("polyak_sgd", "polyak_sgd", "parameter-free", None, optax="polyak_sgd", update_args="value"),
        # Low-bit state.
        Entry("adam_8bit", "adam_8bit", "low-bit", 3e-3, b2),
        Entry("adamw_8bit", "adamw_8bit", "low-bit", 3e-3, b2),
        Entry("adam_4bit", "adam_4bit", "low-bit", 3e-3, b2),
        Entry("adamw_4bit", "adamw_4bit", "low-bit", 3e-3, b2),
        Entry("lion_8bit", "lion_8bit", "low-bit", 3e-4, ("b1", (0.9, 0.95))),
        Entry("sgd_8bit", "sgd_8bit", "low-bit", 0.03, momentum),
    ]
    # Preconditioned methods as they land: included when gradtx has them, learning rate only. K-FAC is
    # not among them: it needs the model's layers tagged (benchmarks/kfac_workloads.py, KFAC.md).
    for name in ("shampoo", "soap", "psgd_kron", "caspr", "sketchy"):
        table.append(Entry(name, name, "preconditioned", 3e-3, **lr_only))
    return table


def registry(names: Sequence[str] | None = None) -> list[Entry]:
    """The entries whose gradtx function exists (``hasattr``), optionally only ``names``."""
    entries = [entry for entry in _entries() if hasattr(gradtx, entry.function.split(".")[0])]
    if names is not None:
        by_name = {entry.name: entry for entry in entries}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise ValueError(f"unknown or unavailable optimizers {unknown}; available: {sorted(by_name)}")
        entries = [by_name[name] for name in names]
    return entries


def has_optax(entry: Entry) -> bool:
    if entry.optax is None:
        return False
    try:
        import optax
        import optax.contrib  # noqa: F401

        _resolve(optax, entry.optax)
    except (ImportError, AttributeError):
        return False
    return True


def configs_for(entry: Entry, budget: Budget, offset: int = 0) -> dict[str, np.ndarray]:
    """The tuning grid: learning rates half a decade apart around the entry's centre (x its extra values).

    ``offset`` moves the grid by that many of its own widths (``-1``: the next lower learning rates).
    """
    if entry.learning_rate is None:
        return {"run": np.zeros(1, np.float32)}
    start = -(budget.lr_points // 2) + offset * budget.lr_points
    rates = [entry.learning_rate * 10.0 ** (0.5 * k) for k in range(start, start + budget.lr_points)]
    axes: dict[str, Sequence[float]] = {"learning_rate": rates}
    if entry.extra is not None and budget.extra_values > 1:
        axes[entry.extra[0]] = entry.extra[1][: budget.extra_values]
    return gradtx.config_grid(**axes)


# ---------------------------------------------------------------------------------------------
# Training programs.


def _scan(workload: workloads.Workload, optimizer: Any, params: Any, batches: Any, entry: Entry) -> tuple:
    """``steps`` updates in a ``lax.scan``: the final parameters, their held-out loss, the losses."""

    def step(carry, batch):
        params, state = carry
        value, grads = jax.value_and_grad(workload.loss)(params, batch)
        extra: dict[str, Any] = {}
        if entry.update_args == "value":
            extra = {"value": value}
        elif entry.update_args == "obj_fn":
            extra = {"obj_fn": lambda p: workload.loss(p, batch)}
        updates, state = optimizer.update(grads, state, params, **extra)
        return (jax.tree.map(lambda p, u: p + u, params, updates), state), value

    (params, state), losses = jax.lax.scan(step, (params, optimizer.init(params)), batches)
    if entry.schedule_free:
        params = gradtx.schedule_free_eval_params(state, params)
    return losses, workload.eval_loss(params)


def final_loss(losses: np.ndarray) -> np.ndarray:
    """The mean loss over the last 10% of the steps (along the last axis)."""
    tail = max(1, int(round(TAIL * losses.shape[-1])))
    return np.mean(losses[..., -tail:], axis=-1)


def _score(curves: dict) -> jax.Array:
    losses = curves["train"]
    tail = max(1, int(round(TAIL * losses.shape[-1])))
    value = jnp.mean(losses[-tail:])
    return jnp.where(jnp.isfinite(value), value, jnp.inf)


def tune(workload: workloads.Workload, entry: Entry, budget: Budget, max_shifts: int = 2) -> gradtx.SweepResult:
    """``gradtx.sweep`` over ``configs_for(entry)``: seed 0, ``budget.tune_steps`` steps.

    When the best learning rate is at an end of the grid, the next grid that way (its learning
    rates continue the half-decade steps) is swept too (same shapes: the compiled sweep is
    reused), at most ``max_shifts`` times; the result holds every configuration tried.
    """
    params = workload.init_params(jax.random.PRNGKey(SEEDS[0]))
    batches = workload.batches(SEEDS[0], budget.tune_steps)

    def train(config):
        losses, held_out = _scan(workload, entry.build(config), params, batches, entry)
        return {"train": losses, "valid": held_out}

    configs = configs_for(entry, budget)
    results = [gradtx.sweep(train, configs, score_fn=_score)]
    offset = step_side = 0
    for _ in range(max_shifts):
        last = results[-1]
        if "learning_rate" not in configs or budget.lr_points < 2 or not np.isfinite(last.scores[last.best_index]):
            break
        best_lr, rates = last.configs["learning_rate"][last.best_index], configs["learning_rate"]
        side = 1 if best_lr == rates.max() else -1 if best_lr == rates.min() else 0
        if side == 0 or (step_side and side != step_side):
            break
        step_side, offset = side, offset + side
        configs = configs_for(entry, budget, offset)
        results.append(gradtx.sweep(train, configs, score_fn=_score))
    if len(results) == 1:
        return results[0]
    merged_configs = {k: np.concatenate([r.configs[k] for r in results]) for k in results[0].configs}
    scores = np.concatenate([r.scores for r in results])
    curves = jax.tree.map(lambda *xs: np.concatenate(xs), *[r.curves for r in results])
    best = int(np.argmin(scores))
    best_config = next(r.best_config for r in results if r.scores[r.best_index] == scores[best])
    return gradtx.SweepResult(merged_configs, curves, scores, best, best_config)


def seeds_program(workload: workloads.Workload, optimizer: Any, entry: Entry, steps: int) -> Callable[[], tuple]:
    """The compiled 3-seed run (``vmap`` over seeds) of a fixed optimizer: ``() -> (losses, held_out)``."""
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in SEEDS])
    params = jax.vmap(workload.init_params)(keys)
    batches = jax.tree.map(lambda *xs: jnp.stack(xs), *[workload.batches(seed, steps) for seed in SEEDS])
    compiled = (
        jax.jit(jax.vmap(lambda p, b: _scan(workload, optimizer, p, b, entry))).lower(params, batches).compile()
    )
    return lambda: jax.block_until_ready(compiled(params, batches))


def state_bytes_per_param(workload: workloads.Workload, optimizer: Any) -> float:
    params = jax.eval_shape(workload.init_params, jax.random.PRNGKey(0))
    state = jax.eval_shape(optimizer.init, params)
    size = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    state_bytes = sum(math.prod(leaf.shape) * _itemsize(leaf.dtype) for leaf in jax.tree.leaves(state))
    return state_bytes / size


def _itemsize(dtype: Any) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: two uint32 words
    return jnp.dtype(dtype).itemsize


def steps_to_target(losses: np.ndarray, target: float) -> int | None:
    """The first step at which the seeds' median loss, averaged over a trailing window, is <= target."""
    median = np.median(losses, axis=0)
    window = max(1, len(median) // 20)
    smooth = np.convolve(median, np.ones(window) / window, mode="full")[: len(median)]
    smooth[: window - 1] = [np.mean(median[: i + 1]) for i in range(window - 1)]
    reached = np.nonzero(smooth <= target)[0]
    return None if len(reached) == 0 else int(reached[0]) + 1


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def _python_config(config: Mapping[str, float]) -> dict[str, float]:
    return {name: float(value) for name, value in config.items()}


def agree_through(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-4) -> int:
    """How many leading steps two loss curves agree to ``tolerance`` (relative to max(1, |loss|))."""
    difference = np.abs(a - b) / np.maximum(1.0, np.abs(b))
    bad = np.nonzero(~(difference <= tolerance))[0]
    return len(a) if len(bad) == 0 else int(bad[0])


def _diverged(losses: np.ndarray) -> bool:
    """Any seed non-finite, or ending above where it started."""
    return bool(not np.all(np.isfinite(losses)) or np.any(final_loss(losses) >= losses[:, 0]))


def evaluate(
    workload: workloads.Workload, entry: Entry, budget: Budget, compare_optax: bool, timing_rounds: int,
    max_fallbacks: int = 2,
) -> dict:
    """Tune, rerun the best over 3 seeds, check the reproduction, compare with Optax. A JSON-ready dict.

    The sweep picks its configuration on one seed and a short budget. If that configuration
    diverges in the 3-seed full-budget run (a learning rate at the edge of stability), the next
    best of the sweep is rerun instead, at most ``max_fallbacks`` times; the rejected ones are
    listed under ``fallbacks``.
    """
    started = time.perf_counter()
    swept = tune(workload, entry, budget)
    order = [int(k) for k in np.argsort(swept.scores, kind="stable") if np.isfinite(swept.scores[k])]
    order = order or [swept.best_index]
    names = [name for name in swept.configs if name != "run"]
    fallbacks = []
    for attempt, chosen in enumerate(order[: max_fallbacks + 1]):
        config = {name: float(str(swept.configs[name][chosen])) for name in names}  # float32 -> "0.03"
        optimizer = entry.build(config)
        run = seeds_program(workload, optimizer, entry, budget.full_steps)
        (losses, held_out), seconds = _timed(run)
        losses, held_out = np.asarray(losses), np.asarray(held_out)
        if not _diverged(losses) or attempt == min(max_fallbacks, len(order) - 1):
            break
        fallbacks.append(config)
    step_ms = 1e3 * seconds / (budget.full_steps * len(SEEDS))

    # The sweep's curve of the chosen configuration against the independent run's seed 0.
    sweep_curve = np.asarray(swept.curves["train"][chosen])
    rerun_curve = losses[0, : budget.tune_steps]
    sweep_score = float(swept.scores[chosen])
    rerun_score = float(final_loss(rerun_curve))
    scale = float(abs(sweep_curve[0])) or 1.0

    lr_grid = swept.configs.get("learning_rate")
    edge = None
    if lr_grid is not None and len(np.unique(lr_grid)) > 1:  # still at an end after the shifts
        best_lr = swept.configs["learning_rate"][chosen]
        edge = "low" if best_lr == lr_grid.min() else "high" if best_lr == lr_grid.max() else None

    result = {
        "family": entry.family,
        "grid": {name: swept.configs[name].tolist() for name in names},
        "grid_scores": [float(s) if np.isfinite(s) else None for s in swept.scores],
        "grid_valid": [float(v) if np.isfinite(v) else None for v in np.asarray(swept.curves["valid"])],
        "best_config": config,
        "fallbacks": fallbacks,
        "lr_at_grid_edge": edge,
        "train_loss": [float(v) for v in final_loss(losses)],
        "valid_loss": [float(v) for v in held_out],
        "curve": _thin(np.median(losses, axis=0)),
        "steps_to_target": steps_to_target(losses, budget.target),
        "step_ms": step_ms,
        "state_bytes_per_param": state_bytes_per_param(workload, optimizer),
        "repro": {
            "sweep": sweep_score,
            "rerun": rerun_score,
            "score_difference_over_initial_loss": abs(rerun_score - sweep_score) / scale
            if np.isfinite(sweep_score) and np.isfinite(rerun_score) else None,
            "agree_through": agree_through(rerun_curve, sweep_curve),
            "steps": budget.tune_steps,
        },
        "optax": None,
    }
    if result["steps_to_target"] is not None:
        result["seconds_to_target"] = result["steps_to_target"] * step_ms * 1e-3
    if compare_optax and has_optax(entry):
        result["optax"] = compare_with_optax(workload, entry, config, budget, run, losses, seconds, timing_rounds)
    result["seconds"] = time.perf_counter() - started
    return result


def compare_with_optax(
    workload: workloads.Workload,
    entry: Entry,
    config: Mapping[str, float],
    budget: Budget,
    gradtx_run: Callable[[], Any],
    gradtx_losses: np.ndarray,
    gradtx_seconds: float,
    rounds: int,
) -> dict:
    """The same 3-seed run with Optax: how far the curves agree, and the interleaved time ratio gradtx / Optax.

    Float32 training of a network is chaotic: two programs that round differently at step 1
    (1e-7) drift apart exponentially, so beside the largest difference over the whole run the
    comparison gives the number of leading steps over which every seed's curves agree to 1e-4.
    """
    optax_run = seeds_program(workload, entry.build_optax(config), entry, budget.full_steps)
    (optax_losses, _), optax_seconds = _timed(optax_run)
    optax_losses = np.asarray(optax_losses)
    ratios, cpu_ratios = [gradtx_seconds / optax_seconds], []
    # Short runs are timed more often: at least ``rounds`` pairs and about half a second per side.
    rounds = int(min(15, max(rounds, math.ceil(0.5 / max(min(gradtx_seconds, optax_seconds), 1e-3)))))
    for _ in range(rounds - 1):
        cpu = time.process_time()
        _, g = _timed(gradtx_run)
        cpu_g, cpu = time.process_time() - cpu, time.process_time()
        _, o = _timed(optax_run)
        cpu_o = time.process_time() - cpu
        ratios.append(g / o)
        cpu_ratios.append(cpu_g / cpu_o)
    finite = np.isfinite(gradtx_losses) & np.isfinite(optax_losses)
    difference = np.abs(gradtx_losses - optax_losses) / np.maximum(1.0, np.abs(optax_losses))
    final_g, final_o = float(np.mean(final_loss(gradtx_losses))), float(np.mean(final_loss(optax_losses)))
    return {
        "max_relative_curve_difference": float(difference[finite].max()) if finite.any() else None,
        "agree_through": min(agree_through(g, o) for g, o in zip(gradtx_losses, optax_losses)),
        "steps": int(gradtx_losses.shape[1]),
        "final_loss_relative_difference": abs(final_g - final_o) / max(1e-12, abs(final_o))
        if finite.all() else None,
        "both_finite": bool(finite.all()),
        "time_ratio": float(np.median(ratios)),
        "time_ratios": ratios,
        "cpu_time_ratio": float(np.median(cpu_ratios)) if cpu_ratios else None,
    }


def _thin(curve: np.ndarray, points: int = 150) -> list[float | None]:
    index = np.unique(np.linspace(0, len(curve) - 1, min(points, len(curve))).astype(int))
    return [[int(i), float(curve[i]) if np.isfinite(curve[i]) else None] for i in index]


# ---------------------------------------------------------------------------------------------
# Sweep vs loops.


def sweep_vs_loops(workload: workloads.Workload, budget: Budget, rounds: int) -> dict:
    """64 Adam configurations: vmapped sweep vs a compile-once loop vs a rebuilding (recompiling) loop."""
    steps = budget.loop_steps
    params = workload.init_params(jax.random.PRNGKey(0))
    batches = workload.batches(0, steps)
    configs = gradtx.config_grid(
        learning_rate=np.geomspace(1e-4, 3e-2, 16).tolist(), b2=[0.9, 0.99, 0.999, 0.9999]
    )
    count = len(configs["learning_rate"])

    def train(config):
        optimizer = gradtx.adam(config["learning_rate"], b2=config["b2"])
        return gradtx.loss_curve(optimizer, workload.loss, params, steps, batches)[1]

    arrays = {name: jnp.asarray(values) for name, values in configs.items()}
    vmapped = jax.jit(jax.vmap(train)).lower(arrays).compile()
    one = {name: jnp.asarray(values[0]) for name, values in configs.items()}
    single = jax.jit(train).lower(one).compile()
    rows = [{name: jnp.asarray(values[k]) for name, values in configs.items()} for k in range(count)]

    def run_vmapped():
        return np.asarray(gradtx.sweep(train, configs).curves)  # the sweep itself (its program is cached)

    def run_loop():
        return np.stack([np.asarray(single(row)) for row in rows])

    sweep_curves = run_vmapped()  # warm-up: compiles the sweep's cached program
    loop_curves = run_loop()
    times: dict[str, list[float]] = {"vmapped": [], "loop": []}
    cpu: dict[str, list[float]] = {"vmapped": [], "loop": []}
    for _ in range(rounds):
        for name, fn in (("vmapped", run_vmapped), ("loop", run_loop)):
            wall, process = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - wall)
            cpu[name].append(time.process_time() - process)
    pair_ratios = [loop / vmapped for loop, vmapped in zip(times["loop"], times["vmapped"])]

    # Rebuild per configuration: a fresh optimizer with Python-number hyperparameters, jitted anew.
    rebuild_seconds = []
    for k in range(budget.rebuild_configs):
        lr, b2 = float(configs["learning_rate"][k * 5 % count]), float(configs["b2"][k * 5 % count])
        start = time.perf_counter()
        optimizer = gradtx.adam(lr, b2=b2)
        fresh = jax.jit(lambda p: gradtx.loss_curve(optimizer, workload.loss, p, steps, batches)[1])
        np.asarray(fresh(params))
        rebuild_seconds.append(time.perf_counter() - start)
    rebuild_total = float(np.mean(rebuild_seconds) * count)

    # XLA's cost analysis counts a while loop's body once: these are the FLOPs of one step.
    flops_single = _flops(single)
    flops_vmapped = _flops(vmapped)
    vmapped_time, loop_time = float(np.median(times["vmapped"])), float(np.median(times["loop"]))
    stable = np.all(np.isfinite(loop_curves), axis=1) & np.all(loop_curves <= loop_curves[:, :1] + 1e-3, axis=1)
    agreement = np.abs(sweep_curves - loop_curves)[stable]
    return {
        "configs": count,
        "steps": steps,
        "vmapped_seconds": vmapped_time,
        "loop_seconds": loop_time,
        "loop_over_vmapped": float(np.median(pair_ratios)),
        "pair_ratios": pair_ratios,
        "cpu_seconds": {name: float(np.median(values)) for name, values in cpu.items()},
        "rebuild_seconds_per_config": rebuild_seconds,
        "rebuild_seconds_for_64": rebuild_total,
        "rebuild_over_vmapped": rebuild_total / vmapped_time,
        "flops_per_config_step": flops_single,
        "flops_vmapped_over_64_single": None
        if flops_single is None or flops_vmapped is None
        else flops_vmapped / (count * flops_single),
        "gflops_per_second": {
            "vmapped": None if flops_vmapped is None else steps * flops_vmapped / vmapped_time / 1e9,
            "loop": None if flops_single is None else steps * count * flops_single / loop_time / 1e9,
        },
        "max_curve_difference_stable_runs": float(agreement.max()) if agreement.size else None,
        "stable_runs": int(stable.sum()),
    }


def _flops(compiled: Any) -> float | None:
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends have none
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    value = (analysis or {}).get("flops")
    return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------
# Reports.


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "diverged"
    return f"{value:.{digits}f}"


def _config_text(config: Mapping[str, float], family: str) -> str:
    if not config:
        return "defaults" if family == "parameter-free" else "-"
    return ", ".join(f"{'lr' if name == 'learning_rate' else name}={value:.3g}" for name, value in config.items())


def ranking(results: Mapping[str, dict]) -> list[str]:
    """Optimizer names by mean final training loss over the seeds to 4 significant digits (diverged
    last), ties (a convex problem's common minimum) by the steps to the target."""

    def key(name):
        value = float(np.mean(results[name]["train_loss"]))
        steps = results[name]["steps_to_target"]
        return (float(f"{value:.4g}") if np.isfinite(value) else np.inf, np.inf if steps is None else steps)

    return sorted(results, key=key)


def workload_table(name: str, results: Mapping[str, dict], budget: Budget) -> str:
    header = [
        "#", "optimizer", "family", "best config", "train loss (3 seeds)", "valid loss", f"steps to {budget.target:g}",
        f"s to {budget.target:g}", "state B/param", "ms/step", "repro (steps)", "same as Optax (steps)",
        "time vs Optax (CPU)",
    ]  # fmt: skip
    lines = []
    for rank, opt in enumerate(ranking(results), 1):
        r = results[opt]
        train, valid = np.asarray(r["train_loss"]), np.asarray(r["valid_loss"])
        config = _config_text(r["best_config"], r["family"]) + (f" (grid {r['lr_at_grid_edge']} edge)"
                                                                 if r["lr_at_grid_edge"] else "")
        if r.get("fallbacks"):
            config += f" ({len(r['fallbacks'])} better-scored diverged in the rerun)"
        repro = r["repro"]
        optax_cmp = r.get("optax")
        lines.append([
            str(rank), opt, r["family"], config,
            f"{_fmt(float(np.mean(train)))} ± {float(np.std(train)):.4f}" if np.all(np.isfinite(train))
            else "diverged",
            _fmt(float(np.mean(valid))),
            "-" if r["steps_to_target"] is None else str(r["steps_to_target"]),
            "-" if r.get("seconds_to_target") is None else f"{r['seconds_to_target']:.3g}",
            f"{r['state_bytes_per_param']:.1f}",
            f"{r['step_ms']:.2f}",
            f"{repro['agree_through']}/{repro['steps']}",
            "-" if optax_cmp is None else f"{optax_cmp['agree_through']}/{optax_cmp['steps']}"
            + ("" if optax_cmp["max_relative_curve_difference"] is None
               else f" ({optax_cmp['max_relative_curve_difference']:.0e})"),
            "-" if optax_cmp is None else f"{optax_cmp['time_ratio']:.2f}x"
            + ("" if optax_cmp.get("cpu_time_ratio") is None else f" ({optax_cmp['cpu_time_ratio']:.2f}x)"),
        ])  # fmt: skip
    return _markdown_table(header, lines)


def loops_table(loops: Mapping[str, dict]) -> str:
    header = [
        "workload", "steps", "vmapped sweep (s)", "compile-once loop (s)", "loop / sweep", "rebuilding loop (s, 64)",
        "rebuild / sweep", "GFLOP/s sweep", "GFLOP/s loop", "CPU s sweep / loop",
    ]  # fmt: skip
    lines = []
    for name, r in loops.items():
        gflops = r["gflops_per_second"]
        lines.append([
            name, str(r["steps"]), f"{r['vmapped_seconds']:.2f}", f"{r['loop_seconds']:.2f}",
            f"{r['loop_over_vmapped']:.2f}x", f"{r['rebuild_seconds_for_64']:.1f}", f"{r['rebuild_over_vmapped']:.1f}x",
            "-" if gflops["vmapped"] is None else f"{gflops['vmapped']:.1f}",
            "-" if gflops["loop"] is None else f"{gflops['loop']:.1f}",
            f"{r['cpu_seconds']['vmapped']:.2f} / {r['cpu_seconds']['loop']:.2f}",
        ])  # fmt: skip
    return _markdown_table(header, lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def plot(name: str, results: Mapping[str, dict], out_dir: pathlib.Path, top: int = 8) -> list[str]:
    """Two PNGs: the top optimizers' loss curves, and final loss against learning rate per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    order = ranking(results)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for opt in order[:top]:
        points = np.asarray([(i, np.nan if v is None else v) for i, v in results[opt]["curve"]], float)
        window = max(1, len(points) // 15)
        smooth = np.convolve(points[:, 1], np.ones(window) / window, mode="valid")
        ax.plot(points[window - 1 :, 0] + 1, smooth, label=opt)
    ax.set(xlabel="step", ylabel="training loss (median of 3 seeds, smoothed)", yscale="log",
           title=f"{name}: the {min(top, len(order))} best optimizers")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out_dir / f"leaderboard_{name}_curves.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    files.append(path.name)

    tuned = [opt for opt in order if results[opt]["grid"].get("learning_rate")]
    if tuned:
        columns = 6
        rows = math.ceil(len(tuned) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 1.9 * rows), squeeze=False, sharey=True)
        scores = [s for opt in tuned for s in results[opt]["grid_scores"] if s is not None]
        cap = 3 * float(np.median(scores)) if scores else 10.0
        floor = min(scores) if scores else 1e-3
        for ax, opt in zip(axes.flat, tuned):
            r = results[opt]
            lrs = np.asarray(r["grid"]["learning_rate"])
            values = np.asarray([cap if s is None else min(s, cap) for s in r["grid_scores"]])
            extra = [k for k in r["grid"] if k != "learning_rate"]
            groups = np.asarray(r["grid"][extra[0]]) if extra else np.zeros_like(lrs)
            for value in np.unique(groups):
                index = np.nonzero(groups == value)[0]
                index = index[np.argsort(lrs[index])]  # grids moved by the tuning come after the first
                label = f"{extra[0]}={value:g}" if extra else None
                ax.plot(lrs[index], values[index], marker="o", markersize=3, label=label)
            ax.set(xscale="log", yscale="log", title=opt, ylim=(0.9 * floor, 1.05 * cap))
            ax.title.set_fontsize(8)
            ax.tick_params(labelsize=6)
            if extra:
                ax.legend(fontsize=5)
        for ax in list(axes.flat)[len(tuned) :]:
            ax.axis("off")
        fig.suptitle(f"{name}: final training loss vs learning rate (diverged runs at the top edge)", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"leaderboard_{name}_lr.png"
        fig.savefig(path, dpi=72)
        plt.close(fig)
        files.append(path.name)
    return files


def markdown(data: dict) -> str:
    meta = data["meta"]
    parts = [
        "# Which optimizer? The gradtx leaderboard",
        "",
        f"Generated by `python benchmarks/leaderboard.py{' --quick' if meta['quick'] else ''}` "
        f"({meta['date']}, {meta['platform']}, JAX {meta['jax']}, {meta['cpus']} CPUs, load at start "
        f"{meta['load_at_start']}); the whole run took {meta['seconds'] / 60:.1f} min. Raw numbers: "
        "`leaderboard_results.json`.",
        "",
        "Method: every optimizer is tuned by `gradtx.sweep` (all configurations in one vmapped program) over a "
        "log grid of learning rates half a decade apart centred on its usual value (and one more hyperparameter "
        "where it has one, first value = gradtx's default) on seed 0 for the tuning budget; the score is the mean "
        "training loss over the last 10% of the steps. The best configuration is rerun on seeds 0, 1, 2 for the "
        "full budget. Parameter-free methods run at their defaults only. Same data, steps and seeds for every "
        "optimizer.",
        "",
        "Ranked by the final training loss to 4 significant digits; ties (the convex problem's common minimum) "
        "by the steps to the target. "
        "Columns: *train loss*: mean over the 3 seeds of the mean training loss over the last 10% of the steps "
        "(± the seeds' standard deviation); *valid loss*: held-out loss after the last step; *steps / s to* "
        "the target: first step where the seeds' median loss (trailing mean over 5% of the run) reaches the "
        "target, and that many steps times the step time; *state B/param*: optimizer state bytes per parameter; "
        "*ms/step*: wall time of the 3-seed run per step and seed (compilation excluded; a shared machine); "
        "*repro*: for how many of the tuning steps the independent 3-seed program's seed-0 loss curve equals "
        "the sweep's curve of the chosen configuration (to 1e-4 relative); *same as Optax*: for how many steps "
        "the same 3-seed run with Optax gives the same losses on every seed (to 1e-4), and in brackets the "
        "largest relative difference over the whole run; *time vs Optax*: median of interleaved pair-by-pair "
        "ratios of the 3-seed run times, gradtx / Optax (wall; CPU time in brackets). Float32 training of a "
        "network is chaotic: runs that round differently at step 1 drift apart exponentially (see Notes). "
        "*(grid low/high edge)*: the best learning rate was at the end of the grid. If the sweep's best "
        "configuration diverged in the 3-seed rerun, the next best was rerun (noted in the config column).",
        "",
    ]
    for name, entry in data["workloads"].items():
        budget = entry["budget"]
        parts += [
            f"## {name}",
            "",
            entry["description"],
            "",
            f"Budget: tune {budget['tune_steps']} steps, {budget['lr_points']} learning rates"
            f"{' x ' + str(budget['extra_values']) + ' values of the second hyperparameter' if budget['extra_values'] > 1 else ''}"  # noqa: E501
            f"; final {budget['full_steps']} steps x 3 seeds; target loss {budget['target']:g}. "
            f"{entry['parameters']:,} parameters; this workload took {entry['seconds'] / 60:.1f} min.",
            "",
            workload_table(name, entry["optimizers"], Budget(**budget)),
            "",
        ]
        for png in entry.get("plots", []):
            parts += [f"![{png}]({png})", ""]
        if entry.get("failed"):
            parts += ["Not run (raised at construction or trace time):", ""]
            parts += [f"- {opt}: {why}" for opt, why in entry["failed"].items()] + [""]
    if data.get("sweep_vs_loops"):
        parts += [
            "## Sweep vs loops (64 Adam configurations: 16 learning rates x 4 b2)",
            "",
            "*vmapped sweep*: `gradtx.sweep` (`jit(vmap(train))`, its program cached); *compile-once loop*: "
            "`jax.jit(train)` compiled once with the hyperparameters as traced arguments, called 64 times; "
            "*rebuilding loop*: a fresh optimizer with Python-number hyperparameters and a fresh `jax.jit` per "
            "configuration (so one compilation each), timed on a few configurations and scaled to 64. Sweep and "
            "compile-once loop are interleaved; *loop / sweep* is the median of the pair-by-pair ratios. "
            "GFLOP/s: XLA's cost analysis of each program divided by its wall time.",
            "",
            loops_table(data["sweep_vs_loops"]),
            "",
            data.get("sweep_vs_loops_discussion", ""),
            "",
        ]
    if data.get("notes"):
        parts += ["## Notes", "", data["notes"], ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Driver.


def _progress(total: int, quiet: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    if tqdm is not None and not quiet:
        return tqdm(total=total, dynamic_ncols=True, file=sys.stderr)

    class Plain:  # a minimal bar: one line per finished task
        def __init__(self) -> None:
            self.done = 0

        def set_description(self, text: str) -> None:
            self.text = text

        def update(self, count: int = 1) -> None:
            self.done += count
            if not quiet:
                print(f"[{self.done}/{total}] {self.text}", file=sys.stderr, flush=True)

        def close(self) -> None:
            pass

    return Plain()


def run(
    quick: bool,
    workload_names: Sequence[str] = WORKLOAD_NAMES,
    optimizer_names: Sequence[str] | None = None,
    loops: bool = True,
    optax_compare: str = "auto",
    timing_rounds: int = 3,
    quiet: bool = False,
) -> dict:
    """Runs the leaderboard and returns the JSON-ready results (nothing is written)."""
    budgets = QUICK if quick else FULL
    if optimizer_names is None and quick:
        optimizer_names = QUICK_OPTIMIZERS
    entries = registry(optimizer_names)
    started = time.perf_counter()
    data: dict[str, Any] = {
        "meta": {
            "quick": quick,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "platform": platform.platform(),
            "jax": jax.__version__,
            "cpus": os.cpu_count(),
            "load_at_start": " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
            "seeds": list(SEEDS),
        },
        "workloads": {},
        "sweep_vs_loops": {},
    }
    tasks = [(w, e) for w in workload_names for e in entries if not (e.full_batch_only and w != "logistic_regression")]
    bar = _progress(len(tasks) + (len(workload_names) if loops else 0), quiet)
    for name in workload_names:
        workload, budget = make_workload(name), budgets[name]
        workload_started = time.perf_counter()
        results, failed = {}, {}
        for entry in entries:
            if entry.full_batch_only and not workload.full_batch:
                continue
            bar.set_description(f"{name}: {entry.name}")
            if optax_compare == "all":
                compare = True
            elif optax_compare == "none":
                compare = False
            else:
                compare = name == "logistic_regression" or entry.name in OPTAX_CORE
            try:
                results[entry.name] = evaluate(workload, entry, budget, compare, timing_rounds)
            except Exception as error:  # noqa: BLE001 - reported in the results, never silently
                failed[entry.name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            bar.update()
        params = workload.init_params(jax.random.PRNGKey(0))
        data["workloads"][name] = {
            "description": (workloads.logistic_regression.__doc__ if name == "logistic_regression"
                            else _describe(name)).strip().splitlines()[0],
            "parameters": workloads.num_params(params),
            "budget": dataclasses.asdict(budget),
            "optimizers": results,
            "failed": failed,
        }
        if loops:
            bar.set_description(f"{name}: sweep vs loops")
            data["sweep_vs_loops"][name] = sweep_vs_loops(workload, budget, rounds=timing_rounds)
            bar.update()
        data["workloads"][name]["seconds"] = time.perf_counter() - workload_started
    bar.close()
    data["meta"]["seconds"] = time.perf_counter() - started
    return data


def _describe(name: str) -> str:
    if name == "digits_cnn":
        return ("Two-convolution CNN on scikit-learn's 8x8 digits (`workloads.digits_cnn(conv=\"patches\")`: the same "
                "network as the default, its convolutions written as patches x kernel, see below), batches of 128.")
    return ("Character-level transformer on the Python standard library's source, at a reduced size: "
            "`workloads.stdlib_char_lm(width=64, layers=2, heads=4, context=32, batch_size=16)`.")


def write(data: dict, out_dir: pathlib.Path, notes: str = "", discussion: str = "") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in data["workloads"].items():
        entry["plots"] = plot(name, entry["optimizers"], out_dir) if entry["optimizers"] else []
    if notes:
        data["notes"] = notes
    if discussion:
        data["sweep_vs_loops_discussion"] = discussion
    (out_dir / "leaderboard_results.json").write_text(json.dumps(data, indent=1, allow_nan=False, default=_jsonable))
    (out_dir / "LEADERBOARD.md").write_text(markdown(data))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget and a few optimizers (CI)")
    parser.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    parser.add_argument("--optimizers", default=None, help="comma-separated registry names (default: all)")
    parser.add_argument("--optax", choices=("auto", "all", "none"), default="auto",
                        help="Optax comparisons: auto = every pair on logistic regression, a core set elsewhere")
    parser.add_argument("--no-loops", action="store_true", help="skip the sweep-vs-loops timing")
    parser.add_argument("--out", default=str(HERE), help="folder for LEADERBOARD.md, the JSON and the PNGs")
    parser.add_argument("--notes", default=str(HERE / "leaderboard_notes.md"),
                        help="a markdown file appended to LEADERBOARD.md as Notes (default: the committed one)")
    parser.add_argument("--discussion", default=None, help="a markdown file placed under the sweep-vs-loops table")
    parser.add_argument("--loops-only", action="store_true",
                        help="rerun only the sweep-vs-loops timing and merge it into the existing JSON in --out")
    parser.add_argument("--render", action="store_true", help="rewrite LEADERBOARD.md and the PNGs from the JSON")
    parser.add_argument("--merge", action="store_true",
                        help="run only --optimizers and add (or replace) their results in the existing JSON in --out")
    args = parser.parse_args()
    read = lambda path: pathlib.Path(path).read_text() if path and pathlib.Path(path).exists() else ""  # noqa: E731
    out = pathlib.Path(args.out)
    if args.loops_only or args.render:
        data = json.loads((out / "leaderboard_results.json").read_text())
        budgets = QUICK if data["meta"]["quick"] else FULL
        for name in args.workloads.split(",") if args.loops_only else []:
            print(f"{name}: sweep vs loops", flush=True)
            data["sweep_vs_loops"][name] = sweep_vs_loops(make_workload(name), budgets[name], rounds=3)
        write(data, out, notes=read(args.notes), discussion=read(args.discussion))
        return
    if args.merge:  # same workloads, budgets, seeds and targets as the published run
        data = json.loads((out / "leaderboard_results.json").read_text())
        if data["meta"]["quick"] != args.quick:
            raise SystemExit("--merge: the existing results were made in the other mode (--quick or not)")
        for name in args.workloads.split(","):
            part = run(
                args.quick,
                workload_names=[name],
                optimizer_names=None if args.optimizers is None else args.optimizers.split(","),
                loops=False,
                optax_compare=args.optax,
                timing_rounds=2 if args.quick else 5,
            )
            data["workloads"][name]["optimizers"].update(part["workloads"][name]["optimizers"])
            data["workloads"][name]["failed"].update(part["workloads"][name]["failed"])
            data["meta"]["seconds"] += part["meta"]["seconds"]
            write(data, out, notes=read(args.notes), discussion=read(args.discussion))
        return
    data: dict[str, Any] = {}
    for name in args.workloads.split(","):  # written after each workload, so a long run keeps what it finished
        part = run(
            args.quick,
            workload_names=[name],
            optimizer_names=None if args.optimizers is None else args.optimizers.split(","),
            loops=not args.no_loops,
            optax_compare=args.optax,
            timing_rounds=2 if args.quick else 5,
        )
        if not data:
            data = part
        else:
            data["workloads"].update(part["workloads"])
            data["sweep_vs_loops"].update(part["sweep_vs_loops"])
            data["meta"]["seconds"] += part["meta"]["seconds"]
        write(data, pathlib.Path(args.out), notes=read(args.notes), discussion=read(args.discussion))
    print(f"done in {data['meta']['seconds'] / 60:.1f} min -> {args.out}/LEADERBOARD.md")


if __name__ == "__main__":
    main()
