"""gradtx.tree (Optax's ``optax.tree`` namespace) against Optax, leaf by leaf, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import tree as T

OT = optax.tree


def make(seed, complex_leaf=False):
    rng = np.random.default_rng(seed)
    tree = {"w": jnp.asarray(rng.normal(size=(3, 4))), "b": [jnp.asarray(rng.normal(size=(4,))), jnp.asarray(0.7)]}
    if complex_leaf:
        tree["c"] = jnp.asarray(rng.normal(size=(2,)) + 1j * rng.normal(size=(2,)))
    return tree


def assert_same(a, b, rtol=1e-14):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert jnp.result_type(x) == jnp.result_type(y)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-15)


def test_names_are_optaxs():
    optax_names = {n for n in dir(OT) if not n.startswith("_")}
    # map_params is optax.tree_map_params, a wrapper of optimizers rather than of trees.
    assert optax_names - set(T.__all__) <= {"map_params"}
    for name in T.__all__:
        assert callable(getattr(T, name))


@pytest.mark.parametrize("complex_leaf", [False, True])
def test_arithmetic_and_reductions_match_optax(complex_leaf):
    x, y, z = make(0, complex_leaf), make(1, complex_leaf), make(2, complex_leaf)
    assert_same(T.add(x, y), OT.add(x, y))
    assert_same(T.add(x, y, z), OT.add(x, y, z))
    assert_same(T.sub(x, y), OT.sub(x, y))
    assert_same(T.mul(x, y), OT.mul(x, y))
    assert_same(T.div(x, y), OT.div(x, y))
    assert_same(T.scale(0.3, x), OT.scale(0.3, x))
    assert_same(T.add_scale(x, -1.7, y), OT.add_scale(x, -1.7, y))
    assert_same(T.conj(x), OT.conj(x))
    assert_same(T.real(x), OT.real(x))
    np.testing.assert_allclose(T.vdot(x, y), OT.vdot(x, y), rtol=1e-14)
    np.testing.assert_allclose(T.sum(x), OT.sum(x), rtol=1e-14)
    np.testing.assert_allclose(T.sum(x, associative_reduction=True), OT.sum(x), rtol=1e-14)
    for ord_ in (None, 2, 1, jnp.inf, "inf", "infinity"):
        for squared in (False, True):
            np.testing.assert_allclose(T.norm(x, ord_, squared), OT.norm(x, ord_, squared), rtol=1e-14)
    assert T.size(x) == OT.size(x)
    assert_same(T.batch_shape(x, (2, 3)), OT.batch_shape(x, (2, 3)))
    for dtype in (None, jnp.float32):
        assert_same(T.zeros_like(x, dtype), OT.zeros_like(x, dtype))
        assert_same(T.ones_like(x, dtype), OT.ones_like(x, dtype))
        assert_same(T.full_like(x, 2.5, dtype), OT.full_like(x, 2.5, dtype))
    if not complex_leaf:
        np.testing.assert_allclose(T.max(x), OT.max(x))
        np.testing.assert_allclose(T.min(x), OT.min(x))
        assert_same(T.clip(x, -0.5, 0.5), OT.clip(x, -0.5, 0.5))
        assert_same(T.clip(x, max_value=0.1), OT.clip(x, max_value=0.1))
        assert_same(T.where(jnp.asarray(False), x, y), OT.where(jnp.asarray(False), x, y))
    assert bool(T.allclose(x, x)) and not bool(T.allclose(x, y))
    assert bool(T.allclose(x, T.add(x, T.scale(1e-9, y)), rtol=1e-6)) == bool(
        OT.allclose(x, OT.add(x, OT.scale(1e-9, y)), rtol=1e-6)
    )


def test_reductions_of_trees_with_empty_leaves_and_none():
    tree = {"a": jnp.zeros((0, 3)), "b": None, "c": jnp.asarray([2.0, -5.0])}
    assert T.max(tree) == OT.max(tree) == 2.0
    assert T.min(tree) == OT.min(tree) == -5.0
    assert T.size(tree) == 2
    assert T.max({}) == -np.inf and T.min({}) == np.inf and T.sum({}) == 0
    partial = {"a": None, "c": tree["c"]}
    assert_same(T.add_scale(partial, 2.0, partial), {"a": None, "c": 3 * tree["c"]})


def test_norm_rejects_other_orders():
    with pytest.raises(ValueError, match="ord"):
        T.norm(make(0), ord=3)


def test_moments_and_bias_correction_match_optax():
    g, m = make(3), jax.tree.map(jnp.abs, make(4))
    for order in (1, 2, 3):
        assert_same(T.update_moment(g, m, 0.9, order), OT.update_moment(g, m, 0.9, order))
        assert_same(T.update_moment_per_elem_norm(g, m, 0.99, order), OT.update_moment_per_elem_norm(g, m, 0.99, order))
    gc, mc = make(3, True), jax.tree.map(lambda x: jnp.abs(x) ** 2, make(4, True))
    for order in (2, 3, 4):
        ours = T.update_moment_per_elem_norm(gc, mc, 0.9, order)
        assert_same(ours, OT.update_moment_per_elem_norm(gc, mc, 0.9, order))
    assert_same(T.update_infinity_moment(g, m, 0.999, 1e-8), OT.update_infinity_moment(g, m, 0.999, 1e-8))
    count = jnp.asarray(7, jnp.int32)
    assert_same(T.bias_correction(m, 0.9, count), OT.bias_correction(m, 0.9, count), rtol=1e-13)
    with_none = {"a": None, "b": jnp.ones(2)}
    assert T.update_moment(with_none, with_none, 0.9, 2)["a"] is None


def test_casting_matches_optax():
    tree = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(3, jnp.bfloat16), "c": jnp.ones(1, jnp.float16)}
    assert_same(T.cast(tree, jnp.float64), OT.cast(tree, jnp.float64))
    assert T.cast(tree, None) is tree
    other = {"a": jnp.ones(2, jnp.float64), "b": 1.0, "c": jnp.ones(1, jnp.float32)}
    assert_same(T.cast_like(tree, other), OT.cast_like(tree, other))
    assert T.dtype(tree, "promote") == OT.dtype(tree, "promote") == jnp.float32
    ordered = {"a": tree["a"], "c": tree["c"], "d": jnp.ones(1, jnp.float64)}
    for handler in ("promote", "highest", "lowest"):
        assert T.dtype(ordered, handler) == OT.dtype(ordered, handler)
    with pytest.raises(ValueError, match="bfloat16.*float16.*cannot be ordered"):
        T.dtype(tree, "lowest")
    assert T.dtype({"a": jnp.ones(2)}) == OT.dtype({"a": jnp.ones(2)})
    assert T.dtype({}) == OT.dtype({})
    with pytest.raises(ValueError, match=r"\['b'\] is bfloat16"):
        T.dtype(tree)
    with pytest.raises(ValueError, match="cannot be ordered"):
        T.dtype({"i": jnp.ones(2, jnp.int32), "u": jnp.ones(2, jnp.uint32)}, "highest")
    with pytest.raises(ValueError, match="mixed_dtype_handler"):
        T.dtype(tree, "widest")


def coin(key, shape, dtype):
    return jax.random.bernoulli(key, 0.5, shape).astype(dtype)


@pytest.mark.parametrize("sampler", [jax.random.normal, jax.random.uniform, coin])
def test_random_trees_equal_optaxs(sampler):
    key = jax.random.PRNGKey(3)
    tree = make(0)
    assert_same(T.split_key_like(key, tree), OT.split_key_like(key, tree))
    assert_same(T.random_like(key, tree, sampler), OT.random_like(key, tree, sampler))
    assert_same(T.random_like(key, tree, sampler, jnp.float32), OT.random_like(key, tree, sampler, jnp.float32))
    typed = {"k": jax.random.key(0), "x": jnp.ones(2)}
    assert_same(T.unwrap_random_key_data(typed), OT.unwrap_random_key_data(typed))


def test_reused_helpers_are_one_implementation():
    from gradtx import tree_utils

    assert T.zeros_like is tree_utils.tree_zeros_like and T.vdot is tree_utils.tree_vdot
    assert T.full_like is tree_utils.tree_full_like and T.cast is tree_utils.tree_cast
    assert T.bias_correction is gradtx.bias_correction


# --------------------------------------------------------------------------------------------
# get, set, get_all_with_path on optimizer states.
# --------------------------------------------------------------------------------------------

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


def states():
    lr = lambda count: 1.0 / (count + 1)
    return [
        optax.adam(1.0).init(PARAMS),
        optax.chain(optax.add_decayed_weights(0.1), optax.scale_by_adam(), optax.scale_by_adam()).init(PARAMS),
        optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9).init(PARAMS),
        {"opt": optax.adam(1.0).init(PARAMS), "extra": [{"count": jnp.asarray(3)}, None]},
    ]


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("key", ["count", "mu", "learning_rate", "ScaleByAdamState", "trace", "missing"])
def test_get_all_with_path_finds_what_optax_finds(index, key):
    state = states()[index]
    ours = T.get_all_with_path(state, key)
    theirs = OT.get_all_with_path(state, key)
    render = lambda found: sorted((jax.tree_util.keystr(path), str(value)) for path, value in found)
    assert render(ours) == render(theirs)
    if len(theirs) <= 1:
        assert str(T.get(state, key, "absent")) == str(OT.get(state, key, "absent"))
    else:
        with pytest.raises(KeyError, match="filtering"):
            T.get(state, key)


def test_filtering_sees_named_tuple_keys():
    state = states()[1]
    second = lambda path, value: isinstance(path[-1], T.NamedTupleKey) and path[0] == jax.tree_util.SequenceKey(2)
    ours = T.get(state, "count", filtering=second)
    assert ours is state[2].count
    assert T.get(states()[2], "learning_rate", filtering=lambda p, v: isinstance(v, jax.Array)) == 1.0
    path, _ = T.get_all_with_path(state, "mu")[0]
    assert jax.tree_util.keystr(path) == "[1]ScaleByAdamState.mu"


@pytest.mark.parametrize("index", range(4))
def test_set_matches_optax(index):
    state = states()[index]
    for kwargs in ({"count": jnp.asarray(5)}, {"mu": {"w": jnp.full((2, 3), 2.0), "b": jnp.ones(3)}}):
        if not OT.get_all_with_path(state, next(iter(kwargs))):
            with pytest.raises(KeyError):
                T.set(state, **kwargs)
            continue
        ours, theirs = T.set(state, **kwargs), OT.set(state, **kwargs)
        assert jax.tree.structure(ours) == jax.tree.structure(theirs)
        key, value = next(iter(kwargs.items()))
        # Every value that get_all_with_path finds is replaced, as Optax documents.
        for _, found in T.get_all_with_path(ours, key):
            assert_same(found, value)
        if index == 2 and key == "count":
            # Optax misses a match below a container without the key inside a matching state (here
            # the schedule's count in hyperparams_states) although its get_all_with_path finds it.
            assert len(OT.get_all_with_path(theirs, key)) == 2
            assert [int(v) for _, v in OT.get_all_with_path(theirs, key)] == [5, 0]
        else:
            assert_same(ours, theirs)


def test_set_with_filtering_and_by_type_name():
    state = states()[1]
    only_last = lambda path, value: path[0] == jax.tree_util.SequenceKey(2)
    new = T.set(state, only_last, count=jnp.asarray(9, jnp.int32))
    assert int(new[1].count) == 0 and int(new[2].count) == 9
    assert_same(new, OT.set(state, only_last, count=jnp.asarray(9, jnp.int32)))
    fresh = optax.ScaleByAdamState(jnp.asarray(1, jnp.int32), PARAMS, PARAMS)
    replaced = T.set(optax.adam(1.0).init(PARAMS), ScaleByAdamState=fresh)
    assert replaced[0] is fresh
    with pytest.raises(KeyError, match="'nu_max'"):
        T.set(state, nu_max=1.0)
    with pytest.raises(KeyError, match="filtering"):
        T.set(state, lambda p, v: False, count=1)


def test_gradtx_states_are_found_too():
    state = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3)).init(PARAMS)
    found = T.get_all_with_path(state, "AdamState") + T.get_all_with_path(state, "step_count")
    assert found, "a gradtx state has named tuples that get_all_with_path walks"
