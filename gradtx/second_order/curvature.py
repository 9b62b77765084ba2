"""Curvature oracles: Hessian- and Gauss-Newton-vector products, diagonal estimates, extreme
eigenvalues, and the linear conjugate-gradient solver that the Newton-type methods share.

Every function here works on pytrees (a vector is a tree shaped like the parameters), never forms
a matrix unless it says so, and runs under ``jit``: loops are ``jax.lax`` loops with a fixed
maximum number of iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx.second_order._common import (
    check_choice,
    check_positive_int,
    safe_divide,
    tree_add_scaled,
    tree_scale,
    tree_sub,
)
from gradtx.second_order.linear_algebra import power_iteration
from gradtx.tree_utils import tree_vdot, tree_zeros_like

PyTree = Any
MatVec = Callable[[PyTree], PyTree]


# --------------------------------------------------------------------------------------------
# Matrix-vector products.
# --------------------------------------------------------------------------------------------


def hessian_vector_product(value_fn: Callable[[PyTree], jax.Array], params: PyTree, vector: PyTree) -> PyTree:
    """``H(w) v``, the Hessian of ``value_fn`` at ``params`` times ``vector``, without forming ``H``.

    Forward-over-reverse differentiation: ``H v = d/de grad f(w + e v) |_{e=0}``, i.e. a ``jvp`` of
    ``jax.grad(value_fn)``. It costs about two gradient evaluations and is exact (no finite
    difference). ``vector`` must have the structure and dtypes of ``params``.

    Args:
      value_fn: ``params -> scalar``, twice differentiable.
      params: the point ``w`` where the Hessian is taken.
      vector: the direction ``v``.

    Returns:
      ``H(w) v`` as a tree shaped like ``params``.

    References:
      Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.
    """
    return jax.jvp(jax.grad(value_fn), (params,), (vector,))[1]


def hessian_operator(value_fn: Callable[[PyTree], jax.Array], params: PyTree) -> MatVec:
    """The map ``v -> H(w) v`` at fixed ``w``, linearized once so repeated products are cheap.

    ``jax.linearize`` of the gradient stores the forward-over-reverse residuals, so each product
    inside an iterative solver (CG, Lanczos) costs one linear pass instead of a full re-trace of
    the gradient. Same numbers as :func:`hessian_vector_product`.
    """
    _, hvp = jax.linearize(jax.grad(value_fn), params)
    return hvp


def gauss_newton_operator(
    model_fn: Callable[[PyTree], PyTree],
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
) -> MatVec:
    """The map ``v -> G v`` with ``G = J^T H_L J``, the generalized Gauss-Newton matrix.

    For an objective ``f(w) = L(z(w))`` with a model ``z = model_fn(w)`` and a loss
    ``L = loss_fn(z)`` that is convex in ``z``, ``J = dz/dw`` and ``H_L = d^2 L / dz^2``:

        G v = J^T (H_L (J v)).

    ``G`` is positive semi-definite whenever ``L`` is convex, which makes it the curvature matrix of
    choice for Hessian-free optimization (Schraudolph 2002; Martens 2010). ``J v`` is a forward
    product, ``J^T u`` a reverse one, and ``H_L u`` a Hessian-vector product in output space. For
    a model that is linear in ``w`` (linear or logistic regression), ``G`` equals the Hessian.
    A regularizer ``r(w)`` can be covered by returning ``(z, w)`` from the model and adding
    ``r`` to the loss: the identity part contributes its exact Hessian.

    Args:
      model_fn: ``params -> outputs`` (any pytree of arrays).
      loss_fn: ``outputs -> scalar``, convex in the outputs for ``G`` to be PSD.
      params: the point ``w``.

    Returns:
      A function ``v -> G v`` on trees shaped like ``params``.

    References:
      Schraudolph, "Fast curvature matrix-vector products for second-order gradient descent",
      Neural Computation 2002. Martens, "Deep learning via Hessian-free optimization", ICML 2010.
    """
    outputs, jvp_fn = jax.linearize(model_fn, params)
    transpose_fn = jax.linear_transpose(jvp_fn, params)
    loss_hvp = hessian_operator(loss_fn, outputs)

    def matvec(vector: PyTree) -> PyTree:
        (product,) = transpose_fn(loss_hvp(jvp_fn(vector)))
        return product

    return matvec


def gauss_newton_vector_product(
    model_fn: Callable[[PyTree], PyTree],
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    vector: PyTree,
) -> PyTree:
    """``G v = J^T H_L J v`` for ``f(w) = loss_fn(model_fn(w))``; see :func:`gauss_newton_operator`."""
    return gauss_newton_operator(model_fn, loss_fn, params)(vector)


# --------------------------------------------------------------------------------------------
# Diagonal estimates.
# --------------------------------------------------------------------------------------------


def random_like(key: jax.Array, tree: PyTree, distribution: str = "rademacher") -> PyTree:
    """A random tree shaped like ``tree`` with i.i.d. entries of mean 0 and variance 1.

    ``distribution`` is ``"rademacher"`` (``P(v_i = +1) = P(v_i = -1) = 1/2``) or ``"normal"``
    (``v_i ~ N(0, 1)``); either way ``E[v v^T] = I``, which Hutchinson's estimator
    ``diag(H) ~= E[v * (H v)]`` needs (Hutchinson 1990).
    Each leaf draws from its own key, split from ``key`` in leaf order.
    """
    check_choice(distribution, ("rademacher", "normal"), "distribution")
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for leaf_key, leaf in zip(keys, leaves):
        shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
        if distribution == "rademacher":
            out.append(jax.random.rademacher(leaf_key, shape, dtype))
        else:
            out.append(jax.random.normal(leaf_key, shape, dtype))
    return jax.tree.unflatten(treedef, out)


def hutchinson_diagonal(
    matvec: MatVec,
    like: PyTree,
    key: jax.Array,
    num_samples: int = 1,
    distribution: str = "rademacher",
) -> PyTree:
    """Unbiased estimate of ``diag(A)`` from matrix-vector products (Hutchinson's trick).

        diag(A) = E[v * (A v)]  for any random v with E[v v^T] = I,

    averaged over ``num_samples`` independent probes. With Rademacher probes (``v_i = +-1``) the
    estimate is exact when ``A`` is diagonal, and the variance of entry ``i`` is
    ``sum_{j != i} A_ij^2 / num_samples``; Gaussian probes add ``2 A_ii^2 / num_samples``.

    Args:
      matvec: ``v -> A v`` on trees shaped like ``like`` (e.g. :func:`hessian_operator`).
      like: a tree giving the shapes and dtypes of the probes (usually ``params``).
      key: a PRNG key.
      num_samples: number of probes (default 1).
      distribution: ``"rademacher"`` (default) or ``"normal"``.

    Returns:
      A tree shaped like ``like``.

    References:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines", 1990. Bekas, Kokiopoulou & Saad, "An estimator for the diagonal of a
      matrix", 2007.
    """
    check_positive_int(num_samples, "num_samples")
    check_choice(distribution, ("rademacher", "normal"), "distribution")

    def body(i, total):
        probe = random_like(jax.random.fold_in(key, i), like, distribution)
        product = matvec(probe)
        return jax.tree.map(lambda t, v, av: t + v * av, total, probe, product)

    total = jax.lax.fori_loop(0, num_samples, body, tree_zeros_like(like))
    return tree_scale(1.0 / num_samples, total)


# --------------------------------------------------------------------------------------------
# Extreme eigenvalues.
# --------------------------------------------------------------------------------------------


def _flat_operator(matvec: MatVec, vector: PyTree) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    flat, unravel = ravel_pytree(vector)
    flat = flat.astype(jnp.promote_types(flat.dtype, jnp.float32))

    def flat_matvec(x: jax.Array) -> jax.Array:
        return ravel_pytree(matvec(unravel(x.astype(flat.dtype))))[0].astype(flat.dtype)

    return flat, flat_matvec


def lanczos_eigenvalues(matvec: MatVec, initial_vector: PyTree, num_iterations: int = 20) -> jax.Array:
    """Ritz values of a symmetric operator from ``num_iterations`` Lanczos steps, ascending.

    Lanczos builds an orthonormal basis ``Q_k`` of the Krylov space
    ``span{q, A q, ..., A^{k-1} q}`` and the tridiagonal ``T_k = Q_k^T A Q_k``:

        w = A q_j,   alpha_j = q_j . w,   w <- w - Q Q^T w (twice),
        beta_j = ||w||,   q_{j+1} = w / beta_j,

    and returns the eigenvalues of ``T_k``. The extreme Ritz values converge to the extreme
    eigenvalues of ``A`` much faster than power iteration (at a rate set by the Chebyshev
    polynomial of the spectral gap). Every new vector is re-orthogonalized against the whole
    basis (twice, "twice is enough"), so no spurious copies of converged eigenvalues appear; this
    stores ``k`` vectors of the parameter size and is meant for moderate ``k``.

    The number of steps is capped at the dimension ``n``. If the Krylov space stops growing
    (``beta_j ~ 0``: ``q`` lies in an invariant subspace), the Ritz values found so far are exact
    eigenvalues and the remaining entries are ``NaN``.

    Args:
      matvec: ``v -> A v`` for a symmetric ``A`` (e.g. :func:`hessian_operator`).
      initial_vector: the start ``q`` (a tree; need not be normalized; should not be orthogonal
        to the eigenvectors sought, so a random vector is the usual choice).
      num_iterations: the Krylov dimension ``k`` (default 20).

    Returns:
      An array of ``min(k, n)`` Ritz values in ascending order (``NaN`` padded after a breakdown).

    References:
      Lanczos 1950. Golub & Van Loan, "Matrix Computations", 4th ed., sections 10.1-10.3.
      Ghorbani, Krishnan & Xiao, "An investigation into neural net optimization via Hessian
      eigenvalue density", ICML 2019.
    """
    check_positive_int(num_iterations, "num_iterations")
    flat, flat_matvec = _flat_operator(matvec, initial_vector)
    n = flat.size
    k = min(num_iterations, n)
    dtype = flat.dtype
    basis = jnp.zeros((k + 1, n), dtype).at[0].set(flat / jnp.linalg.norm(flat))
    # beta below this (relative to the size of A's action) means the Krylov space is invariant.
    breakdown_tolerance = 100 * jnp.finfo(dtype).eps

    def body(j, carry):
        basis, alphas, betas, num_valid = carry
        q = basis[j]
        w = flat_matvec(q)
        alpha = jnp.vdot(q, w)
        scale = jnp.linalg.norm(w)
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        beta = jnp.linalg.norm(w)
        valid = j < num_valid
        grows = valid & (beta > breakdown_tolerance * jnp.maximum(scale, jnp.abs(alpha)))
        basis = basis.at[j + 1].set(jnp.where(grows, w / jnp.where(grows, beta, 1), 0))
        alphas = alphas.at[j].set(jnp.where(valid, alpha, 0))
        betas = betas.at[j].set(jnp.where(grows, beta, 0))
        num_valid = jnp.where(valid & ~grows, j + 1, num_valid)
        return basis, alphas, betas, num_valid

    init = (basis, jnp.zeros(k, dtype), jnp.zeros(k, dtype), jnp.asarray(k, jnp.int32))
    _, alphas, betas, num_valid = jax.lax.fori_loop(0, k, body, init)

    # After a breakdown the unused diagonal entries get a sentinel above every Ritz value
    # (Gershgorin bound of the valid block), so they sort last and can be masked out.
    index = jnp.arange(k)
    valid = index < num_valid
    gershgorin = jnp.max(jnp.abs(alphas) + betas + jnp.concatenate([jnp.zeros(1, dtype), betas[:-1]]))
    diagonal = jnp.where(valid, alphas, 2 * gershgorin + 1)
    off_diagonal = jnp.where(index[:-1] < num_valid - 1, betas[:-1], 0)
    tridiagonal = jnp.diag(diagonal) + jnp.diag(off_diagonal, 1) + jnp.diag(off_diagonal, -1)
    ritz_values = jnp.linalg.eigvalsh(tridiagonal)
    return jnp.where(valid, ritz_values, jnp.nan)


def extreme_eigenvalues(
    matvec: MatVec, initial_vector: PyTree, num_iterations: int = 20, method: str = "lanczos"
) -> tuple[jax.Array, jax.Array]:
    """``(lambda_min, lambda_max)`` of a symmetric operator, by Lanczos or power iteration.

    ``method="lanczos"`` (default): the smallest and largest Ritz values of
    :func:`lanczos_eigenvalues` with ``num_iterations`` steps. ``method="power"``: a power
    iteration (:func:`gradtx.power_iteration`, ``num_iterations`` steps) finds the eigenvalue of
    largest magnitude ``lambda_1``, then a second one shifted by
    ``lambda_1`` finds the opposite end of the spectrum; each uses ``num_iterations`` products.
    Both see only the Krylov space of ``initial_vector``: a start that is an exact eigenvector
    (or lies in any invariant subspace) gives the extremes of that subspace's spectrum, e.g.
    ``(3, 3)`` for ``diag(3, 1, 1, 1)`` from ``e_1``, finite either way.

    Args:
      matvec: ``v -> A v`` (e.g. ``hessian_operator(f, w)`` for the Hessian's extremes).
      initial_vector: start vector (a random tree shaped like the parameters).
      num_iterations: Krylov dimension, or products per power iteration (default 20).
      method: ``"lanczos"`` or ``"power"``.

    Returns:
      ``(lambda_min, lambda_max)`` as scalars.
    """
    check_choice(method, ("lanczos", "power"), "method")
    check_positive_int(num_iterations, "num_iterations")
    if method == "lanczos":
        ritz_values = lanczos_eigenvalues(matvec, initial_vector, num_iterations)
        return jnp.nanmin(ritz_values), jnp.nanmax(ritz_values)
    first, _ = power_iteration(matvec, v0=initial_vector, num_iters=num_iterations, error_tolerance=0.0)
    second, _ = power_iteration(
        matvec, v0=initial_vector, num_iters=num_iterations, error_tolerance=0.0, shift=first
    )
    return jnp.minimum(first, second), jnp.maximum(first, second)


# --------------------------------------------------------------------------------------------
# Linear conjugate gradients.
# --------------------------------------------------------------------------------------------


class ConjugateGradientResult(NamedTuple):
    """The outcome of :func:`conjugate_gradient_solve`.

    Attributes:
      solution: the last iterate ``x_i``.
      num_iterations: ``i``, the number of matrix-vector products after the initial residual.
      residual_norm: ``||b - A x_i||`` (the recursively updated residual).
      converged: the residual or the progress criterion was met.
      negative_curvature: a direction with ``p^T A p <= 0`` stopped the solve (``A`` is not
        positive definite); ``solution`` is the iterate before it.
    """

    solution: PyTree
    num_iterations: jax.Array
    residual_norm: jax.Array
    converged: jax.Array
    negative_curvature: jax.Array


def conjugate_gradient_solve(
    matvec: MatVec,
    rhs: PyTree,
    initial_guess: PyTree | None = None,
    *,
    max_iterations: int | None = None,
    tolerance: float = 1e-10,
    progress_tolerance: float | None = None,
) -> ConjugateGradientResult:
    """Solves ``A x = b`` for symmetric positive-definite ``A`` by conjugate gradients.

    Nocedal & Wright, Algorithm 5.2, written with ``r = b - A x``:

        r_0 = b - A x_0,  p_0 = r_0
        alpha_i = r_i.r_i / p_i.A p_i
        x_{i+1} = x_i + alpha_i p_i,   r_{i+1} = r_i - alpha_i A p_i
        beta_i = r_{i+1}.r_{i+1} / r_i.r_i,   p_{i+1} = r_{i+1} + beta_i p_i.

    In exact arithmetic the iterates minimize ``phi(x) = x.A x / 2 - b.x`` over growing Krylov
    spaces and reach the solution in at most ``n`` steps (at most the number of distinct
    eigenvalues of ``A``).

    The solve stops at the first of: ``||r_i|| <= tolerance * ||b||``; ``max_iterations``;
    a direction with ``p.A p <= 0`` (reported as ``negative_curvature``, the iterate is kept);
    or, when ``progress_tolerance = eps`` is given, Martens' (2010) relative-progress test

        i > k,  phi(x_i) < 0,  (phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * eps,
        k = max(10, ceil(0.1 i)),

    which ends truncated-Newton solves once the quadratic model stops improving (Martens uses
    ``eps = 5e-4``). ``phi`` is tracked for free as ``phi(x) = -x.(b + r) / 2``.

    Args:
      matvec: ``v -> A v`` on trees shaped like ``rhs``.
      rhs: ``b``.
      initial_guess: ``x_0`` (default zeros), e.g. a warm start from the previous solve.
      max_iterations: the cap on products (default: the dimension ``n`` of ``b``).
      tolerance: relative residual tolerance (default 1e-10).
      progress_tolerance: Martens' ``eps`` (default None: off).

    Returns:
      A :class:`ConjugateGradientResult`.

    References:
      Hestenes & Stiefel, "Methods of conjugate gradients for solving linear systems", 1952.
      Nocedal & Wright, "Numerical Optimization", 2nd ed., section 5.1.
      Martens, "Deep learning via Hessian-free optimization", ICML 2010, section 4.4.
    """
    if max_iterations is None:
        max_iterations = max(sum(int(jnp.size(x)) for x in jax.tree.leaves(rhs)), 1)
    check_positive_int(max_iterations, "max_iterations")
    x = tree_zeros_like(rhs) if initial_guess is None else initial_guess
    r = tree_sub(rhs, matvec(x)) if initial_guess is not None else rhs
    rr = tree_vdot(r, r)
    dtype = jnp.result_type(rr)
    threshold = (tolerance * jnp.sqrt(tree_vdot(rhs, rhs))) ** 2
    phi_history = jnp.zeros(max_iterations + 1, dtype).at[0].set(-0.5 * tree_vdot(x, jax.tree.map(jnp.add, rhs, r)))

    class Carry(NamedTuple):
        i: jax.Array
        x: PyTree
        r: PyTree
        p: PyTree
        rr: jax.Array
        phi_history: jax.Array
        negative_curvature: jax.Array
        progress_stalled: jax.Array

    def cond(c: Carry) -> jax.Array:
        return (c.i < max_iterations) & (c.rr > threshold) & ~c.negative_curvature & ~c.progress_stalled

    def body(c: Carry) -> Carry:
        ap = matvec(c.p)
        curvature = tree_vdot(c.p, ap)
        negative = curvature <= 0
        alpha = jnp.where(negative, 0, safe_divide(c.rr, curvature))
        x = tree_add_scaled(c.x, alpha, c.p)
        r = tree_add_scaled(c.r, -alpha, ap)
        rr = tree_vdot(r, r)
        p = tree_add_scaled(r, safe_divide(rr, c.rr), c.p)
        i = c.i + 1
        phi = -0.5 * tree_vdot(x, jax.tree.map(jnp.add, rhs, r))
        history = c.phi_history.at[i].set(phi)
        stalled = jnp.asarray(False)
        if progress_tolerance is not None:
            lag = jnp.maximum(10, jnp.ceil(0.1 * i).astype(jnp.int32))
            past = history[jnp.maximum(i - lag, 0)]
            stalled = (i > lag) & (phi < 0) & ((phi - past) / jnp.where(phi < 0, phi, -1) < lag * progress_tolerance)
        keep = negative  # the step along a non-positive-curvature direction is not taken
        return Carry(
            i=jnp.where(keep, c.i, i),
            x=jax.tree.map(lambda old, new: jnp.where(keep, old, new), c.x, x),
            r=jax.tree.map(lambda old, new: jnp.where(keep, old, new), c.r, r),
            p=p,
            rr=jnp.where(keep, c.rr, rr),
            phi_history=history,
            negative_curvature=negative,
            progress_stalled=stalled & ~negative,
        )

    init = Carry(
        i=jnp.zeros([], jnp.int32),
        x=x,
        r=r,
        p=r,
        rr=rr,
        phi_history=phi_history,
        negative_curvature=jnp.asarray(False),
        progress_stalled=jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, init)
    return ConjugateGradientResult(
        solution=out.x,
        num_iterations=out.i,
        residual_norm=jnp.sqrt(out.rr),
        converged=(out.rr <= threshold) | out.progress_stalled,
        negative_curvature=out.negative_curvature,
    )
