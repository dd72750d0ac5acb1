"""The reference database: ``ase.db`` rows in the schema of docs/CONTRACTS.md.

A labelling task is identified by ``(cluster, subset, method, basis)``. Each task has at most
one row, with ``status`` ``ok`` (energy, forces, spin) or ``failed`` (``reason``, no energy).
Each row is committed on its own, so a killed run keeps every row it wrote, and a rerun skips
them. The task is the store's unique key: :func:`write_row` looks the task up and writes inside
one transaction holding the database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
advisory lock), so two labellers of one database never write a task twice; a task already
labelled is left alone, a failed (or energy-less) row is overwritten in place (same id).

Works with any ``ase.db`` URL: a SQLite file (the default) or ``postgresql://...`` (needs the
``postgres`` extra: ``pip install 'jbo[postgres]'``). :func:`connect` is the one place every
reader and writer opens a database, and refuses a bad one with one clear :class:`StoreError`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from jbo.data.clusters import subcluster

__all__ = ["TaskKey", "StoreError", "connect", "done_tasks", "write_row", "task_key",
           "is_labelled", "compact"]

LOCK_TIMEOUT_S = 120.0  # give up on a database locked by another writer after this long
_PG_LOCK = 7_261_011  # PostgreSQL advisory lock key serialising jbo's writers
_SQLITE_MAGIC = b"SQLite format 3\x00"


class TaskKey(NamedTuple):
    cluster: str
    subset: int
    method: str
    basis: str


class StoreError(RuntimeError):
    """Database problems: locked by another writer, duplicate rows, inconsistent parents."""


def connect(url: str, create: bool = True):
    """Open an ase.db: a SQLite file path or a ``postgresql://`` URL, checked before use.

    ``create``: a missing file is created, and the file must be writable (labelling);
    otherwise (readers) a missing database is an error. Raises :class:`StoreError` naming the
    problem for a directory, a file that is not SQLite, a truncated or corrupted file, a
    read-only file (when writing), or a server that cannot be reached.
    """
    import ase.db

    url = str(url)
    if "://" in url:
        try:
            db = ase.db.connect(url, use_lock_file=False)
            _open(db, create)  # reach the server and create the schema now, not mid-run
        except ImportError as exc:
            raise StoreError(f"{url.split('://')[0]} databases need the postgres extra: "
                             f"pip install 'jbo[postgres]' ({exc})") from exc
        except Exception as exc:  # psycopg2.OperationalError and friends
            if isinstance(exc, StoreError):
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot open database {_redact(url)}: {msg}; check the URL, "
                             "that the server runs, and the user's rights") from exc
        return db
    if os.path.isdir(url):
        raise StoreError(f"{url} is a directory, not a database file; pass the path of an "
                         "ase.db file (e.g. data/work/labels.db) or a compact .npz dataset")
    if os.path.exists(url):
        _check_sqlite_file(url, write=create)
        if not create:
            _check_readable_store(url)
    elif not create:
        raise StoreError(f"dataset {url} does not exist; label one with `jbo data label ...` "
                         "or pass the shipped data/h_clusters.npz")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
    db = ase.db.connect(url, type="db", use_lock_file=False)  # SQLite, whatever the suffix
    try:
        _retry_locked(lambda: _open(db, create), what="open")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{url} is not a usable SQLite database ({exc}); restore it from a "
                         "copy or pass another --db") from exc
    return db


def _open(db, create: bool) -> None:
    """Create ase's tables (a new database) under the write lock, so two labellers starting
    together do not both create them; a reader takes no lock but reads one row."""
    with _transaction(db, lock=create) as db:
        if not create:
            cur = db.connection.cursor()
            cur.execute("SELECT COUNT(*) FROM systems WHERE id = 1")
            cur.fetchone()


def _redact(url: str) -> str:
    head, sep, tail = url.partition("://")
    return head + sep + (tail.split("@", 1)[1] if "@" in tail else tail)


def _check_sqlite_file(path: str, write: bool) -> None:
    """Refuse a file that is not a complete SQLite database, or not writable when writing."""
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read {path} (permission denied); fix its permissions")
    size = os.path.getsize(path)
    if size:
        with open(path, "rb") as f:
            head = f.read(100)
        if not head.startswith(_SQLITE_MAGIC):
            raise StoreError(f"{path} is not a SQLite database (it starts with {head[:16]!r}); "
                             "pass an ase.db file, or a new path to create one")
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        n_pages = int.from_bytes(head[28:32], "big")
        valid = head[24:28] == head[92:96]  # the header's page count is trustworthy
        if len(head) < 100 or (valid and size < page * n_pages):
            raise StoreError(f"{path} is truncated ({size} of {page * n_pages} bytes) or "
                             "corrupted; restore it from a copy")
    if write and not (os.access(path, os.W_OK)
                      and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)):
        raise StoreError(f"{path} is read-only (the file or its folder), but labelling writes "
                         "to it; fix the permissions or pass a writable --db")


def _check_readable_store(path: str) -> None:
    """A reader opens only an existing ase.db: refuse an empty file or a SQLite database
    without ase's tables *before* ase opens it (ase would create its schema in it)."""
    if os.path.getsize(path) == 0:
        raise StoreError(f"{path} is empty (0 bytes), not a database; pass an ase.db file "
                         "written by `jbo data label` or a compact .npz dataset")
    uri = "file:" + os.path.abspath(path).replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_S)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable SQLite database ({exc}); restore it from a "
                         "copy or pass another --db") from exc
    if "systems" not in tables:
        raise StoreError(f"{path} is a SQLite database but not an ase.db (no 'systems' table; "
                         f"it has {sorted(tables) or 'no tables'}); pass the labelling store")


