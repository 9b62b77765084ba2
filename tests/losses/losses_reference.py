"""Helpers for the loss tests: gradtx against Optax (and torch) in float64, values and gradients."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

RTOL = 1e-10


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_close(actual, expected, rtol: float = RTOL, atol: float = 1e-13, err_msg: str = "") -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=err_msg)


def _weighted_sum(fn: Callable, kwargs: dict, seed: int) -> Callable:
    """``args -> <w, fn(*args)>`` with fixed random weights ``w``: a cotangent that is not all ones."""

    def scalar(*args):
        out = fn(*args, **kwargs)
        w = jnp.asarray(rng(seed).uniform(0.5, 1.5, np.shape(out)))
        return jnp.sum(w * out)

    return scalar


def check_matches(ours: Callable, theirs: Callable, args: Sequence, argnums: int | tuple[int, ...] = 0,
                  kwargs: dict | None = None, rtol: float = RTOL, atol: float = 1e-13) -> jax.Array:
    """Same values and same gradients (with respect to ``argnums``) as the reference, both in float64."""
    kwargs = kwargs or {}
    value, expected = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert np.shape(value) == np.shape(expected), (np.shape(value), np.shape(expected))
    assert_close(value, expected, rtol, atol, "values")
    grads = jax.grad(_weighted_sum(ours, kwargs, 7), argnums)(*args)
    expected_grads = jax.grad(_weighted_sum(theirs, kwargs, 7), argnums)(*args)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        assert_close(g, e, rtol, atol, "gradients")
    return value
