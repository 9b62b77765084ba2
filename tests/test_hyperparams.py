"""inject_hyperparams: hyperparameters as state, stable dtypes, static arguments, no recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
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


def test_numbers_become_float32_arrays_whatever_their_python_type():
    # jax_enable_x64 is on in the tests: Optax would store these as float64 (and `1` as an int).
    state = inject_hyperparams(gradtx.sgd)(learning_rate=1, momentum=0.9).init(sp.initial_params())
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    assert all(v.dtype == jnp.float32 and v.shape == () for v in state.hyperparams.values())
    assert float(state.hyperparams["learning_rate"]) == 1.0
    explicit = inject_hyperparams(gradtx.sgd)(learning_rate=jnp.asarray(0.5, jnp.float64)).init(sp.initial_params())
    assert explicit.hyperparams["learning_rate"].dtype == jnp.float64  # an array keeps the dtype chosen for it
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
    assert state.schedule_values == {}  # the mask callable is not mistaken for a schedule
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
        assert state.hyperparams["learning_rate"].dtype == jnp.float32
    params, state = step(params, state)
    assert len(traces) == 1
    assert step._cache_size() == 1
    np.testing.assert_allclose(get_hyperparams(state)["learning_rate"], np.float32(5e-4), rtol=1e-2)


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
    assert float(state.schedule_values["learning_rate"]) == pytest.approx(float(schedule(0)))
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
