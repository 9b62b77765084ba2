"""Kronecker-factored preconditioners for deep networks: PSGD-Kron and K-FAC.

Each is a ``GradientTransformation`` that chains with clipping, weight decay, schedules,
``masked`` and ``inject_hyperparams``; the names are re-exported flat (``gradtx.psgd_kron``).
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
