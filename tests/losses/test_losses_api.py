"""gradtx.losses has every loss of optax.losses, with the same argument names, order, kinds and defaults."""

import inspect

import jax.numpy as jnp
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
