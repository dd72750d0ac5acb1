"""Bad datasets, bad options and shared run folders (issue 25 §4, §5): every reader and every
`jbo data`/`jbo train` entry point refuses them with one line naming the problem."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jbo.data.records import read_parents, read_records, write_compact
from jbo.data.validate import validate
from tests.toy import ToyEAM, toy_config

ROOT = Path(__file__).resolve().parents[2]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``jbo ARGV`` in this process: (exit status, stderr, stdout); argparse exits count."""
    from jbo.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.err, cap.out


def _one_line_error(code: int, err: str, phrase: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and re.search(phrase, err), err
    assert len([ln for ln in err.splitlines() if ln.strip() and not ln.startswith("usage")
                and not ln.startswith(" ")]) == 1, err


@pytest.fixture
def compact(toy_db, tmp_path) -> Path:
    """The toy db as a compact file (6 complete training parents, 2 held-out full clusters)."""
    path = tmp_path / "toy.npz"
    write_compact(read_parents(toy_db), path)
    return path


def _edit_npz(src: Path, dst: Path, **changes) -> Path:
    z = dict(np.load(src))
    for k, v in changes.items():
        if v is None:
            del z[k]
        else:
            z[k] = v(z) if callable(v) else v
    np.savez(dst, **z)
    return dst


def _with_parent(parents, i: int, **fields):
    return [dataclasses.replace(p, **fields) if j == i else p for j, p in enumerate(parents)]


# ------------------------------------------------ §5.3/4: one geometry check for every layout
def _bad_geometry(parents, kind: str):
    p = parents[0]
    if kind == "Z=0":
        z = p.numbers.copy()
        z[1] = 0
        return _with_parent(parents, 0, numbers=z), "invalid atomic number 0"
    pos = p.positions.copy()
    pos[2] = pos[0] + 1e-5
    return _with_parent(parents, 0, positions=pos), "duplicate atoms"


@pytest.mark.parametrize("kind", ["Z=0", "coincident atoms"])
def test_every_layout_and_training_refuse_a_bad_geometry(kind, toy_db, tmp_path):
    """The compact file used to be read as is (training even fitted a baseline for Z = 0);
    now the compact file, the per-row store, and records handed to training all pass the
    same check, which names the parent."""
    from jbo.data.records import export
    from jbo.train import train

    parents, phrase = _bad_geometry(read_parents(toy_db), kind)
    npz = tmp_path / "bad.npz"
    write_compact(parents, npz)
    db = tmp_path / "bad.db"
    export(parents, db)
    name = parents[0].cluster
    for source in (npz, db):
        with pytest.raises(ValueError, match=f"{name}.*{phrase}"):
            read_parents(source)
        with pytest.raises(ValueError, match=phrase):
            read_records(source, split="train")
        with pytest.raises(ValueError, match=phrase):
            train(toy_config(source, epochs=1), module=ToyEAM())
    recs = [r for p in parents for r in p.records()]
    with pytest.raises(ValueError, match=f"records=: {name} subset .*{phrase}"):
        train(toy_config(toy_db, epochs=1), module=ToyEAM(), records=recs)


def test_training_refuses_an_element_the_model_lacks(compact, tmp_path):
    """A lithium atom in an H-only model's data: the model, run under jit, cannot check it
    (it used to train on it); setup names the element and the fix."""
    from jbo.train import train

    parents = read_parents(compact)
    z = parents[0].numbers.copy()
    z[0] = 3
    path = tmp_path / "li.npz"
    write_compact(_with_parent(parents, 0, numbers=z), path)
    cfg = toy_config(path, model="soap_bpnn", epochs=1,
                     hypers={"max_radial": 2, "max_angular": 1, "hidden": [4], "cutoff": 3.0})
    with pytest.raises(ValueError, match=r"atomic numbers \[3\] are not among the model's "
                                         r"species \(1,\)"):
        train(cfg)


def test_validate_reports_coincident_atoms(toy_db, tmp_path, capsys):
    """`jbo data validate` (CLI and API) names a parent with two atoms at one place."""
    def spins(p):  # the lowest spin of each H subset: 2S = N mod 2, <S^2> = S(S+1)
        twos = np.array([bin(int(m)).count("1") % 2 for m in p.subsets])
        return dataclasses.replace(p, spin=twos, s2=twos / 2 * (twos / 2 + 1))

    clean = [spins(p) for p in read_parents(toy_db)]
    assert validate(clean, sample=0) == []  # every check passes
    parents, _ = _bad_geometry(clean, "coincident atoms")
    probs = validate(parents, sample=0)
    assert [(p.check, p.cluster) for p in probs] == [("geometry", parents[0].cluster)]
    assert "duplicate atoms" in probs[0].detail
    path = tmp_path / "bad.npz"
    write_compact(parents, path)
    code, _, out = _cli(["data", "validate", "--db", str(path), "--sample", "0",
                         "--no-progress"], capsys)
    assert code == 1 and f"[geometry] {parents[0].cluster}: atoms 0 and 2" in out


# ------------------------------------------------ §5.5: the compact file's own consistency
CORRUPT = {
    "n_atoms[0] += 1": (dict(n_atoms=lambda z: z["n_atoms"] + np.eye(len(z["n_atoms"]),
                                                                     dtype=int)[0]),
                        r"positions has shape \(\d+, 3\), expected \(\d+, 3\)"),
    "n_subsets[0] -= 1": (dict(n_subsets=lambda z: z["n_subsets"] - np.eye(
        len(z["n_subsets"]), dtype=int)[0]), "subsets has shape"),
    "subset beyond 2^n": (dict(subsets=lambda z: np.r_[z["subsets"][:-1], 1 << 40]),
                          r"subset 1099511627776 of parent 7 .* is outside 1\.\.127"),
    "unsorted subsets": (dict(subsets=lambda z: np.r_[z["subsets"][1], z["subsets"][0],
                                                      z["subsets"][2:]]),
                         "not strictly ascending"),
    "duplicate subset": (dict(subsets=lambda z: np.r_[z["subsets"][0], z["subsets"][0],
                                                      z["subsets"][2:]]),
                         "not strictly ascending"),
    "forces short": (dict(forces=lambda z: z["forces"][:-1]), r"forces has shape"),
    "float numbers": (dict(numbers=lambda z: z["numbers"].astype(float)),
                      "numbers has dtype float64, expected integer"),
    "no energy": (dict(energy=None), r"arrays \['energy'\] are missing"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_inconsistent_compact_files_are_named(case, compact, tmp_path, capsys):
    """Each corruption used to be read silently (summary) or die in an IndexError (training);
    now every reader says what is off, and `jbo data summary` exits 2 with one line."""
    changes, phrase = CORRUPT[case]
    bad = _edit_npz(compact, tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError, match="is not a consistent compact dataset: .*" + phrase):
        read_parents(bad)
    code, err, _ = _cli(["data", "summary", "--db", str(bad)], capsys)
    _one_line_error(code, err, phrase)


def test_a_consistent_compact_file_reads_unchanged(compact, toy_db):
    """The checks pass a file that `write_compact` wrote (no false alarm)."""
    a, b = read_parents(compact), read_parents(toy_db)
    assert [(p.cluster, len(p.subsets)) for p in a] == [(p.cluster, len(p.subsets)) for p in b]


# ------------------------------------------------ §5.12: readers never create or change a db
@pytest.mark.parametrize("kind", ["empty file", "missing path", "foreign SQLite"])
def test_readers_never_create_or_modify_a_database(kind, tmp_path, capsys):
    import sqlite3

    path = tmp_path / "x.db"
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "foreign SQLite":
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE notes (t TEXT)")
    before = path.read_bytes() if path.exists() else None
    phrase = {"empty file": "is empty", "missing path": "does not exist",
              "foreign SQLite": "not an ase.db"}[kind]
    for argv in (["data", "summary", "--db", str(path)], ["data", "mbe", "--db", str(path)],
                 ["data", "export", "--db", str(path), "-o", str(tmp_path / "o.extxyz")]):
        code, err, _ = _cli(argv, capsys)
        _one_line_error(code, err, phrase)
    from jbo.data.store import StoreError

    with pytest.raises((StoreError, FileNotFoundError)):
        read_records(path)
    assert (path.read_bytes() if path.exists() else None) == before


# ------------------------------------------------ §5.10: --val-fraction 0
def test_training_without_validation_says_so(toy_db, tmp_path, capsys, monkeypatch):
    """No fake MAE (it used to report 'best validation MAE -9' from the step count): the stop
    reason says there is no validation data and the final parameters are the kept ones."""
    import jax

    import jbo.train
    from jbo.train import train

    res = train(toy_config(toy_db, val_fraction=0.0), module=ToyEAM())
    assert res.data.val == [] and len(res.data.train_parents) == 6
    assert "no validation data" in res.stop_reason and "MAE" not in res.stop_reason
    assert all(np.isnan(h["val_mae"]) for h in res.history)
    for a, b in zip(jax.tree_util.tree_leaves(res.model.params),
                    jax.tree_util.tree_leaves(res.params)):
        np.testing.assert_array_equal(a, b)
    real = jbo.train.train
    monkeypatch.setattr(jbo.train, "train", lambda cfg: real(cfg, module=ToyEAM()))
    argv = ["train", "--db", str(toy_db), "--model", "toy", "--epochs", "1", "--quiet",
            "--no-tensorboard", "--val-fraction", "0", "--out", str(tmp_path / "run")]
    code, err, out = _cli(argv, capsys)
    assert code == 0, err
    assert "no validation data, final parameters kept" in out and "MAE -" not in out
    code, err, _ = _cli(argv + ["--patience", "3"], capsys)
    _one_line_error(code, err, "no validation data .* pass --val-fraction > 0")


# ------------------------------------------------ §5.2: one run per folder
_HOLD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from jbo.train.runs import lock_run_dir
    fh = lock_run_dir(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
""")


def _lock_in_subprocess(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(root=str(ROOT)), str(folder)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_busy_folder_is_refused(toy_db, tmp_path, capsys, monkeypatch):
    """Another process holds the folder: `jbo train` exits 2 naming the folder and that pid,
    writing nothing there; once the holder dies (even by SIGKILL) the folder is free, and a
    finished (or failed) run leaves it free."""
    import jbo.train
    from jbo.train import train
    from jbo.train.runs import lock_run_dir

    real = jbo.train.train
    monkeypatch.setattr(jbo.train, "train", lambda cfg: real(cfg, module=ToyEAM()))
    run = tmp_path / "run"
    holder = _lock_in_subprocess(run)
    try:
        code, err, _ = _cli(["train", "--db", str(toy_db), "--model", "toy", "--epochs", "1",
                             "--quiet", "--out", str(run)], capsys)
        _one_line_error(code, err, f"run folder {re.escape(str(run))} is in use by another "
                                   f"training run \\(pid {holder.pid}\\)")
        assert sorted(p.name for p in run.iterdir()) == [".jbo-train.lock"]
    finally:
        holder.kill()
        holder.wait()
    lock_run_dir(run).close()  # a killed holder leaves no stale lock
    train(toy_config(toy_db, epochs=1, out_dir=str(run)), module=ToyEAM())
    with pytest.raises(ValueError, match="holds no"):  # setup fails after taking the lock
        train(toy_config(toy_db, out_dir=str(run), makeup="up_to:2", epochs=1),
              module=ToyEAM(), records=[])
    other = _lock_in_subprocess(run)  # both runs released it
    other.kill()
    other.wait()


# ------------------------------------------------ §5.13/14 and friends: numeric options
BAD_OPTIONS = [
    (["data", "validate", "--sample", "-1"], "--sample: give a whole number >= 0"),
    (["data", "validate", "--tol", "-1"], "--tol: give a finite number > 0"),
    (["data", "validate", "--tol", "0"], "--tol: give a finite number > 0"),
    (["data", "validate", "--far", "nan"], "--far: give a finite number > 0"),
    (["data", "validate", "--far-eps", "-1"], "--far-eps: give a finite number > 0"),
    (["data", "validate", "--workers", "0"], "--workers: give a whole number >= 1"),
    (["data", "validate", "--seed", "-1"], "--seed: give a whole number >= 0"),
    (["data", "label", "--db", "x.db", "--sizes", "2", "--workers", "-1"],
     "--workers: give a whole number >= 0"),
    (["data", "generate", "--sizes", "3", "--seed", "-1", "-o", "x.extxyz"],
     "--seed: give a whole number >= 0"),
    (["data", "generate", "--sizes", "0", "-o", "x.extxyz"], "bad sizes"),
    (["train", "--out", "r", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["train", "--out", "r", "--lr", "-1"], "lr must be a finite number"),
    (["train", "--out", "r", "--val-fraction", "1"], r"val_fraction must be a finite number"),
    (["train", "--out", "r", "--val-fraction", "-0.1"], r"val_fraction must be a finite"),
    (["train", "--out", "r", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["train", "--out", "r", "--log-every", "-2"], "log_every must be an integer >= 1"),
    (["train", "--out", "r", "--hypers", "notjson"], "--hypers: not valid JSON"),
    (["train", "--out", "r", "--lam", "-1"], "lam must be a finite number"),
]


@pytest.mark.parametrize("argv,phrase", BAD_OPTIONS, ids=[" ".join(a[:2] + a[-2:])
                                                          for a, _ in BAD_OPTIONS])
def test_bad_numeric_options_are_one_line(argv, phrase, tmp_path, capsys, monkeypatch):
    """A negative sample/tolerance/worker count/seed used to check nothing or fail oddly;
    every numeric option of `jbo data` and `jbo train` is refused by argparse (exit 2)."""
    monkeypatch.chdir(tmp_path)
    code, err, _ = _cli(argv, capsys)
    _one_line_error(code, err, phrase)
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("kw,phrase", [
    (dict(sample=-1), "sample must be a whole number >= 0"),
    (dict(sample=2.5), "sample must be a whole number"),
    (dict(tol=-1e-3), "tol must be a finite number > 0"),
    (dict(tol=0.0), "tol must be a finite number > 0"),
    (dict(far=float("nan")), "far must be a finite number > 0"),
    (dict(workers=0), "workers must be a whole number >= 1"),
    (dict(seed=-1), "seed must be a whole number >= 0"),
])
def test_validate_api_checks_its_numbers(kw, phrase, compact):
    with pytest.raises(ValueError, match=phrase):
        validate(read_parents(compact), **{"sample": 0, **kw})


# ------------------------------------------------ unclear errors on the data path
def test_export_to_an_unknown_format_is_refused_before_reading(compact, tmp_path, capsys,
                                                                monkeypatch):
    import jbo.data.records as records

    read = []
    monkeypatch.setattr(records, "read_parents", lambda *a, **k: read.append(1) or [])
    code, err, _ = _cli(["data", "export", "--db", str(compact), "-o",
                         str(tmp_path / "x.foo")], capsys)
    _one_line_error(code, err, r"cannot export to .*x\.foo: .* name the output \.extxyz")
    assert read == [] and not (tmp_path / "x.foo").exists()


def test_a_full_disk_leaves_the_old_file_whole(compact, toy_db, tmp_path, capsys, monkeypatch):
    """`jbo data pack` onto a full disk: one line, and the file that was there is intact
    (it used to be truncated to a torn zip)."""
    out = tmp_path / "out.npz"
    out.write_bytes(compact.read_bytes())

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", full)
    code, err, _ = _cli(["data", "pack", "--db", str(toy_db), "-o", str(out)], capsys)
    _one_line_error(code, err, "No space left on device")
    assert out.read_bytes() == compact.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("what", ["train --out under a file", "decompose an empty run folder"])
def test_unwritable_outputs_and_empty_run_folders_are_one_line(what, toy_db, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    empty = tmp_path / "emptyrun"
    empty.mkdir()
    if what.startswith("train"):
        argv, phrase = ["train", "--db", str(toy_db), "--out", str(afile / "run"),
                        "--quiet"], "Not a directory|File exists"
    else:
        argv, phrase = ["decompose", str(empty), "--db", str(toy_db)], "holds no checkpoint"
    code, err, _ = _cli(argv, capsys)
    _one_line_error(code, err, phrase)
    assert list(empty.iterdir()) == []  # a reader writes nothing into the folder


def test_load_trained_of_an_empty_folder_writes_nothing(tmp_path):
    from jbo.train import load_trained

    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        load_trained(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ §4: tests and metadata that travel
def test_postgres_cases_skip_without_psycopg2(tmp_path):
    """Without a server and without psycopg2 (a plain `.[test]` install), the PostgreSQL
    fixture skips; it used to import psycopg2 first and error."""
    (tmp_path / "test_pg.py").write_text(
        "from tests.backends import db_url  # noqa: F401\n\n"
        "def test_x(db_url):\n    assert db_url\n")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["psycopg2"] = None  # `import psycopg2` raises ImportError
        sys.path.insert(0, {str(ROOT)!r})
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=",
                              "--rootdir", {str(tmp_path)!r}, {str(tmp_path / "test_pg.py")!r}]))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "JBO_TEST_POSTGRES_URL")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"1 passed, 1 skipped", proc.stdout), proc.stdout[-2000:]
    assert "error" not in proc.stdout.splitlines()[-1]


NUMPY2_ONLY = ("bitwise_count", "trapezoid", "unstack", "isdtype", "vecdot", "cumulative_sum",
               "matrix_transpose", "permute_dims", "astype(")


def test_declared_numpy_minimum_covers_the_api_used():
    """pyproject's numpy minimum allows no release that lacks a function jbo calls."""
    text = (ROOT / "pyproject.toml").read_text()
    major = int(re.search(r'"numpy>=(\d+)', text).group(1))
    used = sorted({f"np.{name}" for path in (ROOT / "jbo").rglob("*.py")
                   for name in NUMPY2_ONLY if f"np.{name}" in path.read_text()})
    assert major >= 2 or not used, f"numpy>={major} declared, but jbo uses {used} (NumPy 2)"
