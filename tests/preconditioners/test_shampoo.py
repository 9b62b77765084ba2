"""Shampoo against a NumPy float64 transcription of Gupta et al. 2018 with the choices of Anil et
al. 2020 (blocks, grafting, momentum, delayed start, roots every k steps), against
``pytorch_optimizer.Shampoo``, and the Newton step on a quadratic with Kronecker curvature."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.preconditioners import _matrix_roots

RNG = np.random.default_rng(7)
SHAPES = {"w": (4, 3), "t": (2, 3, 4), "b": (5,)}
INIT = {k: RNG.normal(size=s) for k, s in SHAPES.items()}
TARGET = {k: RNG.normal(size=s) for k, s in SHAPES.items()}


def gradient(params: dict, step: int) -> dict:
    """Gradient of sum(cos(c w) T) + |w|^2 / 2 with c changing over the steps (a non-quadratic loss)."""
    c = 1.0 + 0.1 * step
    return {k: -c * np.sin(c * np.asarray(p)) * TARGET[k] + np.asarray(p) for k, p in params.items()}


# ------------------------------------------------------------------------------------------------
# The transcription: every block a slice of the (merged) leaf, every factor its own matrix.


def np_merge(shape, max_dim):
    merged, product = [], 1
    for n in shape:
        if product * n <= max_dim:
            product *= n
        else:
            if product > 1:
                merged.append(product)
            product = n
    if product > 1:
        merged.append(product)
    return tuple(merged)


def np_inverse_root(matrix, p, eps, relative):
    w, v = np.linalg.eigh(matrix)
    w = np.maximum(w, 0.0)
    ridge = eps * max(w[-1], 1e-16) if relative else eps
    return (v * (w + ridge) ** (-1.0 / p)) @ v.T


def np_ranges(n, block_size, blocked):
    if not blocked or n <= block_size:
        return [(0, n)]
    pieces = math.ceil(n / block_size)
    size = math.ceil(n / pieces)
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class NumpyShampoo:
    def __init__(self, lr, block_size=1024, b1=0.9, b2=0.999, diagonal_epsilon=1e-10, matrix_epsilon=1e-6,
                 weight_decay=0.0, start_preconditioning_step=5, preconditioning_compute_steps=1, graft_type="sgd",
                 nesterov=True, exponent_override=0, moving_average_for_momentum=False,
                 skip_preconditioning_dim_size_gt=4096, skip_preconditioning_rank_lt=2,
                 best_effort_shape_interpretation=True, merge_small_dims_block_size=4096,
                 relative_matrix_epsilon=True):
        self.__dict__.update(locals())
        self.leaves = {}

    def init(self, params):
        for k, p in params.items():
            merged = np_merge(p.shape, self.merge_small_dims_block_size) if self.best_effort_shape_interpretation \
                else p.shape
            used = [n <= self.skip_preconditioning_dim_size_gt for n in merged]
            shampoo = p.ndim >= self.skip_preconditioning_rank_lt and any(used)
            ranges = [np_ranges(n, self.block_size, u) for n, u in zip(merged, used)]
            blocks = list(itertools.product(*ranges)) if shampoo else []
            stats = {b: [self.matrix_epsilon * np.eye(e - s) if u else None for (s, e), u in zip(b, used)]
                     for b in blocks}
            roots = {b: [np.eye(e - s) if u else None for (s, e), u in zip(b, used)] for b in blocks}
            self.leaves[k] = dict(merged=merged, used=used, blocks=blocks, stats=stats, roots=roots,
                                  p=self.exponent_override or 2 * sum(used), mu=np.zeros_like(p),
                                  graft_mu=np.zeros_like(p), nu=np.zeros_like(p))
        self.t = 0

    def update(self, grads, params):
        t, out = self.t, {}
        w2 = 1.0 if self.b2 == 1 else 1 - self.b2
        for k, g in grads.items():
            leaf = self.leaves[k]
            # Grafting direction.
            if self.graft_type == "adagrad":
                leaf["nu"] = leaf["nu"] + g**2
                graft = g / (np.sqrt(leaf["nu"]) + self.diagonal_epsilon)
            elif self.graft_type == "rmsprop":
                leaf["nu"] = self.b2 * leaf["nu"] + w2 * g**2
                graft = g / (np.sqrt(leaf["nu"]) + self.diagonal_epsilon)
            elif self.graft_type == "adam":
                leaf["nu"] = self.b2 * leaf["nu"] + (1 - self.b2) * g**2
                graft = g / (np.sqrt(leaf["nu"] / (1 - self.b2 ** (t + 1))) + self.diagonal_epsilon)
            else:
                graft = g
            if leaf["blocks"]:
                gm = g.reshape(leaf["merged"])
                pre = np.zeros_like(gm)
                for b in leaf["blocks"]:
                    index = tuple(slice(s, e) for s, e in b)
                    x = gm[index]
                    y = x
                    for i, used in enumerate(leaf["used"]):
                        if not used:
                            continue
                        unfolded = np.moveaxis(x, i, 0).reshape(x.shape[i], -1)
                        leaf["stats"][b][i] = self.b2 * leaf["stats"][b][i] + w2 * unfolded @ unfolded.T
                        if t % self.preconditioning_compute_steps == 0:
                            leaf["roots"][b][i] = np_inverse_root(
                                leaf["stats"][b][i], leaf["p"], self.matrix_epsilon, self.relative_matrix_epsilon)
                        y = np.moveaxis(np.tensordot(leaf["roots"][b][i], y, axes=(1, i)), 0, i)
                    pre[index] = y
                pre = pre.reshape(g.shape)
                if self.graft_type != "none":
                    pre = pre * np.linalg.norm(graft) / (np.linalg.norm(pre) + 1e-16)
            else:
                pre = graft
            if self.weight_decay:
                pre, graft = pre + self.weight_decay * params[k], graft + self.weight_decay * params[k]
            w = 1 - self.b1 if self.moving_average_for_momentum else 1.0
            leaf["mu"] = self.b1 * leaf["mu"] + w * pre
            leaf["graft_mu"] = self.b1 * leaf["graft_mu"] + w * graft
            run = t >= self.start_preconditioning_step
            momentum, current = (leaf["mu"], pre) if run else (leaf["graft_mu"], graft)
            out[k] = w * current + self.b1 * momentum if self.nesterov else momentum
        self.t += 1
        return {k: -self.lr * u for k, u in out.items()}


CASES = {
    "adam_graft_nesterov": dict(graft_type="adam", start_preconditioning_step=2,
                                best_effort_shape_interpretation=False),
    "blocks_adagrad_every_3": dict(block_size=2, b2=1.0, graft_type="adagrad", preconditioning_compute_steps=3,
                                   best_effort_shape_interpretation=False, start_preconditioning_step=0),
    "rmsprop_exponent_decay": dict(graft_type="rmsprop", exponent_override=2, moving_average_for_momentum=True,
                                   nesterov=False, weight_decay=0.01, relative_matrix_epsilon=False, b2=0.9,
                                   matrix_epsilon=1e-4, best_effort_shape_interpretation=False),
    "merge_cap_vectors_blocks": dict(merge_small_dims_block_size=6, skip_preconditioning_rank_lt=1,
                                     skip_preconditioning_dim_size_gt=5, block_size=3, preconditioning_compute_steps=2,
                                     graft_type="sgd", b1=0.5),
    "no_graft_plain": dict(graft_type="none", b1=0.0, b2=1.0, start_preconditioning_step=0,
                           best_effort_shape_interpretation=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_numpy_transcription_for_20_steps(case):
    options = CASES[case]
    lr = 0.05
    tx = gradtx.shampoo(lr, root_method="eigh", **options)
    reference = NumpyShampoo(lr, **options)
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    ref_params = {k: v.copy() for k, v in INIT.items()}
    state = tx.init(params)
    reference.init(ref_params)
    step = jax.jit(tx.update)
    for t in range(20):
        updates, state = step({k: jnp.asarray(v) for k, v in gradient(params, t).items()}, state, params)
        params = gradtx.apply_updates(params, updates)
        ref_updates = reference.update(gradient(ref_params, t), ref_params)
        ref_params = {k: ref_params[k] + ref_updates[k] for k in ref_params}
        for k in params:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-8, atol=1e-10, err_msg=f"{case} {k} {t}")


def test_blocks_and_factor_shapes_follow_the_partition():
    tx = gradtx.scale_by_shampoo(block_size=3, merge_small_dims_block_size=6, skip_preconditioning_dim_size_gt=8)
    state = tx.init({"w": jnp.ones((7, 4)), "t": jnp.ones((2, 3, 4)), "b": jnp.ones(5), "big": jnp.ones((9, 2))})
    shapes = jax.tree.map(lambda x: x.shape, state.statistics)
    # 7 -> 3 blocks of 3 (the last padded by 2), 4 -> 2 blocks of 2: 6 blocks, factors 3x3 and 2x2.
    assert shapes["w"] == ((6, 3, 3), (6, 2, 2))
    assert shapes["t"] == ((4, 3, 3), (4, 2, 2))  # merged to (6, 4)
    assert shapes["b"] == ()  # a vector takes the grafting step
    assert shapes["big"] == (None, (1, 2, 2))  # 9 > 8 keeps the identity
    assert state.preconditioners["big"][0] is None and state.diagonal_statistics is None


def test_matches_pytorch_optimizer_shampoo_in_float64():
    """``pytorch_optimizer.Shampoo`` is Gupta et al.'s plain algorithm: L_0 = matrix_eps I, L += G G^T,
    G <- L^(-1/2k) ... per dimension, no grafting, no ridge at the root. gradtx starts at
    epsilon I and adds epsilon I as a ridge, so torch's matrix_eps is twice ours."""
    torch = pytest.importorskip("torch")
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    eps, lr = 1e-3, 0.05
    tx = gradtx.shampoo(lr, b1=0.0, b2=1.0, graft_type="none", start_preconditioning_step=0, matrix_epsilon=eps,
                        root_method="eigh",
                        relative_matrix_epsilon=False, skip_preconditioning_rank_lt=1,
                        best_effort_shape_interpretation=False)
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    state = tx.init(params)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in INIT.items()}
    optimizer = pytorch_optimizer.Shampoo(list(tensors.values()), lr=lr, matrix_eps=2 * eps)
    step = jax.jit(tx.update)
    for t in range(25):
        updates, state = step({k: jnp.asarray(v) for k, v in gradient(params, t).items()}, state, params)
        params = gradtx.apply_updates(params, updates)
        grads = gradient({k: v.detach().numpy() for k, v in tensors.items()}, t)
        for k, v in tensors.items():
            v.grad = torch.tensor(grads[k])
        optimizer.step()
        for k in params:
            np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-8, atol=1e-10)


