"""Numerics shared by the Kronecker-factored preconditioners.

* ``inverse_pth_root``: ``(A + eps I)^(-1/p)`` of a batch of symmetric PSD matrices, by an
  eigendecomposition or by coupled Newton iterations, always in at least float32 (a bfloat16
  statistic is widened first; float64 stays float64).
* ``merge_small_dims`` and ``BlockPartition``: how a tensor is seen by the preconditioner. Small
  dimensions are merged (Anil et al. 2020's "best-effort shape interpretation") and large ones are
  split into blocks of ``block_size`` so that no factor is larger than ``block_size^2``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.second_order.linear_algebra import power_iteration

ROOT_METHODS = ("eigh", "newton")
# The floor of lambda_max in the relative ridge: an all-zero statistic still gets a finite root.
_MIN_MAX_EIGENVALUE = 1e-16


def check_non_negative_int(value: Any, name: str) -> None:
    """``value`` is a Python integer >= 0 (step numbers, exponents, ranks)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")


def work_dtype(dtype: Any) -> Any:
    """The dtype roots are computed in: ``dtype`` widened to at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _ridge(max_eigenvalue: jax.Array, matrix_epsilon: Any, relative: bool) -> jax.Array:
    """``eps max(lambda_max, 1e-16)`` (Anil et al. 2020, relative) or ``eps`` (absolute)."""
    if relative:
        return matrix_epsilon * jnp.maximum(max_eigenvalue, _MIN_MAX_EIGENVALUE)
    return jnp.broadcast_to(jnp.asarray(matrix_epsilon, max_eigenvalue.dtype), max_eigenvalue.shape)


def _symmetrize(matrix: jax.Array) -> jax.Array:
    return 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))


def scaled_eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``eigh`` of ``matrix / s`` with ``s = max|matrix|``: eigenvalues (of the scaled matrix,
    ascending), eigenvectors and ``s``.

    Why: statistics of small gradients have entries near 1e-6 and the Householder reduction
    multiplies them further, into float32's subnormal range, where CPUs run 10-100x slower
    (a 128 x 128 eigh took seconds). Scaling changes no eigenvector.
    """
    matrix = _symmetrize(matrix)
    tiny = jnp.finfo(matrix.dtype).tiny
    scale = jnp.maximum(jnp.max(jnp.abs(matrix), axis=(-2, -1)), tiny)
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix / scale[..., None, None])
    return eigenvalues, eigenvectors, scale


def _eigh_root(matrix: jax.Array, p: int, matrix_epsilon: Any, relative: bool) -> tuple[jax.Array, jax.Array]:
    """``V diag((max(lambda, 0) + ridge)^(-1/p)) V^T``; the error is 0 (inf when not finite)."""
    eigenvalues, eigenvectors, scale = scaled_eigh(matrix)
    # Rounding can leave the smallest eigenvalues of a PSD matrix slightly negative.
    eigenvalues = jnp.maximum(eigenvalues * scale[..., None], 0.0)
    ridge = _ridge(eigenvalues[..., -1], jnp.asarray(matrix_epsilon, matrix.dtype), relative)
    powered = (eigenvalues + ridge[..., None]) ** (-1.0 / p)
    root = jnp.einsum("...ij,...j,...kj->...ik", eigenvectors, powered, eigenvectors, precision="highest")
    finite = jnp.all(jnp.isfinite(root), axis=(-2, -1))
    return root, jnp.where(finite, 0.0, jnp.inf).astype(matrix.dtype)


def _power(matrix: jax.Array, p: int) -> jax.Array:
    """``matrix^p`` for a static ``p >= 1`` by repeated squaring."""
    result, base = None, matrix
    while p:
        if p & 1:
            result = base if result is None else jnp.matmul(result, base, precision="highest")
        p >>= 1
        if p:
            base = jnp.matmul(base, base, precision="highest")
    return result


