"""``quantized_state`` and the low-bit shortcuts: the papers' algorithms, memory, composition, guarantees.

The 8-bit and 4-bit Adam steps are compared with plain NumPy transcriptions of Dettmers et al.
(2022) and Li, Chen, Zhu (2023); the wrapper is then checked on every stateful family, inside the
combinators, under jit/vmap, ``apply_if_finite`` and checkpoints.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract_checks import check_dtypes_kept, check_jit_equals_eager, check_vmap_equals_loop
from test_quantization_maps import paper_blockwise, paper_dynamic_map, paper_rank1

import gradtx
from gradtx import quantization_maps as qm


def quantized_leaves(state) -> dict[str, gradtx.QuantizedArray]:
    is_q = lambda x: isinstance(x, gradtx.QuantizedArray)
    return {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_q)[0]
        if is_q(leaf)
    }


def state_bytes(state) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))


def random_gradients(params, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape) * 1e-2, p.dtype), params) for _ in range(steps)
    ]


# ---------------------------------------------------------------------------------------------
# The papers' algorithms, transcribed in NumPy.


def numpy_low_bit_adam(params, grads, *, bits, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """Adam whose moments are stored quantized between steps (float64 arithmetic, float32 scales).

    8 bits (Dettmers et al. 2022): m and v block-wise (2048) with the signed / unsigned dynamic
    maps. 4 bits (Li et al. 2023): m block-wise (128) with the signed 4-bit dynamic map, v with
    rank-1 normalization (block-wise 128 for vectors) and the linear map without zero. Leaves of
    fewer than 4096 entries stay in float64.
    """
    # The maps themselves are checked against the papers' definitions (and bitsandbytes) in
    # test_quantization_maps.py; here their float32 values are used as they are.
    signed_map = qm.dynamic_map(True, bits)
    unsigned_map = qm.dynamic_map(False, 8) if bits == 8 else ((np.arange(16) + 1) / 16).astype(np.float32)
    np.testing.assert_allclose(signed_map, paper_dynamic_map(True, bits), rtol=2.5e-7)
    block = 2048 if bits == 8 else 128

    def store(x, signed):
        if x.size < 4096:
            return x
        if signed:
            return paper_blockwise(x, signed_map, block)[2].astype(np.float64)
        if bits == 4 and x.ndim >= 2:
            return paper_rank1(x, unsigned_map)[1].astype(np.float64)
        return paper_blockwise(x, unsigned_map, block)[2].astype(np.float64)

    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: store(np.zeros_like(v), True) for k, v in params.items()}
    v = {k: store(np.zeros_like(p), False) for k, p in params.items()}
    trajectory = []
    for t, g in enumerate(grads, start=1):
        for k in params:
            gk = np.asarray(g[k], np.float64)
            m_new = b1 * m[k] + (1 - b1) * gk
            v_new = b2 * v[k] + (1 - b2) * gk**2
            m_hat, v_hat = m_new / (1 - b1**t), v_new / (1 - b2**t)
            params[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
            m[k], v[k] = store(m_new, True), store(v_new, False)
        trajectory.append({k: p.copy() for k, p in params.items()})
    return trajectory, m, v


@pytest.mark.parametrize("bits", [8, 4])
def test_low_bit_adam_equals_numpy_transcription_of_the_paper(bits):
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((64, 96)), jnp.float64),
        "v": jnp.asarray(rng.standard_normal(5000), jnp.float64),
        "b": jnp.asarray(rng.standard_normal(96), jnp.float64),
    }
    grads = random_gradients(params, 12)
    expected, expected_m, expected_v = numpy_low_bit_adam(params, grads, bits=bits)
    optimizer = gradtx.adam_8bit(1e-2) if bits == 8 else gradtx.adam_4bit(1e-2)
    state = optimizer.init(params)
    step = jax.jit(optimizer.update)
    for g, want in zip(grads, expected):
        updates, state = step(g, state, params)
        params = gradtx.apply_updates(params, updates)
        for k in params:
            np.testing.assert_allclose(np.asarray(params[k]), want[k], rtol=1e-12, atol=1e-14)
    moments = gradtx.dequantize_state(state).inner_state[0]
    for k in ("w", "v"):  # quantized: the same codes, so the same values exactly
        np.testing.assert_array_equal(np.asarray(moments.mu[k]), expected_m[k])
        np.testing.assert_array_equal(np.asarray(moments.nu[k]), expected_v[k])
    np.testing.assert_allclose(np.asarray(moments.mu["b"]), expected_m["b"], rtol=1e-12)


def test_which_leaves_are_quantized_and_how():
    params = {
        "w": jnp.zeros((64, 96), jnp.float32),
        "v": jnp.zeros(5000, jnp.float32),
        "b": jnp.zeros(96, jnp.float32),
        "embed": jnp.zeros((100, 64), jnp.float32),
    }
    mask = {"w": True, "v": True, "b": True, "embed": False}
    (grads,) = random_gradients(params, 1)
    for bits in (8, 4):
        optimizer = gradtx.quantized_state(gradtx.adamw(1e-3), bits, mask=mask)
        _, state = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
        leaves = quantized_leaves(state)
        # Small leaves (b: 96 < 4096) and masked ones (embed) stay float32; step counts too.
        assert sorted(leaves) == sorted(f".inner_state[0].{f}['{k}']" for f in ("mu", "nu") for k in ("w", "v"))
        for name, leaf in leaves.items():
            assert bool(leaf.signed) == (".mu" in name)  # Adam's nu is non-negative: the unsigned map
            assert leaf.codes.dtype == jnp.uint8 and leaf.bits == bits
        w_mu = leaves[".inner_state[0].mu['w']"]
        if bits == 8:
            assert {leaf.block_size for leaf in leaves.values()} == {2048}
            assert w_mu.codes.shape == (64 * 96,) and w_mu.axis_maxima == ()
        else:
            assert w_mu.block_size == 128 and w_mu.codes.shape == (64 * 96 // 2,)
            assert [m.shape for m in leaves[".inner_state[0].nu['w']"].axis_maxima] == [(64, 1), (1, 96)]
            assert leaves[".inner_state[0].nu['v']"].axis_maxima == ()  # rank-1 needs 2 axes


def test_only_parameter_shaped_leaves_are_quantized():
    """A state leaf of another shape than its parameter (a preconditioner matrix) stays as it is."""

    def with_matrix() -> gradtx.GradientTransformation:
        def init(params):
            return {"momentum": jax.tree.map(jnp.zeros_like, params), "matrix": jnp.eye(80)}

        def update(updates, state, params=None):
            momentum = jax.tree.map(lambda m, g: 0.9 * m + g, state["momentum"], updates)
            return momentum, {"momentum": momentum, "matrix": state["matrix"]}

        return gradtx.GradientTransformation(init, update)

    params = {"w": jnp.ones(6400, jnp.float32)}
    leaves = quantized_leaves(gradtx.quantized_state(with_matrix()).init(params))
    assert sorted(leaves) == [".inner_state['momentum']['w']"]


def test_memory_per_parameter_on_a_1m_parameter_model():
    params = {
        "w1": jnp.zeros((1024, 1024), jnp.float32),
        "b1": jnp.zeros(1024, jnp.float32),
        "w2": jnp.zeros((1024, 16), jnp.float32),
        "b2": jnp.zeros(16, jnp.float32),
    }
    count = sum(p.size for p in jax.tree.leaves(params))
    assert count >= 1_000_000
    per_param = {
        "float32": state_bytes(gradtx.adam(1e-3).init(params)) / count,
        "8bit": state_bytes(gradtx.adam_8bit(1e-3).init(params)) / count,
        "4bit": state_bytes(gradtx.adam_4bit(1e-3).init(params)) / count,
    }
    assert 7.99 < per_param["float32"] <= 8.01
    assert per_param["8bit"] <= 2.1
    assert per_param["4bit"] <= 1.1
    assert per_param["4bit"] < 0.55 * per_param["8bit"]


# ---------------------------------------------------------------------------------------------
# Every stateful family, and compositions.


def regression_problem(seed=0):
    """A small tanh network fitted to noisy targets: the loss stays well above 0."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((4096, 32)), jnp.float32)
    clean = np.tanh(np.asarray(x) @ rng.standard_normal((32, 4)) / 4)
    y = jnp.asarray(clean + 0.3 * rng.standard_normal(clean.shape), jnp.float32)
    params = {  # w1 (5120 entries) is quantized with min_size=1024; b1 and w2 (640) are not.
        "w1": jnp.asarray(rng.standard_normal((32, 160)) * 0.1, jnp.float32),
        "b1": jnp.zeros(160, jnp.float32),
        "w2": jnp.asarray(rng.standard_normal((160, 4)) * 0.1, jnp.float32),
    }

    def loss(p):
        hidden = jnp.tanh(x @ p["w1"] + p["b1"])
        return jnp.mean((hidden @ p["w2"] - y) ** 2)

    return params, loss


