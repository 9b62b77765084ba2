"""Extra keyword arguments of ``update``: Optax's ``GradientTransformationExtraArgs`` and its adapter.

In gradtx every ``update`` takes ``**extra_args`` (``value=``, ``value_fn=``, ...) and the
combinators forward them to the transforms that accept them. Optax separates the two kinds of
transformation by type; ``GradientTransformationExtraArgs`` is that type here too, so code that
builds or checks for it ports by switching the import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from gradtx.base import GradientTransformationExtraArgs


def _accepts_extra_args(update_fn: Callable) -> bool:
    """Whether ``update_fn`` takes ``**kwargs``."""
    try:
        parameters = inspect.signature(update_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def with_extra_args_support(tx: Any) -> GradientTransformationExtraArgs:
    """``tx`` as a ``GradientTransformationExtraArgs``: extra keyword arguments are dropped if it takes none.

    A transform whose ``update`` already takes ``**kwargs`` (every gradtx transform, Optax's
    ``GradientTransformationExtraArgs``) keeps receiving them; one whose ``update`` is
    ``update(updates, state, params=None)`` is wrapped so that ``update(..., value=v)`` calls it
    without ``value``.

    Matches ``optax.with_extra_args_support``, except that a plain gradtx
    ``GradientTransformation`` keeps its extra arguments (Optax drops them for any transform not of
    type ``GradientTransformationExtraArgs``; every gradtx ``update`` accepts them by protocol).
    """
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(
            f"with_extra_args_support expects a GradientTransformation (an object with init and update), "
            f"got {type(tx).__name__}."
        )
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx
    if type(tx).__name__ == "GradientTransformationExtraArgs" or _accepts_extra_args(tx.update):
        return GradientTransformationExtraArgs(tx.init, tx.update)
    update = tx.update

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update_fn)
