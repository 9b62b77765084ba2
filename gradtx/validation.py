"""Checks of hyperparameters given as Python numbers, raised at construction time.

Arrays and schedules are not checked here: their values are only known inside ``jit``.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np


def _concrete_number(value: Any) -> float | None:
    """The value as a float if it is a plain number (or a 0-d NumPy value), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.shape == () and np.issubdtype(value.dtype, np.floating):
        return float(value)
    return None


def check_non_negative(value: Any, name: str) -> None:
    """``value >= 0`` (learning rates, weight decay, clipping thresholds)."""
    number = _concrete_number(value)
    if number is not None and not number >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def check_positive(value: Any, name: str) -> None:
    """``value > 0`` (eps, step sizes)."""
    number = _concrete_number(value)
    if number is not None and not number > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}.")


def check_decay(value: Any, name: str) -> None:
    """``0 <= value < 1`` (momentum and moving-average decay rates)."""
    number = _concrete_number(value)
    if number is not None and not 0 <= number < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def check_closed_unit(value: Any, name: str) -> None:
    """``0 <= value <= 1``."""
    number = _concrete_number(value)
    if number is not None and not 0 <= number <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}.")


def check_greater_than(value: Any, bound: float, name: str) -> None:
    """``value > bound``."""
    number = _concrete_number(value)
    if number is not None and not number > bound:
        raise ValueError(f"{name} must be > {bound}, got {value!r}.")


def check_less_than(value: Any, bound: float, name: str) -> None:
    """``value < bound``."""
    number = _concrete_number(value)
    if number is not None and not number < bound:
        raise ValueError(f"{name} must be < {bound}, got {value!r}.")


_NUMERIC_WORDS = frozenset({"float", "int", "jax.Array", "Array", "ArrayLike", "jax.typing.ArrayLike"})
_SCHEDULE_WORDS = ("Schedule", "Callable")


def _refuses_schedule(annotation: Any) -> bool:
    """A parameter annotated as a number or array, and not as a schedule or a callable."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if any(word in text for word in _SCHEDULE_WORDS):
        return False
    words = text.replace("|", " ").replace(",", " ").replace("[", " ").replace("]", " ").split()
    return any(word in _NUMERIC_WORDS for word in words)


def check_schedule_arguments(builder: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a builder so that a schedule given for a hyperparameter that cannot take one is
    refused when the transformation is built, with a ``TypeError`` naming the argument.

    A hyperparameter takes a schedule when it is annotated ``ScalarOrSchedule`` (or a
    ``Callable``); one annotated as a number or an array (``float``, ``int``, ``jax.Array``)
    does not, and without this check a callable there would fail at the first update with a raw
    error. Arrays, tracers and numbers pass through unchanged (``inject_hyperparams`` gives arrays).
    """
    signature = inspect.signature(builder)
    refusing = [name for name, parameter in signature.parameters.items() if _refuses_schedule(parameter.annotation)]
    if not refusing:
        return builder

    @functools.wraps(builder)
    def checked(*args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind_partial(*args, **kwargs).arguments
        for name in refusing:
            value = arguments.get(name)
            if callable(value) and not isinstance(value, type):
                raise TypeError(
                    f"{builder.__name__}: {name} cannot be a schedule, got {value!r}. Pass a number or an "
                    f"array; to change {name} between steps, build with gradtx.inject_hyperparams("
                    f"gradtx.{builder.__name__}) and edit it in the state."
                )
        return builder(*args, **kwargs)

    return checked
def check_state_type(state: Any, expected: type | tuple[type, ...], transform: str) -> None:
    """Raises ``TypeError`` unless ``state`` is an ``expected`` instance (the state ``init`` built).

    Without it a state of another optimizer (an ``AdamState`` handed to ``sgd``'s momentum) fails
    deep inside the update with an ``AttributeError`` about a missing field, or worse, runs with the
    wrong buffers when the field names happen to agree. The type is static, so under ``jit`` this
    costs nothing.
    """
    if not isinstance(state, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise TypeError(
            f"{transform}: expected its state to be a {names}, got {type(state).__name__}. Pass the state "
            f"returned by this transformation's own init (or by its previous update); states of different "
            f"optimizers or chains are not interchangeable."
        )


def check_empty_state(state: Any, transform: str) -> None:
    """Raises ``TypeError`` if a transformation that keeps no state receives a non-empty one.

    ``EmptyState()`` (gradtx's or Optax's), ``()`` and ``None`` are accepted, as Optax's stateless
    transforms accept them; an ``AdamState`` means the states of a chain were mixed up.
    """
    if state is not None and not (isinstance(state, tuple) and len(state) == 0):
        raise TypeError(
            f"{transform}: keeps no state, so its state is EmptyState(); got {type(state).__name__}. Pass the "
            "state returned by this transformation's own init (states of different optimizers or chains are "
            "not interchangeable)."
        )
