"""benchmarks/leaderboard.py in quick mode on the logistic regression workload.

The leaderboard's honesty checks: the sweep's chosen configuration is reproduced by an
independent Python loop of jitted steps, gradtx's run matches Optax's, the report is written. The
registry picks up optimizers as they land (``hasattr(gradtx, name)``). Timings are never asserted.
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    import leaderboard
finally:
    sys.path.pop(0)

WORKLOAD = "logistic_regression"


@pytest.fixture(scope="module")
def quick():
    return leaderboard.run(True, [WORKLOAD], ["adam", "momentum", "prodigy"], loops=True, timing_rounds=1, quiet=True)


def test_quick_run_tunes_reruns_and_compares(quick):
    entry = quick["workloads"][WORKLOAD]
    assert entry["failed"] == {}
    results = entry["optimizers"]
    assert set(results) == {"adam", "momentum", "prodigy"}
    budget = leaderboard.QUICK[WORKLOAD]
    adam = results["adam"]
    assert len(adam["grid"]["learning_rate"]) >= budget.lr_points  # more when the grid moved
    assert np.float32(adam["best_config"]["learning_rate"]) in np.float32(adam["grid"]["learning_rate"])
    assert len(adam["train_loss"]) == len(leaderboard.SEEDS) and np.all(np.isfinite(adam["train_loss"]))
    assert adam["state_bytes_per_param"] == pytest.approx(8.0, abs=0.1)  # mu and nu in float32, a tiny count
    assert results["prodigy"]["grid"] == {} and results["prodigy"]["best_config"] == {}
    assert set(results["momentum"]["best_config"]) == {"learning_rate", "momentum"} or budget.extra_values == 1
    for name, result in results.items():  # a convex problem: no chaotic drift, the curves agree throughout
        assert result["repro"]["agree_through"] == budget.tune_steps, name
        assert result["repro"]["score_difference_over_initial_loss"] < 1e-5, name
        assert result["optax"]["both_finite"], name
        assert result["optax"]["agree_through"] == budget.full_steps, name
        assert result["optax"]["max_relative_curve_difference"] < 1e-5, name
        assert result["fallbacks"] == [], name
    loops = quick["sweep_vs_loops"][WORKLOAD]
    assert loops["configs"] == 64 and loops["stable_runs"] > 0
    assert loops["max_curve_difference_stable_runs"] < 1e-4


def test_chosen_configuration_reproduced_by_an_independent_loop(quick):
    """A Python loop of jitted steps (no scan, no vmap) retraces the sweep's best run."""
    workload = leaderboard.make_workload(WORKLOAD)
    budget = leaderboard.QUICK[WORKLOAD]
    entry = leaderboard.registry(["adam"])[0]
    swept = leaderboard.tune(workload, entry, budget)
    assert swept.best_config == quick["workloads"][WORKLOAD]["optimizers"]["adam"]["best_config"]
    optimizer = gradtx.adam(**swept.best_config)

    @jax.jit
    def step(params, state, batch):
        value, grads = jax.value_and_grad(workload.loss)(params, batch)
        updates, state = optimizer.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, value

    params = workload.init_params(jax.random.PRNGKey(0))
    state, batches, losses = optimizer.init(params), workload.batches(0, budget.tune_steps), []
    for t in range(budget.tune_steps):
        params, state, value = step(params, state, jax.tree.map(lambda b: b[t], batches))
        losses.append(float(value))
    np.testing.assert_allclose(losses, swept.curves["train"][swept.best_index], rtol=1e-5)
    assert leaderboard.final_loss(np.asarray(losses)) == pytest.approx(swept.scores[swept.best_index], rel=1e-5)
    # ... and no other configuration of the grid beats it in the loop either.
    others = [k for k in range(len(swept.scores)) if np.isfinite(swept.scores[k]) and k != swept.best_index]
    assert all(swept.scores[k] > swept.scores[swept.best_index] for k in others)


def test_report_and_json_are_written(quick, tmp_path):
    leaderboard.write(json.loads(json.dumps(quick)), tmp_path, notes="A note.")
    text = (tmp_path / "LEADERBOARD.md").read_text()
    assert "## logistic_regression" in text and "| 1 |" in text and "A note." in text
    assert "Sweep vs loops" in text
    assert (tmp_path / f"leaderboard_{WORKLOAD}_curves.png").stat().st_size > 0
    assert (tmp_path / f"leaderboard_{WORKLOAD}_lr.png").stat().st_size > 0
    data = json.loads((tmp_path / "leaderboard_results.json").read_text())
    assert data["workloads"][WORKLOAD]["optimizers"]["adam"]["best_config"]


def test_registry_includes_new_optimizers_when_gradtx_has_them(monkeypatch):
    names = {entry.name for entry in leaderboard.registry()}
    assert {"sgd", "adam", "adamw", "lion", "prodigy", "muon", "adam_8bit"} <= names
    assert "shampoo" not in names or hasattr(gradtx, "shampoo")
    monkeypatch.setattr(gradtx, "shampoo", gradtx.adam, raising=False)
    entry = leaderboard.registry(["shampoo"])[0]
    assert entry.family == "preconditioned" and entry.learning_rate is not None
    with pytest.raises(ValueError, match="unknown or unavailable"):
        leaderboard.registry(["no_such_optimizer"])


def test_grid_moves_when_the_best_learning_rate_is_at_its_end():
    """SGD on the logistic regression wants a learning rate far above the grid centred on 0.1: the grid moves."""
    workload = leaderboard.make_workload(WORKLOAD)
    budget = leaderboard.QUICK[WORKLOAD]
    entry = leaderboard.registry(["sgd"])[0]
    first = leaderboard.configs_for(entry, budget)["learning_rate"]
    swept = leaderboard.tune(workload, entry, budget)
    assert len(swept.scores) > len(first)
    assert swept.best_config["learning_rate"] > first.max()
    assert np.isfinite(swept.scores[swept.best_index])


def test_agree_through_counts_the_leading_agreeing_steps():
    a = np.asarray([1.0, 2.0, 3.0, 4.0])
    assert leaderboard.agree_through(a, a) == 4
    assert leaderboard.agree_through(a, a + np.asarray([0, 0, 1e-3, 0])) == 2
    assert leaderboard.agree_through(a, np.asarray([1.0, np.nan, 3.0, 4.0])) == 1
    assert leaderboard._diverged(np.asarray([[2.0, 1.0, 0.5]])) is False
    assert leaderboard._diverged(np.asarray([[2.0, 1.0, 3.0]])) is True


def test_steps_to_target_and_final_loss():
    losses = np.tile(np.linspace(1.0, 0.0, 101), (3, 1))
    assert leaderboard.final_loss(losses).shape == (3,)
    assert leaderboard.steps_to_target(losses, 2.0) == 1
    assert leaderboard.steps_to_target(losses, -1.0) is None
    assert 50 <= leaderboard.steps_to_target(losses, 0.5) <= 56  # the trailing mean lags a little
    workload = leaderboard.make_workload(WORKLOAD)
    assert leaderboard.state_bytes_per_param(workload, gradtx.sgd(0.1)) < 0.01  # a step count only
    assert jnp.isinf(leaderboard._score({"train": jnp.asarray([1.0, jnp.nan])}))
