"""The fixed protocol of :class:`jbo.study.Cell`: data and split, test sets, train + decompose.

A fixed cell is one training run (model, dataset makeup, number of training parents, seed,
regularizer, training regimes) of a fixed number of steps without validation. :func:`run_cell`
trains it on the training parents, decomposes the test clusters
(:func:`jbo.analysis.decompose_records`, exhaustive) and returns a JSON-able dict;
:class:`jbo.study.CellCache` stores it under
``results/NAME/cells/KEY.json`` so an interrupted study continues where it stopped (a cell is
skipped when its JSON exists).

Test sets (never trained on):

* ``test``: the held-out H_4..H_8 parents of the training regimes (``split="train"`` parents
  removed by a seeded hash split, :func:`jbo.train.dataset.split_by_cluster`); their reference
  MBE comes from the stored subcluster energies (:func:`jbo.analysis.reference_spectra`).
* ``other_regime``: H_4..H_8 parents of the regimes not trained on (with reference MBE).
* ``heldout``: the ``split="heldout"`` H_9..H_12 clusters (reference totals only).

A cell's ``tests[SET]`` holds ``cluster, n, regime, total, per_order`` of the model
(:meth:`jbo.analysis.Spectra.to_json`) and ``ref_total, ref_per_order`` of the reference;
:func:`spectra` reads them back for :mod:`jbo.analysis`'s metrics.

Devices: with more than one local device, training batches are sharded over
``jax.local_devices()`` (``TrainConfig.shard``) and the test clusters of a decomposition are
split over the same devices (``mesh=``). Energies in eV inside; errors reported in meV/atom.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from jbo import analysis
from jbo.study.cell import Cell
from jbo.study.store import CellCache, file_digest, fingerprint, spread

__all__ = ["Data", "load_data", "choose_parents", "test_sets", "spectra", "cached",
           "train_cell", "run_cell"]


# ---------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """The reference data of a study: records, reference spectra and the parent split."""

    db: str
    records: list            # every ok row (jbo.data.records.Record)
    ref: analysis.Spectra    # reference MBE of every complete split="train" parent
    regimes: list[str]
    train_parents: list[str]  # candidate training parents (hash split), sorted
    test_parents: list[str]   # held-out H_4..H_8 parents, sorted
    heldout: list             # full-cluster Records of split="heldout"
    spec: str = ""            # fingerprint of the data and its split (part of every cell key)

    def regime(self, cluster: str) -> str:
        return self.ref.regimes[self.ref.index[cluster]]


@lru_cache(maxsize=4)
def load_data(db: str, test_fraction: float = 0.25, split_seed: int = 0,
              max_train_atoms: int = 8, sizes: tuple[int, ...] | None = None) -> Data:
    """Read ``db`` once per process and split the training parents into train / test.

    ``sizes``: read only training parents of these sizes (and every heldout cluster); quick
    modes use it to skip most of the database.
    """
    from jbo.data.records import read_records as read_db
    from jbo.train.dataset import split_by_cluster

    if "://" not in db and not Path(db).exists():
        raise FileNotFoundError(f"reference database {db} not found (see data/README.md)")
    if sizes is None:
        records = read_db(db)
    else:
        records = [r for n in sizes for r in read_db(db, split="train", n_parent=n)]
        records += read_db(db, split="heldout")
    ref = analysis.reference_spectra([r for r in records if r.split == "train"])
    parents = [r for r in records if r.split == "train" and r.is_full
               and r.cluster in ref and r.n_atoms <= max_train_atoms]
    pool = [r for r in records if r.cluster in {p.cluster for p in parents}]
    tr, te = split_by_cluster(pool, test_fraction, split_seed)
    heldout = [r for r in records if r.split == "heldout" and r.is_full]
    regimes = sorted({r.regime for r in records})
    spec = fingerprint(file_digest(db), test_fraction, split_seed, max_train_atoms, sizes)
    return Data(db, records, ref, regimes, sorted(tr), sorted(te), heldout, spec)


def full_records(data: Data, clusters: Sequence[str]) -> list:
    want = set(clusters)
    return sorted((r for r in data.records if r.is_full and r.cluster in want),
                  key=lambda r: r.cluster)


def choose_parents(data: Data, regimes: Sequence[str] | None, n_train: int | None,
                   seed: int) -> list[str]:
    """The first ``n_train`` training parents (of ``regimes``) in a seeded order; nested in n."""
    regs = set(regimes or data.regimes)
    pool = [c for c in data.train_parents if data.regime(c) in regs]
    order = np.random.default_rng([seed, 7]).permutation(len(pool))
    picked = [pool[i] for i in order]
    return sorted(picked if n_train is None else picked[:n_train])


def test_sets(data: Data, cell: Cell, max_test: int, which: Sequence[str]) -> dict[str, list]:
    """Full-cluster records of each test set in ``which`` (at most ``max_test`` each)."""
    regs = set(cell.regimes or data.regimes)
    out = {}
    if "test" in which:
        out["test"] = full_records(data, [c for c in data.test_parents
                                          if data.regime(c) in regs])
    if "other_regime" in which:
        others = [c for c in data.ref.clusters if data.regime(c) not in regs]
        out["other_regime"] = full_records(data, sorted(others))
    if "heldout" in which:
        out["heldout"] = sorted(data.heldout, key=lambda r: (r.n_atoms, r.cluster))
    return {k: spread(v, max_test) for k, v in out.items()}


def reference_of(data: Data, records: list) -> analysis.Spectra:
    """The reference of full-cluster ``records``: their spectra where every subcluster is
    stored (:attr:`Data.ref`), else their labelled totals only."""
    if all(r.cluster in data.ref for r in records):
        return data.ref.take([r.cluster for r in records])
    return analysis.Spectra(tuple(r.cluster for r in records), [r.n_atoms for r in records],
                            tuple(r.regime for r in records), [r.energy for r in records])


def spectra(t: dict) -> tuple[analysis.Spectra, analysis.Spectra]:
    """(model, reference) spectra of one test set of a cell (``cell["tests"][SET]``)."""
    return analysis.Spectra.from_json(t), analysis.Spectra.from_json(t, "ref_")


#: a study folder's record of the data its digest-free (legacy-named) cells were computed on
LEGACY = "DATA.json"


def cached(cell: Cell, data: Data, cache: CellCache) -> dict | None:
    """The stored result of ``cell``: under its key, else under its legacy name
    (:meth:`Cell.name`, the keys of cells stored before keys hashed the data) in a cache folder
    whose study folder's ``DATA.json`` says (``"legacy_spec"``) that they were computed on
    this data (:attr:`Data.spec`), and whose stored fields are this cell's."""
    hit = cache.get(cell.key(data.spec))
    if hit is not None or cache.redo:
        return hit
    for folder in [cache.folder, *cache.fallbacks]:
        manifest, path = folder.parent / LEGACY, folder / f"{cell.name()}.json"
        if manifest.exists() and path.exists() \
                and json.loads(manifest.read_text()).get("legacy_spec") == data.spec:
            old = json.loads(path.read_text())
            if Cell.from_json(old["cell"]) == cell:
                return old
    return None


