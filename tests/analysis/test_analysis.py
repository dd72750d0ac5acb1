"""The analysis layer (jbo.analysis): stored reference spectra pinned to numbers, the model path
against independent inclusion–exclusion on analytic potentials, model path = reference path when
the model is a lookup of the reference energies, and the metrics by hand."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jbo import analysis, potentials, testing
from jbo.data.records import Record, read_parents

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "h_clusters.npz"
needs_data = pytest.mark.skipif(not SHIPPED.exists(), reason="data/h_clusters.npz not built")

# E^(1..n) (eV) of shipped parents, computed by the pre-analysis-layer code (jbo.data.mbe at
# d08b6dd) and written down here: the stored reference spectra must never drift.
PINNED = {
    "high-n4-s0073": [-50.785355281, -18.461362649, 21.646295802, -8.644067888],
    "low-n5-s0051": [-63.481694101, -2.10490655, 0.957047381, -0.415504557, 0.041023208],
    "low-n6-s0060": [-76.178032922, -4.050096961, 4.977486266, -4.349637446, 2.749001491,
                     -0.970224268],
    "high-n7-s0141": [-88.874371742, -47.132299939, 130.687495119, -186.877362177,
                      151.06700898, -69.506395168, 14.950079622],
    "low-n8-s0071": [-101.570710562, -7.685356093, 9.921313456, -11.123835538, 9.864365404,
                     -6.26495423, 2.615971914, -0.520625911],
    "high-n10-s30009": [-126.963388203, -112.07080787, 529.402894227, -1258.157808261,
                        2014.489957071, -2352.797096995, 2049.895869436, -1275.310568932,
                        497.784209068, -88.458516558],
}
TOTALS = {"high-n4-s0073": -56.244490016, "low-n8-s0071": -104.763831560,
          "high-n10-s30009": -122.185257018}


@pytest.fixture(scope="module")
def pinned_parents():
    return [p for p in read_parents(SHIPPED) if p.cluster in PINNED] if SHIPPED.exists() else []


@needs_data
def test_stored_reference_spectra_are_pinned(pinned_parents):
    ref = analysis.reference_spectra(pinned_parents)
    assert sorted(ref.clusters) == sorted(PINNED) and list(ref.clusters) == sorted(ref.clusters)
    for s in ref:
        np.testing.assert_allclose(s.per_order, PINNED[s.cluster], rtol=0, atol=1e-8)
        assert s.truncated[-1] == pytest.approx(s.total, abs=1e-9)
        if s.cluster in TOTALS:
            assert s.total == pytest.approx(TOTALS[s.cluster], abs=1e-8)
    # orders a cluster does not have are NaN, not 0
    assert np.isnan(ref.take(["high-n4-s0073"]).orders[0, 4:]).all()
    # the same from the records (the other input of the one adapter), and with strict refusal
    recs = [r for p in pinned_parents for r in p.records()]
    again = analysis.reference_spectra(recs)
    np.testing.assert_array_equal(again.orders, ref.orders)
    partial = recs[1:]  # one subset of the first parent unlabelled
    assert pinned_parents[0].cluster not in analysis.reference_spectra(partial)
    with pytest.raises(ValueError, match="missing subset energies"):
        analysis.reference_spectra(partial, strict=True)


# ---------------------------------------------------------------- analytic truths
def _clusters(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        while True:
            pos = rng.uniform(0, 1.3 * n ** (1 / 3), size=(n, 3))
            if n < 2 or np.min(np.linalg.norm(pos[:, None] - pos[None], axis=-1)
                               + 9 * np.eye(n)) > 0.6:
                break
        out.append(Record(pos, np.ones(n, np.int32), 0.0, None, f"c{i}", (1 << n) - 1, n,
                          "train", "low" if i % 2 else "high"))
    return out


def _morse_np(r, depth=4.75, alpha=1.94, r0=0.74):
    x = np.exp(-alpha * (r - r0))
    return depth * (x * x - 2 * x)


def _at_np(a, b, c, c9):
    """Axilrod–Teller triple energy, written independently of jbo.potentials."""
    ab, bc, ca = b - a, c - b, a - c
    la, lb, lc = map(np.linalg.norm, (ab, bc, ca))
    cos_a, cos_b, cos_c = -ca @ ab / (lc * la), -ab @ bc / (la * lb), -bc @ ca / (lb * lc)
    return c9 * (1 + 3 * cos_a * cos_b * cos_c) / (la * lb * lc) ** 3


def test_decompose_records_matches_pair_and_triple_truths():
    """Morse + Axilrod–Teller: E^(1) = n e_atom, E^(2) = Σ V(r_ij), E^(3) = Σ AT(ijk), nothing
    above; Σ_{|S|=k} ε(S)² is Σ V² and Σ AT² — each from numpy loops, clusters padded together."""
    c9 = 0.7
    fn = potentials.combine(potentials.morse(), potentials.axilrod_teller(c9))
    recs = _clusters([4, 6, 5])
    s = analysis.decompose_records(fn, recs)
    assert s.clusters == ("c0", "c1", "c2") and s.K == 6 and s.regimes == ("high", "low", "high")
    for i, r in enumerate(recs):
        n, p = r.n_atoms, r.positions
        pairs = [_morse_np(np.linalg.norm(p[a] - p[b])) for a, b in itertools.combinations(
            range(n), 2)]
        triples = [_at_np(p[a], p[b], p[c], c9) for a, b, c in itertools.combinations(
            range(n), 3)]
        want = [-13.6 * n, sum(pairs), sum(triples)] + [0.0] * (n - 3)
        np.testing.assert_allclose(s.orders[i, :n], want, rtol=0, atol=1e-9)
        assert np.isnan(s.orders[i, n:]).all() and np.isnan(s.eps_sq[i, n:]).all()
        assert s.eps_sq[i, 1] == pytest.approx(sum(v * v for v in pairs), rel=1e-12)
        assert s.eps_sq[i, 2] == pytest.approx(sum(v * v for v in triples), rel=1e-10)
        assert s.eps_sq[i, 3:n].max(initial=0) < 1e-20
        assert s.totals[i] == pytest.approx(sum(want), abs=1e-9)
    truncated = analysis.decompose_records(fn, recs, max_order=3, chunk=2)
    np.testing.assert_allclose(truncated.orders, s.orders[:, :3], rtol=0, atol=1e-9)
    assert truncated.eps_sq is None
    totals = analysis.decompose_records(fn, recs, orders=False)
    assert totals.orders is None
    np.testing.assert_allclose(totals.totals, s.totals, rtol=0, atol=1e-9)


def _eam_np(p, strength=1.0, cutoff=2.5):
    """potentials.embedded_atom in numpy: every order of the MBE is non-zero."""
    r = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(len(p)) * 1e9
    sw = np.where(r < cutoff, 0.5 * (np.cos(np.pi * np.minimum(r, cutoff) / cutoff) + 1), 0.0)
    return -strength * np.sum(np.sqrt(1.0 + sw.sum(1)) - 1.0)


def test_decompose_records_matches_brute_force_inclusion_exclusion():
    """A many-body potential: E^(k) from ε(S) = Σ_{T⊆S} (−1)^{|S|−|T|} E(T) by explicit loops
    over subsets (no lattice transform), E(T) evaluated in numpy on the extracted subcluster."""
    recs = _clusters([5, 3], seed=1)
    s = analysis.decompose_records(potentials.embedded_atom(), recs, chunk=1)
    for i, r in enumerate(recs):
        n = r.n_atoms
        per = testing.brute_force_mbe(lambda p, z, m: _eam_np(p[m]), r.positions).per_order
        np.testing.assert_allclose(s.orders[i, :n], per, rtol=0, atol=1e-10)
        assert abs(per[n - 1]) > 1e-4  # the top order really is non-zero


# ---------------------------------------------------------------- model path = reference path
def _lookup(parents):
    """An energy function that returns the stored E(S) of the atoms present: each atom is found
    by its position among the parents' atoms (so subclusters extracted by the contract check
    resolve alike), S is the bitmask of the present atoms in their parent."""
    pos = jnp.asarray(np.concatenate([p.positions for p in parents]))
    which = jnp.asarray(np.concatenate([np.full(p.n, j) for j, p in enumerate(parents)]))
    bit = jnp.asarray(np.concatenate([np.arange(p.n) for p in parents]))
    offset = np.cumsum([0] + [1 << p.n for p in parents])
    table = jnp.asarray(np.concatenate([p.lattice() for p in parents]))

    def energy_fn(positions, species, mask):
        j = jnp.argmin(jnp.sum((positions[:, None] - pos[None]) ** 2, -1), axis=1)
        bits = jnp.sum(jnp.where(mask, 2 ** bit[j], 0))
        parent = jnp.max(jnp.where(mask, which[j], 0))
        return table[jnp.asarray(offset)[parent] + bits]

    energy_fn.cutoff, energy_fn.is_local = None, False
    return energy_fn


@needs_data
def test_model_path_equals_reference_path_on_a_lookup_model(pinned_parents):
    parents = [p for p in pinned_parents if p.n <= 8]
    ref = analysis.reference_spectra(parents)
    full = [next(r for r in p.records() if r.is_full) for p in parents]
    model = analysis.decompose_records(_lookup(parents), full)
    ref = ref.take(model.clusters)
    np.testing.assert_allclose(model.orders, ref.orders, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.eps_sq, ref.eps_sq, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.totals, ref.totals, rtol=0, atol=1e-12)
    assert analysis.total_mae(model, ref) < 1e-9
    assert max(analysis.order_mae(model, ref, 8)) < 1e-9


# ---------------------------------------------------------------- metrics and the type
def _pair():
    """A hand-made model/reference pair: clusters of 2 and 4 atoms (orders eV)."""
    nan = np.nan
    model = analysis.Spectra(("a", "b"), [2, 4], ("low", "high"), [-1.0, -2.0],
                             [[-1.0, 0.0, nan, nan], [-2.5, 0.4, 0.1, 0.0]])
    ref = analysis.Spectra(("a", "b"), [2, 4], ("low", "high"), [-1.002, -2.0],
                           [[-0.9, -0.102, nan, nan], [-2.5, 0.5, 0.0, 0.0]])
    return model, ref


def test_metrics_by_hand():
    model, ref = _pair()
    np.testing.assert_allclose(analysis.total_errors(model, ref), [1.0, 0.0])
    assert analysis.total_mae(model, ref) == pytest.approx(0.5)
    mae = analysis.order_mae(model, ref, 5)
    assert mae[0] == pytest.approx(1e3 * 0.1 / 2 / 2)
    assert mae[2] == pytest.approx(1e3 * 0.1 / 4)  # only the 4-atom cluster has k = 3
    assert np.isnan(mae[4])                         # no cluster has k = 5
    assert analysis.high_order_weight(model) == pytest.approx(0.1 / 0.5)
    sp = analysis.spectrum(model)
    assert sp["mean_abs_mev_per_atom"][0] == pytest.approx(1e3 * 0.5625)
    assert sp["mean_mev_per_atom"][2] == pytest.approx(1e3 * 0.1 / 4)
    ho = analysis.high_order(model, 2)
    assert ho["sum_abs_mev_per_atom"] == pytest.approx(1e3 * 0.1 / 4 / 2)
    assert ho["truncation_mev_per_atom"] == pytest.approx(1e3 * 0.1 / 4 / 2)
    with pytest.raises(ValueError, match="same clusters"):
        analysis.order_mae(model, ref.take(["b", "a"]), 2)


def test_spectra_json_round_trip_selection_and_views():
    model, ref = _pair()
    cell = {**model.to_json(), "ref_total": ref.to_json()["total"],
            "ref_per_order": ref.to_json()["per_order"]}
    assert cell["per_order"][0] == [-1.0, 0.0] and cell["n"] == [2, 4]
    back, back_ref = analysis.Spectra.from_json(cell), analysis.Spectra.from_json(cell, "ref_")
    np.testing.assert_array_equal(back.orders, model.orders)
    np.testing.assert_array_equal(back_ref.totals, ref.totals)
    assert list(model.by_regime()) == ["high", "low"]
    assert model.by_regime()["low"].clusters == ("a",)
    both = analysis.Spectra.concat([model.take(["b"]), ref.take(["a"])])
    assert both.clusters == ("b", "a") and both.orders.shape == (2, 4)
    one = model[1]
    assert one.n == 4 and one.truncated[-1] == pytest.approx(-2.0)
    totals = analysis.Spectra(("x",), [3], ("",), [1.0])
    assert totals.per_cluster() == [None] and totals.to_json()["per_order"] == [None]
    with pytest.raises(KeyError, match="'zz'"):
        model.take(["zz"])
    with pytest.raises(ValueError, match="unique"):
        analysis.Spectra(("a", "a"), [1, 1], ("", ""), [0.0, 0.0])


def test_a_trained_model_runs_as_one_program_for_every_parameter_set():
    """decompose_records on a trained model traces its parameters: a second parameter set of
    the same model reuses the compiled program, and agrees with the engine called on the
    model's plain energy function (the eager path)."""
    import jax

    from jbo import models
    from jbo.decompose import _exhaustive
    from jbo.models import Model

    module = models.create("soap_bpnn", max_radial=2, max_angular=1, hidden=(4,))
    recs = _clusters([4, 3], seed=2)
    x = (jnp.asarray(recs[0].positions), jnp.asarray(recs[0].species), jnp.ones(4, bool))
    p1 = jax.jit(module.init)(jax.random.PRNGKey(0), *x)
    p2 = jax.tree.map(lambda a: 1.5 * a, p1)  # another parameter set, same structure
    model = Model.of(module, p1, {1: -13.6}, 0.5)
    first = analysis.decompose_records(model, recs, layout="masks")
    size = _exhaustive._cache_size()
    second = analysis.decompose_records(model.replace(params=p2), recs, layout="masks")
    assert _exhaustive._cache_size() == size  # no new compilation for new parameters
    assert np.nanmax(np.abs(first.orders - second.orders)) > 1e-6
    pot = model.replace(params=p2).potential  # the engine's own jit, eagerly
    eager = analysis.decompose_records(lambda *a: pot.energy(*a), recs, layout="masks")
    np.testing.assert_allclose(second.orders, eager.orders, rtol=0, atol=1e-10)
    np.testing.assert_allclose(second.eps_sq, eager.eps_sq, rtol=1e-10, atol=1e-16)


