"""Bugs a new user found on the decomposition path (issue 25 §5, numbering kept), each tested for
the whole class of input: every entry point of a cutoff, every target of ``jbo decompose``, every
leaf of a model file, every place ``which`` is taken, two models of one class in one cache."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import flax.serialization
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones

from jbo import models, potentials
from jbo.adapters import fingerprint, from_ase
from jbo.calculator import JboCalculator
from jbo.checks import ExpansionError
from jbo.cli import main
from jbo.decompose import body_orders, connected_plan
from jbo.potential import Potential, as_potential
from jbo.models import Model
from tests.train.test_train_forces import SMALL
from tests.toy import toy_cluster


def _run(argv, capsys):
    """``jbo`` on argv: (exit status, stdout, stderr lines)."""
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.strip()]


def _one_line_error(rc, err, code=2, phrase=""):
    assert rc == code, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert phrase.lower() in err[0].lower(), err[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small SOAP-BPNN model file (H and O, cutoff 3 Å, is_local)."""
    module = models.create("soap_bpnn", cutoff=3.0, species=(1, 8), **SMALL["soap_bpnn"])
    params = models.init(module, 3)
    trained = Model.of(module, params, {1: -13.6, 8: -2041.3}, 0.37, step=0)
    return models.save(tmp_path_factory.mktemp("model") / "m.jbo", trained)


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    """Two H clusters (3 and 4 atoms) in an extxyz file."""
    import ase.io
    path = tmp_path_factory.mktemp("frames") / "two.extxyz"
    ase.io.write(path, [Atoms(f"H{n}", positions=toy_cluster(n, n)) for n in (3, 4)])
    return path


# ----------------------------------------------------------------------------- 6: jbo decompose


def test_model_file_decomposes_exactly_the_given_structures(model_file, frames_file, tmp_path,
                                                            capsys):
    """Bug 6: ``jbo decompose m.jbo --structures F`` decomposed the database instead."""
    import ase.io
    out = tmp_path / "m.json"
    rc, _, err = _run(["decompose", str(model_file), "--structures", str(frames_file),
                       "--json", str(out)], capsys)
    assert rc == 0, err
    rows = json.loads(out.read_text())
    pot = models.load(model_file)
    frames = ase.io.read(frames_file, index=":")
    assert [r["n"] for r in rows] == [3, 4]
    for row, atoms in zip(rows, frames):
        want = body_orders(pot, atoms)  # the engine called directly, same process
        np.testing.assert_allclose(row["per_order_ev"], np.asarray(want.per_order),
                                   rtol=0, atol=1e-10)
        assert row["energy_ev"] == pytest.approx(float(want.total), abs=1e-10)
        assert row["mode"] == "exhaustive" and row["formula"] == atoms.get_chemical_formula()
    assert (tmp_path / "m.png").is_file()  # --plot defaults to next to --json, as for --calculator
    # the same JSON layout as --calculator writes
    calc_out = tmp_path / "emt.json"
    assert _run(["decompose", "--calculator", "emt", "--structures", str(frames_file),
                 "--json", str(calc_out)], capsys)[0] == 0
    assert [set(r) for r in json.loads(calc_out.read_text())] == [set(r) for r in rows]


def test_model_file_takes_cutoff_and_plot(model_file, frames_file, tmp_path, capsys):
    """Bug 6: --cutoff and --plot were ignored for a model: connected mode equals the engine's."""
    import ase.io
    out, plot = tmp_path / "c.json", tmp_path / "spectrum.png"
    rc, _, err = _run(["decompose", str(model_file), "--structures", str(frames_file),
                       "--cutoff", "3.0", "--max-order", "3", "--json", str(out),
                       "--plot", str(plot)], capsys)
    assert rc == 0, err
    pot = models.load(model_file)
    for row, atoms in zip(json.loads(out.read_text()), ase.io.read(frames_file, index=":")):
        want = body_orders(pot, atoms, cutoff=3.0, max_order=3)
        assert row["mode"] == "connected"
        np.testing.assert_allclose(row["per_order_ev"], np.asarray(want.per_order),
                                   rtol=0, atol=1e-10)
    assert plot.is_file()


