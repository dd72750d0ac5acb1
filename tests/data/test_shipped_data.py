"""The shipped dataset (data/h_clusters.npz): its promised contents, its invariants, and the
reference MBE of a few clusters pinned to numbers (regression), re-derived from FCI spot checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from jbo.data import clusters, reference
from jbo.data.mbe import reference_mbe
from jbo.data.records import read_parents
from jbo.data.validate import validate

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "h_clusters.npz"
pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason="data/h_clusters.npz not built")


@pytest.fixture(scope="module")
def parents():
    return read_parents(SHIPPED)


def test_contents_are_what_data_readme_promises(parents):
    kind = Counter((p.split, p.regime, p.n, "complete" if p.is_complete else
                    "full" if list(p.subsets) == [p.full] else "partial") for p in parents)
    assert not [k for k in kind if k[3] == "partial"]
    for regime in ("low", "high"):
        assert kind[("train", regime, 8, "full")] >= 2000
        assert kind[("train", regime, 8, "complete")] >= 100
        assert kind[("heldout", regime, 9, "complete")] >= 3
        assert kind[("heldout", regime, 10, "complete")] >= 3
        for n in (4, 5, 6, 7):
            assert kind[("train", regime, n, "complete")] >= 3
    assert kind[("heldout", "high", 12, "full")] >= 2
    assert {p.method for p in parents} == {"fci"} and {p.basis for p in parents} == {"sto-3g"}


def test_invariants_hold_everywhere(parents):
    """Completeness, isolated atoms, pure spin states, far pairs, Σ_k E^(k) = E, all parents;
    three labels recomputed (the full relabelling check is `jbo data validate --all`)."""
    assert validate(parents, sample=3, seed=1) == []


def test_every_cluster_regenerates_from_its_seed(parents):
    rng = np.random.default_rng(0)
    for i in rng.choice(len(parents), 25, replace=False):
        p = parents[i]
        at = clusters.random_cluster(p.n, p.regime, p.seed)
        assert at.info["cluster"] == p.cluster
        np.testing.assert_allclose(at.get_positions(), p.positions, atol=1e-12)


def test_stored_h8_total_is_fci_of_the_regenerated_cluster(parents):
    """Independent truth: FCI of a pool H_8 and of the heptamer that used to be mislabelled."""
    pool = next(p for p in parents if p.cluster == "high-n8-s12345")
    assert pool.energy[-1] == pytest.approx(
        reference.energy(clusters.random_cluster(8, "high", 12345)), abs=1e-6)
    old = next(p for p in parents if p.cluster == "low-n8-s0072")
    j = int(np.flatnonzero(old.subsets == 239)[0])
    assert old.energy[j] / reference.HARTREE_EV == pytest.approx(-3.334228548, abs=2e-9)
    assert old.spin[j] == 1


# E^(1..n) (eV) of three shipped parents, written down when the file was built
PINNED = {
    "low-n5-s0051": [-63.481694101, -2.10490655, 0.957047381, -0.415504557, 0.041023208],
    "high-n8-s20150": [-101.570710562, -48.973455096, 114.996010193, -169.805087312,
                       183.169983787, -136.259841882, 65.722914586, -16.303444185],
    "low-n9-s30000": [-114.267049382, -8.910630044, 14.685966968, -18.185246517, 21.929976026,
                      -23.732033143, 19.621206308, -10.075572099, 2.385168664],
}


@pytest.mark.parametrize("cluster", sorted(PINNED))
def test_reference_mbe_of_shipped_clusters_is_pinned(parents, cluster):
    m = reference_mbe(next(p for p in parents if p.cluster == cluster))
    np.testing.assert_allclose(m.per_order, PINNED[cluster], rtol=0, atol=1e-8)
    assert m.truncated[-1] == pytest.approx(m.total, abs=1e-9)
