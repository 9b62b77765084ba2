"""gradtx.assignment against scipy.optimize.linear_sum_assignment and Optax, float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from gradtx import assignment

SOLVERS = [assignment.hungarian_algorithm, assignment.base_hungarian_algorithm]
SHAPES = [(1, 6), (5, 5), (3, 8), (8, 3)]
BATCH = 12


def cost_batches(shape, seed):
    """Continuous, small-integer (many ties) and constant cost matrices, ``BATCH`` of each."""
    rng = np.random.default_rng(seed)
    return {
        "normal": rng.normal(size=(BATCH, *shape)),
        "integers": rng.integers(0, 4, size=(BATCH, *shape)).astype(np.float64),
        "constant": np.ones((BATCH, *shape)),
    }


def check_optimal_assignments(costs, i, j):
    batch, n, m = costs.shape
    k = min(n, m)
    assert i.shape == j.shape == (batch, k) and jnp.issubdtype(i.dtype, jnp.integer)
    for b in range(batch):
        assert len(set(np.asarray(i[b]))) == k and len(set(np.asarray(j[b]))) == k
        assert np.all((0 <= i[b]) & (i[b] < n) & (0 <= j[b]) & (j[b] < m))
        si, sj = scipy.optimize.linear_sum_assignment(costs[b])
        np.testing.assert_allclose(costs[b][i[b], j[b]].sum(), costs[b][si, sj].sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_hungarian_algorithm_is_optimal_and_identical_to_optax(shape):
    ours = jax.jit(jax.vmap(assignment.hungarian_algorithm))
    theirs = jax.jit(jax.vmap(optax.assignment.hungarian_algorithm))
    for kind, costs in cost_batches(shape, seed=sum(shape)).items():
        i, j = ours(jnp.asarray(costs))
        check_optimal_assignments(costs, i, j)
        oi, oj = theirs(jnp.asarray(costs))
        np.testing.assert_array_equal(i, oi, err_msg=kind)  # same pairs, same order, same ties
        np.testing.assert_array_equal(j, oj, err_msg=kind)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_base_hungarian_algorithm_is_scipys_assignment(shape):
    # Crouse's algorithm is SciPy's (and Optax's base_hungarian_algorithm is a port of it): the very
    # same pairs in the same order, ties included.
    ours = jax.jit(jax.vmap(assignment.base_hungarian_algorithm))
    for kind, costs in cost_batches(shape, seed=sum(shape) + 1).items():
        i, j = ours(jnp.asarray(costs))
        check_optimal_assignments(costs, i, j)
        for b in range(BATCH):
            si, sj = scipy.optimize.linear_sum_assignment(costs[b])
            np.testing.assert_array_equal(i[b], si, err_msg=kind)
            np.testing.assert_array_equal(j[b], sj, err_msg=kind)


def test_base_hungarian_algorithm_equals_optax_on_ties():
    costs = jnp.asarray(np.random.default_rng(3).integers(0, 3, size=(BATCH, 6, 4)).astype(np.float64))
    i, j = jax.jit(jax.vmap(assignment.base_hungarian_algorithm))(costs)
    oi, oj = jax.jit(jax.vmap(optax.assignment.base_hungarian_algorithm))(costs)
    np.testing.assert_array_equal(i, oi)
    np.testing.assert_array_equal(j, oj)


def test_brute_force_on_all_small_permutations():
    costs = np.random.default_rng(7).integers(-3, 4, size=(20, 4, 4)).astype(np.float64)
    for fn in SOLVERS:
        i, j = jax.jit(jax.vmap(fn))(jnp.asarray(costs))
        for b in range(len(costs)):
            best = min(sum(costs[b, r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(4)))
            assert costs[b][i[b], j[b]].sum() == best


@pytest.mark.parametrize("fn", SOLVERS)
def test_empty_integer_and_float32_inputs(fn):
    for shape in [(0, 0), (0, 3), (3, 0)]:
        i, j = fn(jnp.zeros(shape))
        assert i.shape == j.shape == (0,)
    costs = np.array([[8, 4, 7], [5, 2, 3], [9, 6, 7], [9, 4, 8]])
    i, j = fn(jnp.asarray(costs))
    assert costs[i, j].sum() == 15
    i, j = fn(jnp.asarray(costs, jnp.float32))
    assert costs[i, j].sum() == 15


def test_optax_docstring_example_order():
    costs = jnp.array([[8, 4, 7], [5, 2, 3], [9, 6, 7], [9, 4, 8]])
    i, j = assignment.base_hungarian_algorithm(costs)
    np.testing.assert_array_equal(i, [0, 1, 3])
    np.testing.assert_array_equal(j, [0, 2, 1])
    costs = jnp.array([[90, 80, 75, 70], [35, 85, 55, 65], [125, 95, 90, 95], [45, 110, 95, 115], [50, 100, 90, 100]])
    i, j = assignment.hungarian_algorithm(costs)
    assert costs[i, j].sum() == 265


@pytest.mark.parametrize("fn", SOLVERS)
def test_bad_input_is_refused(fn):
    with pytest.raises(ValueError, match="2-D"):
        fn(jnp.zeros(3))
    with pytest.raises(TypeError, match="real"):
        fn(jnp.zeros((2, 2), jnp.complex64))


@pytest.mark.parametrize("fn", SOLVERS)
def test_infinite_costs_terminate(fn):
    costs = jnp.array([[1.0, jnp.inf], [jnp.inf, jnp.inf]])
    i, j = jax.jit(fn)(costs)
    assert i.shape == j.shape == (2,)
