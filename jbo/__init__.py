"""jbo: measure and control the body order of machine-learning interatomic potentials.

Float64 policy: importing jbo enables JAX float64 for the whole process
(``jax.config.update("jax_enable_x64", True)``), once, at import. It is global on purpose:

* Subset energies and the Möbius inversion are float64 (``jbo.decompose`` casts every E(S) with
  ``astype(jnp.float64)``; ``jbo.lattice``, ``jbo.assembly``, ``jbo.potential`` and the training
  regularizer ask for float64/int64 explicitly). Without x64, JAX silently truncates those
  requests to float32/int32 (a warning, no error): the alternating sums then cancel in float32.
  Measured: a Morse pair potential on a 10-atom cluster, where ε(S) = 0 exactly for |S| ≥ 3,
  gives |E^(k≥3)| ≤ 2e-12 eV with x64 and up to 8e-4 eV without it; subset bitmasks
  (``1 << arange(n, dtype=int64)``) would also be int32.
* A scoped switch (``jax.experimental.enable_x64()`` around the engine's entry points) cannot
  give the same numbers: arrays and parameters the caller built before the call (positions,
  model baselines, parameters from ``models.init``) would already be float32,
  and the same jitted function would compile differently inside and outside the scope.

What it means for you: import jbo before creating JAX arrays; JAX defaults (``jnp.zeros(3)``,
Python floats) become float64 in the whole process. Models may still compute in float32 (their
``dtype`` hyperparameter, ``TrainConfig.dtype``); the engine casts their energies to float64.

Importing ``jbo``, ``jbo.decompose``, ``jbo.models`` or ``jbo.potentials`` loads JAX, flax and
numpy only: PySCF, dask, ASE, jax-md, e3nn, optax, orbax, torch, matplotlib and tensorboardX are
imported by the modules that use them, when used (``tests/test_light_imports.py``).
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
