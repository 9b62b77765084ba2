"""The fused path gives the default path's numbers, torch.optim's in float64, and updates in place."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from softmax_problem import grad, initial_params, max_relative_error, run_torch

import gradtx
from gradtx.fused import (
    FlatTree,
    donated_step,
    flatten_tree,
    fuse,
    fused_adam,
    fused_rmsprop,
    fused_sgd,
    fused_train_step,
)

STEPS = 50
FLOAT32_TOLERANCE = 1e-6
FLOAT64_TOLERANCE = 1e-8
CHUNK = 64  # small, so that the trees below take the chunked loop and its tail


def normal(rng, shape, dtype=np.float32):
    # NumPy draws and casts: jax.random would compile a sampler for every distinct leaf shape.
    return jnp.asarray(rng.normal(size=shape).astype(dtype))


def nested_tree(seed=0):
    """A matrix, a vector, a None, a scalar, and a bfloat16 leaf (which gets a second buffer)."""
    rng = np.random.default_rng(seed)
    return {
        "layers": [{"w": normal(rng, (17, 13)), "b": normal(rng, (13,))}, None, {"scale": normal(rng, ())}],
        "embedding": normal(rng, (3, 40), jnp.bfloat16),
    }


def many_leaves_tree(seed=1, leaves=12):
    rng = np.random.default_rng(seed)
    return {f"p{i}": normal(rng, (1 + 7 * i,)) for i in range(leaves)}


def one_leaf_tree(seed=2):
    return normal(np.random.default_rng(seed), (1000,))


TREES = {"nested": nested_tree, "many_leaves": many_leaves_tree, "one_leaf": one_leaf_tree}


def gradients(params, step):
    return jax.tree.map(lambda p: (jnp.sin(p.astype(jnp.float32) * (step + 1.0)) + 0.1).astype(p.dtype), params)


OPTIMIZERS = {
    "adam": lambda: gradtx.adam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2, weight_decay=0.1),
    "sgd": lambda: gradtx.sgd(0.05),
    "sgd_momentum": lambda: gradtx.sgd(0.05, momentum=0.9),
    "rmsprop": lambda: gradtx.rmsprop(1e-2, eps_in_sqrt=False),  # on one leaf only
    "rmsprop_centered_momentum": lambda: gradtx.rmsprop(1e-2, centered=True, momentum=0.5),
    "adam_schedule": lambda: gradtx.adam(gradtx.cosine_decay_schedule(1e-2, STEPS)),
    # The moments depend on the parameters (weight decay added first): the one-pass-per-output route.
    "adadelta_weight_decay": lambda: gradtx.adadelta(weight_decay=0.1),
}


ONE_LEAF_CASES = ("adam", "sgd_momentum", "rmsprop")
MANY_LEAVES_CASES = ("adam",)


def relative_error(a, b):
    a = [np.asarray(x, np.float64) for x in jax.tree.leaves(a)]
    b = [np.asarray(x, np.float64) for x in jax.tree.leaves(b)]
    diff = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b)))
    return diff / max(np.sqrt(sum(np.sum(y**2) for y in b)), 1e-30)


@functools.cache
def run_default(name, tree, steps=STEPS):
    transform = OPTIMIZERS[name]()

    @jax.jit
    def step(params, state, t):
        updates, state = transform.update(gradients(params, t), state, params)
        return gradtx.apply_updates(params, updates), state

    params = TREES[tree]()
    state = transform.init(params)
    for t in range(steps):
        params, state = step(params, state, t)
    return params, state


def run_fused(optimizer, params, steps):
    flat = flatten_tree(params)
    state = optimizer.init(flat)
    step = donated_step(optimizer)
    flat_gradients = jax.jit(gradients)  # elementwise, so it applies to the buffers directly
    for t in range(steps):
        flat, state = step(flat, flat_gradients(flat, t), state)
    return flat.unflatten(), state


CASES = (
    [(name, "nested") for name in sorted(OPTIMIZERS) if name != "rmsprop"]
    + [(name, "one_leaf") for name in ONE_LEAF_CASES]
    + [(name, "many_leaves") for name in MANY_LEAVES_CASES]
)


@pytest.mark.parametrize("name, tree", CASES)
def test_fused_equals_default_path_in_float32(name, tree):
    params = TREES[tree]()
    expected, expected_state = run_default(name, tree)
    found, state = run_fused(fuse(OPTIMIZERS[name](), chunk_size=CHUNK), params, STEPS)
    assert jax.tree.structure(found) == jax.tree.structure(params)
    assert jax.tree.map(lambda x: x.dtype, found) == jax.tree.map(lambda x: x.dtype, params)
    assert relative_error(found, expected) <= FLOAT32_TOLERANCE
    if tree == "one_leaf":  # one buffer holding the one leaf: the states line up leaf for leaf
        assert jax.tree.structure(state.groups[0]) == jax.tree.structure(expected_state)
        assert relative_error(state.groups[0], expected_state) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("chunk_size", [0, 7])
def test_chunk_size_does_not_change_the_numbers(chunk_size):
    expected, _ = run_default("adam", "one_leaf")
    found, _ = run_fused(fused_adam(1e-2, chunk_size=chunk_size), one_leaf_tree(), STEPS)
    assert relative_error(found, expected) <= FLOAT32_TOLERANCE


def run_fused_softmax(optimizer, num_steps):
    flat = flatten_tree(initial_params())
    state = optimizer.init(flat)
    step = jax.jit(lambda flat, state: optimizer.step(flat, grad(flat.unflatten()), state))
    trajectory = []
    for _ in range(num_steps):
        flat, state = step(flat, state)
        trajectory.append(flat.unflatten())
    return trajectory


# The softmax problem has 44 float64 parameters: chunks of 16 exercise the loop and a tail of 12;
# the cases without chunk_size take the default one-pass-per-output route.
TORCH_CASES = {
    "adam": (lambda: fused_adam(0.01, chunk_size=16), lambda p: torch.optim.Adam(p, lr=0.01, fused=True)),
    "adam_foreach": (
        lambda: fused_adam(0.02, b1=0.8, b2=0.99, eps=1e-6),  # no chunks: one pass per output
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, foreach=True),
    ),
    "sgd_momentum": (
        lambda: fused_sgd(0.1, momentum=0.9, chunk_size=16),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, fused=True),
    ),
    "sgd_nesterov": (
        lambda: fused_sgd(0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, foreach=True),
    ),
    "rmsprop": (
        lambda: fused_rmsprop(0.01, decay=0.99, eps_in_sqrt=False, chunk_size=16),
        lambda p: torch.optim.RMSprop(p, lr=0.01, foreach=True),
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_fused_matches_torch_in_float64(name):
    make_fused, make_torch = TORCH_CASES[name]
    error = max_relative_error(run_fused_softmax(make_fused(), 150), run_torch(make_torch, 150))
    assert error < FLOAT64_TOLERANCE, f"{name}: relative error {error:.2e}"


def test_bfloat16_moments_halve_the_state_and_still_converge():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(256, 20)), jnp.float32)
    y = x @ jnp.asarray(rng.normal(size=(20, 3)), jnp.float32)
    params = {"w": jnp.zeros((20, 3), jnp.float32), "b": jnp.zeros((3,), jnp.float32)}

    def loss_fn(p, x, y):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    losses = {}
    for moments in (jnp.float32, jnp.bfloat16):
        optimizer = fused_adam(3e-2, mu_dtype=moments, nu_dtype=moments, chunk_size=16)
        flat = flatten_tree(params)
        state = optimizer.init(flat)
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim == 1)
        assert state_bytes == flat.size * 2 * jnp.dtype(moments).itemsize
        train_step = fused_train_step(loss_fn, optimizer)
        for _ in range(300):
            flat, state, loss = train_step(flat, state, x, y)
        losses[moments] = float(loss)
    initial = float(loss_fn(params, x, y))
    assert losses[jnp.float32] < 1e-3 * initial
    assert losses[jnp.bfloat16] < 1e-2 * initial, losses


def test_flat_tree_round_trip_and_flat_gradients():
    params = nested_tree()
    flat = flatten_tree(params)
    assert len(flat.buffers) == 2 and flat.size == sum(x.size for x in jax.tree.leaves(params))
    back = flat.unflatten()
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)) and a.dtype == b.dtype, params, back))
    def loss(flat):
        return sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(flat.unflatten()))

    grads = jax.jit(jax.grad(loss))(flat)
    assert isinstance(grads, FlatTree) and grads.layout == flat.layout
    assert jnp.allclose(grads.buffers[0], 2 * flat.buffers[0])


def test_train_step_donates_and_grads_may_come_as_a_tree():
    params = many_leaves_tree(leaves=3)
    optimizer = fused_adam(1e-2, chunk_size=4)
    flat = flatten_tree(params)
    state = optimizer.init(flat)
    old = flat.buffers[0]
    train_step = fused_train_step(lambda p: sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(p)), optimizer)
    flat, state, _ = train_step(flat, state)
    assert old.is_deleted()  # updated in place
    tree_step = jax.jit(optimizer.step)
    from_tree, _ = tree_step(flat, gradients(flat.unflatten(), 0), state)
    from_flat, _ = tree_step(flat, flatten_tree(gradients(flat.unflatten(), 0)), state)
    assert relative_error(from_tree.buffers, from_flat.buffers) == 0


def test_program_size_does_not_grow_with_leaf_count():
    """Compile time: with flat gradients the step's program is the same for 10 or 300 leaves."""
    optimizer = fused_adam(1e-3)
    sizes = []
    for leaves in (10, 300):
        flat = flatten_tree([jnp.zeros((8,), jnp.float32)] * leaves)
        hlo = jax.jit(optimizer.step).lower(flat, flat, optimizer.init(flat)).as_text()
        sizes.append(len([line for line in hlo.splitlines() if " = " in line]))
    assert sizes[0] == sizes[1]


