"""Momentum on quadratics: measured contraction rates against Goh's formulas, the descent lemma,
and the YellowFin-style tuner on a noisy quadratic and a small MLP.

Heavy-ball and gradient descent are written out here (the first-order modules are separate)."""

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.second_order import momentum_autotuner, optimal_momentum
from gradtx.second_order.momentum_tuning import _variance_limited_root

F64 = jnp.float64


def _quadratic(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return jnp.asarray(q @ np.diag(eigenvalues) @ q.T), jnp.asarray(rng.normal(size=n), F64)


def _heavy_ball_error_norms(a, x0, step, momentum, num_steps):
    """||w_t|| for w+ = w - step A w + momentum (w - w_prev) on f = w.A w / 2 (optimum 0)."""

    def body(carry, _):
        w, previous = carry
        new = w - step * (a @ w) + momentum * (w - previous)
        return (new, w), jnp.linalg.norm(new)

    return jax.lax.scan(body, (x0, x0), None, length=num_steps)[1]


def _measured_rate(norms, start, stop):
    return (norms[stop] / norms[start]) ** (1.0 / (stop - start))


def test_optimal_momentum_formula():
    step, momentum = optimal_momentum(1.0, 100.0)
    assert step == pytest.approx((2 / 11) ** 2, rel=1e-15)
    assert momentum == pytest.approx((9 / 11) ** 2, rel=1e-15)
    array_step, array_momentum = optimal_momentum(jnp.asarray(4.0, F64), jnp.asarray(36.0, F64))
    np.testing.assert_allclose([float(array_step), float(array_momentum)], [1 / 16, 1 / 4], rtol=1e-15)
    with pytest.raises(ValueError, match="lambda_min"):
        optimal_momentum(0.0, 1.0)
    with pytest.raises(ValueError, match="lambda_max"):
        optimal_momentum(2.0, 1.0)


def test_contraction_rates_match_theory():
    """kappa = 100, spectrum [1, 100] with 20 eigenvalues: measured per-step contraction of ||w_t||
    over a late window against theory, within 2% in the rate and in its logarithm.

    * gradient descent, step 1/L:          1 - 1/kappa
    * gradient descent, step 2/(l1 + ln):  (kappa - 1)/(kappa + 1)
    * heavy ball with optimal_momentum:    (sqrt(kappa) - 1)/(sqrt(kappa) + 1)
    """
    kappa = 100.0
    a, x0 = _quadratic(np.linspace(1.0, kappa, 20))
    step, momentum = optimal_momentum(1.0, kappa)

    @jax.jit
    def all_runs(x0):
        return (
            _heavy_ball_error_norms(a, x0, 1 / kappa, 0.0, 1600),
            _heavy_ball_error_norms(a, x0, 2 / (1 + kappa), 0.0, 1600),
            _heavy_ball_error_norms(a, x0, step, momentum, 1600),
        )

    gd_lipschitz, gd_optimal, heavy_ball = (np.asarray(r) for r in all_runs(x0))
    cases = [
        (_measured_rate(gd_lipschitz, 600, 1500), 1 - 1 / kappa),
        (_measured_rate(gd_optimal, 600, 1500), (kappa - 1) / (kappa + 1)),
        (_measured_rate(heavy_ball, 300, 1000), (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)),
    ]
    for measured, predicted in cases:
        assert measured == pytest.approx(predicted, rel=0.02)
        assert np.log(measured) == pytest.approx(np.log(predicted), rel=0.02)
    # The pairing of step 1/L with (kappa - 1)/(kappa + 1) does not hold: that rate needs
    # the step 2/(l1 + ln). With step 1/L the rate is 1 - 1/kappa, a log-rate twice as slow.
    assert np.log(cases[0][0]) / np.log((kappa - 1) / (kappa + 1)) == pytest.approx(0.5, rel=0.02)


def test_descent_lemma_on_logistic_regression(logistic_problem, run_transformation):
    """With L = lambda_max(X^T X) / (4 n) + l2, a global bound on the Hessian, the step 1/L gives
    f(w+) <= f(w) - ||grad||^2 / (2L) at every step; on f = L x^2 / 2 it is an equality."""
    problem = logistic_problem
    features = np.asarray(problem.features)
    design = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    lipschitz = np.linalg.eigvalsh(design.T @ design / len(design)).max() / 4 + problem.l2
    grad = jax.grad(problem.loss)

    @jax.jit
    def run(params):
        def body(params, _):
            g = grad(params)
            new = jax.tree.map(lambda w, d: w - d / lipschitz, params, g)
            squared_norm = sum(jnp.sum(d**2) for d in jax.tree.leaves(g))
            return new, (problem.loss(params) - problem.loss(new), squared_norm)

        return jax.lax.scan(body, params, None, length=60)[1]

    decrease, squared_norm = map(np.asarray, run(problem.initial_params()))
    assert np.all(decrease >= squared_norm / (2 * lipschitz) * (1 - 1e-12))
    assert squared_norm[-1] < squared_norm[0]
    # Tightness: f = L x^2 / 2, one step x -> x - (L x) / L = 0 removes exactly g^2 / (2L).
    x, curvature = 3.0, 7.0
    assert 0.5 * curvature * x**2 == pytest.approx((curvature * x) ** 2 / (2 * curvature))


def test_variance_limited_root_solves_the_cubic():
    """The closed form against a 50-digit root of (1 - x)^3 = p x (Newton's method in
    ``decimal``), for p over 21 decades: a relative error of a few ulps everywhere (issue 19:
    ``1 - z`` lost up to 8e-4 relative at p = 1e15)."""
    decimal.getcontext().prec = 50
    p = np.concatenate([np.geomspace(1e-6, 1e15, 85), [0.25, 0.2500001, 0.3, 1e15 * (1 + 2**-52)]])

    def reference(p_value):
        p_exact = decimal.Decimal(float(p_value))
        x = decimal.Decimal(1) / (1 + p_exact)  # inside (0, 1); Newton from here converges
        for _ in range(200):
            residual = (1 - x) ** 3 - p_exact * x
            x -= residual / (-3 * (1 - x) ** 2 - p_exact)
        return float(x)

    expected = np.array([reference(value) for value in p])
    x = np.asarray(jax.jit(_variance_limited_root)(jnp.asarray(np.concatenate([p, [np.inf, 0.0]]), F64)))
    ulps = np.abs(x[:-2] - expected) / np.spacing(expected)
    assert ulps.max() <= 3, (p[np.argmax(ulps)], ulps.max())
    assert x[-2] == 0.0 and x[-1] == 1.0  # p = inf: no noise, x = 0; p = 0: x = 1


def test_tuner_reaches_goh_optimum_on_noisy_quadratic():
    """Spectrum geomspace(1, 100) in 10 dimensions, gradient noise N(0, 0.01^2 I), started at
    (step, momentum) = (1e-4, 0), whose heavy-ball rate is 1 - 1e-4. After 2000 steps the tuned pair
    is within 2% of Goh's optimum and its rate within 1% of (sqrt(kappa) - 1)/(sqrt(kappa) + 1)."""
    eigenvalues = np.geomspace(1.0, 100.0, 10)
    a, _ = _quadratic(eigenvalues, seed=1)
    x0 = jnp.asarray(np.random.default_rng(2).normal(size=10) * 10, F64)
    noise = 1e-2
    beta = 0.99
    tx = momentum_autotuner(initial_learning_rate=1e-4, initial_momentum=0.0, beta=beta)

    def loss(x):
        return 0.5 * x @ a @ x

    @jax.jit
    def run(x0, key):
        def body(carry, key):
            x, state = carry
            g = a @ x + noise * jax.random.normal(key, x.shape, F64)
            updates, state = tx.update(g, state, x, value_fn=loss)
            x = x + updates
            return (x, state), (loss(x), state.learning_rate, state.momentum)

        return jax.lax.scan(body, (x0, tx.init(x0)), jax.random.split(key, 2000))[1]

    losses, steps, momenta = map(np.asarray, run(x0, jax.random.PRNGKey(3)))

    def heavy_ball_rate(step, momentum):
        b = 1 + momentum - step * eigenvalues
        discriminant = b**2 - 4 * momentum
        roots = np.where(discriminant >= 0, (np.abs(b) + np.sqrt(np.maximum(discriminant, 0))) / 2, np.sqrt(momentum))
        return roots.max()

    kappa = eigenvalues[-1] / eigenvalues[0]
    goh_step, goh_momentum = optimal_momentum(eigenvalues[0], eigenvalues[-1])
    assert heavy_ball_rate(1e-4, 0.0) > 0.999
    assert steps[-1] == pytest.approx(goh_step, rel=0.02)
    assert momenta[-1] == pytest.approx(goh_momentum, rel=0.02)
    assert heavy_ball_rate(steps[-1], momenta[-1]) == pytest.approx(
        (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1), rel=0.01
    )
    assert losses[-200:].mean() < 1e-6 * losses[0]  # down to the noise floor
    assert np.isfinite(losses).all()


def test_tuner_matches_hand_tuned_momentum_on_small_mlp():
    """A 2-16-16-1 tanh MLP regressing sin(x) cos(y) on 64 points, full batch, 500 steps, from 4
    random initializations. Hand-tuned heavy ball: the (step, momentum) from the grid
    {0.01, 0.03, 0.1, 0.3, 1, 3} x {0, 0.5, 0.9, 0.95} with the lowest geometric-mean final loss
    over the 4 runs. The tuner (started at (1e-4, 0), beta = 0.99, nothing else set) must reach
    a geometric-mean final loss at least as low.

    The weights are one flat vector sliced inside the loss: a single leaf keeps the compiled
    program several times smaller than six leaves would."""
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-2, 2, size=(64, 2))
    targets = jnp.asarray(np.sin(inputs[:, 0]) * np.cos(inputs[:, 1]), F64)
    inputs = jnp.asarray(inputs, F64)
    shapes = [(2, 16), (16,), (16, 16), (16,), (16, 1), (1,)]
    scales = [1 / np.sqrt(2), 0.0, 0.25, 0.0, 0.25, 0.0]
    offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
    initializations = jnp.asarray(
        [
            np.concatenate([scale * seed_rng.normal(size=shape).ravel() for shape, scale in zip(shapes, scales)])
            for seed_rng in map(np.random.default_rng, range(100, 104))
        ],
        F64,
    )

    def loss(x):
        w1, b1, w2, b2, w3, b3 = (x[a:b].reshape(shape) for a, b, shape in zip(offsets, offsets[1:], shapes))
        hidden = jnp.tanh(jnp.tanh(inputs @ w1 + b1) @ w2 + b2)
        return 0.5 * jnp.mean(((hidden @ w3 + b3)[:, 0] - targets) ** 2)

    grad = jax.grad(loss)
    num_steps = 500

    def heavy_ball(params, step, momentum):
        def body(carry, _):
            p, velocity = carry
            velocity = momentum * velocity - step * grad(p)
            return (p + velocity, velocity), None

        return loss(jax.lax.scan(body, (params, jnp.zeros_like(params)), None, length=num_steps)[0][0])

    tx = momentum_autotuner(beta=0.99)

    def tuned(params):
        def body(carry, _):
            p, state = carry
            updates, state = tx.update(grad(p), state, p, value_fn=loss)
            return (p + updates, state), None

        return loss(jax.lax.scan(body, (params, tx.init(params)), None, length=num_steps)[0][0])

    grid_steps, grid_momenta = np.meshgrid([0.01, 0.03, 0.1, 0.3, 1.0, 3.0], [0.0, 0.5, 0.9, 0.95])

    @jax.jit
    def run(initializations, steps, momenta):
        grid = jax.vmap(lambda p: jax.vmap(lambda a, m: heavy_ball(p, a, m))(steps, momenta))(initializations)
        return grid, jax.lax.map(tuned, initializations)

    grid_losses, tuned_losses = map(
        np.asarray, run(initializations, jnp.asarray(grid_steps.ravel(), F64), jnp.asarray(grid_momenta.ravel(), F64))
    )
    log_grid = np.log(np.where(np.isfinite(grid_losses), grid_losses, np.inf))  # runs x settings
    hand_tuned = np.exp(log_grid.mean(axis=0).min())
    tuner = np.exp(np.log(tuned_losses).mean())
    assert np.isfinite(tuned_losses).all()
    assert tuner <= hand_tuned, (tuner, hand_tuned)


