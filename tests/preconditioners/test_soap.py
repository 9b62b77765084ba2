"""SOAP against a NumPy float64 transcription of Vyas et al. 2024 (Algorithms 3 and 4, with the
reference implementation's first step, merge rule and bias correction) and ``pytorch_optimizer.SOAP``.

Shapes are chosen so that no factor is rank-deficient at the first step: the eigenbasis of a
zero eigenvalue of multiplicity > 1 is arbitrary, and SOAP's later steps depend on that choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

RNG = np.random.default_rng(11)
SHAPES = {"w": (4, 4), "t": (2, 3, 4), "b": (5,)}
WIDE = {**SHAPES, "wide": (3, 7)}  # 7 columns: only with max_precond_dim < 7
INIT = {k: RNG.normal(size=s) for k, s in WIDE.items()}
TARGET = {k: RNG.normal(size=s) for k, s in WIDE.items()}


def gradient(params: dict, step: int) -> dict:
    c = 1.0 + 0.1 * step
    return {k: -c * np.sin(c * np.asarray(p)) * TARGET[k] + np.asarray(p) for k, p in params.items()}


def np_merge(shape, max_dim):
    merged, current = [], 1
    for n in shape:
        if current * n > max_dim:
            if current > 1:
                merged.append(current)
                current = n
            else:
                merged.append(n)
                current = 1
        else:
            current *= n
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


def along(matrix, x, axis):
    """``matrix`` applied to every fiber of ``x`` along ``axis``."""
    return np.moveaxis(np.tensordot(matrix, x, axes=(1, axis)), 0, axis)


class NumpySoap:
    def __init__(self, lr, b1=0.95, b2=0.95, shampoo_beta=None, eps=1e-8, weight_decay=0.01,
                 precondition_frequency=10, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
                 normalize_grads=False, data_format="channels_first", correct_bias=True):
        self.__dict__.update(locals())
        self.beta = b2 if shampoo_beta is None else shampoo_beta

    def view(self, x):
        if self.merge_dims and self.data_format == "channels_last" and x.ndim == 4:
            x = np.transpose(x, (0, 3, 1, 2))
        return x.reshape(np_merge(x.shape, self.max_precond_dim)) if self.merge_dims else x

    def unview(self, x, shape):
        if self.merge_dims and self.data_format == "channels_last" and len(shape) == 4:
            return np.transpose(x.reshape(shape[0], shape[3], shape[1], shape[2]), (0, 2, 3, 1))
        return x.reshape(shape)

    def init(self, params):
        self.state = {}
        for k, p in params.items():
            v = self.view(p)
            if p.ndim == 1:
                used = [self.precondition_1d and p.size <= self.max_precond_dim]
            else:
                used = [n <= self.max_precond_dim for n in v.shape]
            self.state[k] = dict(m=np.zeros_like(p), v=np.zeros_like(p), t=0,
                                 gg=[np.zeros((n, n)) if u else None for n, u in zip(v.shape, used)], q=None)

    def accumulate(self, s, g):
        x = self.view(g)
        for i, gg in enumerate(s["gg"]):
            if gg is not None:
                unfolded = np.moveaxis(x, i, 0).reshape(x.shape[i], -1)
                s["gg"][i] = self.beta * gg + (1 - self.beta) * unfolded @ unfolded.T

    def rotate(self, x, s, back=False):
        y = self.view(x)
        for i, q in enumerate(s["q"]):
            if q is not None:
                y = along(q if back else q.T, y, i)
        return self.unview(y, x.shape)

    def step(self, params, grads):
        new = {}
        for k, g in grads.items():
            s, p = self.state[k], params[k]
            decay = self.lr * self.weight_decay * p
            if s["q"] is None:  # Algorithm 3's first step only builds the bases
                self.accumulate(s, g)
                s["q"] = [None if gg is None else np.linalg.eigh(gg)[1][:, ::-1] for gg in s["gg"]]
                new[k] = p - decay
                continue
            s["t"] += 1
            t = s["t"]
            s["m"] = self.b1 * s["m"] + (1 - self.b1) * g
            s["v"] = self.b2 * s["v"] + (1 - self.b2) * self.rotate(g, s) ** 2
            n = self.rotate(self.rotate(s["m"], s) / (np.sqrt(s["v"]) + self.eps), s, back=True)
            if self.normalize_grads:
                n = n / (1e-30 + np.sqrt(np.mean(n**2)))
            step = self.lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t) if self.correct_bias else self.lr
            new[k] = p - step * n - decay
            self.accumulate(s, g)
            if t % self.precondition_frequency == 0:  # Algorithm 4: one power step and a QR
                v = self.view(s["v"])
                for i, (gg, q) in enumerate(zip(s["gg"], s["q"])):
                    if gg is None:
                        continue
                    order = np.argsort(-np.diag(q.T @ gg @ q), kind="stable")
                    v = np.take(v, order, axis=i)
                    s["q"][i] = np.linalg.qr(gg @ q[:, order])[0]
                s["v"] = self.unview(v, s["v"].shape)
        return new


CASES = {
    "paper_defaults_refresh_3": (dict(precondition_frequency=3), SHAPES),
    "cap_shampoo_beta_no_bias": (dict(max_precond_dim=4, shampoo_beta=0.9, correct_bias=False, b1=0.9, b2=0.99,
                                      precondition_frequency=4, weight_decay=0.0), WIDE),
    "normalized": (dict(normalize_grads=True, precondition_frequency=5, weight_decay=0.1), SHAPES),
}


def _run(tx, reference, shapes, steps):
    params = {k: jnp.asarray(INIT[k]) for k in shapes}
    ref_params = {k: np.asarray(v) for k, v in params.items()}
    state = tx.init(params)
    reference.init(ref_params)
    step = jax.jit(tx.update)
    history = []
    for t in range(steps):
        updates, state = step({k: jnp.asarray(v) for k, v in gradient(params, t).items()}, state, params)
        params = gradtx.apply_updates(params, updates)
        ref_params = reference.step(ref_params, gradient(ref_params, t))
        history.append((params, ref_params))
    return history, state


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_numpy_transcription_for_20_steps(case):
    options, shapes = CASES[case]
    history, _ = _run(gradtx.soap(0.05, **options), NumpySoap(0.05, **options), shapes, 20)
    for t, (params, ref_params) in enumerate(history):
        for k in params:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-8, atol=1e-10, err_msg=f"{case} {k} {t}")


def test_merge_dims_channels_last_equals_transcription():
    options = dict(merge_dims=True, max_precond_dim=6, data_format="channels_last", precondition_frequency=3)
    shapes = {"kernel": (4, 2, 2, 3), "t2": (3, 2, 8)}  # merged to (4, 6, 2) and (6, 8): 8 > 6 stays whole
    rng = np.random.default_rng(5)
    for k, s in shapes.items():
        INIT.setdefault(k, rng.normal(size=s))
        TARGET.setdefault(k, rng.normal(size=s))
    history, state = _run(gradtx.soap(0.05, **options), NumpySoap(0.05, **options), shapes, 20)
    assert [None if q is None else q.shape for q in state[0].q["kernel"]] == [(4, 4), (6, 6), (2, 2)]
    assert [None if q is None else q.shape for q in state[0].q["t2"]] == [(6, 6), None]
    for params, ref_params in history:
        for k in params:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-8, atol=1e-10)


def _torch_run(options, shapes, steps):
    torch = pytest.importorskip("torch")
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    lr = 0.05
    tx = gradtx.soap(lr, weight_decay=0.0, **options)
    params = {k: jnp.asarray(INIT[k]) for k in shapes}
    state = tx.init(params)
    tensors = {k: torch.tensor(INIT[k], requires_grad=True) for k in shapes}
    renamed = {("max_precondition_dim" if k == "max_precond_dim" else k): v for k, v in options.items()}
    optimizer = pytorch_optimizer.SOAP(list(tensors.values()), lr=lr, weight_decay=0.0, **renamed)
    step = jax.jit(tx.update)
    errors = []
    for t in range(steps):
        updates, state = step({k: jnp.asarray(v) for k, v in gradient(params, t).items()}, state, params)
        params = gradtx.apply_updates(params, updates)
        grads = gradient({k: v.detach().numpy() for k, v in tensors.items()}, t)
        for k, v in tensors.items():
            v.grad = torch.tensor(grads[k])
        optimizer.step()
        errors.append(max(np.max(np.abs(np.asarray(params[k]) - tensors[k].detach().numpy())) for k in shapes))
    return np.asarray(errors)


def test_matches_pytorch_optimizer_soap_in_float64():
    """Between refreshes the two agree to rounding. ``pytorch_optimizer.SOAP`` (like the reference
    implementation) casts ``L Q`` to float32 before its QR decomposition, so after a refresh the
    runs differ by float32 rounding of the new basis (~1e-7), not by the algorithm."""
    errors = _torch_run(dict(precondition_frequency=100, max_precond_dim=5), WIDE, 25)
    assert np.max(errors) < 1e-12
    errors = _torch_run(dict(precondition_frequency=3), SHAPES, 25)
    assert np.max(errors[:3]) < 1e-12  # before the first refresh (t = 3 is the 4th call)
    assert np.max(errors) < 1e-5


def test_first_update_is_zero_and_vectors_take_adam():
    """The first step builds the bases; a vector (without ``precondition_1d``) is Adam with the
    reference's step count (bias correction ``t - 1`` at call ``t``)."""
    b1, b2, eps, lr = 0.9, 0.99, 1e-8, 0.1
    tx = gradtx.soap(lr, b1=b1, b2=b2, eps=eps, weight_decay=0.0)
    adam = gradtx.adam(lr, b1=b1, b2=b2, eps=eps)
    grads = [jnp.asarray(RNG.normal(size=5)) for _ in range(6)]
    state, adam_state = tx.init(jnp.zeros(5)), adam.init(jnp.zeros(5))
    u, state = tx.update(grads[0], state, jnp.zeros(5))
    np.testing.assert_array_equal(u, jnp.zeros(5))
    assert state[0].q == (None,)
    for g in grads[1:]:
        u, state = tx.update(g, state, jnp.zeros(5))
        a, adam_state = adam.update(g, adam_state)
        # Adam's eps sits outside the debiased root: eps / sqrt(1 - b2^t) in SOAP's convention.
        np.testing.assert_allclose(u, a, rtol=1e-6)
    state = gradtx.scale_by_soap(precondition_1d=True).init(jnp.zeros(5))
    assert state.gg[0].shape == (5, 5)


