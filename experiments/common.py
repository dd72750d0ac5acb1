"""Shared machinery of the studies: arguments, resumable cell cache, data, train + decompose.

A *cell* is one training run (model, dataset makeup, number of training parents, seed,
regularizer, training regimes). :func:`run_cell` trains it on the training parents, decomposes
the test clusters with the engine (:func:`jbo.decompose.body_orders`, exhaustive) and returns a
JSON-able dict; :class:`CellCache` stores it under ``results/NAME/cells/KEY.json`` so an
interrupted study continues where it stopped (a cell is skipped when its JSON exists).

Test sets (never trained on):

* ``test``: the held-out H_4..H_8 parents of the training regimes (``split="train"`` parents
  removed by a seeded hash split, :func:`jbo.train.dataset.split_by_cluster`); their reference
  MBE comes from the stored subcluster energies (:func:`jbo.data.mbe.all_mbe`).
* ``other_regime``: H_4..H_8 parents of the regimes not trained on (with reference MBE).
* ``heldout``: the ``split="heldout"`` H_9..H_12 clusters (reference totals only).

Devices: with more than one local device, training batches are sharded over
``jax.local_devices()`` (``TrainConfig.shard``, :mod:`jbo.train.sharding`) and the test
clusters of a decomposition are split over the same devices (``body_orders(mesh=...)``).
Energies in eV inside; errors reported in meV/atom.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = str(ROOT / "data" / "h_clusters.npz")

# Small, fast variants of the zoo models (this study trains many of them on CPUs).
STUDY_HYPERS: dict[str, dict[str, Any]] = {
    "soap_bpnn": dict(max_radial=6, max_angular=4, hidden=(32, 32)),
    "linear_ace": dict(correlation=3, max_radial=6, max_angular=3),
    "pet": dict(d_model=16, num_heads=2, ffn_dim=32, num_radial=6, readout_hidden=16),
    "mace": dict(num_channels=8, max_ell=2, hidden_ell=1, correlation=3, num_radial=6,
                 radial_hidden=(16,), readout_hidden=8),
    "nequip": dict(hidden_irreps="8x0e + 4x1o", sh_irreps="1x0e + 1x1o", num_basis=6,
                   radial_hidden=16),
}


# ---------------------------------------------------------------- arguments
def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _csv(text)]


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The common command line of ``python -m experiments.NAME``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}",
                                description=(doc or "").strip().splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny CI configuration (seconds)")
    p.add_argument("--out", default=None, help=f"output folder (default results/{name})")
    p.add_argument("--db", default=DEFAULT_DB, help="reference ase.db")
    p.add_argument("--redo", action="store_true", help="recompute cached cells")
    return p


def add_training_args(p: argparse.ArgumentParser, *, models: str, makeups: str,
                      seeds: str = "0", steps: int = 2000) -> None:
    """Options of the studies that train models (defaults are the full run's)."""
    p.add_argument("--models", type=_csv, default=_csv(models), help="comma-separated zoo names")
    p.add_argument("--makeups", type=_csv, default=_csv(makeups),
                   help="dataset makeups (full, up_to:M, ...+atoms, all)")
    p.add_argument("--seeds", type=_ints, default=_ints(seeds), help="training seeds")
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps per cell (about)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="fraction of H_4..H_8 parents held out as test clusters")
    p.add_argument("--max-test", type=int, default=40,
                   help="at most this many clusters per test set")
    p.add_argument("--max-train-atoms", type=int, default=8,
                   help="use training parents of at most this many atoms")
    p.add_argument("--regimes", type=_csv, default=None,
                   help="training regimes (default: all in the dataset)")
    p.add_argument("--use-bias", action="store_true",
                   help="models with a readout bias: the isolated-atom energy becomes learnable "
                        "(the zoo default predicts exactly 0 for it, so E^(1) is the "
                        "least-squares composition baseline of the training rows)")


def out_dir(args, name: str) -> Path:
    d = Path(args.out) if args.out else ROOT / "results" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------- cache
class CellCache:
    """One JSON file per cell under ``folder``; writes are atomic (tmp file + rename)."""

    def __init__(self, folder: str | Path, redo: bool = False,
                 fallbacks: Sequence[str | Path] = ()):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.redo = redo
        self.fallbacks = [Path(f) for f in fallbacks]  # read-only caches of other studies

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

    def put(self, key: str, value: dict) -> None:
        write_json(self.path(key), value)