def test_rotational_error_is_round_off_for_invariant_models_and_large_for_pet():
    """rotational_error: ~1e-12 meV/atom for invariant energies (Morse, SOAP-BPNN), tens of
    meV/atom for PET at initialisation, equal to the spread computed by hand over the same
    rotations (chunks that do not divide the structures included)."""
    import jax

    from jbo import models
    from jbo.rotations import random_rotations

    recs = _clusters([3, 4, 5, 6], seed=3)
    soap = models.create("soap_bpnn", max_radial=3, max_angular=2, hidden=(8,))
    for pot in (potentials.morse(cutoff=3.0), models.energy_fn(soap, models.init(soap, 0))):
        err = analysis.rotational_error(pot, recs)
        assert err["max_std_mev_per_atom"] < 1e-8 and err["max_spread_mev_per_atom"] < 1e-8
    pet = models.create("pet", d_model=8, num_heads=2, ffn_dim=8, num_radial=4,
                        readout_hidden=8)
    assert not pet.rotation_invariant and soap.rotation_invariant
    pot = models.energy_fn(pet, models.init(pet, 0))
    err = analysis.rotational_error(pot, recs, n_rotations=5, seed=7, chunk=3)
    rot = np.asarray(random_rotations(jax.random.PRNGKey(7), (len(recs), 5)))
    by_hand = np.array([[float(pot((r.positions - r.positions.mean(0)) @ m.T, r.species))
                         for m in rs] for r, rs in zip(recs, rot)])
    by_hand *= 1e3 / np.array([r.n_atoms for r in recs])[:, None]
    assert err["mean_std_mev_per_atom"] > 1.0
    np.testing.assert_allclose(err["mean_std_mev_per_atom"], by_hand.std(1).mean(), rtol=1e-9)
    np.testing.assert_allclose(err["max_spread_mev_per_atom"], np.ptp(by_hand, 1).max(),
                               rtol=1e-9)
    assert (err["n_clusters"], err["n_rotations"]) == (4, 5)
    for bad, phrase in (([], "at least one structure"), (recs, "n_rotations")):
        with pytest.raises(ValueError, match=phrase):
            analysis.rotational_error(pot, bad, n_rotations=1 if bad else 8)


def test_learned_rotational_error_measures_only_models_that_learn_invariance(tmp_path):
    """None for a model invariant by construction or without records; otherwise exactly
    rotational_error (a loaded PET model file)."""
    from jbo import models

    recs = _clusters([3, 4], seed=3)
    soap = models.create("soap_bpnn", max_radial=3, max_angular=2, hidden=(8,))
    pet = models.create("pet", d_model=8, num_heads=2, ffn_dim=8, num_radial=4,
                        readout_hidden=8)
    s, p = (models.load(models.save(tmp_path / f"{i}.jbo", m, models.init(m, 0)))
            for i, m in enumerate((soap, pet)))
    assert analysis.learned_rotational_error(s, recs) is None
    assert analysis.learned_rotational_error(p, []) is None
    got = analysis.learned_rotational_error(p, recs, n_rotations=3, seed=5)
    assert got == analysis.rotational_error(p, recs, n_rotations=3, seed=5)
    assert got["mean_std_mev_per_atom"] > 0.1
