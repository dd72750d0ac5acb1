"""Reference data: generators, PySCF labels against independent numbers, storage, MBE, CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from jbo.data import clusters, fci, pyscf_tools, reference
from jbo.data.reference import HARTREE_EV, LabelError, compute
from tests.backends import count as _count_rows, db_url, rows as _db_rows  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
def _have_block2() -> bool:
    try:
        import block2  # noqa: F401

        return True
    except ImportError:
        return False


HAVE_BLOCK2 = _have_block2()
METHODS = ["fci", "uhf", "uccsd(t)"] + (["dmrg"] if HAVE_BLOCK2 else [])


def ha(atoms, method="fci", basis="sto-3g", **kw) -> float:
    return compute(atoms, method, basis, **kw).energy / HARTREE_EV


def atom(z=0.0):
    return Atoms("H", positions=[[0.0, 0.0, z]])


def h2(r):
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, r]])


# ------------------------------------------------------------------ independent numbers
@pytest.mark.parametrize("basis,ref", [("sto-3g", -0.4665819), ("6-31g", -0.4982329)])
@pytest.mark.parametrize("method", METHODS)
def test_h_atom_every_method(method, basis, ref):
    lab = compute(atom(), method, basis, forces=True)
    assert lab.energy / HARTREE_EV == pytest.approx(ref, abs=2e-7)
    assert lab.spin == 1


def test_h2_fci_sto3g_equilibrium():
    assert ha(h2(0.74)) == pytest.approx(-1.1372838, abs=2e-7)


@pytest.mark.parametrize("basis", ["sto-3g", "6-31g"])
@pytest.mark.parametrize("method", METHODS)
def test_h2_at_10A_is_two_atoms(method, basis):
    """RHF would be 0.26-0.36 Ha too high here; every method offered must dissociate."""
    assert ha(h2(10.0), method, basis) == pytest.approx(2 * ha(atom(), method, basis), abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_odd_electrons_every_method(method):
    h3 = clusters.random_cluster(3, "high", 4)
    lab = compute(h3, method, "sto-3g")
    assert np.isfinite(lab.energy) and lab.spin % 2 == 1
    e_fci = ha(h3)
    if method == "uhf":
        assert lab.energy / HARTREE_EV > e_fci
    else:
        assert lab.energy / HARTREE_EV == pytest.approx(e_fci, abs=2e-3)


def _far(*parts, gap=12.0):
    out = Atoms()
    for i, p in enumerate(parts):
        q = p.copy()
        q.translate([i * gap, 0, 0])
        out += q
    return out


def test_uccsd_t_is_exact_for_a_stretched_pair():
    """Two electrons: CCSD is exact, even where its equations on a broken-symmetry UHF stall."""
    pair = h2(4.05)
    assert ha(pair, "uccsd(t)") == pytest.approx(ha(pair), abs=1e-9)
    assert ha(pair, "uhf") > ha(pair) + 1e-6


@pytest.mark.slow
def test_uccsd_t_non_convergence_is_a_recorded_failure():
    """A stretched H_3 (subset 26 of low-n5-s0040) where UCCSD does not converge."""
    sub = clusters.subcluster(clusters.random_cluster(5, "low", 40), 26)
    with pytest.raises(LabelError, match="UCCSD did not converge"):
        compute(sub, "uccsd(t)")


def test_fci_size_consistency_far_fragments():
    a = clusters.random_cluster(3, "high", 1)
    b = clusters.random_cluster(2, "low", 2)
    c = clusters.random_cluster(2, "high", 3)
    for parts in [(a, atom()), (b, c), (a, b), (a, atom(), c)]:
        whole = ha(_far(*parts))
        assert whole == pytest.approx(sum(ha(p) for p in parts), abs=1e-6)


def test_fci_triplet_ground_state_recorded():
    """low-n8-s1002 is a triplet, 3.5e-4 Ha below its lowest singlet: found and recorded."""
    from pyscf import fci

    at = clusters.random_cluster(8, "low", 1002)
    lab = compute(at)
    assert lab.spin == 2 and lab.s2 == pytest.approx(2.0, abs=1e-6)
    mol = pyscf_tools.mol(at, "sto-3g", 0)
    s, u = np.linalg.eigh(mol.intor("int1e_ovlp"))
    mo = u @ np.diag(s**-0.5) @ u.T
    h1 = mo.T @ (mol.intor("int1e_kin") + mol.intor("int1e_nuc")) @ mo
    from pyscf import ao2mo

    eri = ao2mo.full(mol.intor("int2e", aosym="s8"), mo)
    singlet, _ = fci.direct_spin0.FCI(mol).kernel(h1, eri, 8, (4, 4), ecore=mol.energy_nuc())
    assert lab.energy / HARTREE_EV < singlet - 3e-4


@pytest.mark.parametrize("method", ["fci", "uhf"])
def test_forces_match_finite_differences(method):
    at = clusters.random_cluster(4, "low", 2)
    f = compute(at, method, forces=True).forces
    d = 1e-4
    for i, k in [(0, 0), (2, 1)]:
        p, m = at.copy(), at.copy()
        p.positions[i, k] += d
        m.positions[i, k] -= d
        fd = -(compute(p, method).energy - compute(m, method).energy) / (2 * d)
        assert f[i, k] == pytest.approx(fd, abs=2e-5)


def test_uhf_finds_broken_symmetry_for_stretched_even_clusters():
    h4 = clusters.random_cluster(4, "low", 8)
    lab = compute(h4, "uhf")
    assert lab.s2 > 0.5  # a spin-contaminated broken-symmetry determinant, not RHF


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        compute(atom(), "ccsdtq")
    with pytest.raises(ValueError, match="basis .no-such-basis. is not available"):
        compute(atom(), "fci", "no-such-basis")
    with pytest.raises(ValueError, match="non-finite"):
        compute(Atoms("H2", positions=[[0, 0, 0], [0, 0, np.nan]]))
    with pytest.raises(ValueError, match="overlapping"):
        compute(h2(0.05))
    with pytest.raises(ValueError, match="hydrogen"):
        compute(Atoms("He", positions=[[0, 0, 0]]), "uhf")
    with pytest.raises(ValueError, match="no atoms"):
        compute(Atoms())


def test_energy_function_api_in_ev():
    assert reference.energy(h2(0.74)) == pytest.approx(-1.1372838 * HARTREE_EV, abs=1e-5)


def test_uhf_non_convergence_raises_label_error():
    at = clusters.random_cluster(4, "low", 3)
    st = reference.Settings(scf_max_cycle=1, n_random_guesses=0)
    with pytest.raises(LabelError, match="did not converge"):
        compute(at, "uhf", settings=st)


# ------------------------------------------------------------------ generators
@pytest.mark.parametrize("regime", ["low", "high"])
def test_cluster_generator_constraints(regime):
    reg = clusters.REGIMES[regime]
    for n in (2, 5, 9, 12):
        for seed in range(5):
            at = clusters.random_cluster(n, regime, seed)
            nn = clusters.nearest_neighbour_distances(at.positions)
            assert len(at) == n and set(at.get_chemical_symbols()) == {"H"}
            assert nn.min() >= reg.d_min - 1e-12 and nn.max() <= reg.d_max + 1e-12
            assert clusters.is_connected(at.positions, reg.d_max)
            assert at.info["cluster"] == clusters.cluster_id(regime, n, seed)


def test_cluster_generator_reproducible():
    a = clusters.random_cluster(7, "low", 42)
    b = clusters.random_cluster(7, "low", 42)
    c = clusters.random_cluster(7, "low", 43)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    s = clusters.generate([4, 5], ["low", "high"], 3, seed=10, split="heldout")
    assert len(s) == 12 and len({x.info["cluster"] for x in s}) == 12
    assert all(x.info["split"] == "heldout" for x in s)


def test_subclusters():
    at = clusters.random_cluster(5, "high", 0)
    sub = clusters.subcluster(at, 0b10110)
    np.testing.assert_array_equal(sub.positions, at.positions[[1, 2, 4]])
    assert sub.info["subset"] == 0b10110 and sub.info["cluster"] == at.info["cluster"]
    assert clusters.subsets(5) == list(range(1, 32)) and clusters.subsets(5, "full") == [31]
    with pytest.raises(ValueError):
        clusters.subcluster(at, 0)
    with pytest.raises(ValueError):
        clusters.random_cluster(4, "medium", 0)


# ------------------------------------------------------------------ storage, labelling, MBE
def _rows(path):
    with sqlite3.connect(path, timeout=30) as con:
        keys = con.execute("SELECT key_value_pairs FROM systems").fetchall()
    import json

    return [json.loads(k[0]) for k in keys]


def _assert_complete(path, parents, method="fci", basis="sto-3g"):
    rows = _db_rows(path)
    keys = Counter((r["cluster"], r["subset"], r["method"], r["basis"]) for r in rows)
    assert max(keys.values()) == 1, "duplicate rows"
    want = {(p.info["cluster"], m, method, basis) for p in parents
            for m in range(1, 2 ** len(p))}
    assert set(keys) == want
    return rows


def test_label_store_mbe_serial(tmp_path):
    from jbo.data.label import label
    from jbo.data.mbe import all_mbe, reference_mbe
    from jbo.data.records import read_parents
    from jbo.data.store import connect

    db_path = str(tmp_path / "ref.db")
    parents = clusters.generate([3, 4], ["low"], 1, seed=5)
    rep = label(db_path, parents, n_workers=0, progress=False)
    assert rep.written_ok == 7 + 15 and rep.written_failed == 0
    rows = _assert_complete(db_path, parents)
    for r in rows:  # the contract's keys
        assert {"cluster", "subset", "n_parent", "regime", "split", "method", "basis",
                "spin", "status", "seed"} <= set(r)
    again = label(db_path, parents, n_workers=0, progress=False)
    assert again.written_ok == 0 and again.skipped == 22
    db = connect(db_path)
    full = db.get(cluster=parents[1].info["cluster"], subset=15)
    assert full.energy == pytest.approx(reference.energy(parents[1]), abs=1e-7)
    assert full.forces.shape == (4, 3)
    stored = read_parents(db_path)
    m = reference_mbe(next(p for p in stored if p.cluster == parents[1].info["cluster"]))
    assert m.truncated[-1] == pytest.approx(m.total, abs=1e-9)
    assert m.per_order[0] == pytest.approx(4 * reference.energy(atom()), abs=1e-7)
    res, skipped = all_mbe(stored)
    assert len(res) == 2 and not skipped


def test_failure_path_and_retry(db_url, monkeypatch):
    from jbo.data.label import label
    from jbo.data.store import connect

    db_path = db_url
    parents = clusters.generate([3], ["high"], 1, seed=1)
    real = fci.solve

    def flaky(atoms, *a, **k):
        if len(atoms) == 3:
            raise LabelError("SCF did not converge (simulated)")
        return real(atoms, *a, **k)

    monkeypatch.setattr(fci, "solve", flaky)
    rep = label(db_path, parents, n_workers=0, progress=False)
    assert rep.written_failed == 1 and "simulated" in rep.failures[0][1]
    db = connect(db_path)
    bad = db.get(status="failed")
    assert bad.subset == 7 and "simulated" in bad.reason and bad.get("energy") is None
    assert label(db_path, parents, n_workers=0, progress=False).written_failed == 0
    monkeypatch.setattr(fci, "solve", real)
    rep = label(db_path, parents, n_workers=0, progress=False, retry_failed=True)
    assert rep.written_ok == 1
    fixed = db.get(subset=7)
    assert fixed.id == bad.id and fixed.status == "ok" and "reason" not in fixed
    _assert_complete(db_path, parents)


def test_locked_database_gives_a_clear_error(tmp_path, monkeypatch):
    import ase.db.sqlite

    from jbo.data import store

    db_path = str(tmp_path / "locked.db")
    db = store.connect(db_path)
    parent = clusters.random_cluster(2, "low", 0)
    store.write_row(db, parent, 1, "fci", "sto-3g", energy=-12.7, spin=1)
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.3)
    monkeypatch.setattr(ase.db.sqlite.SQLite3Database, "_connect",
                        lambda self: sqlite3.connect(self.filename, timeout=0.05))
    other = sqlite3.connect(db_path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(store.StoreError, match="locked by another writer"):
            store.write_row(db, parent, 2, "fci", "sto-3g", energy=-12.7, spin=1)
    finally:
        other.rollback()
        other.close()
    store.write_row(db, parent, 2, "fci", "sto-3g", energy=-12.7, spin=1)
    assert db.count() == 2


def test_resume_after_kill(db_url):
    """Kill a dask labelling run (driver and workers) mid-way; rerun: complete, no duplicates."""
    db_path, _count = db_url, _count_rows
    cmd = [sys.executable, "-m", "jbo.data", "label", "--db", db_path, "--sizes", "6",
           "--regimes", "high", "--count", "2", "--seed", "0", "--workers", "2",
           "--no-progress", "--no-forces"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while _count(db_path) < 10:
            assert proc.poll() is None, "labelling ended before it could be interrupted"
            assert time.monotonic() - t0 < 240, "no rows after 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its dask workers
        proc.wait()
    n_killed = _count(db_path)
    assert 10 <= n_killed < 2 * 63
    parents = clusters.generate([6], ["high"], 2, seed=0)
    out = subprocess.run(cmd[:-4] + ["--workers", "0", "--no-progress", "--no-forces"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"skipped {n_killed}" in out.stdout
    rows = _assert_complete(db_path, parents)
    assert all(r["status"] == "ok" for r in rows)


def test_two_labellers_write_each_task_once(db_url, tmp_path):
    """Two labellers started together on one database: every task has exactly one row."""
    xyz = str(tmp_path / "c.extxyz")
    clusters_file = clusters.generate([5], ["high"], 2, seed=7)
    from ase.io import write

    write(xyz, clusters_file, format="extxyz")
    cmd = [sys.executable, "-m", "jbo.data", "label", "--db", db_url, "--clusters", xyz,
           "--workers", "0", "--no-progress", "--no-forces"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    rows = _assert_complete(db_url, clusters_file)  # 62 tasks, one row each
    assert len(rows) == 62 and all(r["status"] == "ok" for r in rows)
    written = [int(out.split("labelled ")[1].split(" ok")[0]) for out, _ in outs]
    assert sum(written) == 62  # what one wrote, the other kept


def test_ok_row_without_energy_is_not_done(db_url):
    """A status=ok row with no energy is relabelled in place, and skipped by readers."""
    from jbo.data.records import read_records
    from jbo.data.label import label
    from jbo.data.mbe import all_mbe
    from jbo.data.records import read_parents
    from jbo.data.store import connect, done_tasks

    parents = clusters.generate([2], ["low"], 1, seed=3)
    db = connect(db_url)
    sub = clusters.subcluster(parents[0], 3)
    sub.info = {}
    cid = parents[0].info["cluster"]
    bad = db.write(sub, key_value_pairs=dict(cluster=cid, subset=3, n_parent=2, regime="low",
                                             split="train", method="fci", basis="sto-3g",
                                             status="ok", spin=0, seed=3))
    assert done_tasks(db)[(cid, 3, "fci", "sto-3g")] == (bad, "unlabelled")
    assert read_records(db_url) == [] and all_mbe(read_parents(db_url))[0] == []
    rep = label(db_url, parents, n_workers=0, progress=False)
    assert rep.written_ok == 3
    fixed = db.get(id=bad)
    assert fixed.energy == pytest.approx(reference.energy(parents[0]), abs=1e-7)
    assert len(_assert_complete(db_url, parents)) == 3


def test_training_reads_back_the_labels(db_url):
    """What labelling wrote is what training reads: energies, forces, keys, on either backend."""
    from jbo.data.records import read_records
    from jbo.data.label import label

    parents = clusters.generate([3], ["low"], 1, seed=11)
    label(db_url, parents, n_workers=0, progress=False)
    recs = {r.subset: r for r in read_records(db_url, split="train")}
    assert sorted(recs) == list(range(1, 8))
    full = recs[7]
    np.testing.assert_allclose(full.positions, parents[0].positions, atol=1e-12)
    assert full.energy == pytest.approx(reference.energy(parents[0]), abs=1e-7)
    assert full.forces.shape == (3, 3) and abs(full.forces.sum(0)).max() < 1e-5
    assert recs[1].energy == pytest.approx(reference.energy(atom()), abs=1e-7)


def test_cli_generate_label_mbe_summary(tmp_path, capsys):
    from jbo.cli import main as jbo_main

    def main(argv):  # `jbo data ...`
        return jbo_main(["data", *argv])

    xyz, db = str(tmp_path / "c.extxyz"), str(tmp_path / "c.db")
    assert main(["generate", "--sizes", "3", "--regimes", "low", "--count", "2",
                 "--seed", "3", "--split", "heldout", "-o", xyz]) == 0
    assert main(["label", "--db", db, "--clusters", xyz, "--subsets", "full", "--workers",
                 "0", "--no-progress"]) == 0
    rows = _rows(db)
    assert len(rows) == 2 and {r["split"] for r in rows} == {"heldout"}
    assert {r["subset"] for r in rows} == {7}
    assert main(["summary", "--db", db, "--markdown"]) == 0
    assert "| heldout | low | 3 | 2 | 2 | 0 |" in capsys.readouterr().out
    assert main(["mbe", "--db", db, "--split", "heldout"]) == 0
    assert main(["label", "--db", db, "--clusters", xyz, "--method", "nope",
                 "--workers", "0"]) == 2
    assert main(["summary", "--db", str(tmp_path / "missing.db")]) == 2
    assert not (tmp_path / "missing.db").exists()


