"""gradtx.losses.smooth_labels against optax.losses.smooth_labels and the formula."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from losses_reference import assert_close, check_matches, rng

from gradtx import losses


@pytest.mark.parametrize("shape,axis,where", [((4, 5), -1, False), ((4, 5), 0, False), ((2, 3, 4), (1, 2), False),
                                              ((2, 3, 4), None, False), ((4, 5), -1, True), ((2, 3, 4), 1, True)])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_smooth_labels(shape, axis, where, alpha):
    r = rng(30)
    labels = jnp.asarray(r.uniform(size=shape))
    mask = jnp.asarray(r.uniform(size=shape) < 0.7) if where else None
    value = check_matches(losses.smooth_labels, optax.losses.smooth_labels, (labels, alpha),
                          kwargs={"axis": axis, "where": mask})
    if not where:
        count = labels.size if axis is None else np.prod([shape[a] for a in np.atleast_1d(axis)])
        assert_close(value, (1 - alpha) * np.asarray(labels) + alpha / count)


def test_smoothed_one_hot_sums_to_one():
    one_hot = jax.nn.one_hot(jnp.array([0, 3, 2]), 4, dtype=jnp.float64)
    smoothed = losses.smooth_labels(one_hot, 0.2)
    assert_close(smoothed.sum(-1), np.ones(3))
    assert_close(smoothed[0], [0.85, 0.05, 0.05, 0.05])
    with pytest.raises(TypeError, match="labels"):
        losses.smooth_labels(jnp.zeros((2, 3), int), 0.1)