def write_json(path: str | Path, value: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=_jsonable))
    os.replace(tmp, path)


def finish(name: str, result: dict, out: Path, t0: float, cells: Sequence[dict]) -> dict:
    """Stamp the wall time of this run (``seconds``) and the compute time of its cells, cached
    ones included (``cell_seconds``), write ``out/NAME.json`` and say where it went."""
    result["seconds"] = time.perf_counter() - t0
    result["cell_seconds"] = float(sum(c["seconds"] for c in cells))
    write_json(out / f"{name}.json", result)
    print(f"{name}: {len(cells)} cells in {result['seconds']:.0f} s "
          f"({result['cell_seconds']:.0f} s of cell compute) -> {out}")
    return result


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-able: {type(x)}")


# ---------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """The reference data of a study: records, reference MBEs and the parent split."""

    db: str
    records: list            # every ok row (jbo.data.records.Record)
    ref: dict                # {cluster: jbo.data.mbe.ReferenceMBE} of complete train parents
    regimes: list[str]
    train_parents: list[str]  # candidate training parents (hash split), sorted
    test_parents: list[str]   # held-out H_4..H_8 parents, sorted
    heldout: list             # full-cluster Records of split="heldout"
    spec: str = ""            # fingerprint of the data and its split (part of every cell key)


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
    ref = reference_mbes(records)
    parents = [r for r in records if r.split == "train" and r.is_full
               and r.cluster in ref and r.n_atoms <= max_train_atoms]
    pool = [r for r in records if r.cluster in {p.cluster for p in parents}]
    tr, te = split_by_cluster(pool, test_fraction, split_seed)
    heldout = [r for r in records if r.split == "heldout" and r.is_full]
    regimes = sorted({r.regime for r in records})
    spec = _fingerprint(_file_digest(db), test_fraction, split_seed, max_train_atoms, sizes)
    return Data(db, records, ref, regimes, sorted(tr), sorted(te), heldout, spec)


def _file_digest(db: str) -> str:
    """Content hash of a dataset file (its URL for a database server)."""
    if "://" in db:
        return db
    import hashlib

    return hashlib.sha256(Path(db).read_bytes()).hexdigest()


