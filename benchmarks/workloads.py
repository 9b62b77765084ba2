"""Small real training workloads that run anywhere without a download, for judging optimizers.

* ``digits_cnn()``: a convolutional net on scikit-learn's 8x8 handwritten digits (1797 images,
  10 classes; 1500 for training, 297 held out). Two 3x3 convolutions (16 and 32 channels, the
  second with stride 2, ``jax.lax.conv_general_dilated``), a dense layer of 64 and the 10-way
  output: 38K parameters, cross-entropy loss, batches of 128.
* ``stdlib_char_lm()``: a character-level transformer language model trained on the Python
  standard library's own source (``FILES`` under ``sysconfig.get_paths()["stdlib"]``, read in
  that order: the same text on every machine with the same Python version). Bytes >= 128 become
  ``?``; vocabulary 128. Two pre-norm blocks of width 96 with 4 heads, context 64, learned
  positions: 250K parameters, next-character cross-entropy (nats), batches of 16 windows. The
  last 10% of the text is held out.
* ``logistic_regression()``: L2-regularized multinomial logistic regression on the same digits
  (standardized pixels, the same 1500 / 297 split), full batch: 650 parameters, a strongly
  convex objective. Not in ``WORKLOADS`` (the scripts that iterate over it keep their results);
  ``benchmarks/leaderboard.py`` uses all three.

The interface every benchmark can reuse (the leaderboard, preconditioners, low-bit states)::

    workload = workloads.digits_cnn()          # or stdlib_char_lm(), or WORKLOADS[name]()
    workload.name                               # "digits_cnn"
    params = workload.init_params(key)          # a dict of float32 arrays
    batches = workload.batches(seed, steps)     # a pytree of arrays with a leading axis of length steps
    value = workload.loss(params, batch)        # scalar training loss on one batch (differentiable)
    value = workload.eval_loss(params)          # scalar loss on the held-out data
    result = workloads.train(workload, optimizer, seeds=(0, 1, 2), steps=workload.steps)

``train`` runs ``init`` and all steps in one jit-compiled ``lax.scan``, ``vmap``-ed over the seeds
(one compilation for all of them), and returns the per-step training losses, the held-out losses,
the final parameters and optimizer states, each with a leading seeds axis. A seed sets both the
initialization and the order of the batches. ``workload.steps`` is the default length of a run (a minute or two on 2
busy CPU cores); ``--quick`` runs in the scripts use fewer.

    python benchmarks/workloads.py            # trains both with AdamW and prints the losses
"""

from __future__ import annotations

import os
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradtx

Params = dict[str, jax.Array]
Batch = Any


@dataclass(frozen=True)
class Workload:
    """A training problem: parameters, a loss on batches, a batch stream and a held-out loss."""

    name: str
    init_params: Callable[[jax.Array], Params]
    loss: Callable[[Params, Batch], jax.Array]
    batches: Callable[[int, int], Batch]
    eval_loss: Callable[[Params], jax.Array]
    steps: int
    learning_rate: float  # a good AdamW learning rate for ``steps`` steps
    full_batch: bool = False  # every step sees the whole training set (the batches are placeholders)


class TrainResult(NamedTuple):
    losses: np.ndarray  # [seeds, steps]: the training loss of each step's batch, before the update
    eval_loss: np.ndarray  # [seeds]: the held-out loss after the last step
    params: Params  # final parameters, each leaf with a leading seeds axis
    state: Any  # final optimizer state, each leaf with a leading seeds axis


def train(
    workload: Workload,
    optimizer: gradtx.GradientTransformation,
    seeds: tuple[int, ...] = (0,),
    steps: int | None = None,
) -> TrainResult:
    """Trains ``workload`` with ``optimizer`` once per seed, all seeds at once (``vmap``) in one jitted scan."""
    steps = workload.steps if steps is None else steps
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in seeds])
    params = jax.vmap(workload.init_params)(keys)
    batches = jax.tree.map(lambda *xs: jnp.stack(xs), *[workload.batches(seed, steps) for seed in seeds])

    def run(params, batches):
        def step(carry, batch):
            params, state = carry
            value, grads = jax.value_and_grad(workload.loss)(params, batch)
            updates, state = optimizer.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), value

        (params, state), losses = jax.lax.scan(step, (params, optimizer.init(params)), batches)
        return params, state, losses, workload.eval_loss(params)

    params, state, losses, held_out = jax.jit(jax.vmap(run))(params, batches)
    return TrainResult(np.asarray(losses), np.asarray(held_out), params, state)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def _glorot(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int) -> jax.Array:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


# ---------------------------------------------------------------------------------------------
# Digits CNN.


