"""K-FAC against a NumPy float64 transcription of Martens & Grosse (2015), and its exactness on
problems whose Fisher is exactly a Kronecker product.

Not compared with kfac-jax: kfac-jax 0.0.8 (``pip install --no-deps``, with its dependencies
immutabledict 4.3.1, dm-tree 0.1.10, distrax 0.1.9 and tensorflow-probability 0.25.0, the newest
on PyPI) does not import with jax 0.10.2. ``kfac_jax/_src/loss_functions.py`` imports distrax,
which imports ``tensorflow_probability.substrates.jax``, whose ``internal/backend/jax/ops.py``
reads ``jax.interpreters.xla.pytype_aval_mappings`` at import: ``AttributeError: module
'jax.interpreters.xla' has no attribute 'pytype_aval_mappings'`` (removed from jax). The exact
Newton-step test below is the reference-free check of the same dense-layer step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.preconditioners import KfacLayer, kfac, kfac_layers, kfac_statistics

D_IN, HIDDEN, D_OUT, BATCH, STEPS = 4, 5, 3, 16, 25


def mlp_loss(params, x, t):
    h = jnp.tanh(gradtx.kfac_dense(x, params["w1"], params["b1"]))
    y = gradtx.kfac_dense(h, params["w2"], params["b2"])
    return gradtx.kfac_squared_error(y, t) + 0.05 * jnp.sum(params["extra"] ** 2)


def mlp_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(D_IN, HIDDEN)) / 2,
        "b1": rng.normal(size=HIDDEN) / 4,
        "w2": rng.normal(size=(HIDDEN, D_OUT)) / 2,
        "b2": np.zeros(D_OUT),
        "extra": rng.normal(size=2),
    }
    true_w = rng.normal(size=(D_IN, D_OUT))
    batches = []
    for _ in range(STEPS):
        x = rng.normal(size=(BATCH, D_IN))
        batches.append((x, np.sin(x @ true_w) + 0.1 * rng.normal(size=(BATCH, D_OUT))))
    return params, batches


def numpy_kfac(params, batches, noises, *, lr, momentum, damping, decay, period, weight_decay):
    """Martens & Grosse (2015), Algorithm 2 with fixed alpha and mu, for tanh MLP + squared loss."""
    p = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    factors = {1: [0.0, 0.0], 2: [0.0, 0.0]}
    inverses = {}
    velocity = {k: np.zeros_like(v) for k, v in p.items()}
    trajectory = []
    for t, ((x, target), noise) in enumerate(zip(batches, noises), start=1):
        n = x.shape[0]
        s1 = x @ p["w1"] + p["b1"]
        h = np.tanh(s1)
        y = h @ p["w2"] + p["b2"]
        ds2 = (y - target) / n
        ds1 = (ds2 @ p["w2"].T) * (1 - h**2)
        grads = {"w1": x.T @ ds1, "b1": ds1.sum(0), "w2": h.T @ ds2, "b2": ds2.sum(0), "extra": 0.1 * p["extra"]}
        grads = {k: g + weight_decay * p[k] for k, g in grads.items()}
        # Pre-activation gradients at targets drawn from N(y, I): y - t~ = -noise.
        ds2_s = -noise / n
        ds1_s = (ds2_s @ p["w2"].T) * (1 - h**2)
        batch_factors = {
            1: (np.c_[x, np.ones(n)].T @ np.c_[x, np.ones(n)] / n, n * ds1_s.T @ ds1_s),
            2: (np.c_[h, np.ones(n)].T @ np.c_[h, np.ones(n)] / n, n * ds2_s.T @ ds2_s),
        }
        rho = min(1 - 1 / t, decay)
        for layer in (1, 2):
            for i in (0, 1):
                factors[layer][i] = rho * factors[layer][i] + (1 - rho) * batch_factors[layer][i]
        if (t - 1) % period == 0:
            for layer in (1, 2):
                a, g = factors[layer]
                pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
                inverses[layer] = (
                    np.linalg.inv(a + pi * np.sqrt(damping) * np.eye(len(a))),
                    np.linalg.inv(g + np.sqrt(damping) / pi * np.eye(len(g))),
                )
        step = {"extra": grads["extra"]}
        for layer in (1, 2):
            w, b = f"w{layer}", f"b{layer}"
            j = np.r_[grads[w], grads[b][None]]
            u = inverses[layer][0] @ j @ inverses[layer][1]
            step[w], step[b] = u[:-1], u[-1]
        for k in p:
            velocity[k] = momentum * velocity[k] + step[k]
            p[k] = p[k] - lr * velocity[k]
        trajectory.append({k: v.copy() for k, v in p.items()})
    return trajectory


def sampled_noise(key, shape):
    """The targets' noise that kfac_squared_error draws under kfac_statistics (documented derivation)."""
    _, subkey = jax.random.split(key)
    return np.asarray(jax.random.normal(subkey, shape, jnp.float64))


