"""incremental_update (Polyak averaging) and periodic_update (target networks) against Optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import softmax_problem as sp

from gradtx.target_updates import incremental_update, periodic_update

STEPS = 120


def online_trajectory():
    return sp.run_gradtx(optax.adam(0.02), STEPS)


def test_match_optax_along_a_training_run():
    online = online_trajectory()
    start = sp.initial_params()
    averaged = {"ours": start, "theirs": start}
    periodic = {"ours": start, "theirs": start}
    for t, params in enumerate(online, start=1):
        averaged = {"ours": incremental_update(params, averaged["ours"], 0.05),
                    "theirs": optax.incremental_update(params, averaged["theirs"], 0.05)}
        periodic = {"ours": periodic_update(params, periodic["ours"], jnp.asarray(t), 7),
                    "theirs": optax.periodic_update(params, periodic["theirs"], jnp.asarray(t), 7)}
        assert sp.max_relative_error([averaged["ours"]], [averaged["theirs"]]) < 1e-8
        for name in params:
            np.testing.assert_array_equal(periodic["ours"][name], periodic["theirs"][name])
        if t % 7 == 0:
            np.testing.assert_array_equal(periodic["ours"]["w"], params["w"])
    assert not np.allclose(averaged["ours"]["w"], online[-1]["w"])  # an average, not a copy


def test_none_leaves_dtypes_and_bad_input():
    new = {"w": jnp.ones(3, jnp.float32), "frozen": None}
    old = {"w": jnp.zeros(3, jnp.float32), "frozen": None}
    out = incremental_update(new, old, 0.25)
    assert out["frozen"] is None and out["w"].dtype == jnp.float32
    np.testing.assert_allclose(out["w"], 0.25)
    assert jax.jit(lambda n, o, t: periodic_update(n, o, t, 3))(new, old, 3)["frozen"] is None
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="step_size"):
            incremental_update(new, old, bad)
    with pytest.raises(ValueError, match="update_period"):
        periodic_update(new, old, 1, 0)
    with pytest.raises(TypeError, match="update_period"):
        periodic_update(new, old, 1, 2.0)
    with pytest.raises(ValueError, match=r"\['w'\]"):
        incremental_update({"w": jnp.ones(2), "frozen": None}, old, 0.5)
