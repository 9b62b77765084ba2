"""gradtx.losses.ctc against optax.losses (float64) and torch.nn.functional.ctc_loss, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from losses_reference import assert_close, check_matches, rng, weights

from gradtx import losses


def _batch(seed, batch, frames, classes, max_labels, blank_id=0, repeats=False):
    """Random logits, right-padded frames and labels; every labelling fits in its frames."""
    r = rng(seed)
    logits = 2 * r.normal(size=(batch, frames, classes))
    label_lengths = r.integers(0, max_labels + 1, batch)
    label_lengths[0] = max_labels
    non_blank = [k for k in range(classes) if k != blank_id]
    labels = r.choice(non_blank, size=(batch, max_labels))
    if repeats:
        labels[:, 1::2] = labels[:, 0::2][:, : labels[:, 1::2].shape[1]]
    repeated = (labels[:, 1:] == labels[:, :-1]) & (np.arange(1, max_labels) < label_lengths[:, None])
    needed = label_lengths + repeated.sum(1)
    frame_lengths = np.array([r.integers(n, frames + 1) for n in needed])
    frame_lengths[0] = frames
    logit_paddings = (np.arange(frames) >= frame_lengths[:, None]).astype(float)
    label_paddings = (np.arange(max_labels) >= label_lengths[:, None]).astype(float)
    labels = np.where(label_paddings > 0, 0, labels)
    return logits, logit_paddings, labels, label_paddings, frame_lengths, label_lengths


def _torch_ctc(logits, labels, frame_lengths, label_lengths, blank_id):
    x = torch.tensor(logits, requires_grad=True)
    log_probs = torch.log_softmax(x, -1).transpose(0, 1)  # [T, B, K]
    loss = F.ctc_loss(log_probs, torch.tensor(labels), torch.tensor(frame_lengths), torch.tensor(label_lengths),
                      blank=blank_id, reduction="none", zero_infinity=False)
    return loss, x


CASES = [  # (seed, batch, frames, classes, max_labels, blank_id, repeats)
    (0, 3, 12, 5, 4, 0, False),
    (1, 4, 20, 6, 6, 0, True),
    (2, 2, 8, 3, 3, 2, True),
    (3, 5, 15, 8, 1, 0, False),
    (4, 3, 30, 4, 10, 1, True),
]


@pytest.mark.parametrize("case", CASES)
def test_ctc_matches_optax_and_torch(case):
    seed, batch, frames, classes, max_labels, blank_id, repeats = case
    logits, logit_pad, labels, label_pad, frame_lengths, label_lengths = _batch(
        seed, batch, frames, classes, max_labels, blank_id, repeats)
    args = (jnp.asarray(logits), jnp.asarray(logit_pad), jnp.asarray(labels), jnp.asarray(label_pad))
    value, grads = check_matches(losses.ctc_loss, optax.losses.ctc_loss, args, kwargs={"blank_id": blank_id},
                                 return_grads=True)

    expected, x = _torch_ctc(logits, labels, frame_lengths, label_lengths, blank_id)
    assert_close(value, expected.detach().numpy())
    (torch.tensor(weights((batch,))) * expected).sum().backward()
    assert_close(grads, x.grad.numpy(), atol=1e-12)

    # The forward variables: the same on the states a path reaches; near log_epsilon on the others.
    forward = jax.jit(lambda f, *a: f(*a, blank_id=blank_id), static_argnums=0)
    ours = forward(losses.ctc_loss_with_forward_probs, *args)
    theirs = forward(optax.losses.ctc_loss_with_forward_probs, *args)
    assert_close(ours[0], theirs[0])
    for a, b in zip(ours[1:], theirs[1:]):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        reachable = b > -1e4
        assert np.array_equal(reachable, a > -1e4), "the same states are reachable"
        assert reachable.any()
        assert_close(a[reachable], b[reachable])


def test_forward_probs_against_a_plain_graves_recursion():
    # Graves et al. (2006), eq. (5)-(8), in probabilities for one short sequence.
    logits, _, labels, _, _, _ = _batch(5, 1, 6, 4, 3, 0, True)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits[0])))
    label = list(labels[0])
    ext = [0]
    for k in label:
        ext += [k, 0]
    alpha = np.zeros((6, len(ext)))
    alpha[0, 0], alpha[0, 1] = probs[0, 0], probs[0, ext[1]]
    for t in range(1, 6):
        for s in range(len(ext)):
            total = alpha[t - 1, s] + (alpha[t - 1, s - 1] if s >= 1 else 0)
            if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2]:
                total += alpha[t - 1, s - 2]
            alpha[t, s] = total * probs[t, ext[s]]
    _, blank, emit = losses.ctc_loss_with_forward_probs(jnp.asarray(logits), jnp.zeros((1, 6)), jnp.asarray(labels),
                                                        jnp.zeros((1, 3)))
    reachable = alpha[:, 1::2] > 0
    assert_close(np.exp(emit[:, 0][reachable]), alpha[:, 1::2][reachable])
    assert_close(np.exp(blank[:-1, 0][alpha[:-1, 0::2] > 0]), alpha[:-1, 0::2][alpha[:-1, 0::2] > 0])
    loss = losses.ctc_loss(jnp.asarray(logits), jnp.zeros((1, 6)), jnp.asarray(labels), jnp.zeros((1, 3)))
    assert_close(loss[0], -np.log(alpha[-1, -1] + alpha[-1, -2]))


def test_impossible_labelling_and_empty_labels():
    # Three repeated labels need five frames; with four the loss is of order -log_epsilon, not inf.
    logits = jnp.asarray(rng(6).normal(size=(2, 4, 3)))
    labels = jnp.array([[1, 1, 1], [2, 0, 0]])
    label_pad = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    args = (logits, jnp.zeros((2, 4)), labels, label_pad)
    value, expected = losses.ctc_loss(*args), optax.losses.ctc_loss(*args)
    # Both are "-log_epsilon + O(1)": the O(1) depends on where each adds log_epsilon, not on the data.
    assert 0.99e5 < value[0] < 1.01e5 and 0.99e5 < expected[0] < 1.01e5
    assert_close(value[1], expected[1])
    # An empty labelling: all frames blank.
    assert_close(value[1], -np.asarray(jax.nn.log_softmax(logits[1]))[:, 0].sum())


def test_large_logits_and_jit():
    logits, logit_pad, labels, label_pad, _, _ = _batch(7, 3, 10, 5, 3)
    args = (jnp.asarray(300 * logits), jnp.asarray(logit_pad), jnp.asarray(labels), jnp.asarray(label_pad))
    value = check_matches(jax.jit(losses.ctc_loss), optax.losses.ctc_loss, args, rtol=1e-10)
    assert np.all(np.isfinite(value))


def test_shape_errors_name_the_argument():
    logits = jnp.zeros((2, 5, 4))
    with pytest.raises(ValueError, match="logits"):
        losses.ctc_loss(jnp.zeros((5, 4)), jnp.zeros((2, 5)), jnp.zeros((2, 3), int), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="label_paddings"):
        losses.ctc_loss(logits, jnp.zeros((2, 5)), jnp.zeros((2, 3), int), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="logit_paddings"):
        losses.ctc_loss(logits, jnp.zeros((2, 4)), jnp.zeros((2, 3), int), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="batch size"):
        losses.ctc_loss(logits, jnp.zeros((2, 5)), jnp.zeros((3, 3), int), jnp.zeros((3, 3)))
