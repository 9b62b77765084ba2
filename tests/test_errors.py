"""Bad input fails fast, with a message that names the argument or the leaf path."""

import jax
import jax.numpy as jnp
import pytest

import gradtx

PARAMS = {"encoder": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, "head": jnp.ones(4)}


@pytest.mark.parametrize(
    "make",
    [gradtx.sgd, gradtx.adam, gradtx.adamw, gradtx.rmsprop, gradtx.adagrad, gradtx.adamax, gradtx.nadam,
     gradtx.amsgrad, gradtx.sign_sgd, gradtx.scale_by_learning_rate],
)
def test_negative_learning_rate_names_the_argument(make):
    with pytest.raises(ValueError, match="learning_rate"):
        make(-0.1)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: gradtx.sgd(0.1, momentum=1.0), "momentum"),
        (lambda: gradtx.sgd(0.1, momentum=-0.5), "momentum"),
        (lambda: gradtx.adam(0.1, b1=1.0), "b1"),
        (lambda: gradtx.adam(0.1, b2=1.5), "b2"),
        (lambda: gradtx.rmsprop(0.1, decay=1.0), "decay"),
        (lambda: gradtx.adadelta(rho=-0.1), "rho"),
        (lambda: gradtx.trace(decay=2.0), "decay"),
        (lambda: gradtx.ema(decay=1.0), "decay"),
        (lambda: gradtx.rprop(0.1, eta_minus=1.0), "eta_minus"),
        (lambda: gradtx.rprop(0.1, eta_plus=1.0), "eta_plus"),
        (lambda: gradtx.rprop(0.1, min_step_size=1.0, max_step_size=0.5), "min_step_size"),
        (lambda: gradtx.adamw(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: gradtx.clip_by_global_norm(0.0), "max_norm"),
        (lambda: gradtx.adaptive_grad_clip(-1.0), "clipping"),
        (lambda: gradtx.clip(-1.0), "max_delta"),
        (lambda: gradtx.rprop(0.1, eta_minus=0.0), "eta_minus"),
        (lambda: gradtx.rprop(0.0), "learning_rate"),
        (lambda: gradtx.rprop(0.1, min_step_size=-1e-6), "min_step_size"),
        (lambda: gradtx.MultiSteps(gradtx.sgd(0.1), every_k_schedule=0), "every_k_schedule"),
        (lambda: gradtx.apply_every(0), "k"),
        (lambda: gradtx.lookahead(gradtx.sgd(0.1), 0, 0.5), "sync_period"),
        (lambda: gradtx.lookahead(gradtx.sgd(0.1), 5, -0.5), "slow_step_size"),
        (lambda: gradtx.measure_with_ema(gradtx.tree_global_norm, 1.0), "decay"),
        (lambda: gradtx.incremental_update({"w": 1.0}, {"w": 0.0}, 2.0), "step_size"),
        (lambda: gradtx.periodic_update({"w": 1.0}, {"w": 0.0}, 1, 0), "update_period"),
    ],
)
def test_hyperparameter_out_of_range_names_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize("eps", [0.0, -1e-8])
@pytest.mark.parametrize(
    "make",
    [
        lambda eps: gradtx.adam(0.1, eps=eps),
        lambda eps: gradtx.adamw(0.1, eps=eps),
        lambda eps: gradtx.nadam(0.1, eps=eps),
        lambda eps: gradtx.amsgrad(0.1, eps=eps),
        lambda eps: gradtx.adamax(0.1, eps=eps),
        lambda eps: gradtx.rmsprop(0.1, eps=eps),
        lambda eps: gradtx.adagrad(0.1, eps=eps),
        lambda eps: gradtx.adadelta(eps=eps),
        lambda eps: gradtx.scale_by_rms(eps=eps, centered=True),
    ],
)
def test_eps_must_be_positive(make, eps):
    # eps = 0 turns the step on a zero gradient into 0 / 0.
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        make(eps)


