"""Reference energies of small clusters with PySCF, size-consistent and in the spin ground state.

Units at the interface: positions in Å, energies in eV, forces in eV/Å (PySCF works in Hartree
and Bohr inside). Methods:

* ``fci``: full CI with ``fci.direct_spin1`` (no spin constraint) in the lowest S_z sector,
  n_alpha - n_beta = N mod 2. Every spin multiplet has a component there, so the lowest root is
  the ground state over all multiplicities, and FCI is exact in the basis (hence
  size-consistent). The CI runs in RHF/ROHF orbitals, but any orthonormal orbitals give the
  same energy, so an unconverged SCF does not matter. ``spin`` = 2S from <S^2>. Analytic forces.
* ``uhf``: unrestricted HF, searched over 2M_S in {N mod 2, N mod 2 + 2, ...} and over several
  starting densities (the default guess, an antiferromagnetic and random broken-symmetry
  patterns of atomic H densities); each is converged (DIIS, then Newton, then level shift) and
  followed down its internal instabilities; the lowest stable solution wins. ``spin`` = 2M_S of
  the winning determinant (<S^2> is in ``s2``). Analytic forces.
* ``uccsd(t)``: UCCSD(T) on the best UHF of each 2M_S; the lowest total wins. No forces.
* ``dmrg``: optional, through block2 (``pip install block2``); SZ symmetry, lowest S_z sector.

One-electron systems (a lone H atom, in any basis) are solved exactly by diagonalising the core
Hamiltonian: every method gives that exact number (PySCF's stability analysis and Newton solver
break on them). Failures raise :class:`LabelError` with a reason; no energy is returned.
"""

from __future__ import annotations

import time
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
    from pyscf import gto

    try:
        if not gto.basis.load(basis, element):
            raise KeyError(basis)
    except Exception as exc:  # pyscf raises various errors for unknown names
        raise ValueError(f"unknown basis {basis!r} for {element}") from exc
    return basis.lower()


def _mol(atoms: Atoms, basis: str, twoms: int):
    from pyscf import gto

    return gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(),
                                                       atoms.get_positions())],
                 basis=basis, unit="Angstrom", charge=0, spin=twoms, verbose=0)


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
    """Lowest FCI root in one (n_alpha, n_beta) sector: (energy Ha, CI vector, note)."""
    from pyscf import fci

    for i, (nroots, space) in enumerate(((1, 30), (3, 60))):
        solver = fci.direct_spin1.FCI(mol)
        solver.max_cycle, solver.conv_tol = st.ci_max_cycle * (i + 1), st.ci_conv_tol
        solver.nroots, solver.max_space = nroots, space
        e, ci = solver.kernel(h1, eri, norb, nelec, ecore=mol.energy_nuc())
        if nroots > 1:
            e, ci = e[0], ci[0]
        if np.all(solver.converged):
            return float(e), ci, ("" if i == 0 else f"Davidson retried (3 roots) for {nelec}")
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
    mf.max_cycle, mf.conv_tol = st.scf_max_cycle, 1e-9
    note = ""
    try:
        mf.kernel()
        mo = mf.mo_coeff
        if not mf.converged:
            note = "SCF orbitals unconverged (FCI is orbital-invariant)"
    except Exception as exc:  # any orthonormal basis works: symmetric orthogonalisation
        s, u = np.linalg.eigh(mol.intor("int1e_ovlp"))
        mo = u @ np.diag(s**-0.5) @ u.T
        note = f"SCF crashed ({type(exc).__name__}); FCI in Lowdin orbitals"
    h1 = mo.T @ mf.get_hcore() @ mo
    eri = ao2mo.kernel(mol, mo)
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


# ---------------------------------------------------------------- UHF
def _atomic_block(basis: str) -> np.ndarray:
    """Density (alpha) of an isolated H atom in ``basis``: the exact 1s of that basis."""
    import scipy.linalg
    from pyscf import gto

    mol = gto.M(atom="H 0 0 0", basis=basis, spin=1, verbose=0)
    h = mol.intor("int1e_kin") + mol.intor("int1e_nuc")
    _, c = scipy.linalg.eigh(h, mol.intor("int1e_ovlp"))
    return np.outer(c[:, 0], c[:, 0])