def _yellowfin_reference(gradients, beta, window, alpha0, mu0):
    """The paper's Algorithms 1-4 with h_t = ||g_t||^2, transcribed loop by loop in NumPy."""
    h_max = h_min = g_avg = g2_avg = norm_avg = h_avg = dist = 0.0
    alpha, mu, velocity = alpha0, mu0, np.zeros_like(gradients[0])
    hs, out = [], []
    for t, g in enumerate(gradients, start=1):
        debias = 1 - beta**t
        h = float(g @ g)
        hs.append(h)
        recent = hs[-window:]
        h_max = beta * h_max + (1 - beta) * max(recent)
        h_min = beta * h_min + (1 - beta) * min(recent)
        g_avg = beta * g_avg + (1 - beta) * g
        g2_avg = beta * g2_avg + (1 - beta) * g * g
        variance = float(np.sum(g2_avg / debias - (g_avg / debias) ** 2))
        norm_avg = beta * norm_avg + (1 - beta) * np.sqrt(h)
        h_avg = beta * h_avg + (1 - beta) * h
        dist = beta * dist + (1 - beta) * (norm_avg / debias) / (h_avg / debias)
        hi, lo, d = h_max / debias, h_min / debias, dist / debias
        p = (d * lo) ** 2 / (2 * variance)
        roots = np.roots([-1.0, 3.0, -3.0 - p, 1.0])  # (1 - x)^3 - p x = 0
        x = float(np.real(roots[np.argmin(np.abs(roots.imag))]))
        sqrt_mu = max(x, (np.sqrt(hi / lo) - 1) / (np.sqrt(hi / lo) + 1))
        target_mu, target_alpha = sqrt_mu**2, (1 - sqrt_mu) ** 2 / lo
        mu = beta * mu + (1 - beta) * target_mu
        alpha = min(beta * alpha + (1 - beta) * target_alpha, target_alpha * (1 + mu) / (1 + target_mu))
        velocity = -alpha * g + mu * velocity
        out.append((alpha, mu, velocity.copy()))
    return out