def test_errors_name_what_was_expected():
    params = many_leaves_tree()
    flat = flatten_tree(params)
    with pytest.raises(ValueError, match="elementwise.*reduce_sum"):
        fuse(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3))).init(flat)
    # Scalar arithmetic may use any primitive: a schedule's table lookup is not a cross-element op.
    schedule = gradtx.piecewise_constant_schedule(0.1, {10: 0.5, 20: 0.5})
    fuse(gradtx.sgd(schedule, momentum=0.9)).init(flat)
    with pytest.raises(ValueError, match="chunk_size"):
        fused_adam(1e-3, chunk_size=-1)
    optimizer = fused_adam(1e-3)
    state = optimizer.init(flat)
    with pytest.raises(TypeError, match="FlatTree"):
        optimizer.step(params, params, state)
    with pytest.raises(ValueError, match="does not match the flat layout"):
        optimizer.step(flat, {"p0": params["p0"]}, state)


# ``flatten``: the transformation interface on a tree, with the state in flat buffers.

FLATTEN_CASES = {
    "adam": lambda: gradtx.adam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2, weight_decay=0.1),
    "sgd_momentum": lambda: gradtx.sgd(0.05, momentum=0.9),
    # A global reduction sees the same numbers in buffers as in leaves.
    "clipped_adam": lambda: gradtx.chain(gradtx.clip_by_global_norm(0.5), gradtx.adam(1e-2)),
}


