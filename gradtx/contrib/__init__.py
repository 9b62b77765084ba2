"""Optax's ``optax.contrib``: recent optimizers under the same names, arguments and states.

Each family has its own module; every name is also exported here (``gradtx.contrib.prodigy``)
and, where unambiguous, at the top level (``gradtx.prodigy``).
"""

from gradtx.contrib.complex_valued import SplitRealAndImaginaryState, split_real_and_imaginary
from gradtx.contrib.mechanic import MechanicState, mechanize
from gradtx.contrib.momo import MomoAdamState, MomoState, momo, momo_adam
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

__all__ = [
    "COCOBState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "NormalizeState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SplitRealAndImaginaryState",
    "cocob",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "mechanize",
    "momo",
    "momo_adam",
    "normalize",
    "prodigy",
    "reduce_on_plateau",
    "scale_by_cocob",
    "scale_by_dog",
    "scale_by_dowg",
    "split_real_and_imaginary",
]
