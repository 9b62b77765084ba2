"""Hyperparameter sweeps: configuration grids and samples, loss curves, one vmapped program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import softmax_problem as sp

import gradtx
from gradtx.sweep import config_grid, config_samples, loss_curve, sweep

NUM_STEPS = 25


def test_config_grid_is_the_cartesian_product():
    grid = config_grid(learning_rate=[0.1, 0.01], momentum=[0.0, 0.5, 0.9])
    assert grid["learning_rate"].dtype == np.float32
    np.testing.assert_allclose(grid["learning_rate"], np.float32([0.1, 0.1, 0.1, 0.01, 0.01, 0.01]))
    np.testing.assert_allclose(grid["momentum"], np.float32([0.0, 0.5, 0.9, 0.0, 0.5, 0.9]))
    with pytest.raises(ValueError, match="no values"):
        config_grid(learning_rate=[])


def test_config_samples_follow_their_distributions():
    samples = config_samples(
        jax.random.key(0), 2000, learning_rate=("log_uniform", 1e-4, 1e-1), momentum=("uniform", 0.5, 0.99),
        nesterov_weight=[0.0, 1.0],
    )
    lr = np.asarray(samples["learning_rate"])
    assert lr.shape == (2000,) and lr.dtype == np.float32
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    # Log-uniform: each decade holds about a third of the samples.
    assert abs(np.mean(lr < 1e-3) - 1 / 3) < 0.05 and abs(np.mean(lr > 1e-2) - 1 / 3) < 0.05
    assert 0.5 <= samples["momentum"].min() and samples["momentum"].max() <= 0.99
    assert set(np.unique(samples["nesterov_weight"]).tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="low > 0"):
        config_samples(jax.random.key(0), 4, learning_rate=("log_uniform", 0.0, 1.0))
    with pytest.raises(ValueError, match="distribution of 'momentum'"):
        config_samples(jax.random.key(0), 4, momentum=("normal", 0.0, 1.0))


def test_loss_curve_is_the_training_loop():
    optimizer = gradtx.sgd(0.5, momentum=0.9)
    params, losses = jax.jit(lambda p: loss_curve(optimizer, sp.loss, p, NUM_STEPS))(sp.initial_params())
    trajectory = sp.run_gradtx(optimizer, NUM_STEPS)
    before_each_step = jax.tree.map(lambda *p: jnp.stack(p), sp.initial_params(), *trajectory[:-1])
    np.testing.assert_allclose(losses, jax.jit(jax.vmap(sp.loss))(before_each_step), rtol=1e-12)
    np.testing.assert_allclose(params["w"], trajectory[-1]["w"], rtol=1e-12)

    # With batches: step t sees slice t. Plain SGD with learning rate 0 keeps the parameters,
    # so each loss is that of the initial parameters on its own batch.
    x_batches = jnp.reshape(sp.X, (4, 16, -1))
    batch_loss = lambda p, x: jnp.mean((x @ p["w"] + p["b"]) ** 2)
    _, batch_losses = loss_curve(gradtx.sgd(0.0), batch_loss, sp.initial_params(), 4, x_batches)
    expected = [batch_loss(sp.initial_params(), x) for x in x_batches]
    np.testing.assert_allclose(batch_losses, np.asarray(expected), rtol=1e-12)
    with pytest.raises(ValueError, match="leading axis of length num_steps=5"):
        loss_curve(gradtx.sgd(0.1), batch_loss, sp.initial_params(), 5, x_batches)


def train_softmax(config):
    optimizer = gradtx.sgd(config["learning_rate"], momentum=config["momentum"])
    return loss_curve(optimizer, sp.loss, sp.initial_params(), NUM_STEPS)[1]


run_one = jax.jit(train_softmax)


def test_sweep_equals_separate_runs_and_picks_the_best():
    traces = []

    def train_or_diverge(config):
        traces.append(1)
        # Stands in for a run that blows up: its curve is NaN, so it scores +inf and is never picked.
        return jnp.where(config["learning_rate"] > 1, jnp.nan, train_softmax(config))

    configs = config_grid(learning_rate=[0.05, 0.5, 80.0], momentum=[0.0, 0.9], dtype=np.float64)
    result = sweep(train_or_diverge, configs)
    assert len(traces) == 1  # one trace, one compiled program for all 6 configurations
    assert result.curves.shape == (6, NUM_STEPS)
    stable = configs["learning_rate"] < 1
    for k in np.flatnonzero(stable):
        single = run_one({name: values[k] for name, values in configs.items()})
        np.testing.assert_allclose(result.curves[k], single, rtol=1e-10)
    assert np.isinf(result.scores[~stable]).all()
    finals = np.where(stable, result.curves[:, -1], np.inf)
    assert result.best_index == int(np.argmin(finals))
    assert result.best_config == {name: float(values[result.best_index]) for name, values in configs.items()}

    sweep(train_or_diverge, config_grid(learning_rate=[0.1, 0.2], momentum=[0.0, 0.5, 0.9], dtype=np.float64))
    assert len(traces) == 1  # same function, same shapes: the compiled program is reused


def test_sweep_over_random_samples_in_chunks():
    samples = config_samples(
        jax.random.key(1), 5, dtype=jnp.float64, learning_rate=("log_uniform", 0.01, 1.0), momentum=[0.0, 0.9]
    )
    # Chunks of 2: two vmapped chunks and a remainder of 1, bounding memory to 2 runs at a time.
    result = sweep(train_softmax, samples, batch_size=2, score_fn=jnp.min)
    assert result.curves.shape == (5, NUM_STEPS)
    for k in range(5):
        single = run_one({name: values[k] for name, values in samples.items()})
        np.testing.assert_allclose(result.curves[k], single, rtol=1e-10)
    np.testing.assert_allclose(result.scores, result.curves.min(axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="one common length"):
        sweep(train_softmax, {"learning_rate": np.ones(3), "momentum": np.ones(2)})


def test_best_config_reads_as_the_grid_was_written():
    # float32 grid values are reported as the decimals typed in, not as their float64 expansions.
    configs = config_grid(learning_rate=[0.1, 0.3, 3e-4], momentum=[0.9])
    result = sweep(lambda config: jnp.stack([config["learning_rate"] - 0.1, config["momentum"]]) ** 2, configs)
    assert result.best_config == {"learning_rate": 0.1, "momentum": 0.9}
    assert repr(result.best_config) == "{'learning_rate': 0.1, 'momentum': 0.9}"
    assert all(type(value) is float for value in result.best_config.values())
    integers = sweep(lambda config: config["width"].astype(jnp.float32)[None], {"width": np.asarray([8, 4, 16])})
    assert integers.best_config == {"width": 4} and type(integers.best_config["width"]) is int


def test_sweep_scored_on_held_out_data():
    """Scoring by validation loss picks a weight decay; scoring by training loss picks none."""
    rng = np.random.default_rng(0)
    num_features, num_train, num_valid = 20, 12, 200  # more features than training rows: it overfits
    true_w = rng.normal(size=num_features) * (rng.random(num_features) < 0.3)

    def data(rows):
        x = rng.normal(size=(rows, num_features))
        return jnp.asarray(x), jnp.asarray(x @ true_w + 0.5 * rng.normal(size=rows))

    (x_train, y_train), (x_valid, y_valid) = data(num_train), data(num_valid)
    loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)  # noqa: E731

    def train(config):
        optimizer = gradtx.chain(
            gradtx.add_decayed_weights(config["weight_decay"]), gradtx.sgd(config["learning_rate"])
        )
        w, train_losses = loss_curve(optimizer, lambda w: loss(w, x_train, y_train), jnp.zeros(num_features), 300)
        return {"train": train_losses, "validation": loss(w, x_valid, y_valid)}

    configs = config_grid(learning_rate=[0.02, 0.05], weight_decay=[0.0, 0.03, 0.1, 0.3, 1.0])
    held_out = sweep(train, configs, score_fn=lambda out: out["validation"])
    on_train = sweep(train, configs, score_fn=lambda out: out["train"][-1])

    single = jax.jit(train)
    for k in range(len(configs["learning_rate"])):
        run = single({name: values[k] for name, values in configs.items()})
        np.testing.assert_allclose(held_out.scores[k], run["validation"], rtol=1e-10)
        np.testing.assert_allclose(held_out.curves["train"][k], run["train"], rtol=1e-10)
    assert held_out.best_index == int(np.argmin(held_out.curves["validation"]))
    assert held_out.best_config == {"learning_rate": 0.02, "weight_decay": 0.3}
    assert on_train.best_config["weight_decay"] == 0.0
