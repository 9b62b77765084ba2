"""SOAP: Adam run in the eigenbasis of Shampoo's Kronecker factors (Vyas et al. 2024).

Arguments follow the authors' reference implementation (github.com/nikhilvyas/SOAP) in Optax's
spelling: ``lr -> learning_rate``, ``betas -> (b1, b2)``, ``max_precond_dim``, ``merge_dims``,
``precondition_1d``, ``normalize_grads``, ``data_format``, ``correct_bias`` unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, Params, PyTree, ScalarOrSchedule
from gradtx.combinators import MaskOrFn, chain
from gradtx.preconditioners._matrix_roots import scaled_eigh, work_dtype
from gradtx.regularization import add_decayed_weights
from gradtx.scaling import scale_by_learning_rate
from gradtx.second_order._common import check_choice, check_positive_int
from gradtx.tree_utils import (
    cast_like,
    check_float_leaves,
    check_trees_match,
    saturating_increment,
    tree_zeros_like,
    zero_step_count,
)
from gradtx.validation import (
    check_decay,
    check_non_negative,
    check_positive,
    check_schedule_arguments,
    check_state_type,
)

DATA_FORMATS = ("channels_first", "channels_last")


class ScaleBySoapState(NamedTuple):
    """State of ``scale_by_soap``.

    count: int32 number of updates (the first one only initializes the eigenbases).
    mu: Adam's first moment, in the parameters' own coordinates (like the parameters).
    nu: Adam's second moment, in the eigenbasis (shaped like the parameters).
    gg: per leaf, a tuple with one ``(n, n)`` factor ``E[G_(i) G_(i)^T]`` per (merged) dimension,
      None for a dimension left in its own coordinates.
    q: per leaf, the eigenbases of ``gg`` (same shapes), eigenvalues in descending order.
    """

    count: jax.Array
    mu: PyTree
    nu: PyTree
    gg: PyTree
    q: PyTree


def _merge_dims_shape(shape: tuple[int, ...], max_precond_dim: int) -> tuple[int, ...]:
    """The reference implementation's ``merge_dims``: consecutive dimensions are multiplied
    together while the product stays ``<= max_precond_dim``."""
    merged: list[int] = []
    current = 1
    for size in shape:
        product = current * size
        if product > max_precond_dim:
            if current > 1:
                merged.append(current)
                current = size
            else:
                merged.append(size)
                current = 1
        else:
            current = product
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


class _View:
    """The leaf as SOAP's preconditioner sees it: optionally NHWC -> NCHW, then merged dimensions."""

    def __init__(self, shape: tuple[int, ...], merge_dims: bool, max_precond_dim: int, data_format: str):
        self.shape = shape
        self.permute = merge_dims and data_format == "channels_last" and len(shape) == 4
        permuted = (shape[0], shape[3], shape[1], shape[2]) if self.permute else shape
        self.permuted_shape = permuted
        self.merged = _merge_dims_shape(permuted, max_precond_dim) if merge_dims else shape

    def to_view(self, x: jax.Array) -> jax.Array:
        if self.permute:
            x = jnp.transpose(x, (0, 3, 1, 2))
        return x.reshape(self.merged)

    def from_view(self, x: jax.Array) -> jax.Array:
        if self.permute:
            return jnp.transpose(x.reshape(self.permuted_shape), (0, 2, 3, 1))
        return x.reshape(self.shape)


def _factor_dims(view: _View, max_precond_dim: int, precondition_1d: bool) -> tuple[bool, ...]:
    if len(view.shape) == 1:
        return (precondition_1d and view.shape[0] <= max_precond_dim,)
    return tuple(n <= max_precond_dim for n in view.merged)


def _project(x: jax.Array, qs: tuple, back: bool = False) -> jax.Array:
    """``x times_i Q_i^T`` for every dimension (``back``: ``x times_i Q_i``), identity where Q is None.

    Each step contracts the leading axis and appends the result as the last, so after all
    dimensions the axes are back in their order.
    """
    for q in qs:
        if q is None:
            x = jnp.moveaxis(x, 0, -1)
        else:
            x = jnp.tensordot(x, q, axes=([0], [1 if back else 0]), precision=jax.lax.Precision.HIGHEST)
    return x


