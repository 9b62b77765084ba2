"""The benchmark workloads (``benchmarks/workloads.py``) keep their interface and train.

They judge low-bit states (``benchmarks/lowbit.py``) and are meant for reuse by other benchmarks,
so their interface is checked here: shapes of parameters and batches, determinism of the batch
stream, a few steps of AdamW lowering the loss, and the vmapped seeds equal separate runs.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
import pytest

import gradtx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    import workloads
finally:
    sys.path.pop(0)


@pytest.mark.parametrize("name", sorted(workloads.WORKLOADS))
def test_workload_interface_and_a_few_steps(name):
    workload = workloads.WORKLOADS[name]()
    assert workload.name == name and workload.steps > 0 and workload.learning_rate > 0
    params = workload.init_params(jax.random.PRNGKey(0))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
    batches = workload.batches(0, 4)
    assert all(np.shape(leaf)[0] == 4 for leaf in jax.tree.leaves(batches))
    for a, b in zip(jax.tree.leaves(batches), jax.tree.leaves(workload.batches(0, 4))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same stream for the same seed
    first = jax.tree.map(lambda x: x[0], batches)
    assert np.isfinite(float(workload.loss(params, first))) and np.isfinite(float(workload.eval_loss(params)))

    steps = 10
    together = workloads.train(workload, gradtx.adamw(workload.learning_rate), seeds=(0, 1), steps=steps)
    assert together.losses.shape == (2, steps) and together.eval_loss.shape == (2,)
    assert np.all(together.losses[:, -3:].mean(axis=1) < together.losses[:, :3].mean(axis=1))
    if name == "stdlib_char_lm":  # (one workload is enough: a second compilation of the CNN is slow)
        alone = workloads.train(workload, gradtx.adamw(workload.learning_rate), seeds=(1,), steps=steps)
        np.testing.assert_allclose(alone.losses[0], together.losses[1], rtol=1e-4)


def test_stdlib_text_is_fixed_ascii():
    text = workloads.stdlib_text()
    assert text.dtype == np.int32 and text.min() >= 0 and text.max() < 128
    assert len(text) > 200_000
    assert bytes(text[:200].astype(np.uint8)).decode().startswith('"""')