def _newton_root_single(
    matrix: jax.Array, p: int, matrix_epsilon: Any, relative: bool, num_iters: int, error_tolerance: float
) -> tuple[jax.Array, jax.Array]:
    """One ``(n, n)`` matrix by the coupled Newton iteration (Higham 2008, eq. 7.18)."""
    size = matrix.shape[-1]
    identity = jnp.eye(size, dtype=matrix.dtype)
    if relative:
        max_eigenvalue, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6)
        ridge = _ridge(jnp.asarray(max_eigenvalue, matrix.dtype), jnp.asarray(matrix_epsilon, matrix.dtype), True)
    else:
        ridge = jnp.asarray(matrix_epsilon, matrix.dtype)
    damped = matrix + ridge * identity
    # z = (1 + p) / (2 ||A||_F) puts the spectrum of M_0 = z A inside the region of convergence.
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0 = z * damped
    h0 = z ** (1.0 / p) * identity

    def running(carry):
        i, _, _, _, error, improving = carry
        return (i < num_iters) & (error > error_tolerance) & improving

    def body(carry):
        i, m, h, _, error, _ = carry
        t = ((p + 1) * identity - m) / p
        new_m = jnp.matmul(_power(t, p), m, precision="highest")
        new_h = jnp.matmul(h, t, precision="highest")
        new_error = jnp.max(jnp.abs(new_m - identity))
        # In floating point the error stalls and then grows: stop there, keeping the previous H.
        return i + 1, new_m, new_h, h, new_error, new_error < 1.2 * error

    start = (0, m0, h0, h0, jnp.max(jnp.abs(m0 - identity)), jnp.asarray(True))
    _, m, h, previous, _, improving = jax.lax.while_loop(running, body, start)
    root = jnp.where(improving, h, previous)
    error = jnp.max(jnp.abs(m - identity))
    return root, jnp.where(jnp.all(jnp.isfinite(root)), error, jnp.inf)


def inverse_pth_root(
    matrix: jax.Array,
    p: int,
    *,
    method: str = "eigh",
    matrix_epsilon: Any = 1e-6,
    relative_matrix_epsilon: bool = True,
    num_iters: int = 100,
    error_tolerance: float = 1e-6,
) -> tuple[jax.Array, jax.Array]:
    r"""``(A + eps I)^{-1/p}`` of each symmetric PSD matrix in a batch ``(..., n, n)``, and its error.

    With ``relative_matrix_epsilon`` the ridge is :math:`\epsilon \max(\lambda_{\max}(A), 10^{-16})`
    (Anil et al. 2020), else :math:`\epsilon` itself.

    * ``method="eigh"``: :math:`A = V \operatorname{diag}(\lambda) V^T`,
      :math:`(A + \epsilon I)^{-1/p} = V \operatorname{diag}((\max(\lambda, 0) + \epsilon)^{-1/p}) V^T`.
      Backward stable; the error returned is 0, or inf when the root is not finite.
    * ``method="newton"``: the coupled Newton iteration (Higham 2008, eq. 7.18) with
      :math:`z = (1+p) / (2 \|A + \epsilon I\|_F)`, :math:`M_0 = z (A + \epsilon I)`,
      :math:`H_0 = z^{1/p} I`, :math:`T_k = ((p+1) I - M_k)/p`, :math:`M_{k+1} = T_k^p M_k`,
      :math:`H_{k+1} = H_k T_k`, until :math:`\max|M_k - I| \le` ``error_tolerance``, ``num_iters``
      steps, or the error grows by 20% (then the previous :math:`H`). Matrix products only
      (fast on accelerators); the error returned is :math:`\max|M_k - I|`. :math:`\lambda_{\max}`
      for the relative ridge comes from power iteration.

    The computation runs in ``matrix``'s dtype widened to at least float32 and the root is returned
    in that dtype. ``p`` is a static positive int.

    References:
      Anil, Gupta, Koren, Regan & Singer, "Scalable Second Order Optimization for Deep Learning",
      2020, arXiv:2002.09018. Higham, "Functions of Matrices", SIAM 2008, section 7.3.
    """
    if method not in ROOT_METHODS:
        raise ValueError(f"method must be one of {ROOT_METHODS}, got {method!r}.")
    matrix = jnp.asarray(matrix)
    matrix = matrix.astype(work_dtype(matrix.dtype))
    if matrix.shape[-1] == 1:
        # A 1 x 1 factor (a dimension of size 1) is its own eigenvalue: no decomposition needed.
        value = jnp.maximum(matrix, 0.0)
        root = (value + _ridge(value, jnp.asarray(matrix_epsilon, matrix.dtype), relative_matrix_epsilon)) ** (-1.0 / p)
        return root, jnp.where(jnp.isfinite(root[..., 0, 0]), 0.0, jnp.inf).astype(matrix.dtype)
    if method == "eigh":
        return _eigh_root(matrix, p, matrix_epsilon, relative_matrix_epsilon)
    batch = matrix.shape[:-2]
    flat = matrix.reshape((-1,) + matrix.shape[-2:])
    single = lambda a: _newton_root_single(  # noqa: E731
        a, p, matrix_epsilon, relative_matrix_epsilon, num_iters, error_tolerance
    )
    roots, errors = jax.vmap(single)(_symmetrize(flat))
    return roots.reshape(matrix.shape), errors.reshape(batch)


