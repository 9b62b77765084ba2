"""Helpers shared by the second-order transformations: argument checks and pytree arithmetic."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.tree_utils import tree_global_norm

PyTree = Any


def require_value_fn(value_fn: Callable | None, method: str) -> Callable:
    """Returns ``value_fn`` or raises ``TypeError`` saying how ``method`` expects the objective."""
    if value_fn is None:
        raise TypeError(
            f"{method}.update needs the objective: pass value_fn=f, a function params -> scalar "
            "loss, as a keyword argument of update (update(grads, state, params, value_fn=f))."
        )
    if not callable(value_fn):
        raise TypeError(f"{method}: value_fn must be callable (params -> scalar loss), got {value_fn!r}.")
    return value_fn


def require_params(params: PyTree | None, method: str) -> PyTree:
    """Returns ``params`` or raises ``ValueError``: curvature is evaluated at the current point."""
    if params is None:
        raise ValueError(
            f"{method}.update needs the parameters (params=) to evaluate the objective and "
            "its curvature: call update(grads, state, params, value_fn=f)."
        )
    return params


def refuse_schedules(method: str, **hyperparameters: Any) -> None:
    """``TypeError`` naming the argument if a schedule (any callable) is passed where ``method``
    needs a number: these arguments shape the algorithm (line-search constants, iteration caps,
    adaptive initial values), so a schedule would only fail later, inside ``update``."""
    for name, value in hyperparameters.items():
        if callable(value):
            raise TypeError(
                f"{method}: {name} must be a number, got the schedule or function {value!r}; it is "
                "fixed when the optimizer is built (see the docstring for which arguments take schedules)."
            )


def check_positive_int(value: Any, name: str) -> None:
    """``value`` is a Python integer >= 1 (iteration counts, memory sizes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def scalar_dtype(tree: PyTree) -> Any:
    """The dtype for scalars that accompany ``tree``: its widest float dtype, at least float32."""
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(tree)]
    return jnp.result_type(jnp.float32, *dtypes)


def tree_add_scaled(x: PyTree, scale: jax.Array, y: PyTree) -> PyTree:
    """``x + scale * y`` leaf by leaf, in the dtype of ``x``."""
    return jax.tree.map(lambda a, b: (a + scale * b).astype(jnp.result_type(a)), x, y)


def tree_scale(scale: jax.Array, x: PyTree) -> PyTree:
    """``scale * x`` leaf by leaf, in the dtype of ``x``."""
    return jax.tree.map(lambda a: (scale * a).astype(jnp.result_type(a)), x)


def tree_where(condition: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """``x`` where the scalar ``condition`` holds, else ``y``, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def tree_sub(x: PyTree, y: PyTree) -> PyTree:
    """``x - y`` leaf by leaf."""
    return jax.tree.map(lambda a, b: a - b, x, y)


def tree_neg(x: PyTree) -> PyTree:
    """``-x`` leaf by leaf."""
    return jax.tree.map(lambda a: -a, x)


def normalized_or(vector: PyTree, fallback: PyTree) -> PyTree:
    """``v / ||v||``, or ``fallback`` where ``||v|| = 0`` (no NaN in either branch).

    A zero product ``A v = 0`` in a power iteration means ``v`` spans an invariant subspace
    (Golub & Van Loan, section 8.2.1): keeping the current vector, not dividing by zero, is the
    right answer. Works on any tree, a flat array included.
    """
    norm = tree_global_norm(vector)
    return tree_where(norm > 0, tree_scale(safe_divide(1, norm), vector), fallback)


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, and 0 where the denominator is 0 (no NaN in either branch)."""
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def tree_inner(x: PyTree, y: PyTree) -> jax.Array:
    """``<x, y> = sum_i conj(x_i) y_i`` over every leaf, each leaf a ``tensordot`` at HIGHEST precision.

    The same reduction as ``optax.tree.vdot`` (a dot product per leaf, then a left-to-right sum),
    so that the line searches and L-BFGS reproduce Optax's rounding bit for bit.
    """

    def leaf_dot(a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        if jnp.iscomplexobj(a):
            a = jnp.conj(a)
        return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST)

    total = 0
    for dot in jax.tree.leaves(jax.tree.map(leaf_dot, x, y)):
        total = total + dot
    return jnp.asarray(total)


def split_value_fn_kwargs(value_fn: Callable, extra_args: dict[str, Any], method: str) -> dict[str, Any]:
    """The keyword arguments of ``update`` that ``value_fn`` takes (by name); ``TypeError`` for any other.

    A ``value_fn`` with ``**kwargs`` takes them all. Optax raises the same error for arguments that
    the objective does not consume, so a misspelled batch argument is never silently dropped.
    """
    try:
        parameters = inspect.signature(value_fn).parameters
    except (TypeError, ValueError):
        return dict(extra_args)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(extra_args)
    unused = sorted(k for k in extra_args if k not in parameters)
    if unused:
        raise TypeError(
            f"Unexpected keyword arguments passed to `{method}.update`: {unused} are not arguments of "
            "value_fn. Pass only the objective's own keyword arguments (e.g. a batch) to update."
        )
    return dict(extra_args)


def print_if(condition: jax.Array, message: str, **values: Any) -> None:
    """``jax.debug.print(message, **values)`` when the traced ``condition`` holds (for ``verbose=``)."""
    jax.lax.cond(
        condition,
        lambda: jax.debug.print(message, **values, ordered=True),
        lambda: None,
    )


def real_dtype_of_first_leaf(params: PyTree) -> Any:
    """The real dtype matching the first leaf of ``params`` (float32 for complex64), as JAX will store it.

    Optax's line searches keep their step sizes and values in this dtype.
    """
    leaf_dtype = jnp.result_type(jax.tree.leaves(params)[0])
    return jax.dtypes.canonicalize_dtype(np.real(np.zeros((), leaf_dtype)).dtype)
