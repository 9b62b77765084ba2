"""snapshot, monitor and measure_with_ema: the same measurements as Optax over 100 steps, updates untouched."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import softmax_problem as sp

import gradtx
from gradtx.monitoring import MonitorState, SnapshotState, measure_with_ema, monitor, snapshot

STEPS = 100
CLIP = 0.08  # the norm after momentum crosses it back and forth


def build(lib, snapshot_fn, monitor_fn, ema_fn, norm):
    return lib.chain(
        lib.sgd(0.3, momentum=0.9),
        snapshot_fn("norm_before_clip", norm),
        monitor_fn({
            "norm": norm,
            "is_clipped_ema": ema_fn(lambda u: norm(u) > CLIP, decay=0.9),
            "norm_ema_no_debias": ema_fn(norm, 0.8, debias=False),
        }),
        lib.clip_by_global_norm(CLIP),
    )


def measurements(optimizer):
    params = sp.initial_params()
    state = optimizer.init(params)
    step = jax.jit(lambda p, s: optimizer.update(sp.grad(p), s, p))
    trajectory, records = [], []
    for _ in range(STEPS):
        updates, state = step(params, state)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        trajectory.append(params)
        records.append({"snapshot": float(state[1].measurement["norm_before_clip"]),
                        **{k: float(v) for k, v in state[2].measurements.items()}})
    return trajectory, records, state


def test_measurements_match_optax():
    ours_traj, ours, state = measurements(build(gradtx, snapshot, monitor, measure_with_ema, gradtx.tree_global_norm))
    theirs_traj, theirs, _ = measurements(
        build(optax, optax.snapshot, optax.monitor, optax.measure_with_ema, optax.tree.norm)
    )
    assert sp.max_relative_error(ours_traj, theirs_traj) < 1e-8
    for a, b in zip(ours, theirs):
        for key in b:
            assert abs(a[key] - b[key]) <= 1e-8 * abs(b[key]) + 1e-300, key
    flags = [r["is_clipped_ema"] for r in ours]
    assert min(flags) < 0.5 < max(flags)  # the frequency really moves
    assert isinstance(state[1], SnapshotState) and isinstance(state[2], MonitorState)
    assert MonitorState._fields == optax.MonitorState._fields


def test_updates_pass_unchanged_and_state_structure_is_fixed():
    transform = monitor({"norm": gradtx.tree_global_norm, "ema": measure_with_ema(gradtx.tree_global_norm, 0.9)})
    params = sp.initial_params()
    state = transform.init(params)
    grads = sp.grad(params)
    updates, new_state = transform.update(grads, state, params)
    assert all(np.array_equal(updates[k], grads[k]) for k in grads)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)  # so lax.scan can carry it

    def body(state, _):
        _, state = transform.update(grads, state, params)
        return state, state.measurements["ema"]

    _, emas = jax.lax.scan(body, state, None, length=5)
    np.testing.assert_allclose(emas, float(gradtx.tree_global_norm(grads)), rtol=1e-12)  # debiased EMA of a constant


def test_bad_input():
    with pytest.raises(TypeError, match="measure 'x'"):
        monitor({"x": 3})
    with pytest.raises(TypeError, match="measures"):
        monitor([gradtx.tree_global_norm])
    with pytest.raises(TypeError, match="measure_name"):
        snapshot(1, gradtx.tree_global_norm)
    with pytest.raises(ValueError, match="decay"):
        measure_with_ema(gradtx.tree_global_norm, 1.5)
    snap = snapshot("norm", gradtx.tree_global_norm)
    assert float(snap.init({"w": jnp.array([3.0, 4.0])}).measurement["norm"]) == 5.0
