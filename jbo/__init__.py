"""jbo: measure and control the body order of machine-learning interatomic potentials.

Importing jbo enables JAX float64 (``jax_enable_x64``): subset energies and the Möbius
inversion are always done in float64 because the alternating sums cancel by many orders
of magnitude. Models may still compute in float32 (their ``dtype`` hyperparameter).
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
