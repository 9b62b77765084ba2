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


def weights(shape: tuple, seed: int = 7) -> np.ndarray:
    """The cotangent ``check_matches`` uses: fixed random weights in [0.5, 1.5]."""
    return rng(seed).uniform(0.5, 1.5, shape)


def _value_and_grad(fn: Callable, kwargs: dict, argnums, seed: int = 7) -> Callable:
    """Jitted ``args -> (fn(*args), grad of <w, fn(*args)>)`` with fixed random weights ``w`` (not all ones)."""

    def scalar(*args):
        out = fn(*args, **kwargs)
        w = jnp.asarray(weights(np.shape(out), seed))
        return jnp.sum(w * out), out

    return jax.jit(jax.value_and_grad(scalar, argnums, has_aux=True))


def check_matches(ours: Callable, theirs: Callable, args: Sequence, argnums: int | tuple[int, ...] = 0,
                  kwargs: dict | None = None, rtol: float = RTOL, atol: float = 1e-13, return_grads: bool = False):
    """Same values and same gradients (with respect to ``argnums``) as the reference, both in float64.

    The gradients are those of ``<w, loss>`` with ``w = weights(loss.shape)``; returns the value (and those
    gradients with ``return_grads=True``).
    """
    kwargs = kwargs or {}
    (_, value), grads = _value_and_grad(ours, kwargs, argnums)(*args)
    (_, expected), expected_grads = _value_and_grad(theirs, kwargs, argnums)(*args)
    assert np.shape(value) == np.shape(expected), (np.shape(value), np.shape(expected))
    assert_close(value, expected, rtol, atol, "values")
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        assert_close(g, e, rtol, atol, "gradients")
    return (value, grads) if return_grads else value
