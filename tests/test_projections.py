"""gradtx.projections against Optax, closed forms and the Duchi et al. (2008) algorithm in NumPy, float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import gradtx
from gradtx import projections as P

OP = optax.projections
SHAPES = [((1,),), ((2,),), ((7,),), ((50,),), ((3, 4), (4,), ())]


def make_tree(seed, shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(rng.normal(size=s) * scale) for s in shapes]
    return leaves[0] if len(leaves) == 1 else {f"x{i}": leaf for i, leaf in enumerate(leaves)}


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def duchi_simplex(v, s=1.0):
    """Duchi, Shalev-Shwartz, Singer, Chandra (ICML 2008), Figure 1, in NumPy."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    j = np.arange(1, len(v) + 1)
    rho = j[u - (css - s) / j > 0][-1]
    theta = (css[rho - 1] - s) / rho
    return np.maximum(v - theta, 0)


def assert_trees_close(a, b, rtol=1e-12, atol=1e-13):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("seed, spread", [(0, 0.1), (1, 10.0)])
def test_every_projection_matches_optax(shapes, seed, spread):
    x = make_tree(seed, shapes, spread)
    a = make_tree(seed + 50, shapes)
    for scale in (0.5, 3.0):
        assert_trees_close(P.projection_simplex(x, scale), OP.projection_simplex(x, scale))
        assert_trees_close(P.projection_l1_ball(x, scale), OP.projection_l1_ball(x, scale))
        assert_trees_close(P.projection_l1_sphere(x, scale), OP.projection_l1_sphere(x, scale))
        assert_trees_close(P.projection_l2_ball(x, scale), OP.projection_l2_ball(x, scale))
        assert_trees_close(P.projection_l2_sphere(x, scale), OP.projection_l2_sphere(x, scale))
        assert_trees_close(P.projection_linf_ball(x, scale), OP.projection_linf_ball(x, scale))
        assert_trees_close(P.projection_halfspace(x, a, scale), OP.projection_halfspace(x, a, scale))
        assert_trees_close(P.projection_halfspace(x, a, -scale), OP.projection_halfspace(x, a, -scale))
        assert_trees_close(P.projection_hyperplane(x, a, scale), OP.projection_hyperplane(x, a, scale))
    assert_trees_close(P.projection_non_negative(x), OP.projection_non_negative(x))
    assert_trees_close(P.projection_vector(x, a), OP.projection_vector(x, a))
    lower, upper = jax.tree.map(lambda v: v - 0.5, a), jax.tree.map(lambda v: v + 0.5, a)
    assert_trees_close(P.projection_box(x, lower, upper), OP.projection_box(x, lower, upper))
    if not isinstance(x, dict):  # Optax fails on a container with scalar bounds (see below).
        assert_trees_close(P.projection_hypercube(x, 2.0), OP.projection_hypercube(x, 2.0))


@pytest.mark.parametrize("n", [1, 2, 3, 10, 200])
def test_simplex_equals_duchi_and_is_optimal(n):
    rng = np.random.default_rng(n)
    for spread, scale in itertools.product((0.01, 1.0, 100.0), (0.3, 1.0, 5.0)):
        v = rng.normal(size=n) * spread
        p = np.asarray(P.projection_simplex(jnp.asarray(v), scale))
        np.testing.assert_allclose(p, duchi_simplex(v, scale), rtol=1e-12, atol=1e-13)
        assert np.all(p >= 0) and np.isclose(p.sum(), scale, rtol=1e-13)
        # Variational inequality: <v - p, y - p> <= 0 for every y in the simplex.
        ys = rng.dirichlet(np.ones(n), size=200) * scale
        assert np.max((ys - p) @ (v - p)) <= 1e-10 * max(1.0, np.abs(v).max())


