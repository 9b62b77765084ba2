"""Every Optax-named schedule over seeded random arguments: against Optax, jitted and eager, in
float32 and float64, with its end points exact and its values inside the range they span."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

CASES = 8  # random argument sets per schedule and dtype
STEPS = np.concatenate([np.arange(0, 640), [1_000, 100_000, 2**31 - 1]])
EAGER_CASES, EAGER_STEPS = 3, 3  # cases also evaluated eagerly one step at a time: at their ends and 3 more
EPS32 = float(np.finfo(np.float32).eps)


def _value(rng, zero=0.15, negative=0.1):
    """A hyperparameter value: usually positive, log-uniform over 1e-5..10, sometimes 0 or negative."""
    if rng.random() < zero:
        return 0.0
    value = float(10 ** rng.uniform(-5, 1))
    return -value if rng.random() < negative else value


def _scales(rng, low, high, count, zero=0.1):
    """``{boundary: scale}`` with ``count`` distinct boundaries in ``[low, high)``."""
    boundaries = sorted(rng.choice(np.arange(low, high), size=count, replace=False).tolist())
    return {int(b): (0.0 if rng.random() < zero else float(rng.uniform(0.05, 3.0))) for b in boundaries}


class Case:
    """One schedule with random arguments, its exact end points and the range it must stay in."""

    def __init__(self, ours, theirs, ends, span, text):
        self.ours, self.theirs, self.ends, self.span, self.text = ours, theirs, ends, span, text

    def exact(self, dtype):
        """``{step: value}`` the schedule must give exactly, computed in ``dtype``."""
        return {step: np.asarray(fn(dtype), dtype) for step, fn in self.ends.items()}

    def bounds(self, dtype):
        values = [np.asarray(fn(dtype), dtype) for fn in self.span]
        return min(values), max(values)


def _c(value):
    """An end value as a function of the dtype it is computed in."""
    return lambda dtype: np.asarray(value, dtype)


def _products(init, scales, dtype):
    values = [np.asarray(init, dtype)]
    for scale in scales:
        values.append(values[-1] * np.asarray(scale, dtype))
    return values


def constant(rng):
    v = _value(rng)
    return Case(gradtx.constant_schedule(v), optax.constant_schedule(v), {0: _c(v), 639: _c(v)}, [_c(v)], f"{v}")


def polynomial(rng, linear=False):
    init, end = _value(rng), _value(rng)
    power = 1 if linear else float(rng.choice([1, 2, 0.5, rng.uniform(0.2, 4.0)]))
    steps = int(rng.choice([0, rng.integers(1, 8), rng.integers(8, 500)]))
    begin = int(rng.integers(0, 100))
    if linear:
        ours, theirs = gradtx.linear_schedule(init, end, steps, begin), optax.linear_schedule(init, end, steps, begin)
    else:
        ours = gradtx.polynomial_schedule(init, end, power, steps, begin)
        theirs = optax.polynomial_schedule(init, end, power, steps, begin)
    if steps == 0:
        return Case(ours, theirs, {0: _c(init), 600: _c(init)}, [_c(init)], f"T=0 {init}")
    ends = {0: _c(init), begin: _c(init), begin + steps: _c(end), 639: _c(end)}
    return Case(ours, theirs, ends, [_c(init), _c(end)], f"{init}->{end} p={power} T={steps} t0={begin}")


def linear(rng):
    return polynomial(rng, linear=True)


def piecewise_constant(rng):
    init = _value(rng)
    scales = _scales(rng, 0, 400, int(rng.integers(0, 5)))
    ours = gradtx.piecewise_constant_schedule(init, scales)
    theirs = optax.piecewise_constant_schedule(init, scales)
    boundaries = list(scales)
    ends = {0: _c(init)} if not boundaries or boundaries[0] > 0 else {}
    for k, b in enumerate(boundaries):
        ends[b] = lambda dtype, k=k: _products(init, list(scales.values())[: k + 1], dtype)[-1]
    span = [lambda dtype, k=k: _products(init, list(scales.values()), dtype)[k] for k in range(len(scales) + 1)]
    return Case(ours, theirs, ends, span, f"{init} {scales}")


def exponential(rng, warmup=0):
    init = _value(rng, negative=0)
    steps = int(rng.choice([0, rng.integers(1, 10), rng.integers(10, 200)]))
    grow = rng.random() < 0.25
    rate = float(rng.uniform(1.01, 1.5) if grow else rng.uniform(0.05, 0.99))
    begin = int(rng.integers(0, 100))
    staircase = bool(rng.random() < 0.4)
    if grow:
        end_value = float(init * rng.uniform(1.5, 20))
    else:
        end_value = None if rng.random() < 0.5 else init * rng.uniform(0, 0.9)
    args = (steps, rate, begin, staircase, end_value)
    if warmup:
        start = _value(rng, negative=0)
        ours = gradtx.warmup_exponential_decay_schedule(start, init, warmup, *args)
        theirs = optax.warmup_exponential_decay_schedule(start, init, warmup, *args)
    else:
        ours, theirs = gradtx.exponential_decay(init, *args), optax.exponential_decay(init, *args)
    clip = (max if rate < 1 else min) if end_value is not None else (lambda a, b: a)
    peak = _c(clip(init, end_value))
    ends = {warmup: peak, warmup + begin: peak}
    span = [peak, _c(end_value if end_value is not None else (0.0 if rate < 1 else init))]
    if warmup:
        ends[0] = _c(start)
        span.append(_c(start))
    if steps == 0:
        span = [peak] + ([_c(start)] if warmup else [])
    return Case(ours, theirs, ends, span, f"W={warmup} {init} T={steps} rate={rate} t0={begin} {staircase} {end_value}")


def warmup_exponential(rng):
    return exponential(rng, warmup=int(rng.choice([0, rng.integers(1, 100)])))


def cosine(rng):
    init = _value(rng)
    steps = int(rng.choice([1, rng.integers(2, 10), rng.integers(10, 500)]))
    alpha = float(rng.choice([0.0, rng.uniform(0, 1), rng.uniform(1, 3)]))
    exponent = float(rng.choice([1.0, rng.uniform(0.3, 3.0)]))
    ours = gradtx.cosine_decay_schedule(init, steps, alpha, exponent)
    theirs = optax.cosine_decay_schedule(init, steps, alpha, exponent)
    last = lambda dtype: np.asarray(init, dtype) * np.asarray(alpha, dtype)
    return Case(ours, theirs, {0: _c(init), steps: last, 639: last}, [_c(init), last], f"{init} T={steps} a={alpha}")


def _warmup_cosine_kwargs(rng):
    warmup = int(rng.choice([0, rng.integers(1, 10), rng.integers(10, 100)]))
    return dict(
        init_value=_value(rng),
        peak_value=_value(rng, zero=0.2),
        warmup_steps=warmup,
        decay_steps=warmup + int(rng.choice([1, rng.integers(2, 300)])),
        end_value=_value(rng),
        exponent=float(rng.choice([1.0, rng.uniform(0.3, 3.0)])),
    )


def _warmup_cosine_ends(kwargs, start=0):
    init, peak, end = kwargs["init_value"], kwargs["peak_value"], kwargs["end_value"]
    end = 0.0 if peak == 0 else end  # as in Optax
    ends = {start + kwargs["warmup_steps"]: _c(peak), start + kwargs["decay_steps"]: _c(end)}
    if kwargs["warmup_steps"]:
        ends[start] = _c(init)
    return ends, [_c(init), _c(peak), _c(end)]


def warmup_cosine(rng):
    kwargs = _warmup_cosine_kwargs(rng)
    ends, span = _warmup_cosine_ends(kwargs)
    ends[639] = ends[kwargs["decay_steps"]]
    ours, theirs = gradtx.warmup_cosine_decay_schedule(**kwargs), optax.warmup_cosine_decay_schedule(**kwargs)
    return Case(ours, theirs, ends, span, f"{kwargs}")


def warmup_constant(rng):
    init, peak, warmup = _value(rng), _value(rng), int(rng.choice([0, rng.integers(1, 300)]))
    ours = gradtx.warmup_constant_schedule(init, peak, warmup)
    theirs = optax.warmup_constant_schedule(init, peak, warmup)
    ends = {0: _c(init if warmup else init), 639: _c(peak if warmup else init)}
    if warmup:
        ends[warmup] = _c(peak)
    return Case(ours, theirs, ends, [_c(init), _c(peak) if warmup else _c(init)], f"{init}->{peak} W={warmup}")


def sgdr(rng):
    cycles = [_warmup_cosine_kwargs(rng) for _ in range(int(rng.integers(1, 4)))]
    for kwargs in cycles:  # keep the whole schedule inside STEPS
        kwargs["warmup_steps"] = min(kwargs["warmup_steps"], 50)
        kwargs["decay_steps"] = kwargs["warmup_steps"] + min(kwargs["decay_steps"] - kwargs["warmup_steps"], 150)
    ends, span, start = {}, [], 0
    for kwargs in cycles:
        cycle_ends, cycle_span = _warmup_cosine_ends(kwargs, start)
        ends.update(cycle_ends)
        span += cycle_span
        start += kwargs["decay_steps"]
    starts = np.cumsum([0] + [kw["decay_steps"] for kw in cycles])
    for k, kwargs in enumerate(cycles[1:], start=1):
        ends[int(starts[k]) + kwargs["warmup_steps"]] = _c(kwargs["peak_value"])
        if kwargs["warmup_steps"]:
            ends[int(starts[k])] = _c(kwargs["init_value"])
    last = cycles[-1]
    ends[639] = _c(0.0 if last["peak_value"] == 0 else last["end_value"])
    return Case(gradtx.sgdr_schedule(cycles), optax.sgdr_schedule(cycles), ends, span, f"{cycles}")


def _interpolate_case(ours, theirs, init, scales, text):
    boundaries = [0] + list(scales)
    values = lambda dtype: _products(init, list(scales.values()), dtype)
    ends = {b: (lambda dtype, k=k: values(dtype)[k]) for k, b in enumerate(boundaries)}
    ends[639] = lambda dtype: values(dtype)[-1]
    span = [lambda dtype, k=k: values(dtype)[k] for k in range(len(boundaries))]
    return Case(ours, theirs, ends, span, text)


def piecewise_interpolate(rng):
    kind = str(rng.choice(["linear", "cosine"]))
    init, scales = _value(rng), _scales(rng, 1, 500, int(rng.integers(0, 5)))
    ours = gradtx.piecewise_interpolate_schedule(kind, init, scales)
    theirs = optax.piecewise_interpolate_schedule(kind, init, scales)
    return _interpolate_case(ours, theirs, init, scales, f"{kind} {init} {scales}")


def linear_onecycle(rng):
    steps, peak = int(rng.integers(10, 500)), _value(rng, zero=0, negative=0)
    start, final = float(rng.uniform(0.1, 0.45)), float(rng.uniform(0.55, 0.95))
    div, final_div = float(rng.uniform(2, 50)), float(10 ** rng.uniform(0, 4))
    ours = gradtx.linear_onecycle_schedule(steps, peak, start, final, div, final_div)
    theirs = optax.linear_onecycle_schedule(steps, peak, start, final, div, final_div)
    scales = {int(start * steps): div, int(final * steps): 1 / div, steps: 1 / final_div}
    return _interpolate_case(ours, theirs, peak / div, scales, f"T={steps} {peak} {start} {final} {div} {final_div}")


def cosine_onecycle(rng):
    steps, peak = int(rng.integers(10, 500)), _value(rng, zero=0, negative=0)
    start, div, final_div = float(rng.uniform(0.1, 0.9)), float(rng.uniform(2, 50)), float(10 ** rng.uniform(0, 4))
    ours = gradtx.cosine_onecycle_schedule(steps, peak, start, div, final_div)
    theirs = optax.cosine_onecycle_schedule(steps, peak, start, div, final_div)
    scales = {int(start * steps): div, steps: 1 / (div * final_div)}
    return _interpolate_case(ours, theirs, peak / div, scales, f"T={steps} {peak} {start} {div} {final_div}")


def join(rng):
    count = int(rng.integers(1, 4))
    boundaries = sorted(rng.integers(0, 400, size=count - 1).tolist())
    ours, theirs, ends, span = [], [], {}, []
    starts = [0] + boundaries
    for k in range(count):
        init, end, steps = _value(rng), _value(rng), int(rng.integers(1, 200))
        ours.append(gradtx.linear_schedule(init, end, steps))
        theirs.append(optax.linear_schedule(init, end, steps))
        span += [_c(init), _c(end)]
        for step, value in ((starts[k], init), (starts[k] + steps, end)):
            if max(j for j, start in enumerate(starts) if start <= step) == k:  # the piece in force there
                ends[step] = _c(value)
    return Case(gradtx.join_schedules(ours, boundaries), optax.join_schedules(theirs, boundaries), ends, span,
                f"{boundaries}")


DRAWS = {
    "constant_schedule": constant,
    "polynomial_schedule": polynomial,
    "linear_schedule": linear,
    "piecewise_constant_schedule": piecewise_constant,
    "exponential_decay": exponential,
    "cosine_decay_schedule": cosine,
    "warmup_cosine_decay_schedule": warmup_cosine,
    "warmup_constant_schedule": warmup_constant,
    "warmup_exponential_decay_schedule": warmup_exponential,
    "sgdr_schedule": sgdr,
    "piecewise_interpolate_schedule": piecewise_interpolate,
    "linear_onecycle_schedule": linear_onecycle,
    "cosine_onecycle_schedule": cosine_onecycle,
    "join_schedules": join,
}


def test_every_optax_schedule_is_drawn():
    optax_names = {
        name for name in dir(optax.schedules) if name.endswith(("_schedule", "_schedules", "_decay")) and name[0] != "_"
    }
    assert optax_names == set(DRAWS)
    assert all(hasattr(gradtx, name) for name in DRAWS)


@functools.cache
def _cases(name):
    rng = np.random.default_rng(sorted(DRAWS).index(name))
    return [DRAWS[name](rng) for _ in range(CASES)]


def _ulps(a, b):
    """Distance in units in the last place of the larger of ``a`` and ``b``."""
    a, b = np.asarray(a), np.asarray(b)
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(a.dtype))
    return np.where(a == b, 0.0, np.abs(a.astype(np.float64) - b.astype(np.float64)) / spacing)


def _ulps_of(a, b, scale):
    """Distance in units in the last place of ``scale``."""
    return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / np.spacing(np.asarray(scale, a.dtype))


def _evaluate(name, dtype):
    cases = _cases(name)
    x64 = dtype == np.float64
    with jax.enable_x64(x64):
        steps = jnp.asarray(STEPS, jnp.int32)
        jitted = jax.jit(lambda ts: [jax.vmap(case.ours)(ts) for case in cases])(steps)
        eager = [case.ours(steps) for case in cases]
        optax_same_dtype = _optax_jitted(cases, steps)
        rng = np.random.default_rng(0)
        scalar = []  # one step at a time, as an eager optimizer calls it: the ends and a few steps
        for case in cases[:EAGER_CASES]:
            picks = sorted(set(case.ends) | set(rng.choice(STEPS[:640], EAGER_STEPS).tolist()))
            scalar.append({t: np.asarray(case.ours(jnp.int32(t))) for t in picks})
    as_np = lambda values: [np.broadcast_to(np.asarray(v), STEPS.shape) for v in values]
    return cases, as_np(jitted), as_np(eager), as_np(optax_same_dtype), scalar


def _optax_jitted(cases, steps):
    # Optax's own values, jitted (its piecewise_interpolate_schedule takes one step at a time).
    return jax.jit(lambda ts: [jax.vmap(case.theirs)(ts) for case in cases])(steps)


@functools.cache
def _optax64(name):
    with jax.enable_x64(True):
        values = _optax_jitted(_cases(name), jnp.asarray(STEPS, jnp.int64))
        return [np.broadcast_to(np.asarray(v, np.float64), STEPS.shape) for v in values]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(DRAWS))
def test_random_arguments_exact_ends_in_range_jit_equals_eager_and_optax(name, dtype):
    cases, jitted, eager, optax_same_dtype, scalar = _evaluate(name, dtype)
    reference = _optax64(name)
    index = {int(t): i for i, t in enumerate(STEPS)}
    for k, case in enumerate(cases):
        where = f"{name}({case.text}) in {np.dtype(dtype).name}"
        assert jitted[k].dtype == dtype and eager[k].dtype == dtype, where
        for step, value in case.exact(dtype).items():
            for label, got in (("jit", jitted[k][index[step]]), ("eager", eager[k][index[step]])):
                assert got == value, f"{where}: {label} at step {step} is {got!r}, not exactly {value!r}"
            if k < EAGER_CASES:
                assert scalar[k][step] == value, f"{where}: eager at step {step} is {scalar[k][step]!r}, not {value!r}"
        low, high = case.bounds(dtype)
        assert np.all((jitted[k] >= low) & (jitted[k] <= high)), f"{where} leaves [{low}, {high}]"
        # Within an ulp of the value; where the ends have opposite signs a value near 0 comes from
        # a cancellation, and within an ulp of the larger end.
        unit = (lambda a, b: _ulps(a, b)) if low >= 0 or high <= 0 else (lambda a, b: _ulps_of(a, b, max(-low, high)))
        assert np.max(unit(jitted[k], eager[k])) <= 1, f"{where}: jit and eager differ"
        for step, value in (scalar[k] if k < EAGER_CASES else {}).items():
            assert unit(jitted[k][index[step]], value) <= 1, f"{where}: jit and eager differ at step {step}"
        assert np.all(np.isfinite(jitted[k])), where
        # Jitted, Optax's polynomial_schedule goes NaN at the end of some fractional-power decays
        # (1 - t/T is then -1e-8): compare where Optax is finite.
        finite = np.isfinite(reference[k]) & np.isfinite(optax_same_dtype[k])
        ours, theirs, theirs_same = jitted[k][finite], reference[k][finite], optax_same_dtype[k][finite]
        scale = max(float(np.max(np.abs(theirs))), float(np.finfo(dtype).tiny))
        if dtype == np.float64:
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-13 * scale, err_msg=where)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=4 * EPS32 * scale, err_msg=where)
            np.testing.assert_allclose(ours, theirs_same, rtol=0, atol=8 * EPS32 * scale, err_msg=where)
