"""The K-FAC benchmark's tagged digits CNN is the workload's network, and its report arithmetic."""

import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
try:
    import kfac_workloads
    import workloads
finally:
    sys.path.pop(0)


def test_tagged_loss_is_the_workload_loss_with_the_same_gradient():
    workload = workloads.digits_cnn()
    params = workload.init_params(jax.random.PRNGKey(1))
    batch = jax.tree.map(lambda x: x[0], workload.batches(1, 1))
    np.testing.assert_allclose(kfac_workloads.tagged_loss(params, batch), workload.loss(params, batch), rtol=1e-6)
    ours, theirs = jax.grad(kfac_workloads.tagged_loss)(params, batch), jax.grad(workload.loss)(params, batch)
    for name in params:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-7, err_msg=name)


def test_steps_to_target_uses_a_trailing_window_of_the_seed_mean():
    losses = np.stack([np.linspace(2.0, 0.0, 20), np.linspace(2.0, 0.0, 20) + 0.2])  # window of 2 steps
    mean = np.mean(losses, axis=0)
    target = (mean[9] + mean[10]) / 2
    assert kfac_workloads.steps_to(losses, target) == 11  # steps 10 and 11 (1-based) average to the target
    assert kfac_workloads.steps_to(losses, -1.0) is None
    assert kfac_workloads.final_loss(losses) == np.mean(losses[:, -2:])
