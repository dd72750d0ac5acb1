"""Reference energies of small clusters with PySCF, size-consistent and in the spin ground state.

Units at the interface: positions in Å, energies in eV, forces in eV/Å (PySCF works in Hartree
and Bohr inside). Methods:

* ``fci``: full CI with ``fci.direct_spin1`` (no spin constraint) in the lowest S_z sector,
  n_alpha - n_beta = N mod 2. Every spin multiplet has a component there, so the lowest root is
  the ground state over all multiplicities, and FCI is exact in the basis (hence
  size-consistent). For even N the M_S = 1 sector is solved too: Davidson started from
  closed-shell determinants stays spin-flip even (S = 0, 2, ...) and would miss triplets.
  Any orthonormal orbitals give the same energy (RHF/ROHF ones above 400 determinants,
  Lowdin-orthogonalised AOs below), so an unconverged SCF does not matter. ``spin`` = 2S
  from <S^2>. Analytic forces (full-space CASSCF gradient).
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
from functools import lru_cache
from dataclasses import dataclass, field
from math import comb

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from jbo.data.clusters import check_geometry

__all__ = ["METHODS", "LabelError", "Label", "compute", "energy", "normalize_method",
           "check_basis", "HARTREE_EV"]

HARTREE_EV: float = Hartree  # eV per Hartree
METHODS = ("fci", "uhf", "uccsd(t)", "dmrg")
_ALIASES = {"ccsd(t)": "uccsd(t)", "uccsd_t": "uccsd(t)"}
FCI_MAX_DETS = 20_000_000


class LabelError(RuntimeError):
    """A structure could not be labelled; ``reason`` says why (stored with the failed row)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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
    fci_scf_max_cycle: int = 30  # fci: RHF only provides starting orbitals
    ci_conv_tol: float = 1e-10
    dmrg_bond_dim: int = 250


def normalize_method(method: str) -> str:
    """Canonical method name; ``ValueError`` for unknown ones."""
    m = _ALIASES.get(method.lower(), method.lower())
    if m not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return m


def check_basis(basis: str, element: str = "H") -> str:
    """Canonical (lower-case) basis name; ``ValueError`` if PySCF does not know it."""
    import warnings

    from pyscf import gto

    try:
        with warnings.catch_warnings():  # pyscf suggests basis-set-exchange for unknown names
            warnings.simplefilter("ignore")
            found = gto.basis.load(basis, element)
        if not found:
            raise KeyError(basis)
    except Exception as exc:  # pyscf raises various errors for unknown names
        raise ValueError(f"unknown basis {basis!r} for {element}") from exc
    return basis.lower()


@lru_cache(maxsize=64)
def _basis(basis: str, element: str):
    from pyscf import gto

    return gto.basis.load(basis, element)


def _mol(atoms: Atoms, basis: str, twoms: int):
    from pyscf import gto

    syms = atoms.get_chemical_symbols()
    return gto.M(atom=[(s, tuple(p)) for s, p in zip(syms, atoms.get_positions())],
                 basis={s: _basis(basis, s) for s in set(syms)}, unit="Angstrom", charge=0,
                 spin=twoms, verbose=0)


def _twos_from_s2(s2: float, nelec: int) -> int:
    """2S of <S^2> = S(S+1), rounded to the parity of the electron count."""
    x = np.sqrt(max(0.25 + s2, 0.0)) - 0.5
    two_s = int(round(2 * x))
    if two_s % 2 != nelec % 2:
        two_s += 1 if 2 * x > two_s else -1
    return max(two_s, nelec % 2)


def _forces(grad_ha_bohr: np.ndarray) -> np.ndarray:
    return -np.asarray(grad_ha_bohr) * Hartree / Bohr


# ---------------------------------------------------------------- one electron (exact)
def _one_electron(mol) -> float:
    import scipy.linalg

    h = mol.intor("int1e_kin") + mol.intor("int1e_nuc")
    return float(scipy.linalg.eigh(h, mol.intor("int1e_ovlp"), eigvals_only=True)[0]
                 + mol.energy_nuc())


