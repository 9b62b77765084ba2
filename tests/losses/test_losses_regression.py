"""gradtx.losses.regression against optax.losses (float64, values and gradients) and torch."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from losses_reference import assert_close, check_matches, rng

from gradtx import losses

ELEMENTWISE = ["squared_error", "l2_loss", "huber_loss", "log_cosh"]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
@pytest.mark.parametrize("with_targets", [True, False])
def test_elementwise_losses(name, shape, with_targets):
    r = rng(10)
    predictions = jnp.asarray(3 * r.normal(size=shape))
    targets = jnp.asarray(r.normal(size=shape))
    args = (predictions, targets) if with_targets else (predictions,)
    check_matches(getattr(losses, name), getattr(optax.losses, name), args, argnums=tuple(range(len(args))))


@pytest.mark.parametrize("delta", [0.1, 1.0, 2.5])
def test_huber_loss_matches_torch(delta):
    r = rng(11)
    predictions, targets = r.normal(size=(4, 6)) * 3, r.normal(size=(4, 6))
    value = check_matches(losses.huber_loss, optax.losses.huber_loss, (jnp.asarray(predictions), jnp.asarray(targets)),
                          kwargs={"delta": delta})
    p, t = torch.tensor(predictions, requires_grad=True), torch.tensor(targets)
    expected = F.huber_loss(p, t, delta=delta, reduction="none")
    assert_close(value, expected.detach().numpy())
    # The gradient is the residual clipped to [-delta, delta].
    expected.sum().backward()
    assert_close(p.grad.numpy(), np.clip(predictions - targets, -delta, delta))


def test_squared_error_matches_torch_mse():
    r = rng(12)
    p, t = r.normal(size=(3, 5)), r.normal(size=(3, 5))
    value = losses.squared_error(jnp.asarray(p), jnp.asarray(t))
    assert_close(value, F.mse_loss(torch.tensor(p), torch.tensor(t), reduction="none").numpy())
    assert_close(losses.l2_loss(jnp.asarray(p), jnp.asarray(t)), 0.5 * value)


def test_log_cosh_large_errors_are_finite():
    errors = jnp.array([-1e4, -800.0, -1e-8, 0.0, 1e-8, 800.0, 1e4])
    value = check_matches(losses.log_cosh, optax.losses.log_cosh, (errors,))
    assert np.all(np.isfinite(value))
    assert_close(value[-1], 1e4 - np.log(2.0))
    assert_close(value[2], 0.5e-16, rtol=1e-6)


@pytest.mark.parametrize("name", ["cosine_similarity", "cosine_distance"])
@pytest.mark.parametrize("shape,axis,where,epsilon", [((4, 6), -1, False, 0.0), ((4, 6), 0, False, 1e-3),
                                                      ((2, 3, 4), (1, 2), False, 0.0), ((2, 3, 4), None, False, 1e-3),
                                                      ((4, 6), -1, True, 1e-3), ((2, 3, 4), 1, True, 0.0)])
def test_cosine(name, shape, axis, where, epsilon):
    r = rng(13)
    predictions, targets = jnp.asarray(r.normal(size=shape)), jnp.asarray(r.normal(size=shape))
    mask = jnp.asarray(r.uniform(size=shape) < 0.7) if where else None
    kwargs = {"epsilon": epsilon, "axis": axis, "where": mask}
    check_matches(getattr(losses, name), getattr(optax.losses, name), (predictions, targets), argnums=(0, 1),
                  kwargs=kwargs)


def test_cosine_similarity_matches_torch_and_handles_zero_vectors():
    r = rng(14)
    a, b = r.normal(size=(5, 7)), r.normal(size=(5, 7))
    value = losses.cosine_similarity(jnp.asarray(a), jnp.asarray(b))
    assert_close(value, F.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=-1).numpy())
    assert_close(losses.cosine_distance(jnp.asarray(a), jnp.asarray(b)), 1.0 - value)
    zero = jnp.zeros((1, 7))
    assert losses.cosine_similarity(zero, jnp.asarray(b[:1]), epsilon=1e-12)[0] == 0.0


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="targets"):
        losses.squared_error(jnp.zeros(3), jnp.zeros((3, 1)))
    with pytest.raises(TypeError, match="predictions"):
        losses.huber_loss(jnp.zeros(3, int))
    with pytest.raises(TypeError, match="targets"):
        losses.cosine_similarity(jnp.zeros(3), jnp.zeros(3, int))