def test_structure_mismatch_names_both_paths_and_counts():
    optimizer = gradtx.rmsprop(0.1)
    state = optimizer.init(PARAMS)
    renamed = {"encoder": {"w": jnp.ones((3, 2)), "bias": jnp.zeros(2)}, "head": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"\['encoder'\]\['bias'\].*\['encoder'\]\['b'\]"):
        optimizer.update(renamed, state)
    extra = {**PARAMS, "tail": jnp.ones(1)}
    with pytest.raises(ValueError, match=r"\['tail'\].*4 leaves in updates, 3 in"):
        optimizer.update(extra, state)
    with pytest.raises(ValueError, match=r"\['head'\].*shape \(5,\) in updates vs \(4,\)"):
        jax.jit(optimizer.update)({**PARAMS, "head": jnp.ones(5)}, state)


@pytest.mark.parametrize("make", [gradtx.adam, gradtx.adagrad, gradtx.adadelta, gradtx.rprop, gradtx.sign_sgd])
def test_boolean_leaf_is_a_type_error_naming_the_path(make):
    with pytest.raises(TypeError, match=r"\['mask'\].*bool"):
        make(0.1).init({"w": jnp.ones(3), "mask": jnp.ones(3, bool)})


def test_schedules_and_arrays_are_accepted_without_checks():
    gradtx.adam(lambda t: 1e-3)
    gradtx.sgd(jnp.asarray(0.1), momentum=jnp.asarray(0.9))


def test_mismatched_gradient_tree_names_the_path():
    optimizer = gradtx.adam(1e-3)
    state = optimizer.init(PARAMS)
    missing = {"encoder": {"w": jnp.ones((3, 2))}, "head": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"\['encoder'\]\['b'\]|\['head'\]"):
        optimizer.update(missing, state)
    wrong_shape = {"encoder": {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}, "head": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"\['encoder'\]\['w'\].*\(2, 3\).*\(3, 2\)"):
        jax.jit(optimizer.update)(wrong_shape, state)


@pytest.mark.parametrize(
    "make",
    [gradtx.adam, gradtx.rmsprop, gradtx.adagrad, gradtx.rprop, gradtx.sgd, lambda lr: gradtx.sgd(lr, momentum=0.9)],
)
def test_integer_leaf_is_a_type_error_naming_the_path(make):
    params = {"w": jnp.ones(3), "step": jnp.asarray(3, jnp.int32)}
    optimizer = make(0.1)
    with pytest.raises(TypeError, match=r"\['step'\].*int32"):
        optimizer.init(params)


@pytest.mark.parametrize("make", [gradtx.adam, gradtx.rmsprop, gradtx.adagrad, gradtx.rprop])
def test_complex_leaf_is_rejected_by_real_only_methods(make):
    with pytest.raises(TypeError, match=r"\['z'\].*complex"):
        make(0.1).init({"z": jnp.ones(2, jnp.complex64)})


def test_momentum_sgd_accepts_complex_leaves():
    params = {"z": jnp.ones(2, jnp.complex64)}
    optimizer = gradtx.sgd(0.1, momentum=0.9)
    updates, _ = optimizer.update(params, optimizer.init(params))
    assert updates["z"].dtype == jnp.complex64


def test_decayed_weights_without_params_is_a_clear_error():
    optimizer = gradtx.adamw(1e-3)
    state = optimizer.init(PARAMS)
    with pytest.raises(ValueError, match="needs the parameters"):
        optimizer.update(PARAMS, state)


def test_chain_rejects_non_transforms():
    with pytest.raises(TypeError, match="chain argument 1"):
        gradtx.chain(gradtx.sgd(0.1), 0.5)


def test_partition_with_unknown_label():
    optimizer = gradtx.partition({"a": gradtx.sgd(0.1)}, {"encoder": {"w": "a", "b": "b"}, "head": "a"})
    with pytest.raises(ValueError, match="have no transform"):
        optimizer.init(PARAMS)
