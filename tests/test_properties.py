"""Property-based tests (Hypothesis): every transformation on random pytrees and dtypes, and fuzzed hyperparameters.

For every transformation in ``test_contract.TRANSFORMS`` (plus the non-finite guards), on random
trees (nesting, empty containers, scalars, zero-size arrays, ``None``) whose leaves are float16,
bfloat16, float32 or float64:

* shapes and dtypes are preserved (updates, parameters, and the state between steps);
* ``jit`` equals eager execution;
* ``vmap`` over a batch of parameter trees equals a loop;
* ``chain`` is associative;
* ``masked`` with an all-true mask equals the unmasked transformation.

Then every named optimizer runs with random valid hyperparameters on a bounded smooth problem and
must never produce NaN or inf.

A jit compilation costs about a second on a small CPU, so each case runs one example by default,
seeded by its name so that every transformation sees a different tree and a rerun sees the same
one; only the jit check compiles (eager runs reuse JAX's per-operation cache). Set
``GRADTX_HYPOTHESIS_EXAMPLES=n`` for n examples per case, drawn afresh on every run.
"""

import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from test_contract import TRANSFORMS as CONTRACT_TRANSFORMS

import gradtx
from gradtx.numerics import apply_if_finite, zero_nans

EXAMPLES = int(os.environ.get("GRADTX_HYPOTHESIS_EXAMPLES", "1"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_hypothesis(name, strategy, check):
    """Runs ``check`` on examples of ``strategy``; reproducible per ``name`` unless more examples are asked for."""
    test = given(strategy)(check)
    test = SETTINGS(test)
    if "GRADTX_HYPOTHESIS_EXAMPLES" not in os.environ:
        test = seed(zlib.crc32(name.encode()))(test)
    test()


# ---------------------------------------------------------------------------------------------
# Every transformation on random trees.

TRANSFORMS = {
    **CONTRACT_TRANSFORMS,
    "apply_if_finite_adam": lambda: apply_if_finite(gradtx.adam(1e-3), 2),
    "zero_nans": lambda: zero_nans(),
}

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]
SHAPES = [(), (3,), (2, 3), (0,)]
# Relative tolerance between two evaluation orders of the same arithmetic (fused or not, batched
# or not) after 2 steps: a few units in the last place of the narrowest dtype in the tree.
RTOL = {jnp.dtype(jnp.float16): 2e-2, jnp.dtype(jnp.bfloat16): 6e-2, jnp.dtype(jnp.float32): 2e-5,
        jnp.dtype(jnp.float64): 1e-12}
STEPS = 2

# A tree "spec" has ("leaf", shape, dtype) where the parameters have an array.
LEAF = st.tuples(st.just("leaf"), st.sampled_from(SHAPES), st.sampled_from(DTYPES))
SUBTREES = st.recursive(
    st.one_of(LEAF, LEAF, st.none(), st.just([]), st.just({})),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=2).map(tuple),
        st.dictionaries(st.sampled_from(["a", "b", "kernel"]), children, max_size=3),
    ),
    max_leaves=3,
)
# Every tree also carries the edge cases, so that each single example exercises them: a bare
# scalar, None, empty containers of each kind.
TREE_SPECS = st.tuples(
    st.fixed_dictionaries(
        {"random": SUBTREES, "scalar": LEAF.map(lambda leaf: ("leaf", (), leaf[2])), "none": st.none(),
         "empty": st.just({"list": [], "dict": {}, "tuple": ()})}
    ),
    st.integers(0, 2**31 - 2),
)


def _is_spec_leaf(x):
    return isinstance(x, tuple) and len(x) == 3 and x[0] == "leaf"


