"""conditionally_transform and conditionally_mask against Optax; the inner state advances only when selected."""

import jax
import jax.numpy as jnp
import optax
import pytest
import softmax_problem as sp

import gradtx
from gradtx.conditionality import (
    ConditionallyMaskState,
    ConditionallyTransformState,
    conditionally_mask,
    conditionally_transform,
)

STEPS = 120
WRAPPERS = {
    "transform": (conditionally_transform, optax.conditionally_transform, ConditionallyTransformState),
    "mask": (conditionally_mask, optax.conditionally_mask, ConditionallyMaskState),
}


def every_third(step):
    return step % 3 == 0


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_matches_optax(kind):
    ours_wrapper, theirs_wrapper, state_type = WRAPPERS[kind]
    ours = gradtx.chain(ours_wrapper(gradtx.scale_by_adam(), every_third), gradtx.scale(-0.01))
    theirs = optax.chain(theirs_wrapper(optax.scale_by_adam(), every_third), optax.scale(-0.01))
    assert sp.max_relative_error(sp.run_gradtx(ours, STEPS), sp.run_gradtx(theirs, STEPS)) < 1e-8
    assert state_type._fields == getattr(optax, state_type.__name__)._fields
    assert isinstance(ours_wrapper(gradtx.sgd(0.1), every_third), gradtx.GradientTransformationExtraArgs)


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_inner_runs_only_on_selected_steps_and_extra_args(kind):
    wrapper = WRAPPERS[kind][0]
    # The condition reads an extra argument of update (forward_extra_args=True).
    transform = wrapper(gradtx.scale_by_adam(), lambda step, warm: jnp.logical_and(step >= 2, warm), True)
    params = sp.initial_params()
    state = transform.init(params)
    step = jax.jit(transform.update)
    outputs = []
    for t in range(8):
        grads = sp.grad(params)
        updates, state = step(grads, state, params, warm=jnp.asarray(t % 2 == 0))
        outputs.append((grads, updates))
    selected = [t for t in range(8) if t >= 2 and t % 2 == 0]
    assert int(state.step) == 8 and int(state.inner_state.step_count) == len(selected)
    for t, (grads, updates) in enumerate(outputs):
        if t in selected:
            assert not jnp.allclose(updates["w"], grads["w"])
        elif kind == "mask":
            assert jnp.all(updates["w"] == 0)
        else:
            assert jnp.all(updates["w"] == grads["w"])


def test_bad_input():
    params = sp.initial_params()
    with pytest.raises(TypeError, match="should_transform_fn"):
        conditionally_mask(gradtx.sgd(0.1), True)
    transform = conditionally_transform(gradtx.sgd(0.1), lambda step: jnp.ones(2, bool))
    with pytest.raises(ValueError, match="scalar bool"):
        transform.update(sp.grad(params), transform.init(params), params)
    reshaping = gradtx.stateless(lambda updates, params: {"w": updates["w"]})
    transform = conditionally_mask(reshaping, every_third)
    with pytest.raises(ValueError, match="structure, shapes and dtypes"):
        transform.update(sp.grad(params), transform.init(params), params)