def test_composes_with_wrappers_vmap_and_checkpoints(tmp_path):
    params = {k: jnp.asarray(INIT[k]) for k in SHAPES}
    loss = lambda p: sum(jnp.sum(jnp.sin(3 * v) + v**2) for v in jax.tree.leaves(p))  # noqa: E731
    plain = gradtx.soap(0.05, precondition_frequency=2)
    injected = gradtx.inject_hyperparams(gradtx.soap)(learning_rate=0.05, precondition_frequency=2)
    guarded = gradtx.apply_if_finite(gradtx.chain(gradtx.clip_by_global_norm(1e6), plain), 3)
    results = []
    for tx in (plain, injected, guarded):
        state, p = tx.init(params), params
        step = jax.jit(lambda p, s, tx=tx: tx.update(jax.grad(loss)(p), s, p))
        for _ in range(5):
            u, state = step(p, state)
            p = gradtx.apply_updates(p, u)
        results.append(p)
    for other in results[1:]:
        for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other)):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    step = jax.jit(plain.update)
    state = plain.init(params)
    for _ in range(2):
        _, state = step(jax.grad(loss)(params), state, params)
    gradtx.save_state(tmp_path / "state", state)
    restored = gradtx.load_state(tmp_path / "state", plain.init(params))
    g = jax.grad(loss)(params)
    for a, b in zip(jax.tree.leaves(step(g, state, params)), jax.tree.leaves(step(g, restored, params))):
        np.testing.assert_array_equal(a, b)
    batch = jax.tree.map(lambda v: jnp.stack([v, 2 * v]), params)

    def two_steps(p):
        s = plain.init(p)
        _, s = plain.update(jax.grad(loss)(p), s, p)
        return plain.update(jax.grad(loss)(p), s, p)[0]

    vmapped = jax.jit(jax.vmap(two_steps))(batch)
    for i in range(2):
        looped = jax.jit(two_steps)(jax.tree.map(lambda v: v[i], batch))
        for a, b in zip(jax.tree.leaves(vmapped), jax.tree.leaves(looped)):
            np.testing.assert_allclose(a[i], b, rtol=1e-9, atol=1e-12)


def test_bfloat16_params_run_and_stay_finite():
    params = {"w": jnp.asarray(INIT["w"], jnp.bfloat16), "b": jnp.asarray(INIT["b"], jnp.bfloat16)}
    tx = gradtx.soap(0.01, precondition_frequency=1)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(3):
        grads = jax.tree.map(lambda v: jnp.asarray(v, jnp.bfloat16), gradient(params, t))
        updates, state = step(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    assert all(u.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(u, np.float32)))
               for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(b1=1.0), "b1"),
        (dict(b2=-0.1), "b2"),
        (dict(shampoo_beta=1.0), "shampoo_beta"),
        (dict(eps=0.0), "eps"),
        (dict(precondition_frequency=0), "precondition_frequency"),
        (dict(max_precond_dim=0), "max_precond_dim"),
        (dict(data_format="NHWC"), "data_format"),
        (dict(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gradtx.soap(0.1, **kwargs)
