"""gradtx.nn.normalization against flax.linen (and torch where it agrees), in float64."""

import os
import subprocess
import sys
import textwrap
from functools import partial

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax
from jax.test_util import check_grads

from gradtx import nn

RNG = np.random.default_rng(0)


def affine_params(shape, use_scale=True, use_bias=True):
    """Non-trivial scale and bias, so the affine part is tested too."""
    params = {}
    if use_scale:
        params["scale"] = RNG.uniform(0.5, 2.0, size=shape)
    if use_bias:
        params["bias"] = RNG.normal(size=shape)
    return params


def batches(n, shape, mean=3.0, std=2.0):
    return [mean + std * RNG.normal(size=shape) for _ in range(n)]


def jitted(layer):
    """``layer.apply`` compiled once: far cheaper than compiling each of its operations eagerly."""
    return jax.jit(layer.apply, static_argnames=("train", "axis_name"))


# ------------------------------------------------------------------------------------------------
# batch_norm


@partial(jax.jit, static_argnames=("train", "momentum", "axis", "axis_name"))
def flax_batch_norm(params, state, x, train, momentum=0.99, axis=-1, axis_name=None):
    module = fnn.BatchNorm(use_running_average=not train, momentum=momentum, axis=axis, axis_name=axis_name)
    variables = {"params": params, "batch_stats": {"mean": state.mean, "var": state.var}}
    y, updated = module.apply(variables, x, mutable=["batch_stats"])
    return y, nn.BatchNormState(updated["batch_stats"]["mean"], updated["batch_stats"]["var"])


