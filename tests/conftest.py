"""Test configuration: float64 is enabled so reference comparisons can be made to 1e-8.

Tests that need another dtype say so explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