# ---------------------------------------------------------------- FCI
def _fci_sector(mol, h1, eri, norb: int, nelec: tuple[int, int], st: "Settings"):
    """Lowest FCI root in one (n_alpha, n_beta) sector: (energy Ha, CI vector, note).

    Near the atomic limit the low spectrum is dense and Davidson is slow: an unconverged run
    is continued from its last vector with a larger subspace, then retried with 3 roots.
    """
    from pyscf import fci

    ci_prev = None
    space = st.ci_max_space
    attempts = ((1, space, 1), (1, 2 * space, 2), (3, space, 2))  # roots, subspace, cycles
    for i, (nroots, space, cycles) in enumerate(attempts):
        solver = fci.direct_spin1.FCI(mol)
        solver.max_cycle, solver.conv_tol = st.ci_max_cycle * cycles, st.ci_conv_tol
        solver.nroots, solver.max_space = nroots, space
        e, ci = solver.kernel(h1, eri, norb, nelec, ecore=mol.energy_nuc(),
                              ci0=ci_prev if nroots == 1 else None)
        if nroots > 1:
            e, ci = e[0], ci[0]
        if np.all(solver.converged):
            how = ("", "Davidson continued", "Davidson retried with 3 roots")[i]
            return float(e), ci, f"{how} for {nelec}" if i else ""
        ci_prev = ci
    raise LabelError(f"FCI Davidson did not converge in sector (n_a, n_b) = {nelec}")


def _fci(atoms: Atoms, basis: str, want_forces: bool, st: Settings):
    from pyscf import ao2mo, fci, mcscf, scf

    n = int(sum(atoms.numbers))
    nelec = ((n + 1) // 2, n // 2)
    mol = _mol(atoms, basis, nelec[0] - nelec[1])
    norb = mol.nao
    if comb(norb, nelec[0]) * comb(norb, nelec[1]) > FCI_MAX_DETS:
        raise LabelError(f"FCI too large: {norb} orbitals, {n} electrons in {basis}")
    mf = scf.RHF(mol) if nelec[0] == nelec[1] else scf.ROHF(mol)
    mf.chkfile, mf.init_guess = None, "atom"
    mf.max_cycle, mf.conv_tol = st.fci_scf_max_cycle, 1e-8
    note = ""
    # FCI is exact in any orthonormal orbitals; they only steer the Davidson solver. Up to
    # PySCF's p-space size (400 determinants) the CI matrix is diagonalised densely, so
    # symmetric (Lowdin) orthogonalisation of the AOs is exact and saves the SCF.
    mo = None
    if comb(norb, nelec[0]) * comb(norb, nelec[1]) > 400:
        try:
            mf.kernel()
            mo = mf.mo_coeff
        except Exception as exc:  # any orthonormal orbitals will do
            note = f"SCF crashed ({type(exc).__name__}); FCI in Lowdin orbitals"
    if mo is None:
        s, u = np.linalg.eigh(mol.intor("int1e_ovlp"))
        mo = u @ np.diag(s**-0.5) @ u.T
    h1 = mo.T @ mf.get_hcore() @ mo
    eri = ao2mo.full(mol.intor("int2e", aosym="s8"), mo)
    # Lowest S_z sector first. For even N its Davidson start (closed-shell determinants) is
    # even under spin flip, so it can only reach S = 0, 2, ...: the M_S = 1 sector supplies
    # the lowest S >= 1 state. The ground state is the lower of the two.
    sectors = [nelec] + ([(nelec[0] + 1, nelec[1] - 1)] if nelec[0] == nelec[1] > 0 else [])
    found = []
    for sec in sectors:
        e_s, ci_s, how = _fci_sector(mol, h1, eri, norb, sec, st)
        found.append((e_s, ci_s, sec, how))
    e_min = min(f[0] for f in found)
    e, ci, nelec, how = next(f for f in found if f[0] <= e_min + 1e-9)  # ties: lowest M_S
    note = "; ".join(x for x in (note, how) if x)
    solver = fci.direct_spin1.FCI(mol)
    s2, _ = solver.spin_square(ci, norb, nelec)
    forces = None
    if want_forces:
        # full-space CASSCF has no orbital parameters: its gradient is the FCI gradient for
        # any orthonormal orbitals (checked against finite differences), for any spin
        mc = mcscf.CASSCF(mf, norb, nelec)
        mc.fcisolver = fci.direct_spin1.FCI(mol)
        mc.mo_coeff, mc.ci, mc.e_tot, mc.converged = mo, ci, e, True
        forces = _forces(mc.nuc_grad_method().kernel(mo_coeff=mo, ci=ci))
    return e, _twos_from_s2(s2, n), float(s2), forces, note


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
    mol = _mol(atoms, basis, twoms)
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
    return float(e), _twos_from_s2(s2, n), s2, None, ""


# ---------------------------------------------------------------- public API
def validate(atoms: Atoms, method: str) -> None:
    """``ValueError`` for input no method can label (empty, NaN, overlapping, non-H)."""
    if len(atoms) == 0:
        raise ValueError("no atoms")
    check_geometry(atoms)
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
    validate(atoms, method)
    st = settings or Settings()
    if int(sum(atoms.numbers)) == 1:  # a lone H: exact in every method
        e = _one_electron(_mol(atoms, basis, 1))
        res = (e, 1, 0.75, np.zeros((1, 3)) if forces else None, "one electron: exact")
    elif method == "fci":
        res = _fci(atoms, basis, forces, st)
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
