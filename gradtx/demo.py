"""``python -m gradtx.demo``: every optimizer on one network, a second-order method, and their paths.

1. One MLP built from ``gradtx.nn`` (dense 64-128 with He initialization, batch norm, ReLU, dense
   128-10) is trained on scikit-learn's handwritten digits (8x8 images, shipped with
   scikit-learn, no download), full batch, from the same initialization with every first-order
   named optimizer.
2. A second-order method (L-BFGS by default) fits L2-regularized multinomial logistic regression
   on the same data.
3. The first-order methods are run on three 2-D test surfaces (a ravine, Rosenbrock, a saddle).

It prints a table (final training loss, test accuracy, compile and run time) and writes a PNG with
the loss curves beside the optimizer paths drawn on contour plots of the surfaces.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from gradtx import nn
from gradtx.demo_surfaces import PATH_OPTIMIZERS, SURFACES, contour, optimizer_paths
from gradtx.second_order import lbfgs, newton

# Learning rates for the batch-normalized MLP below, full batch.
FIRST_ORDER: dict[str, Callable[[], gradtx.GradientTransformation]] = {
    "sgd": lambda: gradtx.sgd(0.5),
    "momentum": lambda: gradtx.sgd(0.1, momentum=0.9),
    "nesterov": lambda: gradtx.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: gradtx.adagrad(0.05),
    "rmsprop": lambda: gradtx.rmsprop(1e-3),
    "adadelta": lambda: gradtx.adadelta(),
    "adam": lambda: gradtx.adam(3e-3),
    "adamw": lambda: gradtx.adamw(3e-3, weight_decay=1e-3),
    "adamax": lambda: gradtx.adamax(5e-3),
    "nadam": lambda: gradtx.nadam(3e-3),
    "amsgrad": lambda: gradtx.amsgrad(3e-3),
    "rprop": lambda: gradtx.rprop(1e-3),
    "sign_sgd": lambda: gradtx.sign_sgd(1e-3),
}
# Second-order methods take the objective as ``value_fn`` in ``update`` (and f, grad f as ``value``, ``grad``).
SECOND_ORDER: dict[str, Callable[[], gradtx.GradientTransformation]] = {
    "lbfgs": lambda: lbfgs(memory_size=10),
    "newton": lambda: newton(),
}
DEFAULT_OPTIMIZERS = (*FIRST_ORDER, "lbfgs")
HIDDEN = 128
L2 = 1e-3  # logistic regression's penalty L2 / 2 * ||W||^2 keeps its minimizer finite


class Result(NamedTuple):
    """One row of the table, and the loss curve behind it."""

    name: str
    model: str
    losses: np.ndarray
    train_loss: float
    test_accuracy: float
    compile_seconds: float
    run_seconds: float


Data = tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"python -m gradtx.demo: error: {message}\n")
    raise SystemExit(2)


def _require_demo_extra() -> None:
    import importlib.util

    missing = [name for name in ("sklearn", "matplotlib", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        _fail(f'the demo needs {", ".join(missing)}: pip install -e ".[demo]"')


def load_digits(seed: int = 0) -> Data:
    """Scikit-learn's digits, standardized with training statistics, split 80/20 at random."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-3
    x = (x - mean) / std
    return (jnp.asarray(x[:split]), jnp.asarray(y[:split])), (jnp.asarray(x[split:]), jnp.asarray(y[split:]))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean of ``-log softmax(logits)[label]``."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


# The MLP: batch norm replaces the hidden layer's bias.
HIDDEN_LAYER = nn.dense(64, HIDDEN, use_bias=False, kernel_init=nn.he_normal())
NORM = nn.batch_norm(HIDDEN, momentum=0.9)
OUTPUT_LAYER = nn.dense(HIDDEN, 10, kernel_init=nn.he_normal())


def init_mlp(key: jax.Array) -> tuple[dict[str, Any], nn.BatchNormState]:
    """Parameters ``{"hidden", "norm", "output"}`` and the batch-norm running statistics."""
    hidden_key, output_key = jax.random.split(key)
    hidden, _ = HIDDEN_LAYER.init(hidden_key)
    norm, norm_state = NORM.init(None)
    output, _ = OUTPUT_LAYER.init(output_key)
    return {"hidden": hidden, "norm": norm, "output": output}, norm_state