def _spin_patterns(pos: np.ndarray, n_alpha: int, n_random: int) -> list[np.ndarray]:
    """Boolean 'atom carries an alpha electron' patterns: antiferromagnetic, then random."""
    n = len(pos)
    r2 = np.sum((pos[:, None] - pos[None]) ** 2, axis=-1)
    w = np.where(r2 > 0, 1.0 / np.maximum(r2, 1e-12), 0.0)
    axis = np.linalg.svd(pos - pos.mean(0))[2][0] if n > 1 else np.zeros(3)
    order = np.argsort(pos @ axis, kind="stable")
    up = np.zeros(n, bool)
    up[order[::2][:n_alpha]] = True
    up[[i for i in order if not up[i]][: n_alpha - up.sum()]] = True
    improved = True
    while improved:  # swap pairs while the same-spin repulsion sum_{same} 1/r^2 drops
        improved = False
        for i in np.flatnonzero(up):
            for j in np.flatnonzero(~up):
                delta = (w[j, up].sum() - w[j, i]) - w[i, up].sum() \
                    + (w[i, ~up].sum() - w[i, j]) - w[j, ~up].sum()
                if delta < -1e-12:
                    up[i], up[j] = False, True
                    improved = True
                    break
            if improved:
                break
    pats = [up]
    rng = np.random.default_rng(20240601 + 97 * n + n_alpha)
    for _ in range(n_random):
        p = np.zeros(n, bool)
        p[rng.choice(n, n_alpha, replace=False)] = True
        if not any(np.array_equal(p, q) for q in pats):
            pats.append(p)
    return pats


def _guess_dms(mol, atoms: Atoms, basis: str, st: Settings) -> list:
    """Initial (dm_a, dm_b) pairs: PySCF's default (None) and broken-symmetry patterns."""
    if set(atoms.get_chemical_symbols()) != {"H"}:
        return [None]
    blk = _atomic_block(basis)
    k = blk.shape[0]
    na, _ = mol.nelec
    out: list = [None]
    for up in _spin_patterns(atoms.get_positions(), na, st.n_random_guesses):
        da, db = np.zeros((mol.nao,) * 2), np.zeros((mol.nao,) * 2)
        for i, is_up in enumerate(up):
            (da if is_up else db)[i * k:(i + 1) * k, i * k:(i + 1) * k] = blk
        out.append(np.array([da, db]))
    return out


def _converge_uhf(mol, dm0, st: Settings):
    """Converge a UHF from ``dm0`` and follow internal instabilities. None if it fails."""
    from pyscf import scf

    na, nb = mol.nelec
    nrot = na * (mol.nao - na) + nb * (mol.nao - nb)
    mf = scf.UHF(mol)
    mf.max_cycle, mf.conv_tol = st.scf_max_cycle, st.scf_conv_tol
    mf.kernel(dm0)
    if nrot == 0:  # the determinant is fixed by the occupation numbers
        return (mf, "fixed") if mf.converged else None
    how = "diis"
    if not mf.converged:
        for how, shift in (("newton", None), ("levelshift+newton", 0.5)):
            start = mf.make_rdm1() if dm0 is None else dm0
            if shift is not None:
                ls = scf.UHF(mol)
                ls.max_cycle, ls.level_shift, ls.damp = 3 * st.scf_max_cycle, shift, 0.5
                ls.kernel(start)
                start = ls.make_rdm1()
            mf = scf.UHF(mol).newton()
            mf.max_cycle, mf.conv_tol = st.scf_max_cycle, st.scf_conv_tol
            mf.kernel(dm0=start)
            if mf.converged:
                break
        else:
            return None
    for _ in range(st.stability_rounds):
        mo, _, stable, _ = mf.stability(return_status=True)
        if stable:
            return mf, how
        nm = scf.UHF(mol).newton()
        nm.max_cycle, nm.conv_tol = st.scf_max_cycle, st.scf_conv_tol
        nm.kernel(dm0=mf.make_rdm1(mo, mf.mo_occ))
        if not nm.converged:
            return None
        mf, how = nm, how + "+stability"
    return None


def _best_uhf(atoms: Atoms, basis: str, twoms: int, st: Settings):
    mol = _mol(atoms, basis, twoms)
    best, tried = None, 0
    for dm0 in _guess_dms(mol, atoms, basis, st):
        tried += 1
        try:
            res = _converge_uhf(mol, dm0, st)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            res = None
        if res is not None and (best is None or res[0].e_tot < best[0].e_tot - 1e-10):
            best = res
    if best is None:
        raise LabelError(f"UHF (2M_S={twoms}) did not converge to a stable solution from "
                         f"{tried} starting guesses")
    return best


