"""The protocol is Optax's: gradtx inside Optax and Flax, Optax inside gradtx."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import softmax_problem as sp
from softmax_problem import max_relative_error, run_gradtx

import gradtx


def test_gradtx_transform_inside_optax_chain():
    mixed = optax.chain(optax.clip_by_global_norm(1.0), gradtx.scale_by_adam(), optax.scale(-0.01))
    pure = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.01))
    assert max_relative_error(run_gradtx(mixed, 50), run_gradtx(pure, 50)) < 1e-12


def test_optax_transform_inside_gradtx_chain():
    mixed = gradtx.chain(optax.clip_by_global_norm(1.0), gradtx.adam(0.01))
    pure = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(0.01))
    assert max_relative_error(run_gradtx(mixed, 50), run_gradtx(pure, 50)) < 1e-12


def test_optax_apply_updates_and_multi_steps_accept_gradtx():
    params = {"w": jnp.ones(3)}
    accumulate = optax.MultiSteps(gradtx.sgd(0.1), every_k_schedule=2)
    state = accumulate.init(params)
    for _ in range(2):
        updates, state = accumulate.update({"w": jnp.ones(3)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], 0.9, rtol=1e-12)


def test_gradtx_optimizer_as_flax_train_state_tx():
    from flax.training import train_state

    def apply_fn(variables, x):
        return x @ variables["params"]["w"]

    params = {"w": jnp.ones((3, 1))}
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=gradtx.adam(0.1))
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))

    @jax.jit
    def step(state):
        loss = lambda p: jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    reference = gradtx.adam(0.1)
    ref_params, ref_state = params, reference.init(params)
    for _ in range(5):
        state = step(state)
        grads = jax.grad(lambda p: jnp.mean((x @ p["w"] - y) ** 2))(ref_params)
        updates, ref_state = reference.update(grads, ref_state, ref_params)
        ref_params = gradtx.apply_updates(ref_params, updates)
    np.testing.assert_allclose(state.params["w"], ref_params["w"], rtol=1e-12)
    assert int(state.step) == 5


# ------------------------------------------------------------------------------------------------
# Issue 13: behaviours measured as incompatible, now as in Optax (checked side by side).


def test_trace_with_decay_one_is_a_plain_sum_like_optax():
    ours = gradtx.chain(gradtx.trace(decay=1.0), gradtx.scale(-1e-3))
    theirs = optax.chain(optax.trace(decay=1.0), optax.scale(-1e-3))
    assert max_relative_error(run_gradtx(ours, 100), run_gradtx(theirs, 100)) < 1e-12
    state = gradtx.trace(1.0).init({"w": jnp.zeros(2)})
    for g in (1.0, 2.0, -0.5):
        _, state = gradtx.trace(1.0).update({"w": jnp.full(2, g)}, state)
    np.testing.assert_array_equal(state.trace["w"], [2.5, 2.5])


def test_apply_if_finite_state_has_optax_field_names_and_values():
    assert gradtx.ApplyIfFiniteState._fields == optax.ApplyIfFiniteState._fields
    params = {"w": jnp.ones(3)}
    ours, theirs = gradtx.apply_if_finite(gradtx.adam(0.1), 2), optax.apply_if_finite(optax.adam(0.1), 2)
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    for step, value in enumerate([1.0, np.nan, np.inf, 0.5, np.nan, np.nan, np.nan, 2.0]):
        grads = {"w": jnp.full(3, value)}
        updates_ours, state_ours = ours.update(grads, state_ours, params)
        updates_theirs, state_theirs = theirs.update(grads, state_theirs, params)
        for field in ("notfinite_count", "last_finite", "total_notfinite"):
            assert int(getattr(state_ours, field)) == int(getattr(state_theirs, field)), (step, field)
        np.testing.assert_array_equal(updates_ours["w"], updates_theirs["w"])
    # gradtx's earlier names stay readable.
    assert int(state_ours.consecutive_errors) == int(state_ours.notfinite_count)
    assert int(state_ours.total_errors) == int(state_ours.total_notfinite)


@jax.tree_util.register_pytree_node_class
class CallableMask:
    """An Equinox-style module: a pytree of booleans that is also callable (its forward pass)."""

    def __init__(self, w, b):
        self.w, self.b = w, b

    def __call__(self, x):
        raise AssertionError("a callable pytree mask must not be called")

    def tree_flatten(self):
        return (self.w, self.b), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


@jax.tree_util.register_pytree_node_class
class Model(CallableMask):
    """Parameters with the same structure as the mask."""


def test_masked_treats_a_callable_pytree_as_the_mask_like_optax():
    params = Model(jnp.asarray([1.0, -2.0]), jnp.asarray(0.5))
    grads = Model(jnp.asarray([0.3, 0.1]), jnp.asarray(-0.2))
    mask = Model(True, False)
    ours, theirs = gradtx.masked(gradtx.sgd(0.1, momentum=0.9), mask), optax.masked(optax.sgd(0.1, 0.9), mask)
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    for _ in range(3):
        updates_ours, state_ours = ours.update(grads, state_ours, params)
        updates_theirs, state_theirs = theirs.update(grads, state_theirs, params)
        for a, b in zip(jax.tree.leaves(updates_ours), jax.tree.leaves(updates_theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-15)
    np.testing.assert_array_equal(updates_ours.b, grads.b)  # masked out: passed through
    # A plain function is still called with the parameters.
    by_function = gradtx.masked(gradtx.sgd(0.1), lambda p: Model(True, False))
    updates, _ = by_function.update(grads, by_function.init(params), params)
    np.testing.assert_allclose(updates.w, -0.1 * grads.w, rtol=1e-15)


def test_add_decayed_weights_with_none_updates_like_optax():
    params = (jnp.ones(2), {"a": jnp.ones(2), "b": jnp.full(2, 3.0)})
    ours, theirs = gradtx.add_decayed_weights(0.1), optax.add_decayed_weights(0.1)
    state = ours.init(params)
    updates, new_state = ours.update(None, state, params)
    updates_theirs, _ = theirs.update(None, theirs.init(params), params)
    assert updates is None and updates_theirs is None and new_state is state
    # None leaves (no gradient for that parameter) stay None, the others are decayed.
    partial = (None, {"a": jnp.ones(2), "b": None})
    updates, _ = ours.update(partial, state, params)
    updates_theirs, _ = theirs.update(partial, theirs.init(params), params)
    assert updates[0] is None and updates[1]["b"] is None and updates_theirs[1]["b"] is None
    np.testing.assert_allclose(updates[1]["a"], updates_theirs[1]["a"], rtol=1e-15)


@pytest.mark.parametrize("with_params", [True, False])
def test_stateless_with_tree_map_passes_update_and_param_like_optax(with_params):
    seen = []

    def f(g, p):
        seen.append(p is None)
        return g * 2.0 if p is None else g + 0.1 * p

    params = {"w": jnp.asarray([1.0, 2.0]), "b": jnp.asarray(3.0)}
    grads = {"w": jnp.asarray([0.5, -0.5]), "b": jnp.asarray(1.0)}
    given = params if with_params else None
    ours, theirs = gradtx.stateless_with_tree_map(f), optax.stateless_with_tree_map(f)
    updates_ours, _ = ours.update(grads, ours.init(params), given)
    updates_theirs, _ = theirs.update(grads, theirs.init(params), given)
    for a, b in zip(jax.tree.leaves(updates_ours), jax.tree.leaves(updates_theirs)):
        np.testing.assert_array_equal(a, b)
    assert all(seen) == (not with_params)


def test_gradient_transformation_extra_args_where_optax_returns_it():
    params = {"w": jnp.ones(2)}
    builders = {
        "chain": (lambda m: m.chain(m.scale(0.5)), True),
        "adam": (lambda m: m.adam(0.1), True),
        "sgd": (lambda m: m.sgd(0.1, momentum=0.9), True),
        "masked": (lambda m: m.masked(m.scale(0.5), {"w": True}), True),
        "partition": (lambda m: m.partition({"a": m.scale(0.5)}, {"w": "a"}), True),
        "named_chain": (lambda m: m.named_chain(("s", m.scale(0.5))), True),
        "apply_if_finite": (lambda m: m.apply_if_finite(m.scale(0.5), 1), True),
        "inject_hyperparams": (lambda m: m.inject_hyperparams(m.sgd)(0.1), True),
        "scale_by_adam": (lambda m: m.scale_by_adam(), False),
        "clip": (lambda m: m.clip(1.0), False),
    }
    for name, (build, extra) in builders.items():
        ours, theirs = build(gradtx), build(optax)
        assert isinstance(theirs, optax.GradientTransformationExtraArgs) == extra, name
        assert isinstance(ours, gradtx.GradientTransformationExtraArgs) == extra, name
        assert isinstance(ours, gradtx.GradientTransformation)
    # with_extra_args_support returns an ExtraArgs transform unchanged and wraps any other one.
    tx = gradtx.adam(0.1)
    assert gradtx.with_extra_args_support(tx) is tx
    wrapped = gradtx.with_extra_args_support(gradtx.scale(0.5))
    assert isinstance(wrapped, gradtx.GradientTransformationExtraArgs)
    updates, _ = wrapped.update(params, wrapped.init(params), params, unused_argument=1.0)
    np.testing.assert_array_equal(updates["w"], [0.5, 0.5])
    # The limit, precisely: gradtx does not import Optax, so its class cannot subclass Optax's (a
    # plain NamedTuple subclass, checked nominally), and optax.with_extra_args_support wraps a
    # gradtx transform in a new object.
    assert not isinstance(gradtx.adam(0.1), optax.GradientTransformationExtraArgs)
    assert optax.with_extra_args_support(tx) is not tx


def test_gradtx_chain_forwards_extra_args_to_optax_extra_args_transforms():
    seen = {}

    def update(updates, state, params=None, **extra_args):
        seen.update(extra_args)
        return updates, state

    optax_tx = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    chained = gradtx.chain(gradtx.scale(1.0), optax_tx)
    params = {"w": jnp.ones(2)}
    chained.update(params, chained.init(params), params, value_fn=len)
    assert seen == {"value_fn": len}


# ------------------------------------------------------------------------------------------------
# Optax's state field names on gradtx's states: code that reads them ports unchanged.

STATE_PAIRS = {
    # name: (gradtx builder, optax builder, Optax field names read on both, state index in chain or None)
    "scale_by_adam": (lambda: gradtx.scale_by_adam(), lambda: optax.scale_by_adam(), ("count", "mu", "nu")),
    "scale_by_adamax": (lambda: gradtx.scale_by_adamax(), lambda: optax.scale_by_adamax(), ("count", "mu", "nu")),
    "scale_by_amsgrad": (
        lambda: gradtx.scale_by_amsgrad(), lambda: optax.scale_by_amsgrad(), ("count", "mu", "nu", "nu_max"),
    ),
    "trace": (lambda: gradtx.trace(0.9), lambda: optax.trace(0.9), ("trace",)),
    "ema": (lambda: gradtx.ema(0.9), lambda: optax.ema(0.9), ("count", "ema")),
    "scale_by_rms": (lambda: gradtx.scale_by_rms(), lambda: optax.scale_by_rms(), ("nu",)),
    "scale_by_rms_with_count": (
        lambda: gradtx.scale_by_rms(bias_correction=True),
        lambda: optax.scale_by_rms(bias_correction=True),
        ("count", "nu"),
    ),
    "scale_by_stddev": (
        lambda: gradtx.scale_by_rms(centered=True), lambda: optax.scale_by_stddev(), ("mu", "nu"),
    ),
    "scale_by_rss": (lambda: gradtx.scale_by_adagrad(), lambda: optax.scale_by_rss(), ("sum_of_squares",)),
    "scale_by_adadelta": (lambda: gradtx.scale_by_adadelta(), lambda: optax.scale_by_adadelta(), ("e_g", "e_x")),
    "scale_by_rprop": (lambda: gradtx.scale_by_rprop(0.01), lambda: optax.scale_by_rprop(0.01), ("step_sizes",)),
    "scale_by_schedule": (
        lambda: gradtx.scale_by_schedule(lambda t: 0.1), lambda: optax.scale_by_schedule(lambda t: 0.1), ("count",),
    ),
    "inject_hyperparams": (
        lambda: gradtx.inject_hyperparams(gradtx.sgd)(0.1),
        lambda: optax.inject_hyperparams(optax.sgd)(0.1),
        ("count", "hyperparams"),
    ),
    "masked": (
        lambda: gradtx.masked(gradtx.scale_by_adam(), {"w": True, "b": False}),
        lambda: optax.masked(optax.scale_by_adam(), {"w": True, "b": False}),
        ("inner_state",),
    ),
    "zero_nans": (lambda: gradtx.zero_nans(), lambda: optax.zero_nans(), ("found_nan",)),
    "multi_steps": (
        lambda: gradtx.accumulate_gradients(gradtx.sgd(0.1), 3),
        lambda: optax.MultiSteps(optax.sgd(0.1), every_k_schedule=3).gradient_transformation(),
        ("mini_step", "acc_grads"),
    ),
}


def field_leaves(state, field):
    value = getattr(state, field)
    if field == "inner_state":  # the inner states' numbers, whatever their container types
        return jax.tree.leaves(value)
    if field == "hyperparams":
        return [value["learning_rate"]]
    return jax.tree.leaves(value)


# Optax keeps these in float32 whatever the parameters' dtype (MultiSteps' accumulator; and
# inject_hyperparams' values, which gradtx also stores as float32): compared to float32 rounding.
FLOAT32_FIELDS = {"acc_grads", "hyperparams"}


@pytest.mark.parametrize("name", sorted(STATE_PAIRS))
def test_optax_state_field_names_read_the_same_numbers(name):
    make_ours, make_theirs, fields = STATE_PAIRS[name]
    ours, theirs = make_ours(), make_theirs()
    params = {"w": jnp.asarray([1.0, -2.0, 3.0]), "b": jnp.asarray(0.5)}
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    for step in range(4):
        grads = jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)), params)
        _, state_ours = ours.update(grads, state_ours, params)
        _, state_theirs = theirs.update(grads, state_theirs, params)
        for field in fields:
            a, b = field_leaves(state_ours, field), field_leaves(state_theirs, field)
            assert len(a) == len(b), (name, field)
            for x, y in zip(a, b):
                rtol, atol = (1e-6, 1e-7) if field in FLOAT32_FIELDS else (1e-12, 0)
                np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol,
                                           atol=atol, err_msg=f"{name}.{field} at step {step}")


def test_rprop_previous_updates_have_optax_signs():
    """``prev_updates`` reads gradtx's stored gradient: Optax stores ``Delta sign(g)``, the same signs."""
    params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
    ours, theirs = gradtx.scale_by_rprop(0.01), optax.scale_by_rprop(0.01)
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    for step in range(5):
        grads = {"w": jnp.sin(params["w"] * (step + 1.0))}
        _, state_ours = ours.update(grads, state_ours)
        _, state_theirs = theirs.update(grads, state_theirs)
        np.testing.assert_array_equal(np.sign(state_ours.prev_updates["w"]), np.sign(state_theirs.prev_updates["w"]))


def test_rprop_departs_from_optax_by_one_step_of_lag():
    """gradtx.rprop follows the paper and torch; optax.rprop applies each move one step late."""
    ours = run_gradtx(gradtx.rprop(1e-2), 100)
    theirs = run_gradtx(optax.rprop(1e-2), 101)
    # Optax's first update is zero; from then on each Optax update is the previous gradtx one
    # while both see the same gradients, so the first two gradtx iterates are Optax's shifted by one.
    np.testing.assert_allclose(theirs[0]["w"], sp.initial_params()["w"], rtol=0)
    np.testing.assert_allclose(theirs[1]["w"], ours[0]["w"], rtol=1e-12)
    assert max_relative_error(ours, theirs[:100]) > 1e-3  # the trajectories differ
