"""Cells on disk: one JSON file per cell, keyed by a hash of everything that decides it.

:class:`CellCache` stores a cell's result as ``FOLDER/KEY.json`` (atomic writes) so that an
interrupted study continues where it stopped and a regeneration reads every cell back instead
of training it; :func:`fingerprint` is the hash in every key (and must never change: the
committed cells under ``results/*/cells/`` are found by it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["CellCache", "fingerprint", "file_digest", "write_json", "spread"]


class CellCache:
    """One JSON file per cell under ``folder``; writes are atomic (tmp file + rename).

    ``fallbacks``: read-only caches of other studies, searched after ``folder``; ``redo``:
    every lookup misses (the study recomputes its cells)."""

    def __init__(self, folder: str | Path, redo: bool = False,
                 fallbacks: Sequence[str | Path] = ()):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.redo = redo
        self.fallbacks = [Path(f) for f in fallbacks]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.redo:
            return None
        for folder in [self.folder, *self.fallbacks]:
            p = folder / f"{key}.json"
            if p.exists():
                try:
                    return json.loads(p.read_text())
                except json.JSONDecodeError:  # a torn write from an older run: recompute
                    continue
        return None

    def keys(self) -> list[str]:
        """The keys of the cells stored in this cache's own folder."""
        return sorted(p.stem for p in self.folder.glob("*.json"))

    def put(self, key: str, value: dict) -> None:
        write_json(self.path(key), value)


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically (numpy arrays and scalars as lists/numbers)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-able: {type(x)}")


def fingerprint(*parts: Any) -> str:
    """SHA-256 of ``parts`` as sorted JSON (the hash in every cell key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(db: str) -> str:
    """Content hash of a dataset file (its URL for a database server)."""
    if "://" in db:
        return db
    return hashlib.sha256(Path(db).read_bytes()).hexdigest()


def spread(records: list, k: int | None) -> list:
    """At most ``k`` of ``records`` (all for None), spread evenly over the list."""
    if k is None or len(records) <= k:
        return records
    idx = np.unique(np.linspace(0, len(records) - 1, k).round().astype(int))
    return [records[i] for i in idx]
