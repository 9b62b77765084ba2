"""gradtx.losses.divergences against optax.losses (float64, values and gradients) and torch.nn.functional.kl_div."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from losses_reference import assert_close, check_matches, rng

from gradtx import losses

NAMES = ["kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence"]
CASES = [((4, 6), -1, False), ((4, 6), 0, False), ((2, 3, 4), (1, 2), False), ((2, 3, 4), None, False),
         ((4, 6), -1, True), ((2, 3, 4), 1, True)]


def _inputs(r, shape, axis, log_targets):
    log_q = np.asarray(jax.nn.log_softmax(jnp.asarray(r.normal(size=shape)), axis=axis))
    t = np.asarray(jax.nn.softmax(jnp.asarray(2 * r.normal(size=shape)), axis=axis))
    return jnp.asarray(log_q), jnp.asarray(np.log(t) if log_targets else t)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape,axis,where", CASES)
def test_divergences_match_optax(name, shape, axis, where):
    r = rng(20)
    args = _inputs(r, shape, axis, name == "kl_divergence_with_log_targets")
    mask = jnp.asarray(r.uniform(size=shape) < 0.7) if where else None
    value = check_matches(getattr(losses, name), getattr(optax.losses, name), args, argnums=(0, 1),
                          kwargs={"axis": axis, "where": mask})
    if not where and name != "generalized_kl_divergence" and name != "convex_kl_divergence":
        assert np.all(np.asarray(value) >= -1e-12)


def test_kl_divergence_matches_torch_and_handles_zero_targets():
    r = rng(21)
    log_q = jax.nn.log_softmax(jnp.asarray(r.normal(size=(5, 6))))
    positive = jax.nn.softmax(jnp.asarray(r.normal(size=(5, 6))))
    t = np.array(positive)
    t[:, :2] = 0.0
    t /= t.sum(-1, keepdims=True)
    t = jnp.asarray(t)
    value = check_matches(losses.kl_divergence, optax.losses.kl_divergence, (log_q, t))
    expected = F.kl_div(torch.tensor(np.asarray(log_q)), torch.tensor(np.asarray(t)), reduction="none").sum(-1)
    assert_close(value, expected.numpy())
    log_t = jnp.log(positive)
    value = check_matches(losses.kl_divergence_with_log_targets, optax.losses.kl_divergence_with_log_targets,
                          (log_q, log_t))
    expected = F.kl_div(torch.tensor(np.asarray(log_q)), torch.tensor(np.asarray(log_t)), reduction="none",
                        log_target=True).sum(-1)
    assert_close(value, expected.numpy())
    # The gradient with respect to a zero target is -log q (Optax's is nan there).
    grad_t = jax.grad(lambda t: losses.kl_divergence(log_q, t).sum())(t)
    assert_close(grad_t[:, :2], -log_q[:, :2])
    assert np.all(np.isnan(jax.grad(lambda t: optax.losses.kl_divergence(log_q, t).sum())(t)[:, :2]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_convex_kl_divergence_is_the_generalized_one():
    r = rng(23)
    args = _inputs(r, (3, 4), -1, False)
    check_matches(losses.convex_kl_divergence, optax.losses.convex_kl_divergence, args, argnums=(0, 1))
    assert_close(losses.convex_kl_divergence(*args), losses.generalized_kl_divergence(*args))


def test_generalized_kl_divergence_on_unnormalized_measures():
    r = rng(22)
    q, t = r.uniform(0.1, 2.0, (3, 5)), r.uniform(0.1, 2.0, (3, 5))
    value = check_matches(losses.generalized_kl_divergence, optax.losses.generalized_kl_divergence,
                          (jnp.log(jnp.asarray(q)), jnp.asarray(t)), argnums=(0, 1))
    assert_close(value, (t * np.log(t / q) - t + q).sum(-1))
    assert np.all(np.asarray(value) > 0)


def test_dtype_errors_name_the_argument():
    with pytest.raises(TypeError, match="targets"):
        losses.kl_divergence(jnp.zeros(3), jnp.zeros(3, int))
    with pytest.raises(TypeError, match="log_predictions"):
        losses.kl_divergence_with_log_targets(jnp.zeros(3, int), jnp.zeros(3))
