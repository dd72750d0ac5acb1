"""An ASE calculator for any model trained with :mod:`jbo.train` (energy in eV, forces eV/Å).

    from jbo.calculator import JboCalculator
    atoms.calc = JboCalculator("runs/reg")          # a run folder or its checkpoints/ folder
    atoms.get_potential_energy(), atoms.get_forces()

Clusters only (no periodic boundary conditions). The energy is the trained one,
composition baseline + s · model, evaluated in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from jbo import compilation_cache
from jbo.train.model import Trained, load_trained

__all__ = ["JboCalculator"]


class JboCalculator(Calculator):
    """ASE calculator of a trained checkpoint.

    Args:
      checkpoint: run folder (``out_dir`` of training) or its ``checkpoints/`` folder, a model
        file of ``jbo.models.save``, or an already loaded :class:`jbo.train.Trained`.
      which: ``"best"`` (lowest validation MAE) or ``"latest"`` parameters.
      module: the flax module, only for models outside the ``jbo.models`` zoo.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, checkpoint: str | Path | Trained, which: str = "best", module=None,
                 **kwargs):
        super().__init__(**kwargs)
        compilation_cache.enable()  # a second process loads its compiled programs from disk
        self.trained = checkpoint if isinstance(checkpoint, Trained) else \
            load_trained(checkpoint, which=which, module=module)
        self._known = {z for z, c in enumerate(self.trained.model.baseline) if c != 0.0}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if np.any(atoms.pbc):
            raise NotImplementedError("JboCalculator handles finite clusters only; set "
                                      "atoms.pbc = False (jbo models have no periodic images)")
        unknown = sorted(set(int(z) for z in atoms.numbers) - self._known) if self._known \
            else []
        if unknown:
            raise ValueError(f"elements {unknown} were not in the training data of this model "
                             f"(known: {sorted(self._known)})")
        e, f = self.trained.potential.energy_and_forces(
            np.asarray(atoms.positions, np.float64), np.asarray(atoms.numbers, np.int32))
        self.results = {"energy": float(e), "free_energy": float(e),
                        "forces": np.asarray(f, dtype=np.float64)}
