"""gradtx: composable, jit-compiled gradient transformations for JAX.

The public namespace is flat: ``gradtx.adam``, ``gradtx.chain``, ``gradtx.scale_by_rms``,
``gradtx.cosine_decay_schedule``. Layers and initializers live in ``gradtx.nn``.
"""

from gradtx import assignment, contrib, losses, microbatching, nn, perturbations, projections, tree
from gradtx.accumulation import (
    AccumulationState,
    ApplyEvery,
    MultiSteps,
    MultiStepsState,
    ShouldSkipUpdateFunction,
    accumulate_gradients,
    apply_every,
    skip_large_updates,
    skip_not_finite,
)
from gradtx.adam import (
    AdamState,
    AmsgradState,
    adam,
    adamax,
    adamw,
    amsgrad,
    nadam,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
)
from gradtx.adam_variants import (
    RadamState,
    ScaleByBeliefState,
    ScaleByNadamState,
    YogiState,
    adabelief,
    adamaxw,
    nadamw,
    radam,
    scale_by_belief,
    scale_by_nadam,
    scale_by_radam,
    scale_by_yogi,
    yogi,
)
from gradtx.adan import ProximalDecayState, ScaleByAdanState, adan, scale_by_adan
from gradtx.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    TransformInitFn,
    TransformUpdateExtraArgsFn,
    TransformUpdateFn,
    Updates,
    apply_updates,
    identity,
    init_empty_state,
    stateless,
    stateless_with_tree_map,
    value_at,
)
from gradtx.checkpoint import load_state, save_state
from gradtx.clipping import clip_by_block_rms, per_example_global_norm_clip, per_example_layer_norm_clip
from gradtx.combinators import (
    MaskedNode,
    MaskedState,
    MaskOrFn,
    MultiTransformState,
    PartitionState,
    chain,
    freeze,
    masked,
    multi_transform,
    named_chain,
    partition,
    selective_transform,
    set_to_zero,
)
from gradtx.conditionality import (
    ConditionallyMaskState,
    ConditionallyTransformState,
    ConditionFn,
    conditionally_mask,
    conditionally_transform,
)
from gradtx.constraints import NonNegativeParamsState, centralize, keep_params_nonnegative, normalize_by_update_norm
from gradtx.contrib import (
    COCOBState,
    DAdaptAdamWState,
    DifferentiallyPrivateAggregateState,
    DoGState,
    DoWGState,
    GaLoreDimensionNumbers,
    GaLoreState,
    HutchinsonState,
    MadgradState,
    MechanicState,
    MomoAdamState,
    MomoState,
    MuonDimensionNumbers,
    MuonState,
    ProdigyState,
    ReduceLROnPlateauState,
    SAMState,
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ScheduleFreeState,
    SophiaState,
    SplitRealAndImaginaryState,
    acprop,
    ademamix,
    adopt,
    cocob,
    dadapt_adamw,
    differentially_private_aggregate,
    dog,
    dowg,
    dpsgd,
    galore,
    hutchinson_estimator_diag_hessian,
    madgrad,
    mechanize,
    momo,
    momo_adam,
    muon,
    prodigy,
    reduce_on_plateau,
    sam,
    scale_by_acprop,
    scale_by_ademamix,
    scale_by_adopt,
    scale_by_cocob,
    scale_by_dog,
    scale_by_dowg,
    scale_by_galore,
    scale_by_madgrad,
    scale_by_muon,
    scale_by_simplified_ademamix,
    scale_by_sophia,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
    simplified_ademamix,
    sophia,
    split_real_and_imaginary,
)
from gradtx.distributed import (
    bytes_per_device,
    init_sharded,
    replicate,
    shard_batch,
    state_shardings,
    zero1,
    zero1_spec,
)
from gradtx.extra_args import with_extra_args_support
from gradtx.factored import FactoredState, ScaleBySM3State, adafactor, scale_by_factored_rms, scale_by_sm3, sm3
from gradtx.fused import (
    CPU_CHUNK_SIZE,
    FlatLayout,
    FlattenState,
    FlatTree,
    FusedOptimizer,
    FusedState,
    donated_step,
    flatten,
    flatten_tree,
    fuse,
    fused_adam,
    fused_rmsprop,
    fused_sgd,
    fused_train_step,
)
from gradtx.hyperparams import (
    InjectHyperparamsState,
    InjectStatefulHyperparamsState,
    get_hyperparams,
    inject_hyperparams,
    inject_stateful_hyperparams,
    set_hyperparams,
)
from gradtx.lookahead import LookaheadParams, LookaheadState, lookahead
from gradtx.losses import (
    convex_kl_divergence,
    cosine_distance,
    cosine_similarity,
    ctc_loss,
    ctc_loss_with_forward_probs,
    generalized_kl_divergence,
    hinge_loss,
    huber_loss,
    kl_divergence,
    l2_loss,
    log_cosh,
    ntxent,
    safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    smooth_labels,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
)
from gradtx.microbatching import microbatch
from gradtx.momentum import (
    EmaState,
    HeavyBallState,
    TraceState,
    bias_correction,
    ema,
    heavy_ball,
    nesterov_lookahead,
    sgd,
    trace,
)
from gradtx.monitoring import MonitorState, SnapshotState, measure_with_ema, monitor, snapshot
from gradtx.novograd import ScaleByNovogradState, novograd, scale_by_novograd
from gradtx.numerics import (
    ApplyIfFiniteState,
    ZeroNansState,
    apply_if_finite,
    safe_norm,
    safe_root_mean_squares,
    tree_all_finite,
    zero_nans,
)
from gradtx.optimistic import (
    ScaleByOptimisticGradientState,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    scale_by_optimistic_gradient,
)
from gradtx.perturbations import MultiNormalDiagFromLogScale, multi_normal
from gradtx.regularization import (
    AddDecayedWeightsState,
    ClipByGlobalNormState,
    adaptive_grad_clip,
    add_decayed_weights,
    clip,
    clip_by_global_norm,
    unitwise_clip,
    unitwise_norm,
)
from gradtx.rms import (
    AdadeltaState,
    AdagradState,
    RmsState,
    ScaleByRssState,
    adadelta,
    adagrad,
    rmsprop,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_rms,
    scale_by_rss,
)
from gradtx.scaling import ScaleByScheduleState, scale, scale_by_learning_rate, scale_by_schedule
from gradtx.schedules import (
    StatefulSchedule,
    WrappedSchedule,
    WrappedScheduleState,
    as_schedule,
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    exponential_decay,
    harmonic_decay_schedule,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    step_decay_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)
