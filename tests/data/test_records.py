"""The one reader of reference data, the compact shipped layout, and `jbo data validate`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jbo.data import clusters, reference
from jbo.data.records import Parent, export, read_parents, read_records, write_compact
from jbo.data.validate import validate


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A per-row store: one complete H_4 (low), one complete H_3 (high), one full-only H_5."""
    from jbo.data.label import label

    path = str(tmp_path_factory.mktemp("rec") / "store.db")
    complete = clusters.generate([3, 4], ["low", "high"], 1, seed=40)[1:3]
    label(path, complete, n_workers=0, progress=False)
    label(path, clusters.generate([5], ["low"], 1, seed=50), subsets="full", n_workers=0,
          progress=False)
    return path


def test_compact_round_trip_is_exact_and_records_match_the_store(store, tmp_path):
    parents = read_parents(store)
    assert [(p.cluster, p.n) for p in parents] == [("high-n3-s0042", 3), ("low-n4-s0041", 4),
                                                    ("low-n5-s0050", 5)]
    path = tmp_path / "d.npz"
    write_compact(parents, path)
    again = read_parents(path)
    for p, q in zip(parents, again):
        for f in dataclasses.fields(Parent):
            a, b = getattr(p, f.name), getattr(q, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b
    from_store = {(r.cluster, r.subset): r for r in read_records(store)}
    from_file = read_records(path)
    assert len(from_file) == len(from_store) == 7 + 15 + 1
    for r in from_file:
        s = from_store[(r.cluster, r.subset)]
        assert r.energy == s.energy and r.split == s.split and r.regime == s.regime
        np.testing.assert_array_equal(r.positions, s.positions)
        np.testing.assert_array_equal(r.forces, s.forces)
    # selection works the same on both layouts
    assert [(r.cluster, r.subset) for r in read_records(path, n_parent=5)] == [
        ("low-n5-s0050", 31)]
    assert len(read_records(path, regime="high")) == len(read_records(store, regime="high"))


def test_labels_in_the_compact_file_are_the_reference_energies(store, tmp_path):
    """An independent truth: the stored H_4 total is FCI of the regenerated cluster."""
    path = tmp_path / "d.npz"
    write_compact(read_parents(store), path)
    p = next(p for p in read_parents(path) if p.n == 4)
    regen = clusters.random_cluster(4, p.regime, p.seed)
    np.testing.assert_allclose(p.positions, regen.get_positions(), atol=1e-12)
    assert p.energy[-1] == pytest.approx(reference.energy(regen), abs=1e-7)


def test_export_to_extxyz_and_ase_db_round_trips(store, tmp_path):
    from ase.io import read

    parents = read_parents(store)
    n = export(parents, tmp_path / "out.extxyz")
    frames = read(tmp_path / "out.extxyz", index=":")
    assert n == len(frames) == sum(len(p.subsets) for p in parents)
    by_key = {(r.cluster, r.subset): r for r in read_records(store)}
    for at in frames:
        r = by_key[(at.info["cluster"], at.info["subset"])]
        # extxyz stores 8 decimals
        assert at.get_potential_energy() == pytest.approx(r.energy, abs=1e-7)
        np.testing.assert_allclose(at.get_forces(), r.forces, atol=1e-7)
    export(parents, tmp_path / "out.db")
    assert len(read_records(tmp_path / "out.db")) == n


def test_validate_passes_clean_data_and_names_each_planted_fault(store):
    parents = read_parents(store)
    assert validate(parents, sample=3) == []
    h4 = next(p for p in parents if p.n == 4)
    j_pair = int(np.flatnonzero(h4.subsets == 0b0101)[0])
    j_atom = int(np.flatnonzero(h4.subsets == 0b0010)[0])
    s2, energy = h4.s2.copy(), h4.energy.copy()
    s2[j_pair] = 1.0  # a singlet/triplet mixture stored as 2S = 0 (or 2)
    energy[j_atom] += 0.01  # a wrong isolated atom
    keep = h4.subsets != 0b1011  # a missing subset
    bad = dataclasses.replace(h4, s2=s2[keep], energy=energy[keep], subsets=h4.subsets[keep],
                              spin=h4.spin[keep], forces=h4.forces[keep])
    problems = validate([bad if p is h4 else p for p in parents], sample=0)
    found = {(p.check, p.subset) for p in problems}
    assert ("spin", 0b0101) in found
    assert ("isolated atom", 0b0010) in found
    assert ("incomplete", None) in found and "11" in str(problems)
    # a relabelled sample catches a wrong energy that no invariant sees
    energy = h4.energy.copy()
    energy[-1] += 1e-3
    wrong = dataclasses.replace(h4, energy=energy)
    probs = validate([wrong], sample=None)
    assert [(p.check, p.subset) for p in probs if p.check == "relabel"] == [("relabel", 15)]


def test_validate_cli_exit_codes(store, tmp_path, capsys):
    from jbo.cli import main as jbo_main

    def main(argv):  # `jbo data ...`
        return jbo_main(["data", *argv])

    path = tmp_path / "d.npz"
    assert main(["pack", "--db", store, "-o", str(path)]) == 0
    assert main(["validate", "--db", str(path), "--sample", "2", "--no-progress"]) == 0
    assert "OK:" in capsys.readouterr().out
    p = read_parents(path)
    s2 = p[0].s2.copy()
    s2[0] = 9.0
    write_compact([dataclasses.replace(p[0], s2=s2)] + p[1:], path)
    assert main(["validate", "--db", str(path), "--sample", "0"]) == 1
    assert "[spin]" in capsys.readouterr().out


def test_unreadable_compact_files_are_named(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable compact dataset"):
        read_parents(bad)
    with pytest.raises(FileNotFoundError, match="make_dataset.sh"):
        read_parents(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a jbo compact dataset"):
        read_parents(tmp_path / "other.npz")
