"""Kronecker-factored preconditioners for deep networks: Shampoo, SOAP, PSGD-Kron and K-FAC.

Each is a ``GradientTransformation`` that keeps, for every tensor-shaped leaf, small matrices per
dimension (Kronecker factors of the gradient's second moment, of a learned preconditioner, or of
the Fisher of a tagged layer) and preconditions the gradient with them. Each chains with clipping,
weight decay, schedules, ``masked``, ``inject_hyperparams`` and ``quantized_state``; the names are
re-exported at the top level (``gradtx.shampoo``, ``gradtx.soap``, ``gradtx.psgd_kron``,
``gradtx.kfac``).
"""

from gradtx.preconditioners.kfac import (
    KfacFactors,
    KfacLayer,
    ScaleByKfacState,
    kfac,
    kfac_conv,
    kfac_dense,
    kfac_layers,
    kfac_softmax_cross_entropy,
    kfac_squared_error,
    kfac_statistics,
    scale_by_kfac,
)
from gradtx.preconditioners.psgd_kron import (
    ScaleByKronState,
    kron_probes,
    precond_update_prob_schedule,
    psgd_kron,
    scale_by_kron,
)
from gradtx.preconditioners.shampoo import ShampooState, scale_by_shampoo, shampoo
from gradtx.preconditioners.soap import ScaleBySoapState, scale_by_soap, soap

__all__ = [name for name in dir() if not name.startswith("_")]