def _outer(x: jax.Array, axis: int) -> jax.Array:
    """``G_(i) G_(i)^T``: ``x`` contracted with itself over every axis but ``axis``."""
    others = [a for a in range(x.ndim) if a != axis]
    return jnp.tensordot(x, x, axes=(others, others), precision=jax.lax.Precision.HIGHEST)


def _eigenbasis(matrix: jax.Array) -> jax.Array:
    """Eigenvectors of a symmetric matrix, eigenvalues descending, computed in at least float32."""
    _, vectors, _ = scaled_eigh(matrix.astype(work_dtype(matrix.dtype)))
    return jnp.flip(vectors, axis=1).astype(matrix.dtype)


def _refresh(gg: jax.Array, q: jax.Array, nu: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """One power-iteration step and a QR (Vyas et al. 2024, Algorithm 4): the new basis, and
    ``nu`` permuted along ``axis`` to the new order of the estimated eigenvalues."""
    product = jnp.matmul(gg, q, precision=jax.lax.Precision.HIGHEST)
    estimated = jnp.sum(q * product, axis=0)
    order = jnp.argsort(-estimated, stable=True)
    nu = jnp.take(nu, order, axis=axis)
    # Scaled to entries of about 1 (Q does not change), away from float32's slow subnormals.
    columns = product[:, order].astype(work_dtype(q.dtype))
    columns = columns / jnp.maximum(jnp.max(jnp.abs(columns)), jnp.finfo(columns.dtype).tiny)
    new_q, _ = jnp.linalg.qr(columns)
    return new_q.astype(q.dtype), nu


@check_schedule_arguments
def scale_by_soap(
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    data_format: str = "channels_first",
    correct_bias: bool = True,
) -> GradientTransformation:
    """SOAP scaling (Vyas et al. 2024): Adam in the eigenbasis of Shampoo's factors.

    For a matrix gradient ``G`` (a tensor has one factor per dimension; a dimension above
    ``max_precond_dim``, and a vector unless ``precondition_1d``, keeps ``Q = I``), step ``t``:

    .. math::
        t = 0: \\quad L = (1-\\beta_s) G G^T,\\ R = (1-\\beta_s) G^T G,\\quad
        Q_L, Q_R = \\operatorname{eigh}(L), \\operatorname{eigh}(R)\\ \\text{(descending)},
        \\quad u_0 = 0

        t \\ge 1: \\quad G' = Q_L^T G Q_R, \\quad m_t = \\beta_1 m_{t-1} + (1-\\beta_1) G, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) G'^{\\,2}

        N = Q_L \\frac{Q_L^T m_t Q_R}{\\sqrt{v_t} + \\epsilon} Q_R^T, \\qquad
        u_t = \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}\\, N
        \\quad (\\text{with normalize\\_grads, } N / (10^{-30} + \\operatorname{rms}(N)) \\text{ first})

        L \\leftarrow \\beta_s L + (1-\\beta_s) G G^T, \\quad R \\leftarrow \\beta_s R + (1-\\beta_s) G^T G

    and when ``t mod precondition_frequency == 0`` each basis takes one power-iteration step and a
    QR decomposition, ``Q <- QR(L Q[:, s])`` with ``s`` the order of the estimated eigenvalues
    ``diag(Q^T L Q)`` (descending), and ``v_t`` is permuted to that order along the same axis.
    ``beta_s`` is ``shampoo_beta`` (``b2`` when None). ``m`` lives in the parameters' coordinates
    and is rotated at every step, so a new basis needs no correction of it. The first update only
    builds the bases, so that the current gradient is never in its own projection (the reference
    implementation's choice); its update is zero.

    Args:
      b1, b2: Adam's decays in [0, 1). Defaults 0.95, 0.95 (the paper's).
      shampoo_beta: decay ``beta_s`` of the factors, in [0, 1); None (default) uses ``b2``.
      eps: added to ``sqrt(v)``. Default 1e-8.
      precondition_frequency: steps between basis refreshes. Default 10.
      max_precond_dim: larger dimensions keep the identity. Default 10000.
      merge_dims: merge consecutive dimensions while their product is ``<= max_precond_dim``
        (a ``(3, 3, 16, 32)`` kernel becomes ``(4608,)``). Default False.
      precondition_1d: give vectors a full ``n x n`` factor. Default False (Adam for vectors).
      normalize_grads: divide ``N`` by its RMS. Default False.
      data_format: ``"channels_first"`` or ``"channels_last"``: with ``merge_dims``, a 4-D leaf in
        ``"channels_last"`` is permuted ``(0, 3, 1, 2)`` before merging. Default ``"channels_first"``.
      correct_bias: the factor ``sqrt(1 - b2^t) / (1 - b1^t)``. Default True.

    State: ``ScaleBySoapState(count, mu, nu, gg, q)``.

    Memory: two copies of each leaf plus two ``n_i x n_i`` matrices per preconditioned dimension.
    Cost per step: ``O(numel * sum_i n_i)`` for the four projections and the factor updates; every
    ``precondition_frequency`` steps one ``n_i^3`` QR and matrix product per factor (one
    eigendecomposition per factor at the first step). Eigendecompositions and QR run in at least
    float32.

    Matches ``pytorch_optimizer.SOAP`` (a port of the reference implementation) step for step in
    float64 (tested), with ``weight_decay=0``; see ``soap`` for the decay.

    References:
      Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade, "SOAP: Improving and
      Stabilizing Shampoo using Adam", 2024, arXiv:2409.11321.
    """
    check_decay(b1, "b1")
    check_decay(b2, "b2")
    if shampoo_beta is not None:
        check_decay(shampoo_beta, "shampoo_beta")
    check_positive(eps, "eps")
    check_positive_int(precondition_frequency, "precondition_frequency")
    check_positive_int(max_precond_dim, "max_precond_dim")
    check_choice(data_format, DATA_FORMATS, "data_format")

    def view_of(shape):
        return _View(tuple(shape), merge_dims, max_precond_dim, data_format)

    def init_leaf(leaf):
        view = view_of(leaf.shape)
        dims = _factor_dims(view, max_precond_dim, precondition_1d)
        sizes = view.shape if len(view.shape) == 1 else view.merged
        factors = tuple(jnp.zeros((n, n), leaf.dtype) if used else None for n, used in zip(sizes, dims))
        return factors

    def init_fn(params: Params) -> ScaleBySoapState:
        check_float_leaves(params)
        leaves, treedef = jax.tree.flatten(params)
        factors = treedef.unflatten([init_leaf(leaf) for leaf in leaves])
        return ScaleBySoapState(zero_step_count(), tree_zeros_like(params), tree_zeros_like(params), factors, factors)

    def accumulate(g, ggs):
        """``gg <- beta_s gg + (1 - beta_s) G_(i) G_(i)^T`` for every factor of one leaf."""
        x = view_of(g.shape).to_view(g)
        beta = cast_like(b2 if shampoo_beta is None else shampoo_beta, g)
        return tuple(None if gg is None else beta * gg + (1 - beta) * _outer(x, i) for i, gg in enumerate(ggs))

    def first_step(updates, state, leaves, treedef):
        ggs = [accumulate(g, gg) for g, gg in zip(leaves, treedef.flatten_up_to(state.gg))]
        qs = [tuple(None if gg is None else _eigenbasis(gg) for gg in group) for group in ggs]
        zeros = jax.tree.map(jnp.zeros_like, updates)
        return zeros, state._replace(gg=treedef.unflatten(ggs), q=treedef.unflatten(qs))

    def later_step(updates, state, leaves, treedef):
        t = state.count
        mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
        ggs, qs = treedef.flatten_up_to(state.gg), treedef.flatten_up_to(state.q)
        outputs, new_mu, new_nu, new_gg = [], [], [], []
        for g, mu, nu, gg, q in zip(leaves, mus, nus, ggs, qs):
            view = view_of(g.shape)
            beta1, beta2 = cast_like(b1, g), cast_like(b2, g)
            projected = view.from_view(_project(view.to_view(g), q))
            mu = beta1 * mu + (1 - beta1) * g
            nu = beta2 * nu + (1 - beta2) * projected * projected
            rotated = view.to_view(view.from_view(_project(view.to_view(mu), q)) / (jnp.sqrt(nu) + cast_like(eps, g)))
            direction = view.from_view(_project(rotated, q, back=True))
            if normalize_grads:
                direction = direction / (1e-30 + jnp.sqrt(jnp.mean(direction * direction)))
            if correct_bias:
                steps = t.astype(g.dtype)
                direction = direction * (jnp.sqrt(1 - beta2**steps) / (1 - beta1**steps))
            outputs.append(direction)
            new_mu.append(mu)
            new_nu.append(nu)
            new_gg.append(accumulate(g, gg))

        def refresh_all(qs, nus):
            new_qs, new_nus = [], []
            for g, gg, q, nu in zip(leaves, new_gg, qs, nus):
                view = view_of(g.shape)
                nu_view = view.to_view(nu)
                group = []
                for axis, (factor, basis) in enumerate(zip(gg, q)):
                    if factor is None:
                        group.append(None)
                        continue
                    basis, nu_view = _refresh(factor, basis, nu_view, axis)
                    group.append(basis)
                new_qs.append(tuple(group))
                new_nus.append(view.from_view(nu_view))
            return new_qs, new_nus

        qs, new_nu = jax.lax.cond(
            t % precondition_frequency == 0, refresh_all, lambda q, n: (list(q), list(n)), list(qs), new_nu
        )
        new_state = ScaleBySoapState(
            t, treedef.unflatten(new_mu), treedef.unflatten(new_nu), treedef.unflatten(new_gg), treedef.unflatten(qs)
        )
        return treedef.unflatten(outputs), new_state

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state_type(state, ScaleBySoapState, "scale_by_soap")
        check_trees_match(updates, state.mu, name="updates", reference_name="soap state", context="scale_by_soap")
        leaves, treedef = jax.tree.flatten(updates)
        new_updates, new_state = jax.lax.cond(
            state.count == 0,
            lambda u, s: first_step(u, s, leaves=jax.tree.leaves(u), treedef=treedef),
            lambda u, s: later_step(u, s, leaves=jax.tree.leaves(u), treedef=treedef),
            updates,
            state,
        )
        return new_updates, new_state._replace(count=saturating_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


@check_schedule_arguments
def soap(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    data_format: str = "channels_first",
    correct_bias: bool = True,
    mask: MaskOrFn | None = None,
) -> GradientTransformation:
    """SOAP (Vyas et al. 2024): ``scale_by_soap``, decoupled weight decay, then the learning rate.

    .. math::
        w_t = w_{t-1} - \\eta_t \\left( u_t + \\lambda w_{t-1} \\right)
        \\qquad (u_t \\text{ the update of } \\texttt{scale\\_by\\_soap})

    Arguments and defaults are the reference implementation's (``lr=3e-3`` there; here the
    learning rate, a number or a schedule, has no default, as in every gradtx optimizer).
    ``mask`` selects the leaves that decay.

    Differs from the reference implementation (and ``pytorch_optimizer.SOAP``) in the weight
    decay only: it decays ``w_{t-1}`` in the same step as AdamW (Optax's ``adamw``) does, where the
    reference decays the already updated weights, ``w_t = (w_{t-1} - eta u_t)(1 - eta lambda)``
    (a difference of ``eta^2 lambda u_t``), and skips the decay at the first step; with
    ``weight_decay=0`` the two agree to rounding (tested).

    References:
      Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam", 2024, arXiv:2409.11321.
    """
    check_non_negative(learning_rate, "learning_rate")
    check_non_negative(weight_decay, "weight_decay")
    return chain(
        scale_by_soap(
            b1,
            b2,
            shampoo_beta,
            eps,
            precondition_frequency,
            max_precond_dim,
            merge_dims,
            precondition_1d,
            normalize_grads,
            data_format,
            correct_bias,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
