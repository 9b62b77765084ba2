"""Issue 12, item 5, for the second-order builders: every numeric argument given a schedule either
works (the update with ``constant_schedule(v)`` equals the one with ``v``) or is refused when the
optimizer is built, with a ``TypeError`` naming the argument."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.second_order import (
    conjugate_gradient,
    esgd,
    hessian_free,
    lbfgs_solver,
    momentum_autotuner,
    newton,
    scale_by_esgd,
    scaled_conjugate_gradient,
)

F64 = jnp.float64
BUILDERS = {
    "newton": newton,
    "conjugate_gradient": conjugate_gradient,
    "scaled_conjugate_gradient": scaled_conjugate_gradient,
    "hessian_free": lambda **kw: hessian_free(curvature="hessian", **kw),
    "lbfgs": lbfgs_solver,
    "scale_by_esgd": scale_by_esgd,
    "esgd": lambda **kw: esgd(**{"learning_rate": 0.1, **kw}),
    "momentum_autotuner": momentum_autotuner,
}
# The arguments documented to take a schedule.
ACCEPTED = {("newton", "learning_rate"), ("newton", "damping"), ("esgd", "learning_rate"), ("esgd", "damping"),
            ("scale_by_esgd", "damping")}
_SIGNATURE_OF = {"hessian_free": hessian_free, "esgd": esgd}


def _numeric_arguments():
    cases = []
    for name, builder in BUILDERS.items():
        signature = inspect.signature(_SIGNATURE_OF.get(name, builder))
        for parameter in signature.parameters.values():
            default = parameter.default
            if parameter.name == "learning_rate" and name == "esgd":
                default = 0.1
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                continue
            cases.append((name, parameter.name, default))
    return cases


def _loss(x):
    return jnp.sum((x - 1.0) ** 2) + jnp.sum(x**4)


@pytest.mark.parametrize("name, argument, default", _numeric_arguments())
def test_schedule_arguments_work_or_are_refused_by_name(name, argument, default):
    builder = BUILDERS[name]
    value = default if default != 0 else 0.25
    schedule = gradtx.constant_schedule(value)
    if (name, argument) not in ACCEPTED:
        with pytest.raises(TypeError, match=argument):
            builder(**{argument: schedule})
        return
    params = jnp.asarray([0.3, -0.2, 2.0], F64)
    grads = jax.grad(_loss)(params)

    @jax.jit
    def step(params, grads):
        out = []
        for tx in (builder(**{argument: value}), builder(**{argument: schedule})):
            updates, _ = tx.update(grads, tx.init(params), params, value_fn=_loss)
            out.append(updates)
        return out

    with_number, with_schedule = step(params, grads)
    np.testing.assert_allclose(np.asarray(with_schedule), np.asarray(with_number), rtol=1e-14)
    assert np.abs(np.asarray(with_number)).max() > 0


def test_every_builder_has_checked_arguments():
    cases = _numeric_arguments()
    assert {name for name, _, _ in cases} == set(BUILDERS)
    assert len(cases) > 30
