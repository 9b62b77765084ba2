"""Optax's ``optax.contrib``: recent optimizers under the same names, arguments and states.

Each family has its own module; every name is also exported here (``gradtx.contrib.prodigy``)
and, where unambiguous, at the top level (``gradtx.prodigy``).
"""

from gradtx.contrib.acprop import ScaleByBeliefState, acprop, scale_by_acprop
from gradtx.contrib.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from gradtx.contrib.adopt import adopt, scale_by_adopt
from gradtx.contrib.complex_valued import SplitRealAndImaginaryState, split_real_and_imaginary
from gradtx.contrib.galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from gradtx.contrib.madgrad import MadgradState, madgrad, scale_by_madgrad
from gradtx.contrib.mechanic import MechanicState, mechanize
from gradtx.contrib.momo import MomoAdamState, MomoState, momo, momo_adam
from gradtx.contrib.muon import MuonDimensionNumbers, MuonState, muon, scale_by_muon
from gradtx.contrib.normalize import NormalizeState, normalize
from gradtx.contrib.parameter_free import (
    COCOBState,
    DAdaptAdamWState,
    DoGState,
    DoWGState,
    ProdigyState,
    cocob,
    dadapt_adamw,
    dog,
    dowg,
    prodigy,
    scale_by_cocob,
    scale_by_dog,
    scale_by_dowg,
)
from gradtx.contrib.plateau import ReduceLROnPlateauState, reduce_on_plateau
from gradtx.contrib.privacy import DifferentiallyPrivateAggregateState, differentially_private_aggregate, dpsgd
from gradtx.contrib.sam import SAMState, sam
from gradtx.contrib.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from gradtx.contrib.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    scale_by_sophia,
    sophia,
)

__all__ = [
    "COCOBState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "MadgradState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MuonDimensionNumbers",
    "MuonState",
    "NormalizeState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleByBeliefState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "SophiaState",
    "SplitRealAndImaginaryState",
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "galore",
    "hutchinson_estimator_diag_hessian",
    "madgrad",
    "mechanize",
    "momo",
    "momo_adam",
    "muon",
    "normalize",
    "prodigy",
    "reduce_on_plateau",
    "sam",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_galore",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_simplified_ademamix",
    "scale_by_sophia",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "simplified_ademamix",
    "sophia",
    "split_real_and_imaginary",
]
