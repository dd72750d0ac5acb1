"""Check a reference dataset against the invariants its users rely on; name what is off.

Checks (each problem names the parent cluster and, where it applies, the subset bitmask):

* ``geometry``: non-finite coordinates, an atomic number outside 1..118, or two atoms at one
  position (:func:`jbo.data.records.parent_problem`, the check every reader applies).
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
from jbo.data.records import Parent, parent_problem

__all__ = ["Problem", "validate", "relabel", "format_report"]


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
    why = parent_problem(p)
    if why is not None:  # the other checks (and relabelling) assume a real geometry
        return [Problem("geometry", p.cluster, None, why)]
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


def _label_task(task: tuple) -> tuple:
    """Worker: ``(key, numbers, positions, method, basis) -> (key, energy eV, 2S, <S^2>, error)``."""
    from ase import Atoms

    from jbo.data import reference

    key, numbers, positions, method, basis = task
    try:
        lab = reference.compute(Atoms(numbers=numbers, positions=positions), method, basis)
        return key, lab.energy, lab.spin, lab.s2, ""
    except Exception as exc:  # recorded and reported as a problem, never dropped
        return key, float("nan"), -1, float("nan"), f"{type(exc).__name__}: {exc}"


def _task_key(p: Parent, mask: int) -> str:
    """Journal key of one label: cluster, subset, method, basis and a digest of the geometry."""
    import hashlib

    idx = lattice.members(mask)
    digest = hashlib.sha1(np.ascontiguousarray(p.positions[idx], np.float64).tobytes()
                          + np.asarray(p.numbers[idx], np.int64).tobytes()).hexdigest()[:12]
    return f"{p.cluster}|{mask}|{p.method}|{p.basis}|{digest}"


def _read_journal(path) -> dict[str, tuple]:
    import json
    from pathlib import Path

    out: dict[str, tuple] = {}
    if path is None or not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a kill: recomputed
            continue
        out[row[0]] = tuple(row[1:])
    return out


def relabel(parents: Sequence[Parent], sample: int | None = None, seed: int = 0, *,
            workers: int = 1, journal=None, progress: bool = False
            ) -> list[tuple[Parent, int, tuple]]:
    """Recompute labels: ``[(parent, subset, (energy eV, 2S, <S^2>, error))]``.

    ``sample``: how many random labels (None: all). ``workers``: processes (spawned, one
    thread each). ``journal``: a JSON-lines file that every result is appended to as it lands;
    a rerun with the same journal skips what it holds, so a killed run resumes.
    """
    import contextlib
    import json
    import os

    tasks = [(p, int(m)) for p in parents for m in p.subsets.tolist()]
    if sample is not None and sample < len(tasks):
        pick = np.random.default_rng(seed).choice(len(tasks), sample, replace=False)
        tasks = [tasks[i] for i in sorted(pick)]
    keys = [_task_key(p, m) for p, m in tasks]
    done = _read_journal(journal)
    todo = [(k, p.numbers[lattice.members(m)], p.positions[lattice.members(m)], p.method,
             p.basis) for k, (p, m) in zip(keys, tasks) if k not in done]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="relabel",
                   unit="label", smoothing=0.05)
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(journal, "a")) if journal is not None else None
        if bar is not None:
            stack.callback(bar.close)
        results = map(_label_task, todo)
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(var, "1")
            pool = stack.enter_context(mp.get_context("spawn").Pool(workers))
            # as they land, not in order: a slow label does not hold back the journal
            results = pool.imap_unordered(_label_task, todo, chunksize=4)
        for res in results:
            done[res[0]] = res[1:]
            if fh is not None:
                fh.write(json.dumps(list(res)) + "\n")
                fh.flush()
            if bar is not None:
                bar.update()
    return [(p, m, tuple(done[k])) for k, (p, m) in zip(keys, tasks)]


def _relabel(parents: Sequence[Parent], sample: int | None, seed: int, tol: float,
             progress: bool, workers: int = 1, journal=None) -> list[Problem]:
    out = []
    for p, mask, (e, spin, _s2, err) in relabel(parents, sample, seed, workers=workers,
                                                journal=journal, progress=progress):
        j = int(np.searchsorted(p.subsets, mask))
        if err:
            out.append(Problem("relabel", p.cluster, mask, f"recomputing failed: {err}"))
        elif abs(e - p.energy[j]) > tol or int(spin) != int(p.spin[j]):
            out.append(Problem("relabel", p.cluster, mask,
                               f"stored {p.energy[j]:.8f} eV (2S={int(p.spin[j])}), recomputed "
                               f"{e:.8f} eV (2S={int(spin)}): differ by "
                               f"{(p.energy[j] - e) * 1e3:.4f} meV"))
    return out


def validate(parents: Sequence[Parent], *, sample: int | None = 20, seed: int = 0,
             far: float = 6.0, far_eps: float = 1e-3, tol: float = 1e-6,
             progress: bool = False, workers: int = 1, journal=None) -> list[Problem]:
    """Every violated invariant of ``parents`` (empty list: all good).

    ``sample``: how many labels to recompute (None: all; 0: none). ``far`` (Å) and
    ``far_eps`` (eV): the far-pair test. ``tol`` (eV): relabelling agreement.
    ``workers``/``journal``: see :func:`relabel` (parallel, resumable relabelling).
    """
    if sample is not None and (isinstance(sample, bool) or int(sample) != sample or sample < 0):
        raise ValueError(f"sample must be a whole number >= 0 (0: recompute none) or None "
                         f"(all), got {sample!r}")
    for name, v in (("tol", tol), ("far", far), ("far_eps", far_eps)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    for name, v in (("workers", workers), ("seed", seed)):
        low = 1 if name == "workers" else 0
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {v!r}")
    if not parents:
        return [Problem("empty", "-", None, "the dataset holds no labelled cluster")]
    out = []
    for p in parents:
        out += _parent(p, far, far_eps)
    broken = {q.cluster for q in out if q.check == "geometry"}
    sound = [p for p in parents if p.cluster not in broken]
    out = _isolated_atoms(sound, 1e-8) + out
    if sample is None or sample > 0:
        out += _relabel(sound, sample, seed, tol, progress, workers, journal)
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


def repair(parents: Sequence[Parent], problems: Sequence[Problem], *, progress: bool = False
           ) -> tuple[list[Parent], list[dict]]:
    """Relabel (with forces) every structure named by a ``relabel`` problem.

    Returns the corrected parents and one record per changed label (cluster, subset, old and
    new energy in eV and 2S, largest force change in eV/Å), for the dataset's provenance.
    """
    from ase import Atoms

    from jbo.data import reference

    todo: dict[str, set[int]] = {}
    for pr in problems:
        if pr.check == "relabel" and pr.subset is not None:
            todo.setdefault(pr.cluster, set()).add(pr.subset)
    out, changes = [], []
    for p in parents:
        masks = sorted(todo.get(p.cluster, ()))
        if not masks:
            out.append(p)
            continue
        energy, spin, s2 = p.energy.copy(), p.spin.copy(), p.s2.copy()
        forces = None if p.forces is None else p.forces.copy()
        for mask in masks:
            j, idx = int(np.searchsorted(p.subsets, mask)), lattice.members(mask)
            lab = reference.compute(Atoms(numbers=p.numbers[idx], positions=p.positions[idx]),
                                    p.method, p.basis, forces=forces is not None)
            df = 0.0
            if forces is not None:
                df = float(np.abs(forces[j, idx] - lab.forces).max())
                forces[j, idx] = lab.forces
            changes.append(dict(cluster=p.cluster, subset=mask, size=len(idx),
                                old_energy=float(energy[j]), new_energy=lab.energy,
                                delta_meV=(lab.energy - float(energy[j])) * 1e3,
                                old_spin=int(spin[j]), new_spin=lab.spin, max_dforce=df))
            energy[j], spin[j], s2[j] = lab.energy, lab.spin, lab.s2
            if progress:
                print(f"relabelled {p.cluster} subset {mask}: "
                      f"{changes[-1]['delta_meV']:+.4f} meV, 2S {changes[-1]['old_spin']} -> "
                      f"{lab.spin}", flush=True)
        out.append(dataclasses.replace(p, energy=energy, spin=spin, s2=s2, forces=forces))
    return out, changes
