"""Kronecker-factored preconditioners for deep networks: Shampoo and SOAP.

Each is a ``GradientTransformation`` that keeps, for every tensor-shaped leaf, one small matrix per
dimension (a Kronecker factor of the gradient's second moment) and preconditions the gradient
with them. All are re-exported at the top level (``gradtx.shampoo``, ``gradtx.soap``).
"""

from gradtx.preconditioners.shampoo import ShampooState, scale_by_shampoo, shampoo
from gradtx.preconditioners.soap import ScaleBySoapState, scale_by_soap, soap

__all__ = [name for name in dir() if not name.startswith("_")]
