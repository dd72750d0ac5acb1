"""Potentials evaluated on the host (ASE calculators, torch models): subset energies for the engine.

A :class:`HostPotential` turns the subsets the engine would evaluate on device into real
subclusters (the other atoms removed, in vacuum), evaluates them with a host-side
:data:`Evaluator` and hands back their energies (and gradients) to the same Möbius assembly
(:func:`jbo.assembly.assemble_lattice` / :func:`~jbo.assembly.assemble_family`). Around the
evaluator it adds:

* a cache keyed by subcluster content (atomic numbers + positions, bit for bit), in memory and
  optionally in an SQLite file, so nothing is computed twice and a killed decomposition resumes;
* a process pool (``workers=n``) for slow calculators, fed chunks of ``batch`` subclusters;
* a tqdm progress bar; a failing subcluster is reported by its bitmask and atom indices, or (with
  ``on_error="nan"``) recorded in ``failures`` with a NaN energy, which propagates to every term
  containing it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from jbo import geometry

__all__ = ["HostPotential", "SubclusterError", "Evaluator"]

#: ``(items, forces) -> [(energy eV, dE/dpositions [k, 3] eV/Å or None), ...]`` for subclusters
#: ``items = [(numbers[k], positions[k, 3] Å), ...]``; an entry may instead be the exception that
#: item raised (one failure then costs no other item). Picklable when ``workers > 1``.
Evaluator = Callable[[Sequence[tuple[np.ndarray, np.ndarray]], bool], list]


class SubclusterError(RuntimeError):
    """A host potential failed on one subcluster (named by cluster, bitmask and atoms)."""


def _run_chunk(evaluator: Evaluator, items, forces: bool) -> list[tuple]:
    """Evaluate a chunk; if it fails as a whole, item by item to find the culprit(s).

    Returns ``[(energy, grad or None, error message or None), ...]``.
    """
    try:
        out = evaluator(items, forces)
    except Exception as exc:  # noqa: BLE001 - re-run singly to name the failing subcluster
        if len(items) == 1:
            return [(np.nan, None, _describe(exc))]
        return [r for item in items for r in _run_chunk(evaluator, [item], forces)]
    return [(np.nan, None, _describe(r)) if isinstance(r, BaseException) else
            (float(r[0]), None if r[1] is None else np.asarray(r[1], np.float64), None)
            for r in out]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_WORKER: dict = {}


def _worker_init(evaluator: Evaluator) -> None:
    _WORKER["evaluator"] = evaluator


def _worker_chunk(items, forces: bool) -> list[tuple]:
    return _run_chunk(_WORKER["evaluator"], items, forces)


class _DiskCache:
    """Subcluster results in an SQLite file: key -> (energy, gradient bytes or NULL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"cache={str(path)!r} is a directory; give a file path for the "
                             f"SQLite cache, e.g. {path}/subclusters.sqlite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS results (key BLOB PRIMARY KEY, energy REAL, grad BLOB)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"cannot use {str(path)!r} as the subcluster cache ({exc}): give a "
                             "writable SQLite file path") from None

    def get(self, keys: list[bytes]) -> dict[bytes, tuple[float, np.ndarray | None]]:
        found = {}
        for at in range(0, len(keys), 500):
            part = keys[at : at + 500]
            q = f"SELECT key, energy, grad FROM results WHERE key IN ({','.join('?' * len(part))})"
            for key, e, g in self.db.execute(q, part):
                found[bytes(key)] = (e, None if g is None else np.frombuffer(g).reshape(-1, 3))
        return found

    def put(self, rows: list[tuple[bytes, float, np.ndarray | None]]) -> None:
        with self.db:  # one transaction per chunk: a kill loses at most the chunk in flight
            self.db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                [(k, e, None if g is None else np.ascontiguousarray(g, np.float64).tobytes())
                 for k, e, g in rows],
            )


