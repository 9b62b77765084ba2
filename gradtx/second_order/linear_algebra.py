"""Optax's linear-algebra utilities: ``power_iteration``, ``matrix_inverse_pth_root``, ``nnls``.

Each takes a matrix (or, for ``power_iteration``, a matrix-vector product on pytrees) and runs a
fixed-cap ``jax.lax`` loop, so it traces once under ``jit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.second_order._common import check_positive_int, normalized_or
from gradtx.tree import norm, scale, vdot

PyTree = Any


def power_iteration(
    matrix: jax.Array | Callable[[PyTree], PyTree],
    *,
    v0: PyTree | None = None,
    num_iters: int = 100,
    error_tolerance: float = 1e-6,
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST,
    key: jax.Array | None = None,
    shift: float | jax.Array = 0.0,
) -> tuple[jax.Array, PyTree]:
    r"""The dominant eigenvalue of a matrix (or linear operator) and its eigenvector, by power iteration.

    .. math::
        v_0 = \frac{v^{(0)}}{\|v^{(0)}\|},\qquad z_i = (A - \sigma I) v_i,\qquad
        \lambda_i = \langle v_i, z_i\rangle,\qquad v_{i+1} = \frac{z_i}{\|z_i\|},

    stopping after ``num_iters`` steps or once :math:`\|z_i - \lambda_i v_i\| / |\lambda_i|` falls
    below ``error_tolerance``. Returns :math:`(\lambda + \sigma, z / \|z\|)`: the eigenvalue of
    :math:`A` farthest from the shift :math:`\sigma` (the largest in magnitude for
    :math:`\sigma = 0`; the smallest end of the spectrum for :math:`\sigma = \lambda_{\max}`) and its
    unit eigenvector. The error of :math:`v` shrinks like
    :math:`|\lambda_2 - \sigma| / |\lambda_1 - \sigma|` per step.

    Args:
      matrix: an ``(n, n)`` array, or a function ``v -> A v`` on pytrees.
      v0: the start vector (a tree shaped like the operator's input; required for a function).
        Default for an array: uniform on ``[-1, 1]^n`` drawn with ``key``.
      num_iters: the cap on steps (default 100).
      error_tolerance: the relative residual that stops the iteration (default 1e-6; 0 runs all
        ``num_iters`` steps).
      precision: ``jax.lax.Precision`` of the matrix products for an array (default HIGHEST).
      key: PRNG key for the default ``v0`` (default ``jax.random.PRNGKey(0)``).
      shift: :math:`\sigma` (default 0), a gradtx addition, keyword only.

    Returns:
      ``(eigenvalue, eigenvector)``.

    Matches ``optax.power_iteration`` (same numbers, tested in float64), except that a zero product
    :math:`z_i = 0` (``v_i`` in the null space, e.g. :math:`A = 0`) keeps :math:`v_i` and returns the
    exact eigenvalue :math:`\sigma` where Optax divides by zero and returns NaN.

    References:
      Golub & Van Loan, "Matrix Computations", 4th ed., 2013, section 8.2.1.
    """
    if callable(matrix):
        product = matrix
        if v0 is None:
            raise ValueError("power_iteration: v0 is required when matrix is a function (its input structure).")
    else:
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"power_iteration: matrix must be square (n, n), got shape {matrix.shape}.")

        def product(v):
            return jnp.matmul(matrix, v, precision=precision)

        if v0 is None:
            key = jax.random.PRNGKey(0) if key is None else key
            v0 = jax.random.uniform(key, matrix.shape[-1:], matrix.dtype, minval=-1.0, maxval=1.0)

    def shifted(v):
        z = product(v)
        return z if isinstance(shift, (int, float)) and shift == 0 else jax.tree.map(lambda a, b: a - shift * b, z, v)

    def unit(x, fallback):
        # A zero vector spans an invariant subspace: keep the current direction, not NaN.
        return normalized_or(x, fallback)

    v0 = scale(1.0 / norm(v0), v0)

    def running(carry):
        v, z, eigenvalue, i = carry
        residual = norm(jax.tree.map(lambda a, b: a - eigenvalue * b, z, v))
        return ~(jnp.abs(residual / eigenvalue) < error_tolerance) & (i < num_iters)

    def body(carry):
        v, z, _, i = carry
        v = unit(z, v)
        z = shifted(v)
        return v, z, vdot(v, z), i + 1

    v, z, eigenvalue, _ = jax.lax.while_loop(running, body, (v0, shifted(v0), jnp.asarray(0.0), jnp.asarray(0)))
    return eigenvalue + shift, unit(z, v)


def _matrix_power(matrix: jax.Array, p: int, precision: jax.lax.Precision) -> jax.Array:
    """``matrix^p`` by repeated squaring (for p = 2^k exactly the products ``m^2 = m m``, ``m^4 = m^2 m^2``)."""
    result, base = None, matrix
    while p:
        if p & 1:
            result = base if result is None else jnp.matmul(result, base, precision=precision)
        p >>= 1
        if p:
            base = jnp.matmul(base, base, precision=precision)
    return result


def matrix_inverse_pth_root(
    matrix: jax.Array,
    p: int,
    num_iters: int = 100,
    ridge_epsilon: float = 1e-6,
    error_tolerance: float = 1e-6,
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    r"""``(A + eps I)^{-1/p}`` of a symmetric positive semi-definite ``A`` by coupled Newton iterations.

    With :math:`\epsilon` = ``ridge_epsilon`` times :math:`\max(\lambda_{\max}(A), 10^{-16})`
    (:func:`power_iteration`), :math:`\tilde A = A + \epsilon I` and
    :math:`z = (1 + p) / (2 \|\tilde A\|_F)` (Higham 2008, eq. 7.18):

    .. math::
        M_0 = z \tilde A,\quad H_0 = z^{1/p} I,\qquad
        T_k = \tfrac{p + 1}{p} I - \tfrac{1}{p} M_k,\quad M_{k+1} = T_k^p M_k,\quad H_{k+1} = H_k T_k,

    so :math:`M_k \to I` and :math:`H_k \to \tilde A^{-1/p}`. It stops after ``num_iters`` steps, once
    :math:`\max|M_k - I| \le` ``error_tolerance``, or when the error grows by more than 20% (then
    the previous :math:`H` is returned). A ``1 x 1`` matrix is powered directly.

    Args:
      matrix: ``(n, n)`` symmetric PSD.
      p: the root, a positive integer.
      num_iters: cap on iterations (default 100).
      ridge_epsilon: relative ridge (default 1e-6).
      error_tolerance: stopping error (default 1e-6).
      precision: of the matrix products (default HIGHEST).

    Returns:
      ``(H, error)`` with ``H ~ (A + eps I)^{-1/p}`` in ``matrix``'s dtype and
      ``error = max|M - I|``.

    Matches ``optax.matrix_inverse_pth_root`` for ``p`` in 1, 2, 4, 8 (tested); for other ``p``
    gradtx computes :math:`T_k^p` itself where Optax's switch over 1, 2, 4, 8 takes the nearest
    power of two (wrong roots). The iteration runs in at least float32.

    References:
      Higham, "Functions of Matrices: Theory and Computation", SIAM 2008, section 7.3, eq. 7.18.
      Gupta, Koren & Singer, "Shampoo: preconditioned stochastic tensor optimization", ICML 2018.
    """
    check_positive_int(p, "p")
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix_inverse_pth_root: matrix must be square (n, n), got shape {matrix.shape}.")
    size = matrix.shape[0]
    work_dtype = jnp.promote_types(matrix.dtype, jnp.float32)
    alpha = jnp.asarray(-1.0 / p, jnp.float32)
    identity = jnp.eye(size, dtype=jnp.float32)
    max_eigenvalue, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6, precision=precision)
    ridge = ridge_epsilon * jnp.maximum(max_eigenvalue, 1e-16)
    if size == 1:
        return (matrix + ridge) ** alpha, jnp.zeros([], work_dtype)

    def running(carry):
        i, _, _, _, error, improving = carry
        return (i < num_iters) & (error > error_tolerance) & improving

    def body(carry):
        i, m, h, _, error, _ = carry
        t = (1 - alpha) * identity + alpha * m
        new_m = jnp.matmul(_matrix_power(t, p, precision), m, precision=precision)
        new_h = jnp.matmul(h, t, precision=precision)
        new_error = jnp.max(jnp.abs(new_m - identity))
        # The error may rise once before it falls; more than 20% means divergence.
        return i + 1, new_m, new_h, h, new_error, new_error < error * 1.2

    damped = matrix + ridge * identity
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0 = damped * z
    h0 = identity * jnp.power(z, 1.0 / p)
    start = (0, m0, h0, h0, jnp.max(jnp.abs(m0 - identity)), True)
    _, m, h, previous_h, _, improving = jax.lax.while_loop(running, body, start)
    error = jnp.max(jnp.abs(m - identity))
    converged = jnp.asarray(improving, previous_h.dtype)
    root = converged * h + (1 - converged) * previous_h
    return jnp.asarray(root, matrix.dtype), error


def nnls(
    A: jax.Array,  # noqa: N803 (Optax's argument names)
    b: jax.Array,
    iters: int,
    unroll: int | bool = 1,
    L: jax.Array | float | None = None,  # noqa: N803
) -> jax.Array:
    r"""Non-negative least squares, :math:`\min_{x \ge 0} \|A x - b\|_2`, by fast projected gradient.

    With :math:`Q = A^\top A`, :math:`q = A^\top b` and :math:`L \ge \lambda_{\max}(Q)`, Polyak's
    (2015) accelerated projected gradient, from :math:`x_0 = p_0 = 0`, :math:`c_0 = 0`:

    .. math::
        c_{k+1} = \tfrac{1 + \sqrt{1 + 4 c_k^2}}{2},\quad
        x_{k+1} = \max\!\big(0,\ p_k - (Q p_k - q) / L\big),\quad
        p_{k+1} = x_{k+1} + \tfrac{c_k - 1}{c_{k+1}} (x_{k+1} - x_k).

    Args:
      A: ``(M, N)``.
      b: ``(M,)``, or ``(M, K)`` for ``K`` independent problems.
      iters: number of iterations (a ``lax.scan`` of that length).
      unroll: ``lax.scan``'s ``unroll`` (default 1).
      L: an upper bound on the largest eigenvalue of :math:`A^\top A` (default: the smaller of its
        Frobenius and 1-norms).

    Returns:
      ``x`` of shape ``(N,)`` or ``(N, K)``.

    Matches ``optax.nnls``.

    References:
      Polyak, "Projected gradient method for non-negative least square", Contemporary
      Mathematics 636, 2015.
    """
    A, b = jnp.asarray(A), jnp.asarray(b)  # noqa: N806
    if A.ndim != 2 or b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ValueError(f"nnls: A must be (M, N) and b (M,) or (M, K); got A {A.shape}, b {b.shape}.")
    gram, rhs = A.mT @ A, A.mT @ b
    if L is None:
        frobenius = jnp.linalg.matrix_norm(gram, ord="fro")
        L = jnp.minimum(frobenius, jnp.linalg.matrix_norm(gram, ord=1)) if gram.size else frobenius  # noqa: N806
    L = jnp.where(L == 0, 1, L)  # noqa: N806  (A = 0: any positive L gives x = 0)

    def step(carry, _):
        x, p, c = carry
        c_next = (1 + jnp.sqrt(1 + 4 * c**2)) / 2
        x_next = (p - (gram @ p - rhs) / L).clip(0)
        return (x_next, x_next + (c - 1) / c_next * (x_next - x), c_next), None

    x0 = jnp.zeros_like(b, shape=A.shape[-1:] + b.shape[1:])
    (x, _, _), _ = jax.lax.scan(step, (x0, x0, 0.0), length=iters, unroll=unroll)
    return x
