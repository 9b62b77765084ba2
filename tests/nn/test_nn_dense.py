"""gradtx.nn.dense: the affine layer, against flax.linen.Dense and torch.nn.Linear."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gradtx import nn

RNG = np.random.default_rng(0)


def test_init_shapes_dtypes_and_default_lecun_normal():
    layer = nn.dense(16, 8)
    params, state = layer.init(jax.random.key(0))
    assert params["kernel"].shape == (16, 8) and params["kernel"].dtype == jnp.float32
    np.testing.assert_array_equal(params["bias"], np.zeros(8))
    assert state == nn.EmptyState()
    kernel_key, _ = jax.random.split(jax.random.key(0))
    np.testing.assert_array_equal(params["kernel"], nn.lecun_normal()(kernel_key, (16, 8), jnp.float32))


def test_custom_initializers_and_no_bias():
    params, _ = nn.dense(4, 2, kernel_init=nn.ones, bias_init=nn.constant(0.01)).init(jax.random.key(0))
    np.testing.assert_array_equal(params["kernel"], np.ones((4, 2)))
    np.testing.assert_allclose(params["bias"], np.full(2, 0.01))
    layer = nn.dense(4, 2, use_bias=False, kernel_init=nn.ones)
    params, state = layer.init(None)
    assert set(params) == {"kernel"}
    y, _ = layer.apply(params, state, np.ones((3, 4)), train=True)
    np.testing.assert_array_equal(y, np.full((3, 2), 4.0))


def test_matches_flax_dense_and_torch_linear():
    x = RNG.normal(size=(2, 6, 5))
    params = {"kernel": RNG.normal(size=(5, 3)), "bias": RNG.normal(size=3)}
    layer = nn.dense(5, 3)
    y, _ = layer.apply(params, nn.EmptyState(), x, train=False)
    y_flax = fnn.Dense(3).apply({"params": params}, x)
    np.testing.assert_allclose(y, y_flax, rtol=1e-13)
    linear = torch.nn.Linear(5, 3, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(params["kernel"].T))  # torch stores W^T
        linear.bias.copy_(torch.from_numpy(params["bias"]))
    np.testing.assert_allclose(y, linear(torch.from_numpy(x)).detach().numpy(), rtol=1e-13)


def test_wrong_input_size():
    layer = nn.dense(5, 3)
    with pytest.raises(ValueError, match="last axis 5"):
        layer.apply({"kernel": np.ones((5, 3))}, nn.EmptyState(), np.ones((2, 4)), train=False)


def test_module_docstring_example_runs():
    # The MLP in gradtx.nn's docstring, executed (at widths that share compiled samplers with other tests).
    hidden, bn, out = nn.dense(16, 8, kernel_init=nn.he_normal()), nn.batch_norm(8), nn.dense(8, 16)
    k1, k2 = jax.random.split(jax.random.key(0))
    (p1, s1), (p2, s2), (p3, s3) = hidden.init(k1), bn.init(None), out.init(k2)

    def forward(params, bn_state, x, train):
        p1, p2, p3 = params
        h, _ = hidden.apply(p1, s1, x, train=train)
        h, bn_state = bn.apply(p2, bn_state, h, train=train)
        logits, _ = out.apply(p3, s3, nn.relu(h), train=train)
        return logits, bn_state

    x = RNG.normal(size=(4, 16)).astype(np.float32)
    logits, new_bn_state = jax.jit(forward, static_argnums=3)((p1, p2, p3), s2, x, True)
    assert logits.shape == (4, 16) and logits.dtype == jnp.float32
    assert not np.allclose(new_bn_state.mean, s2.mean)
