"""Hyperparameter sweeps in one compiled program: ``jax.vmap`` over configurations.

Every gradtx hyperparameter accepts a JAX array, so a whole training run written as a function of
its hyperparameters, ``train(config) -> loss curve``, can be ``vmap``-ed over ``K``
configurations: each step's small matrix products become ``K`` times larger batched ones and the
per-step dispatch cost is paid once for all ``K`` runs::

    def train(config):
        optimizer = gradtx.sgd(config["learning_rate"], momentum=config["momentum"])
        _, losses = gradtx.loss_curve(optimizer, loss_fn, params, num_steps=200)
        return losses

    configs = gradtx.config_grid(learning_rate=[1e-3, 1e-2, 1e-1], momentum=[0.0, 0.9])
    result = gradtx.sweep(train, configs)       # 6 runs, one jit-compiled vmap
    result.best_config                           # {"learning_rate": 0.1, "momentum": 0.9}

``benchmarks/sweep_vmap.py`` measures the speed-up over a Python loop of jitted runs.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, Params, PyTree, apply_updates

Config = dict[str, jax.Array]


def config_grid(*, dtype: Any = np.float32, **axes: Sequence[float]) -> dict[str, np.ndarray]:
    """The Cartesian product of the given values, as one flat array per hyperparameter.

    ``config_grid(learning_rate=[0.1, 0.01], momentum=[0.0, 0.5, 0.9])`` has 6 configurations;
    the last named axis varies fastest (``learning_rate`` 0.1 with momenta 0, 0.5, 0.9 first).

    Args:
      dtype: dtype of the returned arrays. Default float32.
      **axes: ``name=values`` for each hyperparameter.

    Returns:
      ``{name: array of shape [K]}`` with ``K`` the product of the axes' lengths.
    """
    if not axes:
        raise ValueError("config_grid needs at least one hyperparameter axis, e.g. learning_rate=[0.1, 0.01].")
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"config_grid: axis {name!r} has no values.")
    rows = list(itertools.product(*axes.values()))
    return {name: np.asarray([row[i] for row in rows], dtype) for i, name in enumerate(axes)}


def config_samples(
    key: jax.Array, num_samples: int, *, dtype: Any = jnp.float32, **distributions: Any
) -> dict[str, jax.Array]:
    """Random configurations for random search (Bergstra & Bengio 2012).

    Each hyperparameter's distribution is one of

    * ``("uniform", low, high)``: uniform on ``[low, high)``;
    * ``("log_uniform", low, high)``: ``exp(U[log low, log high))``, for learning rates and
      other scale parameters (``low > 0``);
    * a list or tuple of values: chosen uniformly among them.

    Args:
      key: a PRNG key; each hyperparameter draws from its own split of it.
      num_samples: ``K``.
      dtype: dtype of the returned arrays. Default float32.
      **distributions: ``name=distribution``.

    Returns:
      ``{name: array of shape [K]}``.
    """
    specs = []
    for name, spec in distributions.items():
        if isinstance(spec, tuple) and len(spec) == 3 and spec[0] in ("uniform", "log_uniform"):
            kind, low, high = spec
            if not low < high:
                raise ValueError(f"config_samples: {name!r} needs low < high, got {spec}.")
            if kind == "log_uniform" and not low > 0:
                raise ValueError(f"config_samples: {name!r} is log_uniform and needs low > 0, got {spec}.")
            specs.append((name, kind, (float(low), float(high))))
        elif isinstance(spec, (list, tuple)) and len(spec) > 0 and not isinstance(spec[0], str):
            specs.append((name, "choice", tuple(float(value) for value in spec)))
        else:
            raise ValueError(
                f"config_samples: distribution of {name!r} must be ('uniform', low, high), "
                f"('log_uniform', low, high) or a non-empty list of values; got {spec!r}."
            )
    return _sampler(tuple(specs), int(num_samples), jnp.dtype(dtype))(key)


@functools.lru_cache(maxsize=32)
def _sampler(specs: tuple, num_samples: int, dtype: Any) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """One jitted function drawing every hyperparameter (one compilation, not one per primitive)."""

    def draw(key: jax.Array) -> dict[str, jax.Array]:
        samples = {}
        for sub_key, (name, kind, values) in zip(jax.random.split(key, len(specs)), specs):
            if kind == "uniform":
                samples[name] = jax.random.uniform(sub_key, (num_samples,), dtype, *values)
            elif kind == "log_uniform":
                exponent = jax.random.uniform(sub_key, (num_samples,), jnp.float32, *np.log(values))
                # Clipped: exp(log(high)) may round a hair above high.
                samples[name] = jnp.clip(jnp.exp(exponent), *values).astype(dtype)
            else:
                samples[name] = jax.random.choice(sub_key, jnp.asarray(values, dtype), (num_samples,))
        return samples

    return jax.jit(draw)


def loss_curve(
    optimizer: GradientTransformation,
    loss_fn: Callable[..., jax.Array],
    params: Params,
    num_steps: int,
    batches: PyTree | None = None,
) -> tuple[Params, jax.Array]:
    """Trains for ``num_steps`` with ``jax.lax.scan`` and returns ``(final params, losses)``.

    At step ``t``: ``L_t, g_t = value_and_grad(loss_fn)(w_t[, batch_t])``, then
    ``u_t, s_t = optimizer.update(g_t, s_{t-1}, w_t)`` and ``w_{t+1} = w_t + u_t``.
    ``losses[t] = L_t`` is the loss *before* update ``t``.

    Args:
      optimizer: any transformation (its hyperparameters may be traced values, e.g. under ``vmap``).
      loss_fn: ``loss_fn(params)`` (full batch) or ``loss_fn(params, batch)``.
      params: the initial parameters.
      num_steps: number of updates.
      batches: ``None`` for full batch, else a pytree whose leaves have a leading axis of length
        ``num_steps``; step ``t`` sees the slice ``t``.

    Returns:
      The parameters after ``num_steps`` updates and the ``[num_steps]`` array of losses.
    """
    if batches is not None:
        lengths = {int(jnp.shape(leaf)[0]) for leaf in jax.tree.leaves(batches)}
        if lengths != {num_steps}:
            raise ValueError(
                f"loss_curve: batches need a leading axis of length num_steps={num_steps}, found {sorted(lengths)}."
            )

    def step(carry, batch):
        params, state = carry
        inputs = (params,) if batch is None else (params, batch)
        value, grads = jax.value_and_grad(loss_fn)(*inputs)
        updates, state = optimizer.update(grads, state, params)
        return (apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), batches, length=num_steps)
    return params, losses


class SweepResult(NamedTuple):
    """What ``sweep`` returns.

    configs: ``{name: [K]}``, the configurations as given (NumPy).
    curves: ``[K, ...]``, each configuration's output of ``train_fn`` (its loss curve), or a
      pytree of such arrays when ``train_fn`` returns one (e.g. ``{"train": ..., "validation": ...}``).
    scores: ``[K]``, ``score_fn(curve)``; NaN (a diverged run) is replaced by ``+inf``.
    best_index: ``argmin(scores)``.
    best_config: ``{name: value}`` of the best configuration, as Python numbers written the way
      they were given: a float32 ``0.1`` reads ``0.1``, not ``0.10000000149011612`` (the shortest
      decimal that rounds to the stored value in its own dtype).
    """

    configs: dict[str, np.ndarray]
    curves: Any
    scores: np.ndarray
    best_index: int
    best_config: dict[str, float]


def _last(curve: jax.Array) -> jax.Array:
    return curve[-1]


def _python_number(value: Any) -> float | int | bool:
    """A NumPy scalar as the Python number it was written as (``float32(0.1)`` -> ``0.1``).

    The shortest decimal that rounds back to the same value in the scalar's own dtype, so the
    number a user typed into the grid reads back unchanged.
    """
    value = np.asarray(value)
    if value.dtype == np.bool_:
        return bool(value)
    if np.issubdtype(value.dtype, np.integer):
        return int(value)
    exact = float(value)
    if not np.isfinite(exact):
        return exact
    for digits in range(1, 18):
        candidate = float(f"{exact:.{digits}g}")
        if np.asarray(candidate, value.dtype) == value:
            return candidate
    return exact


@functools.lru_cache(maxsize=32)
def _vectorized(train_fn: Callable, score_fn: Callable, batch_size: int | None) -> Callable:
    """The jitted, vectorized ``config -> (curve, score)``; cached so repeated sweeps reuse it."""

    def run_one(config: Config) -> tuple[jax.Array, jax.Array]:
        curve = train_fn(config)
        return curve, score_fn(curve)

    if batch_size is None:
        return jax.jit(jax.vmap(run_one))
    return jax.jit(lambda configs: jax.lax.map(run_one, configs, batch_size=batch_size))


def sweep(
    train_fn: Callable[[Config], jax.Array],
    configs: Mapping[str, Any],
    *,
    score_fn: Callable[[jax.Array], jax.Array] = _last,
    batch_size: int | None = None,
) -> SweepResult:
    """Runs ``train_fn`` on every configuration in one compiled, vectorized program.

    Computes ``curves[k] = train_fn({name: configs[name][k]})`` for all ``k`` as
    ``jit(vmap(train_fn))(configs)``, then ``scores[k] = score_fn(curves[k])`` (the last loss by
    default; lower is better) and the best configuration.

    The compiled program is cached per ``(train_fn, score_fn, batch_size)``: sweeping the same
    function again over configurations of the same shapes does not recompile.

    Under ``vmap`` every configuration runs every step: a ``lax.cond`` in ``train_fn`` becomes a
    ``select`` that evaluates both branches, and a run cannot stop early.

    Scoring on held-out data: ``train_fn`` may return any pytree, and ``score_fn`` picks the
    number to minimise from it. Choosing by the training loss favours whatever fits the training
    set best (no regularisation at all); choose by a validation loss instead::

        def train(config):
            optimizer = gradtx.chain(
                gradtx.add_decayed_weights(config["weight_decay"]), gradtx.sgd(config["learning_rate"])
            )
            params, train_losses = gradtx.loss_curve(optimizer, lambda p: loss(p, x_train, y_train), params0, 200)
            return {"train": train_losses, "validation": loss(params, x_valid, y_valid)}

        configs = gradtx.config_grid(learning_rate=[0.01, 0.1], weight_decay=[0.0, 1e-3, 1e-2, 1e-1])
        result = gradtx.sweep(train, configs, score_fn=lambda out: out["validation"])
        result.best_config                  # {"learning_rate": 0.1, "weight_decay": 0.01}, say
        result.curves["train"][result.best_index]   # its training curve

    Args:
      train_fn: ``config -> curve``, a JAX-traceable function of a dict of scalar hyperparameters,
        e.g. built on ``loss_curve``; it may return a pytree (training curve and validation loss).
      configs: ``{name: array of shape [K]}``, e.g. from ``config_grid`` or ``config_samples``.
      score_fn: ``curve -> scalar``, lower is better. Default: the curve's last entry (this
        needs ``train_fn`` to return an array).
      batch_size: run at most this many configurations at once (``jax.lax.map`` over chunks of
        a ``vmap``), to bound memory. Default: all ``K`` at once.

    Returns:
      ``SweepResult(configs, curves, scores, best_index, best_config)``.
    """
    sizes = {name: int(np.shape(values)[0]) if np.ndim(values) == 1 else -1 for name, values in configs.items()}
    if not sizes or len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ValueError(f"sweep: configs must be 1-D arrays of one common length K; found lengths {sizes}.")
    arrays = {name: jnp.asarray(values) for name, values in configs.items()}
    curves, scores = jax.device_get(_vectorized(train_fn, score_fn, batch_size)(arrays))
    scores = np.where(np.isnan(scores), np.inf, scores)
    best = int(np.argmin(scores))
    configs_np = {name: np.asarray(values) for name, values in configs.items()}
    return SweepResult(
        configs=configs_np,
        curves=jax.tree.map(np.asarray, curves),
        scores=scores,
        best_index=best,
        best_config={name: _python_number(values[best]) for name, values in configs_np.items()},
    )
