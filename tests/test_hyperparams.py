"""inject_hyperparams: hyperparameters as state, stable dtypes, static arguments, no recompilation."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import softmax_problem as sp

import gradtx
from gradtx.hyperparams import InjectHyperparamsState, get_hyperparams, inject_hyperparams, set_hyperparams
from gradtx.schedules import exponential_decay


def make_counted_step(optimizer):
    """A jitted training step on the softmax problem and a list that grows by one per trace."""
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)  # runs only while tracing: one entry per compilation
        updates, state = optimizer.update(sp.grad(params), state, params)
        return gradtx.apply_updates(params, updates), state

    return step, traces


def test_same_trajectory_as_the_plain_optimizer():
    injected = inject_hyperparams(gradtx.adam, hyperparam_dtype=jnp.float64)(learning_rate=1e-2, b1=0.8, b2=0.99)
    plain = gradtx.adam(1e-2, b1=0.8, b2=0.99)
    assert sp.max_relative_error(sp.run_gradtx(injected, 20), sp.run_gradtx(plain, 20)) < 1e-14


def test_numbers_take_the_parameters_dtype_as_in_optax():
    # Until this change gradtx stored every number as float32; it now follows Optax: the widest
    # float dtype of the parameters, or hyperparam_dtype. A Python int is still stored as a float.
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), sp.initial_params())
    state = inject_hyperparams(gradtx.sgd)(learning_rate=1, momentum=0.9).init(params32)
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    assert all(v.dtype == jnp.float32 and v.shape == () for v in state.hyperparams.values())
    assert float(state.hyperparams["learning_rate"]) == 1.0
    state64 = inject_hyperparams(gradtx.sgd)(learning_rate=1, momentum=0.9).init(sp.initial_params())
    assert all(v.dtype == jnp.float64 for v in state64.hyperparams.values())
    explicit = inject_hyperparams(gradtx.sgd)(learning_rate=jnp.asarray(0.5, jnp.float64)).init(params32)
    assert explicit.hyperparams["learning_rate"].dtype == jnp.float64  # a strongly typed array keeps its dtype
    wide = inject_hyperparams(gradtx.sgd, hyperparam_dtype=jnp.bfloat16)(learning_rate=0.5).init(sp.initial_params())
    assert wide.hyperparams["learning_rate"].dtype == jnp.bfloat16


def test_flags_dtypes_and_masks_stay_static():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    decay_kernel = lambda p: {"w": True, "b": False}
    optimizer = inject_hyperparams(gradtx.adamw)(
        1e-2, mu_dtype=jnp.bfloat16, nesterov=True, mask=decay_kernel, weight_decay=0.1
    )
    state = optimizer.init(params)
    assert set(state.hyperparams) == {"learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"}
    assert state.hyperparams_states == {}  # the mask callable is not mistaken for a schedule
    adam_state = state.inner_state[0]
    assert adam_state.mu["w"].dtype == jnp.bfloat16  # the dtype argument reached scale_by_adam
    reference = gradtx.adamw(1e-2, mu_dtype=jnp.bfloat16, nesterov=True, mask=decay_kernel, weight_decay=0.1)
    grads = {"w": jnp.full((3, 2), 0.3), "b": jnp.full(2, -0.2)}
    updates, _ = jax.jit(optimizer.update)(grads, state, params)
    expected, _ = jax.jit(reference.update)(grads, reference.init(params), params)
    for name in params:
        np.testing.assert_allclose(updates[name], expected[name], rtol=1e-6)
    # A pytree mask is static too.
    tree_masked = inject_hyperparams(gradtx.adamw)(1e-2, mask={"w": True, "b": False}).init(params)
    assert "mask" not in tree_masked.hyperparams


def test_changing_hyperparameters_never_recompiles():
    optimizer = inject_hyperparams(gradtx.adam)(learning_rate=1e-2, b1=0.9)
    step, traces = make_counted_step(optimizer)
    params = sp.initial_params()
    state = optimizer.init(params)
    new_values = [3e-3, np.float64(1e-3), jnp.asarray(2e-3, jnp.float64), 1, jnp.asarray(5e-4, jnp.bfloat16)]
    for learning_rate in new_values:
        params, state = step(params, state)
        state = set_hyperparams(state, learning_rate=learning_rate, b1=0.5)
        assert state.hyperparams["learning_rate"].dtype == jnp.float64  # the parameters' dtype
    params, state = step(params, state)
    assert len(traces) == 1
    assert step._cache_size() == 1
    np.testing.assert_allclose(get_hyperparams(state)["learning_rate"], 5e-4, rtol=1e-2)


def test_edited_values_take_effect():
    optimizer = inject_hyperparams(gradtx.sgd)(learning_rate=0.1, momentum=0.0)
    step, traces = make_counted_step(optimizer)
    params = sp.initial_params()
    params, state = step(params, optimizer.init(params))
    frozen = set_hyperparams(state, learning_rate=0.0)
    still, _ = step(params, frozen)
    assert all(np.array_equal(still[k], params[k]) for k in params)
    # Halving the learning rate of plain SGD halves the step (float32 0.05 vs float32 0.1).
    halved, _ = step(params, set_hyperparams(state, learning_rate=0.05))
    full, _ = step(params, state)
    np.testing.assert_allclose(halved["w"] - params["w"], 0.5 * (full["w"] - params["w"]), rtol=1e-6)
    assert len(traces) == 1


def test_schedules_are_evaluated_each_step_and_stored():
    schedule = exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    optimizer = inject_hyperparams(gradtx.sgd, hyperparam_dtype=jnp.float64)(learning_rate=schedule, momentum=0.9)
    params = sp.initial_params()
    state = optimizer.init(params)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(schedule(0)))
    assert int(state.hyperparams_states["learning_rate"].count) == 0
    step, traces = make_counted_step(optimizer)
    for t in range(4):
        params, state = step(params, state)
        assert float(get_hyperparams(state)["learning_rate"]) == pytest.approx(float(schedule(t)), rel=1e-12)
    assert len(traces) == 1
    reference = sp.run_gradtx(gradtx.sgd(schedule, momentum=0.9), 10)
    assert sp.max_relative_error(sp.run_gradtx(optimizer, 10), reference) < 1e-14
    with pytest.raises(ValueError, match="scheduled"):
        set_hyperparams(state, learning_rate=0.3)
    with pytest.raises(KeyError, match="no injected hyperparameter 'b1'"):
        set_hyperparams(state, b1=0.3)


def test_schedule_parameters_as_hyperparameters():
    def warmup_sgd(peak_learning_rate, warmup_steps: int, momentum=0.9):
        warmup = lambda t: peak_learning_rate * jnp.minimum(1.0, (t + 1) / warmup_steps)
        return gradtx.sgd(warmup, momentum=momentum)

    optimizer = inject_hyperparams(warmup_sgd)(peak_learning_rate=0.2, warmup_steps=5)
    params = sp.initial_params()
    state = optimizer.init(params)
    assert set(state.hyperparams) == {"peak_learning_rate", "momentum"}  # warmup_steps: annotated int
    step, traces = make_counted_step(optimizer)
    for peak in (0.2, 0.1, 0.05):
        state = set_hyperparams(state, peak_learning_rate=peak)
        params, state = step(params, state)
    assert len(traces) == 1


def test_state_found_inside_combinators_and_vmapped_sweeps():
    params = sp.initial_params()
    optimizer = gradtx.chain(gradtx.clip_by_global_norm(1.0), inject_hyperparams(gradtx.sgd)(0.1, momentum=0.9))
    state = set_hyperparams(optimizer.init(params), momentum=0.5)
    assert isinstance(state[1], InjectHyperparamsState)
    assert float(get_hyperparams(state)["momentum"]) == 0.5

    # One batched state holds K configurations; vmap trains them all, and editing broadcasts.
    learning_rates = jnp.asarray([0.3, 0.1, 0.03], jnp.float32)
    injected = lambda lr: inject_hyperparams(gradtx.sgd)(lr, momentum=0.9)
    states = jax.vmap(lambda lr: injected(lr).init(params))(learning_rates)
    assert states.hyperparams["learning_rate"].shape == (3,)
    template = injected(0.0)  # structure only: the values come from the state

    def run(state):
        p = params
        for _ in range(3):
            updates, state = template.update(jax.grad(sp.loss)(p), state, p)
            p = gradtx.apply_updates(p, updates)
        return p

    batched = jax.jit(jax.vmap(run))(states)
    run_one = jax.jit(run)
    for k, lr in enumerate(learning_rates):
        single = run_one(injected(lr).init(params))
        np.testing.assert_allclose(batched["w"][k], single["w"], rtol=1e-12)
    edited = set_hyperparams(states, momentum=0.0)
    assert edited.hyperparams["momentum"].shape == (3,)
    with pytest.raises(ValueError, match="does not broadcast"):
        set_hyperparams(states, momentum=jnp.zeros(2))


def test_errors():
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        inject_hyperparams(gradtx.adam)(learning_rate=-1.0)
    with pytest.raises(ValueError, match="static_args"):
        inject_hyperparams(gradtx.adam, static_args=("beta_one",))
    with pytest.raises(TypeError, match=r"\*kwargs"):
        inject_hyperparams(lambda **kwargs: gradtx.sgd(0.1))
    with pytest.raises(ValueError, match="no InjectHyperparamsState"):
        get_hyperparams(gradtx.adam(1e-3).init(sp.initial_params()))


# --- Optax compatibility -------------------------------------------------------------------------


class HalvingOnPlateau(NamedTuple):
    """A stateful schedule of our own: the value halves each time the loss fails to improve."""

    base: float

    def init(self):
        return {"best": jnp.asarray(jnp.inf, jnp.float32), "halvings": jnp.zeros([], jnp.int32)}

    def update(self, state, **extra_args):
        loss = extra_args["loss"]
        improved = loss < state["best"]
        return {"best": jnp.minimum(state["best"], loss), "halvings": state["halvings"] + (~improved).astype(jnp.int32)}

    def __call__(self, state, **extra_args):
        del extra_args
        return self.base * 0.5 ** state["halvings"]


def _dtypes(tree):
    return jax.tree.map(lambda x: jnp.result_type(x), tree)


def test_state_fields_match_optax():
    assert gradtx.InjectStatefulHyperparamsState._fields == optax.InjectStatefulHyperparamsState._fields
    assert gradtx.WrappedScheduleState._fields == optax.schedules.WrappedSchedule(lambda t: t).init()._fields
    assert gradtx.inject_stateful_hyperparams is not None and optax.inject_stateful_hyperparams is not None


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
@pytest.mark.parametrize("hyperparam_dtype", [None, jnp.float32, jnp.bfloat16])
def test_hyperparameter_dtypes_and_values_match_optax(param_dtype, hyperparam_dtype):
    params = {"w": jnp.ones((3, 2), param_dtype), "b": jnp.zeros(2, param_dtype)}
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, p.dtype), params)
    kwargs = dict(b1=0.9, b2=jnp.asarray(0.99), eps=jnp.asarray(1e-6, jnp.float32), eps_root=0.0)
    # One schedule for both: Optax keeps a schedule's strongly typed value in its own dtype, and
    # gradtx's schedules compute in float64 under jax_enable_x64 where Optax's may not; the
    # weakly typed ``momentum`` schedule takes the hyperparameter dtype in both.
    schedule = gradtx.warmup_cosine_decay_schedule(0.0, 0.1, 3, 10)
    kwargs["b1"] = lambda t: 0.9 - 0.1 * (t > 2)
    ours = inject_hyperparams(gradtx.adam, hyperparam_dtype=hyperparam_dtype)(learning_rate=schedule, **kwargs)
    theirs = optax.inject_hyperparams(optax.adam, hyperparam_dtype=hyperparam_dtype)(learning_rate=schedule, **kwargs)
    our_state, their_state = ours.init(params), theirs.init(params)
    for _ in range(4):
        assert _dtypes(our_state.hyperparams) == _dtypes(their_state.hyperparams)
        for name, value in their_state.hyperparams.items():
            np.testing.assert_allclose(np.float64(our_state.hyperparams[name]), np.float64(value), rtol=1e-6)
        assert int(our_state.count) == int(their_state.count)
        assert int(our_state.hyperparams_states["learning_rate"].count) == int(
            their_state.hyperparams_states["learning_rate"].count
        )
        _, our_state = jax.jit(ours.update)(grads, our_state, params)
        _, their_state = jax.jit(theirs.update)(grads, their_state, params)


def test_scheduled_trajectory_matches_optax():
    # The same schedules in both (Optax's compute in float32 from an int32 count; they are
    # compared with ours in test_schedules*.py).
    schedules = dict(learning_rate=gradtx.exponential_decay(1e-2, 10, 0.8), b1=gradtx.linear_schedule(0.5, 0.9, 50))
    ours = inject_hyperparams(gradtx.adam)(**schedules, b2=0.99)
    theirs = optax.inject_hyperparams(optax.adam)(**schedules, b2=0.99)
    assert sp.max_relative_error(sp.run_gradtx(ours, 120), sp.run_gradtx(theirs, 120)) < 1e-8


def test_stateful_schedules_as_in_optax():
    params = sp.initial_params()
    schedule = HalvingOnPlateau(0.2)
    ours = inject_hyperparams(gradtx.sgd)(learning_rate=schedule, momentum=0.9)
    theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.9)
    our_step, their_step = jax.jit(ours.update), jax.jit(theirs.update)
    our_params, our_state = params, ours.init(params)
    their_params, their_state = params, theirs.init(params)
    for t in range(30):
        loss = jnp.asarray([3.0, 2.0, 2.5, 1.0, 1.5][t % 5] / (1 + t // 5), jnp.float32)  # improves, then not
        updates, our_state = our_step(sp.grad(our_params), our_state, our_params, loss=loss)
        our_params = gradtx.apply_updates(our_params, updates)
        updates, their_state = their_step(sp.grad(their_params), their_state, their_params, loss=loss)
        their_params = optax.apply_updates(their_params, updates)
        assert _dtypes(our_state[:3]) == _dtypes(their_state[:3])  # count, hyperparams, hyperparams_states
        np.testing.assert_allclose(our_state.hyperparams["learning_rate"], their_state.hyperparams["learning_rate"])
        assert int(our_state.hyperparams_states["learning_rate"]["halvings"]) == int(
            their_state.hyperparams_states["learning_rate"]["halvings"]
        )
    assert int(our_state.hyperparams_states["learning_rate"]["halvings"]) > 5  # the schedule did act
    assert sp.max_relative_error([our_params], [their_params]) < 1e-12
    # Optax's own stateful schedules work inside gradtx's wrapper, and ours inside Optax's.
    wrapped = optax.schedules.WrappedSchedule(gradtx.linear_schedule(0.1, 0.0, 10))
    assert isinstance(wrapped, gradtx.StatefulSchedule)
    assert isinstance(gradtx.WrappedSchedule(abs), gradtx.StatefulSchedule)
    mixed = inject_hyperparams(gradtx.sgd)(learning_rate=wrapped)
    reference = sp.run_gradtx(gradtx.sgd(gradtx.linear_schedule(0.1, 0.0, 10)), 12)
    assert sp.max_relative_error(sp.run_gradtx(mixed, 12), reference) < 1e-14
    inside_optax = optax.inject_hyperparams(optax.sgd)(learning_rate=gradtx.WrappedSchedule(lambda t: 0.1 / (1 + t)))
    reference = sp.run_gradtx(optax.sgd(lambda t: 0.1 / (1 + t)), 12)
    assert sp.max_relative_error(sp.run_gradtx(inside_optax, 12), reference) < 1e-14


def test_wrapped_schedule_matches_optax():
    schedule = gradtx.cosine_decay_schedule(1.0, 5)
    ours, theirs = gradtx.WrappedSchedule(schedule), optax.schedules.WrappedSchedule(schedule)
    our_state, their_state = ours.init(), theirs.init()
    for _ in range(8):
        assert our_state.count.dtype == their_state.count.dtype and int(our_state.count) == int(their_state.count)
        assert float(ours(our_state)) == float(theirs(their_state))
        our_state, their_state = ours.update(our_state, loss=1.0), theirs.update(their_state, loss=1.0)


def test_optax_usage_patterns():
    # Assigning into state.hyperparams, as Optax's documentation does, changes the next update.
    optimizer = gradtx.inject_stateful_hyperparams(gradtx.clip_by_global_norm)(0.1)
    params = jnp.zeros((3, 5, 7))
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    for norm in range(1, 5):
        state.hyperparams["max_norm"] = norm
        updates, state = update(jnp.ones_like(params), state)
        np.testing.assert_allclose(jnp.linalg.norm(updates.ravel()), norm, rtol=1e-6)
    # The first update uses the schedule at step 0; a non-schedule callable is listed as static.
    optimizer = inject_hyperparams(gradtx.scale)(lambda count: count)
    updates, _ = jax.jit(optimizer.update)(jnp.array([-1.0, 0.0, 1.0]), optimizer.init(jnp.zeros(3)))
    np.testing.assert_array_equal(updates, np.zeros(3))
    masked = inject_hyperparams(
        lambda learning_rate, selector: gradtx.masked(gradtx.scale(-learning_rate), selector), static_args="selector"
    )(0.1, lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
    state = masked.init([jnp.ones((1, 2)), jnp.ones(2)])
    assert set(state.hyperparams) == {"learning_rate"} and state.hyperparams_states == {}
def test_get_hyperparams_reports_the_last_update_values_like_optax():
    """Scheduled values are those the last update used (Optax's state.hyperparams too); the next
    update's value is the schedule at state.count. Editable values are the next update's."""
    import optax

    schedule = lambda count: 0.1 / (1.0 + count)  # noqa: E731
    ours = inject_hyperparams(gradtx.sgd)(learning_rate=schedule, momentum=0.5)
    theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=0.5)
    params = {"w": jnp.ones(2)}
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    assert float(get_hyperparams(state_ours)["learning_rate"]) == pytest.approx(schedule(0))
    for t in range(3):
        updates, state_ours = ours.update({"w": jnp.ones(2)}, state_ours, params)
        _, state_theirs = theirs.update({"w": jnp.ones(2)}, state_theirs, params)
        used = get_hyperparams(state_ours)["learning_rate"]
        assert float(used) == pytest.approx(schedule(t), rel=1e-7)  # the value update t used
        assert float(used) == pytest.approx(float(state_theirs.hyperparams["learning_rate"]), rel=1e-7)
        assert int(state_ours.count) == int(state_theirs.count) == t + 1
        next_value = schedule(state_ours.count)  # what update t + 1 will use
        assert float(next_value) == pytest.approx(schedule(t + 1))
    state_ours = set_hyperparams(state_ours, momentum=0.0)
    assert float(get_hyperparams(state_ours)["momentum"]) == 0.0  # read back before the update that uses it