def mlp(
    params: dict[str, Any], norm_state: nn.BatchNormState, x: jax.Array, train: bool
) -> tuple[jax.Array, nn.BatchNormState]:
    """Logits of ``dense -> batch_norm -> relu -> dense`` and the updated running statistics."""
    h, _ = HIDDEN_LAYER.apply(params["hidden"], nn.EmptyState(), x, train=train)
    h, norm_state = NORM.apply(params["norm"], norm_state, h, train=train)
    logits, _ = OUTPUT_LAYER.apply(params["output"], nn.EmptyState(), nn.relu(h), train=train)
    return logits, norm_state


def _timed(fn: Callable, *args: Any) -> tuple[Any, float, float]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_seconds, time.perf_counter() - start


def train_mlp(name: str, optimizer: gradtx.GradientTransformation, data: Data, steps: int, seed: int) -> Result:
    """Full-batch training with ``jax.lax.scan``; the reported loss is the final model's (eval mode)."""
    (x, y), (x_test, y_test) = data

    def loss_fn(params, norm_state):
        logits, norm_state = mlp(params, norm_state, x, train=True)
        return cross_entropy(logits, y), norm_state

    def step(carry, _):
        params, norm_state, opt_state = carry
        (loss, norm_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, norm_state)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (gradtx.apply_updates(params, updates), norm_state, opt_state), loss

    def run(params, norm_state):
        carry = (params, norm_state, optimizer.init(params))
        (params, norm_state, _), losses = jax.lax.scan(step, carry, None, length=steps)
        train_loss = cross_entropy(mlp(params, norm_state, x, train=False)[0], y)
        accuracy = jnp.mean(jnp.argmax(mlp(params, norm_state, x_test, train=False)[0], -1) == y_test)
        return losses, train_loss, accuracy

    params, norm_state = init_mlp(jax.random.PRNGKey(seed))
    (losses, train_loss, accuracy), compile_s, run_s = _timed(run, params, norm_state)
    return Result(name, "MLP", np.asarray(losses), float(train_loss), float(accuracy), compile_s, run_s)


def fit_logistic_regression(name: str, optimizer: gradtx.GradientTransformation, data: Data, steps: int) -> Result:
    """``min_W,b mean CE(x W + b, y) + L2 / 2 ||W||^2`` from zero, ``steps`` second-order updates."""
    (x, y), (x_test, y_test) = data

    def objective(params):
        logits = x @ params["w"] + params["b"]
        return cross_entropy(logits, y) + 0.5 * L2 * jnp.sum(params["w"] ** 2)

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(objective)(params)
        updates, state = optimizer.update(grads, state, params, value=loss, grad=grads, value_fn=objective)
        return (gradtx.apply_updates(params, updates), state), loss

    def run(params):
        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
        accuracy = jnp.mean(jnp.argmax(x_test @ params["w"] + params["b"], -1) == y_test)
        return losses, objective(params), accuracy

    params = {"w": jnp.zeros((x.shape[1], 10)), "b": jnp.zeros(10)}
    (losses, loss, accuracy), compile_s, run_s = _timed(run, params)
    return Result(name, "logreg", np.asarray(losses), float(loss), float(accuracy), compile_s, run_s)


def format_table(results: Sequence[Result]) -> str:
    """The results as a fixed-width text table, one optimizer per row."""
    # Cross-entropy is >= 0; float32 rounding can leave -1e-9 for a memorized training set.
    lines = [f"{'optimizer':<10} {'model':<7} {'train loss':>10} {'test acc':>9} {'compile s':>10} {'run s':>7}"]
    for r in results:
        lines.append(
            f"{r.name:<10} {r.model:<7} {np.maximum(r.train_loss, 0.0) + 0.0:>10.4f} {r.test_accuracy:>9.3f} "
            f"{r.compile_seconds:>10.2f} {r.run_seconds:>7.2f}"
        )
    return "\n".join(lines)