def digits_cnn(batch_size: int = 128, conv: str = "xla") -> Workload:
    """A two-convolution network on scikit-learn's 8x8 digits (see the module docstring).

    ``conv="xla"`` (the default) convolves with ``jax.lax.conv_general_dilated``. ``conv="patches"``
    computes the same convolutions as image patches (``conv_general_dilated_patches``) times the
    kernel: the same function, equal to float32 rounding, but 15-30x faster inside a ``lax.scan``
    on XLA:CPU, whose kernel-gradient convolution in a loop body is ~100x slower than the same
    convolution outside a loop (measured on JAX 0.10.2). The leaderboard uses ``"patches"``.
    """
    if conv not in ("xla", "patches"):
        raise ValueError(f"digits_cnn: conv must be 'xla' or 'patches', got {conv!r}.")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # NHWC, values in [0, 1]
    labels = digits.target.astype(np.int32)
    train_x, train_y = images[:1500], labels[:1500]
    test_x, test_y = jnp.asarray(images[1500:]), jnp.asarray(labels[1500:])

    def init_params(key: jax.Array) -> Params:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return {
            "conv1": _glorot(k1, (3, 3, 1, 16), 9, 9 * 16),
            "conv1_bias": jnp.zeros(16, jnp.float32),
            "conv2": _glorot(k2, (3, 3, 16, 32), 9 * 16, 9 * 32),
            "conv2_bias": jnp.zeros(32, jnp.float32),
            "dense": _glorot(k3, (4 * 4 * 32, 64), 512, 64),
            "dense_bias": jnp.zeros(64, jnp.float32),
            "out": _glorot(k4, (64, 10), 64, 10),
            "out_bias": jnp.zeros(10, jnp.float32),
        }

    dimensions = ("NHWC", "HWIO", "NHWC")

    def convolve(x, kernel, bias, stride):
        if conv == "xla":
            y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=dimensions)
        else:  # patches: [N, H, W, C * 3 * 3], features ordered (C, kh, kw)
            patches = jax.lax.conv_general_dilated_patches(x, (3, 3), (stride, stride), "SAME",
                                                           dimension_numbers=dimensions)
            y = patches @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, kernel.shape[-1])
        return jax.nn.relu(y + bias)

    def logits(params, x):
        h = convolve(x, params["conv1"], params["conv1_bias"], 1)  # 8x8x16
        h = convolve(h, params["conv2"], params["conv2_bias"], 2)  # 4x4x32
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ params["dense"] + params["dense_bias"])
        return h @ params["out"] + params["out_bias"]

    def loss(params, batch):
        x, y = batch
        return _cross_entropy(logits(params, x), y)

    def batches(seed: int, steps: int):
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(train_x)) for _ in range(steps * batch_size // len(train_x) + 1)])
        index = order[: steps * batch_size].reshape(steps, batch_size)
        return jnp.asarray(train_x[index]), jnp.asarray(train_y[index])

    return Workload(
        name="digits_cnn",
        init_params=init_params,
        loss=loss,
        batches=batches,
        eval_loss=lambda params: _cross_entropy(logits(params, test_x), test_y),
        steps=150,
        learning_rate=1e-3,
    )


# ---------------------------------------------------------------------------------------------
# Character-level transformer on the standard library's source.

FILES = (
    "functools.py",
    "textwrap.py",
    "argparse.py",
    "dataclasses.py",
    "fractions.py",
    "heapq.py",
    "bisect.py",
    "string.py",
    "shlex.py",
    "statistics.py",
)


def stdlib_text(files: tuple[str, ...] = FILES) -> np.ndarray:
    """The bytes of ``files`` (paths under the standard library), concatenated; >= 128 becomes ``?``."""
    root = sysconfig.get_paths()["stdlib"]
    chunks = []
    for name in files:
        with open(os.path.join(root, name), "rb") as file:
            chunks.append(np.frombuffer(file.read(), np.uint8))
    text = np.concatenate(chunks).astype(np.int32)
    return np.where(text < 128, text, ord("?")).astype(np.int32)


def stdlib_char_lm(
    width: int = 96, layers: int = 2, heads: int = 4, context: int = 64, batch_size: int = 16
) -> Workload:
    """A small character-level transformer on the standard library's source (see the module docstring)."""
    text = stdlib_text()
    split = int(0.9 * len(text))
    train_text, test_text = text[:split], text[split:]
    vocab = 128
    eval_starts = np.linspace(0, len(test_text) - context - 2, 64).astype(np.int64)
    eval_windows = jnp.asarray(np.stack([test_text[s : s + context + 1] for s in eval_starts]))

    def init_params(key: jax.Array) -> Params:
        keys = iter(jax.random.split(key, 3 + 4 * layers))
        params = {
            "embedding": 0.02 * jax.random.normal(next(keys), (vocab, width), jnp.float32),
            "positions": 0.02 * jax.random.normal(next(keys), (context, width), jnp.float32),
            "final_norm": jnp.ones(width, jnp.float32),
            "head": _glorot(next(keys), (width, vocab), width, vocab),
        }
        for i in range(layers):
            params |= {
                f"block{i}_norm1": jnp.ones(width, jnp.float32),
                f"block{i}_qkv": _glorot(next(keys), (width, 3 * width), width, width),
                f"block{i}_out": _glorot(next(keys), (width, width), width, width) / float(np.sqrt(2 * layers)),
                f"block{i}_norm2": jnp.ones(width, jnp.float32),
                f"block{i}_mlp_in": _glorot(next(keys), (width, 4 * width), width, 4 * width),
                f"block{i}_mlp_out": _glorot(next(keys), (4 * width, width), 4 * width, width)
                / float(np.sqrt(2 * layers)),
            }
        return params

    def norm(x, scale):
        return scale * x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6)

    causal = jnp.tril(jnp.ones((context, context), bool))

    def logits(params, tokens):
        batch, length = tokens.shape
        h = params["embedding"][tokens] + params["positions"][:length]
        for i in range(layers):
            q, k, v = jnp.split(norm(h, params[f"block{i}_norm1"]) @ params[f"block{i}_qkv"], 3, axis=-1)
            split_heads = lambda t: t.reshape(batch, length, heads, width // heads)
            scores = jnp.einsum("bqhd,bkhd->bhqk", split_heads(q), split_heads(k)) / float(np.sqrt(width // heads))
            scores = jnp.where(causal[:length, :length], scores, -1e9)
            attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), split_heads(v))
            h = h + attended.reshape(batch, length, width) @ params[f"block{i}_out"]
            mlp = jax.nn.gelu(norm(h, params[f"block{i}_norm2"]) @ params[f"block{i}_mlp_in"])
            h = h + mlp @ params[f"block{i}_mlp_out"]
        return norm(h, params["final_norm"]) @ params["head"]

    def loss(params, windows):
        return _cross_entropy(logits(params, windows[:, :-1]), windows[:, 1:])

    def batches(seed: int, steps: int):
        rng = np.random.default_rng(seed)
        starts = rng.integers(0, len(train_text) - context - 1, (steps, batch_size))
        return jnp.asarray(train_text[starts[..., None] + np.arange(context + 1)])

    return Workload(
        name="stdlib_char_lm",
        init_params=init_params,
        loss=loss,
        batches=batches,
        eval_loss=lambda params: loss(params, eval_windows),
        steps=300,
        learning_rate=3e-3,
    )


# ---------------------------------------------------------------------------------------------
# L2-regularized logistic regression (full batch).


def logistic_regression(l2: float = 1e-3) -> Workload:
    """Multinomial logistic regression on scikit-learn's digits, L2-regularized, full batch.

    The 64 pixel features are standardized with the training set's mean and standard deviation
    (the same 1500 / 297 split as ``digits_cnn``). The training objective is the mean
    cross-entropy over all 1500 training images plus ``l2 / 2 * ||W||^2`` (the bias is not
    penalized): strongly convex, with a unique minimizer. The held-out loss is the cross-entropy
    on the 297 other images (no penalty). 650 parameters, initialized at ``N(0, 0.01^2)`` (the
    seed changes only the initialization: every step sees the whole training set).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    features = digits.data.astype(np.float32)
    mean, std = features[:1500].mean(0), features[:1500].std(0) + 1e-3
    features = (features - mean) / std
    labels = digits.target.astype(np.int32)
    train_x, train_y = jnp.asarray(features[:1500]), jnp.asarray(labels[:1500])
    test_x, test_y = jnp.asarray(features[1500:]), jnp.asarray(labels[1500:])

    def init_params(key: jax.Array) -> Params:
        return {"w": 0.01 * jax.random.normal(key, (64, 10), jnp.float32), "b": jnp.zeros(10, jnp.float32)}

    def loss(params, batch):
        del batch  # full batch
        penalty = 0.5 * l2 * jnp.sum(jnp.square(params["w"]))
        return _cross_entropy(train_x @ params["w"] + params["b"], train_y) + penalty

    return Workload(
        name="logistic_regression",
        init_params=init_params,
        loss=loss,
        batches=lambda seed, steps: jnp.zeros((steps,), jnp.float32),
        eval_loss=lambda params: _cross_entropy(test_x @ params["w"] + params["b"], test_y),
        steps=200,
        learning_rate=3e-2,
        full_batch=True,
    )


# The workloads the other benchmark scripts iterate over (``logistic_regression`` is the leaderboard's third).
WORKLOADS: dict[str, Callable[[], Workload]] = {"digits_cnn": digits_cnn, "stdlib_char_lm": stdlib_char_lm}


def num_params(params: Params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def main() -> None:
    for make in WORKLOADS.values():
        workload = make()
        start = time.perf_counter()
        result = train(workload, gradtx.adamw(workload.learning_rate))
        count = num_params(jax.tree.map(lambda x: x[0], result.params))
        print(
            f"{workload.name}: {count:,} parameters, {workload.steps} steps in {time.perf_counter() - start:.1f} s; "
            f"train loss {result.losses[0, 0]:.3f} -> {np.mean(result.losses[0, -20:]):.3f}, "
            f"held out {result.eval_loss[0]:.3f}"
        )


if __name__ == "__main__":
    main()
