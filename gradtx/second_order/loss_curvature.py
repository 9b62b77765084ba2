"""``optax.second_order``'s functions: ``hvp``, ``hessian_diag``, ``fisher_diag`` of ``loss(params, inputs, targets)``.

Thin wrappers over :func:`gradtx.hessian_vector_product` with Optax's calling convention: the
loss takes ``(params, inputs, targets)`` and vectors are flat (``jax.flatten_util.ravel_pytree``
order). For a matrix-free operator on pytrees use :func:`gradtx.hessian_operator` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx.second_order.curvature import hessian_vector_product

PyTree = Any
LossFn = Callable[[PyTree, jax.Array, jax.Array], jax.Array]


def hvp(loss: LossFn, v: jax.Array, params: PyTree, inputs: jax.Array, targets: jax.Array) -> PyTree:
    r"""The Hessian of ``loss`` in ``params`` times a flat vector ``v``.

    .. math::
        H v = \nabla^2_w \ell(w; x, y)\, v = \frac{d}{d\epsilon} \nabla_w \ell(w + \epsilon v; x, y)\Big|_{\epsilon = 0}

    (forward-over-reverse, exact, about two gradient evaluations).

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      v: a flat vector of the parameters' total size (``ravel_pytree`` order).
      params: the point ``w``.
      inputs: ``x``.
      targets: ``y``.

    Returns:
      ``H v`` as a tree shaped like ``params``.

    Matches ``optax.second_order.hvp`` (deprecated in Optax 0.2.7, kept here without a warning).

    References:
      Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.
    """
    _, unravel = ravel_pytree(params)
    return hessian_vector_product(lambda p: loss(p, inputs, targets), params, unravel(v))


def hessian_diag(loss: LossFn, params: PyTree, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    r"""The exact diagonal of the Hessian of ``loss`` in ``params``, as a flat vector.

    .. math::
        \operatorname{diag}(H)_i = e_i^\top H e_i,\quad i = 1, \ldots, n,

    one Hessian-vector product per parameter (``vmap`` over the basis), so only for small models;
    :func:`gradtx.hutchinson_diagonal` estimates it with a few products.

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      params: the point.
      inputs: ``x``.
      targets: ``y``.

    Returns:
      A vector of length ``n`` (``ravel_pytree`` order).

    Matches ``optax.second_order.hessian_diag``.

    References:
      Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.
    """
    flat, _ = ravel_pytree(params)

    def diagonal_entry(basis_vector):
        return jnp.vdot(basis_vector, ravel_pytree(hvp(loss, basis_vector, params, inputs, targets))[0])

    return jax.vmap(diagonal_entry)(jnp.eye(flat.size, dtype=flat.dtype))


def fisher_diag(
    negative_log_likelihood: LossFn, params: PyTree, inputs: jax.Array, targets: jax.Array
) -> jax.Array:
    r"""The diagonal of the observed (empirical) Fisher information, as a flat vector.

    .. math::
        \operatorname{diag}(F) = \big(\nabla_w (-\log p(y \mid x, w))\big)^{2}\quad\text{(element-wise)}

    for the batch as given (the square of the batch gradient, not the mean of per-example squares).

    Args:
      negative_log_likelihood: ``nll(params, inputs, targets) -> scalar``.
      params: the point.
      inputs: ``x``.
      targets: ``y``.

    Returns:
      A vector of length ``n`` (``ravel_pytree`` order).

    Matches ``optax.second_order.fisher_diag``.

    References:
      Martens, "New insights and perspectives on the natural gradient method", JMLR 2020
      (the empirical Fisher and its limits).
    """
    return jnp.square(ravel_pytree(jax.grad(negative_log_likelihood)(params, inputs, targets))[0])