@pytest.mark.parametrize(
    "shape, axis, num_features, momentum",
    [
        ((4, 5, 5, 3), -1, 3, 0.99),  # NHWC images, Flax's default momentum
        ((4, 3, 5, 5), 1, 3, 0.8),  # NCHW (torch layout)
        ((4, 3, 5, 2), (1, 3), (3, 2), 0.9),  # two feature axes
    ],
)
def test_batch_norm_matches_flax_over_several_updates(shape, axis, num_features, momentum):
    layer = nn.batch_norm(num_features, momentum=momentum, axis=axis, param_dtype=jnp.float64)
    apply = jitted(layer)
    params, state = layer.init(None)
    params = affine_params(state.mean.shape)
    flax_state = state
    for x in batches(4, shape):
        y, state = apply(params, state, x, train=True)
        y_flax, flax_state = flax_batch_norm(params, flax_state, x, True, momentum=momentum, axis=axis)
        np.testing.assert_allclose(y, y_flax, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(state.mean, flax_state.mean, rtol=1e-12)
        np.testing.assert_allclose(state.var, flax_state.var, rtol=1e-12)
    x = batches(1, shape)[0]
    y, eval_state = layer.apply(params, state, x, train=False)
    y_flax, _ = flax_batch_norm(params, flax_state, x, False, momentum=momentum, axis=axis)
    np.testing.assert_allclose(y, y_flax, rtol=1e-11, atol=1e-12)
    assert eval_state is state  # evaluation leaves the running averages alone


def test_batch_norm_formulas():
    layer = nn.batch_norm(4, momentum=0.9, eps=1e-3, use_scale=False, use_bias=False, param_dtype=jnp.float64)
    params, state = layer.init(None)
    assert params == {}
    np.testing.assert_array_equal(state.mean, np.zeros(4))
    np.testing.assert_array_equal(state.var, np.ones(4))
    x = batches(1, (10, 4))[0]
    y, new_state = jitted(layer)(params, state, x, train=True)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(new_state.mean, 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(new_state.var, 0.9 + 0.1 * x.var(0), rtol=1e-12)  # biased variance


def test_batch_norm_differs_from_torch_only_as_documented():
    x = batches(1, (8, 5))[0]
    bn_torch = torch.nn.BatchNorm1d(5, dtype=torch.float64)  # momentum=0.1, eps=1e-5
    y_torch = bn_torch(torch.from_numpy(x)).detach().numpy()
    layer = nn.batch_norm(5, momentum=0.9, param_dtype=jnp.float64)  # decay 0.9 == torch's 0.1
    params, state = layer.init(None)
    y, state = jitted(layer)(params, state, x, train=True)
    np.testing.assert_allclose(y, y_torch, rtol=1e-12, atol=1e-13)  # same biased normalization
    np.testing.assert_allclose(state.mean, bn_torch.running_mean.numpy(), rtol=1e-12)
    m = x.shape[0]
    np.testing.assert_allclose(state.var, 0.9 + 0.1 * x.var(0), rtol=1e-12)
    np.testing.assert_allclose(bn_torch.running_var.numpy(), 0.9 + 0.1 * x.var(0) * m / (m - 1), rtol=1e-12)


def test_batch_norm_state_keeps_its_dtype_and_half_precision_uses_float32_statistics():
    layer = nn.batch_norm(3)
    apply = jitted(layer)
    params, state = layer.init(None)
    _, new_state = apply(params, state, batches(1, (6, 3))[0], train=True)  # float64 input
    assert new_state.mean.dtype == new_state.var.dtype == jnp.float32
    x = jnp.asarray(batches(1, (64, 3), mean=100.0, std=0.5)[0], jnp.bfloat16)
    y, new_state = apply(params, state, x, train=True)
    assert y.dtype == jnp.float32 and new_state.mean.dtype == jnp.float32
    x32 = np.asarray(x, np.float32)
    np.testing.assert_allclose(y, (x32 - x32.mean(0)) / np.sqrt(x32.var(0) + 1e-5), rtol=1e-3, atol=1e-3)


def test_batch_norm_gradients():
    x = batches(1, (6, 3))[0]
    params = affine_params((3,))
    layer = nn.batch_norm(3, param_dtype=jnp.float64)
    _, state = layer.init(None)

    @jax.jit
    def f(x, scale, bias):
        y, _ = layer.apply({"scale": scale, "bias": bias}, state, x, train=True)
        return y

    check_grads(f, (x, params["scale"], params["bias"]), order=1, modes=("rev",))
    # Normalized outputs sum to zero over the batch, whatever x: the gradient through the batch
    # statistics cancels the direct one.
    grad_x = jax.grad(lambda x: f(x, params["scale"], params["bias"]).sum())(x)
    np.testing.assert_allclose(grad_x, 0.0, atol=1e-12)


def test_cross_device_statistics_under_vmap_equal_the_concatenated_batch():
    devices, per_device, features = 4, 8, 5
    x = batches(1, (devices, per_device, features))[0]
    layer = nn.batch_norm(features, momentum=0.9, param_dtype=jnp.float64)
    _, state = layer.init(None)
    params = affine_params((features,))

    def per_device_step(x):
        return layer.apply(params, state, x, train=True, axis_name="devices")

    y, new_state = jax.jit(jax.vmap(per_device_step, axis_name="devices", out_axes=(0, None)))(x)
    y_ref, state_ref = jitted(layer)(params, state, x.reshape(-1, features), train=True)
    np.testing.assert_allclose(y.reshape(-1, features), y_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(new_state.mean, state_ref.mean, rtol=1e-12)
    np.testing.assert_allclose(new_state.var, state_ref.var, rtol=1e-12)
    # Flax with the same axis_name agrees.
    flax_y = jax.vmap(
        lambda x: flax_batch_norm(params, state, x, True, momentum=0.9, axis_name="devices")[0],
        axis_name="devices",
    )(x)
    np.testing.assert_allclose(y, flax_y, rtol=1e-11, atol=1e-12)
    # Without axis_name each device uses its own statistics, which differ.
    y_local, _ = jax.jit(jax.vmap(lambda x: layer.apply(params, state, x, train=True)))(x)
    assert not np.allclose(y_local, y)


SHARD_MAP_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from gradtx import nn

    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("batch",))
    layer = nn.batch_norm(3, momentum=0.9)
    params, state = layer.init(None)
    x = (1.0 + 2.0 * np.random.default_rng(0).normal(size=(32, 3))).astype(np.float32)
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("batch")))  # 8 examples per device
    step = jax.shard_map(
        lambda x: layer.apply(params, state, x, train=True, axis_name="batch"),
        mesh=mesh, in_specs=P("batch"), out_specs=(P("batch"), P()),
    )
    y, new_state = jax.jit(step)(x_sharded)
    y_ref, state_ref = layer.apply(params, state, x, train=True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state.mean, state_ref.mean, rtol=1e-5)
    np.testing.assert_allclose(new_state.var, state_ref.var, rtol=1e-5)
    print("shard_map ok")
    """
)


def test_cross_device_statistics_under_shard_map_on_4_cpu_devices():
    # A fresh process, because the number of host devices is fixed when JAX starts.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", SHARD_MAP_SCRIPT], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shard_map ok" in result.stdout


def test_fold_batch_norm_into_dense():
    dense = nn.dense(6, 4, param_dtype=jnp.float64)
    bn = nn.batch_norm(4, momentum=0.5, eps=1e-3, param_dtype=jnp.float64)
    dense_params = {"kernel": RNG.normal(size=(6, 4)), "bias": RNG.normal(size=4)}
    _, bn_state = bn.init(None)
    bn_params = affine_params((4,))

    @partial(jax.jit, static_argnames="train")
    def dense_then_bn(dense_params, bn_params, bn_state, x, train):
        h, _ = dense.apply(dense_params, nn.EmptyState(), x, train=train)
        return bn.apply(bn_params, bn_state, h, train=train)

    for x in batches(3, (10, 6)):  # some training so the running statistics are not 0 and 1
        _, bn_state = dense_then_bn(dense_params, bn_params, bn_state, x, train=True)
    x = batches(1, (10, 6))[0]
    y, _ = dense_then_bn(dense_params, bn_params, bn_state, x, train=False)
    folded = nn.fold_batch_norm(dense_params, bn_params, bn_state, eps=1e-3)
    np.testing.assert_allclose(x @ folded["kernel"] + folded["bias"], y, rtol=1e-12, atol=1e-12)
    # Without a dense bias and without a batch-norm scale.
    no_bias = {"kernel": dense_params["kernel"]}
    y = (x @ no_bias["kernel"] - bn_state.mean) / np.sqrt(bn_state.var + 1e-3) + bn_params["bias"]
    folded = nn.fold_batch_norm(no_bias, {"bias": bn_params["bias"]}, bn_state, eps=1e-3)
    np.testing.assert_allclose(x @ folded["kernel"] + folded["bias"], y, rtol=1e-12, atol=1e-12)


def test_fold_batch_norm_into_conv_kernel():
    kernel = RNG.normal(size=(3, 3, 2, 4))
    state = nn.BatchNormState(RNG.normal(size=4), RNG.uniform(0.5, 2, size=4))
    bn_params = affine_params((4,))
    x = RNG.normal(size=(2, 6, 6, 2))

    @jax.jit
    def conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y, _ = jitted(nn.batch_norm(4))(bn_params, state, conv(x, kernel), train=False)
    folded = nn.fold_batch_norm({"kernel": kernel}, bn_params, state)
    np.testing.assert_allclose(conv(x, folded["kernel"]) + folded["bias"], y, rtol=1e-11, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# batch_renorm


def renorm_reference(xs, params, momentum, eps, rmax, dmax):
    """Ioffe (2017), Algorithm 1, in NumPy, over a sequence of batches of shape (m, features)."""
    mu, sigma = np.zeros(xs[0].shape[1]), np.ones(xs[0].shape[1])
    outputs = []
    for t, x in enumerate(xs):
        mu_b, sigma_b = x.mean(0), np.sqrt(x.var(0) + eps)
        r = np.clip(sigma_b / sigma, 1 / rmax(t), rmax(t))
        d = np.clip((mu_b - mu) / sigma, -dmax(t), dmax(t))
        outputs.append(params["scale"] * ((x - mu_b) / sigma_b * r + d) + params["bias"])
        mu = mu + (1 - momentum) * (mu_b - mu)
        sigma = sigma + (1 - momentum) * (sigma_b - sigma)
    return outputs, mu, sigma


def test_batch_renorm_matches_algorithm_1_with_schedules():
    rmax = lambda t: 1.0 + 0.5 * t  # 1 at the first step: r is clipped to 1
    dmax = lambda t: 0.5 * t  # 0 at the first step: d is clipped to 0
    layer = nn.batch_renorm(4, momentum=0.7, eps=1e-3, rmax=rmax, dmax=dmax, param_dtype=jnp.float64)
    params = affine_params((4,))
    _, state = layer.init(None)
    xs = batches(6, (5, 4))
    expected, mu, sigma = renorm_reference(xs, params, 0.7, 1e-3, rmax, dmax)
    apply = jitted(layer)
    for t, x in enumerate(xs):
        assert state.step_count == t
        y, state = apply(params, state, x, train=True)
        np.testing.assert_allclose(y, expected[t], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.mean, mu, rtol=1e-12)
    np.testing.assert_allclose(state.std, sigma, rtol=1e-12)
    x = xs[0]
    y, eval_state = layer.apply(params, state, x, train=False)  # eager: checks the state is passed through
    np.testing.assert_allclose(y, params["scale"] * (x - mu) / sigma + params["bias"], rtol=1e-12)
    assert eval_state is state


def test_batch_renorm_with_rmax_1_dmax_0_is_batch_norm():
    layer = nn.batch_renorm(3, rmax=1.0, dmax=0.0, param_dtype=jnp.float64)
    bn = nn.batch_norm(3, param_dtype=jnp.float64)
    params = affine_params((3,))
    _, state = layer.init(None)
    _, bn_state = bn.init(None)
    apply, bn_apply = jitted(layer), jitted(bn)
    for x in batches(3, (6, 3)):
        y, state = apply(params, state, x, train=True)
        y_bn, bn_state = bn_apply(params, bn_state, x, train=True)
        np.testing.assert_allclose(y, y_bn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.mean, bn_state.mean, rtol=1e-12)


def test_batch_renorm_unclipped_training_output_is_the_evaluation_output():
    layer = nn.batch_renorm(3, rmax=1e6, dmax=1e6, param_dtype=jnp.float64)
    params = affine_params((3,))
    _, state = layer.init(None)
    apply = jitted(layer)
    for x in batches(3, (6, 3)):
        y_eval, _ = apply(params, state, x, train=False)
        y_train, state = apply(params, state, x, train=True)
        np.testing.assert_allclose(y_train, y_eval, rtol=1e-11, atol=1e-12)


def test_batch_renorm_gradients_treat_r_and_d_as_constants():
    x = batches(1, (6, 3))[0]
    params = affine_params((3,))
    layer = nn.batch_renorm(3, momentum=0.5, rmax=1.5, dmax=0.5, param_dtype=jnp.float64)
    _, state = layer.init(None)
    _, state = jitted(layer)(params, state, batches(1, (6, 3), mean=2.5, std=1.5)[0], train=True)

    def f(x, scale, bias):
        y, _ = layer.apply({"scale": scale, "bias": bias}, state, x, train=True)
        return y

    # r and d as fixed numbers: a batch norm output times r plus d.
    mu_b, sigma_b = x.mean(0), np.sqrt(x.var(0) + 1e-5)
    r = np.clip(sigma_b / state.std, 1 / 1.5, 1.5)
    d = np.clip((mu_b - state.mean) / state.std, -0.5, 0.5)

    def f_constant_r_d(x, scale, bias):
        x_hat = (x - x.mean(0)) / jnp.sqrt(x.var(0) + 1e-5)
        return scale * (x_hat * r + d) + bias

    weights = RNG.normal(size=x.shape)
    argnums = (0, 1, 2)
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(weights * f(*a)), argnums))(x, params["scale"], params["bias"])
    grads_ref = jax.jit(jax.grad(lambda *a: jnp.sum(weights * f_constant_r_d(*a)), argnums))(
        x, params["scale"], params["bias"]
    )
    for g, g_ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)


@jax.jit
def mean_train_eval_mismatch(stream):
    """Runs each layer on a stream of tiny batches (t, 2, features), then measures on fresh ones."""
    features = stream.shape[-1]
    results = []
    for layer in [nn.batch_norm(features, momentum=0.95), nn.batch_renorm(features, momentum=0.95)]:
        params, state = layer.init(None)

        def step(state, x, layer=layer, params=params):
            return layer.apply(params, state, x, train=True)[1], None

        state, _ = lax.scan(step, state, stream[:400])

        def mismatch(x, layer=layer, params=params, state=state):
            y_train, _ = layer.apply(params, state, x, train=True)
            y_eval, _ = layer.apply(params, state, x, train=False)
            return jnp.mean(jnp.abs(y_train - y_eval))

        results.append(jnp.mean(jax.vmap(mismatch)(stream[400:])))
    return jnp.stack(results)


def test_tiny_batches_train_eval_mismatch_and_batch_renorm_reduces_it():
    stream = (3.0 + 2.0 * RNG.normal(size=(600, 2, 8))).astype(np.float32)
    bn_mismatch, renorm_mismatch = np.asarray(mean_train_eval_mismatch(stream))
    # Batch norm maps any batch of two to -1 and +1; evaluation sees the real spread: large gap.
    assert bn_mismatch > 0.5
    # Batch renorm's training output equals the evaluation output except where r or d is clipped.
    assert renorm_mismatch < 0.25 * bn_mismatch


def test_batch_renorm_argument_checks():
    with pytest.raises(ValueError, match="rmax"):
        nn.batch_renorm(3, rmax=0.5)
    with pytest.raises(ValueError, match="dmax"):
        nn.batch_renorm(3, dmax=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        nn.batch_norm(3, momentum=1.0)


def test_fold_batch_renorm():
    state = nn.BatchRenormState(RNG.normal(size=4), RNG.uniform(0.5, 2, size=4), jnp.asarray(10))
    bn_params = affine_params((4,))
    dense_params = {"kernel": RNG.normal(size=(3, 4)), "bias": RNG.normal(size=4)}
    x = RNG.normal(size=(5, 3))
    h = x @ dense_params["kernel"] + dense_params["bias"]
    y = bn_params["scale"] * (h - state.mean) / state.std + bn_params["bias"]  # batch_renorm in evaluation
    folded = nn.fold_batch_norm(dense_params, bn_params, state)
    np.testing.assert_allclose(x @ folded["kernel"] + folded["bias"], y, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Per-example normalizations


def flax_apply(module, params, x):
    return jax.jit(lambda params, x: module.apply({"params": params}, x))(params, x)


@pytest.mark.parametrize(
    "shape, reduction_axes, feature_axes, num_features",
    [((4, 7), -1, -1, 7), ((2, 3, 5), (1, 2), -1, 5), ((2, 3, 5), (1, 2), (1, 2), (3, 5))],
)
def test_layer_norm_matches_flax(shape, reduction_axes, feature_axes, num_features):
    x = batches(1, shape)[0]
    layer = nn.layer_norm(num_features, reduction_axes=reduction_axes, feature_axes=feature_axes)
    params, state = layer.init(None)
    params = affine_params(params["scale"].shape)
    apply = jitted(layer)
    y, new_state = apply(params, state, x, train=True)
    assert new_state == nn.EmptyState()
    module = fnn.LayerNorm(reduction_axes=reduction_axes, feature_axes=feature_axes)
    np.testing.assert_allclose(y, flax_apply(module, params, x), rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(apply(params, state, x, train=False)[0], y)


def test_layer_norm_matches_torch_with_eps_1e_5():
    x = batches(1, (3, 4, 6))[0]
    params = affine_params((6,))
    y, _ = jitted(nn.layer_norm(6, eps=1e-5))(params, nn.EmptyState(), x, train=True)
    ln = torch.nn.LayerNorm(6, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(params["scale"]))
        ln.bias.copy_(torch.from_numpy(params["bias"]))
    np.testing.assert_allclose(y, ln(torch.from_numpy(x)).detach().numpy(), rtol=1e-11, atol=1e-12)


def test_rms_norm_matches_flax_and_torch():
    x = batches(1, (3, 4, 6))[0]
    layer = nn.rms_norm(6)
    params, state = layer.init(None)
    assert set(params) == {"scale"}
    params = {"scale": RNG.uniform(0.5, 2, size=6)}
    y, _ = jitted(layer)(params, state, x, train=True)
    np.testing.assert_allclose(y, params["scale"] * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(y, flax_apply(fnn.RMSNorm(), params, x), rtol=1e-11)
    rms = torch.nn.RMSNorm(6, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        rms.weight.copy_(torch.from_numpy(params["scale"]))
    np.testing.assert_allclose(y, rms(torch.from_numpy(x)).detach().numpy(), rtol=1e-11)


def test_instance_norm_matches_flax_and_torch():
    x = batches(1, (2, 5, 6, 3))[0]  # NHWC
    layer = nn.instance_norm(3)
    params = affine_params((3,))
    y, _ = jitted(layer)(params, layer.init(None)[1], x, train=True)
    np.testing.assert_allclose(y, flax_apply(fnn.InstanceNorm(), params, x), rtol=1e-11, atol=1e-12)
    inorm = torch.nn.InstanceNorm2d(3, eps=1e-6, affine=True, dtype=torch.float64)
    with torch.no_grad():
        inorm.weight.copy_(torch.from_numpy(params["scale"]))
        inorm.bias.copy_(torch.from_numpy(params["bias"]))
    y_torch = inorm(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, y_torch, rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="batch axis"):
        nn.instance_norm(2, feature_axes=0).apply({}, nn.EmptyState(), np.ones((2, 3)), train=False)


@pytest.mark.parametrize(
    "shape, kwargs, flax_kwargs",
    [
        ((2, 3, 4, 64), {}, {}),  # default 32 groups of 2 channels
        ((3, 5, 8), dict(num_groups=None, group_size=8), dict(num_groups=None, group_size=8)),
        ((6, 8), dict(num_groups=2), dict(num_groups=2)),  # no spatial axes
    ],
)
def test_group_norm_matches_flax(shape, kwargs, flax_kwargs):
    x = batches(1, shape)[0]
    params = affine_params((shape[-1],))
    y, _ = jitted(nn.group_norm(shape[-1], **kwargs))(params, nn.EmptyState(), x, train=True)
    np.testing.assert_allclose(y, flax_apply(fnn.GroupNorm(**flax_kwargs), params, x), rtol=1e-11, atol=1e-12)


def test_group_norm_matches_torch_and_its_special_cases():
    x = batches(1, (2, 4, 5, 6))[0]
    params = affine_params((6,))
    y, _ = jitted(nn.group_norm(6, num_groups=3, eps=1e-5))(params, nn.EmptyState(), x, train=True)
    gn = torch.nn.GroupNorm(3, 6, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        gn.weight.copy_(torch.from_numpy(params["scale"]))
        gn.bias.copy_(torch.from_numpy(params["bias"]))
    y_torch = gn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, y_torch, rtol=1e-11, atol=1e-12)
    # One group is layer norm over (H, W, C); one channel per group is instance norm.
    y1, _ = jitted(nn.group_norm(6, num_groups=1))(params, nn.EmptyState(), x, train=True)
    y_ln, _ = jitted(nn.layer_norm(6, reduction_axes=(1, 2, 3)))(params, nn.EmptyState(), x, train=True)
    np.testing.assert_allclose(y1, y_ln, rtol=1e-12, atol=1e-12)
    y6, _ = jitted(nn.group_norm(6, num_groups=6))(params, nn.EmptyState(), x, train=True)
    y_in, _ = jitted(nn.instance_norm(6))(params, nn.EmptyState(), x, train=True)
    np.testing.assert_allclose(y6, y_in, rtol=1e-12, atol=1e-12)


def test_group_norm_argument_checks():
    with pytest.raises(ValueError, match="must divide num_features=48"):
        nn.group_norm(48)  # 32 does not divide 48
    with pytest.raises(ValueError, match="exactly one of"):
        nn.group_norm(8, num_groups=2, group_size=4)
    with pytest.raises(ValueError, match="group_size=3 must divide"):
        nn.group_norm(8, num_groups=None, group_size=3)


def test_feature_shape_is_checked():
    layer = nn.layer_norm(5)
    with pytest.raises(ValueError, match=r"features of shape \(5,\) expected on axes \(1,\), found \(4,\)"):
        layer.apply(layer.init(None)[0], nn.EmptyState(), np.ones((2, 4)), train=False)
    bn = nn.batch_norm(5)
    with pytest.raises(ValueError, match="batch_norm"):
        bn.apply(*bn.init(None), np.ones((2, 4)), train=True)


def test_per_example_norm_gradients():
    layers = [nn.layer_norm(4), nn.rms_norm(4), nn.instance_norm(4), nn.group_norm(4, num_groups=2)]
    params = [jax.tree.map(lambda p: RNG.uniform(0.5, 2.0, size=p.shape), layer.init(None)[0]) for layer in layers]
    x = batches(1, (2, 3, 4))[0]

    @jax.jit
    def all_outputs(x, params):
        return jnp.stack([layer.apply(p, nn.EmptyState(), x, train=True)[0] for layer, p in zip(layers, params)])

    check_grads(all_outputs, (x, params), order=1, modes=("rev",))


def test_layer_norm_statistics_over_a_sharded_feature_axis():
    # Features split over 2 "devices": statistics averaged with axis_name equal the unsplit ones.
    x = batches(1, (3, 8))[0]
    layer = nn.layer_norm(4, use_scale=False, use_bias=False)
    split = x.reshape(3, 2, 4).transpose(1, 0, 2)
    sharded = jax.vmap(lambda x: layer.apply({}, nn.EmptyState(), x, train=True, axis_name="d")[0], axis_name="d")
    y = jax.jit(sharded)(split)
    y_ref, _ = jitted(nn.layer_norm(8, use_scale=False, use_bias=False))({}, nn.EmptyState(), x, train=True)
    np.testing.assert_allclose(y.transpose(1, 0, 2).reshape(3, 8), y_ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# weight_norm


def test_weight_normalize_formula():
    v = RNG.normal(size=(5, 3))
    g = RNG.uniform(0.5, 2, size=3)
    w = nn.weight_normalize(v, g)
    np.testing.assert_allclose(w, g * v / np.linalg.norm(v, axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), g, rtol=1e-12)


def test_weight_norm_init_keeps_the_layer_initial_kernel():
    inner = nn.dense(16, 8)
    layer = nn.weight_norm(inner)
    params, _ = layer.init(jax.random.key(0))
    assert set(params) == {"kernel", "bias", "kernel_scale"}
    inner_params, _ = inner.init(jax.random.split(jax.random.key(0))[0])
    np.testing.assert_allclose(params["kernel"], inner_params["kernel"], rtol=1e-6)
    w = nn.weight_normalize(params["kernel"], params["kernel_scale"])
    np.testing.assert_allclose(w, params["kernel"], rtol=1e-6)
    params, _ = nn.weight_norm(inner, scale_init=nn.ones).init(jax.random.key(0))
    np.testing.assert_array_equal(params["kernel_scale"], np.ones(8))


def test_weight_norm_matches_flax_and_torch():
    x = RNG.normal(size=(4, 5))
    v, g, b = RNG.normal(size=(5, 3)), RNG.uniform(0.5, 2, size=3), RNG.normal(size=3)
    layer = nn.weight_norm(nn.dense(5, 3))
    y, _ = jitted(layer)({"kernel": v, "kernel_scale": g, "bias": b}, nn.EmptyState(), x, train=True)
    flax_variables = {"params": {"layer_instance": {"kernel": v, "bias": b}, "layer_instance/kernel/scale": g}}
    y_flax = jax.jit(fnn.WeightNorm(fnn.Dense(3)).apply)(flax_variables, x)
    np.testing.assert_allclose(y, y_flax, rtol=1e-12)
    linear = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(5, 3, dtype=torch.float64), dim=0)
    with torch.no_grad():
        linear.parametrizations.weight.original0.copy_(torch.from_numpy(g[:, None]))  # g, (out, 1)
        linear.parametrizations.weight.original1.copy_(torch.from_numpy(v.T))  # v, (out, in)
        linear.bias.copy_(torch.from_numpy(b))
    np.testing.assert_allclose(y, linear(torch.from_numpy(x)).detach().numpy(), rtol=1e-11)


def test_weight_norm_gradients_match_the_closed_form():
    v, g = RNG.normal(size=(5, 3)), RNG.uniform(0.5, 2, size=3)
    upstream = RNG.normal(size=(5, 3))  # dL/dw for L = sum(upstream * w)
    loss = lambda g, v: jnp.sum(upstream * nn.weight_normalize(v, g, eps=0.0))
    grad_g, grad_v = jax.jit(jax.grad(loss, (0, 1)))(g, v)
    norm = np.linalg.norm(v, axis=0)
    np.testing.assert_allclose(grad_g, (upstream * v).sum(0) / norm, rtol=1e-12)
    projected = upstream - v * (v * upstream).sum(0) / norm**2
    np.testing.assert_allclose(grad_v, g / norm * projected, rtol=1e-11, atol=1e-13)
    check_grads(jax.jit(lambda g, v: nn.weight_normalize(v, g)), (g, v), order=1, modes=("rev",))


def test_weight_norm_of_a_conv_kernel_and_errors():
    v = RNG.normal(size=(3, 3, 2, 4))
    g = RNG.uniform(0.5, 2, size=4)
    w = jax.jit(nn.weight_normalize)(v, g)
    np.testing.assert_allclose(np.sqrt((np.asarray(w) ** 2).sum(axis=(0, 1, 2))), g, rtol=1e-12)
    with pytest.raises(ValueError, match="no param 'weight'"):
        nn.weight_norm(nn.dense(2, 2), param_name="weight").init(jax.random.key(0))
