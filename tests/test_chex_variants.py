"""Two steps of the classic optimizers against their closed forms, in every execution variant.

``chex.variants`` runs each check jitted and eager, with the inputs placed on a device and kept as
NumPy arrays; ``chex.assert_*`` compares whole trees and names the leaf that differs. The expected
updates are the papers' formulas written out for two steps from a zero state in float64 NumPy.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

LR, B1, B2, EPS, DECAY, INITIAL, WEIGHT_DECAY = 0.1, 0.9, 0.999, 1e-8, 0.9, 0.1, 1e-3
LION_B2 = 0.99

RNG = np.random.default_rng(0)
PARAMS = {"w": RNG.normal(size=(3, 4)), "b": RNG.normal(size=(4,))}
GRADS = [jax.tree.map(lambda x: RNG.normal(size=x.shape), PARAMS) for _ in range(2)]


def _adam(w, g1, g2):
    m = (1 - B1) * B1 * g1 + (1 - B1) * g2
    v = (1 - B2) * B2 * g1**2 + (1 - B2) * g2**2
    return -LR * (m / (1 - B1**2)) / (np.sqrt(v / (1 - B2**2)) + EPS)


def _momentum(w, g1, g2):
    return -LR * (B1 * g1 + g2)


def _rmsprop(w, g1, g2):
    return -LR * g2 / np.sqrt(DECAY * (1 - DECAY) * g1**2 + (1 - DECAY) * g2**2 + EPS)


def _adagrad(w, g1, g2):
    return -LR * g2 / np.sqrt(INITIAL + g1**2 + g2**2 + 1e-7)


def _lion(w, g1, g2):
    # Step 1 moves w to w - LR (sign((1 - B1) g1) + wd w); step 2 interpolates with m_1 = (1 - B2) g1.
    w1 = w - LR * (np.sign(g1) + WEIGHT_DECAY * w)
    return -LR * (np.sign(B1 * (1 - LION_B2) * g1 + (1 - B1) * g2) + WEIGHT_DECAY * w1)


# (name, builder, second update as a function of the initial params and both gradients)
CASES = [
    ("adam", lambda: gradtx.adam(LR, b1=B1, b2=B2, eps=EPS), _adam),
    ("sgd_momentum", lambda: gradtx.sgd(LR, momentum=B1), _momentum),
    ("rmsprop", lambda: gradtx.rmsprop(LR, decay=DECAY, eps=EPS), _rmsprop),
    ("adagrad", lambda: gradtx.adagrad(LR, initial_accumulator_value=INITIAL), _adagrad),
    ("lion", lambda: gradtx.lion(LR, b1=B1, b2=LION_B2, weight_decay=WEIGHT_DECAY), _lion),
]


class TestClosedForms(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_second_update_matches_closed_form(self):
        for name, make, closed_form in CASES:
            transform = make()

            @self.variant
            def two_updates(params, grads, transform=transform):
                state = transform.init(params)
                first, state = transform.update(grads[0], state, params)
                params = gradtx.apply_updates(params, first)
                second, state = transform.update(grads[1], state, params)
                return second, state

            updates, state = two_updates(PARAMS, GRADS)
            expected = jax.tree.map(closed_form, PARAMS, GRADS[0], GRADS[1])
            chex.assert_trees_all_equal_shapes_and_dtypes(updates, jax.tree.map(jnp.asarray, PARAMS))
            chex.assert_tree_all_finite(state)
            chex.assert_trees_all_close(updates, expected, rtol=1e-10, atol=1e-12, custom_message=name)


@pytest.mark.parametrize("name, make, closed_form", CASES, ids=[case[0] for case in CASES])
def test_float32_stays_float32(name, make, closed_form):
    params32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), PARAMS)
    transform = make()
    state = transform.init(params32)
    updates, state = transform.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), GRADS[0]), state, params32)
    chex.assert_trees_all_equal_dtypes(updates, params32)
    chex.assert_tree_all_finite(updates)
