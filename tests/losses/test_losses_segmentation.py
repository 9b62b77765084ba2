"""gradtx.losses.segmentation against optax.losses (float64, values and gradients) and the Dice formula."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from losses_reference import assert_close, check_matches, rng

from gradtx import losses


def _segmentation(seed, shape):
    r = rng(seed)
    logits = jnp.asarray(2 * r.normal(size=shape))
    targets = jax.nn.one_hot(jnp.asarray(r.integers(0, shape[-1], shape[:-1])), shape[-1], dtype=jnp.float64)
    return logits, targets


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (3, 5, 2), (2, 6, 1)])
@pytest.mark.parametrize("kwargs", [
    {},
    {"alpha": 0.3, "beta": 0.7, "smooth": 0.5},
    {"reduction": "sum", "ignore_background": True},
    {"reduction": "none"},
    {"class_weights": "random"},
    {"axis": (1,)},
])
def test_dice_loss(shape, kwargs):
    logits, targets = _segmentation(60, shape)
    if shape[-1] == 1:
        targets = jnp.asarray(rng(61).integers(0, 2, shape).astype(float))
    kwargs = dict(kwargs)
    if kwargs.get("class_weights") == "random":
        kwargs["class_weights"] = jnp.asarray(rng(62).uniform(0.5, 2.0, shape[-1]))
    value = check_matches(losses.dice_loss, optax.losses.dice_loss, (logits, targets), kwargs=kwargs)
    if not kwargs:
        # Milletari et al.: 1 - (2 I + 2 s) / (P + T + 2 s) per class, with s = 1, averaged over classes.
        p = np.asarray(jax.nn.softmax(logits) if shape[-1] > 1 else jax.nn.sigmoid(logits))
        t = np.asarray(targets)
        axes = tuple(range(1, len(shape) - 1))
        dice = 1 - (2 * (p * t).sum(axes) + 2) / (p.sum(axes) + t.sum(axes) + 2)
        assert_close(value, dice.mean(-1))


def test_dice_loss_with_probabilities_and_errors():
    logits, targets = _segmentation(63, (2, 5, 3))
    probs = jax.nn.softmax(logits)
    # Optax checks the sums with a Python bool, so it cannot be traced there: compare eagerly.
    assert_close(losses.dice_loss(probs, targets, apply_softmax=False),
                 optax.losses.dice_loss(probs, targets, apply_softmax=False))
    grads = jax.jit(jax.grad(lambda p: losses.dice_loss(p, targets, apply_softmax=False).sum()))(probs)
    assert np.all(np.isfinite(grads))
    with pytest.raises(ValueError, match="valid probability distributions"):
        losses.dice_loss(logits, targets, apply_softmax=False)
    with pytest.raises(ValueError, match="reduction"):
        losses.dice_loss(logits, targets, reduction="max")
    with pytest.raises(ValueError, match="targets"):
        losses.dice_loss(logits, targets[:, :4])
    with pytest.raises(ValueError, match="class_weights"):
        losses.dice_loss(logits, targets, class_weights=jnp.ones((3, 1)))
    # Binary probabilities are accepted without a softmax (Optax's check rejects them).
    p = jax.nn.sigmoid(logits[..., :1])
    t = targets[..., :1]
    assert_close(losses.dice_loss(p, t, apply_softmax=False), losses.dice_loss(logits[..., :1], t))


@pytest.mark.parametrize("ignore_background", [False, True])
@pytest.mark.parametrize("smooth", [1.0, 1e-3])
def test_multiclass_generalized_dice_loss(ignore_background, smooth):
    logits, targets = _segmentation(64, (2, 4, 4, 4))
    kwargs = {"ignore_background": ignore_background, "smooth": smooth}
    check_matches(losses.multiclass_generalized_dice_loss, optax.losses.multiclass_generalized_dice_loss,
                  (logits, targets), kwargs=kwargs)


@pytest.mark.parametrize("shape", [(3, 6), (2, 4, 4), (2, 4, 4, 1)])
def test_binary_dice_loss(shape):
    r = rng(65)
    logits = jnp.asarray(r.normal(size=shape))
    targets = jnp.asarray(r.integers(0, 2, shape).astype(float))
    value = check_matches(losses.binary_dice_loss, optax.losses.binary_dice_loss, (logits, targets))
    assert value.shape == (shape[0],)