def _spin_values(nelec: int, st: Settings) -> list[int]:
    return [t for t in range(nelec % 2, nelec + 1, 2)][: st.spin_steps + 1]


def _plain_uhf(mf):
    """A plain UHF object holding ``mf``'s solution (strips the Newton wrapper)."""
    from pyscf import scf

    out = scf.UHF(mf.mol)
    for k in ("mo_coeff", "mo_occ", "mo_energy", "e_tot", "converged"):
        setattr(out, k, getattr(mf, k))
    out._eri = mf.mol.intor("int2e", aosym="s8")  # small systems: keep CC in core
    return out


def _uccsd_t(mf, st: Settings) -> tuple[float, str]:
    from pyscf import cc

    na, nb = mf.mol.nelec
    nao = mf.mol.nao
    if na * (nao - na) + nb * (nao - nb) == 0:  # no excitation exists: HF is exact
        return float(mf.e_tot), "no excitations"
    for i, (cyc, diis, shift) in enumerate(((1, 8, 0.0), (3, 12, 0.2), (5, 20, 0.5))):
        mycc = cc.UCCSD(mf)
        mycc.max_cycle, mycc.diis_space, mycc.level_shift = st.cc_max_cycle * cyc, diis, shift
        mycc.conv_tol, mycc.conv_tol_normt = 1e-9, 1e-7
        mycc.kernel()
        if mycc.converged:
            return float(mf.e_tot + mycc.e_corr + mycc.ccsd_t()), ("" if i == 0 else
                                                                   f"CCSD retry {i}")
    raise LabelError("UCCSD did not converge (3 attempts: DIIS 8/12/20, level shift 0/0.2/0.5)")


def _uhf_family(atoms: Atoms, basis: str, method: str, want_forces: bool, st: Settings):
    nelec = int(sum(atoms.numbers))
    cands = []
    for twoms in _spin_values(nelec, st):
        mf, how = _best_uhf(atoms, basis, twoms, st)
        mf = _plain_uhf(mf)
        if method == "uhf":
            e, note = float(mf.e_tot), how
        else:
            e, note = _uccsd_t(mf, st)
            note = "; ".join(x for x in (how, note) if x)
        cands.append((e, twoms, mf, note))
    e_min = min(c[0] for c in cands)  # ties (< 1e-8 Ha, e.g. the atomic limit): lowest spin
    e, twoms, mf, note = next(c for c in cands if c[0] <= e_min + 1e-8)
    s2 = float(mf.spin_square()[0])
    forces = _forces(mf.nuc_grad_method().kernel()) if want_forces and method == "uhf" else None
    return e, twoms, s2, forces, f"UHF {note}"


# ---------------------------------------------------------------- DMRG (optional)
def _dmrg(atoms: Atoms, basis: str, st: Settings):
    try:
        from pyblock2.driver.core import DMRGDriver, SymmetryTypes
    except ImportError as exc:
        raise LabelError("method 'dmrg' needs block2: pip install block2") from exc
    from pyscf import ao2mo, scf

    n = int(sum(atoms.numbers))
    twoms = n % 2
    mol = _mol(atoms, basis, twoms)
    mf = scf.RHF(mol) if twoms == 0 else scf.ROHF(mol)
    mf.max_cycle = st.scf_max_cycle
    mf.kernel()
    mo = mf.mo_coeff
    h1 = mo.T @ mf.get_hcore() @ mo
    g2 = ao2mo.restore(1, ao2mo.kernel(mol, mo), mol.nao)
    drv = DMRGDriver(scratch=f"/tmp/jbo-dmrg-{id(mol)}", symm_type=SymmetryTypes.SZ,
                     n_threads=1, stack_mem=1 << 28)
    drv.initialize_system(n_sites=mol.nao, n_elec=n, spin=twoms)
    mpo = drv.get_qc_mpo(h1e=h1, g2e=g2, ecore=mol.energy_nuc(), iprint=0)
    ket = drv.get_random_mps(tag="GS", bond_dim=st.dmrg_bond_dim, nroots=1)
    bd = st.dmrg_bond_dim
    e = drv.dmrg(mpo, ket, n_sweeps=20, bond_dims=[bd] * 8 + [bd] * 12,
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
        res = _uhf_family(atoms, basis, method, forces, st)
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