@contextmanager
def _transaction(db, lock: bool = True):
    """One transaction on ``db``'s own connection; with ``lock``, holding jbo's write lock
    (SQLite: the database's RESERVED lock via ``BEGIN IMMEDIATE``; PostgreSQL: an advisory
    transaction lock) from before the first read to the commit."""
    con = db._connect()
    raw = getattr(con, "con", con)  # ase's PostgreSQL wrapper keeps psycopg2's connection
    postgres = raw is not con
    try:
        if lock:
            if postgres:
                con.cursor().execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
            else:
                con.execute("BEGIN IMMEDIATE")
        db.connection, db.change_count = con, 0
        db._initialize(con)
        yield db
        con.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        db.connection = None
        con.close()


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


def is_labelled(row) -> bool:
    """``status == "ok"`` *and* a finite energy: a row that is done. An ``ok`` row without
    energy (written by another tool, or damaged) counts as not done and is labelled again."""
    energy = row.get("energy")
    return row.get("status") == "ok" and energy is not None and bool(np.isfinite(energy))


def _status(row) -> str:
    """``ok`` / ``failed`` / ``unlabelled`` (an ``ok`` row without a finite energy)."""
    if row.get("status") == "ok":
        return "ok" if is_labelled(row) else "unlabelled"
    return str(row.get("status"))


_COLUMNS = ["id", "energy", "key_value_pairs"]


def done_tasks(db, method: str | None = None, basis: str | None = None
               ) -> dict[TaskKey, tuple[int, str]]:
    """``{task: (row id, status)}`` for every row (optionally of one method/basis); status is
    ``ok``, ``failed`` or ``unlabelled`` (:func:`is_labelled` false for an ``ok`` row).

    Raises :class:`StoreError` if a task has more than one row (it never should).
    """
    sel = {k: v for k, v in (("method", method), ("basis", basis)) if v is not None}
    out: dict[TaskKey, tuple[int, str]] = {}
    rows = _retry_locked(lambda: list(db.select(include_data=False, columns=_COLUMNS, **sel)),
                         what="read")
    for row in rows:
        if "cluster" not in row:
            continue  # not one of ours
        k = task_key(row)
        if k in out:
            raise StoreError(f"duplicate rows {out[k][0]} and {row.id} for task {k}")
        out[k] = (row.id, _status(row))
    return out


def _kvp(parent: Atoms, mask: int, method: str, basis: str) -> dict:
    info = parent.info
    return dict(cluster=str(info["cluster"]), subset=int(mask), n_parent=len(parent),
                regime=str(info.get("regime", "")), split=str(info.get("split", "")),
                method=method, basis=basis, seed=int(info.get("seed", -1)))


def write_row(db, parent: Atoms, mask: int, method: str, basis: str, *, energy: float | None,
              forces: np.ndarray | None = None, spin: int | None = None,
              s2: float | None = None, wall: float | None = None, note: str = "",
              reason: str = "", done: dict | None = None) -> int | None:
    """Write the row of task ``(parent, mask, method, basis)``; energy in eV, forces eV/Å.

    ``energy=None`` writes a failure (``status="failed"``, ``reason``). The task is looked up
    and written in one locked transaction: a labelled task is never written again (whoever
    labelled it first, e.g. a concurrent labeller, wins and None is returned), a failed or
    energy-less row is overwritten in place. ``done`` (the driver's :func:`done_tasks` map) is
    updated. Returns the row id, or None when nothing was written.
    """
    atoms = subcluster(parent, mask)
    atoms.info = {}
    kvp = _kvp(parent, mask, method, basis)
    key = TaskKey(kvp["cluster"], mask, method, basis)
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

    def locked_write() -> tuple[int, str, bool]:
        with _transaction(db):
            rows = list(db.select(include_data=False, columns=_COLUMNS, **key._asdict()))
            if len(rows) > 1:
                raise StoreError(f"duplicate rows {[r.id for r in rows]} for task {key}")
            if rows and is_labelled(rows[0]):
                return rows[0].id, "ok", False
            prev = rows[0].id if rows else None
            new = db.write(atoms, key_value_pairs=kvp, id=prev)
            return (new if prev is None else prev), kvp["status"], True

    row_id, status, written = _retry_locked(locked_write)
    if done is not None:
        done[key] = (row_id, status)
    return row_id if written else None


# ase's secondary indices: they speed up key queries on large databases, and are a third of
# the size of a small one (a shipped dataset). Dropping them changes no row.
_SECONDARY_INDICES = ("key_index", "text_index", "number_index", "ctime_index",
                      "username_index", "calculator_index", "species_index")


def compact(path: str, drop_indices: bool = False) -> tuple[int, int]:
    """VACUUM a SQLite ase.db (optionally dropping ase's secondary indices); sizes in bytes."""
    if "://" in path:
        raise ValueError("compact works on SQLite files only")
    connect(path, create=False)
    _check_sqlite_file(path, write=True)
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
