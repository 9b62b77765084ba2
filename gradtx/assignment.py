"""The linear assignment problem, solved in JAX: ``gradtx.assignment``.

Given an ``n x m`` cost matrix ``C``, find ``k = min(n, m)`` pairs ``(i_1, j_1), ..., (i_k, j_k)``
with distinct rows and distinct columns that minimise the total cost,

.. math::
    \\min_{X \\in \\{0, 1\\}^{n \\times m}} \\sum_{i, j} C_{ij} X_{ij}
    \\quad \\text{s.t.} \\quad \\sum_j X_{ij} \\le 1, \\ \\sum_i X_{ij} \\le 1, \\ \\sum_{i, j} X_{ij} = \\min(n, m).

Both solvers are Hungarian-type primal-dual methods: they keep potentials ``u`` (rows) and ``v``
(columns) with reduced costs ``C_ij - u_i - v_j >= 0`` and grow the matching one row at a time
along a shortest augmenting path (Kuhn 1955; Munkres 1957), in ``O(k^2 max(n, m))`` operations.
They run under ``jit`` and ``vmap`` (the loops are ``lax`` loops, the shapes static). Costs must be
finite; with ``inf`` or ``nan`` entries the result is unspecified. Every name, argument and return
convention is Optax's (``optax.assignment``), and so is the order of the returned pairs.

References:
  H. W. Kuhn, "The Hungarian method for the assignment problem", Naval Research Logistics
  Quarterly 2, 1955. J. Munkres, "Algorithms for the assignment and transportation problems",
  J. SIAM 5, 1957. D. F. Crouse, "On implementing 2D rectangular assignment algorithms",
  IEEE Trans. Aerospace and Electronic Systems 52, 2016.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["hungarian_algorithm", "base_hungarian_algorithm"]


def _prepare(cost_matrix: jax.Array, name: str) -> tuple[jax.Array, bool]:
    """The cost matrix with no more rows than columns (transposed if needed), in a float dtype."""
    cost = jnp.asarray(cost_matrix)
    if cost.ndim != 2:
        raise ValueError(f"{name}: cost_matrix must be a 2-D array, got shape {cost.shape}.")
    if jnp.issubdtype(cost.dtype, jnp.complexfloating):
        raise TypeError(f"{name}: cost_matrix must be real, got dtype {cost.dtype}.")
    transpose = cost.shape[0] > cost.shape[1]
    if transpose:
        cost = cost.T
    # Optax works in the default float dtype (float64 with x64) or wider.
    return cost.astype(jnp.promote_types(cost.dtype, jnp.result_type(float))), transpose


def _empty() -> tuple[jax.Array, jax.Array]:
    return jnp.zeros(0, int), jnp.zeros(0, int)


def hungarian_algorithm(cost_matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Minimum-cost assignment of rows to columns, by the Hungarian method with potentials.

    Solves ``min sum_k C[i_k, j_k]`` over ``min(n, m)`` pairs with distinct rows and columns (see
    the module docstring for the integer program). With ``n <= m`` (else on ``C^T``), rows enter one
    at a time; for each, a Dijkstra-like search over the columns keeps ``minv_j``, the least reduced
    cost ``C_ij - u_i - v_j`` of reaching column ``j``, moves to the unused column with the
    smallest ``minv`` (the first one on ties), and shifts the potentials by that ``delta``:

    .. math::
        u_{p(j)} \\leftarrow u_{p(j)} + \\delta, \\quad v_j \\leftarrow v_j - \\delta
        \\ (j \\text{ visited}), \\qquad minv_j \\leftarrow minv_j - \\delta \\ (\\text{otherwise}),

    until it reaches a free column; the matching is then flipped along the path. ``-v_0`` (of
    the dummy column) ends as the optimal cost, by LP duality.

    Args:
      cost_matrix: the ``n x m`` real matrix ``C`` (either may be the larger; 0 is allowed).

    Returns:
      ``(i, j)``, integer arrays of length ``min(n, m)``: row ``i[k]`` goes to column ``j[k]`` and
      the optimal cost is ``cost_matrix[i, j].sum()``. The order is Optax's: for a square matrix
      ``j = arange(n)``; with fewer rows than columns the pairs come by decreasing row, with fewer
      columns than rows by decreasing column.

    Matches ``optax.assignment.hungarian_algorithm`` (same pairs, same order, same tie-breaking).
    References: Kuhn 1955; Munkres 1957; the ``O(n^2 m)`` form with a dummy column 0 is the
    classical shortest-augmenting-path Hungarian method, also used by Scenic (Dehghani et al.
    2022, https://arxiv.org/abs/2110.11403).
    """
    cost, transpose = _prepare(cost_matrix, "hungarian_algorithm")
    n, m = cost.shape
    if n == 0:
        return _empty()
    # 1-based columns with a dummy column 0 that holds the entering row; row n + 1 absorbs the
    # potential shifts meant for no row (a scatter target that is never read).
    def add_row(carry, row):
        u, v, owner = carry  # owner[j]: the 1-based row matched to column j, 0 for none
        owner = owner.at[0].set(row + 1)

        def search_step(search):
            u, v, visited, minv, came_from, col = search
            visited = visited.at[col].set(True)
            free = ~visited[1:]
            r = owner[col]
            reduced = jnp.where(free, cost[r - 1] - u[r] - v[1:], jnp.inf)
            better = reduced < minv
            came_from = jnp.where(better, col, came_from)
            minv = jnp.where(better, reduced, minv)
            masked = jnp.where(free, minv, jnp.inf)
            delta = jnp.min(masked)
            # The first free column of least minv; with no finite one (inf costs) any free one, so
            # that the search still ends.
            next_col = jnp.where(jnp.isfinite(delta), jnp.argmin(masked), jnp.argmax(free)) + 1
            u = u.at[jnp.where(visited, owner, n + 1)].add(delta)
            v = jnp.where(visited, v - delta, v)
            minv = jnp.where(free, minv - delta, minv)
            return u, v, visited, minv, came_from, next_col

        search = (u, v, jnp.zeros(m + 1, bool), jnp.full(m, jnp.inf, cost.dtype), jnp.zeros(m, int), 0)
        u, v, _, _, came_from, col = jax.lax.while_loop(lambda s: owner[s[-1]] != 0, search_step, search)

        def flip(state):
            owner, col = state
            previous = came_from[col - 1]
            return owner.at[col].set(owner[previous]), previous

        owner, _ = jax.lax.while_loop(lambda s: s[1] != 0, flip, (owner, col))
        return (u, v, owner), None

    start = (jnp.zeros(n + 2, cost.dtype), jnp.zeros(m + 1, cost.dtype), jnp.zeros(m + 1, int))
    (_, _, owner), _ = jax.lax.scan(add_row, start, jnp.arange(n))
    if n == m:
        rows, cols = owner[1:] - 1, jnp.arange(n)
    else:
        # The n matched columns are those with an owner; top_k lists them by decreasing row.
        rows, cols = jax.lax.top_k(owner[1:], n)
        rows = rows - 1
    return (cols, rows) if transpose else (rows, cols)