def test_gradient_norm_mode_follows_the_papers_algorithm():
    """``curvature="gradient_norm"`` against a loop-by-loop NumPy transcription of YellowFin's
    Algorithms 1-4 (plus this module's stability cap on the step) for 30 steps."""
    rng = np.random.default_rng(4)
    gradients = rng.normal(size=(30, 5)) * np.linspace(3.0, 0.5, 30)[:, None]
    tx = momentum_autotuner(initial_learning_rate=0.01, beta=0.9, curvature="gradient_norm", curvature_window=4)

    @jax.jit
    def run(gradients):
        def body(state, g):
            updates, state = tx.update(g, state)
            return state, (state.learning_rate, state.momentum, updates)

        return jax.lax.scan(body, tx.init(jnp.zeros(5, F64)), gradients)[1]

    alphas, mus, updates = map(np.asarray, run(jnp.asarray(gradients, F64)))
    reference = _yellowfin_reference(gradients, 0.9, 4, 0.01, 0.0)
    np.testing.assert_allclose(alphas, [r[0] for r in reference], rtol=1e-9)
    np.testing.assert_allclose(mus, [r[1] for r in reference], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(updates, [r[2] for r in reference], rtol=1e-8, atol=1e-14)


def test_tuner_validates_and_needs_value_fn_in_hessian_mode():
    params = jnp.ones(2, F64)
    tx = momentum_autotuner()
    with pytest.raises(TypeError, match="value_fn"):
        tx.update(params, None, params)  # checked before the state is read
    with pytest.raises(ValueError, match="beta"):
        momentum_autotuner(beta=1.0)
    with pytest.raises(ValueError, match="curvature"):
        momentum_autotuner(curvature="secant")
    with pytest.raises(ValueError, match="max_condition_number"):
        momentum_autotuner(max_condition_number=1.0)
