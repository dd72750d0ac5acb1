"""Full CI in the spin ground state: every spin S solved with the spin fixed, <S^2> checked.

For N electrons in ``norb`` orbitals each feasible 2S (N mod 2, N mod 2 + 2, ..., up to
min(N, 2 norb - N)) is solved in its highest-M_S sector, M_S = S, where every state has
S' >= S. There the penalty ``shift * (S^2 - S(S+1)) = shift * S_- S_+`` (positive
semi-definite; applied as a sparse S_+) lifts every S' > S state, so the lowest root is the lowest
state of spin exactly S. A state is accepted only when |<S^2> - S(S+1)| <= ``fci_s2_tol``;
its energy is <Psi|H|Psi> without the penalty. Small sectors (<= ``fci_dense_max``
determinants) are diagonalised densely; larger ones by Davidson with ``fci_roots`` roots
(the lowest pure one is kept: one root can converge to the upper of two near-degenerate
states), retried with a larger subspace and more roots, and a :class:`LabelError` names the
sector if no accepted state comes out. The ground state is the lowest E_S; spin states within ``fci_degeneracy``
(1e-9 Ha) tie and the lowest S wins, so the choice is deterministic at the atomic limit.

Energies in Hartree here; orbitals are any orthonormal set (FCI is invariant): RHF/ROHF
orbitals above the dense size (they speed Davidson up), Lowdin-orthogonalised AOs otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from ase import Atoms

from jbo.data.pyscf_tools import (LabelError, Settings, forces_ev, mol as make_mol,
                                  orthonormal_orbitals)

__all__ = ["SpinState", "FCI_MAX_DETS", "spin_values", "solve"]

FCI_MAX_DETS = 20_000_000


@dataclass(frozen=True)
class SpinState:
    """The lowest FCI state of one spin: energy (Ha), 2S, <S^2>, CI vector and its sector."""

    energy: float
    twos: int
    s2: float
    ci: np.ndarray
    nelec: tuple[int, int]
    note: str = ""


def spin_values(n_elec: int, norb: int) -> list[int]:
    """Feasible 2S values of ``n_elec`` electrons in ``norb`` spatial orbitals."""
    if n_elec > 2 * norb:
        raise LabelError(f"{n_elec} electrons do not fit in {norb} orbitals")
    return list(range(n_elec % 2, min(n_elec, 2 * norb - n_elec) + 1, 2))


def _sector(n_elec: int, twos: int) -> tuple[int, int]:
    return (n_elec + twos) // 2, (n_elec - twos) // 2


def spin_raising(norb: int, nelec: tuple[int, int]):
    """Sparse S_+ ``[dets(n_a+1, n_b-1), dets(n_a, n_b)]`` in PySCF's determinant order.

    In the M_S = S sector S^2 - S(S+1) = S_- S_+ = S_+^T S_+, so ``shift * |S_+ c|^2`` is the
    spin penalty; as a sparse matrix it costs a fraction of a Hamiltonian product.
    """
    import scipy.sparse as sp
    from pyscf.fci import cistring

    na, nb = nelec
    n_src = cistring.num_strings(norb, na) * cistring.num_strings(norb, nb)
    if nb == 0 or na == norb:  # fully polarised: S_+ c = 0
        return sp.csr_matrix((1, n_src))
    sa, sb = cistring.make_strings(range(norb), na), cistring.make_strings(range(norb), nb)
    n_tb = cistring.num_strings(norb, nb - 1)
    ia, ib = (g.ravel() for g in np.meshgrid(np.arange(len(sa)), np.arange(len(sb)),
                                            indexing="ij"))
    a, b = sa[ia], sb[ib]
    rows, cols, vals = [], [], []
    for p in range(norb):  # a+_{p alpha} a_{p beta}: a beta electron in p turns alpha
        bit = np.int64(1) << p
        ok = ((b & bit) != 0) & ((a & bit) == 0)
        below = bit - 1
        parity = na + np.bitwise_count(a[ok] & below) + np.bitwise_count(b[ok] & below)
        vals.append(1.0 - 2.0 * (parity % 2))
        rows.append(cistring.strs2addr(norb, na + 1, a[ok] | bit) * n_tb
                    + cistring.strs2addr(norb, nb - 1, b[ok] ^ bit))
        cols.append(ia[ok] * len(sb) + ib[ok])
    n_dst = cistring.num_strings(norb, na + 1) * n_tb
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_dst, n_src))


def _dense(m, h1, eri, norb, nelec, splus, st: Settings):
    """Lowest eigenvectors of H + shift S_+^T S_+ in a small sector, by dense eigh."""
    from pyscf import fci

    na, nb = comb(norb, nelec[0]), comb(norb, nelec[1])
    addr, h = fci.direct_spin1.pspace(h1, eri, norb, nelec, np=na * nb)
    order = np.argsort(addr)
    h = h[np.ix_(order, order)]  # determinant order of the CI vector
    pen = (splus.T @ splus).toarray()
    _, v = np.linalg.eigh(h + st.fci_spin_shift * pen)
    return [v[:, i].reshape(na, nb) for i in range(min(4, na * nb))], True


def _davidson(m, h1, eri, norb, nelec, splus, st: Settings, nroots, space, cycles):
    """Lowest roots of H + shift S_+^T S_+ by Davidson: (CI vectors, converged)."""
    from pyscf import fci

    class SpinFixed(fci.direct_spin1.FCI):
        def contract_2e(self, eri, fcivec, norb, nelec, link_index=None, **kwargs):
            hc = super().contract_2e(eri, fcivec, norb, nelec, link_index, **kwargs)
            c = np.asarray(fcivec).ravel()
            pen = st.fci_spin_shift * (splus.T @ (splus @ c))
            return (np.asarray(hc).ravel() + pen).reshape(np.shape(hc))

    solver = SpinFixed(m)
    solver.davidson_only = True  # PySCF's dense shortcut would not see the penalty
    solver.conv_tol, solver.max_cycle, solver.max_space = (st.ci_conv_tol,
                                                          st.ci_max_cycle * cycles, space)
    solver.nroots = nroots
    _, ci = solver.kernel(h1, eri, norb, nelec, ecore=m.energy_nuc())
    return (list(ci) if nroots > 1 else [ci]), bool(np.all(solver.converged))


def solve_spin(m, h1, eri, norb: int, n_elec: int, twos: int, st: Settings) -> SpinState:
    """The lowest state of spin S = twos/2 (in the M_S = S sector), <S^2> verified."""
    from pyscf import fci

    nelec = _sector(n_elec, twos)
    ss = twos / 2 * (twos / 2 + 1)
    ndet = comb(norb, nelec[0]) * comb(norb, nelec[1])
    splus = spin_raising(norb, nelec)
    seen = []
    if ndet <= st.fci_dense_max:
        tries = [("dense", None)]
    else:
        # several roots from the start: with one root Davidson can converge to the upper of
        # two near-degenerate states of the same spin (seen: doublets 7e-6 Ha apart)
        space = st.ci_max_space
        roots = min(st.fci_roots, ndet)
        tries = [("Davidson", (roots, space, 1)),
                 ("Davidson retried with a larger subspace", (roots, 2 * space, 2)),
                 ("Davidson retried with more roots", (min(roots + 2, ndet), 2 * space, 4))]
    for how, knobs in tries:
        if knobs is None:
            vecs, converged = _dense(m, h1, eri, norb, nelec, splus, st)
        else:
            vecs, converged = _davidson(m, h1, eri, norb, nelec, splus, st, *knobs)
        if not converged:
            seen.append(f"{how}: not converged")
            continue
        accepted = []
        for c in vecs:
            c = c / np.linalg.norm(c)
            s2 = float(np.sum((splus @ c.ravel()) ** 2)) + ss  # <S^2> in the M_S = S sector
            if abs(s2 - ss) <= st.fci_s2_tol:
                e = float(fci.direct_spin1.energy(h1, eri, c, norb, nelec)) + m.energy_nuc()
                accepted.append((e, s2, c))
            else:
                seen.append(f"{how}: <S^2>={s2:.4f}")
        if accepted:  # the lowest pure state among the roots, not the first one found
            e, s2, c = min(accepted, key=lambda t: t[0])
            note = "" if how in ("dense", "Davidson") else f"{how} for 2S={twos}"
            return SpinState(e, twos, s2, c, nelec, note)
    raise LabelError(f"FCI found no pure 2S={twos} state (want <S^2>={ss:g} +- "
                     f"{st.fci_s2_tol:g}) in sector (n_a, n_b)={nelec}: {'; '.join(seen)}")


def solve(atoms: Atoms, basis: str, want_forces: bool, st: Settings):
    """FCI ground state over all spins: (energy Ha, 2S, <S^2>, forces eV/Å or None, note)."""
    from pyscf import ao2mo, fci, mcscf, scf

    n = int(sum(atoms.numbers))
    m = make_mol(atoms, basis, n % 2)
    norb = m.nao
    twos_all = spin_values(n, norb)
    low = _sector(n, twos_all[0])
    if comb(norb, low[0]) * comb(norb, low[1]) > FCI_MAX_DETS:
        raise LabelError(f"FCI too large: {norb} orbitals, {n} electrons in {basis}")
    mf = scf.RHF(m) if n % 2 == 0 else scf.ROHF(m)
    mf.chkfile, mf.init_guess = None, "atom"
    mf.max_cycle, mf.conv_tol = st.fci_scf_max_cycle, 1e-8
    notes, mo = [], None
    if comb(norb, low[0]) * comb(norb, low[1]) > st.fci_dense_max:
        try:
            mf.kernel()
            mo = mf.mo_coeff
        except Exception as exc:  # any orthonormal orbitals will do
            notes.append(f"SCF crashed ({type(exc).__name__}); FCI in Lowdin orbitals")
    if mo is None:
        mo = orthonormal_orbitals(m)
    h1 = mo.T @ mf.get_hcore() @ mo
    eri = ao2mo.full(m.intor("int2e", aosym="s8"), mo)
    states = [solve_spin(m, h1, eri, norb, n, twos, st) for twos in twos_all]
    e_min = min(s.energy for s in states)
    best = next(s for s in states if s.energy <= e_min + st.fci_degeneracy)  # lowest S
    notes += [s.note for s in states if s.note]
    forces = None
    if want_forces:
        # full-space CASSCF has no orbital parameters: its gradient is the FCI gradient for
        # any orthonormal orbitals (checked against finite differences), for any spin
        mc = mcscf.CASSCF(mf, norb, best.nelec)
        mc.fcisolver = fci.direct_spin1.FCI(m)
        mc.mo_coeff, mc.ci, mc.e_tot, mc.converged = mo, best.ci, best.energy, True
        forces = forces_ev(mc.nuc_grad_method().kernel(mo_coeff=mo, ci=best.ci))
    return best.energy, best.twos, best.s2, forces, "; ".join(notes)