def train_losses(optimizer, steps=150, seed=0):
    params, loss = regression_problem(seed)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, value

    losses = []
    for _ in range(steps):
        params, state, value = step(params, state)
        losses.append(float(value))
    return np.asarray(losses), state


FAMILIES = {
    # name: (builder, {state field: signed}) -- min_size=1024 quantizes w1 (6144) only.
    "adam": (lambda: gradtx.adam(3e-3), {"mu": True, "nu": False}),
    "adamw": (lambda: gradtx.adamw(3e-3, weight_decay=1e-2), {"mu": True, "nu": False}),
    "lion": (lambda: gradtx.lion(3e-4), {"mu": True}),
    "sgd_momentum": (lambda: gradtx.sgd(0.1, momentum=0.9), {"trace": True}),
    "rmsprop": (lambda: gradtx.rmsprop(1e-3), {"nu": False}),
    "rmsprop_centered": (lambda: gradtx.rmsprop(1e-3, centered=True), {"mu": True, "nu": False}),
    "adagrad": (lambda: gradtx.adagrad(0.05), {"sum_of_squares": False}),
    "adadelta": (lambda: gradtx.adadelta(1.0), {"squared_gradient_avg": False, "squared_delta_avg": False}),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_wraps_every_stateful_family(name):
    build, fields = FAMILIES[name]
    reference, _ = train_losses(build(), steps=100)
    for bits, tolerance in ((8, 0.02), (4, 0.1)):
        losses, state = train_losses(gradtx.quantized_state(build(), bits, min_size=1024), steps=100)
        leaves = quantized_leaves(state)
        found = {path.split(".")[-1].split("[")[0]: bool(leaf.signed) for path, leaf in leaves.items()}
        assert found == fields, (bits, found)
        assert all("w1" in path for path in leaves)
        assert losses[-1] < 0.7 * losses[0]
        assert abs(losses[-1] - reference[-1]) <= tolerance * reference[0], (bits, losses[-1], reference[-1])


def test_8bit_adam_tracks_float32_adam_closely():
    reference, _ = train_losses(gradtx.adam(3e-3), steps=150)
    quantized, _ = train_losses(gradtx.quantized_state(gradtx.adam(3e-3), 8, min_size=512), steps=150)
    # Within 3% at every step (the runs drift apart slowly as the network starts fitting the noise).
    np.testing.assert_allclose(quantized, reference, rtol=0.03)
    np.testing.assert_allclose(quantized[:100], reference[:100], rtol=0.01)


def labels_of(params):
    return {k: ("quantized" if k == "w1" else "plain") for k in params}


ADAM_LEAVES = {"w1": True, "b1": False, "w2": True}
SGD_LEAVES = {"w1": False, "b1": True, "w2": False}
COMPOSITIONS = {
    "chain": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.quantized_state(gradtx.adam(3e-3), min_size=1024)
    ),
    "inside_masked": lambda: gradtx.chain(
        gradtx.masked(gradtx.quantized_state(gradtx.adam(3e-3), min_size=1024), ADAM_LEAVES),
        gradtx.masked(gradtx.sgd(0.1), SGD_LEAVES),
    ),
    "around_masked": lambda: gradtx.quantized_state(
        gradtx.chain(gradtx.masked(gradtx.adam(3e-3), ADAM_LEAVES), gradtx.masked(gradtx.sgd(0.1), SGD_LEAVES)),
        min_size=1024,
    ),
    "inside_partition": lambda: gradtx.partition(
        {"quantized": gradtx.adam_8bit(3e-3, min_size=1024), "plain": gradtx.adam(3e-3)}, labels_of
    ),
    "around_partition": lambda: gradtx.quantized_state(
        gradtx.partition({"quantized": gradtx.adam(3e-3), "plain": gradtx.adam(3e-3)}, labels_of), min_size=1024
    ),
    "inside_inject_hyperparams": lambda: gradtx.inject_hyperparams(gradtx.adamw_8bit)(3e-3, min_size=1024),
    "around_inject_hyperparams": lambda: gradtx.quantized_state(
        gradtx.inject_hyperparams(gradtx.adam)(learning_rate=3e-3), min_size=1024
    ),
}
PLAIN = {
    "around_masked": lambda: PLAIN["inside_masked"](),
    "chain": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(3e-3)),
    "inside_masked": lambda: gradtx.chain(
        gradtx.masked(gradtx.adam(3e-3), ADAM_LEAVES), gradtx.masked(gradtx.sgd(0.1), SGD_LEAVES)
    ),
    "inside_inject_hyperparams": lambda: gradtx.adamw(3e-3),
}


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_works_inside_and_around_combinators(name):
    losses, state = train_losses(COMPOSITIONS[name](), steps=100)
    reference, _ = train_losses(PLAIN.get(name, lambda: gradtx.adam(3e-3))(), steps=100)
    leaves = quantized_leaves(state)
    assert leaves and all("w1" in path for path in leaves)
    assert sorted(bool(leaf.signed) for leaf in leaves.values()) == [False, True]
    assert abs(losses[-1] - reference[-1]) <= 0.02 * reference[0]
    if name == "inside_inject_hyperparams":
        state = gradtx.set_hyperparams(state, learning_rate=0.0)
        params, loss = regression_problem()
        updates, _ = COMPOSITIONS[name]().update(jax.grad(loss)(params), state, params)
        assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))