def _fingerprint(*parts: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def reference_mbes(records: list) -> dict:
    """``{cluster: ReferenceMBE}`` from the stored subcluster energies of every complete
    ``split="train"`` parent (:func:`jbo.data.mbe.mbe_from_energies`; incomplete ones skipped)."""
    from jbo.data.mbe import mbe_from_energies

    lat: dict[str, np.ndarray] = {}
    info: dict[str, tuple[str, str]] = {}
    for r in records:
        if r.split != "train":
            continue
        e = lat.setdefault(r.cluster, np.full(1 << r.n_parent, np.nan))
        e[r.subset] = r.energy
        info[r.cluster] = (r.regime, r.split)
    out = {}
    for c, e in lat.items():
        e[0] = 0.0
        if not np.isnan(e).any():
            out[c] = mbe_from_energies(e, c, regime=info[c][0], split=info[c][1])
    return out


def full_records(data: Data, clusters: Sequence[str]) -> list:
    want = set(clusters)
    return sorted((r for r in data.records if r.is_full and r.cluster in want),
                  key=lambda r: r.cluster)


def choose_parents(data: Data, regimes: Sequence[str] | None, n_train: int | None,
                   seed: int) -> list[str]:
    """The first ``n_train`` training parents (of ``regimes``) in a seeded order; nested in n."""
    regs = set(regimes or data.regimes)
    pool = [c for c in data.train_parents if data.ref[c].regime in regs]
    order = np.random.default_rng([seed, 7]).permutation(len(pool))
    picked = [pool[i] for i in order]
    return sorted(picked if n_train is None else picked[:n_train])


def cap(records: list, k: int, seed: int = 0) -> list:
    """At most ``k`` records, spread evenly over the list (deterministic)."""
    if len(records) <= k:
        return records
    idx = np.unique(np.linspace(0, len(records) - 1, k).round().astype(int))
    return [records[i] for i in idx]


# ---------------------------------------------------------------- cells
@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of a study (hashable; :meth:`key` names its cached JSON)."""

    model: str
    makeup: str = "all"
    n_train: int | None = None  # training parents (None: all)
    seed: int = 0
    steps: int = 2000
    lam: float = 0.0            # body-order regularizer strength (0: off)
    reg_order: int = 2
    regimes: tuple[str, ...] | None = None  # training regimes (None: all)
    batch_size: int = 32
    lr: float = 3e-3
    extra_hypers: tuple[tuple[str, Any], ...] = ()  # overrides of STUDY_HYPERS

    def hypers(self) -> dict[str, Any]:
        return {**STUDY_HYPERS.get(self.model, {}), **dict(self.extra_hypers)}

    def key(self, data_spec: str = "") -> str:
        """A readable name, then a hash of everything that decides the cell's result: every
        field, the resolved hyperparameters (STUDY_HYPERS included) and ``data_spec`` (the
        dataset's content and split, :attr:`Data.spec`), so no edit reuses a stale cell."""
        digest = _fingerprint(dataclasses.asdict(self), self.hypers(), data_spec)[:10]
        return f"{self._name()}_{digest}"

    def _name(self) -> str:
        mk = self.makeup.replace(":", "").replace("+", "-")
        parts = [self.model, mk, f"n{self.n_train or 'all'}", f"s{self.seed}",
                 f"t{self.steps}"]
        if self.lam:
            parts.append(f"reg{self.lam:g}k{self.reg_order}")
        if self.regimes:
            parts.append("on-" + "-".join(self.regimes))
        if (self.batch_size, self.lr) != (32, 3e-3):
            parts.append(f"b{self.batch_size}lr{self.lr:g}")
        parts += [f"{k}{v}" for k, v in self.extra_hypers]
        return "_".join(parts)


def extra(args) -> tuple[tuple[str, Any], ...]:
    """Hyperparameter overrides requested on the command line."""
    return (("use_bias", True),) if getattr(args, "use_bias", False) else ()


def train_cell(cell: Cell, data: Data):
    """Train ``cell``; returns (contract energy_fn in eV, info dict)."""
    import jax

    from jbo.train.config import parse_makeup
    from jbo.train.dataset import select_makeup
    from jbo.train import RegularizerConfig, TrainConfig, train
    from jbo.train.losses import contract_energy_fn

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
    return contract_energy_fn(res.model, res.params), info


def device_mesh():
    """A data mesh over every local device, or None on a single device."""
    import jax

    from jbo.train.sharding import data_mesh

    return data_mesh() if len(jax.local_devices()) > 1 else None


def decompose(energy_fn, records: list, orders: bool = True) -> dict[str, list]:
    """Model energies (eV) of full clusters, one padded batch: with ``orders``, the exhaustive
    body orders of :func:`jbo.decompose.body_orders`; else totals only (``per_order`` None)."""
    import jax

    from jbo.decompose import body_orders
    from jbo.train.dataset import pad_records

    if not records:
        return dict(cluster=[], n=[], regime=[], total=[], per_order=[])
    b = pad_records(records)
    n = [r.n_atoms for r in records]
    if orders:
        res = body_orders(energy_fn, b.positions, b.species, atom_mask=b.mask,
                          mesh=device_mesh())
        per = np.asarray(res.per_order)
        total, per_order = np.asarray(res.total), [per[i, :k].tolist() for i, k in enumerate(n)]
    else:
        total = np.asarray(jax.jit(jax.vmap(energy_fn))(b.positions, b.species, b.mask))
        per_order = [None] * len(n)
    return dict(cluster=[r.cluster for r in records], n=n, regime=[r.regime for r in records],
                total=total.tolist(), per_order=per_order)


def reference_of(data: Data, records: list) -> dict[str, list]:
    """Reference totals and (where every subcluster is stored) per-order energies, eV."""
    per = [data.ref[r.cluster].per_order.tolist() if r.cluster in data.ref else None
           for r in records]
    return dict(ref_total=[r.energy for r in records], ref_per_order=per)


def test_sets(data: Data, cell: Cell, max_test: int, which: Sequence[str]) -> dict[str, list]:
    regs = set(cell.regimes or data.regimes)
    out = {}
    if "test" in which:
        out["test"] = full_records(data, [c for c in data.test_parents
                                          if data.ref[c].regime in regs])
    if "other_regime" in which:
        others = [c for c in data.ref if data.ref[c].regime not in regs]
        out["other_regime"] = full_records(data, sorted(others))
    if "heldout" in which:
        out["heldout"] = sorted(data.heldout, key=lambda r: (r.n_atoms, r.cluster))
    return {k: cap(v, max_test) for k, v in out.items()}


def run_cell(cell: Cell, data: Data, cache: CellCache, max_test: int = 40,
             which: Sequence[str] = ("test",), log=print) -> dict:
    """Train + decompose one cell, or load it from ``cache``."""
    key = cell.key(data.spec)
    hit = cache.get(key)
    if hit is not None and set(which) <= set(hit["tests"]):
        return hit
    t0 = time.perf_counter()
    fn, info = train_cell(cell, data)
    sets = test_sets(data, cell, max_test, which)
    # one engine call for every set with a reference MBE (one compilation), totals for the rest
    with_ref = [k for k in sets if k != "heldout"]
    joint = decompose(fn, [r for k in with_ref for r in sets[k]])
    tests, start = {}, 0
    for name in with_ref:
        stop = start + len(sets[name])
        tests[name] = {k: v[start:stop] for k, v in joint.items()}
        start = stop
    if "heldout" in sets:
        tests["heldout"] = decompose(fn, sets["heldout"], orders=False)
    for name, recs in sets.items():
        tests[name].update(reference_of(data, recs))
    out = dict(cell=dataclasses.asdict(cell), key=key, **info, tests=tests,
               seconds=time.perf_counter() - t0)
    cache.put(key, out)
    log(f"[{key}] {out['seconds']:.0f} s, train MAE {info['train_mae']:.1f} meV/atom, "
        + ", ".join(f"{k} MAE {total_mae(v):.1f}" for k, v in tests.items() if v["n"]))
    return out


# ---------------------------------------------------------------- metrics (pure)
def total_errors(t: dict) -> np.ndarray:
    """(prediction − reference) per atom, meV/atom, one per cluster."""
    return 1e3 * (np.asarray(t["total"]) - np.asarray(t["ref_total"])) / np.asarray(t["n"])


def total_mae(t: dict) -> float:
    e = total_errors(t)
    return float(np.abs(e).mean()) if e.size else float("nan")


def order_mae(t: dict, k_max: int) -> list[float]:
    """MAE of E^(k) per atom (meV/atom) for k = 1..k_max over clusters with n ≥ k."""
    out = []
    for k in range(1, k_max + 1):
        e = [abs(p[k - 1] - r[k - 1]) / n for p, r, n in
             zip(t["per_order"], t["ref_per_order"], t["n"]) if r is not None and n >= k]
        out.append(1e3 * float(np.mean(e)) if e else float("nan"))
    return out


def high_order_weight(per_order: Sequence[Sequence[float]], order: int = 2) -> float:
    """Σ_{k>K} |E^(k)| / Σ_{k≥2} |E^(k)|, pooled over clusters (0: pairwise, 1: all high)."""
    hi = sum(sum(abs(x) for x in p[order:]) for p in per_order)
    tot = sum(sum(abs(x) for x in p[1:]) for p in per_order)
    return float(hi / tot) if tot > 0 else float("nan")


def mean_abs_order(per_order: Sequence[Sequence[float]], ns: Sequence[int], k_max: int
                   ) -> list[float]:
    """Mean |E^(k)|/n (meV/atom) for k = 1..k_max over clusters with n ≥ k."""
    out = []
    for k in range(1, k_max + 1):
        v = [abs(p[k - 1]) / n for p, n in zip(per_order, ns) if n >= k and p is not None]
        out.append(1e3 * float(np.mean(v)) if v else float("nan"))
    return out


def seed_means(rows: Sequence[dict], keys: Sequence[str], fields: Sequence[str]) -> list[dict]:
    """Rows grouped by ``keys`` (first-seen order): each field's mean over seeds, its sample
    standard deviation under ``FIELD_sd`` (nan for one seed) and ``n_seeds``. List-valued fields
    are averaged elementwise."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for g in groups.values():
        m = {k: g[0][k] for k in g[0] if k not in fields and k != "seed"}
        for f in fields:
            v = np.array([x[f] for x in g], float)
            sd = v.std(0, ddof=1) if len(g) > 1 else np.full_like(v[0], np.nan)
            m[f], m[f + "_sd"] = v.mean(0).tolist(), sd.tolist()
        m["n_seeds"] = len(g)
        out.append(m)
    return out
