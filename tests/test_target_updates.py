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

    @jax.jit
    def both(params, averaged, periodic, t):
        return (
            (incremental_update(params, averaged[0], 0.05), optax.incremental_update(params, averaged[1], 0.05)),
            (periodic_update(params, periodic[0], t, 7), optax.periodic_update(params, periodic[1], t, 7)),
        )

    start = sp.initial_params()
    averaged, periodic = (start, start), (start, start)
    ours_averages, theirs_averages = [], []
    for t, params in enumerate(online, start=1):
        averaged, periodic = both(params, averaged, periodic, jnp.asarray(t))
        ours_averages.append(averaged[0])
        theirs_averages.append(averaged[1])
        for name in params:
            np.testing.assert_array_equal(periodic[0][name], periodic[1][name])
        if t % 7 == 0:
            np.testing.assert_array_equal(periodic[0]["w"], params["w"])
    assert sp.max_relative_error(ours_averages, theirs_averages) < 1e-8
    assert not np.allclose(averaged[0]["w"], online[-1]["w"])  # an average, not a copy


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
