"""GradientTransformationExtraArgs, with_extra_args_support, and Optax's former name multi_transform."""

import jax.numpy as jnp
import optax
import pytest
import softmax_problem as sp

import gradtx
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support


def test_with_extra_args_support():
    seen = []

    def plain_update(updates, state, params=None):
        return updates, state

    def keyword_update(updates, state, params=None, **extra_args):
        seen.append(sorted(extra_args))
        return updates, state

    plain = gradtx.GradientTransformation(lambda p: (), plain_update)
    wrapped = with_extra_args_support(plain)
    assert isinstance(wrapped, GradientTransformationExtraArgs) and isinstance(wrapped, gradtx.GradientTransformation)
    assert wrapped.update({"w": 1.0}, (), None, value=2.0) == ({"w": 1.0}, ())  # dropped, no TypeError
    kept = with_extra_args_support(gradtx.GradientTransformation(lambda p: (), keyword_update))
    kept.update({"w": 1.0}, (), None, value=2.0)
    assert seen == [["value"]]
    assert with_extra_args_support(wrapped) is wrapped
    # Optax's own transforms of either kind are accepted.
    optax_plain = with_extra_args_support(optax.scale(2.0))
    updates, _ = optax_plain.update({"w": jnp.ones(2)}, optax_plain.init({"w": jnp.ones(2)}), None, value=1.0)
    assert float(updates["w"][0]) == 2.0
    with pytest.raises(TypeError, match="GradientTransformation"):
        with_extra_args_support(lambda u: u)


def test_multi_transform_is_partition_and_matches_optax():
    assert gradtx.multi_transform is gradtx.partition and gradtx.MultiTransformState is gradtx.PartitionState
    assert gradtx.MultiTransformState._fields == optax.MultiTransformState._fields
    labels = {"w": "fast", "b": "slow"}
    ours = gradtx.multi_transform({"fast": gradtx.adam(0.02), "slow": gradtx.sgd(0.1)}, labels)
    theirs = optax.multi_transform({"fast": optax.adam(0.02), "slow": optax.sgd(0.1)}, labels)
    assert sp.max_relative_error(sp.run_gradtx(ours, 100), sp.run_gradtx(theirs, 100)) < 1e-8
    with pytest.raises(ValueError, match="no transform"):
        gradtx.multi_transform({"fast": gradtx.adam(0.02)}, labels).init(sp.initial_params())