from gradtx.second_order import (
    ConjugateGradientResult,
    ConjugateGradientState,
    ESGDState,
    HessianFreeState,
    LbfgsState,
    LineSearchResult,
    MinimizeResult,
    MomentumAutotunerState,
    NewtonState,
    ScaledConjugateGradientState,
    SolverStatus,
    backtracking_line_search,
    conjugate_gradient,
    conjugate_gradient_solve,
    esgd,
    extreme_eigenvalues,
    gauss_newton_operator,
    gauss_newton_vector_product,
    hessian_free,
    hessian_operator,
    hessian_vector_product,
    hutchinson_diagonal,
    lanczos_eigenvalues,
    lbfgs,
    lbfgs_direction,
    minimize,
    momentum_autotuner,
    newton,
    optimal_momentum,
    power_iteration,
    scale_by_esgd,
    scaled_conjugate_gradient,
    wolfe_line_search,
)
from gradtx.sign import (
    RpropState,
    ScaleByLionState,
    lion,
    rprop,
    scale_by_lion,
    scale_by_rprop,
    scale_by_sign,
    sign_sgd,
    signum,
)
from gradtx.state_utils import tree_map_params, value_and_grad_from_state
from gradtx.step_size import (
    ScaleByDistanceOverGradientsState,
    polyak_sgd,
    scale_by_distance_over_gradients,
    scale_by_polyak,
)
from gradtx.stochastic import AddNoiseState, add_noise, noisy_sgd, scale_by_stddev, scale_gradient
from gradtx.sweep import SweepResult, config_grid, config_samples, loss_curve, sweep
from gradtx.target_updates import incremental_update, periodic_update
from gradtx.tree import update_infinity_moment, update_moment, update_moment_per_elem_norm
from gradtx.tree_utils import (
    check_trees_match,
    check_updates_match_params,
    saturating_increment,
    tree_global_norm,
    tree_zeros_like,
)
from gradtx.tree_utils import saturating_increment as safe_increment
from gradtx.tree_utils import saturating_increment as safe_int32_increment
from gradtx.tree_utils import tree_global_norm as global_norm
from gradtx.trust_ratio import (
    FromageState,
    ScaleByLarsState,
    fromage,
    lamb,
    lars,
    scale_by_param_block_norm,
    scale_by_param_block_rms,
    scale_by_trust_ratio,
)

__version__ = "0.1.0"
__all__ = [name for name in dir() if not name.startswith("_")]
