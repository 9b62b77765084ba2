"""gradtx: composable, jit-compiled gradient transformations for JAX.

The public namespace is flat: ``gradtx.adam``, ``gradtx.chain``, ``gradtx.scale_by_rms``,
``gradtx.cosine_decay_schedule``. Layers and initializers live in ``gradtx.nn``.
"""

from gradtx import contrib, microbatching, nn
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
from gradtx.contrib import (
    GaLoreDimensionNumbers,
    GaLoreState,
    HutchinsonState,
    MadgradState,
    MuonDimensionNumbers,
    MuonState,
    SAMState,
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ScheduleFreeState,
    SophiaState,
    acprop,
    ademamix,
    adopt,
    galore,
    hutchinson_estimator_diag_hessian,
    madgrad,
    muon,
    sam,
    scale_by_acprop,
    scale_by_ademamix,
    scale_by_adopt,
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
from gradtx.numerics import ApplyIfFiniteState, ZeroNansState, apply_if_finite, tree_all_finite, zero_nans
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
from gradtx.sign import RpropState, rprop, scale_by_rprop, scale_by_sign, sign_sgd
from gradtx.state_utils import tree_map_params, value_and_grad_from_state
from gradtx.sweep import SweepResult, config_grid, config_samples, loss_curve, sweep
from gradtx.target_updates import incremental_update, periodic_update
from gradtx.tree_utils import (
    check_trees_match,
    saturating_increment,
    tree_global_norm,
    tree_zeros_like,
)

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
