"""tree_map_params and value_and_grad_from_state against Optax's."""

import jax
import jax.numpy as jnp
import optax
import pytest
import softmax_problem as sp

import gradtx
from gradtx.state_utils import tree_map_params, value_and_grad_from_state

SPECS = {"w": "spec_w", "b": "spec_b"}


def to_spec(leaf, spec):
    return spec


def to_none(leaf):
    return None


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.adam(1e-3),
        lambda m: m.sgd(0.1, momentum=0.9),
        lambda m: m.chain(m.clip_by_global_norm(1.0), m.rmsprop(0.01, momentum=0.5)),
    ],
    ids=["adam", "sgd_momentum", "chain"],
)
def test_tree_map_params_matches_optax(make):
    params = sp.initial_params()
    for lib in (gradtx, optax):
        optimizer = make(lib)
        state = optimizer.init(params)
        ours = tree_map_params(optimizer, to_spec, state, SPECS, transform_non_params=to_none)
        theirs = optax.tree_map_params(optimizer, to_spec, state, SPECS, transform_non_params=to_none)
        assert ours == theirs
    # gradtx's own states: every parameter-shaped subtree becomes the specs, everything else None.
    state = gradtx.adam(1e-3).init(params)
    mapped = tree_map_params(gradtx.adam(1e-3).init, to_spec, state, SPECS, transform_non_params=to_none)
    assert mapped[0].mu == SPECS and mapped[0].nu == SPECS and mapped[0].step_count is None
    cast = tree_map_params(gradtx.adam(1e-3), lambda x: x.astype(jnp.float32), state)
    assert cast[0].mu["w"].dtype == jnp.float32 and cast[0].step_count.dtype == state[0].step_count.dtype
    with pytest.raises(TypeError, match="initable"):
        tree_map_params(3, lambda x: x, state)


def run_line_search(from_state):
    solver = optax.chain(
        optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True)
    )
    value_and_grad = from_state(sp.loss)
    params = sp.initial_params()
    state = solver.init(params)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=sp.loss)
        return optax.apply_updates(params, updates), state

    trajectory = []
    for _ in range(100):
        params, state = step(params, state)
        trajectory.append(params)
    return trajectory


def test_value_and_grad_from_state_matches_optax():
    ours = run_line_search(value_and_grad_from_state)
    assert sp.max_relative_error(ours, run_line_search(optax.value_and_grad_from_state)) < 1e-8


def test_value_and_grad_from_state_reuses_a_finite_value():
    params = sp.initial_params()
    stored_grad = jax.tree.map(jnp.ones_like, params)
    fn = value_and_grad_from_state(sp.loss)
    value, grad = fn(params, state=(gradtx.EmptyState(), {"value": jnp.asarray(3.0), "grad": stored_grad}))
    assert float(value) == 3.0 and bool(jnp.all(grad["w"] == 1))
    value, grad = fn(params, state={"value": jnp.asarray(jnp.inf), "grad": stored_grad})
    assert float(value) == pytest.approx(float(sp.loss(params)), rel=1e-12)
    assert bool(jnp.allclose(grad["w"], sp.grad(params)["w"], rtol=1e-12))
    with pytest.raises(ValueError, match="no 'value'"):
        fn(params, state=gradtx.adam(0.1).init(params))
    with pytest.raises(KeyError, match=r"found several .*grad"):
        fn(params, state=({"value": 1.0, "grad": stored_grad}, {"grad": stored_grad}))
