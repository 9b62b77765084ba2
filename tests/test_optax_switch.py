"""A training program written for Optax runs unchanged under gradtx, with Optax's numbers.

``PROGRAM`` is ordinary Optax user code: an MLP classifier trained with a multi-transform of
inject_hyperparams(AdamW) under a warmup-cosine schedule and SGD with momentum, global-norm clipping,
gradient accumulation (``MultiSteps``), non-finite protection, lookahead, Optax's losses and tree
utilities, and code that reads the optimizer state by Optax's field names. It is executed twice: once
with ``import optax`` and once with ``import gradtx as optax`` and nothing else changed.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

PROGRAM = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import {library} as optax

    def run(steps=60):
        key = jax.random.PRNGKey(0)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        x = jax.random.normal(k1, (64, 8), dtype=jnp.float64)
        y = jax.random.randint(k2, (64,), 0, 3)
        params = {{
            "hidden": {{"w": 0.3 * jax.random.normal(k3, (8, 16), dtype=jnp.float64), "b": jnp.zeros(16)}},
            "head": {{"w": 0.3 * jax.random.normal(k4, (16, 3), dtype=jnp.float64), "b": jnp.zeros(3)}},
        }}

        def loss_fn(p, x, y):
            h = jnp.tanh(x @ p["hidden"]["w"] + p["hidden"]["b"])
            logits = h @ p["head"]["w"] + p["head"]["b"]
            ce = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            reg = 1e-4 * sum(optax.losses.l2_loss(w).sum() for w in jax.tree.leaves(p))
            return ce + reg

        schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-2, 10, steps)
        labels = {{"hidden": {{"w": "adam", "b": "adam"}}, "head": {{"w": "sgd", "b": "sgd"}}}}
        decay_mask = jax.tree.map(lambda leaf: leaf.ndim > 1, params)
        inner = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.multi_transform(
                {{
                    "adam": optax.inject_hyperparams(optax.adamw)(
                        learning_rate=schedule, weight_decay=1e-3, mask=decay_mask
                    ),
                    "sgd": optax.sgd(1e-2, momentum=0.9, nesterov=True),
                }},
                labels,
            ),
        )
        tx = optax.MultiSteps(optax.apply_if_finite(inner, max_consecutive_errors=3), every_k_schedule=2)
        state = tx.init(params)

        @jax.jit
        def step(params, state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss, optax.global_norm(grads)

        losses, norms, learning_rates = [], [], []
        for i in range(steps):
            batch = slice((i % 4) * 16, (i % 4 + 1) * 16)
            params, state, loss, norm = step(params, state, x[batch], y[batch])
            losses.append(loss)
            norms.append(norm)
            # Reading the state by Optax's field names.
            finite_state = state.inner_opt_state
            adam_state = finite_state.inner_state[1].inner_states["adam"].inner_state
            learning_rates.append(adam_state.hyperparams["learning_rate"])
        return {{
            "params": params,
            "losses": jnp.stack(losses),
            "grad_norms": jnp.stack(norms),
            "learning_rates": jnp.stack(learning_rates),
            "mini_step": state.mini_step,
            "gradient_step": state.gradient_step,
            "notfinite_count": state.inner_opt_state.notfinite_count,
            "total_notfinite": state.inner_opt_state.total_notfinite,
            "param_norm": optax.tree.norm(params),
            "count": adam_state.count,
        }}
    """
)

LOOKAHEAD_PROGRAM = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import {library} as optax

    def run(steps=40):
        params = {{"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}}
        loss_fn = lambda p: jnp.sum((p["w"] - 0.1) ** 4) + (p["b"] + 1.0) ** 2
        tx = optax.lookahead(optax.adam(0.05), sync_period=5, slow_step_size=0.5)
        lookahead_params = optax.LookaheadParams.init_synced(params)
        state = tx.init(lookahead_params)
        for _ in range(steps):
            grads = jax.grad(loss_fn)(lookahead_params.fast)
            updates, state = tx.update(grads, state, lookahead_params)
            lookahead_params = optax.apply_updates(lookahead_params, updates)
        return {{"slow": lookahead_params.slow, "fast": lookahead_params.fast}}
    """
)


def _run(program: str, library: str) -> dict:
    namespace: dict = {}
    exec(compile(program.format(library=library), f"<{library} program>", "exec"), namespace)
    return namespace["run"]()


@pytest.mark.parametrize("program", [PROGRAM, LOOKAHEAD_PROGRAM], ids=["training", "lookahead"])
def test_optax_program_runs_unchanged_with_optax_numbers(program):
    pytest.importorskip("optax")
    expected = _run(program, "optax")
    actual = _run(program, "gradtx")
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for path, got, want in zip(
        jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(actual), jax.tree.leaves(expected)
    ):
        # Under jax_enable_x64 Optax evaluates a schedule at its int32 step count in float32, gradtx in
        # float64: the learning rates agree to float32 rounding, and so does everything downstream.
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=2e-6, atol=1e-12, err_msg=jax.tree_util.keystr(path[0])
        )
    if "losses" in expected:
        # The run trains: the check above compares a program that does something.
        assert float(jnp.mean(expected["losses"][-8:])) < 0.8 * float(jnp.mean(expected["losses"][:8]))
