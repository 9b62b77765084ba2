"""gradtx.losses.self_supervised against optax.losses (float64, values and gradients), torch and the papers."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from losses_reference import assert_close, check_matches, rng

from gradtx import losses


def _ntxent_loop(x, labels, temperature):
    """Chen et al. (2020), eq. (1), summed over positive pairs by loops (negatives: other labels only)."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = unit @ unit.T / temperature
    total, count = 0.0, 0
    for i in range(len(x)):
        negatives = [k for k in range(len(x)) if labels[k] != labels[i]]
        for j in range(len(x)):
            if j != i and labels[j] == labels[i]:
                denominator = np.exp(s[i, j]) + sum(np.exp(s[i, k]) for k in negatives)
                total += -np.log(np.exp(s[i, j]) / denominator)
                count += 1
    return total / count


@pytest.mark.parametrize("labels", [[0, 0, 1, 1], [0, 1, 0, 1, 2, 2], [3, 3, 3, 1, 1, 0, 0, 2], [5, 5, 5]])
@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_ntxent(labels, temperature):
    r = rng(50)
    embeddings = jnp.asarray(r.normal(size=(len(labels), 5)))
    labels = jnp.asarray(labels)
    value = check_matches(losses.ntxent, optax.losses.ntxent, (embeddings, labels, temperature))
    assert_close(value, _ntxent_loop(np.asarray(embeddings), np.asarray(labels), temperature))


def test_ntxent_small_temperature_stays_finite():
    r = rng(51)
    embeddings, labels = jnp.asarray(r.normal(size=(6, 4))), jnp.array([0, 0, 1, 1, 2, 2])
    value = check_matches(losses.ntxent, optax.losses.ntxent, (embeddings, labels, 1e-3))
    assert np.isfinite(value)
    with pytest.raises(ValueError, match="labels"):
        losses.ntxent(embeddings, labels[:5])
    with pytest.raises(ValueError, match="embeddings"):
        losses.ntxent(embeddings[0], labels)


@pytest.mark.parametrize("norm_degree", [2, 4, 2.0])
@pytest.mark.parametrize("margin,eps,axis", [(1.0, 1e-6, -1), (0.2, 0.0, 0), (3.0, 1e-3, -1)])
def test_triplet_margin_loss_matches_optax(norm_degree, margin, eps, axis):
    r = rng(52)
    a, p, n = (jnp.asarray(r.normal(size=(6, 4))) for _ in range(3))
    kwargs = {"axis": axis, "norm_degree": norm_degree, "margin": margin, "eps": eps}
    value = check_matches(losses.triplet_margin_loss, optax.losses.triplet_margin_loss, (a, p, n), argnums=(0, 1, 2),
                          kwargs=kwargs)
    assert np.any(np.asarray(value) > 0)


@pytest.mark.parametrize("norm_degree", [1, 2, 3])
def test_triplet_margin_loss_is_the_p_norm_loss_of_torch(norm_degree):
    r = rng(53)
    a, p, n = (r.normal(size=(8, 5)) for _ in range(3))
    value = losses.triplet_margin_loss(jnp.asarray(a), jnp.asarray(p), jnp.asarray(n), norm_degree=norm_degree,
                                       margin=0.5, eps=0.0)
    expected = F.triplet_margin_loss(torch.tensor(a), torch.tensor(p), torch.tensor(n), margin=0.5, p=norm_degree,
                                     eps=0.0, reduction="none")
    assert_close(value, expected.numpy())
    optax_value = optax.losses.triplet_margin_loss(jnp.asarray(a), jnp.asarray(p), jnp.asarray(n),
                                                   norm_degree=norm_degree, margin=0.5, eps=0.0)
    if norm_degree % 2 == 0:
        assert_close(optax_value, value)
    else:  # Optax sums signed (a - b)^p: not a distance for odd p.
        assert not np.allclose(optax_value, value)
