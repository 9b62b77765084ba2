"""``python -m gradtx.demo``: train one small network with every first-order optimizer and compare.

The data are scikit-learn's handwritten digits (8x8 images, shipped with scikit-learn, no
download). Each optimizer trains the same MLP from the same initialization, full batch, and the
demo prints the final training loss, the test accuracy and the wall time of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

OPTIMIZERS: dict[str, Callable[[], gradtx.GradientTransformation]] = {
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


def load_digits(seed: int = 0):
    """Standardised digits, split 80/20 into train and test."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:  # pragma: no cover - exercised only without the demo extra
        sys.exit('The demo needs scikit-learn: pip install -e ".[demo]"')
    digits = sklearn_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    mean, std = x[:split].mean(0), x[:split].std(0) + 1e-3
    x = (x - mean) / std
    return (jnp.asarray(x[:split]), jnp.asarray(y[:split])), (jnp.asarray(x[split:]), jnp.asarray(y[split:]))


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict]:
    """He-normal weights (variance 2 / fan_in) and zero biases."""
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        weights = jax.random.normal(sub, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in)
        layers.append({"w": weights, "b": jnp.zeros(fan_out)})
    return layers


def mlp(params: list[dict], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def cross_entropy(params: list[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(mlp(params, x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def train(optimizer: gradtx.GradientTransformation, params, data, steps: int):
    (x, y), (x_test, y_test) = data
    state = optimizer.init(params)

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(cross_entropy)(params, x, y)
        updates, state = optimizer.update(grads, state, params)
        return (gradtx.apply_updates(params, updates), state), loss

    @jax.jit
    def run(params, state):
        (params, state), losses = jax.lax.scan(step, (params, state), None, length=steps)
        accuracy = jnp.mean(jnp.argmax(mlp(params, x_test), -1) == y_test)
        return losses, cross_entropy(params, x, y), accuracy

    start = time.perf_counter()
    losses, final_loss, accuracy = jax.block_until_ready(run(params, state))
    return np.asarray(losses), float(final_loss), float(accuracy), time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gradtx.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--optimizers", default=",".join(OPTIMIZERS), help=f"comma-separated subset of: {', '.join(OPTIMIZERS)}"
    )
    parser.add_argument("--steps", type=int, default=300, help="full-batch training steps (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="initialization seed (default 0)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.optimizers.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(OPTIMIZERS)}")
    if args.steps <= 0:
        parser.error("--steps must be positive")
    args.optimizers = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_digits()
    params = init_mlp(jax.random.PRNGKey(args.seed), (64, 128, 10))
    print(f"Digits: {data[0][0].shape[0]} train / {data[1][0].shape[0]} test; MLP 64-128-10; {args.steps} steps")
    print(f"{'optimizer':<10} {'train loss':>11} {'test acc':>9} {'time (s)':>9}")
    for name in args.optimizers:
        _, final_loss, accuracy, seconds = train(OPTIMIZERS[name](), params, data, args.steps)
        print(f"{name:<10} {final_loss:>11.4f} {accuracy:>9.3f} {seconds:>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