@pytest.mark.parametrize(
    "v",
    [[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, -1.0], [2.0, 2.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.1], [-1.0, -1.0], [7.0, 7.0, 7.0]],
)
def test_simplex_ties(v):
    v = np.asarray(v)
    p = np.asarray(P.projection_simplex(jnp.asarray(v)))
    np.testing.assert_allclose(p, duchi_simplex(v), atol=1e-15)
    np.testing.assert_allclose(p, np.asarray(OP.projection_simplex(jnp.asarray(v))), atol=1e-15)
    # Tied entries get tied results.
    for i, j in itertools.combinations(range(len(v)), 2):
        if v[i] == v[j]:
            assert p[i] == p[j]


def test_points_already_inside_are_fixed():
    rng = np.random.default_rng(3)
    on_simplex = jnp.asarray(rng.dirichlet(np.ones(6)) * 2.0)
    np.testing.assert_allclose(P.projection_simplex(on_simplex, 2.0), on_simplex, atol=1e-15)
    vertex = jnp.asarray([0.0, 1.0, 0.0])
    np.testing.assert_array_equal(P.projection_simplex(vertex), vertex)
    inside = {"a": jnp.asarray([0.1, -0.2]), "b": jnp.asarray(0.3)}
    for project in (P.projection_l1_ball, P.projection_l2_ball, P.projection_linf_ball):
        assert_trees_close(project(inside), inside, rtol=0, atol=0)
    assert_trees_close(P.projection_box(inside, -1.0, 1.0), inside, rtol=0, atol=0)
    a = {"a": jnp.asarray([1.0, 1.0]), "b": jnp.asarray(1.0)}
    assert_trees_close(P.projection_halfspace(inside, a, 1.0), inside, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(5))
def test_l1_ball_and_sphere_closed_forms(seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=8) * 3
    for scale in (0.5, 2.0, 100.0):
        ball = np.asarray(P.projection_l1_ball(jnp.asarray(v), scale))
        expected = v if np.abs(v).sum() <= scale else np.sign(v) * duchi_simplex(np.abs(v), scale)
        np.testing.assert_allclose(ball, expected, rtol=1e-12, atol=1e-13)
        assert np.abs(ball).sum() <= scale * (1 + 1e-12)
        sphere = np.asarray(P.projection_l1_sphere(jnp.asarray(v), scale))
        np.testing.assert_allclose(np.abs(sphere).sum(), scale, rtol=1e-12)


def brute_force_l1_sphere(v, scale):
    """The nearest point of the l1 sphere: the sphere is the union over sign patterns of scaled simplices."""
    best, best_distance = None, np.inf
    for signs in itertools.product([-1.0, 1.0], repeat=len(v)):
        signs = np.asarray(signs)
        p = signs * duchi_simplex(signs * v, scale)
        distance = np.sum((v - p) ** 2)
        if distance < best_distance - 1e-12:
            best, best_distance = p, distance
    return best, best_distance


@pytest.mark.parametrize("v", [[0.1, 0.0, 0.0], [0.0, 0.0, 0.0], [0.2, -0.1, 0.0, 0.0], [0.0, 3.0, 0.0]])
def test_l1_sphere_with_zero_entries_follows_the_definition_where_optax_leaves_the_sphere(v):
    v = np.asarray(v)
    ours = np.asarray(P.projection_l1_sphere(jnp.asarray(v)))
    _, nearest = brute_force_l1_sphere(v, 1.0)
    np.testing.assert_allclose(np.abs(ours).sum(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.sum((v - ours) ** 2), nearest, rtol=1e-12, atol=1e-15)
    theirs = np.asarray(OP.projection_l1_sphere(jnp.asarray(v)))
    if np.abs(v).sum() < 1:  # Inside the ball with zero entries: Optax's point is off the sphere.
        assert np.abs(theirs).sum() < 1 - 1e-3
    else:
        np.testing.assert_allclose(ours, theirs, atol=1e-15)


def test_l2_sphere_at_zero_returns_a_point_on_the_sphere_where_optax_gives_nan():
    zero = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    ours = P.projection_l2_sphere(zero, 2.0)
    np.testing.assert_allclose(gradtx.global_norm(ours), 2.0, rtol=1e-14)
    np.testing.assert_allclose(flat(ours), np.full(4, 1.0), rtol=1e-14)
    assert np.all(np.isnan(flat(OP.projection_l2_sphere(zero, 2.0))))
    grad = jax.grad(lambda t: jnp.sum(P.projection_l2_sphere(t)["a"]))(zero)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))


