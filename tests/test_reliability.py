"""Non-finite gradients: ``apply_if_finite`` skips them exactly, ``zero_nans`` zeroes them.

The central test injects NaN, +inf and -inf gradients mid-training into every named optimizer
wrapped in ``apply_if_finite`` and checks that the parameters and the state afterwards are bit for
bit those of a run that never saw the bad steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_problem import grad, initial_params

import gradtx
from gradtx.numerics import ApplyIfFiniteState, ZeroNansState, apply_if_finite, tree_all_finite, zero_nans

NAMED_OPTIMIZERS = {
    "sgd": lambda: gradtx.sgd(0.3),
    "momentum": lambda: gradtx.sgd(0.1, momentum=0.9),
    "nesterov": lambda: gradtx.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: gradtx.adagrad(0.3),
    "rmsprop": lambda: gradtx.rmsprop(0.01, centered=True, momentum=0.5, bias_correction=True),
    "adadelta": lambda: gradtx.adadelta(weight_decay=0.01),
    "adam": lambda: gradtx.adam(0.01),
    "adamw": lambda: gradtx.adamw(0.01, weight_decay=0.1),
    "adamax": lambda: gradtx.adamax(0.02),
    "nadam": lambda: gradtx.nadam(0.01),
    "amsgrad": lambda: gradtx.amsgrad(0.01),
    "rprop": lambda: gradtx.rprop(0.01),
    "sign_sgd": lambda: gradtx.sign_sgd(0.001),
}

STEPS = 24
# Step index -> what is written into one entry of the gradient: a lone NaN, a run of two
# consecutive bad steps (+inf then NaN), and a -inf in the bias.
BAD_STEPS = {5: ("w", np.nan), 11: ("w", np.inf), 12: ("b", np.nan), 17: ("b", -np.inf)}
POISON_CODES = {"w": 1, "b": 2}


def _make_step(optimizer):
    """A jitted step whose gradient gets ``value`` written at one entry of leaf ``code``."""

    @jax.jit
    def step(params, state, code, value):
        grads = grad(params)
        grads = {
            "w": jnp.where(code == 1, grads["w"].at[2, 1].set(value), grads["w"]),
            "b": jnp.where(code == 2, grads["b"].at[0].set(value), grads["b"]),
        }
        updates, state = optimizer.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, updates

    return step


_WRAPPED_STEPS = {}


def _wrapped(name):
    """``apply_if_finite(optimizer, 3)`` and its jitted step, compiled once per optimizer."""
    if name not in _WRAPPED_STEPS:
        optimizer = apply_if_finite(NAMED_OPTIMIZERS[name](), max_consecutive_errors=3)
        _WRAPPED_STEPS[name] = optimizer, _make_step(optimizer)
    return _WRAPPED_STEPS[name]


def _run(step, state, bad_steps):
    params = initial_params()
    for index in range(STEPS):
        code, value = 0, 0.0
        if index in bad_steps:
            leaf, value = bad_steps[index]
            code = POISON_CODES[leaf]
        new_params, state, updates = step(params, state, code, value)
        if index in bad_steps:
            # A skipped step returns zero updates and leaves the parameters exactly where they were.
            assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
            assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)))
        params = new_params
    return params, state


def _assert_trees_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(NAMED_OPTIMIZERS))
def test_skipped_nan_and_inf_steps_leave_no_trace(name):
    optimizer, step = _wrapped(name)
    init = optimizer.init(initial_params())
    with_bad, state_bad = _run(step, init, BAD_STEPS)

    # The reference run sees only the good gradients: the same number of good steps, no poison.
    clean_step_count = STEPS - len(BAD_STEPS)
    params, state = initial_params(), init
    for _ in range(clean_step_count):
        params, state, _ = step(params, state, 0, 0.0)

    _assert_trees_identical(with_bad, params)
    _assert_trees_identical(state_bad.inner_state, state.inner_state)
    assert int(state_bad.total_notfinite) == len(BAD_STEPS)
    assert int(state_bad.notfinite_count) == 0
    assert bool(state_bad.last_finite)
    assert int(state.total_notfinite) == 0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((with_bad, state_bad)))


@pytest.mark.parametrize("name", ["adam"])
def test_wrapped_run_equals_the_unwrapped_optimizer(name):
    # apply_if_finite on finite gradients is the inner optimizer itself (float64, 1e-12).
    (wrapped, step_wrapped), bare = _wrapped(name), NAMED_OPTIMIZERS[name]()
    step_bare = _make_step(bare)
    p_wrapped, s_wrapped = initial_params(), wrapped.init(initial_params())
    p_bare, s_bare = initial_params(), bare.init(initial_params())
    for _ in range(10):
        p_wrapped, s_wrapped, _ = step_wrapped(p_wrapped, s_wrapped, 0, 0.0)
        p_bare, s_bare, _ = step_bare(p_bare, s_bare, 0, 0.0)
    for a, b in zip(jax.tree.leaves((p_wrapped, s_wrapped.inner_state)), jax.tree.leaves((p_bare, s_bare))):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-12, atol=1e-15)


def test_unprotected_adam_is_corrupted_for_good():
    # Why the wrapper exists: one NaN gradient stays in Adam's moments forever.
    step = _make_step(gradtx.adam(0.01))
    params, state = initial_params(), gradtx.adam(0.01).init(initial_params())
    params, state, _ = step(params, state, 1, np.nan)
    for _ in range(3):
        params, state, _ = step(params, state, 0, 0.0)
    assert not bool(jnp.all(jnp.isfinite(params["w"])))


def test_gives_up_after_max_consecutive_errors_like_optax():
    # N = 2: two NaN steps are skipped, the third consecutive one is passed through to the inner
    # transform. Optax's apply_if_finite does the same; the counters must agree step by step.
    params = {"w": jnp.ones(3)}
    ours, theirs = apply_if_finite(gradtx.sgd(0.1), 2), optax.apply_if_finite(optax.sgd(0.1), 2)
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    update_ours, update_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    finite, nan = {"w": jnp.ones(3)}, {"w": jnp.array([1.0, np.nan, 1.0])}
    for index, grads in enumerate([finite, nan, nan, nan, nan, finite, nan]):
        u_ours, state_ours = update_ours(grads, state_ours, params)
        u_theirs, state_theirs = update_theirs(grads, state_theirs, params)
        np.testing.assert_array_equal(u_ours["w"], u_theirs["w"])
        assert int(state_ours.notfinite_count) == int(state_theirs.notfinite_count), index
        assert int(state_ours.total_notfinite) == int(state_theirs.total_notfinite), index
        assert bool(state_ours.last_finite) == bool(state_theirs.last_finite), index
        # Steps 3 and 4 are the third and fourth NaN in a row: given up, the NaN goes through.
        assert bool(jnp.isnan(u_ours["w"][1])) == (index in (3, 4)), index
    assert int(state_ours.notfinite_count) == 1 and int(state_ours.total_notfinite) == 5


def test_never_gives_up_with_int32_max_and_counters_saturate():
    optimizer = apply_if_finite(gradtx.adam(0.1), max_consecutive_errors=np.iinfo(np.int32).max)
    params = {"w": jnp.ones(2, jnp.float32)}
    near_max = jnp.asarray(np.iinfo(np.int32).max - 1, jnp.int32)
    state = optimizer.init(params)._replace(notfinite_count=near_max, total_notfinite=near_max)
    update = jax.jit(optimizer.update)
    for _ in range(3):
        updates, state = update({"w": jnp.array([np.inf, 1.0], jnp.float32)}, state)
        assert bool(jnp.all(updates["w"] == 0))
    assert int(state.notfinite_count) == np.iinfo(np.int32).max
    assert int(state.total_notfinite) == np.iinfo(np.int32).max
    assert int(state.inner_state[0].step_count) == 0


def test_vmap_skips_only_the_members_with_bad_gradients():
    optimizer = apply_if_finite(gradtx.adam(0.1), 1)
    params = {"w": jnp.ones((2, 3))}
    grads = {"w": jnp.array([[1.0, 2.0, 3.0], [1.0, np.nan, 3.0]])}
    state = jax.vmap(optimizer.init)(params)
    updates, state = jax.jit(jax.vmap(optimizer.update))(grads, state)
    assert bool(jnp.all(updates["w"][0] != 0)) and bool(jnp.all(updates["w"][1] == 0))
    np.testing.assert_array_equal(np.asarray(state.total_notfinite), [0, 1])
    np.testing.assert_array_equal(np.asarray(state.inner_state[0].step_count), [1, 0])


def test_skipped_updates_have_the_inner_output_dtype_and_structure():
    # Gradients of a tree with None, an empty container and bfloat16 leaves.
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": None, "c": [], "d": (jnp.zeros((), jnp.float32),)}
    optimizer = apply_if_finite(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3)), 0)
    state = optimizer.init(params)
    bad = {"a": jnp.array([1.0, np.inf], jnp.bfloat16), "b": None, "c": [], "d": (jnp.ones((), jnp.float32),)}
    updates, state = jax.jit(optimizer.update)(bad, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert updates["a"].dtype == jnp.bfloat16 and updates["d"][0].dtype == jnp.float32
    assert isinstance(state, ApplyIfFiniteState) and int(state.total_notfinite) == 1


def test_wraps_optax_and_forwards_extra_args():
    seen = {}

    def update_fn(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state

    inner = gradtx.GradientTransformation(lambda params: gradtx.EmptyState(), update_fn)
    optimizer = apply_if_finite(inner, 1)
    optimizer.update({"w": jnp.ones(2)}, optimizer.init({"w": jnp.ones(2)}), value_fn=len)
    assert seen == {"value_fn": len}

    optimizer = apply_if_finite(optax.adam(0.1), 1)
    updates, state = jax.jit(optimizer.update)({"w": jnp.array([np.nan])}, optimizer.init({"w": jnp.ones(1)}))
    assert float(updates["w"][0]) == 0 and int(state.total_notfinite) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_max_consecutive_errors_is_checked(bad):
    with pytest.raises((ValueError, TypeError), match="max_consecutive_errors"):
        apply_if_finite(gradtx.sgd(0.1), bad)


def test_tree_all_finite():
    assert bool(tree_all_finite({}))
    assert bool(tree_all_finite({"a": jnp.zeros((0,)), "b": None, "c": jnp.asarray(3, jnp.int32)}))
    assert not bool(tree_all_finite([jnp.ones(2), (jnp.array([1.0, -np.inf]),)]))
    assert not bool(jax.jit(tree_all_finite)({"x": jnp.array(np.nan, jnp.bfloat16)}))


def test_zero_nans_zeroes_nans_reports_them_and_keeps_infs():
    params = {"a": jnp.ones(3), "b": [jnp.ones(2, jnp.float16)], "c": None}
    optimizer = zero_nans()
    state = optimizer.init(params)
    assert isinstance(state, ZeroNansState)
    assert jax.tree.structure(state.found_nan) == jax.tree.structure(params)
    grads = {"a": jnp.array([1.0, np.nan, np.inf]), "b": [jnp.array([2.0, -1.0], jnp.float16)], "c": None}
    updates, state = jax.jit(optimizer.update)(grads, state)
    np.testing.assert_array_equal(np.asarray(updates["a"]), [1.0, 0.0, np.inf])
    assert updates["b"][0].dtype == jnp.float16
    assert bool(state.found_nan["a"]) and not bool(state.found_nan["b"][0])
    # Same outputs and report as Optax.
    theirs_updates, theirs_state = optax.zero_nans().update(grads, optax.zero_nans().init(params))
    for a, b in zip(jax.tree.leaves((updates, state)), jax.tree.leaves((theirs_updates, theirs_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_zero_nans_then_sgd_keeps_training():
    optimizer = gradtx.chain(zero_nans(), gradtx.sgd(0.5))
    step = _make_step(optimizer)
    params, state = initial_params(), optimizer.init(initial_params())
    params, state, updates = step(params, state, 1, np.nan)
    assert float(updates["w"][2, 1]) == 0 and bool(state[0].found_nan["w"])
    params, state, _ = step(params, state, 0, 0.0)
    assert not bool(state[0].found_nan["w"])
    assert bool(tree_all_finite(params))