@pytest.mark.parametrize("target,extra,phrase", [
    ("file", ["--which", "latest"], "--which"),
    ("file", ["--workers", "2"], "--calculator"),
    ("file", ["--cache", "c.sqlite"], "--calculator"),
    ("file", ["--on-error", "nan"], "--calculator"),
    ("file", ["--pbc", "vacuum"], "--structures"),
    ("file+frames", ["--db", "x.npz"], "--db"),
    ("file+frames", ["--split", "train"], "--split"),
    ("calculator", ["--db", "x.npz"], "--db"),
    ("calculator", ["--which", "best"], "--which"),
    ("empty_run", [], "holds no"),
])
def test_options_that_do_not_apply_are_refused_in_one_line(target, extra, phrase, model_file,
                                                           frames_file, tmp_path, capsys):
    """Bug 6/15: an option that does not act on the chosen target was silently ignored."""
    base = {"file": ["decompose", str(model_file)],
            "file+frames": ["decompose", str(model_file), "--structures", str(frames_file)],
            "calculator": ["decompose", "--calculator", "emt", "--structures", str(frames_file)],
            "empty_run": ["decompose", str(tmp_path)]}[target]
    rc, out, err = _run(base + extra, capsys)
    _one_line_error(rc, err, 2, phrase)


# --------------------------------------------------------------- the CLI's other unclear errors


def needs_arguments(rc):  # a --calculator factory that cannot be called bare
    return LennardJones(rc=rc)


def raising_factory():
    raise RuntimeError("no license for this code")


