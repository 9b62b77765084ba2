"""gradtx.losses has every loss of optax.losses, with the same argument names, order, kinds and defaults."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import losses

OPTAX_NAMES = sorted(n for n in dir(optax.losses) if not n.startswith("_") and callable(getattr(optax.losses, n)))


def test_same_names_as_optax():
    ours = {name for name in losses.__all__ if callable(getattr(losses, name)) and not inspect.ismodule(
        getattr(losses, name))}
    assert ours == set(OPTAX_NAMES)
    assert gradtx.losses is losses


@pytest.mark.parametrize("name", OPTAX_NAMES)
def test_same_signature_as_optax(name):
    ours = inspect.signature(getattr(losses, name)).parameters
    theirs = inspect.signature(inspect.unwrap(getattr(optax.losses, name))).parameters
    assert list(ours) == list(theirs)
    for parameter in theirs:
        a, b = ours[parameter], theirs[parameter]
        assert a.kind == b.kind, parameter
        if b.default is jnp.mean:
            assert a.default is jnp.mean
        else:
            assert a.default == b.default and type(a.default) is type(b.default), parameter


def test_docstrings_cite_the_optax_loss():
    for name in OPTAX_NAMES:
        assert f"``optax.losses.{name}``" in getattr(losses, name).__doc__, name


def _examples(dtype):
    r = np.random.default_rng(0)

    def f(*shape):
        return jnp.asarray(r.normal(size=shape), dtype)

    def prob(*shape):
        return jax.nn.softmax(f(*shape))

    labels, binary, signs = jnp.array([0, 2, 1]), jnp.asarray(r.integers(0, 2, (3, 4)), dtype), jnp.sign(f(3, 4))
    one_hot = jax.nn.one_hot(jnp.asarray(r.integers(0, 3, (2, 4, 4))), 3, dtype=dtype)
    return {
        "binary_dice_loss": (f(2, 4, 4), jnp.asarray(r.integers(0, 2, (2, 4, 4)), dtype)),
        "convex_kl_divergence": (jnp.log(prob(3, 4)), prob(3, 4)),
        "cosine_distance": (f(3, 4), f(3, 4)),
        "cosine_similarity": (f(3, 4), f(3, 4)),
        "ctc_loss": (f(2, 6, 4), jnp.zeros((2, 6), dtype), jnp.array([[1, 2], [3, 3]]), jnp.zeros((2, 2), dtype)),
        "ctc_loss_with_forward_probs": (f(2, 6, 4), jnp.zeros((2, 6), dtype), jnp.array([[1, 2], [3, 3]]),
                                        jnp.zeros((2, 2), dtype)),
        "dice_loss": (f(2, 4, 4, 3), one_hot),
        "generalized_kl_divergence": (jnp.log(prob(3, 4)), prob(3, 4)),
        "hinge_loss": (f(3, 4), signs),
        "huber_loss": (f(3, 4), f(3, 4)),
        "kl_divergence": (jnp.log(prob(3, 4)), prob(3, 4)),
        "kl_divergence_with_log_targets": (jnp.log(prob(3, 4)), jnp.log(prob(3, 4))),
        "l2_loss": (f(3, 4), f(3, 4)),
        "log_cosh": (f(3, 4), f(3, 4)),
        "multiclass_generalized_dice_loss": (f(2, 4, 4, 3), one_hot),
        "multiclass_hinge_loss": (f(3, 4), labels),
        "multiclass_perceptron_loss": (f(3, 4), labels),
        "multiclass_sparsemax_loss": (f(3, 4), labels),
        "ntxent": (f(4, 3), jnp.array([0, 0, 1, 1])),
        "perceptron_loss": (f(3, 4), signs),
        "poly_loss_cross_entropy": (f(3, 4), prob(3, 4)),
        "ranking_softmax_loss": (f(3, 4), binary),
        "safe_softmax_cross_entropy": (f(3, 4), prob(3, 4)),
        "sigmoid_binary_cross_entropy": (f(3, 4), binary),
        "sigmoid_focal_loss": (f(3, 4), binary),
        "smooth_labels": (prob(3, 4), 0.1),
        "softmax_cross_entropy": (f(3, 4), prob(3, 4)),
        "softmax_cross_entropy_with_integer_labels": (f(3, 4), labels),
        "sparsemax_loss": (f(3, 4), binary),
        "squared_error": (f(3, 4), f(3, 4)),
        "triplet_margin_loss": (f(3, 4), f(3, 4), f(3, 4)),
    }


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", [n for n in OPTAX_NAMES if n != "make_fenchel_young_loss"])
def test_float32_in_float32_out_under_jit(name):
    args = _examples(jnp.float32)[name]
    ours = jax.jit(getattr(losses, name))(*args)
    theirs = getattr(optax.losses, name)(*args)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.dtype == jnp.float32, (name, a.dtype)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
