"""The data of the converged study, per density regime: training pool, test parents, test sets.

Per regime of ``data/h_clusters.npz`` (``low``, ``high``):

* **complete H_8 parents** (102; every subcluster labelled, so their reference MBE is known):
  a seeded hash split (:func:`jbo.train.dataset.split_by_cluster`, ``test_fraction``) puts
  about a quarter of them in the **test** set; they are never trained on.
* **training parents**: the pool (2000 full H_8 clusters, seeds 10000-13999) and the other
  complete H_8 parents. A cell holds out ``val_fraction`` of them (by parent, hash split with
  ``split_seed``) for validation, and trains on the rows of the rest that its makeup keeps:
  ``full`` = every full H_8 cluster; ``up_to:M`` / ``+atoms`` / ``all`` add the subclusters
  of the complete training parents (only those have them), via
  :func:`jbo.train.dataset.select_makeup`.

Test sets of a cell trained on regime r (all with reference MBE, so errors per order):
``test`` (r's test parents), ``other_regime`` (the other regime's test parents: transfer),
``heldout`` (the complete H_9/H_10 parents of both regimes, ``split="heldout"``).
Energies in eV.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from jbo import analysis
from jbo.study.store import file_digest, fingerprint, spread

__all__ = ["RegimeData", "load_regimes", "training_rows", "test_records", "describe",
           "TEST_SETS"]

TEST_SETS = ("test", "other_regime", "heldout")


@dataclasses.dataclass
class RegimeData:
    """The records and reference spectra of the converged study (see the module docstring)."""

    db: str
    regimes: list[str]
    records: dict[str, list]     # regime -> every H_8 record of split="train"
    ref: analysis.Spectra        # reference MBE of every complete parent (test + heldout)
    complete: dict[str, list[str]]  # regime -> complete H_8 parents (sorted)
    test_parents: dict[str, list[str]]  # regime -> complete H_8 parents never trained on
    heldout: list                # full-cluster records of the complete H_9/H_10 parents
    full: dict[str, object]      # cluster -> its full-cluster record (H_8 train, both regimes)
    spec: str = ""               # fingerprint of the file and the split (in every cell key)

    def train_parents(self, regime: str) -> list[str]:
        """Pool + complete H_8 parents of ``regime`` that are not test parents (sorted)."""
        test = set(self.test_parents[regime])
        return sorted({r.cluster for r in self.records[regime]} - test)


@lru_cache(maxsize=2)
def load_regimes(db: str, test_fraction: float = 0.25, split_seed: int = 0) -> RegimeData:
    """Read ``db`` once per process and split each regime's complete H_8 parents."""
    from jbo.data.records import read_records
    from jbo.train.dataset import split_by_cluster

    if not Path(db).exists():
        raise FileNotFoundError(f"dataset {db} not found (see data/README.md)")
    h8 = read_records(db, split="train", n_parent=8)
    regimes = sorted({r.regime for r in h8})
    records = {g: [r for r in h8 if r.regime == g] for g in regimes}
    held = read_records(db, split="heldout")
    count: dict[str, int] = {}
    for r in h8 + held:
        count[r.cluster] = count.get(r.cluster, 0) + 1
    complete = {g: sorted(c for c in {r.cluster for r in records[g]} if count[c] == 2**8 - 1)
                for g in regimes}
    heldout_complete = {r.cluster for r in held if count[r.cluster] == 2**r.n_parent - 1}
    ref = analysis.reference_spectra(
        [r for r in h8 if r.cluster in {c for g in regimes for c in complete[g]}]
        + [r for r in held if r.cluster in heldout_complete])
    test = {}
    for g in regimes:
        rows = [r for r in records[g] if r.cluster in set(complete[g]) and r.is_full]
        _, te = split_by_cluster(rows, test_fraction, split_seed)
        test[g] = sorted(te)
    heldout = sorted((r for r in held if r.is_full and r.cluster in heldout_complete),
                     key=lambda r: (r.n_atoms, r.regime, r.cluster))
    full = {r.cluster: r for r in h8 if r.is_full}
    spec = fingerprint(file_digest(db), test_fraction, split_seed)
    return RegimeData(db, regimes, records, ref, complete, test, heldout, full, spec)


def training_rows(data: RegimeData, regime: str, makeup: str, val_fraction: float,
                  split_seed: int, n_train: int | None, seed: int
                  ) -> tuple[list, list, list[str], float]:
    """The rows a cell trains and validates on.

    Returns ``(train_rows, val_rows, val_parents, val_fraction_for_train)``: ``train_rows`` are
    the makeup's rows of the non-validation training parents, capped at ``n_train`` structures
    by a seeded uniform draw (matched numbers of structures across makeups); ``val_rows`` the
    full clusters of the validation parents. Passing ``train_rows + val_rows`` to
    :func:`jbo.train.train` with ``val_fraction_for_train`` reproduces exactly this validation
    set (the hash split ranks clusters by id, and dropped training parents rank above every
    validation parent).
    """
    from jbo.train.dataset import select_makeup, split_by_cluster

    parents = set(data.train_parents(regime))
    pool = [r for r in data.records[regime] if r.cluster in parents]
    tr, va = split_by_cluster(pool, val_fraction, split_seed)
    rows = select_makeup([r for r in pool if r.cluster in tr], makeup)
    if n_train is not None and n_train < len(rows):
        keep = np.sort(np.random.default_rng([seed, 11]).choice(len(rows), n_train, False))
        rows = [rows[i] for i in keep]
    val = [r for r in pool if r.cluster in va and r.is_full]
    n_clusters = len({r.cluster for r in rows}) + len(va)
    return rows, val, sorted(va), len(va) / n_clusters


def test_records(data: RegimeData, regime: str, max_test: int | None,
                 max_heldout: int | None = None) -> dict[str, list]:
    """Full-cluster records of each test set of a cell trained on ``regime`` (at most
    ``max_test`` each, ``max_heldout`` H_9/H_10 parents; spread evenly over the sorted list,
    the heldout ones of ``regime`` first, each regime by size)."""
    other = [g for g in data.regimes if g != regime]
    sets = {"test": [data.full[c] for c in data.test_parents[regime]],
            "other_regime": [data.full[c] for g in other for c in data.test_parents[g]],
            "heldout": [r for g in [regime, *other] for r in data.heldout if r.regime == g]}
    return {k: spread(v, max_heldout if k == "heldout" else max_test) for k, v in sets.items()}


def describe(data: RegimeData, regimes: Sequence[str] | None = None) -> dict:
    """Counts per regime (for the study's JSON and the report)."""
    out = {}
    for g in regimes or data.regimes:
        out[g] = dict(pool=len({r.cluster for r in data.records[g]}) - len(data.complete[g]),
                      complete=len(data.complete[g]), test_parents=len(data.test_parents[g]),
                      train_parents=len(data.train_parents(g)))
    out["heldout"] = [f"{r.cluster}" for r in data.heldout]
    return out