def run_transform(transform, params, steps=STEPS):
    @jax.jit
    def step(params, state, t):
        updates, state = transform.update(gradients(params, t), state, params)
        return gradtx.apply_updates(params, updates), state

    state = transform.init(params)
    for t in range(steps):
        params, state = step(params, state, t)
    return params, state


@pytest.mark.parametrize("name", sorted(FLATTEN_CASES))
def test_flatten_equals_the_tree_transformation(name):
    params = nested_tree()  # float32 and bfloat16 leaves: two buffers, and a None
    expected, _ = run_transform(FLATTEN_CASES[name](), params)
    found, state = run_transform(gradtx.flatten(FLATTEN_CASES[name]()), params)
    assert jax.tree.structure(found) == jax.tree.structure(params)
    assert jax.tree.map(lambda x: x.dtype, found) == jax.tree.map(lambda x: x.dtype, params)
    assert relative_error(found, expected) <= FLOAT32_TOLERANCE
    assert isinstance(state, gradtx.FlattenState)
    buffers = [x for x in jax.tree.leaves(state) if jnp.ndim(x) == 1]
    assert len(buffers) <= 2 * 2 + 1, "moments are stored as one buffer per dtype, not per leaf"


def test_flatten_matches_optax_flatten_in_float64():
    import optax

    params = many_leaves_tree()
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    expected, _ = run_transform(optax.flatten(optax.adam(1e-2)), params)
    found, _ = run_transform(gradtx.flatten(gradtx.adam(1e-2)), params)
    assert relative_error(found, expected) <= FLOAT64_TOLERANCE


def test_flatten_program_does_not_grow_per_leaf():
    def count(transform, leaves):
        params = {f"p{i}": jax.ShapeDtypeStruct((5,), jnp.float32) for i in range(leaves)}
        state = jax.eval_shape(transform.init, params)
        return len(jax.make_jaxpr(lambda g, s, p: transform.update(g, s, p))(params, state, params).eqns)

    flat_growth = count(gradtx.flatten(gradtx.adam(1e-3)), 40) - count(gradtx.flatten(gradtx.adam(1e-3)), 20)
    tree_growth = count(gradtx.adam(1e-3), 40) - count(gradtx.adam(1e-3), 20)
    # Per extra leaf: a reshape going in, a reshape coming out (and the split's one output).
    assert flat_growth <= 2 * 20 < tree_growth