# ---------------------------------------------------------------------------------------------
# The guarantees of the wrapped transformation.


@pytest.mark.parametrize("bits", [8, 4])
def test_jit_equals_eager_and_dtypes_kept(bits):
    make = lambda: gradtx.quantized_state(gradtx.adam(0.1), bits, min_size=1)
    check_jit_equals_eager(make)
    check_dtypes_kept(make, jnp.float32)
    check_dtypes_kept(make, jnp.bfloat16)


@pytest.mark.parametrize("bits", [8, 4])
def test_vmap_equals_a_loop(bits):
    check_vmap_equals_loop(lambda: gradtx.quantized_state(gradtx.adamw(0.1), bits, min_size=1))


def test_init_under_jit_and_eval_shape_decides_the_same():
    params, _ = regression_problem()
    for optimizer in (gradtx.adamw_4bit(1e-3, min_size=1024), gradtx.inject_hyperparams(gradtx.adam_4bit)(1e-3)):
        eager = optimizer.init(params)
        assert jax.tree.structure(jax.jit(optimizer.init)(params)) == jax.tree.structure(eager)
        assert jax.tree.structure(jax.eval_shape(optimizer.init, params)) == jax.tree.structure(eager)


def test_apply_if_finite_skip_leaves_the_quantized_state_bit_identical():
    params, loss = regression_problem()
    optimizer = gradtx.apply_if_finite(gradtx.adam_8bit(3e-3, min_size=1024), max_consecutive_errors=3)
    state = optimizer.init(params)
    step = jax.jit(optimizer.update)
    for _ in range(3):
        _, state = step(jax.grad(loss)(params), state, params)
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), jax.grad(loss)(params))
    updates, skipped = step(bad, state, params)
    assert not bool(skipped.last_finite)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    for before, after in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(skipped.inner_state)):
        assert before.dtype == after.dtype
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    assert quantized_leaves(skipped.inner_state)


