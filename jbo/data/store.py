"""The reference database: ``ase.db`` rows in the schema of docs/CONTRACTS.md.

A labelling task is identified by ``(cluster, subset, method, basis)``. Each task has at most
one row, with ``status`` ``ok`` (energy, forces, spin) or ``failed`` (``reason``, no energy).
Only the driver process writes (one SQLite writer); each row is committed on its own, so a
killed run keeps every row it wrote, and a rerun skips them (``unique`` guard in
:func:`write_row`). Retrying a failure overwrites that row in place (same id).

Works with any ``ase.db`` URL: a SQLite file (the default) or ``postgresql://...``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from typing import Iterable, Iterator, NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from jbo.data.clusters import subcluster

__all__ = ["TaskKey", "StoreError", "connect", "done_tasks", "write_row", "task_key",
           "cluster_rows", "iter_parents", "counts", "compact"]

LOCK_TIMEOUT_S = 120.0  # give up on a database locked by another writer after this long


class TaskKey(NamedTuple):
    cluster: str
    subset: int
    method: str
    basis: str


class StoreError(RuntimeError):
    """Database problems: locked by another writer, duplicate rows, inconsistent parents."""


def connect(url: str, create: bool = True):
    """Open an ase.db: a file path or a DB URL; a missing file is created only if ``create``."""
    import ase.db

    if "://" not in url:
        if not create and not os.path.exists(url):
            raise ValueError(f"no such database: {url}")
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
    return ase.db.connect(url, use_lock_file=False)


def _retry_locked(fn, *, timeout: float | None = None, what: str = "write"):
    """Run ``fn()``, retrying while SQLite says the database is locked (``LOCK_TIMEOUT_S``)."""
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    t0 = time.monotonic()
    delay = 0.5
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() - t0 > timeout:
                raise StoreError(
                    f"database is locked by another writer: could not {what} for "
                    f"{timeout:.0f} s. Is another `python -m jbo.data label` writing to it? "
                    "Only one labelling driver may write to a SQLite file at a time.") from exc
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


def task_key(row) -> TaskKey:
    """The task a row belongs to."""
    return TaskKey(row.cluster, int(row.subset), row.method, row.basis)


def done_tasks(db, method: str | None = None, basis: str | None = None
               ) -> dict[TaskKey, tuple[int, str]]:
    """``{task: (row id, status)}`` for every row (optionally of one method/basis).

    Raises :class:`StoreError` if a task has more than one row (it never should).
    """
    sel = {k: v for k, v in (("method", method), ("basis", basis)) if v is not None}
    out: dict[TaskKey, tuple[int, str]] = {}
    rows = _retry_locked(lambda: list(db.select(include_data=False,
                                                columns=["id", "key_value_pairs"], **sel)),
                         what="read")
    for row in rows:
        if "cluster" not in row:
            continue  # not one of ours
        k = task_key(row)
        if k in out:
            raise StoreError(f"duplicate rows {out[k][0]} and {row.id} for task {k}")
        out[k] = (row.id, row.status)
    return out


def _kvp(parent: Atoms, mask: int, method: str, basis: str) -> dict:
    info = parent.info
    return dict(cluster=str(info["cluster"]), subset=int(mask), n_parent=len(parent),
                regime=str(info.get("regime", "")), split=str(info.get("split", "")),
                method=method, basis=basis, seed=int(info.get("seed", -1)))


def write_row(db, parent: Atoms, mask: int, method: str, basis: str, *, energy: float | None,
              forces: np.ndarray | None = None, spin: int | None = None,
              s2: float | None = None, wall: float | None = None, note: str = "",
              reason: str = "", done: dict | None = None) -> int:
    """Write the row of task ``(parent, mask, method, basis)``; energy in eV, forces eV/Å.

    ``energy=None`` writes a failure (``status="failed"``, ``reason``). ``done`` is the
    driver's :func:`done_tasks` map: an ``ok`` row is never written twice, and a ``failed``
    row is overwritten in place. Returns the row id.
    """
    atoms = subcluster(parent, mask)
    atoms.info = {}
    kvp = _kvp(parent, mask, method, basis)
    key = TaskKey(kvp["cluster"], mask, method, basis)
    if done is None:
        done = {}
        rows = _retry_locked(lambda: list(db.select(include_data=False, **key._asdict())),
                             what="read")
        if rows:
            done[key] = (rows[0].id, rows[0].status)
    prev = done.get(key)
    if prev is not None and prev[1] == "ok":
        raise StoreError(f"task {key} already has an ok row (id {prev[0]})")
    if energy is None:
        kvp.update(status="failed", reason=(reason or "unknown failure")[:500])
    else:
        if not np.isfinite(energy):
            raise ValueError(f"refusing to store a non-finite energy for {key}")
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy),
                                           **({"forces": np.asarray(forces)}
                                              if forces is not None else {}))
        kvp.update(status="ok", spin=int(spin if spin is not None else -1))
        if s2 is not None:
            kvp["s2"] = float(s2)
        if note:
            kvp["note"] = note[:200]
    if wall is not None:
        kvp["wall"] = float(wall)
    row_id = _retry_locked(lambda: db.write(atoms, key_value_pairs=kvp,
                                            id=None if prev is None else prev[0]))
    row_id = prev[0] if prev is not None else row_id
    done[key] = (row_id, kvp["status"])
    return row_id


def cluster_rows(db, cluster: str, method: str, basis: str, status: str = "ok") -> list:
    """All rows of one parent cluster for a method/basis (default: the ``ok`` ones)."""
    return list(db.select(cluster=cluster, method=method, basis=basis, status=status))


def iter_parents(db, method: str | None = None, basis: str | None = None,
                 split: str | None = None) -> Iterator[tuple[str, int]]:
    """Distinct ``(cluster, n_parent)`` pairs in the database, sorted by cluster id."""
    sel = {k: v for k, v in (("method", method), ("basis", basis), ("split", split)) if v}
    seen = {(r.cluster, int(r.n_parent)) for r in db.select(include_data=False,
                                                             columns=["id", "key_value_pairs"],
                                                             **sel) if "cluster" in r}
    yield from sorted(seen)


def counts(db, keys: Iterable[str] = ("split", "regime", "n_parent", "method", "basis",
                                      "status")) -> Counter:
    """Row counts grouped by the given key-value keys."""
    keys = tuple(keys)
    return Counter(tuple(r.get(k) for k in keys)
                   for r in db.select(include_data=False, columns=["id", "key_value_pairs"]))


# ase's secondary indices: they speed up key queries on large databases, and are a third of
# the size of a small one (a shipped dataset). Dropping them changes no row.
_SECONDARY_INDICES = ("key_index", "text_index", "number_index", "ctime_index",
                      "username_index", "calculator_index", "species_index")


def compact(path: str, drop_indices: bool = False) -> tuple[int, int]:
    """VACUUM a SQLite ase.db (optionally dropping ase's secondary indices); sizes in bytes."""
    if "://" in path:
        raise ValueError("compact works on SQLite files only")
    before = os.path.getsize(path)
    con = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S)
    try:
        if drop_indices:
            for name in _SECONDARY_INDICES:
                con.execute(f"DROP INDEX IF EXISTS {name}")
            con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    return before, os.path.getsize(path)
