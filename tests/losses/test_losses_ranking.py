"""gradtx.losses.ranking_softmax_loss against optax.losses (float64, values and gradients) and the formula."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from losses_reference import assert_close, check_matches, rng

from gradtx import losses


@pytest.mark.parametrize("shape", [(6,), (2, 3, 5)])
@pytest.mark.parametrize("reduce_fn", [jnp.mean, jnp.sum, None])
@pytest.mark.parametrize("where,weighted", [(False, False), (True, False), (True, True)])
def test_ranking_softmax_loss(shape, reduce_fn, where, weighted):
    r = rng(70)
    logits = jnp.asarray(2 * r.normal(size=shape))
    labels = jnp.asarray(r.integers(0, 3, shape).astype(float))
    kwargs = {"reduce_fn": reduce_fn}
    if where:
        mask = r.uniform(size=shape) < 0.7
        if len(shape) > 1:
            mask.reshape(-1, shape[-1])[0] = False  # one list with no valid item
        kwargs["where"] = jnp.asarray(mask)
    if weighted:
        kwargs["weights"] = jnp.asarray(r.uniform(0.5, 2.0, shape))
    value = check_matches(losses.ranking_softmax_loss, optax.losses.ranking_softmax_loss, (logits, labels),
                          kwargs=kwargs)
    if not where and not weighted and reduce_fn is None:
        x, y = np.asarray(logits), np.asarray(labels)
        log_p = x - np.log(np.exp(x).sum(-1, keepdims=True))
        assert_close(value, -(y * log_p).sum(-1))


def test_ranking_softmax_loss_all_lists_masked_is_zero():
    logits, labels = jnp.ones((2, 3)), jnp.ones((2, 3))
    assert losses.ranking_softmax_loss(logits, labels, where=jnp.zeros((2, 3), bool)) == 0.0
    with pytest.raises(TypeError, match="logits"):
        losses.ranking_softmax_loss(jnp.ones((2, 3), int), labels)