def plot(results: Sequence[Result], paths: dict[str, np.ndarray], out: str) -> None:
    """Loss curves (MLP above, logistic regression below) beside the paths on the three surfaces."""
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    names = list(dict.fromkeys([r.name for r in results] + list(paths)))
    palette = colormaps["tab20"].colors
    palette = palette[::2] + palette[1::2]  # ten distinct colors first, then their lighter pairs
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    figure = Figure(figsize=(19, 6.2), layout="constrained")
    grid = figure.add_gridspec(2, 4, width_ratios=(1.25, 1, 1, 1))
    for row, model, title in ((0, "MLP", "MLP on digits: training loss"), (1, "logreg", "logistic regression")):
        ax = figure.add_subplot(grid[row, 0])
        for r in results:
            if r.model == model:
                finite = np.where(np.isfinite(r.losses), r.losses, np.nan)
                ax.plot(np.arange(len(finite)), finite, color=colors[r.name], lw=1.4, label=r.name)
        ax.set_yscale("log")
        if ax.get_ylim()[0] < 1e-5:  # a run that memorizes the training set would squash the rest
            ax.set_ylim(bottom=1e-5)
        ax.set_xlabel("step" if model == "MLP" else "iteration")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2 if model == "MLP" else 1)
    for index, surface in enumerate(SURFACES):
        ax = figure.add_subplot(grid[:, index + 1])
        contour(ax, surface)
        for name, path in paths.items():
            ax.plot(path[index, :, 0], path[index, :, 1], color=colors[name], lw=1.5, label=name)
        ax.plot(*surface.start, "o", color="k", ms=4)
        if index == 0 and paths:
            ax.legend(fontsize=7, loc="lower right")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    figure.savefig(out, dpi=90)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see --help)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; errors end the program with one line on stderr and exit status 2."""
    choices = [*FIRST_ORDER, *SECOND_ORDER]
    parser = _Parser(
        prog="python -m gradtx.demo",
        description=__doc__.split("\n\n")[0].strip("`").replace("``", ""),
        epilog="Needs the demo extra: pip install -e \".[demo]\".",
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help=f"comma-separated, from: {', '.join(choices)} (default: all first-order ones and lbfgs)",
    )
    parser.add_argument(
        "--steps", type=int, default=300, help="MLP training steps, and 2-D path steps up to 500 (default 300)"
    )
    parser.add_argument("--second-order-steps", type=int, default=40, help="second-order iterations (default 40)")
    parser.add_argument("--out", default="demo_output/gradtx_demo.png", help="where to write the PNG")
    parser.add_argument("--seed", type=int, default=0, help="initialization seed (default 0)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.optimizers.split(",") if name.strip()]
    unknown = [name for name in names if name not in choices]
    if unknown:
        parser.error(f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(choices)}")
    if not names:
        parser.error("--optimizers is empty")
    if args.steps <= 0 or args.second_order_steps <= 0:
        parser.error("--steps and --second-order-steps must be positive")
    if not args.out.lower().endswith(".png"):
        parser.error(f"--out must name a .png file, got {args.out!r}")
    args.optimizers = list(dict.fromkeys(names))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns the exit status."""
    args = parse_args(argv)
    _require_demo_extra()
    from tqdm.auto import tqdm

    wall, cpu = time.perf_counter(), time.process_time()
    data = load_digits(args.seed)
    (x, _), (x_test, _) = data
    print(f"Digits: {x.shape[0]} train / {x_test.shape[0]} test images. MLP 64-{HIDDEN}-10 (He init, batch norm), "
          f"full batch, {args.steps} steps; logistic regression, {args.second_order_steps} second-order iterations.")
    path_names = [name for name in args.optimizers if name in PATH_OPTIMIZERS]
    results: list[Result] = []
    paths: dict[str, np.ndarray] = {}
    with tqdm(total=len(args.optimizers) + bool(path_names), desc="gradtx demo", unit="run", file=sys.stderr) as bar:
        for name in args.optimizers:
            bar.set_postfix_str(name)
            if name in FIRST_ORDER:
                results.append(train_mlp(name, FIRST_ORDER[name](), data, args.steps, args.seed))
            else:
                results.append(fit_logistic_regression(name, SECOND_ORDER[name](), data, args.second_order_steps))
            bar.update()
        if path_names:
            bar.set_postfix_str("paths on 2-D surfaces")
            paths = optimizer_paths(path_names, num_steps=min(args.steps, 500))
            bar.update()
    print(format_table(results))
    plot(results, paths, args.out)
    print(f"Wrote {args.out}. Total {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