def test_box_and_hypercube_take_scalar_bounds_on_trees():
    x = {"a": jnp.asarray([3.0, -1.0, 0.5]), "b": jnp.asarray(-4.0)}
    assert_trees_close(P.projection_box(x, -1.0, 2.0), {"a": jnp.asarray([2.0, -1.0, 0.5]), "b": jnp.asarray(-1.0)})
    assert_trees_close(P.projection_hypercube(x), {"a": jnp.asarray([1.0, 0.0, 0.5]), "b": jnp.asarray(0.0)})
    with pytest.raises(ValueError):
        OP.projection_hypercube(x)  # Optax needs tree bounds here.


def test_hyperplane_vector_and_halfspace_closed_forms():
    rng = np.random.default_rng(4)
    x, a = rng.normal(size=6), rng.normal(size=6)
    for b in (-2.0, 0.0, 1.5):
        p = np.asarray(P.projection_hyperplane(jnp.asarray(x), jnp.asarray(a), b))
        np.testing.assert_allclose(a @ p, b, atol=1e-13)
        np.testing.assert_allclose(p - x, (b - a @ x) / (a @ a) * a, atol=1e-13)
        h = np.asarray(P.projection_halfspace(jnp.asarray(x), jnp.asarray(a), b))
        np.testing.assert_allclose(h, x if a @ x <= b else p, atol=1e-13)
    v = np.asarray(P.projection_vector(jnp.asarray(x), jnp.asarray(a)))
    np.testing.assert_allclose(v, (x @ a) / (a @ a) * a, rtol=1e-13)


@pytest.mark.parametrize("n", [3, 9])
def test_simplex_derivatives_match_optax_and_finite_differences(n):
    rng = np.random.default_rng(n)
    v = jnp.asarray(rng.normal(size=n))
    ours = jax.jacobian(lambda t: P.projection_simplex(t, 1.5))(v)
    theirs = jax.jacobian(lambda t: OP.projection_simplex(t, 1.5))(v)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    h = 1e-6
    project = jax.jit(jax.vmap(lambda t: P.projection_simplex(t, 1.5)))
    numeric = ((project(v + h * jnp.eye(n)) - project(v - h * jnp.eye(n))) / (2 * h)).T
    np.testing.assert_allclose(ours, numeric, atol=1e-6)
    d_scale = jax.jacobian(lambda s: P.projection_simplex(v, s))(1.5)
    d_theirs = jax.jacobian(lambda s: OP.projection_simplex(v, s))(1.5)
    np.testing.assert_allclose(d_scale, d_theirs, atol=1e-12)


def test_projections_jit_and_keep_structure():
    x = make_tree(0, ((3, 4), (4,), ()))
    for project in (P.projection_simplex, P.projection_l1_ball, P.projection_l2_sphere, P.projection_linf_ball):
        assert_trees_close(jax.jit(project)(x), project(x))
    assert gradtx.projections is P and "projection_simplex" in dir(gradtx.projections)


def test_bad_input_is_refused_with_the_argument_named():
    x = {"a": jnp.ones(3)}
    for project in (P.projection_simplex, P.projection_l1_sphere, P.projection_l1_ball, P.projection_l2_sphere):
        with pytest.raises(ValueError, match="scale"):
            project(x, -1.0)
    for project in (P.projection_l2_ball, P.projection_linf_ball, P.projection_hypercube):
        with pytest.raises(ValueError, match="scale"):
            project(x, -0.5)
    with pytest.raises(ValueError, match="lower <= upper"):
        P.projection_box(x, 1.0, 0.0)
    with pytest.raises(ValueError, match="lower"):
        P.projection_box(x, {"b": jnp.ones(3)}, 1.0)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        P.projection_hyperplane(x, {"a": jnp.ones(4)}, 1.0)
    with pytest.raises(ValueError, match="at least one element"):
        P.projection_simplex({"a": jnp.ones(0)})
