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
from jbo.models.model import Model
from jbo.train.model import load_trained

__all__ = ["JboCalculator", "load_checkpoint", "WHICH"]

#: parameter sets of a run folder: lowest validation MAE, or the last step
WHICH = ("best", "latest")


def _check_which(which) -> None:
    if not isinstance(which, str) or which not in WHICH:
        raise ValueError(f"which must be one of {list(WHICH)}, got {which!r}")


def load_checkpoint(checkpoint: str | Path, which: str = "best", module=None) -> Model:
    """A run folder (or its ``checkpoints/``) or a model file as a :class:`jbo.models.Model`.

    ``which`` must be one of :data:`WHICH`; a model file holds one parameter set (those
    ``jbo.models.save`` was given), so only ``"best"``, the default, is accepted for it.
    """
    _check_which(which)
    if Path(checkpoint).is_file() and which != "best":
        raise ValueError(f"which={which!r} picks a run folder's parameters, but {checkpoint} is "
                         "a model file holding one parameter set: drop which (CLI: --which), "
                         "or give the run folder")
    return load_trained(checkpoint, which=which, module=module)


class JboCalculator(Calculator):
    """ASE calculator of a trained checkpoint.

    Args:
      checkpoint: run folder (``out_dir`` of training) or its ``checkpoints/`` folder, a model
        file of ``jbo.models.save``, or a :class:`jbo.models.Model` (loaded or trained).
      which: ``"best"`` (lowest validation MAE) or ``"latest"`` parameters of a run folder
        (checked by :func:`load_checkpoint`; a model file has only one set).
      module: the flax module, only for models outside the ``jbo.models`` zoo.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, checkpoint: str | Path | Model, which: str = "best", module=None,
                 **kwargs):
        _check_which(which)
        super().__init__(**kwargs)
        compilation_cache.enable()  # a second process loads its compiled programs from disk
        self.model = checkpoint if isinstance(checkpoint, Model) else \
            load_checkpoint(checkpoint, which=which, module=module)
        self._known = {z for z, c in enumerate(self.model.baseline) if c != 0.0}

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
        e, f = self.model.energy_and_forces(
            np.asarray(atoms.positions, np.float64), np.asarray(atoms.numbers, np.int32))
        self.results = {"energy": float(e), "free_energy": float(e),
                        "forces": np.asarray(f, dtype=np.float64)}