def test_full_matrix_step_is_newtons_on_a_kronecker_quadratic():
    """f(X) = 0.5 tr((X - X*)^T A (X - X*) B) has gradient A (X - X*) B and Hessian B kron A.

    Gradients at X* + E_jk (every matrix unit) sum to the statistics L = tr(B^2) A^2 and
    R = tr(A^2) B^2 (the roots are computed at the last of them, and not again at the Newton
    step, whose own gradient would otherwise join the statistics). With exponent 2
    (L^(-1/2) G R^(-1/2), not the default 4) the step on any G is
    A^(-1) G B^(-1) / sqrt(tr(A^2) tr(B^2)): Newton's direction, and with the learning rate
    sqrt(tr(A^2) tr(B^2)) one step lands on X*.
    """
    m, n = 4, 3
    rng = np.random.default_rng(3)
    qa, qb = np.linalg.qr(rng.normal(size=(m, m)))[0], np.linalg.qr(rng.normal(size=(n, n)))[0]
    a = qa @ np.diag([1.0, 2.0, 5.0, 10.0]) @ qa.T
    b = qb @ np.diag([0.5, 1.0, 3.0]) @ qb.T
    optimum = rng.normal(size=(m, n))
    grad = lambda x: a @ (x - optimum) @ b  # noqa: E731
    scale = np.sqrt(np.trace(a @ a) * np.trace(b @ b))
    points = [optimum + np.outer(np.eye(m)[j], np.eye(n)[k]) for j in range(m) for k in range(n)]
    # The learning rate is 0 while the statistics are gathered and the Newton rate at the last step.
    schedule = lambda t: jnp.where(t < len(points), 0.0, scale)  # noqa: E731
    every = dict(preconditioning_compute_steps=len(points) - 1, root_method="eigh")
    tx = gradtx.shampoo(schedule, b1=0.0, b2=1.0, exponent_override=2, graft_type="none", **every,
                        start_preconditioning_step=0, matrix_epsilon=1e-14, relative_matrix_epsilon=False,
                        best_effort_shape_interpretation=False)
    state = tx.init(jnp.zeros((m, n)))
    step = jax.jit(tx.update)
    for x in points:
        _, state = step(jnp.asarray(grad(x)), state)
    x = rng.normal(size=(m, n))
    updates, state = step(jnp.asarray(grad(x)), state)
    newton = -np.linalg.solve(a, grad(x)) @ np.linalg.inv(b)
    np.testing.assert_allclose(updates, newton, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(x + np.asarray(updates), optimum, rtol=1e-9, atol=1e-12)
    # The default exponent 4 gives A^(-1/2) G B^(-1/2) up to a scalar: not Newton's direction.
    direction = gradtx.scale_by_shampoo(b1=0.0, b2=1.0, graft_type="none", start_preconditioning_step=0, **every,
                                        matrix_epsilon=1e-14, relative_matrix_epsilon=False,
                                        best_effort_shape_interpretation=False)
    state = direction.init(jnp.zeros((m, n)))
    step = jax.jit(direction.update)
    for x_k in points:
        _, state = step(jnp.asarray(grad(x_k)), state)
    u, _ = step(jnp.asarray(grad(x)), state)
    cosine = np.sum(np.asarray(u) * -newton) / (np.linalg.norm(u) * np.linalg.norm(newton))
    assert cosine < 0.999


# ------------------------------------------------------------------------------------------------
# The shared numerics.


@pytest.mark.parametrize("p", [1, 2, 4, 6])
def test_inverse_pth_root_eigh_and_newton(p):
    newton = jax.jit(lambda m: _matrix_roots.inverse_pth_root(m, p, method="newton", error_tolerance=1e-12))
    rng = np.random.default_rng(p)
    x = rng.normal(size=(3, 6, 8))
    matrices = x @ np.swapaxes(x, 1, 2) + 1e-3 * np.eye(6)
    expected = np.stack([np_inverse_root(m, p, 1e-6, True) for m in matrices])
    root, error = _matrix_roots.inverse_pth_root(jnp.asarray(matrices), p, method="eigh")
    np.testing.assert_allclose(root, expected, rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(error) == 0)
    root, error = newton(jnp.asarray(matrices))
    np.testing.assert_allclose(root, expected, rtol=1e-6, atol=1e-8)
    assert np.all(np.asarray(error) < 1e-6)
    # bfloat16 statistics are widened: the root is computed and returned in float32.
    root, _ = _matrix_roots.inverse_pth_root(jnp.asarray(matrices, jnp.bfloat16), p)
    assert root.dtype == jnp.float32
    root, _ = newton(jnp.asarray(matrices, jnp.float32))
    assert root.dtype == jnp.float32
    np.testing.assert_allclose(root, expected, rtol=2e-2, atol=1e-3)


def test_inverse_root_of_zero_and_nan_matrices():
    root, error = _matrix_roots.inverse_pth_root(jnp.zeros((1, 3, 3)), 4)
    assert np.all(np.isfinite(root)) and np.all(np.asarray(error) == 0)
    root, error = _matrix_roots.inverse_pth_root(jnp.full((1, 3, 3), jnp.nan), 4)
    assert np.all(~np.isfinite(np.asarray(error)))


def test_failed_root_keeps_the_previous_preconditioner():
    tx = gradtx.scale_by_shampoo(start_preconditioning_step=0, best_effort_shape_interpretation=False)
    params = jnp.asarray(INIT["w"])
    state = tx.init(params)
    _, state = tx.update(jnp.asarray(gradient({"w": INIT["w"]}, 0)["w"]), state)
    before = state.preconditioners[0]
    _, state = tx.update(jnp.full((4, 3), jnp.nan), state)
    assert all(np.all(np.isfinite(r)) for r in state.preconditioners)
    np.testing.assert_array_equal(state.preconditioners[0], before)


def test_merge_small_dims_and_block_partition_round_trip():
    assert _matrix_roots.merge_small_dims((3, 3, 16, 32), 4096) == (144, 32)
    assert _matrix_roots.merge_small_dims((1, 2, 768, 1, 2048), 1024) == (2, 768, 2048)
    assert _matrix_roots.merge_small_dims((1, 1), 8) == ()
    x = jnp.arange(7 * 5 * 3.0).reshape(7, 5, 3)
    partition = _matrix_roots.BlockPartition.create((7, 5, 3), 3, (True, True, False))
    blocks = partition.split(x)
    assert blocks.shape == (6, 3, 3, 3) and partition.grid == (3, 2, 1)
    np.testing.assert_array_equal(partition.merge(blocks), x)


# ------------------------------------------------------------------------------------------------
# Composition: jit, vmap, chains, wrappers, checkpoints, dtypes.


def _loss(params):
    return sum(jnp.sum(jnp.sin(3 * v) + v**2) for v in jax.tree.leaves(params))


def test_composes_with_wrappers_vmap_and_checkpoints(tmp_path):
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    options = dict(graft_type="adam", preconditioning_compute_steps=2, start_preconditioning_step=1, block_size=2)
    plain = gradtx.shampoo(0.05, **options)
    wrapped = gradtx.chain(
        gradtx.clip_by_global_norm(1e6),
        gradtx.masked(gradtx.scale_by_shampoo(**options), {"w": True, "t": True, "b": True}),
        gradtx.scale_by_learning_rate(0.05),
    )
    injected = gradtx.inject_hyperparams(gradtx.shampoo)(learning_rate=0.05, **options)
    guarded = gradtx.apply_if_finite(plain, 3)
    results = []
    for tx in (plain, wrapped, injected, guarded):
        state = tx.init(params)
        p = params
        step = jax.jit(lambda p, s, tx=tx: tx.update(jax.grad(_loss)(p), s, p))
        for _ in range(4):
            u, state = step(p, state)
            p = gradtx.apply_updates(p, u)
        results.append(p)
    for other in results[1:]:
        for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other)):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    # A checkpoint of the state (arrays only) restores the run exactly.
    step = jax.jit(plain.update)
    state = plain.init(params)
    u, state = step(jax.grad(_loss)(params), state, params)
    gradtx.save_state(tmp_path / "state", state)
    restored = gradtx.load_state(tmp_path / "state", plain.init(params))
    for a, b in zip(jax.tree.leaves(step(u, state, params)), jax.tree.leaves(step(u, restored, params))):
        np.testing.assert_array_equal(a, b)
    # vmap over a batch of parameters equals a loop.
    batch = jax.tree.map(lambda v: jnp.stack([v, 2 * v]), params)
    vmapped, _ = jax.jit(jax.vmap(lambda p: plain.update(jax.grad(_loss)(p), plain.init(p), p)))(batch)
    for i in range(2):
        single = jax.tree.map(lambda v: v[i], batch)
        looped, _ = step(jax.grad(_loss)(single), plain.init(single), single)
        for a, b in zip(jax.tree.leaves(vmapped), jax.tree.leaves(looped)):
            np.testing.assert_allclose(a[i], b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_params_keep_float32_statistics(dtype):
    params = {"w": jnp.asarray(INIT["w"], dtype), "b": jnp.asarray(INIT["b"], dtype)}
    tx = gradtx.shampoo(0.05, graft_type="adam", start_preconditioning_step=0, best_effort_shape_interpretation=False)
    state = tx.init(params)
    assert state[0].statistics["w"][0].dtype == jnp.float32
    updates, state = jax.jit(tx.update)(jax.grad(_loss)(params), state, params)
    assert updates["w"].dtype == dtype and state[0].mu["w"].dtype == dtype
    assert all(np.all(np.isfinite(np.asarray(u, np.float32))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(block_size=0), "block_size"),
        (dict(b1=1.0), "b1"),
        (dict(b2=1.5), "b2"),
        (dict(graft_type="lion"), "graft_type"),
        (dict(root_method="svd"), "root_method"),
        (dict(start_preconditioning_step=-1), "start_preconditioning_step"),
        (dict(preconditioning_compute_steps=0), "preconditioning_compute_steps"),
        (dict(matrix_epsilon=-1.0), "matrix_epsilon"),
        (dict(graft_type="adam", b2=1.0), "b2"),
        (dict(diagonal_epsilon=0.0), "diagonal_epsilon"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gradtx.shampoo(0.1, **kwargs)
