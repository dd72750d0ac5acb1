"""Reference energies of small clusters with PySCF, size-consistent and in the spin ground state.

Units at the interface: positions in Å, energies in eV, forces in eV/Å (PySCF works in Hartree
and Bohr inside). Methods:

* ``fci`` (:mod:`jbo.data.fci`): full CI in the spin ground state. Every feasible spin S is
  solved in its M_S = S sector with the spin fixed by a penalty, and a state is accepted only
  when <S^2> = S(S+1) to 1e-3 (otherwise retried, then a :class:`LabelError`); the lowest
  E_S wins, ties within 1e-9 Ha going to the lowest S. FCI is exact in the basis (hence
  size-consistent). ``spin`` = 2S. Analytic forces (full-space CASSCF gradient).
* ``uhf`` (:mod:`jbo.data.uhf`): unrestricted HF, searched over 2M_S in {N mod 2,
  N mod 2 + 2} and over several starting densities (the default guess, antiferromagnetic and
  random broken-symmetry patterns of atomic H densities); each is converged (DIIS, then
  Newton, then level shift) and followed down its internal instabilities; the lowest stable
  solution wins. ``spin`` = 2M_S of the winning determinant (<S^2> in ``s2``). Analytic forces.
* ``uccsd(t)``: UCCSD(T) on the best UHF of each 2M_S; the lowest total wins. No forces. For
  two electrons, where it is exact, the FCI number is returned (spin = 2S then): its
  equations on a stretched broken-symmetry pair do not converge.
* ``dmrg``: optional, through block2 (``pip install block2``, which needs MKL); SZ symmetry,
  lowest S_z sector, random initial MPS. Not exercised where block2 is absent (its tests
  are skipped then); ``LabelError`` says so when it is called without block2.

One-electron systems (a lone H atom, in any basis) are solved exactly by diagonalising the core
Hamiltonian: every method gives that exact number (PySCF's stability analysis and Newton solver
break on them). Failures raise :class:`LabelError` with a reason; no energy is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from jbo.data import fci
from jbo.data.clusters import check_geometry
from jbo.data.pyscf_tools import (HARTREE_EV, LabelError, Settings, mol as make_mol,
                                  one_electron, twos_from_s2)

__all__ = ["METHODS", "LabelError", "Label", "compute", "energy", "normalize_method",
           "check_basis", "HARTREE_EV"]

METHODS = ("fci", "uhf", "uccsd(t)", "dmrg")
_ALIASES = {"ccsd(t)": "uccsd(t)", "uccsd_t": "uccsd(t)"}


@dataclass(frozen=True)
class Label:
    """A reference label. ``energy`` in eV, ``forces`` in eV/Å ([N, 3]) or None."""

    energy: float
    spin: int  # 2S (fci, dmrg) or 2M_S of the winning determinant (uhf, uccsd(t))
    s2: float  # <S^2> of the state the energy belongs to
    method: str
    basis: str
    forces: np.ndarray | None = None
    note: str = ""
    wall: float = 0.0  # seconds
    extra: dict = field(default_factory=dict)


def normalize_method(method: str) -> str:
    """Canonical method name; ``ValueError`` for unknown ones."""
    m = _ALIASES.get(method.lower(), method.lower())
    if m not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return m


def check_basis(basis: str, element: str = "H") -> str:
    """Canonical (lower-case) basis name; ``ValueError`` if PySCF does not know it for ``element``."""
    import warnings

    from pyscf import gto

    try:
        with warnings.catch_warnings():  # pyscf suggests basis-set-exchange for unknown names
            warnings.simplefilter("ignore")
            found = gto.basis.load(basis, element)
        if not found:
            raise KeyError(basis)
    except Exception as exc:  # pyscf raises various errors for unknown names
        raise ValueError(f"basis {basis!r} is not available for element {element} in PySCF; "
                         f"pick a basis that covers {element}") from exc
    return basis.lower()


# ---------------------------------------------------------------- DMRG (optional)
def _dmrg(atoms: Atoms, basis: str, st: Settings):
    try:
        import block2  # noqa: F401  (the compiled core; needs MKL's shared libraries)
        from pyblock2.driver.core import DMRGDriver, SymmetryTypes
    except ImportError as exc:
        raise LabelError(f"method 'dmrg' needs block2 (pip install block2): {exc}") from exc
    from pyscf import ao2mo, scf

    n = int(sum(atoms.numbers))
    twoms = n % 2
    mol = make_mol(atoms, basis, twoms)
    mf = scf.RHF(mol) if twoms == 0 else scf.ROHF(mol)
    mf.max_cycle, mf.chkfile = st.scf_max_cycle, None
    mf.kernel()
    mo = mf.mo_coeff
    h1 = mo.T @ mf.get_hcore() @ mo
    g2 = ao2mo.restore(1, ao2mo.kernel(mol, mo), mol.nao)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jbo-dmrg-") as scratch:
        drv = DMRGDriver(scratch=scratch, symm_type=SymmetryTypes.SZ, n_threads=1,
                         stack_mem=1 << 28)
        drv.initialize_system(n_sites=mol.nao, n_elec=n, spin=twoms)
        mpo = drv.get_qc_mpo(h1e=h1, g2e=g2, ecore=mol.energy_nuc(), iprint=0)
        ket = drv.get_random_mps(tag="GS", bond_dim=st.dmrg_bond_dim, nroots=1)
        bd = st.dmrg_bond_dim
        e = drv.dmrg(mpo, ket, n_sweeps=20, bond_dims=[bd] * 20,
                     noises=[1e-4] * 4 + [1e-5] * 4 + [0], thrds=[1e-10] * 20, iprint=0)
        s2 = float(drv.expectation(ket, drv.get_spin_square_mpo(iprint=0), ket))
    return float(e), twos_from_s2(s2, n), s2, None, ""


# ---------------------------------------------------------------- public API
def validate(atoms: Atoms, method: str, basis: str = "sto-3g") -> None:
    """``ValueError`` for input no method can label, before any computation.

    Refused: no atoms, NaN/overlapping positions, periodic boundary conditions (labels are
    clusters in vacuum), initial charges or magnetic moments (labels are neutral, and the
    spin ground state is searched over all spins), elements the basis lacks, and non-H
    elements for the H-only methods.
    """
    if len(atoms) == 0:
        raise ValueError("no atoms to label")
    check_geometry(atoms)
    if atoms.pbc.any():
        raise ValueError(f"atoms have periodic boundary conditions (pbc={atoms.pbc.tolist()}); "
                         "reference labels are for clusters in vacuum: set atoms.pbc = False")
    if np.any(atoms.get_initial_charges() != 0):
        raise ValueError("atoms carry initial charges; reference labels are for neutral "
                         "clusters: remove them (atoms.set_initial_charges(None))")
    if np.any(atoms.get_initial_magnetic_moments() != 0):
        raise ValueError("atoms carry initial magnetic moments; the spin ground state is "
                         "searched over all spins: remove them "
                         "(atoms.set_initial_magnetic_moments(None))")
    for element in sorted(set(atoms.get_chemical_symbols())):
        check_basis(basis, element)
    if method != "fci" and set(atoms.get_chemical_symbols()) != {"H"}:
        raise ValueError(f"method {method!r} labels hydrogen clusters only "
                         f"(got {atoms.get_chemical_formula()}); fci handles other elements")


def compute(atoms: Atoms, method: str = "fci", basis: str = "sto-3g", *,
            forces: bool = False, settings: Settings | None = None) -> Label:
    """Label ``atoms`` (positions in Å): energy (eV), spin state, forces (eV/Å) if asked.

    Raises ``ValueError`` for bad input and :class:`LabelError` when a solver fails.
    """
    t0 = time.perf_counter()
    method, basis = normalize_method(method), check_basis(basis)
    validate(atoms, method, basis)
    st = settings or Settings()
    if int(sum(atoms.numbers)) == 1:  # a lone H: exact in every method
        e = one_electron(make_mol(atoms, basis, 1))
        res = (e, 1, 0.75, np.zeros((1, 3)) if forces else None, "one electron: exact")
    elif method == "fci":
        res = fci.solve(atoms, basis, forces, st)
    elif method in ("uhf", "uccsd(t)"):
        from jbo.data.uhf import uhf_family

        res = uhf_family(atoms, basis, method, forces, st)
    else:
        res = _dmrg(atoms, basis, st)
    e, spin, s2, f, note = res
    if not np.isfinite(e):
        raise LabelError(f"{method} returned a non-finite energy")
    return Label(energy=e * HARTREE_EV, spin=int(spin), s2=s2, method=method, basis=basis,
                 forces=f, note=note, wall=time.perf_counter() - t0)


def energy(atoms: Atoms, method: str = "fci", basis: str = "sto-3g") -> float:
    """Reference energy of ``atoms`` in eV (see the module docstring for the methods)."""
    return compute(atoms, method, basis).energy