@pytest.mark.parametrize("period, decay, momentum", [(1, 0.95, 0.9), (3, 0.8, 0.5)])
def test_matches_numpy_transcription(period, decay, momentum):
    params, batches = mlp_problem()
    jparams = jax.tree.map(jnp.asarray, params)
    layers = kfac_layers(mlp_loss, jparams, *map(jnp.asarray, batches[0]))
    assert layers == (KfacLayer("dense", "['w1']", "['b1']"), KfacLayer("dense", "['w2']", "['b2']"))
    settings = dict(lr=0.3, momentum=momentum, damping=1e-2, decay=decay, period=period, weight_decay=1e-3)
    tx = kfac(settings["lr"], layers, momentum=momentum, damping=1e-2, factor_decay=decay,
              inverse_update_period=period, weight_decay=1e-3)
    statistics = kfac_statistics(mlp_loss)

    @jax.jit
    def step(params, state, x, t, key):
        _, grads, factors = statistics(params, x, t, key=key)
        updates, state = tx.update(grads, state, params, kfac_factors=factors)
        return gradtx.apply_updates(params, updates), state

    state, ours, noises = tx.init(jparams), [], []
    for i, (x, t) in enumerate(batches):
        key = jax.random.PRNGKey(100 + i)
        noises.append(sampled_noise(key, (BATCH, D_OUT)))
        jparams, state = step(jparams, state, jnp.asarray(x), jnp.asarray(t), key)
        ours.append(jax.tree.map(np.asarray, jparams))
    reference = numpy_kfac(params, batches, noises, **settings)
    for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
        for name in params:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-8, atol=1e-11, err_msg=f"step {i} {name}")
    assert np.max(np.abs(ours[-1]["w1"] - params["w1"])) > 0.1


def dense_layer_loss(params, x, t):
    return gradtx.kfac_squared_error(gradtx.kfac_dense(x, params["w"], params["b"]), t)


