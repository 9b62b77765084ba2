"""The new adaptive methods pass the shared contract of tests/test_contract.py (jit = eager, dtypes, vmap)."""

import jax.numpy as jnp
import pytest
import test_contract as contract

import gradtx

NEW_TRANSFORMS = {
    "adabelief": lambda: gradtx.adabelief(1e-3),
    "radam": lambda: gradtx.radam(1e-3),
    "yogi": lambda: gradtx.yogi(1e-3),
    "adan": lambda: gradtx.adan(1e-3, weight_decay=0.01),
    "novograd": lambda: gradtx.novograd(1e-3, weight_decay=0.01),
    "adamaxw": lambda: gradtx.adamaxw(1e-3),
    "nadamw": lambda: gradtx.nadamw(1e-3),
    "scale_by_nadam": lambda: gradtx.scale_by_nadam(),
    "optimistic_adam_v2": lambda: gradtx.optimistic_adam_v2(1e-3),
    "adafactor": lambda: gradtx.adafactor(min_dim_size_to_factor=2, momentum=0.9),
    "sm3": lambda: gradtx.sm3(1e-2),
}


CHECKS = {
    "jit_equals_eager": lambda name: contract.test_jit_equals_eager_on_nested_tree_with_none_and_scalars(name),
    "dtypes_kept": lambda name: [contract.test_params_and_state_keep_their_dtypes(name, d) for d in DTYPES],
    "vmap_equals_loop": lambda name: contract.test_vmap_over_a_batch_of_params_equals_a_loop(name),
}
DTYPES = (jnp.float32, jnp.bfloat16)


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", sorted(NEW_TRANSFORMS))
def test_new_methods_meet_the_contract(name, check, monkeypatch):
    monkeypatch.setitem(contract.TRANSFORMS, name, NEW_TRANSFORMS[name])
    CHECKS[check](name)