def train_cell(cell: Cell, data: Data):
    """Train ``cell``; returns (the trained :class:`jbo.models.Model`, with the parameters of
    the last step; info dict)."""
    import jax

    from jbo.train.config import parse_makeup
    from jbo.train.dataset import select_makeup
    from jbo.train import RegularizerConfig, TrainConfig, train

    parents = set(choose_parents(data, cell.regimes, cell.n_train, cell.seed))
    recs = [r for r in data.records if r.split == "train" and r.cluster in parents]
    rows = select_makeup(recs, cell.makeup)
    bsz = min(cell.batch_size, len(rows))
    n_batches = math.ceil(len(rows) / bsz)
    epochs = max(1, math.ceil(cell.steps / n_batches))
    reg = RegularizerConfig(lam=cell.lam, order=cell.reg_order, batch_size=4) if cell.lam \
        else RegularizerConfig()
    # A zoo model predicts exactly its composition baseline for an isolated atom, so with
    # isolated atoms in the makeup the baseline is theirs (else isolated-atom rows could not
    # move E^(1)); without them it is the least-squares fit to the training rows.
    atoms = parse_makeup(cell.makeup)[1]
    cfg = TrainConfig(db=data.db, model=cell.model, hypers=cell.hypers(),
                      makeup=cell.makeup, val_fraction=0.0, seed=cell.seed, epochs=epochs,
                      batch_size=bsz, lr=cell.lr, progress=False, tensorboard=False,
                      shard=len(jax.local_devices()) > 1, regularizer=reg,
                      baseline_from_atoms=atoms)
    t0 = time.perf_counter()
    res = train(cfg, records=recs)
    info = dict(n_train_parents=len(parents), n_train_rows=len(rows), epochs=epochs,
                steps=int(res.history[-1]["step"]), train_seconds=time.perf_counter() - t0,
                train_mae=float(res.history[-1]["train_mae"]), devices=len(jax.local_devices()),
                hypers=cell.hypers(), baseline_from_atoms=atoms,
                baseline={str(z): res.model.baseline[z]  # eV per atom
                          for z in sorted({int(z) for r in rows for z in r.species})})
    return res.model.replace(params=res.params), info


def device_mesh():
    """A data mesh over every local device, or None on a single device."""
    import jax

    from jbo.train.sharding import data_mesh

    return data_mesh() if len(jax.local_devices()) > 1 else None


def run_cell(cell: Cell, data: Data, cache: CellCache, max_test: int = 40,
             which: Sequence[str] = ("test",), log=print) -> dict:
    """Train + decompose one cell, or load it from ``cache``."""
    key = cell.key(data.spec)
    hit = cached(cell, data, cache)
    if hit is not None and set(which) <= set(hit["tests"]):
        return hit
    t0 = time.perf_counter()
    model, info = train_cell(cell, data)
    sets = test_sets(data, cell, max_test, which)
    # one engine call for every set with a reference MBE (one compilation), totals for the rest
    with_ref = [k for k in sets if k != "heldout"]
    joint = analysis.decompose_records(model, [r for k in with_ref for r in sets[k]],
                                       mesh=device_mesh())
    got, start = {}, 0
    for name in with_ref:
        got[name] = joint.rows(np.arange(start, start + len(sets[name])))
        start += len(sets[name])
    if "heldout" in sets:
        got["heldout"] = analysis.decompose_records(model, sets["heldout"], orders=False)
    tests = {}
    for name, recs in sets.items():
        ref = reference_of(data, recs).to_json()
        tests[name] = {**got[name].to_json(), "ref_total": ref["total"],
                       "ref_per_order": ref["per_order"]}
    out = dict(cell=cell.to_json(), key=key, **info, tests=tests,
               seconds=time.perf_counter() - t0)
    cache.put(key, out)
    log(f"[{key}] {out['seconds']:.0f} s, train MAE {info['train_mae']:.1f} meV/atom, "
        + ", ".join(f"{k} MAE {analysis.total_mae(*spectra(v)):.1f}"
                    for k, v in tests.items() if v["n"]))
    return out
