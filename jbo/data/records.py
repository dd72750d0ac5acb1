"""The one reader of reference data: parents with their labelled subsets, and flat records.

Two storage layouts hold the same information:

* the **per-row store** that labelling writes (an ``ase.db`` file or ``postgresql://`` URL,
  one row per (cluster, subset, method, basis); schema in docs/CONTRACTS.md), and
* the **compact file** that is shipped (``.npz``, written by :func:`write_compact`): per
  parent its positions and numbers once, and per labelled subset (a bitmask) its energy,
  spin, <S^2> and the forces on the subset's atoms. An H_8 parent with all 255 subsets costs
  ~26 kB instead of 255 ase.db rows (~280 kB), and 60k structures read in about a second.

:func:`read_parents` returns :class:`Parent` objects from either; :func:`read_records`
flattens them into :class:`Record` structures (one per labelled subset) for training and
analysis. :func:`export` writes parents back out as plain ase.db / extxyz rows for other tools.
Whatever the layout, every parent read passes the same checks (:mod:`jbo.data.integrity`): a
compact file's arrays must be consistent, and every geometry real (finite, atomic numbers
1..118, no two atoms at one place); a fault is one ValueError naming the cluster.
Energies in eV, lengths in Å, forces in eV/Å.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jbo import lattice
from jbo.data.integrity import (check_parents, check_records, compact_problem, parent_problem,
                                popcount)

__all__ = ["Record", "Parent", "read_parents", "read_records", "write_compact", "export",
           "is_compact", "check_parents", "check_records", "parent_problem",
           "export_format", "COMPACT_FORMAT", "COMPACT_VERSION"]

COMPACT_FORMAT = "jbo-reference-dataset"
COMPACT_VERSION = 1
_SELECT_KEYS = ("cluster", "regime", "split", "method", "basis", "n_parent")


@dataclasses.dataclass(frozen=True)
class Record:
    """One labelled structure. ``forces`` is None when the method gives none."""

    positions: np.ndarray  # [n, 3] Å
    species: np.ndarray  # [n] int32
    energy: float  # eV
    forces: np.ndarray | None  # [n, 3] eV/Å
    cluster: str
    subset: int
    n_parent: int
    split: str
    regime: str = ""

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    @property
    def is_full(self) -> bool:
        return self.subset == (1 << self.n_parent) - 1


@dataclasses.dataclass(frozen=True)
class Parent:
    """A parent cluster and its labelled subsets (sorted bitmasks; bit i = atom i)."""

    cluster: str
    regime: str
    split: str
    method: str
    basis: str
    seed: int
    positions: np.ndarray  # [n, 3] Å
    numbers: np.ndarray    # [n] int32
    subsets: np.ndarray    # [M] int64, ascending
    energy: np.ndarray     # [M] eV
    spin: np.ndarray       # [M] 2S (or 2M_S for UHF-based methods); -1 unknown
    s2: np.ndarray         # [M] <S^2>; NaN unknown
    forces: np.ndarray | None  # [M, n, 3] eV/Å, zero on atoms outside the subset

    @property
    def n(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def full(self) -> int:
        return (1 << self.n) - 1

    @property
    def is_complete(self) -> bool:
        """True when every non-empty subset is labelled."""
        return len(self.subsets) == self.full

    def lattice(self) -> np.ndarray:
        """``[2^n]`` energies (eV) by bitmask; entry 0 (empty set) = 0, NaN where unlabelled."""
        e = np.full(1 << self.n, np.nan)
        e[0] = 0.0
        e[self.subsets] = self.energy
        return e

    def records(self) -> list[Record]:
        """One :class:`Record` per labelled subset, atoms in bit order."""
        out = []
        for j, mask in enumerate(self.subsets.tolist()):
            idx = lattice.members(mask)
            out.append(Record(
                positions=self.positions[idx], species=self.numbers[idx],
                energy=float(self.energy[j]),
                forces=None if self.forces is None else self.forces[j, idx],
                cluster=self.cluster, subset=mask, n_parent=self.n, split=self.split,
                regime=self.regime))
        return out


def is_compact(path: str | Path) -> bool:
    """True for a compact ``.npz`` dataset path (anything else is an ase.db file or URL)."""
    return str(path).endswith(".npz")


def _matches(p: Parent, select: dict) -> bool:
    vals = dict(cluster=p.cluster, regime=p.regime, split=p.split, method=p.method,
                basis=p.basis, n_parent=p.n)
    return all(vals[k] == v for k, v in select.items())


def read_parents(source, *, check: bool = True, **select) -> list[Parent]:
    """Parents (sorted by cluster id) from a compact file, an ase.db path/URL or connection.

    ``select``: equality filters on ``cluster, regime, split, method, basis, n_parent``.
    Only ``status="ok"`` rows of a per-row store are read; a parent keeps what is labelled.
    ``check``: every parent passes :func:`check_parents` (the geometry/species check of all
    layouts; ValueError naming the cluster). ``jbo data validate`` reads with ``check=False``
    and reports those faults among the others.
    """
    bad = sorted(set(select) - set(_SELECT_KEYS))
    if bad:
        raise ValueError(f"cannot select on {bad}; known keys: {', '.join(_SELECT_KEYS)}")
    if isinstance(source, (str, Path)) and is_compact(source):
        parents = _read_compact(Path(source))
    else:
        parents = _read_store(source, select)
    parents = [p for p in parents if _matches(p, select)]
    if check:
        check_parents(parents, where=f"{source}: " if isinstance(source, (str, Path)) else "")
    return parents


def read_records(source, **select) -> list[Record]:
    """Every labelled structure of :func:`read_parents` as a flat list of :class:`Record`."""
    return [r for p in read_parents(source, **select) for r in p.records()]


# ---------------------------------------------------------------- per-row store (ase.db)
def _read_store(source, select: dict) -> list[Parent]:
    from jbo import geometry
    from jbo.data.store import connect, is_labelled

    if isinstance(source, (str, Path)):
        if "://" not in str(source) and not Path(source).exists():
            raise FileNotFoundError(f"dataset {source} does not exist; label one with "
                                    "`jbo data label ...` or pass the shipped data/h_clusters.npz")
        source = connect(str(source), create=False)
    db = source
    sel = {k: v for k, v in select.items() if k in _SELECT_KEYS}
    rows: dict[tuple, list] = {}
    for row in db.select(status="ok", **sel):
        kv = row.key_value_pairs
        missing = [k for k in ("cluster", "subset", "n_parent", "split") if k not in kv]
        if missing:
            raise ValueError(f"row {row.id} lacks keys {missing}; see docs/CONTRACTS.md "
                             "for the reference-database schema")
        if not is_labelled(row):
            continue  # status=ok without a finite energy: not labelled (label fills it in)
        try:  # the engine's input check, in numpy
            geometry.check_values(row.positions[None], row.numbers[None],
                                  np.ones((1, len(row.numbers)), bool))
        except ValueError as err:
            raise ValueError(f"row {row.id} ({kv['cluster']} subset {kv['subset']}): {err}"
                             ) from err
        key = (kv["cluster"], kv.get("method", ""), kv.get("basis", ""))
        rows.setdefault(key, []).append(row)
    return [_parent_from_rows(k, rs) for k, rs in sorted(rows.items())]


def _parent_from_rows(key: tuple, rows: list) -> Parent:
    cluster, method, basis = key
    first = rows[0]
    n = int(first.n_parent)
    rows = sorted(rows, key=lambda r: int(r.subset))
    if len({int(r.subset) for r in rows}) != len(rows):
        raise ValueError(f"{cluster} ({method}/{basis}) has duplicate rows for one subset; "
                         "run `jbo data validate` on the store")
    pos, num = np.full((n, 3), np.nan), np.zeros(n, np.int32)
    m = len(rows)
    forces = np.zeros((m, n, 3)) if all(r.get("forces") is not None for r in rows) else None
    for j, r in enumerate(rows):
        idx = lattice.members(r.subset)
        if len(idx) != len(r.numbers) or max(idx) >= n:
            raise ValueError(f"{cluster}: row {r.id} (subset {r.subset}) holds {len(r.numbers)} "
                             f"atoms, its bitmask names {len(idx)} of n_parent={n}")
        seen = ~np.isnan(pos[idx, 0])
        if (seen.any() and (np.abs(pos[idx][seen] - r.positions[seen]).max() > 1e-8
                            or (num[idx][seen] != r.numbers[seen]).any())):
            raise ValueError(f"{cluster}: row {r.id} (subset {r.subset}) places or names its "
                             "atoms differently from another row of the parent; relabel it")
        pos[idx], num[idx] = r.positions, r.numbers
        if forces is not None:
            forces[j, idx] = r.forces
    if np.isnan(pos).any():
        raise ValueError(f"{cluster}: no row covers atoms "
                         f"{np.flatnonzero(np.isnan(pos[:, 0])).tolist()}; cannot rebuild it")
    return Parent(cluster=cluster, regime=str(first.get("regime", "")),
                  split=str(first.split), method=method, basis=basis,
                  seed=int(first.get("seed", -1)), positions=pos, numbers=num,
                  subsets=np.array([int(r.subset) for r in rows], np.int64),
                  energy=np.array([float(r.energy) for r in rows]),
                  spin=np.array([int(r.get("spin", -1)) for r in rows], np.int64),
                  s2=np.array([float(r.get("s2", np.nan)) for r in rows]), forces=forces)


# ---------------------------------------------------------------- compact file (.npz)
_PARENT_STR = ("cluster", "regime", "split", "method", "basis")


def write_compact(parents: Sequence[Parent], path: str | Path) -> int:
    """Write ``parents`` to a compact ``.npz`` (see the module docstring); returns its bytes."""
    path = Path(path)
    if not is_compact(path):
        raise ValueError(f"a compact dataset file must end in .npz, got {path}")
    parents = sorted(parents, key=lambda p: (p.cluster, p.method, p.basis))
    n = np.array([p.n for p in parents], np.int64)
    m = np.array([len(p.subsets) for p in parents], np.int64)
    has_f = np.array([p.forces is not None for p in parents])
    f_rows = []  # forces on the atoms of each subset, in bit order
    for p in parents:
        for j, mask in enumerate(p.subsets.tolist()):
            idx = lattice.members(mask)
            f_rows.append(p.forces[j, idx] if p.forces is not None else np.zeros((len(idx), 3)))
    arrays = {k: np.array([getattr(p, k) for p in parents]) for k in _PARENT_STR}
    arrays.update(
        format=np.array(COMPACT_FORMAT), version=np.array(COMPACT_VERSION),
        seed=np.array([p.seed for p in parents], np.int64), n_atoms=n, n_subsets=m,
        has_forces=has_f,
        positions=np.concatenate([p.positions for p in parents]) if parents else np.zeros((0, 3)),
        numbers=np.concatenate([p.numbers for p in parents]).astype(np.int16)
        if parents else np.zeros(0, np.int16),
        subsets=np.concatenate([p.subsets for p in parents]) if parents else np.zeros(0, np.int64),
        energy=np.concatenate([p.energy for p in parents]) if parents else np.zeros(0),
        spin=np.concatenate([p.spin for p in parents]).astype(np.int8)
        if parents else np.zeros(0, np.int8),
        s2=np.concatenate([p.s2 for p in parents]) if parents else np.zeros(0),
        forces=np.concatenate(f_rows) if f_rows else np.zeros((0, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:  # a full disk or a kill leaves the old file (if any) whole, never a torn one
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _read_compact(path: Path) -> list[Parent]:
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist (see data/README.md: "
                                "`bash data/make_dataset.sh` regenerates it)")
    try:
        z = dict(np.load(path, allow_pickle=False))
    except Exception as exc:  # truncated / not a zip / not an npz
        raise ValueError(f"{path} is not a readable compact dataset (.npz): {exc}") from exc
    if str(z.get("format", "")) != COMPACT_FORMAT:
        raise ValueError(f"{path} is not a jbo compact dataset (format key missing)")
    if int(z["version"]) > COMPACT_VERSION:
        raise ValueError(f"{path} has format version {int(z['version'])}, newer than this "
                         f"jbo reads ({COMPACT_VERSION}): upgrade jbo")
    problem = compact_problem(z)
    if problem:
        raise ValueError(f"{path} is not a consistent compact dataset: {problem}; rebuild it "
                         "with `jbo data pack` (or restore the shipped file)")
    bad = [k for k in ("positions", "energy", "forces") if not np.isfinite(z[k]).all()]
    if bad:
        raise ValueError(f"{path} holds non-finite {', '.join(bad)}: run `jbo data validate`")
    a_off = np.concatenate([[0], np.cumsum(z["n_atoms"])])
    s_off = np.concatenate([[0], np.cumsum(z["n_subsets"])])
    f_off = np.concatenate([[0], np.cumsum(popcount(z["subsets"]))])
    parents = []
    for i in range(len(z["n_atoms"])):
        n, lo, hi = int(z["n_atoms"][i]), s_off[i], s_off[i + 1]
        subsets = z["subsets"][lo:hi]
        forces = None
        if z["has_forces"][i]:
            forces = np.zeros((hi - lo, n, 3))
            bits = (subsets[:, None] >> np.arange(n)) & 1 == 1  # [M, n] atom in subset
            forces[bits] = z["forces"][f_off[lo]:f_off[hi]]
        parents.append(Parent(
            **{k: str(z[k][i]) for k in _PARENT_STR}, seed=int(z["seed"][i]),
            positions=z["positions"][a_off[i]:a_off[i + 1]],
            numbers=z["numbers"][a_off[i]:a_off[i + 1]].astype(np.int32), subsets=subsets,
            energy=z["energy"][lo:hi], spin=z["spin"][lo:hi].astype(np.int64),
            s2=z["s2"][lo:hi], forces=forces))
    return parents


# ---------------------------------------------------------------- export for other tools
def export_format(path: str | Path) -> str:
    """The format :func:`export` writes ``path`` in: ``"db"`` (``.db`` or a URL) or the ASE
    format its suffix names; ValueError naming the choices for one ASE cannot write many
    structures to (checked before anything is read or written)."""
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    path = str(path)
    if path.endswith(".db") or "://" in path:
        return "db"
    try:
        fmt = filetype(path, read=False)
        ok = ioformats[fmt].can_write and not ioformats[fmt].single
    except (KeyError, UnknownFileTypeError):
        fmt, ok = Path(path).suffix or "(no suffix)", False
    if not ok:
        raise ValueError(f"cannot export to {path}: ASE writes no multi-structure format "
                         f"'{fmt}'; name the output .extxyz (energies, forces, keys), .traj, or "
                         ".db (the per-row store schema)")
    return fmt


def export(parents: Sequence[Parent], path: str | Path) -> int:
    """Write every labelled subset as a plain row: ``.db`` (the per-row store schema) or any
    ASE-writable file such as ``.extxyz`` (energy/forces via SinglePointCalculator, keys in
    ``info``). Returns the number of structures written."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    path = str(path)
    if export_format(path) == "db":
        from jbo.data.store import connect, write_row

        db = connect(path)
        count = 0
        for p in parents:
            atoms = Atoms(numbers=p.numbers, positions=p.positions)
            atoms.info.update(cluster=p.cluster, regime=p.regime, split=p.split, seed=p.seed)
            for j, mask in enumerate(p.subsets.tolist()):
                f = None if p.forces is None else p.forces[j][lattice.members(mask)]
                write_row(db, atoms, mask, p.method, p.basis, energy=float(p.energy[j]),
                          forces=f, spin=int(p.spin[j]), s2=float(p.s2[j]))
                count += 1
        return count
    from ase.io import write

    frames = []
    for p in parents:
        for r, spin, s2 in zip(p.records(), p.spin.tolist(), p.s2.tolist()):
            at = Atoms(numbers=r.species, positions=r.positions)
            at.calc = SinglePointCalculator(at, energy=r.energy, **(
                {"forces": r.forces} if r.forces is not None else {}))
            at.info.update(cluster=p.cluster, subset=r.subset, n_parent=p.n, regime=p.regime,
                           split=p.split, method=p.method, basis=p.basis, spin=spin, s2=s2)
            frames.append(at)
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.part")
    try:  # whole or not at all (a full disk leaves no torn file)
        write(str(tmp), frames, format=export_format(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(frames)