@pytest.mark.parametrize("stochastic", [False, True])
def test_checkpoint_resumes_bit_for_bit(tmp_path, stochastic):
    params, loss = regression_problem()
    optimizer = gradtx.adamw_4bit(3e-3, min_size=1024, stochastic_rounding=stochastic)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        return gradtx.apply_updates(params, updates), state

    state = optimizer.init(params)
    for _ in range(3):
        params, state = step(params, state)
    gradtx.save_state(tmp_path / "ckpt.npz", (params, state))
    restored = gradtx.load_state(tmp_path / "ckpt.npz", like=(params, optimizer.init(params)))
    a, b = (params, state), restored
    for _ in range(3):
        a, b = step(*a), step(*b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stochastic_rounding():
    params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((64, 64)), jnp.float32)}
    grads = random_gradients(params, 5, seed=1)

    def run(optimizer, jit=True):
        state = optimizer.init(params)
        update = jax.jit(optimizer.update) if jit else optimizer.update
        for g in grads:
            _, state = update(g, state, params)
        return state

    make = lambda key=None: gradtx.adam_8bit(1e-3, stochastic_rounding=True, key=key)
    first, again, eager = run(make()), run(make()), run(make(), jit=False)
    other_key = run(make(jax.random.PRNGKey(7)))
    nearest = run(gradtx.adam_8bit(1e-3))
    codes = lambda s: np.asarray(quantized_leaves(s)[".inner_state[0].mu['w']"].codes)
    np.testing.assert_array_equal(codes(first), codes(again))
    np.testing.assert_array_equal(codes(first), codes(eager))
    assert not np.array_equal(codes(first), codes(other_key))
    assert not np.array_equal(codes(first), codes(nearest))
    # One step from zero: the same moment is rounded up or down to a neighbour of the nearest value.
    one_step = lambda optimizer: optimizer.update(grads[0], optimizer.init(params), params)[1]
    difference = codes(one_step(make())).astype(int) - codes(one_step(gradtx.adam_8bit(1e-3))).astype(int)
    assert np.max(np.abs(difference)) == 1
    assert not np.array_equal(np.asarray(first.key), np.asarray(make().init(params).key))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"bits": 2}, ValueError, "bits must be 8 or 4"),
        ({"bits": True}, ValueError, "bits"),
        ({"block_size": 0}, ValueError, "block_size must be >= 1"),
        ({"block_size": 64.0}, TypeError, "block_size must be an int"),
        ({"min_size": 0}, ValueError, "min_size"),
        ({"stochastic_rounding": 1}, TypeError, "stochastic_rounding"),
        ({"key": jax.random.PRNGKey(0)}, ValueError, "only used with stochastic_rounding"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        gradtx.quantized_state(gradtx.adam(1e-3), **kwargs)


def test_bad_inner_and_state_are_reported():
    with pytest.raises(TypeError, match="inner must be a GradientTransformation"):
        gradtx.quantized_state(lambda p: p)
    optimizer = gradtx.adam_8bit(1e-3)
    params = {"w": jnp.zeros((64, 64))}
    with pytest.raises(TypeError, match="expected a QuantizedState"):
        optimizer.update(params, gradtx.adam(1e-3).init(params), params)
