"""PySCF plumbing shared by the reference solvers (FCI, UHF family, DMRG).

Units: positions in Å at the interface; PySCF works in Hartree and Bohr inside. Nothing here
chooses a method: :mod:`jbo.data.fci` and :mod:`jbo.data.uhf` solve, :mod:`jbo.data.reference`
is the public entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

__all__ = ["HARTREE_EV", "LabelError", "Settings", "mol", "forces_ev", "one_electron",
           "twos_from_s2", "orthonormal_orbitals"]

HARTREE_EV: float = Hartree  # eV per Hartree


class LabelError(RuntimeError):
    """A structure could not be labelled; ``reason`` says why (stored with the failed row)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Settings:
    """Knobs of the solvers (defaults are what the shipped data used)."""

    spin_steps: int = 1          # uhf/uccsd(t): also try 2M_S + 2, ..., + 2*spin_steps
    n_random_guesses: int = 2    # uhf: random broken-symmetry patterns per 2M_S
    scf_max_cycle: int = 100
    scf_conv_tol: float = 1e-10
    stability_rounds: int = 6
    cc_max_cycle: int = 150
    ci_max_cycle: int = 200
    ci_max_space: int = 40
    fci_scf_max_cycle: int = 30  # fci: RHF/ROHF only provides starting orbitals
    ci_conv_tol: float = 1e-10
    fci_spin_shift: float = 0.2  # Ha: penalty on <S^2> - S(S+1) in the spin-fixed FCI solves
    fci_s2_tol: float = 1e-3     # accept an FCI state only if |<S^2> - S(S+1)| <= this
    fci_degeneracy: float = 1e-9  # Ha: spin states closer than this tie; the lowest S wins
    fci_dense_max: int = 400     # sectors with at most this many determinants: dense eigh
    fci_roots: int = 3           # Davidson roots per spin sector; the lowest pure one is kept
    dmrg_bond_dim: int = 250


@lru_cache(maxsize=64)
def _basis(basis: str, element: str):
    from pyscf import gto

    return gto.basis.load(basis, element)


def mol(atoms: Atoms, basis: str, twoms: int):
    """A neutral PySCF molecule of ``atoms`` (Å) with 2M_S = ``twoms``, quiet."""
    from pyscf import gto

    syms = atoms.get_chemical_symbols()
    return gto.M(atom=[(s, tuple(p)) for s, p in zip(syms, atoms.get_positions())],
                 basis={s: _basis(basis, s) for s in set(syms)}, unit="Angstrom", charge=0,
                 spin=twoms, verbose=0)


def orthonormal_orbitals(m) -> np.ndarray:
    """Symmetrically (Lowdin) orthogonalised AOs ``[nao, nao]``: exact orbitals for FCI."""
    s, u = np.linalg.eigh(m.intor("int1e_ovlp"))
    return u @ np.diag(s**-0.5) @ u.T


def twos_from_s2(s2: float, nelec: int) -> int:
    """2S of <S^2> = S(S+1), rounded to the parity of the electron count."""
    x = np.sqrt(max(0.25 + s2, 0.0)) - 0.5
    two_s = int(round(2 * x))
    if two_s % 2 != nelec % 2:
        two_s += 1 if 2 * x > two_s else -1
    return max(two_s, nelec % 2)


def forces_ev(grad_ha_bohr: np.ndarray) -> np.ndarray:
    """Forces (eV/Å) from a PySCF nuclear gradient (Ha/Bohr)."""
    return -np.asarray(grad_ha_bohr) * Hartree / Bohr


def one_electron(m) -> float:
    """Exact energy (Ha) of a one-electron molecule: lowest eigenvalue of the core Hamiltonian."""
    import scipy.linalg

    h = m.intor("int1e_kin") + m.intor("int1e_nuc")
    return float(scipy.linalg.eigh(h, m.intor("int1e_ovlp"), eigvals_only=True)[0]
                 + m.energy_nuc())
