"""Bad input fails fast, with a message that names the argument or the leaf path."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
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


@pytest.mark.parametrize("make", [gradtx.rprop, gradtx.adadelta, gradtx.sm3, gradtx.sign_sgd])
def test_complex_leaf_is_rejected_by_real_only_methods(make):
    # adam, rmsprop, adagrad and their relatives take complex leaves (tests/test_complex_params.py).
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


# ------------------------------------------------------------------------------------------------
# Silent wrong inputs (issue 12, item 4): every builder, a wrong-shaped and a wrong-structured
# gradient, and a state that another transformation built.

P = {"w": jnp.ones((3, 2)), "b": jnp.full(2, 0.5)}
WRONG_SHAPE = {"w": jnp.ones((1, 2)), "b": jnp.full(2, 0.5)}  # would broadcast onto (3, 2)
EXTRA_KEY = {**P, "extra": jnp.ones(1)}
MISSING_KEY = {"w": jnp.ones((3, 2))}
VALUE_FN = {"value_fn": lambda params: jnp.sum(params["w"] ** 2) + jnp.sum(params["b"] ** 2)}

# Transformations without a per-leaf state: the parameters are all they can compare the updates with.
STATELESS = {
    "identity": lambda: gradtx.identity(),
    "stateless": lambda: gradtx.stateless(lambda g, p: g),
    "stateless_with_tree_map": lambda: gradtx.stateless_with_tree_map(lambda g, p: 2 * g),
    "with_extra_args_support": lambda: gradtx.with_extra_args_support(gradtx.scale(0.5)),
    "scale": lambda: gradtx.scale(0.5),
    "scale_by_learning_rate": lambda: gradtx.scale_by_learning_rate(0.1),
    "scale_by_schedule": lambda: gradtx.scale_by_schedule(lambda t: 0.1),
    "clip": lambda: gradtx.clip(1.0),
    "clip_by_global_norm": lambda: gradtx.clip_by_global_norm(1.0),
    "adaptive_grad_clip": lambda: gradtx.adaptive_grad_clip(0.1),
    "add_decayed_weights": lambda: gradtx.add_decayed_weights(1e-2),
    "scale_by_sign": lambda: gradtx.scale_by_sign(),
    "set_to_zero": lambda: gradtx.set_to_zero(),
    "zero_nans": lambda: gradtx.zero_nans(),
    "sgd": lambda: gradtx.sgd(0.1),
    "sign_sgd": lambda: gradtx.sign_sgd(0.1),
    "freeze": lambda: gradtx.freeze({"w": False, "b": True}),
    "masked": lambda: gradtx.masked(gradtx.clip(1.0), {"w": True, "b": False}),
    "partition": lambda: gradtx.partition({"a": gradtx.scale(0.1), "c": gradtx.clip(1.0)}, {"w": "a", "b": "c"}),
    "chain": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.scale(-0.1)),
    "named_chain": lambda: gradtx.named_chain(("clip", gradtx.clip(1.0)), ("scale", gradtx.scale(-0.1))),
    "apply_if_finite": lambda: gradtx.apply_if_finite(gradtx.sgd(0.1), 3),
    "inject_hyperparams": lambda: gradtx.inject_hyperparams(gradtx.sgd)(0.1),
    "keep_params_nonnegative": lambda: gradtx.keep_params_nonnegative(),
    "inject_stateful_hyperparams": lambda: gradtx.inject_stateful_hyperparams(gradtx.sgd)(0.1),
    # The Optax families merged later.
    "adafactor": lambda: gradtx.adafactor(0.1, min_dim_size_to_factor=2),
    "add_noise": lambda: gradtx.add_noise(0.01, 0.55, key=0),
    "centralize": lambda: gradtx.centralize(),
    "clip_by_block_rms": lambda: gradtx.clip_by_block_rms(1.0),
    "fromage": lambda: gradtx.fromage(0.1),
    "galore": lambda: gradtx.galore(0.1, rank=1),
    "measure_with_ema": lambda: gradtx.measure_with_ema(lambda u: u, 0.9),  # the measure keeps the tree
    "monitor": lambda: gradtx.monitor({"norm": lambda u: gradtx.tree_global_norm(u)}),
    "noisy_sgd": lambda: gradtx.noisy_sgd(0.1, key=0),
    "normalize_by_update_norm": lambda: gradtx.normalize_by_update_norm(),
    "scale_by_factored_rms": lambda: gradtx.scale_by_factored_rms(min_dim_size_to_factor=2),
    "scale_by_galore": lambda: gradtx.scale_by_galore(rank=1),
    "scale_by_param_block_norm": lambda: gradtx.scale_by_param_block_norm(),
    "scale_by_param_block_rms": lambda: gradtx.scale_by_param_block_rms(),
    "scale_by_trust_ratio": lambda: gradtx.scale_by_trust_ratio(),
    "snapshot": lambda: gradtx.snapshot("norm", lambda u: gradtx.tree_global_norm(u)),
}

# Transformations with a per-leaf state, which they compare the updates with even without params.
STATEFUL = {
    "quantized_state": lambda: gradtx.quantized_state(gradtx.adam(0.1), min_size=1),
    "adam_8bit": lambda: gradtx.adam_8bit(0.1, min_size=1),
    "adamw_8bit": lambda: gradtx.adamw_8bit(0.1, min_size=1),
    "adam_4bit": lambda: gradtx.adam_4bit(0.1, min_size=1),
    "adamw_4bit": lambda: gradtx.adamw_4bit(0.1, min_size=1),
    "lion_8bit": lambda: gradtx.lion_8bit(0.1, min_size=1),
    "sgd_8bit": lambda: gradtx.sgd_8bit(0.1, min_size=1),
    "trace": lambda: gradtx.trace(0.9),
    "heavy_ball": lambda: gradtx.heavy_ball(0.1, 0.9),
    "ema": lambda: gradtx.ema(0.9),
    "scale_by_rms": lambda: gradtx.scale_by_rms(),
    "scale_by_adagrad": lambda: gradtx.scale_by_adagrad(),
    "scale_by_adadelta": lambda: gradtx.scale_by_adadelta(),
    "scale_by_adam": lambda: gradtx.scale_by_adam(),
    "scale_by_adamax": lambda: gradtx.scale_by_adamax(),
    "scale_by_amsgrad": lambda: gradtx.scale_by_amsgrad(),
    "scale_by_rprop": lambda: gradtx.scale_by_rprop(0.01),
    "sgd_momentum": lambda: gradtx.sgd(0.1, momentum=0.9),
    "adam": lambda: gradtx.adam(0.1),
    "adamw": lambda: gradtx.adamw(0.1),
    "adamax": lambda: gradtx.adamax(0.1),
    "nadam": lambda: gradtx.nadam(0.1),
    "amsgrad": lambda: gradtx.amsgrad(0.1),
    "adagrad": lambda: gradtx.adagrad(0.1),
    "adadelta": lambda: gradtx.adadelta(),
    "rmsprop": lambda: gradtx.rmsprop(0.1),
    "rprop": lambda: gradtx.rprop(0.01),
    "accumulate_gradients": lambda: gradtx.accumulate_gradients(gradtx.sgd(0.1), 2),
    "flatten": lambda: gradtx.flatten(gradtx.adam(0.1)),
    "masked_adam": lambda: gradtx.masked(gradtx.adam(0.1), {"w": True, "b": True}),
    "inject_hyperparams_adam": lambda: gradtx.inject_hyperparams(gradtx.adam)(0.1),
    # The Optax families merged later.
    "acprop": lambda: gradtx.acprop(0.1),
    "adabelief": lambda: gradtx.adabelief(0.1),
    "adamaxw": lambda: gradtx.adamaxw(0.1),
    "adan": lambda: gradtx.adan(0.1),
    "ademamix": lambda: gradtx.ademamix(0.1),
    "adopt": lambda: gradtx.adopt(0.1),
    "apply_every": lambda: gradtx.apply_every(2),
    "cocob": lambda: gradtx.cocob(),
    "conditionally_mask": lambda: gradtx.conditionally_mask(gradtx.adam(0.1), lambda step: step >= 0),
    "conditionally_transform": lambda: gradtx.conditionally_transform(gradtx.adam(0.1), lambda step: step >= 0),
    "dadapt_adamw": lambda: gradtx.dadapt_adamw(),
    "dog": lambda: gradtx.dog(),
    "dowg": lambda: gradtx.dowg(),
    "lamb": lambda: gradtx.lamb(0.1),
    "lars": lambda: gradtx.lars(0.1),
    "lion": lambda: gradtx.lion(0.1),
    "madgrad": lambda: gradtx.madgrad(0.1),
    "mechanize": lambda: gradtx.mechanize(gradtx.adam(0.1)),
    "multi_transform": lambda: gradtx.multi_transform(
        {"a": gradtx.adam(0.1), "c": gradtx.sgd(0.1)}, {"w": "a", "b": "c"}
    ),
    "muon": lambda: gradtx.muon(0.1),
    "nadamw": lambda: gradtx.nadamw(0.1),
    "novograd": lambda: gradtx.novograd(0.1),
    "optimistic_adam": lambda: gradtx.optimistic_adam(0.1),
    "optimistic_adam_v2": lambda: gradtx.optimistic_adam_v2(0.1),
    "optimistic_gradient_descent": lambda: gradtx.optimistic_gradient_descent(0.1),
    "prodigy": lambda: gradtx.prodigy(),
    "radam": lambda: gradtx.radam(0.1),
    "sam": lambda: gradtx.sam(gradtx.sgd(0.1), gradtx.sgd(0.05)),
    "scale_by_acprop": lambda: gradtx.scale_by_acprop(),
    "scale_by_adan": lambda: gradtx.scale_by_adan(),
    "scale_by_ademamix": lambda: gradtx.scale_by_ademamix(),
    "scale_by_adopt": lambda: gradtx.scale_by_adopt(),
    "scale_by_belief": lambda: gradtx.scale_by_belief(),
    "scale_by_cocob": lambda: gradtx.scale_by_cocob(),
    "scale_by_distance_over_gradients": lambda: gradtx.scale_by_distance_over_gradients(param_dtype=jnp.float64),
    "scale_by_dog": lambda: gradtx.scale_by_dog(("heuristic", 1e-6)),
    "scale_by_dowg": lambda: gradtx.scale_by_dowg(),
    "scale_by_lbfgs": lambda: gradtx.scale_by_lbfgs(),
    "scale_by_lion": lambda: gradtx.scale_by_lion(),
    "scale_by_madgrad": lambda: gradtx.scale_by_madgrad(0.1),
    # Muon orthogonalizes matrices only: the vector b is masked out, as muon() routes it to Adam.
    "scale_by_muon": lambda: gradtx.masked(gradtx.scale_by_muon(), {"w": True, "b": False}),
    "scale_by_nadam": lambda: gradtx.scale_by_nadam(),
    "scale_by_novograd": lambda: gradtx.scale_by_novograd(),
    "scale_by_optimistic_gradient": lambda: gradtx.scale_by_optimistic_gradient(),
    "scale_by_radam": lambda: gradtx.scale_by_radam(),
    "scale_by_rss": lambda: gradtx.scale_by_rss(),
    "scale_by_simplified_ademamix": lambda: gradtx.scale_by_simplified_ademamix(),
    "scale_by_sm3": lambda: gradtx.scale_by_sm3(),
    "scale_by_stddev": lambda: gradtx.scale_by_stddev(),
    "scale_by_yogi": lambda: gradtx.scale_by_yogi(),
    "schedule_free": lambda: gradtx.schedule_free(gradtx.sgd(1.0), 0.1),
    "schedule_free_adamw": lambda: gradtx.schedule_free_adamw(),
    "schedule_free_sgd": lambda: gradtx.schedule_free_sgd(),
    "selective_transform": lambda: gradtx.selective_transform(gradtx.adam(0.1), freeze_mask={"w": False, "b": True}),
    "signum": lambda: gradtx.signum(0.1),
    "simplified_ademamix": lambda: gradtx.simplified_ademamix(0.1),
    "sm3": lambda: gradtx.sm3(0.1),
    "split_real_and_imaginary": lambda: gradtx.split_real_and_imaginary(gradtx.adam(0.1)),
    "yogi": lambda: gradtx.yogi(0.1),
    # Kronecker-factored preconditioners.
    "shampoo": lambda: gradtx.shampoo(0.1),
    "scale_by_shampoo": lambda: gradtx.scale_by_shampoo(),
    "soap": lambda: gradtx.soap(0.1),
    "scale_by_soap": lambda: gradtx.scale_by_soap(),
    "psgd_kron": lambda: gradtx.psgd_kron(0.1),
    "scale_by_kron": lambda: gradtx.scale_by_kron(),
}

# Second-order methods need the objective (extra argument value_fn=) and the parameters.
SECOND_ORDER = {
    "newton": lambda: gradtx.newton(),
    "lbfgs": lambda: gradtx.lbfgs(),
    "conjugate_gradient": lambda: gradtx.conjugate_gradient(),
    "scaled_conjugate_gradient": lambda: gradtx.scaled_conjugate_gradient(),
    "hessian_free": lambda: gradtx.hessian_free(curvature="hessian"),
    "esgd": lambda: gradtx.esgd(0.1),
    "scale_by_esgd": lambda: gradtx.scale_by_esgd(),
    "momentum_autotuner": lambda: gradtx.momentum_autotuner(),
}

# Transformations whose update needs the loss (value=), the objective (value_fn=, obj_fn=) or more.
LOSS = lambda params: jnp.sum(params["w"] ** 2) + jnp.sum(params["b"] ** 2)  # noqa: E731
EXTRA_ARGS = {
    "VALUE_FN": {"value_fn": LOSS},
    "VALUE": {"value": LOSS(P)},
    "OBJ_FN": {"obj_fn": LOSS},
    "LINESEARCH": {"value_fn": LOSS, "value": LOSS(P), "grad": jax.grad(LOSS)(P)},
    # K-FAC's batch factors of the dense layer x @ P["w"] + P["b"]: A is 4 x 4 (3 inputs and the bias), G 2 x 2.
    "KFAC": {"kfac_factors": {"['w']": gradtx.KfacFactors(jnp.eye(4), jnp.eye(2))}},
}
KFAC_LAYERS = (gradtx.KfacLayer("dense", "['w']", "['b']"),)
WITH_EXTRA_ARGS = {
    "lbfgs_solver": (lambda: gradtx.lbfgs_solver(), "VALUE_FN"),
    "momo": (lambda: gradtx.momo(), "VALUE"),
    "momo_adam": (lambda: gradtx.momo_adam(), "VALUE"),
    "polyak_sgd": (lambda: gradtx.polyak_sgd(), "VALUE"),
    "reduce_on_plateau": (lambda: gradtx.reduce_on_plateau(), "VALUE"),
    "scale_by_backtracking_linesearch": (lambda: gradtx.scale_by_backtracking_linesearch(15), "LINESEARCH"),
    "scale_by_polyak": (lambda: gradtx.scale_by_polyak(), "VALUE"),
    "scale_by_sophia": (lambda: gradtx.scale_by_sophia(), "OBJ_FN"),
    "scale_by_zoom_linesearch": (lambda: gradtx.scale_by_zoom_linesearch(15), "LINESEARCH"),
    "sophia": (lambda: gradtx.sophia(0.1), "OBJ_FN"),
    "kfac": (lambda: gradtx.kfac(0.1, KFAC_LAYERS), "KFAC"),
    "scale_by_kfac": (lambda: gradtx.scale_by_kfac(KFAC_LAYERS), "KFAC"),
}

ALL_BUILDERS = {**STATELESS, **STATEFUL, **SECOND_ORDER, **{name: make for name, (make, _) in WITH_EXTRA_ARGS.items()}}
# Public builders not in the tables above, with the reason.
EXEMPT = {
    "zero1": "needs a device mesh; its inner transformation performs the checks (tests/test_distributed.py)",
    "lookahead": "its params are LookaheadParams(fast, slow), not a tree like P; its fast optimizer checks them",
    "dpsgd": "takes per-example gradients (a batch axis first on every leaf), unlike the tablesx27 gradients",
    "hutchinson_estimator_diag_hessian": "ignores its updates (as Optax's); sophia, which uses it, is in STATEFUL",
    "differentially_private_aggregate": "takes per-example gradients (a batch axis first on every leaf), like dpsgd",
}


def _extra(name: str) -> dict:
    """The extra keyword arguments of ``update`` that the transformation ``name`` needs."""
    if name in WITH_EXTRA_ARGS:
        return EXTRA_ARGS[WITH_EXTRA_ARGS[name][1]]
    return VALUE_FN if name in SECOND_ORDER else {}


def test_every_public_builder_is_in_a_table():
    """A new public builder must join one of the tables, so that it is checked like the others."""
    covered = {name.split("_momentum")[0] for name in ALL_BUILDERS} | set(ALL_BUILDERS) | set(EXEMPT)
    for module in (gradtx, gradtx.second_order):
        for name in module.__all__:
            function = getattr(module, name)
            if inspect.isfunction(function) and "GradientTransformation" in str(
                inspect.signature(function).return_annotation
            ):
                assert name in covered, f"gradtx.{name} is in no table of tests/test_errors.py"


@pytest.mark.parametrize("name", sorted(ALL_BUILDERS))
@pytest.mark.parametrize("jit", [False, True])
def test_wrong_gradient_with_params_names_the_path(name, jit):
    transform = ALL_BUILDERS[name]()
    extra = _extra(name)
    state = transform.init(P)

    def update(updates):
        step = lambda u, s, p: transform.update(u, s, p, **extra)  # noqa: E731
        return (jax.jit(step) if jit else step)(updates, state, P)

    with pytest.raises(ValueError, match=r"\['w'\].*shape \(1, 2\)"):
        update(WRONG_SHAPE)
    with pytest.raises(ValueError, match=r"\['extra'\]"):
        update(EXTRA_KEY)
    with pytest.raises(ValueError, match=r"\['b'\]"):
        update(MISSING_KEY)
    updates, _ = update(jax.tree.map(lambda p: 0.1 * p, P))  # the right tree still works
    assert jax.tree.structure(updates) == jax.tree.structure(P)


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_wrong_gradient_without_params_is_caught_by_the_state(name):
    transform = STATEFUL[name]()
    state = transform.init(P)
    # adamw and adadelta decay the weights, so they ask for the parameters first.
    needs_params = "needs the parameters"
    with pytest.raises(ValueError, match=rf"\['w'\].*\(1, 2\)|{needs_params}"):
        transform.update(WRONG_SHAPE, state)
    with pytest.raises(ValueError, match=rf"\['extra'\]|{needs_params}"):
        transform.update(EXTRA_KEY, state)


def foreign_state(own_state):
    """A state that another optimizer built, with another type or layout than ``own_state``."""
    candidates = [
        gradtx.adam(0.1).init(P),                     # (AdamState, ScaleByScheduleState)
        gradtx.sgd(0.1, momentum=0.9).init(P),        # (TraceState, ScaleByScheduleState): the case
        gradtx.scale_by_adam().init(P),
        gradtx.trace(0.9).init(P),
    ]
    for candidate in candidates:
        if jax.tree.structure(candidate) != jax.tree.structure(own_state):
            return candidate
    raise AssertionError("no foreign state")


@pytest.mark.parametrize("name", sorted(ALL_BUILDERS))
def test_foreign_state_is_a_clear_error(name):
    """Every transformation that keeps a state refuses one it did not build (no AttributeError)."""
    transform = ALL_BUILDERS[name]()
    extra = _extra(name)
    foreign = foreign_state(transform.init(P))
    with pytest.raises((TypeError, ValueError), match=r"state") as error:
        transform.update(jax.tree.map(lambda p: 0.1 * p, P), foreign, P, **extra)
    assert not isinstance(error.value, AttributeError)


def test_adam_state_given_to_sgd_momentum_names_both_types():
    with pytest.raises(TypeError, match=r"trace: expected its state to be a TraceState, got AdamState"):
        gradtx.sgd(0.1, momentum=0.9).update(P, gradtx.adam(0.1).init(P), P)


def test_apply_updates_refuses_wrong_trees_and_truncation():
    with pytest.raises(ValueError, match=r"apply_updates.*\['w'\].*\(1, 2\).*\(3, 2\)"):
        gradtx.apply_updates(P, WRONG_SHAPE)
    with pytest.raises(ValueError, match=r"apply_updates.*\['extra'\]"):
        gradtx.apply_updates(P, EXTRA_KEY)
    with pytest.raises(ValueError, match=r"apply_updates.*\['b'\]"):
        jax.jit(gradtx.apply_updates)(P, MISSING_KEY)
    ints = {"w": jnp.ones(3), "count": jnp.arange(3, dtype=jnp.int32)}
    with pytest.raises(TypeError, match=r"\['count'\].*int32.*float"):
        gradtx.apply_updates(ints, {"w": jnp.ones(3), "count": jnp.full(3, 0.4)})
    with pytest.raises(TypeError, match=r"\['flag'\].*bool"):
        gradtx.apply_updates({"flag": jnp.ones(2, bool)}, {"flag": jnp.ones(2, bool)})
    # Integer updates of integer parameters are exact, and None leaves stay None.
    added = gradtx.apply_updates(ints, {"w": jnp.ones(3), "count": jnp.ones(3, jnp.int32)})
    np.testing.assert_array_equal(added["count"], [1, 2, 3])
    assert added["count"].dtype == jnp.int32
    assert gradtx.apply_updates({"a": None, "b": jnp.ones(2)}, {"a": None, "b": jnp.ones(2)})["a"] is None


@pytest.mark.parametrize(
    "mask, message",
    [
        ({"w": True}, r"no entry for the leaf at \['b'\]"),
        ({"w": True, "b": False, "c": True}, r"entry at \['c'\]"),
        (lambda params: {"w": True}, r"no entry for the leaf at \['b'\]"),
        ({"w": [True], "b": False}, r"\['w'\]"),
    ],
)
def test_mask_that_does_not_fit_names_the_path(mask, message):
    optimizer = gradtx.masked(gradtx.adam(0.1), mask)
    with pytest.raises(ValueError, match=message):
        optimizer.init(P)
    valid = gradtx.masked(gradtx.adam(0.1), {"w": True, "b": False})
    with pytest.raises(ValueError, match=message):
        gradtx.masked(gradtx.adam(0.1), mask).update(P, valid.init(P), P)
    with pytest.raises(ValueError, match=r"partition: the mask has no entry for the leaf at \['b'\]"):
        gradtx.partition({"a": gradtx.sgd(0.1)}, {"w": "a"}).init(P)