# ---------------------------------------------------------------------------------------------
# Shapes: merging small dimensions, splitting large ones into blocks.


def merge_small_dims(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """Merges consecutive dimensions while their product stays ``<= max_dim``; drops sizes of 1.

    ``(3, 3, 16, 32)`` with 4096 becomes ``(144, 32)``; ``(1, 2, 768, 1, 2048)`` with 1024 becomes
    ``(2, 768, 2048)``. The rule of Anil et al. 2020 (``merge_small_dims`` in their code). A shape
    of only ones becomes ``()``.
    """
    merged: list[int] = []
    product = 1
    for size in shape:
        if product * size <= max_dim:
            product *= size
        else:
            if product > 1:
                merged.append(product)
            product = size
    if product > 1:
        merged.append(product)
    return tuple(merged)


@dataclass(frozen=True)
class BlockPartition:
    """A tensor of ``shape`` cut into equal blocks: each dimension ``n`` in ``blocked`` into
    ``ceil(n / block_size)`` pieces of ``ceil(n / pieces) <= block_size`` (zero-padding the last
    one by fewer rows than there are pieces), the others whole.

    ``split(x)`` returns the blocks stacked, ``(num_blocks, *block_shape)``; ``merge`` inverts it.
    Zero padding does not change a Kronecker factor on the real rows: the padded rows of ``G G^T``
    are zero, the factor is block-diagonal, and so is its inverse root.
    """

    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    grid: tuple[int, ...]

    @classmethod
    def create(cls, shape: tuple[int, ...], block_size: int, blocked: tuple[bool, ...]) -> BlockPartition:
        grid = tuple(math.ceil(n / block_size) if b else 1 for n, b in zip(shape, blocked))
        block_shape = tuple(math.ceil(n / g) for n, g in zip(shape, grid))
        return cls(tuple(shape), block_shape, grid)

    @property
    def num_blocks(self) -> int:
        return math.prod(self.grid)

    def split(self, x: jax.Array) -> jax.Array:
        padded = tuple(g * b for g, b in zip(self.grid, self.block_shape))
        if padded != self.shape:
            x = jnp.pad(x, [(0, p - n) for p, n in zip(padded, self.shape)])
        interleaved = sum(((g, b) for g, b in zip(self.grid, self.block_shape)), ())
        rank = len(self.shape)
        order = tuple(range(0, 2 * rank, 2)) + tuple(range(1, 2 * rank, 2))
        return x.reshape(interleaved).transpose(order).reshape((self.num_blocks,) + self.block_shape)

    def merge(self, blocks: jax.Array) -> jax.Array:
        rank = len(self.shape)
        x = blocks.reshape(self.grid + self.block_shape)
        order = sum(((i, rank + i) for i in range(rank)), ())
        x = x.transpose(order).reshape(tuple(g * b for g, b in zip(self.grid, self.block_shape)))
        return x[tuple(slice(0, n) for n in self.shape)]
