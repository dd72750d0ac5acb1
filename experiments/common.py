"""Plumbing shared by the studies: their command line, results on disk, seed averages.

The cells themselves (one type, a grid, the cache, data split, test sets, train + decompose)
are :mod:`jbo.study`; the spectra and their metrics are :mod:`jbo.analysis`.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jbo.configargs import add_config_args
from jbo.study import Cell
from jbo.study.store import (CellCache, _jsonable, file_digest, fingerprint,  # noqa: F401
                             spread, write_json)
from jbo.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = str(ROOT / "data" / "h_clusters.npz")


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
    p.add_argument("--out", default=None, help=f"output folder (default results/{name}; with "
                   f"--quick <tempdir>/jbo_{name}_quick: a CI run never touches results/)")
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
    add_config_args(p, TrainConfig, include=("batch_size", "lr"), defaults={"batch_size": 32})
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


def extra(args) -> tuple[tuple[str, Any], ...]:
    """Hyperparameter overrides requested on the command line."""
    return (("use_bias", True),) if getattr(args, "use_bias", False) else ()


def base_cell(args, n_train: int | None = None, **kw) -> Cell:
    """The fixed-protocol cell of :func:`add_training_args`' options (the grid's base)."""
    return Cell(args.models[0] if args.models else "soap_bpnn", "fixed", args.makeups[0]
                if args.makeups else None, tuple(args.regimes) if args.regimes else None,
                n_train=n_train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                extra_hypers=extra(args), **kw)


def out_dir(args, name: str) -> Path:
    """``--out``, else ``results/NAME`` (the committed results), or for a ``--quick`` run
    ``<tempdir>/jbo_NAME_quick``: a CI-sized run never overwrites committed results."""
    if args.out:
        d = Path(args.out)
    elif getattr(args, "quick", False):
        d = Path(tempfile.gettempdir()) / f"jbo_{name}_quick"
    else:
        d = ROOT / "results" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def markdown_table(head: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table of ``rows`` under ``head`` (cells through ``str``)."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _block(text: str, name: str, readme: Path) -> tuple[int, int]:
    """Start and end of the README block ``<!-- name -->`` ... ``<!-- /name -->`` in ``text``."""
    a, b = f"<!-- {name} -->", f"<!-- /{name} -->"
    if a not in text or b not in text:
        raise ValueError(f"{readme} has no {a} ... {b} block")
    return text.index(a) + len(a), text.index(b)


def readme_block(name: str, readme: Path = ROOT / "README.md") -> str:
    """The generated text between the README's ``<!-- name -->`` and ``<!-- /name -->``."""
    text = readme.read_text()
    i, j = _block(text, name, readme)
    return text[i:j].strip()


def write_readme_block(name: str, body: str, readme: Path = ROOT / "README.md") -> None:
    """Replace the README's ``name`` block (see :func:`readme_block`) by ``body``."""
    text = readme.read_text()
    i, j = _block(text, name, readme)
    readme.write_text(text[:i] + "\n" + body + "\n" + text[j:])


#: what a rerun may change without the results changing: its wall time and where it found the
#: dataset (the dataset's content is in every cell key)
PROVENANCE = ("seconds", "db", "config.db")
#: numbers a rerun reproduces to this relative tolerance are the same result (float64 sums in
#: another order: a rerun after a change of summation order in jbo.analysis rewrites nothing)
RTOL = 1e-10


def _strip(value: Any) -> Any:
    """``value`` as plain JSON data without :data:`PROVENANCE`."""
    v = json.loads(json.dumps(value, default=_jsonable))
    for path in PROVENANCE:
        *outer, last = path.split(".")
        d = v
        for k in outer:
            d = d.get(k, {}) if isinstance(d, dict) else {}
        if isinstance(d, dict):
            d.pop(last, None)
    return v


def same_results(a: Any, b: Any, rtol: float = RTOL) -> bool:
    """Whether two study results agree beyond :data:`PROVENANCE`: the same structure, strings
    and integers, and floats equal to ``rtol`` relative (NaN equals NaN)."""
    def same(x, y) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        if isinstance(x, float) or isinstance(y, float):
            if isinstance(x, (bool, str)) or isinstance(y, (bool, str)) or x is None or y is None:
                return False
            return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rtol,
                                                                     abs_tol=0.0)
        return type(x) is type(y) and x == y
    return same(_strip(a), _strip(b))


def finish(name: str, result: dict, out: Path, t0: float, cells: Sequence[dict]) -> dict:
    """Stamp the wall time of this run (``seconds``) and the compute time of its cells, cached
    ones included (``cell_seconds``), write ``out/NAME.json`` and say where it went. A file that
    differs only in :data:`PROVENANCE` (and floats to :data:`RTOL`) is left as it is: regenerating a study from its cached
    cells rewrites nothing."""
    result["seconds"] = time.perf_counter() - t0
    result["cell_seconds"] = float(sum(c["seconds"] for c in cells))
    if not write_result(out / f"{name}.json", result):
        print(f"{name}: {len(cells)} cells, results unchanged: {out / name}.json kept")
        return result
    print(f"{name}: {len(cells)} cells in {result['seconds']:.0f} s "
          f"({result['cell_seconds']:.0f} s of cell compute) -> {out}")
    return result


def write_result(path: Path, result: dict) -> bool:
    """Write a study's ``result`` to ``path`` unless the file there holds the same results
    (:func:`same_results`); returns whether it wrote."""
    if path.exists() and same_results(json.loads(path.read_text()), result):
        return False
    write_json(path, result)
    return True


# ---------------------------------------------------------------- seeds
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
