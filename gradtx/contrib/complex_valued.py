"""Complex parameters as pairs of real ones, for optimizers defined on real numbers."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, OptState, Params
from gradtx.extra_args import with_extra_args_support
from gradtx.validation import check_state_type


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex array split into its ``real`` and ``imaginary`` parts (two real arrays)."""

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    """State of ``split_real_and_imaginary``: ``inner_state``, the inner transformation's state
    over the split tree."""

    inner_state: OptState


def _split(x: Any) -> Any:
    return SplitRealAndImaginaryArrays(x.real, x.imag) if jnp.iscomplexobj(x) else x


def _merge(x: Any) -> Any:
    if isinstance(x, SplitRealAndImaginaryArrays):
        return jax.lax.complex(x.real, x.imaginary)
    return x


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
    """Runs ``inner`` on the real and imaginary parts of complex leaves as separate real leaves.

    Each complex leaf ``z = x + i y`` of the parameters and updates becomes the pair ``(x, y)``;
    ``inner`` transforms the real tree and each pair of outputs is merged back:

    .. math::
        (u_x, u_y) = \\text{inner}(g_x, g_y), \\qquad u = u_x + i\\, u_y

    so an optimizer on ``z`` behaves exactly as on the two real parameters ``x`` and ``y``
    (Adam's second moment, for instance, is kept for ``x`` and ``y`` apart, not for ``|g|^2``).
    Real leaves pass to ``inner`` unchanged. JAX's ``grad`` of a real loss in ``z`` is the
    conjugate of the descent direction: pass ``jnp.conj(grad)`` (see Optax issue 196).

    Args:
      inner: the transformation for real leaves.

    State: ``SplitRealAndImaginaryState(inner_state)``.
    Matches ``optax.contrib.split_real_and_imaginary``. A design of Optax (no paper).
    """
    inner = with_extra_args_support(inner)

    def init_fn(params: Params) -> SplitRealAndImaginaryState:
        return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

    def update_fn(updates, state, params=None, **extra_args):
        check_state_type(state, SplitRealAndImaginaryState, "split_real_and_imaginary")
        split_updates = jax.tree.map(_split, updates)
        split_params = None if params is None else jax.tree.map(_split, params)
        new_updates, inner_state = inner.update(split_updates, state.inner_state, split_params, **extra_args)
        return jax.tree.map(_merge, new_updates, is_leaf=_is_pair), SplitRealAndImaginaryState(inner_state)

    return GradientTransformation(init_fn, update_fn)