def test_flatten_rejects_a_foreign_state():
    transform = gradtx.flatten(gradtx.adam(1e-3))
    params = {"w": jnp.ones(3)}
    with pytest.raises(TypeError, match="FlattenState"):
        transform.update(params, gradtx.adam(1e-3).init(params), params)


def _mixed_tree(seed=3):
    """float32, float64 and bfloat16 leaves, one of them unused by the loss below."""
    rng = np.random.default_rng(seed)
    return {
        "a": normal(rng, (5, 3)),
        "b": normal(rng, (7,), jnp.float64),
        "c": normal(rng, (4,), jnp.bfloat16),
        "d": normal(rng, (2, 2)),
        "unused": normal(rng, (3,)),
    }


def _mixed_loss(tree, x):
    used = [tree["a"], tree["b"], tree["c"], tree["d"]]
    return sum(jnp.sum(jnp.sin(v.astype(jnp.float64) * x)) for v in used)


def _with_int_leaf():
    return {**_mixed_tree(), "n": jnp.arange(6, dtype=jnp.int32)}


@pytest.mark.parametrize("make", [nested_tree, many_leaves_tree, one_leaf_tree, _mixed_tree, _with_int_leaf])
def test_unflatten_at_run_time_offsets_matches_unflatten_and_its_gradient(make):
    """fused_train_step's unpacking (offsets as arguments, custom backward) == unflatten(), values and gradients."""
    from gradtx.fused import _leaf_starts, _unflatten_at_starts

    flat = flatten_tree(make())
    starts = _leaf_starts(flat.layout)

    def loss(unpack):
        def f(flat, starts):
            tree = unpack(flat, starts)
            return sum(jnp.sum(jnp.cos(v.astype(jnp.float64) * (i + 1)) ** 2)
                       for i, v in enumerate(jax.tree.leaves(tree)) if jnp.issubdtype(v.dtype, jnp.inexact) and i != 2)
        return f

    plain = jax.jit(jax.value_and_grad(loss(lambda f, s: f.unflatten()), allow_int=True))(flat, starts)
    ours = jax.jit(jax.value_and_grad(loss(_unflatten_at_starts), allow_int=True))(flat, starts)
    assert plain[0] == ours[0]
    assert isinstance(ours[1], FlatTree) and ours[1].layout == flat.layout
    for a, b in zip(plain[1].buffers, ours[1].buffers):
        assert a.dtype == b.dtype and (a.dtype == jax.dtypes.float0 or bool(jnp.all(a == b)))
    back = jax.jit(_unflatten_at_starts)(flat, starts)
    assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == b.dtype and bool(jnp.all(a == b)), flat.unflatten(), back))


@pytest.mark.parametrize("run_time_offsets", [True, False])
def test_train_step_matches_plain_unflatten_and_cuts_leaves_at_run_time_offsets(run_time_offsets):
    """Same numbers as value_and_grad through unflatten(); no constant-offset slice left in the program."""
    params = _mixed_tree()
    x = jnp.float64(0.7)
    optimizer = fused_adam(1e-2)
    train_step = fused_train_step(_mixed_loss, optimizer, run_time_offsets=run_time_offsets)

    @jax.jit
    def reference(flat, state, x):
        value, grads = jax.value_and_grad(lambda f: _mixed_loss(f.unflatten(), x))(flat)
        flat, state = optimizer.step(flat, grads, state)
        return flat, state, value

    flat_a = flatten_tree(params)
    flat_b = flatten_tree(params)
    state_a, state_b = optimizer.init(flat_a), optimizer.init(flat_b)
    hlo = train_step.lower(flat_a, state_a, x).as_text()
    assert ("stablehlo.slice" not in hlo and "dynamic_slice" in hlo) == run_time_offsets
    assert "stablehlo.slice" in reference.lower(flat_b, state_b, x).as_text()
    for _ in range(5):
        flat_a, state_a, loss_a = train_step(flat_a, state_a, x)
        flat_b, state_b, loss_b = reference(flat_b, state_b, x)
        assert loss_a == loss_b
    for a, b in zip(jax.tree.leaves((flat_a, state_a)), jax.tree.leaves((flat_b, state_b))):
        assert a.dtype == b.dtype and bool(jnp.all(a == b))
