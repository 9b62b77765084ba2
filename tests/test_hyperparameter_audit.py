"""Every numeric hyperparameter of every public transformation, given a schedule: either it is
used, at each step, with the schedule's value there, or it is refused when the transformation is
built, with a TypeError naming the argument. Never accepted and then broken at the first update.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

# Values for arguments without a usable default, by name (builders and constants).
VALUES = {
    "learning_rate": 0.1,
    "inner": lambda: gradtx.sgd(0.1),
    "fast_optimizer": lambda: gradtx.sgd(0.1),
    "inner_factory": lambda: gradtx.sgd,
    "num_micro_batches": 2,
    "max_consecutive_errors": 3,
    "clipping": 0.1,
    "max_delta": 1.0,
    "max_norm": 1.0,
    "step_size": 0.5,
    "decay": 0.9,
    "momentum": 0.9,
    "threshold": 1.0,
    "sync_period": 2,
    "slow_step_size": 0.5,
    "k": 2,
    "every_k_schedule": 2,
    "restart_period": 5,
    "sigma": 1e-4,
    "weight_decay": 1e-2,
    "eta": 0.01,
    "gamma": 0.55,
    "optimizer": lambda: gradtx.sgd(0.1),
    "adv_optimizer": lambda: gradtx.sgd(0.05),
    "base_optimizer": lambda: gradtx.sgd(1.0),
    "l2_norm_clip": 1.0,
    "noise_multiplier": 0.5,
    "seed": 0,
    "max_backtracking_steps": 15,
    "max_linesearch_steps": 15,
    "init_step": ("heuristic", 1e-6),
    "weight_decay_rate": 1e-2,
    "adam_learning_rate": 0.05,
    "mask": lambda: (lambda params: jax.tree.map(lambda x: x.ndim > 1, params)),
    "preconditioner_update_probability": 0.5,
    "layers": lambda: (gradtx.KfacLayer("dense", "['w']", "['b']"),),
}
# Builders whose update takes per-example gradients (a leading batch axis on every leaf).
PER_EXAMPLE = {"dpsgd", "differentially_private_aggregate"}
# Builders whose update needs the objective as ``obj_fn=`` (the others refuse unknown arguments).
NEEDS_OBJ_FN = {"sophia", "scale_by_sophia", "hutchinson_estimator_diag_hessian"}
# Schedules read at the step count plus this offset, by Optax's convention (schedule_free's
# ``step_count`` starts at 1: the averaging weight of the first step is learning_rate(1)).
SCHEDULE_OFFSET = {
    ("schedule_free", "learning_rate"): 1,
    ("psgd_kron", "preconditioner_update_probability"): 1,  # psgd_jax reads it at the 1-based step
    ("scale_by_kron", "preconditioner_update_probability"): 1,
}
# Builders whose update needs more keyword arguments: K-FAC's batch factors of the dense layer
# x @ PARAMS["w"] + PARAMS["b"] (A is 4 x 4 with the bias row, G is 2 x 2).
EXTRA_UPDATE_ARGS = {
    name: {"kfac_factors": {"['w']": gradtx.KfacFactors(jnp.diag(jnp.arange(1.0, 5.0)), jnp.eye(2) * 0.5)}}
    for name in ("kfac", "scale_by_kfac")
}
# Arguments that are not hyperparameters although their annotation allows a number.
NOT_HYPERPARAMETERS = {"accumulator_dtype", "mu_dtype", "nu_dtype", "dtype"}

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.asarray([0.3, -0.2])}


def loss(params):
    return jnp.sum((params["w"] - 1.0) ** 2 * jnp.arange(1.0, 7.0).reshape(3, 2)) + jnp.sum(jnp.cos(params["b"]))


def _returns(function) -> str:
    annotation = inspect.signature(function).return_annotation
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _is_numeric(parameter: inspect.Parameter) -> bool:
    annotation = str(parameter.annotation)
    if parameter.name in NOT_HYPERPARAMETERS or "Callable" in annotation or isinstance(parameter.default, bool):
        return False
    if isinstance(parameter.default, (int, float)):
        return True
    words = annotation.replace("|", " ").replace(",", " ").replace("[", " ").replace("]", " ").split()
    return any(word in ("float", "int", "ScalarOrSchedule", "Schedule", "jax.Array", "Array") for word in words)


def _builders():
    for name in sorted(gradtx.__all__):
        function = getattr(gradtx, name)
        if inspect.isfunction(function) and _returns(function) in (
            "GradientTransformation",
            "GradientTransformationExtraArgs",
            "FusedOptimizer",
        ):
            yield name, function


def _cases():
    cases = []
    for name, function in _builders():
        for parameter in inspect.signature(function).parameters.values():
            if _is_numeric(parameter):
                cases.append(pytest.param(name, parameter.name, id=f"{name}-{parameter.name}"))
    return cases


def _required(function, skip: str) -> dict:
    arguments = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == skip or parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        assert parameter.name in VALUES, f"add a value for {parameter.name!r} to VALUES"
        value = VALUES[parameter.name]
        arguments[parameter.name] = value() if callable(value) and not isinstance(value, (int, float)) else value
    return arguments


def _constant(function, argument: str):
    default = inspect.signature(function).parameters[argument].default
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return default
    return VALUES.get(argument)


def _gradient(params, per_example: bool):
    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda g: jnp.stack([g, -0.5 * g, 2.0 * g]), grads) if per_example else grads


def _run(transform, schedule_calls=None, steps=3, per_example=False, obj_fn=False, more=None):
    """Updates of ``steps`` eager steps on a small problem (and the parameters after them)."""
    extra = {"value_fn": loss, "value": None, **({"obj_fn": loss} if obj_fn else {}), **(more or {})}
    params = PARAMS
    if isinstance(transform, gradtx.FusedOptimizer):
        flat = gradtx.flatten_tree(params)
        state = transform.init(flat)
        trajectory = []
        for _ in range(steps):
            flat, state = transform.step(flat, jax.grad(loss)(params), state)
            params = flat.unflatten() if hasattr(flat, "unflatten") else flat
            trajectory.append(jax.tree.leaves(flat))
        return trajectory
    state = transform.init(params)
    trajectory = []
    for _ in range(steps):
        extra["value"] = loss(params)
        updates, state = transform.update(_gradient(params, per_example), state, params, **extra)
        params = gradtx.apply_updates(params, updates)
        trajectory.append(jax.tree.leaves(updates))
    return trajectory


@pytest.mark.parametrize("builder, argument", _cases())
def test_schedule_is_used_at_each_step_or_refused_when_built(builder, argument):
    function = getattr(gradtx, builder)
    constant = _constant(function, argument)
    seen = []

    def schedule(step_count):
        if not isinstance(step_count, jax.core.Tracer):
            seen.append(int(step_count))
        return jnp.asarray(constant if constant is not None else 0.5)

    arguments = _required(function, argument)
    try:
        transform = function(**arguments, **{argument: schedule})
    except TypeError as error:
        assert argument in str(error), f"{builder}: the TypeError for a scheduled {argument} must name it: {error}"
        return
    assert constant is not None, f"{builder} accepts a schedule for {argument}: add a value for it to VALUES"
    options = {
        "per_example": builder in PER_EXAMPLE,
        "obj_fn": builder in NEEDS_OBJ_FN,
        "more": EXTRA_UPDATE_ARGS.get(builder),
    }
    scheduled = _run(transform, **options)
    plain = _run(function(**arguments, **{argument: constant}), **options)
    for step, (ours, reference) in enumerate(zip(scheduled, plain, strict=True)):
        for a, b in zip(ours, reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=f"{builder}({argument}=...) step {step}")
    if seen:  # evaluated eagerly at least once: at every step's count, in order
        offset = SCHEDULE_OFFSET.get((builder, argument), 0)
        steps = set(range(offset, offset + 3))
        assert sorted(set(seen)) == sorted(steps) or steps <= set(seen), (builder, argument, seen)


def test_scale_and_clip_by_global_norm_follow_a_schedule():
    grads = {"w": jnp.full((3, 2), 2.0), "b": jnp.asarray([1.0, -1.0])}
    schedule = lambda t: 0.5 / (1.0 + t)
    clipped = lambda t, g: jax.tree.map(lambda x: x * schedule(t) / gradtx.tree_global_norm(g), g)
    for transform, expected in (
        (gradtx.scale(schedule), lambda t, g: jax.tree.map(lambda x: x * schedule(t), g)),
        (gradtx.clip_by_global_norm(schedule), clipped),
    ):
        state = transform.init(PARAMS)
        for t in range(3):
            updates, state = jax.jit(transform.update)(grads, state)
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected(t, grads)), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-14)
    # A number keeps Optax's stateless form.
    assert gradtx.scale(0.5).init(PARAMS) == gradtx.EmptyState() == gradtx.clip_by_global_norm(1.0).init(PARAMS)


def test_rprop_scales_its_steps_by_a_learning_rate_schedule():
    schedule = gradtx.linear_schedule(0.02, 0.005, 4)
    scheduled, plain = _run(gradtx.rprop(schedule), steps=6), _run(gradtx.rprop(0.02), steps=1)
    for a, b in zip(scheduled[0], plain[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)  # eta_0 / eta_0 = 1 at the first step
    # Each update is (eta_t / eta_0) times Rprop's own step, whose size adapts as without a schedule.
    reference = gradtx.chain(gradtx.scale_by_rprop(0.02), gradtx.scale(-1.0))
    state = reference.init(PARAMS)
    params = PARAMS
    for t in range(6):
        updates, state = reference.update(jax.grad(loss)(params), state, params)
        ratio = float(schedule(t)) / 0.02
        for a, b in zip(scheduled[t], jax.tree.leaves(updates), strict=True):
            np.testing.assert_allclose(a, ratio * b, rtol=1e-12)
        params = gradtx.apply_updates(params, jax.tree.map(lambda u: ratio * u, updates))
    with pytest.raises(ValueError, match="start above 0"):
        gradtx.rprop(gradtx.linear_schedule(0.0, 0.01, 10))
    with pytest.raises(TypeError, match="learning_rate cannot be a schedule"):
        gradtx.scale_by_rprop(schedule)
