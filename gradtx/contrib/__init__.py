"""Recent optimizers, under the names of ``optax.contrib``.

``gradtx.contrib.muon``, ``gradtx.contrib.schedule_free_adamw``, ``gradtx.contrib.sophia``, ...;
each module holds one family. The names are also exported flat (``gradtx.muon``).
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
from gradtx.contrib.galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from gradtx.contrib.madgrad import MadgradState, madgrad, scale_by_madgrad
from gradtx.contrib.muon import MuonDimensionNumbers, MuonState, muon, scale_by_muon
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
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "MadgradState",
    "MuonDimensionNumbers",
    "MuonState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleByBeliefState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "SophiaState",
    "acprop",
    "ademamix",
    "adopt",
    "galore",
    "hutchinson_estimator_diag_hessian",
    "madgrad",
    "muon",
    "sam",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_galore",
    "scale_by_adopt",
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
]