def conv_layer_loss(params, x, t):
    y = gradtx.kfac_conv(x, params["w"], params["b"], window_strides=(2, 1), padding="SAME")
    return gradtx.kfac_squared_error(y, t)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_exact_factors_give_the_newton_step(kind):
    """One K-FAC step with the exact Fisher, no damping, ``factor_decay=0`` (this batch's factors),
    no momentum and learning rate 1 is the Newton step of a linear layer under squared loss.

    Why exactly: ``s = W^T a`` is linear in ``W`` and the loss is ``0.5 ||s - t||^2`` averaged over
    the batch, so the Hessian (= Gauss-Newton = Fisher of the unit-variance Gaussian) is
    ``sum_t E[a_t a_t^T] (x) I``: the output-side factor is the identity for every example, hence
    independent of ``a``, and different locations of a convolution share no output coordinate.
    ``fisher="exact"`` computes ``G = I`` exactly (one backward pass per output coordinate), so
    ``A (x) G`` is the Hessian and the step lands on the least-squares solution. No whitening of
    the inputs is needed: the independence comes from the loss, not from the data.
    """
    rng = np.random.default_rng(3)
    if kind == "dense":
        x = rng.normal(size=(32, 5)) @ rng.normal(size=(5, 5))  # correlated inputs
        params = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
        t = rng.normal(size=(32, 3))
        loss = dense_layer_loss
    else:
        x = rng.normal(size=(6, 5, 4, 2))
        params = {"w": rng.normal(size=(3, 2, 2, 3)), "b": rng.normal(size=3)}
        t = rng.normal(size=(6, 3, 4, 3))
        loss = conv_layer_loss
    params = jax.tree.map(jnp.asarray, params)
    x, t = jnp.asarray(x), jnp.asarray(t)
    layers = kfac_layers(loss, params, x, t)
    tx = kfac(1.0, layers, momentum=0.0, damping=0.0, factor_decay=0.0, inverse_update_period=1)
    value, grads, factors = kfac_statistics(loss, fisher="exact")(params, x, t)
    np.testing.assert_allclose(factors["['w']"].gradients, np.eye(3), atol=1e-12)
    updates, _ = tx.update(grads, tx.init(params), params, kfac_factors=factors)
    stepped = gradtx.apply_updates(params, updates)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    hessian = jax.hessian(lambda v: loss(unravel(v), x, t))(flat)
    newton = flat - np.linalg.solve(hessian, jax.grad(lambda v: loss(unravel(v), x, t))(flat))
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(stepped)[0], newton, rtol=1e-9, atol=1e-10)
    # A least-squares problem: the Newton step is its minimizer, where the gradient vanishes.
    after = jax.grad(loss)(stepped, x, t)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(after)) < 1e-10
    assert float(loss(stepped, x, t)) < float(value)


