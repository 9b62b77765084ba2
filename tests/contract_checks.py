"""The checks of ``test_contract.py`` as functions, for the method test modules to call on their own transforms.

jit equals eager on a nested tree with ``None`` and scalar leaves, params and state keep their dtypes
(float32 and bfloat16), vmap over a batch of parameter trees equals a loop, and a constant schedule
gives a float's numbers while a varying one changes them. PRNG keys in a state are compared by
their key data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from test_contract import gradients, nested_params, train

import gradtx


def _comparable(leaf):
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf), np.float64)
    return np.asarray(leaf, np.float64)


def check_jit_equals_eager(make):
    params = nested_params(jnp.float32)
    eager_params, eager_state = train(make(), params, 3, jit=False)
    jit_params, jit_state = train(make(), params, 3, jit=True)
    assert jax.tree.structure(eager_params) == jax.tree.structure(params)
    assert eager_params["layers"][1] is None
    for a, b in zip(jax.tree.leaves((eager_params, eager_state)), jax.tree.leaves((jit_params, jit_state))):
        a, b = _comparable(a), _comparable(b)
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6 * max(1.0, float(np.max(np.abs(b), initial=0.0))))


def check_dtypes_kept(make, dtype):
    transform = make()
    params = nested_params(dtype)
    initial_state_dtypes = jax.tree.map(jnp.result_type, transform.init(params))
    new_params, new_state = train(transform, params, 2, jit=True)
    assert jax.tree.map(lambda x: x.dtype, new_params) == jax.tree.map(lambda x: x.dtype, params)
    assert jax.tree.map(jnp.result_type, new_state) == initial_state_dtypes
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_params))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)))


def check_vmap_equals_loop(make, rtol=2e-6):
    """Two steps vmapped over three parameter trees equal the same steps in a loop, to ``rtol``."""
    transform = make()
    batch = [nested_params(jnp.float32, seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)

    def two_steps(params):
        state = transform.init(params)
        for step in range(2):
            updates, state = transform.update(gradients(params, step), state, params)
            params = gradtx.apply_updates(params, updates)
        return params

    vmapped = jax.jit(jax.vmap(two_steps))(stacked)
    for index, params in enumerate(batch):
        looped = jax.jit(two_steps)(params)
        for a, b in zip(jax.tree.leaves(looped), jax.tree.leaves(jax.tree.map(lambda x: x[index], vmapped))):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(jnp.max(jnp.abs(b)))))


def check_schedules(make, floats):
    """Each hyperparameter in ``floats`` as a constant schedule gives the same numbers; varied, other numbers."""
    constant = {k: (lambda v: (lambda t: jnp.asarray(v, jnp.float32)))(v) for k, v in floats.items()}
    varying = {k: (lambda v: (lambda t: jnp.asarray(v, jnp.float32) * 0.5 ** (t % 2)))(v) for k, v in floats.items()}
    params = nested_params(jnp.float32)
    with_floats, _ = train(make(**floats), params, 3, jit=True)
    with_constant, _ = train(make(**constant), params, 3, jit=True)
    with_varying, _ = train(make(**varying), params, 3, jit=True)
    for a, b in zip(jax.tree.leaves(with_floats), jax.tree.leaves(with_constant)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(
        not np.allclose(a, b, rtol=1e-6) for a, b in zip(jax.tree.leaves(with_floats), jax.tree.leaves(with_varying))
    )


def check_signature_matches_optax(name, ignore=()):
    """``gradtx.name`` takes Optax's arguments: same names, order, kinds and defaults (less ``ignore``)."""
    import inspect

    import optax

    def described(fn):
        parameters = inspect.signature(fn).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters if p.name not in ignore]

    assert described(getattr(gradtx, name)) == described(getattr(optax, name))