class FailsOnTriples(Calculator):
    """LJ that raises on 3-atom subclusters (a calculator failing on some geometries)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) == 3:
            raise RuntimeError("SCF did not converge")
        lj = LennardJones()
        self.results = {"energy": lj.get_potential_energy(self.atoms.copy())}


def fails_on_triples():
    return FailsOnTriples()


def short_lj():  # declares 1 Å for an LJ that reaches 3 Å (bug 8 through the CLI)
    return from_ase(LennardJones(), cutoff=1.0)


@pytest.mark.parametrize("calc,extra,phrase", [
    ("tests.test_outside_bugs:needs_arguments", [], "without arguments"),
    ("tests.test_outside_bugs:raising_factory", [], "no license for this code"),
    ("tests.test_outside_bugs:nothing_here", [], "cannot load"),
    ("emt", ["--cache", "DIR"], "is a directory"),
    ("emt", ["--cache", "FILE/sub/c.sqlite"], "cannot use"),
    ("tests.test_outside_bugs:fails_on_triples", [], "--on-error nan"),
    ("emt", ["--cutoff", "-1"], "--cutoff"),
    ("emt", ["--cutoff", "nan"], "--cutoff"),
    ("emt", ["--cutoff", "inf"], "--cutoff"),
    ("emt", ["--cutoff", "0"], "--cutoff"),
    ("emt", ["--cutoff", "abc"], "--cutoff"),
])
def test_calculator_errors_are_one_line(calc, extra, phrase, frames_file, tmp_path, capsys):
    (tmp_path / "FILE").write_text("a file, not a folder")
    extra = [e.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "FILE"))
             for e in extra]
    rc, _, err = _run(["decompose", "--calculator", calc, "--structures", str(frames_file),
                       *extra], capsys)
    _one_line_error(rc, err, 2, phrase)


@pytest.mark.parametrize("max_order", [[], ["--max-order", "3"]])
def test_cli_offers_on_error_nan(max_order, frames_file, tmp_path, capsys):
    """The error text suggested on_error='nan', which the CLI did not offer: --on-error nan
    records NaN (null in the JSON) for the orders holding a failed triple; E^(1), E^(2) are
    kept (also with --max-order, where a NaN energy once spoiled every order)."""
    import ase.io
    out = tmp_path / "nan.json"
    with pytest.warns(RuntimeWarning, match="SCF did not converge"):
        rc, _, err = _run(["decompose", "--calculator", "tests.test_outside_bugs:fails_on_triples",
                           "--structures", str(frames_file), *max_order,
                           "--on-error", "nan", "--json", str(out)], capsys)
    assert rc == 0, err
    for row, atoms in zip(json.loads(out.read_text()), ase.io.read(frames_file, index=":")):
        assert row["per_order_ev"][2:3] == [None]
        want = body_orders(from_ase(LennardJones(), cutoff=None), atoms, max_order=2)
        np.testing.assert_allclose(row["per_order_ev"][:2], np.asarray(want.per_order),
                                   rtol=0, atol=1e-12)


def test_too_short_cutoff_through_the_cli_is_a_failed_check(frames_file, capsys):
    rc, _, err = _run(["decompose", "--calculator", "tests.test_outside_bugs:short_lj",
                       "--structures", str(frames_file), "--cutoff", "1.0"], capsys)
    _one_line_error(rc, err, 1, "cutoff")


# ----------------------------------------------------------------------------- 7: cache keys


class ScaledLJ(LennardJones):
    """LJ times ``factor``, an attribute outside ``.parameters`` (as weights of an MLIP are)."""

    def __init__(self, factor: float, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {k: self.factor * v for k, v in self.results.items()}


def test_two_calculators_of_one_class_do_not_share_cache_entries(tmp_path):
    """Bug 7: the key was class + .parameters, so the second calculator read the first one's
    energies from the disk cache."""
    pos = toy_cluster(4, 1, d_min=1.0, d_max=1.3)
    cache = tmp_path / "shared.sqlite"
    e1 = body_orders(from_ase(ScaledLJ(1.0), cutoff=None, cache=cache), pos).per_order
    e2 = body_orders(from_ase(ScaledLJ(2.0), cutoff=None, cache=cache), pos).per_order
    fresh = body_orders(from_ase(ScaledLJ(2.0), cutoff=None, cache=False), pos).per_order
    np.testing.assert_allclose(np.asarray(e2), 2 * np.asarray(e1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(e2), np.asarray(fresh))
    # the same state resumes from the file: nothing computed again
    again = from_ase(ScaledLJ(2.0), cutoff=None, cache=cache)
    body_orders(again, pos)
    assert again.n_evaluated == 0


try:
    import torch

    class TorchPair(torch.nn.Module):
        """A pair energy times ``factor``, a plain attribute (not in the state_dict)."""

        def __init__(self, factor: float):
            super().__init__()
            self.factor = factor

        def forward(self, pos, num, mask):
            eye = torch.eye(pos.shape[1], dtype=pos.dtype)
            return self.factor * (1 / (torch.cdist(pos, pos) + eye) ** 6 - eye).sum((1, 2))
except ImportError:
    torch = None


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_two_torch_models_of_one_class_do_not_share_cache_entries(tmp_path):
    """Bug 7 for from_torch: the key digested the state_dict only."""
    from jbo.adapters import from_torch

    pos = toy_cluster(3, 2, d_min=1.0, d_max=1.3)
    cache = tmp_path / "torch.sqlite"
    e1 = body_orders(from_torch(TorchPair(1.0), cache=cache), pos).per_order
    e2 = body_orders(from_torch(TorchPair(2.0), cache=cache), pos).per_order
    np.testing.assert_allclose(np.asarray(e2), 2 * np.asarray(e1), rtol=1e-12)

    class Local(TorchPair):  # a local class does not pickle: no fingerprint, disk cache refused
        pass

    with pytest.raises(ValueError, match="tag="):
        from_torch(Local(1.0), cache=cache)


class Unpicklable(LennardJones):
    def __init__(self):
        super().__init__()
        self.hook = lambda x: x  # a lambda does not pickle: its state cannot be fingerprinted


def test_unfingerprintable_calculator_needs_a_tag_for_the_disk_cache(tmp_path):
    pos = toy_cluster(3, 3, d_min=1.0, d_max=1.3)
    with pytest.raises(ValueError, match="cannot be fingerprinted.*tag="):
        from_ase(Unpicklable(), cutoff=None, cache=tmp_path / "c.sqlite")
    ok = from_ase(Unpicklable(), cutoff=None, cache=tmp_path / "c.sqlite", tag="lj-default")
    ref = body_orders(from_ase(LennardJones(), cutoff=None, cache=False), pos).per_order
    np.testing.assert_array_equal(np.asarray(body_orders(ok, pos).per_order), np.asarray(ref))
    assert from_ase(Unpicklable(), cutoff=None).tag != from_ase(Unpicklable(), cutoff=None).tag


def test_fingerprint_is_the_same_in_another_process():
    """A disk cache resumes in a new process (PYTHONHASHSEED differs: sets are sorted)."""
    calc = ScaledLJ(1.5)
    calc.tags = {"alpha", "beta", "gamma", "delta"}
    before = fingerprint(calc)
    assert fingerprint(ScaledLJ(1.6)) != before
    code = ("from tests.test_outside_bugs import ScaledLJ; from jbo.adapters import fingerprint;"
            "c = ScaledLJ(1.5); c.tags = {'alpha', 'beta', 'gamma', 'delta'};"
            "print(fingerprint(c))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "PYTHONHASHSEED": seed},
                             check=True, timeout=300).stdout.split()[-1]
        assert out == before


# ------------------------------------------------------------- 8: Σ_k E^(k) = E when K = N


def test_too_short_declared_cutoff_is_caught_by_the_sum_check():
    """Bug 8: a pair potential reaching 3 Å declared local at 1 Å gave E^(k) = 0 beside the
    true total, silently. Σ_k E^(k) is now compared with the total whenever K = N."""
    pos = np.array([[0.0, 0, 0], [1.5, 0, 0], [3.0, 0, 0], [1.5, 1.5, 0]])
    true = potentials.morse(atom_energy=0.0)  # no cutoff: every pair interacts
    liar = dataclasses.replace(true, cutoff=1.0, is_local=True)
    with pytest.raises(ExpansionError, match="cutoff=1.0"):
        body_orders(liar, pos, cutoff=1.0)
    host_liar = from_ase(LennardJones(), cutoff=1.0)  # LJ's rc is 3 Å
    with pytest.raises(ExpansionError, match="declared cutoff"):
        body_orders(host_liar, pos, cutoff=1.0)
    # truncated below N: nothing to compare, the engine answers (no false alarm)
    assert body_orders(liar, pos, cutoff=1.0, max_order=3).mode == "connected"
    # a true cutoff passes in every mode, Σ E^(k) = E to round-off
    honest = potentials.combine(potentials.morse(cutoff=3.5), potentials.embedded_atom(cutoff=3.5))
    for kw in ({}, {"max_order": 4}, {"cutoff": 3.5}):
        r = body_orders(honest, pos, **kw)
        assert abs(float(jnp.sum(r.per_order)) - float(r.total)) < 1e-12 * (1 + abs(r.total))


# ----------------------------------------------------------------------------- 9: cutoffs


def _entry_points(pos):
    from ase.calculators.emt import EMT
    pot = potentials.morse(cutoff=3.0)
    points = {
        "from_ase": lambda c: from_ase(EMT(), cutoff=c),
        "Potential": lambda c: Potential(lambda p, x, z, m: 0.0, None, cutoff=c, is_local=True),
        "as_potential": lambda c: as_potential(lambda x, z, m: 0.0, cutoff=c, is_local=True),
        "morse": lambda c: potentials.morse(cutoff=c),
        "connected_plan": lambda c: connected_plan(pos, c, 2),
        "body_orders": lambda c: body_orders(pot, pos, cutoff=c),
    }
    try:
        import torch  # noqa: F401
        from jbo.adapters import from_torch
        points["from_torch"] = lambda c: from_torch(lambda p, z, m: p.sum((1, 2)), cutoff=c)
    except ImportError:
        pass
    return points


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 0, "3.0", True])
def test_every_cutoff_entry_point_refuses_a_bad_cutoff(bad):
    """Bug 9: from_ase(calc, cutoff=-1) (NaN, inf, 0, a string) was accepted."""
    pos = toy_cluster(3, 0)
    for name, make in _entry_points(pos).items():
        with pytest.raises((ValueError, TypeError), match="cutoff") as info:
            make(bad)
        assert "could not convert" not in str(info.value), name


# ----------------------------------------------------------------------- 11: model file leaves


def _rewrite(path, changes):
    data = flax.serialization.msgpack_restore(path.read_bytes())
    changes(data)
    path.write_bytes(flax.serialization.msgpack_serialize(data))


def _nan_param(data):
    leaf = data["params"]
    path = []
    while isinstance(leaf, dict):
        key = sorted(leaf)[0]
        path.append(key)
        leaf = leaf[key]
    parent = data["params"]
    for key in path[:-1]:
        parent = parent[key]
    arr = np.array(parent[path[-1]], copy=True)
    arr.flat[0] = np.nan
    parent[path[-1]] = arr
    return path[-1]


@pytest.mark.parametrize("what", ["scale", "baseline", "params", "inf_scale"])
def test_model_file_with_non_finite_leaves_is_refused(what, model_file, tmp_path):
    """Bug 11: a NaN scale, baseline or parameter loaded and gave NaN energies."""
    path = tmp_path / "bad.jbo"
    path.write_bytes(model_file.read_bytes())
    name = {}

    def change(data):
        if what == "scale":
            data["scale"] = math.nan
        elif what == "inf_scale":
            data["scale"] = math.inf
        elif what == "baseline":
            base = np.array(data["baseline"], np.float64)
            base[8] = np.nan
            data["baseline"] = base
        else:
            name["leaf"] = _nan_param(data)

    _rewrite(path, change)
    phrase = {"scale": "scale", "inf_scale": "scale", "baseline": "atomic number 8",
              "params": name.get("leaf", "parameter")}[what]
    with pytest.raises(ValueError, match="not finite|non-finite") as info:
        models.load(path)
    assert phrase in str(info.value) and "bad.jbo" in str(info.value)


# ----------------------------------------------------------------------------- 15: which


def test_which_is_checked_everywhere_it_is_taken(model_file):
    """Bug 15: JboCalculator(model_file, which="bogus") was accepted."""
    for which in ("bogus", None):
        with pytest.raises(ValueError, match="'best', 'latest'"):
            JboCalculator(model_file, which=which)
    with pytest.raises(ValueError, match="model file holding one parameter set"):
        JboCalculator(model_file, which="latest")
    trained = models.load(model_file)
    with pytest.raises(ValueError, match="'best', 'latest'"):
        JboCalculator(trained, which="bogus")
    atoms = Atoms("H3", positions=toy_cluster(3, 5))
    atoms.calc = JboCalculator(model_file)  # the default still works
    assert atoms.get_potential_energy() == pytest.approx(
        float(trained(atoms.positions, atoms.numbers.astype(np.int32))), abs=1e-12)
