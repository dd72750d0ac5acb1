"""`jbo data validate --all`: parallel and resumable relabelling, and `--fix` (relabel what fails)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from jbo.data import clusters
from jbo.data.records import read_parents, write_compact
from jbo.data.validate import relabel

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "h_clusters.npz"


@pytest.fixture(scope="module")
def h3(tmp_path_factory):
    """Two complete H_3 parents (one per regime), labelled with forces, as a compact file."""
    from jbo.data.label import label

    tmp = tmp_path_factory.mktemp("h3")
    label(str(tmp / "s.db"), clusters.generate([3], ["low", "high"], 1, seed=7), n_workers=0,
          progress=False)
    path = tmp / "h3.npz"
    write_compact(read_parents(str(tmp / "s.db")), path)
    return path


def test_relabel_journal_resumes_without_recomputing(h3, tmp_path, monkeypatch):
    parents = read_parents(h3)
    journal = tmp_path / "j.jsonl"
    first = relabel(parents, journal=journal)
    assert len(first) == len(journal.read_text().splitlines()) == 2 * 7
    for p, mask, (e, spin, _s2, err) in first:  # recomputed = stored (same solver)
        j = int(np.searchsorted(p.subsets, mask))
        assert err == "" and e == pytest.approx(p.energy[j], abs=1e-7) and spin == p.spin[j]

    from jbo.data import reference

    def no(*a, **k):
        raise AssertionError("recomputed a label the journal holds")
    monkeypatch.setattr(reference, "compute", no)
    again = relabel(parents, journal=journal)
    assert [(m, r) for _, m, r in again] == [(m, tuple(r)) for _, m, r in first]


def test_validate_fix_relabels_exactly_the_wrong_label(h3, tmp_path, capsys):
    from jbo.cli import main

    parents = read_parents(h3)
    p = parents[0]
    energy, forces = p.energy.copy(), p.forces.copy()
    j = int(np.searchsorted(p.subsets, 0b011))
    energy[j] += 2e-4  # 0.2 meV: the size of the shipped file's upper-root label
    forces[j, :2] += 0.5
    bad = tmp_path / "bad.npz"
    write_compact([dataclasses.replace(p, energy=energy, forces=forces)] + parents[1:], bad)
    fixed = tmp_path / "fixed.npz"
    rc = main(["data", "validate", "--db", str(bad), "--all", "--workers", "2", "--journal",
               str(tmp_path / "j.jsonl"), "--fix", str(fixed), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "1 labels relabelled" in out and f"subset {0b011}" in out
    changes = json.loads((tmp_path / "fixed.npz.changes.json").read_text())
    assert [(c["cluster"], c["subset"]) for c in changes] == [(p.cluster, 0b011)]
    assert changes[0]["delta_meV"] == pytest.approx(-0.2, abs=1e-4)
    assert changes[0]["max_dforce"] == pytest.approx(0.5, abs=1e-4)
    for q, r in zip(read_parents(fixed), parents):  # back to the true labels everywhere
        np.testing.assert_allclose(q.energy, r.energy, atol=1e-7)
        np.testing.assert_allclose(q.forces, r.forces, atol=1e-4)
    assert main(["data", "validate", "--db", str(fixed), "--all", "--no-progress"]) == 0


def test_summary_counts_the_ground_spin_of_full_clusters(h3, capsys):
    from jbo.cli import main

    assert main(["data", "summary", "--db", str(h3)]) == 0
    out = capsys.readouterr().out
    want = {p.regime: f"{int(p.spin[-1])}:1" for p in read_parents(h3)}  # H_3: a doublet
    assert want == {"low": "1:1", "high": "1:1"}
    assert all(line.split()[-1] == want[line.split()[1]]
               for line in out.splitlines() if line.strip().startswith("train"))


def test_shipped_spin_ground_states_are_as_data_readme_says():
    """data/README.md: odd clusters are doublets except the quartet low-n9-s30001; 4 quintets."""
    from collections import Counter

    c = Counter()
    for p in read_parents(SHIPPED):
        j = np.flatnonzero(p.subsets == p.full)
        if len(j):
            c[(p.regime, p.n % 2, int(p.spin[j[0]]))] += 1
    assert {k: v for k, v in c.items() if k[1] == 1} == {
        ("low", 1, 1): 20 + 3 + 9, ("low", 1, 3): 1, ("high", 1, 1): 20 + 3 + 10 + 4}
    assert c[("low", 0, 4)] == 4 and c[("high", 0, 4)] == 0
    quartet = read_parents(SHIPPED, cluster="low-n9-s30001")[0]
    assert int(quartet.spin[-1]) == 3
