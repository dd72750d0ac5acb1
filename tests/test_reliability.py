"""The faults and bad inputs a new user hits (issue 11): each gives the right answer or one clear
error naming the problem and the fix. Numbers are checked against independent truths."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

import jbo  # noqa: F401  (float64)
from jbo import checks, models, potentials
from jbo.decompose import body_orders, check_contract, connected_plan
from tests.toy import unvetted

POS = np.array([[0.0, 0, 0], [0.9, 0, 0], [0, 1.1, 0], [0.2, 0.3, 1.0]])
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "h_clusters.npz"


def _sqlite_db(path: Path, rows: int = 300) -> Path:
    """A real ase.db SQLite file of ``rows`` H_2 rows (~330 kB for 300), to damage in tests."""
    import ase.db
    from ase import Atoms

    with ase.db.connect(str(path), use_lock_file=False) as db:
        for i in range(rows):
            db.write(Atoms("H2", positions=[[0, 0, 0], [0.7 + 1e-3 * i, 0, 0]]), subset=i)
    return path


def morse_pair_sum(pos, k=None):
    """Independent truth: E^(1) and E^(2) of the Morse potential by explicit pair sums."""
    f = potentials.morse()
    e2 = 0.0
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            two = np.ones(2, np.int32), np.ones(2, bool)
            e2 += float(f(pos[[i, j]], *two)) - 2 * -13.6
    return -13.6 * len(pos), e2


# ------------------------------------------------------------------ numbered items
def test_connected_mode_needs_a_declared_local_function():  # item 3
    g = lambda p, s, m: potentials.morse()(p, s, m)  # noqa: E731  (declares nothing)
    with pytest.raises(ValueError, match="does not declare it: set energy_fn.is_local = True"):
        body_orders(g, POS, cutoff=0.5, max_order=4)
    g.is_local, g.cutoff = True, 50.0  # declared honestly: the connected answer is the truth
    r = body_orders(g, POS, cutoff=50.0, max_order=4)
    e1, e2 = morse_pair_sum(POS)
    np.testing.assert_allclose(r.per_order[:2], [e1, e2], atol=1e-9)
    assert e2 == pytest.approx(-19.40, abs=0.01)


def test_stale_connected_plan_is_refused():  # item 4
    fn = potentials.combine(potentials.morse(cutoff=2.5), potentials.axilrod_teller(0.5, 2.5))
    with pytest.raises(ValueError, match="plan was built for other positions"):
        body_orders(fn, POS, plan=connected_plan(POS * 3, 2.5, 3), max_order=3)
    good = body_orders(fn, POS, plan=connected_plan(POS, 2.5, 3), max_order=3)
    np.testing.assert_allclose(good.per_order, body_orders(fn, POS, max_order=3).per_order,
                               atol=1e-9)
    assert good.per_order[1] == pytest.approx(-11.08, abs=0.01)


def _tiny_model():
    module = models.create("linear_ace", cutoff=3.0, correlation=1, max_radial=2,
                           max_angular=1)
    return module, models.init(module, 0)


def test_nan_positions_are_refused_at_every_entry_point(tmp_path):  # item 5
    from jbo.calculator import JboCalculator
    from jbo.data.records import read_records
    from jbo.models import Model

    module, params = _tiny_model()
    nan = np.full((4, 3), np.nan)
    z, m = np.ones(4, np.int32), np.ones(4, bool)
    for call in (lambda: body_orders(potentials.morse(), nan),
                 lambda: models.energy_fn(module, params)(nan, z, m),
                 lambda: module.apply(params, nan, z, m)):
        with pytest.raises(ValueError, match="not finite"):
            call()
    calc = JboCalculator(Model.of(module, params, {1: -13.6}, 1.0, step=0))
    atoms = Atoms("H4", positions=POS)
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    bad = Atoms("H4", positions=nan)
    bad.calc = calc
    with pytest.raises(ValueError, match="not finite"):
        bad.get_potential_energy()
    from ase.calculators.singlepoint import SinglePointCalculator

    from jbo.data.store import connect

    db = connect(str(tmp_path / "nan.db"))
    for atoms, subset in ((Atoms("H", positions=[[0, 0, 0]]), 1), (Atoms("H4", positions=POS), 15)):
        atoms.calc = SinglePointCalculator(atoms, energy=-13.6 * len(atoms))
        row_id = db.write(atoms, key_value_pairs=dict(cluster="x", subset=subset, n_parent=4,
                                                      split="train", status="ok"))
    with sqlite3.connect(tmp_path / "nan.db") as con:  # a labelled row whose geometry is NaN
        con.execute("UPDATE systems SET positions = ? WHERE id = ?", (nan.tobytes(), row_id))
    with pytest.raises(ValueError, match=f"row {row_id} .*not finite"):
        read_records(str(tmp_path / "nan.db"))


@pytest.mark.parametrize("hypers,phrase", [
    (dict(cutoff=float("nan")), "cutoff=nan must be a finite number > 0"),
    (dict(cutoff=float("inf")), "cutoff=inf must be a finite number > 0"),
    (dict(cutoff=-1.0), "must be a finite number > 0"),
    (dict(max_radial=0), "max_radial=0 must be an int >= 1"),
    (dict(correlation=2.5), "correlation=2.5 must be an int >= 1"),
    (dict(max_angular=-1), "max_angular=-1 must be an int >= 0"),
])
def test_model_hyperparameters_are_validated(hypers, phrase):  # item 6
    with pytest.raises(ValueError, match=phrase):
        models.create("linear_ace", **hypers)


@pytest.mark.parametrize("name,hypers,phrase", [
    ("pet", dict(num_layers=0), "num_layers=0 must be an int >= 1"),
    ("mace", dict(num_channels=0), "num_channels=0 must be an int >= 1"),
    ("soap_bpnn", dict(hidden=(16, 0)), "hidden=.* must be a list of ints >= 1"),
    ("nequip", dict(avg_num_neighbors=float("nan")), "must be a finite number > 0"),
])
def test_zero_layers_and_channels_are_refused(name, hypers, phrase):  # item 6
    with pytest.raises(ValueError, match=phrase):
        models.create(name, **hypers)


@pytest.mark.parametrize("bad", [2.7, "2", True, np.float64(2.0)])
def test_max_order_must_be_an_int(bad):  # item 11
    with pytest.raises(TypeError, match="max_order must be an int"):
        body_orders(potentials.morse(), POS, max_order=bad)
    r = body_orders(potentials.morse(), POS, max_order=np.int64(2))  # numpy ints are ints
    np.testing.assert_allclose(r.per_order, morse_pair_sum(POS), atol=1e-9)


def test_contract_check_catches_a_function_that_ignores_the_mask():  # item 12
    leaky = lambda p, s, m: -13.6 * m.shape[0] + 0 * jnp.sum(p)  # noqa: E731
    with pytest.raises(checks.ContractError, match=r"atoms \[\d, \d\] give -54.4 eV with the "
                       r"others masked but -27.2 eV extracted alone"):
        body_orders(leaky, POS)
    with pytest.raises(checks.ContractError):
        check_contract(leaky, POS)
    # switched off, the engine does what it is told: on N-wide masks every subset "weighs"
    # the full 4 atoms, E(S) = -54.4 eV, so ε(S) = (-1)^(|S|+1) (-54.4) and E^(k) = C(4,k) ε
    r = body_orders(leaky, POS, layout="masks", check_contract=False)
    np.testing.assert_allclose(r.per_order, [-217.6, 326.4, -217.6, 54.4], atol=1e-9)


def test_contract_check_runs_once_per_architecture_and_passes_honest_ones(monkeypatch):  # 12
    seen = []
    real = checks.check_contract
    monkeypatch.setattr(checks, "check_contract", lambda f, *a, **k: seen.append(f) or real(
        f, *a, **k))
    fn = unvetted(potentials.morse(cutoff=7.25))  # an architecture no other test has checked
    for p in (POS, POS * 1.1, POS):
        body_orders(fn, p, max_order=2)
    body_orders(fn, POS, max_order=2, check_contract=False)
    new_params = unvetted(potentials.morse(depth=3.0, cutoff=7.25))
    body_orders(new_params, POS, max_order=2)
    assert seen == [fn]  # once per architecture, whatever the positions and parameters
    other = unvetted(potentials.embedded_atom(cutoff=7.25))
    body_orders(other, POS)
    assert seen == [fn, other]
    body_orders(potentials.embedded_atom(cutoff=7.5), POS)  # proven by the tests: not checked
    assert seen == [fn, other]
    module, params = _tiny_model()
    assert real(models.energy_fn(module, params), POS)  # every zoo model is honest
    assert real(potentials.axilrod_teller(0.5), POS * 1.5)


# ------------------------------------------------------------------ unclear errors: the API
def _env(var, value):
    old = os.environ.get(var)
    os.environ[var] = value
    return old


def _api_cases(tmp_path):
    module, params = _tiny_model()
    fn = potentials.morse(cutoff=2.5)
    text = tmp_path / "notes.db"
    text.write_text("this is not a database\n")
    whole = _sqlite_db(tmp_path / "whole.db").read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(whole[: len(whole) // 2])
    folder = tmp_path / "folder.db"
    folder.mkdir()
    from jbo.calculator import JboCalculator
    from jbo.data.records import read_records
    from jbo.data.store import StoreError, connect
    from jbo.models import Model

    calc = JboCalculator(Model.of(module, params, {1: -13.6}, 1.0, step=0))

    def energy(atoms):
        atoms.calc = calc
        return atoms.get_potential_energy()

    z4, m4 = np.ones(4, np.int32), np.ones(4, bool)
    return {
        "species 2**40": (lambda: body_orders(fn, POS, np.array([1, 1, 1, 2**40])),
                          ValueError, "invalid atomic number 1099511627776"),
        "chunk_size=-3": (lambda: body_orders(fn, POS, chunk_size=-3),
                          ValueError, "chunk_size must be >= 1"),
        "complex energy": (lambda: body_orders(lambda p, s, m: fn(p, s, m) * (1 + 1j), POS,
                                               check_contract=False),
                           TypeError, "must return a real energy"),
        "NaN subset energy": (lambda: body_orders(
            lambda p, s, m: fn(p, s, m) / (jnp.sum(m) - 2), POS, check_contract=False),
            FloatingPointError, r"non-finite energy .* subset of atoms \(0, 1\)"),
        "plan= and cutoff=": (lambda: body_orders(fn, POS, cutoff=3.0, max_order=3,
                                                  plan=connected_plan(POS, 2.5, 3)),
                              ValueError, "contradicts the plan's cutoff"),
        "bad layout, truncated": (lambda: body_orders(fn, POS, max_order=2, layout="dense"),
                                  ValueError, "layout must be one of"),
        "JBO_MEMORY_LIMIT=4GB": (lambda: checks.memory_limit(), ValueError,
                                 "JBO_MEMORY_LIMIT='4GB' is not a positive number"),
        "apply: He on an H model": (lambda: module.apply(params, POS, np.array([1, 1, 2, 1]),
                                                         m4),
                                    ValueError, r"atomic numbers \[2\] are not among"),
        "apply: species length": (lambda: module.apply(params, POS, z4[:3], m4),
                                  ValueError, "species must have shape"),
        "apply: mask length": (lambda: module.apply(params, POS, z4, m4[:3]),
                               ValueError, "atom_mask must be a bool array of shape"),
        "apply: float mask": (lambda: module.apply(params, POS, z4, np.ones(4)),
                              ValueError, "atom_mask must be a bool array"),
        "apply: N = 0": (lambda: module.apply(params, np.zeros((0, 3)), z4[:0], m4[:0]),
                         ValueError, "cluster is empty"),
        "calculator: duplicate atoms": (lambda: energy(Atoms("H2", positions=[[0, 0, 0]] * 2)),
                                        ValueError, "duplicate atoms"),
        "calculator: empty Atoms": (lambda: energy(Atoms()), ValueError, "cluster is empty"),
        "store: text file named .db": (lambda: connect(str(text)), StoreError,
                                       "is not a SQLite database"),
        "store: directory": (lambda: connect(str(folder)), StoreError, "is a directory"),
        "training data: text file": (lambda: read_records(text), StoreError,
                                     "is not a SQLite database"),
        "training data: truncated": (lambda: read_records(truncated), StoreError,
                                     "truncated .* or corrupted"),
    }


API_CASES = ["species 2**40", "chunk_size=-3", "complex energy", "NaN subset energy",
             "plan= and cutoff=", "bad layout, truncated", "JBO_MEMORY_LIMIT=4GB",
             "apply: He on an H model", "apply: species length", "apply: mask length",
             "apply: float mask", "apply: N = 0", "calculator: duplicate atoms",
             "calculator: empty Atoms", "store: text file named .db", "store: directory",
             "training data: text file", "training data: truncated"]


@pytest.mark.parametrize("case", API_CASES)
def test_api_errors_are_clear(case, tmp_path, monkeypatch):
    monkeypatch.setenv("JBO_MEMORY_LIMIT", "4GB" if "MEMORY" in case else "4e9")
    call, exc, phrase = _api_cases(tmp_path)[case]
    with pytest.raises(exc, match=phrase):
        call()


# ------------------------------------------------------------------ unclear errors: the CLI
def _bad_dbs(tmp_path) -> dict[str, str]:
    text = tmp_path / "notes.db"
    text.write_text("this is not a database\n")
    folder = tmp_path / "dir.db"
    folder.mkdir()
    out = {"text": str(text), "dir": str(folder)}
    whole = _sqlite_db(tmp_path / "whole.db").read_bytes()
    (tmp_path / "cut.db").write_bytes(whole[: len(whole) // 2])
    out["truncated"] = str(tmp_path / "cut.db")
    ro = tmp_path / "ro.db"
    ro.write_bytes(whole)
    ro.chmod(0o444)
    out["readonly"] = str(ro)
    return out


CLI_CASES = [
    ("label text", ["jbo.data", "label", "--db", "{text}", "--sizes", "2", "--count", "1",
                    "--workers", "0"], "is not a SQLite database"),
    ("label dir", ["jbo.data", "label", "--db", "{dir}", "--sizes", "2", "--count", "1",
                   "--workers", "0"], "is a directory"),
    ("label truncated", ["jbo.data", "label", "--db", "{truncated}", "--sizes", "2",
                         "--count", "1", "--workers", "0"], "truncated"),
    ("label read-only", ["jbo.data", "label", "--db", "{readonly}", "--sizes", "2",
                         "--count", "1", "--workers", "0"], "is read-only"),
    ("mbe text", ["jbo.data", "mbe", "--db", "{text}"], "is not a SQLite database"),
    ("summary dir", ["jbo.data", "summary", "--db", "{dir}"], "is a directory"),
    ("compact truncated", ["jbo.data", "compact", "--db", "{truncated}"], "truncated"),
    ("generate --count -2", ["jbo.data", "generate", "--sizes", "3", "--count", "-2", "-o",
                             "x.extxyz"], "bad count '-2'"),
    ("label --clusters junk", ["jbo.data", "label", "--db", "{tmp}/new.db", "--clusters",
                               "{text}", "--workers", "0"], "cannot read clusters"),
    ("train text", ["jbo", "train", "--db", "{text}", "--out", "{tmp}/run", "--quiet"],
     "is not a SQLite database"),
    ("train dir", ["jbo", "train", "--db", "{dir}", "--out", "{tmp}/run", "--quiet"],
     "is a directory"),
    ("main job --order 99", ["train_body_order_reg", "--db", str(SHIPPED), "--order", "99",
                             "--out", "{tmp}/main"], "largest training cluster"),
]


@pytest.mark.parametrize("name,argv,phrase", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_errors_are_clear(name, argv, phrase, tmp_path, capsys, monkeypatch):
    """Exit code 2, one line naming the problem, no traceback."""
    dbs = dict(_bad_dbs(tmp_path), tmp=str(tmp_path))
    if "main job" in name and not SHIPPED.exists():
        pytest.skip("needs the shipped dataset")
    if "read-only" in name and os.geteuid() == 0:
        pytest.skip("root writes to read-only files: nothing to refuse")
    monkeypatch.chdir(tmp_path)
    tool, *args = [a.format(**dbs) for a in argv]
    if tool == "jbo.data":  # `jbo data ...`: the same parser
        from jbo.cli import main
        args = ["data", *args]
    elif tool == "jbo":
        from jbo.cli import main
    else:
        from experiments.train_body_order_reg import main
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert phrase in err and "Traceback" not in err
    if "read-only" in name:
        assert sqlite3.connect(dbs["readonly"]).execute("SELECT COUNT(*) FROM systems")
