"""Label every (sub)cluster of a set of parents in parallel, resumably, into an ase.db.

The driver (this process) computes which tasks ``(cluster, subset, method, basis)`` have no
row yet, fans them out to ``dask.distributed`` workers (a ``LocalCluster`` with single-thread
worker processes by default, or an existing scheduler), and writes each result the moment it
arrives: killing the run loses at most the tasks in flight, and rerunning does only what is
missing. Failures become ``status="failed"`` rows (never an energy) and are listed at the end;
``retry_failed=True`` labels them again. Several labellers may share one database (SQLite file
or PostgreSQL): each task gets one row, written by whichever finishes it first.

An isolated atom is the same in every cluster: it is computed once per (element, method,
basis) and its row is written for every cluster (every cluster stays complete).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from ase import Atoms

from jbo.data import reference
from jbo.data.clusters import subcluster, subsets as subset_masks
from jbo.data.store import TaskKey, connect, done_tasks, write_row

__all__ = ["Report", "label", "plan", "work"]

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What a labelling run did."""

    written_ok: int = 0
    written_failed: int = 0
    skipped: int = 0  # tasks that already had a row
    taken: int = 0  # tasks labelled meanwhile by another labeller of the same database
    failures: list[tuple[TaskKey, str]] = field(default_factory=list)
    wall: float = 0.0  # s

    def __str__(self) -> str:
        s = (f"labelled {self.written_ok} ok, {self.written_failed} failed, "
             f"skipped {self.skipped} already done, in {self.wall:.1f} s")
        if self.taken:
            s += f"; {self.taken} labelled meanwhile by another labeller (kept theirs)"
        for k, why in self.failures[:20]:
            s += f"\n  FAILED {k.cluster} subset={k.subset}: {why}"
        if len(self.failures) > 20:
            s += f"\n  ... and {len(self.failures) - 20} more failures"
        return s


def work(symbols: Sequence[str], positions: np.ndarray, method: str, basis: str,
         forces: bool, settings: reference.Settings | None = None) -> dict:
    """Label one structure (runs on a worker). Never raises: failures come back as a dict."""
    try:
        from pyscf import lib

        lib.num_threads(1)
    except Exception:  # pragma: no cover
        pass
    t0 = time.perf_counter()
    try:
        lab = reference.compute(Atoms(symbols=list(symbols), positions=positions), method,
                                basis, forces=forces, settings=settings)
    except reference.LabelError as exc:
        return dict(ok=False, reason=exc.reason, wall=time.perf_counter() - t0)
    except Exception as exc:  # a solver crash is a failed label, not a dead run
        return dict(ok=False, reason=f"{type(exc).__name__}: {exc}",
                    wall=time.perf_counter() - t0)
    return dict(ok=True, energy=lab.energy, forces=lab.forces, spin=lab.spin, s2=lab.s2,
                note=lab.note, wall=lab.wall)


@dataclass(frozen=True)
class Job:
    """One computation; ``tasks`` are the (parent index, mask) rows it fills."""

    symbols: tuple[str, ...]
    positions: np.ndarray
    tasks: tuple[tuple[int, int], ...]


def plan(parents: Sequence[Atoms], done: dict, method: str, basis: str, which: str = "all",
         retry_failed: bool = False) -> tuple[list[Job], int]:
    """Jobs for the tasks without a row (or with a failed row, if ``retry_failed``).

    Returns ``(jobs, n_skipped)``. Single-atom subsets of the same element share one job.
    """
    ids = [p.info["cluster"] for p in parents]
    if len(set(ids)) != len(ids):
        raise ValueError("parent cluster ids are not unique")
    jobs: list[Job] = []
    atom_tasks: dict[str, list[tuple[int, int]]] = {}
    skipped = 0
    for i, p in enumerate(parents):
        for mask in subset_masks(len(p), which):
            prev = done.get(TaskKey(ids[i], mask, method, basis))
            if prev is not None and (prev[1] == "ok" or prev[1] == "failed" and not retry_failed):
                skipped += 1
                continue
            if mask & (mask - 1) == 0:  # one atom
                atom_tasks.setdefault(p[mask.bit_length() - 1].symbol, []).append((i, mask))
                continue
            sub = subcluster(p, mask)
            jobs.append(Job(tuple(sub.get_chemical_symbols()), sub.get_positions(),
                            ((i, mask),)))
    for sym, tasks in atom_tasks.items():  # first: cheap, and completes many rows at once
        jobs.insert(0, Job((sym,), np.zeros((1, 3)), tuple(tasks)))
    return jobs, skipped


def _serial(jobs: Iterable[Job], fn: Callable) -> Iterator[tuple[Job, dict]]:
    for job in jobs:
        yield job, fn(job)


def _dask(jobs: list[Job], fn_args: Callable, scheduler: str | None, n_workers: int
          ) -> Iterator[tuple[Job, dict]]:
    from distributed import Client, LocalCluster, as_completed

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the worker processes
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futs = {}
        for job in jobs:
            fut = client.submit(work, *fn_args(job), pure=False)
            futs[fut] = job
        for fut in as_completed(futs):
            job = futs.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # e.g. a worker killed by the OS while on this job
                res = dict(ok=False, reason=f"worker error {type(exc).__name__}: {exc}")
            yield job, res
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def label(db_url: str, parents: Sequence[Atoms], method: str = "fci", basis: str = "sto-3g",
          *, subsets: str = "all", forces: bool = True, scheduler: str | None = None,
          n_workers: int = 2, retry_failed: bool = False, progress: bool = True,
          settings: reference.Settings | None = None) -> Report:
    """Label ``parents`` (and their subclusters if ``subsets="all"``) into ``db_url``.

    ``n_workers=0`` (and no scheduler) runs in this process, without dask. Energies in eV.
    """
    t0 = time.perf_counter()
    method, basis = reference.normalize_method(method), reference.check_basis(basis)
    db = connect(db_url)
    done = done_tasks(db, method, basis)
    jobs, skipped = plan(parents, done, method, basis, subsets, retry_failed)
    report = Report(skipped=skipped)
    n_tasks = sum(len(j.tasks) for j in jobs)
    args = lambda j: (j.symbols, j.positions, method, basis, forces, settings)  # noqa: E731
    if scheduler or n_workers > 0:
        stream = _dask(jobs, args, scheduler, n_workers)
    else:
        stream = _serial(jobs, lambda j: work(*args(j)))
    bar = None
    if progress and n_tasks:
        from tqdm import tqdm

        bar = tqdm(total=n_tasks, unit="label", desc=f"{method}/{basis}", smoothing=0.05)
    try:
        for job, res in stream:
            for i, mask in job.tasks:
                p = parents[i]
                if res["ok"]:
                    f = res["forces"]
                    if f is not None and len(job.tasks) > 1:
                        f = np.zeros((1, 3))  # a lone atom: no force
                    if write_row(db, p, mask, method, basis, energy=res["energy"], forces=f,
                                 spin=res["spin"], s2=res["s2"], note=res["note"],
                                 done=done) is None:
                        report.taken += 1
                        continue
                    report.written_ok += 1
                else:
                    if write_row(db, p, mask, method, basis, energy=None, reason=res["reason"],
                                 done=done) is None:
                        report.taken += 1
                        continue
                    report.written_failed += 1
                    report.failures.append((TaskKey(p.info["cluster"], mask, method, basis),
                                            res["reason"]))
            if bar is not None:
                bar.update(len(job.tasks))
    finally:
        if bar is not None:
            bar.close()
    report.wall = time.perf_counter() - t0
    return report
