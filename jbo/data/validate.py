"""Check a reference dataset against the invariants its users rely on; name what is off.

Checks (each problem names the parent cluster and, where it applies, the subset bitmask):

* ``incomplete``: a parent holds neither only its full cluster nor every subset.
* ``non-finite``: an energy, <S^2> or force that is NaN/inf.
* ``isolated atom``: every single-atom subset of an element has the same energy (to 1e-8 eV):
  the reference is size-consistent and an isolated atom does not know its cluster.
* ``spin``: <S^2> equals S(S+1) of the stored 2S to 1e-3 (a mixed state fails here) and 2S has
  the parity of the electron count.
* ``far pair``: in complete parents, two atoms farther apart than ``far`` Å interact by less
  than ``far_eps`` eV (|ε({i,j})|); a wrong label of either fragment shows up here.
* ``mbe``: Σ_k E^(k) equals the total energy (to 1e-8 eV) for complete parents.
* ``relabel``: a random sample of labels (or all) is recomputed with
  :func:`jbo.data.reference.compute` and must agree to ``tol`` eV in energy and in spin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jbo import lattice
from jbo.data.records import Parent

__all__ = ["Problem", "validate", "format_report"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One violated invariant."""

    check: str
    cluster: str
    subset: int | None
    detail: str

    def __str__(self) -> str:
        where = self.cluster + (f" subset {self.subset}" if self.subset is not None else "")
        return f"[{self.check}] {where}: {self.detail}"


def _structure(p: Parent, j: int) -> list[Problem]:
    out = []
    mask = int(p.subsets[j])
    vals = [p.energy[j], p.s2[j]] + ([] if p.forces is None else list(p.forces[j].ravel()))
    if not np.all(np.isfinite(vals)):
        out.append(Problem("non-finite", p.cluster, mask, "energy, <S^2> or forces not finite"))
    n_elec = int(p.numbers[lattice.members(mask)].sum())
    twos = int(p.spin[j])
    if twos < 0 or twos % 2 != n_elec % 2:
        out.append(Problem("spin", p.cluster, mask,
                           f"2S={twos} impossible for {n_elec} electrons"))
    elif abs(p.s2[j] - twos / 2 * (twos / 2 + 1)) > 1e-3:
        out.append(Problem("spin", p.cluster, mask,
                           f"<S^2>={p.s2[j]:.4f} is not S(S+1)={twos / 2 * (twos / 2 + 1):g} "
                           f"of the stored 2S={twos}: a mixed or wrong state"))
    return out


def _parent(p: Parent, far: float, far_eps: float) -> list[Problem]:
    out = []
    if not (len(p.subsets) == 1 and p.subsets[0] == p.full) and not p.is_complete:
        missing = sorted(set(range(1, p.full + 1)) - set(p.subsets.tolist()))
        out.append(Problem("incomplete", p.cluster, None,
                           f"{len(missing)} of {p.full} subsets missing, e.g. {missing[:8]}"))
    for j in range(len(p.subsets)):
        out += _structure(p, j)
    if p.is_complete and np.all(np.isfinite(p.energy)):
        from jbo.data.mbe import reference_mbe

        m = reference_mbe(p)
        if abs(m.truncated[-1] - m.total) > 1e-8:
            out.append(Problem("mbe", p.cluster, None,
                               f"sum_k E^(k) - E = {m.truncated[-1] - m.total:.3e} eV"))
        d = np.linalg.norm(p.positions[:, None] - p.positions[None], axis=-1)
        for i, k in zip(*np.nonzero(np.triu(d > far, 1))):
            eps = m.terms[(1 << int(i)) | (1 << int(k))]
            if abs(eps) > far_eps:
                out.append(Problem("far pair", p.cluster, (1 << int(i)) | (1 << int(k)),
                                   f"atoms {i},{k} are {d[i, k]:.2f} Å apart but interact "
                                   f"by {eps * 1e3:.3f} meV (> {far_eps * 1e3:g})"))
    return out


def _isolated_atoms(parents: Sequence[Parent], tol: float) -> list[Problem]:
    energies: dict[tuple, list[tuple[str, int, float]]] = {}
    for p in parents:
        for j, mask in enumerate(p.subsets.tolist()):
            if mask & (mask - 1) == 0:
                z = int(p.numbers[mask.bit_length() - 1])
                energies.setdefault((z, p.method, p.basis), []).append(
                    (p.cluster, mask, float(p.energy[j])))
    out = []
    for (z, method, basis), rows in energies.items():
        ref = float(np.median([e for _, _, e in rows]))
        out += [Problem("isolated atom", c, m, f"Z={z} ({method}/{basis}) has {e:.8f} eV, "
                        f"the others {ref:.8f} eV") for c, m, e in rows if abs(e - ref) > tol]
    return out


def _relabel(parents: Sequence[Parent], sample: int | None, seed: int, tol: float,
             progress: bool) -> list[Problem]:
    from ase import Atoms

    from jbo.data import reference

    tasks = [(p, j) for p in parents for j in range(len(p.subsets))]
    if sample is not None and sample < len(tasks):
        pick = np.random.default_rng(seed).choice(len(tasks), sample, replace=False)
        tasks = [tasks[i] for i in sorted(pick)]
    if progress:
        from tqdm import tqdm

        tasks = tqdm(tasks, desc="relabel", unit="label")
    out = []
    for p, j in tasks:
        mask = int(p.subsets[j])
        idx = lattice.members(mask)
        lab = reference.compute(Atoms(numbers=p.numbers[idx], positions=p.positions[idx]),
                                p.method, p.basis)
        if abs(lab.energy - p.energy[j]) > tol or lab.spin != int(p.spin[j]):
            out.append(Problem("relabel", p.cluster, mask,
                               f"stored {p.energy[j]:.8f} eV (2S={int(p.spin[j])}), recomputed "
                               f"{lab.energy:.8f} eV (2S={lab.spin}): differ by "
                               f"{(p.energy[j] - lab.energy) * 1e3:.4f} meV"))
    return out


def validate(parents: Sequence[Parent], *, sample: int | None = 20, seed: int = 0,
             far: float = 6.0, far_eps: float = 1e-3, tol: float = 1e-6,
             progress: bool = False) -> list[Problem]:
    """Every violated invariant of ``parents`` (empty list: all good).

    ``sample``: how many labels to recompute (None: all; 0: none). ``far`` (Å) and
    ``far_eps`` (eV): the far-pair test. ``tol`` (eV): relabelling agreement.
    """
    if not parents:
        return [Problem("empty", "-", None, "the dataset holds no labelled cluster")]
    out = _isolated_atoms(parents, 1e-8)
    for p in parents:
        out += _parent(p, far, far_eps)
    if sample is None or sample > 0:
        out += _relabel(parents, sample, seed, tol, progress)
    return out


def format_report(problems: Sequence[Problem], parents: Sequence[Parent]) -> str:
    """A human-readable verdict: counts, then every problem (first 200)."""
    n_struct = sum(len(p.subsets) for p in parents)
    if not problems:
        return f"OK: {len(parents)} parents, {n_struct} labelled structures, every check passed"
    lines = [f"FAILED: {len(problems)} problems in {len(parents)} parents "
             f"({n_struct} structures)"]
    lines += [f"  {p}" for p in problems[:200]]
    if len(problems) > 200:
        lines.append(f"  ... and {len(problems) - 200} more")
    return "\n".join(lines)