def base_hungarian_algorithm(cost_matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Minimum-cost assignment of rows to columns, by Crouse's shortest augmenting path method.

    The same problem as ``hungarian_algorithm`` (see the module docstring), solved by the
    algorithm of Crouse (2016), the one behind ``scipy.optimize.linear_sum_assignment``. With
    ``n <= m`` (else on ``C^T``), each new row starts a Dijkstra search over reduced costs

    .. math::
        d_j \\leftarrow \\min\\bigl(d_j,\\ d_{min} + C_{ij} - u_i - v_j\\bigr)

    from the rows reached so far, settling the unsettled column of least ``d_j`` (preferring, on
    ties, a free column: it ends the search) until a free column ``s`` is reached; then

    .. math::
        u_{i_0} \\mathrel{+}= d_{min}, \\quad
        u_i \\mathrel{+}= d_{min} - d_{col(i)} \\ (i \\text{ reached}), \\quad
        v_j \\mathrel{-}= d_{min} - d_j \\ (j \\text{ settled}),

    and the matching is flipped along the path to ``s``. The columns are visited in Crouse's
    order, so ties are broken as SciPy breaks them.

    Args:
      cost_matrix: the ``n x m`` real matrix ``C`` (either may be the larger; 0 is allowed).

    Returns:
      ``(i, j)``, integer arrays of length ``min(n, m)`` with ``i`` increasing: row ``i[k]`` goes
      to column ``j[k]`` and the optimal cost is ``cost_matrix[i, j].sum()`` (SciPy's order).

    Matches ``optax.assignment.base_hungarian_algorithm`` and ``scipy.optimize.linear_sum_assignment``.
    References: Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 2016,
    pp. 1685-1686; Kuhn 1955; Munkres 1957.
    """
    cost, transpose = _prepare(cost_matrix, "base_hungarian_algorithm")
    n, m = cost.shape
    if n == 0:
        return _empty()
    positions = jnp.arange(m)

    def augment_row(current_row, carry):
        u, v, row_of_col, col_of_row, path = carry

        def settle(search):
            # ``order`` lists the unsettled columns first (Crouse's ``remaining``, kept by swap-removal);
            # only its first ``left`` entries count.
            row, d_min, order, left, reached, settled, dist, path, sink = search
            reached = reached.at[row].set(True)
            reduced = d_min + cost[row] - u[row] - v
            improved = ~settled & (reduced < dist)
            path = jnp.where(improved, row, path)
            dist = jnp.where(improved, reduced, dist)
            live = positions < left
            d = jnp.where(live, dist[order], jnp.inf)
            lowest = jnp.min(d)
            tied = live & (d == lowest)
            tied_free = tied & (row_of_col[order] == -1)
            # Crouse scans ``order`` once: the first least column, replaced by any later free one.
            last_free = m - 1 - jnp.argmax(tied_free[::-1])
            index = jnp.where(tied_free.any(), last_free, jnp.argmax(tied))
            col = order[index]
            found = jnp.isfinite(lowest)
            is_free = row_of_col[col] == -1
            sink = jnp.where(found & is_free, col, jnp.where(found, -1, -2))
            row = jnp.where(is_free, row, row_of_col[col])
            settled = settled.at[col].set(settled[col] | found)
            left = left - found
            order = order.at[index].set(jnp.where(found, order[left], order[index]))
            return row, lowest, order, left, reached, settled, dist, path, sink

        search = (
            current_row,
            jnp.zeros((), cost.dtype),
            positions[::-1],
            jnp.asarray(m),
            jnp.zeros(n, bool),
            jnp.zeros(m, bool),
            jnp.full(m, jnp.inf, cost.dtype),
            path,
            jnp.asarray(-1),
        )
        _, d_min, _, _, reached, settled, dist, path, sink = jax.lax.while_loop(
            lambda s: s[-1] == -1, settle, search
        )

        u = u.at[current_row].add(d_min)
        others = reached & (jnp.arange(n) != current_row)
        u = jnp.where(others, u + d_min - dist[col_of_row], u)
        v = jnp.where(settled, v - (d_min - dist), v)

        def flip(state):
            col, row_of_col, col_of_row, _ = state
            row = path[col]
            row_of_col = row_of_col.at[col].set(row)
            next_col = col_of_row[row]
            col_of_row = col_of_row.at[row].set(col)
            return next_col, row_of_col, col_of_row, row == current_row

        # sink == -2 (no finite path: an infeasible matrix) skips the flip.
        _, row_of_col, col_of_row, _ = jax.lax.while_loop(
            lambda s: ~s[-1], flip, (sink, row_of_col, col_of_row, sink < 0)
        )
        return u, v, row_of_col, col_of_row, path

    start = (
        jnp.zeros(n, cost.dtype),
        jnp.zeros(m, cost.dtype),
        jnp.full(m, -1),
        jnp.full(n, -1),
        jnp.full(m, -1),
    )
    _, _, _, col_of_row, _ = jax.lax.fori_loop(0, n, augment_row, start)
    if transpose:
        by_row = jnp.argsort(col_of_row)
        return col_of_row[by_row], by_row
    return jnp.arange(n), col_of_row