def test_conv_factors_match_an_explicit_im2col():
    """KFC's factors (Grosse & Martens 2016): ``A = (1/N) sum_{n,t} a a^T`` over explicit patches with
    zero padding (rows ordered channel, kernel row, kernel column; the bias 1 last), and ``G`` from
    an explicit backward pass of the sampled loss."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 4, 2))
    params = {"w": jnp.asarray(rng.normal(size=(3, 3, 2, 4))), "b": jnp.asarray(rng.normal(size=4))}
    t = rng.normal(size=(3, 3, 4, 4))
    key = jax.random.PRNGKey(9)
    _, _, factors = kfac_statistics(conv_layer_loss)(params, jnp.asarray(x), jnp.asarray(t), key=key)

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = []
    for n in range(3):
        for i in range(0, 5, 2):  # stride 2 along rows, SAME: output rows 0, 2, 4
            for j in range(4):
                window = padded[n, i : i + 3, j : j + 3, :]  # (kh, kw, c)
                patches.append(np.r_[np.transpose(window, (2, 0, 1)).reshape(-1), 1.0])
    patches = np.array(patches)
    np.testing.assert_allclose(factors["['w']"].activations, patches.T @ patches / 3, rtol=1e-12)
    # Squared loss: d loss / d s at targets s + noise is -noise / N at every location (T = 12).
    noise = sampled_noise(key, (3, 3, 4, 4)).reshape(-1, 4)
    np.testing.assert_allclose(factors["['w']"].gradients, (3 / 12) * (noise / 3).T @ (noise / 3), rtol=1e-12)


def test_softmax_exact_fisher_is_the_gauss_newton_factor():
    """For a softmax output layer, ``fisher="exact"`` gives ``G = mean_n (diag p_n - p_n p_n^T)``,
    the expectation of ``Ds Ds^T`` over labels drawn from the model."""
    rng = np.random.default_rng(5)
    x, labels = jnp.asarray(rng.normal(size=(10, 4))), jnp.asarray(rng.integers(0, 3, 10))
    params = {"w": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.zeros(3)}

    def loss(params, x, labels):
        return gradtx.kfac_softmax_cross_entropy(gradtx.kfac_dense(x, params["w"], params["b"]), labels)

    _, grads, factors = kfac_statistics(loss, fisher="exact")(params, x, labels)
    p = np.asarray(jax.nn.softmax(x @ params["w"]))
    expected = np.mean([np.diag(q) - np.outer(q, q) for q in p], axis=0)
    np.testing.assert_allclose(factors["['w']"].gradients, expected, rtol=1e-10, atol=1e-14)
    _, _, empirical = kfac_statistics(loss, fisher="empirical")(params, x, labels)
    residual = p - np.eye(3)[np.asarray(labels)]
    np.testing.assert_allclose(empirical["['w']"].gradients, residual.T @ residual / 10, rtol=1e-10)
    np.testing.assert_allclose(grads["w"], np.asarray(x).T @ residual / 10, rtol=1e-10)


def test_untagged_leaves_use_the_fallback_and_compositions_work(tmp_path):
    params, batches = mlp_problem(seed=1)
    params = jax.tree.map(jnp.asarray, params)
    x, t = map(jnp.asarray, batches[0])
    layers = kfac_layers(mlp_loss, params, x, t)
    _, grads, factors = kfac_statistics(mlp_loss, fisher="exact")(params, x, t)
    tx = gradtx.preconditioners.scale_by_kfac(layers, fallback=gradtx.scale(-3.0))
    updates, _ = tx.update(grads, tx.init(params), params, kfac_factors=factors)
    np.testing.assert_allclose(updates["extra"], -3.0 * grads["extra"])
    assert not np.allclose(updates["w1"], grads["w1"])

    chained = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.inject_hyperparams(kfac)(0.1, layers))
    state = chained.init(params)
    eager, _ = chained.update(grads, state, params, kfac_factors=factors)
    jitted, new_state = jax.jit(chained.update)(grads, state, params, kfac_factors=factors)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert float(new_state[1].hyperparams["learning_rate"]) == pytest.approx(0.1)
    gradtx.save_state(tmp_path / "state.npz", new_state)
    restored = gradtx.load_state(tmp_path / "state.npz", state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(new_state), strict=True):
        np.testing.assert_array_equal(a, b)

    batched = jax.tree.map(lambda g: jnp.stack([g, 2 * g]), grads)
    plain = kfac(0.1, layers)
    vmapped, _ = jax.vmap(lambda g: plain.update(g, plain.init(params), params, kfac_factors=factors))(batched)
    single, _ = plain.update(jax.tree.map(lambda g: 2 * g, grads), plain.init(params), params, kfac_factors=factors)
    for a, b in zip(jax.tree.leaves(vmapped), jax.tree.leaves(single)):
        np.testing.assert_allclose(a[1], b, rtol=1e-10, atol=1e-14)


def test_errors_name_the_problem():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    layers = (KfacLayer("dense", "['w']", "['b']"),)
    tx = kfac(0.1, layers)
    with pytest.raises(ValueError, match="kfac_factors"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="damping"):
        kfac(0.1, layers, damping=-1.0)
    with pytest.raises(ValueError, match="inverse_update_period"):
        kfac(0.1, layers, inverse_update_period=0)
    with pytest.raises(ValueError, match="factor_decay"):
        kfac(0.1, layers, factor_decay=1.0)
    with pytest.raises(ValueError, match="not in the params"):
        kfac(0.1, (KfacLayer("dense", "['v']"),)).init(params)
    with pytest.raises(ValueError, match="fisher"):
        kfac_statistics(dense_layer_loss, fisher="true")

    def copied(params, x, t):
        return gradtx.kfac_squared_error(gradtx.kfac_dense(x, params["w"] * 1.0), t)

    with pytest.raises(ValueError, match="not a leaf of the params"):
        kfac_layers(copied, params, jnp.ones((4, 3)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="key"):
        kfac_statistics(dense_layer_loss)(params, jnp.ones((4, 3)), jnp.ones((4, 2)))