def build(spec, seed, batch=None):
    """The parameter tree of a spec, values drawn from N(0, 1) with ``seed``."""
    rng = np.random.default_rng(seed)

    def make(leaf):
        if leaf is None:
            return None
        _, shape, dtype = leaf
        shape = shape if batch is None else (batch, *shape)
        return jnp.asarray(rng.normal(size=shape), dtype)

    return jax.tree.map(make, spec, is_leaf=lambda x: x is None or _is_spec_leaf(x))


def gradients(params, step, seed):
    """Gradients that do not depend on the parameters, so that compared runs get equal inputs."""
    rng = np.random.default_rng((seed, step))
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) + 0.1, p.dtype), params)


def _run(transform, params, grads_seq, update=None):
    update = transform.update if update is None else update
    state = transform.init(params)
    updates_seq = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        updates_seq.append(updates)
        params = gradtx.apply_updates(params, updates)
    return params, state, updates_seq


def _assert_close(a, b, rtol, what):
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert jnp.result_type(x) == jnp.result_type(y), what
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = max(1.0, float(np.max(np.abs(y)))) if y.size else 1.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale, err_msg=what)


def _shapes_and_dtypes(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def check_all_properties(name, spec, seed):
    make = TRANSFORMS[name]
    params = build(spec, seed)
    grads_seq = [gradients(params, step, seed) for step in range(STEPS)]

    # Eager: the shapes and dtypes of updates, parameters and state are preserved.
    init_state = make().init(params)
    eager = _run(make(), params, grads_seq)
    eager_params, eager_state, eager_updates = eager
    assert _shapes_and_dtypes(eager_params) == _shapes_and_dtypes(params)
    assert jax.tree.structure(eager_state) == jax.tree.structure(init_state)
    assert _shapes_and_dtypes(eager_state) == _shapes_and_dtypes(init_state)
    for updates, grads in zip(eager_updates, grads_seq):
        assert _shapes_and_dtypes(updates) == _shapes_and_dtypes(grads)
    dtypes = {jnp.dtype(jnp.result_type(x)) for x in jax.tree.leaves((params, init_state))} & set(RTOL)
    rtol = max((RTOL[d] for d in dtypes), default=0.0)

    # jit equals eager. The one compilation of the example, reused by the loop below.
    transform = make()
    jitted_update = jax.jit(transform.update)
    _assert_close(_run(transform, params, grads_seq, jitted_update), eager, rtol, "jit differs from eager")

    # vmap over a batch of two trees equals a loop over them.
    batch_params = build(spec, seed + 1, batch=2)
    batch_grads = [gradients(batch_params, step, seed + 1) for step in range(STEPS)]
    vmapped = jax.vmap(lambda p, g: _run(make(), p, g), axis_size=2)(batch_params, batch_grads)
    for i in range(2):
        member = lambda tree: jax.tree.map(lambda x: x[i], tree)
        looped = _run(transform, member(batch_params), [member(g) for g in batch_grads], jitted_update)
        _assert_close(member(vmapped), looped, rtol, "vmap differs from a loop")

    # chain(chain(a, b), c) and chain(a, chain(b, c)): the same updates, and the same state leaves
    # in the same order. Eager runs of the same operations agree bit for bit.
    left = _run(gradtx.chain(gradtx.chain(gradtx.trace(0.5), make()), gradtx.scale(0.5)), params, grads_seq)
    right = _run(gradtx.chain(gradtx.trace(0.5), gradtx.chain(make(), gradtx.scale(0.5))), params, grads_seq)
    _assert_close(left[0], right[0], 0.0, "chain is not associative (params)")
    _assert_close(left[2], right[2], 0.0, "chain is not associative (updates)")
    _assert_close(jax.tree.leaves(left[1]), jax.tree.leaves(right[1]), 0.0, "chain is not associative (state)")

    # masked with an all-true mask is the transformation itself (a mask tree or a mask function).
    true_mask = lambda params: jax.tree.map(lambda _: True, params)
    mask = true_mask if seed % 2 else true_mask(params)
    masked_params, masked_state, masked_updates = _run(gradtx.masked(make(), mask), params, grads_seq)
    _assert_close(masked_params, eager_params, 0.0, "masked(all true) differs (params)")
    _assert_close(masked_updates, eager_updates, 0.0, "masked(all true) differs (updates)")
    _assert_close(masked_state.inner_state, eager_state, 0.0, "masked(all true) differs (state)")


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transformation_properties_on_random_trees(name):
    run_hypothesis(name, TREE_SPECS, lambda spec_and_seed: check_all_properties(name, *spec_and_seed))


# (A parameter tree that is just None is left out: ``update(g, state, None)`` means "no params".)
DEGENERATE_TREES = {
    "empty_dict": {},
    "empty_list": [],
    "nested_empty": {"a": [(), {}], "b": None},
    "bare_scalar": jnp.asarray(0.5, jnp.float32),
    "zero_size": jnp.zeros((0, 3), jnp.bfloat16),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_degenerate_trees(name):
    # Trees with nothing or next to nothing in them: same structure out, nothing raised.
    for tree_name, params in DEGENERATE_TREES.items():
        grads_seq = [jax.tree.map(lambda p: jnp.ones_like(p), params)] * STEPS
        new_params, state, updates_seq = _run(TRANSFORMS[name](), params, grads_seq)
        assert jax.tree.structure(new_params) == jax.tree.structure(params), tree_name
        assert _shapes_and_dtypes(updates_seq[-1]) == _shapes_and_dtypes(params), tree_name


# ---------------------------------------------------------------------------------------------
# Random valid hyperparameters on a bounded smooth problem.

LR = st.floats(1e-6, 1.0)
DECAY = st.floats(0.0, 0.9999)
EPS = st.floats(1e-10, 1.0)
SMALL = st.floats(0.0, 1e-3)

# name -> (optimizer from a dict of hyperparameters, strategy of that dict). Hyperparameters reach
# the optimizer as traced arrays, so one compilation serves every draw.
FUZZED = {
    "sgd": (lambda h: gradtx.sgd(h["lr"]), {"lr": LR}),
    "momentum": (lambda h: gradtx.sgd(h["lr"], momentum=h["mu"]), {"lr": LR, "mu": DECAY}),
    "nesterov": (
        lambda h: gradtx.sgd(h["lr"], momentum=h["mu"], nesterov=True, velocity_form=True), {"lr": LR, "mu": DECAY}
    ),
    "adagrad": (
        lambda h: gradtx.adagrad(h["lr"], h["s0"], h["eps"], eps_in_sqrt=False), {"lr": LR, "s0": SMALL, "eps": EPS}
    ),
    "rmsprop": (
        lambda h: gradtx.rmsprop(
            h["lr"], h["decay"], h["eps"], h["s0"], eps_in_sqrt=False, centered=True, momentum=h["mu"], nesterov=True
        ),
        {"lr": LR, "decay": DECAY, "eps": EPS, "s0": SMALL, "mu": DECAY},
    ),
    "adadelta": (
        lambda h: gradtx.adadelta(h["lr"], h["rho"], h["eps"], h["wd"]),
        {"lr": LR, "rho": DECAY, "eps": EPS, "wd": st.floats(0.0, 0.1)},
    ),
    "adam": (
        lambda h: gradtx.adam(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"]),
        {"lr": LR, "b1": DECAY, "b2": DECAY, "eps": EPS, "eps_root": SMALL},
    ),
    "adamw": (
        lambda h: gradtx.adamw(h["lr"], h["b1"], h["b2"], h["eps"], weight_decay=h["wd"]),
        {"lr": LR, "b1": DECAY, "b2": DECAY, "eps": EPS, "wd": st.floats(0.0, 1.0)},
    ),
    "adamax": (lambda h: gradtx.adamax(h["lr"], h["b1"], h["b2"], h["eps"]),
               {"lr": LR, "b1": DECAY, "b2": DECAY, "eps": EPS}),
    "nadam": (lambda h: gradtx.nadam(h["lr"], h["b1"], h["b2"], h["eps"]),
              {"lr": LR, "b1": DECAY, "b2": DECAY, "eps": EPS}),
    "amsgrad": (
        lambda h: gradtx.amsgrad(h["lr"], h["b1"], h["b2"], h["eps"], h["eps_root"], debias_before_max=False),
        {"lr": LR, "b1": DECAY, "b2": DECAY, "eps": EPS, "eps_root": SMALL},
    ),
    "rprop": (
        lambda h: gradtx.rprop(h["lr"], h["eta_minus"], h["eta_plus"], h["min_step"], h["min_step"] + h["span"]),
        {"lr": LR, "eta_minus": st.floats(0.01, 0.99), "eta_plus": st.floats(1.01, 3.0),
         "min_step": SMALL, "span": st.floats(0.0, 50.0)},
    ),
    "sign_sgd": (lambda h: gradtx.sign_sgd(h["lr"]), {"lr": LR}),
}
DRAWS_PER_EXAMPLE = 8
FUZZ_STEPS = 100

# The problem: f(w) = sum_i s_i (sqrt(1 + (w_i - c_i)^2) - 1), smooth, bounded below, with
# gradients bounded by s_i; float32 throughout.
_rng = np.random.default_rng(3)
TARGET = {
    "w": jnp.asarray(_rng.normal(size=(3, 4)) * 3, jnp.float32),
    "b": jnp.asarray(_rng.normal(size=4), jnp.float32),
    "s": jnp.asarray(-2.0, jnp.float32),
}
CURVATURE = {
    "w": jnp.asarray(_rng.uniform(0.1, 10.0, size=(3, 4)), jnp.float32),
    "b": jnp.ones(4, jnp.float32),
    "s": jnp.asarray(0.01, jnp.float32),
}


def bounded_loss(params):
    return sum(
        jnp.sum(s * (jnp.sqrt(1 + (w - c) ** 2) - 1))
        for w, c, s in zip(jax.tree.leaves(params), jax.tree.leaves(TARGET), jax.tree.leaves(CURVATURE))
    )


_FUZZ_RUNS = {}


def _fuzz_run(name):
    """A jitted function: a batch of hyperparameter dicts -> (all finite?, final loss) per member."""
    if name not in _FUZZ_RUNS:
        make = FUZZED[name][0]

        def one(hyperparameters):
            optimizer = make(hyperparameters)
            params = jax.tree.map(jnp.zeros_like, TARGET)

            def step(_, carry):
                params, state = carry
                updates, state = optimizer.update(jax.grad(bounded_loss)(params), state, params)
                return gradtx.apply_updates(params, updates), state

            params, state = jax.lax.fori_loop(0, FUZZ_STEPS, step, (params, optimizer.init(params)))
            leaves = [x for x in jax.tree.leaves((params, state)) if jnp.issubdtype(x.dtype, jnp.floating)]
            return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])), bounded_loss(params)

        _FUZZ_RUNS[name] = jax.jit(jax.vmap(one))
    return _FUZZ_RUNS[name]


@pytest.mark.parametrize("name", sorted(FUZZED))
def test_random_valid_hyperparameters_never_produce_nan(name):
    draws = st.lists(st.fixed_dictionaries(FUZZED[name][1]), min_size=DRAWS_PER_EXAMPLE, max_size=DRAWS_PER_EXAMPLE)

    def check(hyperparameter_list):
        batch = {k: jnp.asarray([h[k] for h in hyperparameter_list], jnp.float32) for k in hyperparameter_list[0]}
        finite, loss = _fuzz_run(name)(batch)
        for index, hyperparameters in enumerate(hyperparameter_list):
            assert bool(finite[index]) and bool(jnp.isfinite(loss[index])), hyperparameters

    run_hypothesis(name, draws, check)
