"""gradtx.losses.fenchel_young against optax.losses (float64, values and gradients) and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import logsumexp
from losses_reference import assert_close, check_matches, rng, weights

from gradtx import losses


@pytest.mark.parametrize("shape", [(7,), (4, 6), (2, 3, 5)])
@pytest.mark.parametrize("scale", [0.3, 1.0, 5.0])
def test_sparsemax_loss(shape, scale):
    r = rng(40)
    logits = jnp.asarray(scale * r.normal(size=shape))
    labels = jnp.asarray(r.integers(0, 2, shape))
    value = check_matches(losses.sparsemax_loss, optax.losses.sparsemax_loss, (logits, labels))
    z = np.where(np.asarray(labels), -np.asarray(logits), np.asarray(logits))
    assert_close(value, np.where(z <= -1, 0.0, np.where(z >= 1, z, (z + 1) ** 2 / 4)))


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 1e4])
@pytest.mark.parametrize("classes", [2, 5, 12])
def test_multiclass_sparsemax_loss(scale, classes):
    r = rng(41)
    scores = jnp.asarray(scale * r.normal(size=(8, classes)))
    labels = jnp.asarray(r.integers(0, classes, 8))
    value, grads = check_matches(losses.multiclass_sparsemax_loss, optax.losses.multiclass_sparsemax_loss,
                                 (scores, labels), atol=1e-11, return_grads=True)
    # Martins & Astudillo (2016), eq. (14): -s_y + (1/2) sum_{j in S} (s_j^2 - tau^2) + 1/2, and the
    # gradient p - onehot(y) (eq. 15), with p the projection by sorting.
    s, y = np.asarray(scores), np.asarray(labels)
    for i in range(8):
        u = np.sort(s[i])[::-1]
        k = max(j for j in range(1, classes + 1) if 1 + j * u[j - 1] > u[:j].sum())
        tau = (u[:k].sum() - 1) / k
        support = s[i] > tau
        expected = -s[i, y[i]] + 0.5 * ((s[i, support] ** 2).sum() - k * tau**2) + 0.5
        # (this form cancels: s_j^2 of order scale^2 for a loss of order scale)
        assert_close(value[i], expected, rtol=1e-9, atol=1e-13 * scale**2)
        p = np.maximum(s[i] - tau, 0)
        assert_close(grads[i], weights((8,))[i] * (p - np.eye(classes)[y[i]]), atol=1e-10)
    assert np.all(np.asarray(value) >= -1e-12)


def test_multiclass_sparsemax_loss_many_batch_axes_and_zero_at_the_label():
    r = rng(42)
    scores = jnp.asarray(r.normal(size=(2, 3, 5)))
    labels = jnp.asarray(r.integers(0, 5, (2, 3)))
    flat = losses.multiclass_sparsemax_loss(scores.reshape(6, 5), labels.reshape(6))
    assert_close(losses.multiclass_sparsemax_loss(scores, labels), flat.reshape(2, 3))
    confident = jnp.array([[5.0, 0.0, 0.0]])
    assert losses.multiclass_sparsemax_loss(confident, jnp.array([0]))[0] == 0.0
    with pytest.raises(ValueError, match="labels"):
        losses.multiclass_sparsemax_loss(scores, labels[0])


@pytest.mark.parametrize("shape", [(6,), (4, 6), (2, 3, 6)])
def test_fenchel_young_with_logsumexp_is_softmax_cross_entropy(shape):
    r = rng(43)
    scores = jnp.asarray(r.normal(size=shape))
    targets = jnp.asarray(np.asarray(jax.nn.softmax(jnp.asarray(r.normal(size=shape)))))
    ours, theirs = losses.make_fenchel_young_loss(logsumexp), optax.losses.make_fenchel_young_loss(logsumexp)
    value = check_matches(ours, theirs, (scores, targets), argnums=(0, 1))
    assert_close(value, losses.softmax_cross_entropy(scores, targets))


def test_fenchel_young_passes_extra_arguments_to_max_fun():
    def scaled_logsumexp(s, temperature=1.0):
        return temperature * logsumexp(s / temperature)

    loss = losses.make_fenchel_young_loss(scaled_logsumexp)
    scores, targets = jnp.array([[1.0, 2.0, 0.5]]), jnp.array([[0.0, 1.0, 0.0]])
    assert_close(loss(scores, targets, temperature=0.5), 0.5 * logsumexp(scores / 0.5, axis=-1) - 2.0)
