"""gradtx: composable, jit-compiled gradient transformations for JAX.

The public namespace is flat: ``gradtx.adam``, ``gradtx.chain``, ``gradtx.scale_by_rms``,
``gradtx.cosine_decay_schedule``. Layers and initializers live in ``gradtx.nn``.
"""

from gradtx import microbatching, nn, projections, tree
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
from gradtx.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    ScalarOrSchedule,
    Schedule,
    Updates,
    apply_updates,
    identity,
    stateless,
    stateless_with_tree_map,
    value_at,
)
from gradtx.checkpoint import load_state, save_state
from gradtx.clipping import clip_by_block_rms, per_example_global_norm_clip, per_example_layer_norm_clip
from gradtx.combinators import (
    MaskedNode,
    MaskedState,
    MultiTransformState,
    PartitionState,
    chain,
    freeze,
    masked,
    multi_transform,
    named_chain,
    partition,
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
from gradtx.distributed import (
    bytes_per_device,
    init_sharded,
    replicate,
    shard_batch,
    state_shardings,
    zero1,
    zero1_spec,
)
from gradtx.extra_args import GradientTransformationExtraArgs, with_extra_args_support
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
from gradtx.hyperparams import InjectHyperparamsState, get_hyperparams, inject_hyperparams, set_hyperparams
from gradtx.lookahead import LookaheadParams, LookaheadState, lookahead
from gradtx.lowbit import (
    QuantizedArray,
    QuantizedState,
    adam_4bit,
    adam_8bit,
    adamw_4bit,
    adamw_8bit,
    dequantize_state,
    lion_8bit,
    quantized_state,
    sgd_8bit,
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
from gradtx.numerics import (
    ApplyIfFiniteState,
    ZeroNansState,
    apply_if_finite,
    safe_norm,
    safe_root_mean_squares,
    tree_all_finite,
    zero_nans,
)
from gradtx.quantization_maps import dynamic_map, linear_map
from gradtx.regularization import (
    AddDecayedWeightsState,
    adaptive_grad_clip,
    add_decayed_weights,
    clip,
    clip_by_global_norm,
    unitwise_norm,
)
from gradtx.rms import (
    AdadeltaState,
    AdagradState,
    RmsState,
    adadelta,
    adagrad,
    rmsprop,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_rms,
)
from gradtx.scaling import ScaleByScheduleState, scale, scale_by_learning_rate, scale_by_schedule
from gradtx.schedules import (
    as_schedule,
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    harmonic_decay_schedule,
    join_schedules,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    step_decay_schedule,
    warmup_cosine_decay_schedule,
)
from gradtx.second_order import (
    ConjugateGradientResult,
    ConjugateGradientState,
    ESGDState,
    HessianFreeState,
    LbfgsState,
    LineSearchResult,
    MomentumAutotunerState,
    NewtonState,
    ScaledConjugateGradientState,
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
from gradtx.stochastic import (
    AddNoiseState,
    ScaleByOptimisticGradientState,
    add_noise,
    noisy_sgd,
    optimistic_gradient_descent,
    scale_by_optimistic_gradient,
    scale_by_stddev,
    scale_gradient,
)
from gradtx.sweep import SweepResult, config_grid, config_samples, loss_curve, sweep
from gradtx.target_updates import incremental_update, periodic_update
from gradtx.tree_utils import check_trees_match, saturating_increment, tree_global_norm, tree_zeros_like
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