class HostPotential:
    """An energy function evaluated subcluster by subcluster on the host (not traceable by JAX).

    ``jbo.decompose.body_orders`` accepts it in all three modes. Build one with
    :func:`jbo.adapters.from_ase` or :func:`jbo.adapters.from_torch`.

    Args:
      evaluator: see :data:`Evaluator`.
      cutoff: interaction cutoff (Å) of the underlying model, or None (then ``is_local`` False
        and connected mode is refused).
      tag: names the model in the cache keys (two models must not share a tag in one cache file).
      cache: True (in memory), False (no cache), or an SQLite file path (memory + disk: resumable).
      workers: processes evaluating chunks in parallel (1: in this process).
      batch: subclusters per evaluator call (a chunk; also the unit of pool work and disk writes).
      progress: tqdm bar (None: only on a terminal).
      on_error: ``"raise"`` (SubclusterError naming the subset) or ``"nan"`` (NaN energy, the
        subset recorded in ``failures``, a warning; every term containing it is NaN).
      sort_by_size: evaluate pending subclusters grouped by size (batched evaluators want this).
    """

    def __init__(self, evaluator: Evaluator, *, cutoff: float | None, tag: str,
                 cache: bool | str | Path = True, workers: int = 1, batch: int = 32,
                 progress: bool | None = None, on_error: str = "raise",
                 sort_by_size: bool = False):
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}")
        if int(workers) < 1 or int(batch) < 1:
            raise ValueError(f"workers and batch must be >= 1, got {workers} and {batch}")
        self.evaluator = evaluator
        # the metadata of a jbo.potential.Potential (a host potential is not traceable)
        self.cutoff = geometry.check_cutoff(cutoff, "cutoff")
        self.is_local = cutoff is not None
        self.receptive_field = self.cutoff
        self.species: tuple[int, ...] | None = None  # any element the model accepts
        self.tag = tag
        self.workers, self.batch = int(workers), int(batch)
        self.progress, self.on_error, self.sort_by_size = progress, on_error, sort_by_size
        self._memory: dict[bytes, tuple[float, np.ndarray | None]] | None = {} if cache else None
        self._disk = _DiskCache(cache) if isinstance(cache, (str, Path)) else None
        self._pool: ProcessPoolExecutor | None = None
        self.failures: list[dict] = []
        self.n_evaluated = 0  # subclusters computed (not served from a cache) so far

    def __repr__(self) -> str:
        return f"HostPotential({self.tag}, cutoff={self.cutoff}, workers={self.workers})"

    def validate(self, positions, species, mask) -> None:
        """:func:`jbo.geometry.validate` (the model itself reports elements it cannot treat)."""
        geometry.validate(positions, species, mask, known_species=self.species)

    # ------------------------------------------------------------------ engine entry points

    def lattice_energies(self, pos, spec, amask, forces: bool):
        """E(S) ``[B, 2^N]`` of every subset (and ∂E/∂x ``[B, 2^N, N, 3]``) by bitmask."""
        n_clusters, n = amask.shape
        bits = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1  # [2^N, N]
        members = bits[None].astype(bool) & np.asarray(amask, bool)[:, None, :]
        cluster = np.repeat(np.arange(n_clusters), 1 << n)
        e, g = self.subset_energies(pos, spec, members.reshape(-1, n), forces, cluster)
        shape = (n_clusters, 1 << n)
        return e.reshape(shape), None if g is None else g.reshape(shape + (n, 3))

    def family_energies(self, pos, spec, amask, plan, forces: bool):
        """E(T) ``[M]`` of a plan's subsets, ∂E/∂x ``[M, K, 3]`` (plan order), totals ``[B]``"""
        n_clusters, n = amask.shape
        idx = np.asarray(plan.idx)
        cluster = np.concatenate([np.asarray(plan.cluster), np.arange(n_clusters)])
        local_idx = np.where(idx >= 0, idx - n * cluster[: len(idx), None], -1)
        local = np.zeros((len(cluster), n), bool)
        r, c = np.nonzero(local_idx >= 0)
        local[r, local_idx[r, c]] = True
        local[len(idx):] = True  # the whole clusters, for the totals
        local &= np.asarray(amask, bool)[cluster]
        e, g = self.subset_energies(pos, spec, local, forces, cluster)
        grads = None
        if forces:
            safe = np.maximum(local_idx, 0)[..., None]
            grads = np.take_along_axis(g[: len(idx)], safe, axis=1)
        return e[: len(idx)], grads, e[len(idx):]

    # ------------------------------------------------------------------ evaluation

    def subset_energies(self, pos, spec, members, forces: bool, cluster):
        """Energies ``[M]`` (eV) and ∂E/∂x ``[M, N, 3]`` of subclusters ``members[M, N]`` bool.

        ``cluster[M]`` says which of ``pos[B, N, 3]`` / ``spec[B, N]`` each row belongs to.
        Empty subsets have E = 0.
        """
        pos = np.asarray(pos, np.float64)
        spec = np.asarray(spec)
        members = np.asarray(members, bool)
        m, n = members.shape
        energies = np.zeros(m)
        grads = np.zeros((m, n, 3)) if forces else None
        sizes = members.sum(1)
        rows = np.flatnonzero(sizes > 0)
        atoms = [np.flatnonzero(members[r]) for r in rows]
        items = [(spec[cluster[r]][a], pos[cluster[r]][a]) for r, a in zip(rows, atoms)]
        keys = [self._key(z, x) for z, x in items]
        results = self._lookup(keys, forces)
        pending = {}
        for j, key in enumerate(keys):
            if key not in results:
                pending.setdefault(key, j)
        order = sorted(pending.values(), key=lambda j: len(atoms[j])) if self.sort_by_size \
            else list(pending.values())
        for i, e, g, err in self._compute([items[j] for j in order], [keys[j] for j in order],
                                          forces):
            j = order[i]
            results[keys[j]] = (e, g)
            if err is not None:
                self._fail(cluster[rows[j]], atoms[j], err)
        for j, r in enumerate(rows):
            e, g = results[keys[j]]
            energies[r] = e
            if forces:
                grads[r, atoms[j]] = np.nan if g is None else g
        return energies, grads

    def _compute(self, items, keys: list[bytes], forces: bool):
        """Yield ``(position in items, energy, grad, error)``, storing results as chunks finish."""
        if not items:
            return
        chunks = [list(range(at, min(at + self.batch, len(items))))
                  for at in range(0, len(items), self.batch)]
        name = self.tag.split("{")[0].split(":")[0]
        bar = tqdm(total=len(items), desc=f"subclusters ({name})", unit="sub",
                   disable=(not self.progress) if self.progress is not None else None,
                   leave=False)
        if self.workers > 1:
            pool = self._get_pool()
            futures = [pool.submit(_worker_chunk, [items[i] for i in c], forces) for c in chunks]
            done = (f.result() for f in futures)
        else:
            done = (_run_chunk(self.evaluator, [items[i] for i in c], forces) for c in chunks)
        try:
            for c, out in zip(chunks, done):
                self._store([keys[i] for i in c], out)
                self.n_evaluated += len(c)
                bar.update(len(c))
                yield from ((i, *r) for i, r in zip(c, out))
        finally:
            bar.close()

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:  # spawn: JAX in this process is multithreaded, fork is unsafe
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_worker_init,
                                             initargs=(self.evaluator,))
        return self._pool

    def start_workers(self) -> None:
        """Start all worker processes now (else on first use; each imports jbo, ~1-2 s)."""
        if self.workers > 1:
            list(self._get_pool().map(time.sleep, [0.5] * self.workers))

    def close(self) -> None:
        """Shut the worker pool down (it is otherwise kept for the next decomposition)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def clear_cache(self) -> None:
        """Forget the in-memory cache (the disk cache, if any, is kept)."""
        if self._memory is not None:
            self._memory.clear()

    # ------------------------------------------------------------------ cache and failures

    def _key(self, numbers: np.ndarray, positions: np.ndarray) -> bytes:
        h = hashlib.blake2b(self.tag.encode(), digest_size=16)
        h.update(np.ascontiguousarray(numbers, np.int64).tobytes())
        h.update(np.ascontiguousarray(positions, np.float64).tobytes())
        return h.digest()

    def _lookup(self, keys: list[bytes], forces: bool) -> dict:
        usable = (lambda r: r[1] is not None) if forces else (lambda r: True)
        found = {}
        if self._memory is not None:
            found = {k: self._memory[k] for k in keys if k in self._memory
                     and usable(self._memory[k])}
        if self._disk is not None:
            missing = [k for k in dict.fromkeys(keys) if k not in found]
            disk = {k: r for k, r in self._disk.get(missing).items() if usable(r)}
            found.update(disk)
            if self._memory is not None:
                self._memory.update(disk)
        return found

    def _store(self, keys: list[bytes], out: list[tuple]) -> None:
        rows = [(k, e, g) for k, (e, g, err) in zip(keys, out) if err is None]
        if self._memory is not None:
            self._memory.update((k, (e, g)) for k, e, g in rows)
        if self._disk is not None and rows:
            self._disk.put(rows)

    def _fail(self, cluster: int, atoms: np.ndarray, err: str) -> None:
        mask = sum(1 << int(i) for i in atoms)
        where = (f"subcluster bitmask {mask:#b} = atoms {tuple(int(i) for i in atoms)} of "
                 f"cluster {int(cluster)}")
        if self.on_error == "raise":
            raise SubclusterError(
                f"{self.tag} failed on {where}: {err}; fix the model or pass on_error='nan' "
                "(CLI: --on-error nan) to record NaN for failing subclusters (every term "
                "containing them is then NaN)"
            )
        self.failures.append({"cluster": int(cluster), "bitmask": mask,
                              "atoms": tuple(int(i) for i in atoms), "error": err})
        warnings.warn(f"{self.tag} failed on {where} ({err}): its energy is NaN, and so is "
                      "every interaction term containing it", RuntimeWarning, stacklevel=4)
