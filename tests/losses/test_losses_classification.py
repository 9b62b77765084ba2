"""gradtx.losses.classification against optax.losses (float64, values and gradients) and torch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from losses_reference import assert_close, check_matches, rng

from gradtx import losses


def _probabilities(r, shape, axis):
    p = r.uniform(0.0, 1.0, shape)
    return p / p.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5)])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_sigmoid_binary_cross_entropy(shape, soft, scale):
    r = rng(0)
    logits = jnp.asarray(scale * r.normal(size=shape))
    labels = jnp.asarray(r.uniform(size=shape) if soft else r.integers(0, 2, shape).astype(float))
    value = check_matches(losses.sigmoid_binary_cross_entropy, optax.losses.sigmoid_binary_cross_entropy,
                          (logits, labels), argnums=(0, 1))
    assert np.all(np.isfinite(value))
    expected = F.binary_cross_entropy_with_logits(torch.tensor(np.asarray(logits)), torch.tensor(np.asarray(labels)),
                                                  reduction="none")
    assert_close(value, expected.numpy())


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.5])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_loss(alpha, gamma, soft):
    r = rng(1)
    logits = jnp.asarray(4 * r.normal(size=(5, 6)))
    labels = jnp.asarray(r.uniform(size=(5, 6)) if soft else r.integers(0, 2, (5, 6)).astype(float))
    kwargs = {"alpha": alpha, "gamma": gamma}
    value = check_matches(losses.sigmoid_focal_loss, optax.losses.sigmoid_focal_loss, (logits, labels), kwargs=kwargs)
    # Lin et al.'s definition, written out with probabilities.
    x, y = np.asarray(logits), np.asarray(labels)
    p = 1 / (1 + np.exp(-x))
    cross_entropy = -y * np.log(p) - (1 - y) * np.log(1 - p)
    one_minus_pt = (1 - y) * p + y * (1 - p)
    alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    assert_close(value, alpha_t * one_minus_pt**gamma * cross_entropy, rtol=1e-9)


def test_sigmoid_focal_loss_large_logits_are_finite():
    logits = jnp.array([-1e4, -60.0, 60.0, 1e4])
    for labels in (jnp.zeros(4), jnp.ones(4), jnp.full(4, 0.3)):
        for gamma in (0.5, 2.0):
            value = check_matches(losses.sigmoid_focal_loss, optax.losses.sigmoid_focal_loss, (logits, labels),
                                  kwargs={"gamma": gamma})
            assert np.all(np.isfinite(value))


# (logits shape, axis, where: None | "full" | "batch")
SOFTMAX_CASES = [
    ((4, 5), -1, None),
    ((4, 5), 0, None),
    ((2, 3, 4), 1, None),
    ((2, 3, 4), (1, 2), None),
    ((2, 3, 4), None, None),
    ((4, 5), -1, "full"),
    ((4, 5), -1, "batch"),
    ((2, 3, 4), 1, "full"),
    ((2, 3, 4), 1, "batch"),
    ((2, 3, 4), (0, 2), "full"),
]


def _mask(r, shape, axis, kind):
    if kind is None:
        return None
    full = r.uniform(size=shape) < 0.7
    if kind == "batch":
        batch = r.uniform(size=np.delete(np.array(shape), axis)) < 0.7
        return jnp.asarray(batch)
    return jnp.asarray(full)


@pytest.mark.parametrize("shape,axis,where", SOFTMAX_CASES)
def test_softmax_cross_entropy(shape, axis, where):
    r = rng(2)
    logits = jnp.asarray(3 * r.normal(size=shape))
    labels = jnp.asarray(_probabilities(r, shape, axis))
    kwargs = {"axis": axis, "where": _mask(r, shape, axis, where)}
    value = check_matches(losses.softmax_cross_entropy, optax.losses.softmax_cross_entropy, (logits, labels),
                          argnums=(0, 1), kwargs=kwargs)
    if where is None and axis == -1:
        expected = F.cross_entropy(torch.tensor(np.asarray(logits)), torch.tensor(np.asarray(labels)),
                                   reduction="none")
        assert_close(value, expected.numpy())


def test_softmax_cross_entropy_large_logits_match_torch():
    r = rng(3)
    logits = jnp.asarray(1e4 * r.normal(size=(6, 5)))
    labels = jnp.asarray(_probabilities(r, (6, 5), -1))
    value = check_matches(losses.softmax_cross_entropy, optax.losses.softmax_cross_entropy, (logits, labels))
    expected = F.cross_entropy(torch.tensor(np.asarray(logits)), torch.tensor(np.asarray(labels)), reduction="none")
    assert np.all(np.isfinite(value))
    assert_close(value, expected.numpy())


@pytest.mark.parametrize("shape,axis,where", [c for c in SOFTMAX_CASES if c[1] is not None])
def test_softmax_cross_entropy_with_integer_labels(shape, axis, where):
    r = rng(4)
    logits = jnp.asarray(3 * r.normal(size=shape))
    axes = (axis,) if isinstance(axis, int) else axis
    num_classes = int(np.prod([shape[a] for a in axes]))
    batch_shape = tuple(np.delete(np.array(shape), axes))
    labels = jnp.asarray(r.integers(0, num_classes, batch_shape))
    kwargs = {"axis": axis, "where": _mask(r, shape, axis, where)}
    value = check_matches(losses.softmax_cross_entropy_with_integer_labels,
                          optax.losses.softmax_cross_entropy_with_integer_labels, (logits, labels), kwargs=kwargs)
    if where is None:
        # Same as the one-hot cross entropy, and as torch with the class axis at position 1.
        moved = jnp.moveaxis(logits, axes, range(len(batch_shape), logits.ndim)).reshape(batch_shape + (-1,))
        one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
        assert_close(value, losses.softmax_cross_entropy(moved, one_hot))
        torch_logits = torch.tensor(np.asarray(jnp.moveaxis(moved, -1, 1)))
        assert_close(value, F.cross_entropy(torch_logits, torch.tensor(np.asarray(labels)), reduction="none").numpy())


def test_integer_labels_with_minus_inf_logits_and_empty_masks():
    logits = jnp.array([[0.5, -jnp.inf, 2.0, -jnp.inf], [1e4, -1e4, 3.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    labels = jnp.array([2, 1, 0])
    value = check_matches(losses.softmax_cross_entropy_with_integer_labels,
                          optax.losses.softmax_cross_entropy_with_integer_labels, (logits, labels))
    assert np.all(np.isfinite(value))
    grads = jax.grad(lambda x: losses.softmax_cross_entropy_with_integer_labels(x, labels).sum())(logits)
    assert np.all(np.isfinite(grads)) and grads[0, 1] == 0.0
    where = jnp.array([[True, False, True, True], [False, False, False, False], [True, True, False, True]])
    value = check_matches(losses.softmax_cross_entropy_with_integer_labels,
                          optax.losses.softmax_cross_entropy_with_integer_labels, (logits, labels),
                          kwargs={"where": where})
    assert value[1] == 0.0


def test_safe_softmax_cross_entropy_minus_inf_logits():
    logits = jnp.array([[0.5, -jnp.inf, 2.0, -jnp.inf], [1e3, -1e3, 3.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    labels = jnp.array([[0.3, 0.0, 0.7, 0.0], [0.0, 0.5, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]])
    value = check_matches(losses.safe_softmax_cross_entropy, optax.losses.safe_softmax_cross_entropy,
                          (logits, labels))
    assert np.all(np.isfinite(value))
    grads = jax.grad(lambda x: losses.safe_softmax_cross_entropy(x, labels).sum())(logits)
    assert np.all(np.isfinite(grads)) and grads[0, 1] == 0.0 and grads[0, 3] == 0.0
    # softmax_cross_entropy gives nan there (0 * -inf), and the same value on finite rows.
    plain = losses.softmax_cross_entropy(logits, labels)
    assert np.isnan(plain[0]) and np.isnan(optax.losses.softmax_cross_entropy(logits, labels)[0])
    assert_close(value[1:], plain[1:])


@pytest.mark.parametrize("shape", [(6,), (4, 6), (2, 3, 6)])
def test_safe_softmax_cross_entropy_random(shape):
    r = rng(5)
    logits = jnp.asarray(3 * r.normal(size=shape))
    labels = jnp.asarray(_probabilities(r, shape, -1) * (r.uniform(size=shape) < 0.6))
    check_matches(losses.safe_softmax_cross_entropy, optax.losses.safe_softmax_cross_entropy, (logits, labels),
                  argnums=(0, 1))


@pytest.mark.parametrize("epsilon", [-1.0, 0.0, 2.0])
@pytest.mark.parametrize("shape,axis,where", [((4, 5), -1, None), ((4, 5), 0, None), ((2, 3, 4), (1, 2), None),
                                              ((4, 5), -1, "full"), ((2, 3, 4), 1, "full")])
def test_poly_loss_cross_entropy(epsilon, shape, axis, where):
    r = rng(6)
    logits = jnp.asarray(2 * r.normal(size=shape))
    labels = jnp.asarray(_probabilities(r, shape, axis))
    kwargs = {"epsilon": epsilon, "axis": axis, "where": _mask(r, shape, axis, where)}
    value = check_matches(losses.poly_loss_cross_entropy, optax.losses.poly_loss_cross_entropy, (logits, labels),
                          argnums=(0, 1), kwargs=kwargs)
    if where is None:
        # Leng et al.: Poly-1 = CE + epsilon (1 - P_t), P_t = sum_j y_j p_j.
        x, y = np.asarray(logits), np.asarray(labels)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        p = e / e.sum(axis=axis, keepdims=True)
        expected = -(y * np.log(p)).sum(axis=axis) + epsilon * (1 - (y * p).sum(axis=axis))
        assert_close(value, expected)


def test_poly_loss_batch_mask_equals_full_mask():
    r = rng(7)
    logits, labels = jnp.asarray(r.normal(size=(4, 5))), jnp.asarray(_probabilities(r, (4, 5), -1))
    batch = jnp.array([True, False, True, True])
    assert_close(losses.poly_loss_cross_entropy(logits, labels, where=batch),
                 losses.poly_loss_cross_entropy(logits, labels, where=jnp.broadcast_to(batch[:, None], (4, 5))))


@pytest.mark.parametrize("name", ["hinge_loss", "perceptron_loss"])
def test_binary_margin_losses(name):
    r = rng(8)
    outputs = jnp.asarray(2 * r.normal(size=(5, 4)))
    targets = jnp.asarray(r.choice([-1.0, 1.0], size=(5, 4)))
    value = check_matches(getattr(losses, name), getattr(optax.losses, name), (outputs, targets))
    margin = 1.0 if name == "hinge_loss" else 0.0
    assert_close(value, np.maximum(0, margin - np.asarray(outputs) * np.asarray(targets)))


@pytest.mark.parametrize("name", ["multiclass_hinge_loss", "multiclass_perceptron_loss"])
@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 5)])
def test_multiclass_margin_losses(name, shape):
    r = rng(9)
    scores = jnp.asarray(r.normal(size=shape))
    labels = jnp.asarray(r.integers(0, shape[-1], shape[:-1]))
    value = check_matches(getattr(losses, name), getattr(optax.losses, name), (scores, labels))
    s, y = np.asarray(scores), np.asarray(labels)
    label_score = np.take_along_axis(s, y[..., None], -1)[..., 0]
    margin = 1.0 - np.eye(shape[-1])[y] if name == "multiclass_hinge_loss" else 0.0
    assert_close(value, (s + margin).max(-1) - label_score)


def test_argument_errors_name_the_argument():
    logits = jnp.zeros((3, 4))
    with pytest.raises(TypeError, match="logits"):
        losses.softmax_cross_entropy(jnp.zeros((3, 4), int), logits)
    with pytest.raises(TypeError, match="labels"):
        losses.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        losses.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(4, int))
    with pytest.raises(ValueError, match="axis"):
        losses.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(3, int), axis=None)
    with pytest.raises(ValueError, match="axis"):
        losses.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(3, int), axis=2)
    with pytest.raises(TypeError, match="labels"):
        losses.poly_loss_cross_entropy(logits, jnp.zeros((3, 4), int))
    with pytest.raises(ValueError, match="targets"):
        losses.perceptron_loss(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        losses.multiclass_hinge_loss(logits, jnp.zeros((3, 1), int))
