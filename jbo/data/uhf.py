"""UHF and UCCSD(T) for hydrogen clusters: spin search, broken-symmetry guesses, stability.

Used by :func:`jbo.data.reference.compute` for ``method="uhf"`` and ``"uccsd(t)"``. For each
2M_S in {N mod 2, N mod 2 + 2, ...} (``Settings.spin_steps`` extra values), UHF is started
from PySCF's default guess and from broken-symmetry densities built from exact H-atom
densities (an antiferromagnetic pattern and random ones), converged (DIIS, then Newton, then
level shift + Newton) and followed down its internal instabilities (``mf.stability()``) until
stable. The lowest stable solution of each 2M_S is the reference; the method's energy decides
between 2M_S values (ties within 1e-8 Ha go to the lowest spin). Energies in Hartree here.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from jbo.data import fci
from jbo.data.pyscf_tools import LabelError, Settings, forces_ev as _forces, mol as _mol

__all__ = ["uhf_family"]


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
    mf.max_cycle, mf.conv_tol, mf.chkfile = st.scf_max_cycle, st.scf_conv_tol, None
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
                ls.chkfile = None
                ls.kernel(start)
                start = ls.make_rdm1()
            mf = scf.UHF(mol).newton()
            mf.max_cycle, mf.conv_tol, mf.chkfile = st.scf_max_cycle, st.scf_conv_tol, None
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
        nm.max_cycle, nm.conv_tol, nm.chkfile = st.scf_max_cycle, st.scf_conv_tol, None
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


def uhf_family(atoms: Atoms, basis: str, method: str, want_forces: bool, st: Settings):
    """(energy Ha, 2M_S, <S^2>, forces eV/Å or None, note) of the best UHF / UCCSD(T)."""
    nelec = int(sum(atoms.numbers))
    if method == "uccsd(t)" and nelec == 2:
        # CCSD is exact for two electrons and (T) vanishes, but from a broken-symmetry UHF of
        # a stretched pair its amplitude equations are too stiff to converge (or stall near
        # t = 0, a few uEh off): use the exact answer they would reach.
        e, two_s, s2, _, note = fci.solve(atoms, basis, False, st)
        return e, two_s, s2, None, "two electrons: UCCSD(T) = FCI" + (f"; {note}" if note else "")
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
