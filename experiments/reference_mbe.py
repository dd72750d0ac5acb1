"""The many-body expansion of the ab initio references, per density regime.

1. From the stored subcluster energies (:func:`jbo.analysis.reference_spectra`, never recomputed):
   mean |E^(k)| per atom for each order k, and the truncated-MBE error |E − E_MBE(K)| per atom
   versus K, per regime and cluster size; the check Σ_k E^(k) = E; how often the stored spin
   ground state is not the lowest multiplicity.
2. The atomic-limit check, computed on the fly with PySCF: a few low-density clusters are
   stretched uniformly and every subcluster is labelled three ways: the size-consistent spin
   ground state (:func:`jbo.data.reference.compute`, FCI), FCI forced to the lowest
   multiplicity, and spin-restricted Hartree–Fock at the lowest multiplicity (RHF/ROHF).
   As the atoms separate, E(A∪B) − E(A) − E(B) and every E^(k≥2) must vanish; a naive spin
   choice leaves spurious interaction terms of every order.

``python -m experiments.reference_mbe [--quick]`` writes ``results/reference_mbe/``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

import numpy as np

from jbo.study import fixed as study
from experiments import common
from jbo import analysis, plots

METHODS = ("fci (ground-state spin)", "fci (lowest multiplicity)", "rhf/rohf (lowest mult.)")


# ---------------------------------------------------------------- stored references
def stored_summary(mbes: list, spins: dict[str, list[tuple[int, int]]]) -> dict:
    """Per regime and size: mean |E^(k)|/n and |E − E_MBE(K)|/n (meV/atom); sum check (eV)."""
    groups: dict[tuple[str, int], list] = defaultdict(list)
    for m in mbes:
        groups[(m.regime, m.n)].append(m)
    out: dict = {"regimes": {}, "max_sum_error_eV": 0.0, "n_clusters": len(mbes)}
    for (reg, n), ms in sorted(groups.items()):
        per = np.array([np.abs(m.per_order) / n for m in ms]) * 1e3
        trunc = np.array([np.abs(m.total - m.truncated) / n for m in ms]) * 1e3
        out["regimes"].setdefault(reg, {})[str(n)] = dict(
            count=len(ms), mean_abs_order=per.mean(0).tolist(),
            mean_trunc_error=trunc.mean(0).tolist(),
            mean_total_per_atom=float(np.mean([m.total / n for m in ms])))
    out["max_sum_error_eV"] = float(max((abs(m.per_order.sum() - m.total) for m in mbes),
                                        default=0.0))
    for reg, pairs in spins.items():
        arr = np.array(pairs)
        high = arr[:, 1] > arr[:, 0] % 2
        out["regimes"].setdefault(reg, {})
        out.setdefault("spin", {})[reg] = dict(
            rows=int(len(arr)), fraction_not_lowest=float(high.mean()),
            by_size={str(k): float(high[arr[:, 0] == k].mean())
                     for k in sorted(set(arr[:, 0].tolist()))})
    return out


def _spins(source) -> dict[str, list[tuple[int, int]]]:
    """``{regime: [(subset size, 2S), ...]}`` of every labelled structure of a dataset."""
    from jbo.data.records import read_parents

    out: dict[str, list] = defaultdict(list)
    for p in read_parents(source):
        sizes = np.bitwise_count(p.subsets.astype(np.uint64)).tolist()
        out[p.regime] += [(k, s) for k, s in zip(sizes, p.spin.tolist()) if s >= 0]
    return dict(out)


# ---------------------------------------------------------------- atomic limit (on the fly)
def naive_energy(atoms, kind: str) -> float:
    """Energy (eV) at the lowest multiplicity: ``"rhf"`` (RHF/ROHF) or ``"fci_low"``."""
    from pyscf import fci, gto, scf

    from jbo.data.reference import HARTREE_EV

    n = len(atoms)
    mol = gto.M(atom=[("H", tuple(p)) for p in atoms.get_positions()], basis="sto-3g",
                spin=n % 2, verbose=0)
    mf = scf.RHF(mol) if n % 2 == 0 else scf.ROHF(mol)
    mf.chkfile, mf.max_cycle = None, 200
    if n == 1:
        return float(mf.kernel()) * HARTREE_EV
    mf.kernel()
    if kind == "rhf":
        return float(mf.e_tot) * HARTREE_EV
    nelec = ((n + 1) // 2, n // 2)
    solver = fci.addons.fix_spin_(fci.direct_spin1.FCI(mol), ss=0.75 * (n % 2), shift=0.5)
    solver.conv_tol, solver.max_cycle = 1e-10, 300
    h1 = mf.mo_coeff.T @ mf.get_hcore() @ mf.mo_coeff
    from pyscf import ao2mo
    eri = ao2mo.full(mol, mf.mo_coeff)
    e, _ = solver.kernel(h1, eri, mol.nao, nelec, ecore=mol.energy_nuc())
    return float(e) * HARTREE_EV


def lattice_energies(atoms, method: str) -> np.ndarray:
    """E(S) (eV) of every subcluster by bitmask with one of :data:`METHODS`."""
    from jbo.data.clusters import subcluster
    from jbo.data.reference import compute

    n = len(atoms)
    e = np.zeros(1 << n)
    for mask in range(1, 1 << n):
        sub = subcluster(atoms, mask)
        if method == METHODS[0]:
            e[mask] = compute(sub, "fci", "sto-3g").energy
        else:
            e[mask] = naive_energy(sub, "fci_low" if method == METHODS[1] else "rhf")
    return e


def atomic_limit(sizes: Sequence[int], stretches: Sequence[float], seed: int = 3) -> dict:
    """Stretched low-density clusters: binding E(A∪B)−E(A)−E(B) and E^(k) per method (eV)."""
    from jbo.data.clusters import random_cluster

    out = {"stretches": list(stretches), "clusters": {}}
    for n in sizes:
        base = random_cluster(n, "low", seed)
        half = (1 << (n // 2)) - 1  # A = first n//2 atoms, B = the rest
        res: dict = {}
        for method in METHODS:
            rows = []
            for s in stretches:
                atoms = base.copy()
                atoms.positions = base.positions * s
                e = lattice_energies(atoms, method)
                m = analysis.lattice_spectra([e])[0]
                full = (1 << n) - 1
                rows.append(dict(stretch=s, binding=float(e[full] - e[half] - e[full ^ half]),
                                 per_order=m.per_order.tolist(), total=m.total))
            res[method] = rows
        out["clusters"][base.info["cluster"]] = res
    return out


# ---------------------------------------------------------------- figures
def figures(summary: dict, limit: dict, out) -> list[str]:
    files = []
    k_max = max(int(n) for reg in summary["regimes"].values() for n in reg) \
        if summary["regimes"] else 1
    spec, trunc = {}, {}
    for reg, by_n in summary["regimes"].items():
        if not by_n:
            continue
        spec[f"{reg} density"] = {f"H{n}": (range(1, len(v["mean_abs_order"]) + 1),
                                            v["mean_abs_order"]) for n, v in by_n.items()}
        trunc[f"{reg} density"] = {f"H{n}": (range(1, len(v["mean_trunc_error"])),
                                             v["mean_trunc_error"][:-1])
                                   for n, v in by_n.items()}
    if spec:
        files.append(plots.curve_grid(spec, out / "reference_spectrum.png", "body order k",
                                      "mean |E^(k)| / n  (meV/atom)", "Reference MBE (FCI/STO-3G)",
                                      ncols=2, logy=True, sharey=True).name)
        files.append(plots.curve_grid(trunc, out / "truncation_error.png", "truncation order K",
                                      "mean |E − E_MBE(K)| / n  (meV/atom)",
                                      "Truncated reference MBE", ncols=2, logy=True,
                                      sharey=True).name)
    del k_max
    st = limit["stretches"]
    bind, high = {}, {}
    for cid, res in limit["clusters"].items():
        bind[cid] = {m: (st, [abs(r["binding"]) * 1e3 for r in rows]) for m, rows in res.items()}
        high[cid] = {m: (range(2, len(rows[-1]["per_order"]) + 1),
                         [abs(x) * 1e3 for x in rows[-1]["per_order"][1:]])
                     for m, rows in res.items()}
    if bind:
        files.append(plots.curve_grid(bind, out / "atomic_limit_binding.png",
                                      "stretch factor (× low-density geometry)",
                                      "|E(A∪B) − E(A) − E(B)|  (meV)",
                                      "Atomic limit: interaction of two halves",
                                      ncols=2, logy=True).name)
        files.append(plots.curve_grid(high, out / "atomic_limit_orders.png", "body order k",
                                      f"|E^(k)| at stretch {st[-1]:g}  (meV)",
                                      "Spurious interaction terms in the atomic limit",
                                      ncols=2, logy=True).name)
    return files


def main(argv: Sequence[str] | None = None) -> dict:
    p = common.parser("reference_mbe", __doc__)
    p.add_argument("--sizes", default="4,6", help="atomic-limit cluster sizes")
    p.add_argument("--stretches", default="1,1.5,2,3,5", help="atomic-limit stretch factors")
    args = p.parse_args(argv)
    out = common.out_dir(args, "reference_mbe")
    t0 = time.perf_counter()
    data = study.load_data(args.db, sizes=(4, 5) if args.quick else None)
    mbes = sorted(data.ref, key=lambda m: (m.regime, m.n, m.cluster))
    summary = stored_summary(mbes, _spins(args.db))
    sizes = [3] if args.quick else [int(x) for x in args.sizes.split(",")]
    stretches = [1.0, 4.0] if args.quick else [float(x) for x in args.stretches.split(",")]
    limit = atomic_limit(sizes, stretches)
    result = dict(db=args.db, quick=args.quick, stored=summary, atomic_limit=limit,
                  seconds=time.perf_counter() - t0)
    result["figures"] = figures(summary, limit, out)
    wrote = common.write_result(out / "reference_mbe.json", result)
    print(f"reference_mbe: {summary['n_clusters']} clusters, max |Σ E^(k) − E| = "
          f"{summary['max_sum_error_eV']:.1e} eV, {result['seconds']:.0f} s -> {out}"
          + ("" if wrote else " (results unchanged: reference_mbe.json kept)"))
    return result


if __name__ == "__main__":
    from jbo import compilation_cache

    compilation_cache.enable()  # a second run loads its programs from disk
    main()
