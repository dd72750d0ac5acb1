"""jbo.testing against analytic truths, and each checker shown to fail on a function that
breaks what it checks. Energy functions here are plain numpy (no compilation) unless noted."""

from __future__ import annotations

import itertools
import pathlib
import re

import numpy as np
import pytest

import jbo  # noqa: F401  (float64)
from jbo import potentials, testing

E_ATOM = -13.6


def _morse(r):
    x = np.exp(-1.94 * (r - 0.74))
    return 4.75 * (x * x - 2 * x)


def _dist(p):
    return np.linalg.norm(p[:, None] - p[None], axis=-1)


def pair_np(positions, species, mask):
    """Morse pairs + E_ATOM per present atom: ε(i) = E_ATOM, ε(ij) = V(r_ij), nothing else."""
    p = np.asarray(positions)[np.asarray(mask, bool)]
    r = _dist(p)
    iu = np.triu_indices(len(p), 1)
    return E_ATOM * len(p) + float(np.sum(_morse(r[iu])))


def _at(a, b, c, c9=0.7):
    """Axilrod–Teller triple energy (eV)."""
    ab, bc, ca = b - a, c - b, a - c
    la, lb, lc = map(np.linalg.norm, (ab, bc, ca))
    cos = (-ca @ ab / (lc * la)) * (-ab @ bc / (la * lb)) * (-bc @ ca / (lb * lc))
    return c9 * (1 + 3 * cos) / (la * lb * lc) ** 3


def triple_np(positions, species, mask):
    p = np.asarray(positions)[np.asarray(mask, bool)]
    return float(sum(_at(*p[list(t)]) for t in itertools.combinations(range(len(p)), 3)))


POS = testing.random_cluster(6, "high", seed=4)
# round-off bound of an alternating sum of 2^|S| energies of magnitude ≲ 100 eV
EPS_TOL = 64 * 100 * np.finfo(float).eps * 10


# ------------------------------------------------------------------- many-body expansion

def test_pair_potential_has_exactly_one_and_two_body_terms():
    ref = testing.brute_force_mbe(pair_np, POS)
    assert ref.per_order.shape == (6,) and len(ref.terms) == 63 and ref.energies[()] == 0.0
    r = _dist(POS)
    for s, eps in ref.terms.items():
        want = E_ATOM if len(s) == 1 else _morse(r[s]) if len(s) == 2 else 0.0
        assert abs(eps - want) < EPS_TOL, (s, eps, want)
    assert ref.per_order[0] == pytest.approx(6 * E_ATOM, abs=1e-12)
    assert ref.per_order[1] == pytest.approx(_morse(r[np.triu_indices(6, 1)]).sum(), abs=1e-11)
    assert ref.total == pytest.approx(pair_np(POS, None, np.ones(6, bool)), abs=1e-11)
    assert abs(ref.per_order[1]) > 1.0  # the check has something to see


def test_triple_potential_terms_are_the_triples_and_max_order_truncates():
    ref = testing.brute_force_mbe(triple_np, POS)
    for s, eps in ref.terms.items():
        want = _at(*POS[list(s)]) if len(s) == 3 else 0.0
        assert abs(eps - want) < EPS_TOL, (s, eps, want)
    assert abs(ref.per_order[2]) > 1e-3
    low = testing.brute_force_mbe(triple_np, POS, max_order=3)
    assert low.per_order.shape == (3,) and max(len(s) for s in low.terms) == 3
    np.testing.assert_allclose(low.per_order, ref.per_order[:3], rtol=0, atol=1e-13)


def test_inclusion_exclusion_and_mobius_invert_a_known_expansion():
    """Build E(S) = Σ_{T⊆S} ε(T) from random ε by explicit sums; both inverses give ε back."""
    n = 5
    eps = np.random.default_rng(0).normal(size=1 << n)
    eps[0] = 0.0
    energy = np.array([sum(eps[t] for t in range(1 << n) if t & s == t) for s in range(1 << n)])
    np.testing.assert_allclose(testing.brute_force_mobius(energy), eps, atol=1e-12)
    two = np.stack([energy, 2 * energy], axis=1)  # trailing axes are carried along
    np.testing.assert_allclose(testing.brute_force_mobius(two), np.stack([eps, 2 * eps], 1),
                               atol=1e-12)
    as_tuple = {tuple(i for i in range(n) if m >> i & 1): energy[m] for m in range(1 << n)}
    got = testing.inclusion_exclusion(as_tuple)
    for m in range(1, 1 << n):
        assert got[tuple(i for i in range(n) if m >> i & 1)] == pytest.approx(eps[m], abs=1e-12)
    with pytest.raises(ValueError, match=r"E\(1,\) is missing"):
        testing.inclusion_exclusion({(0,): 1.0, (0, 1): 2.0})
    with pytest.raises(ValueError, match="2\\*\\*n"):
        testing.brute_force_mobius(np.zeros(6))


def test_brute_force_matches_the_engine_on_a_many_body_potential():
    """Two independent routes (extraction + loops vs the engine's masks + fast transform)."""
    from jbo.decompose import body_orders

    fn = potentials.embedded_atom()
    ref = testing.brute_force_mbe(fn, POS)
    got = body_orders(fn, POS, layout="masks")
    np.testing.assert_allclose(np.asarray(got.per_order), ref.per_order, rtol=0, atol=1e-10)
    assert abs(ref.per_order[5]) > 1e-6  # every order is non-zero for this potential


# ------------------------------------------------------------------- geometry

@pytest.mark.parametrize("regime,lo,hi", [("high", 0.7, 1.2), ("low", 1.5, 2.5)])
def test_random_cluster_distances_and_reproducibility(regime, lo, hi):
    pos = testing.random_cluster(8, regime, seed=3)
    d = _dist(pos) + np.eye(8) * 1e9
    assert pos.shape == (8, 3) and d.min() >= lo and d.min(1).max() <= hi
    np.testing.assert_allclose(pos.mean(0), 0.0, atol=1e-12)
    np.testing.assert_array_equal(pos, testing.random_cluster(8, regime, seed=3))
    assert not np.allclose(pos, testing.random_cluster(8, regime, seed=4))
    own = testing.random_cluster(6, regime, seed=3, d_min=2.0, d_max=2.2)
    d = _dist(own) + np.eye(6) * 1e9
    assert d.min() >= 2.0 and d.min(1).max() <= 2.2
    with pytest.raises(ValueError, match="d_min < d_max"):
        testing.random_cluster(4, regime, d_min=1.0, d_max=0.9)
    with pytest.raises(ValueError, match="unknown regime"):
        testing.random_cluster(4, "medium")


def test_random_rotations_are_proper_rotations():
    rot = testing.random_rotations(5, seed=2)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)


# ------------------------------------------------------------------- masking contract

def test_masking_contract_passes_for_contract_keeping_functions():
    assert testing.assert_masking_contract(pair_np, POS, n_subsets=10) < 1e-12
    assert testing.assert_masking_contract(potentials.morse(cutoff=2.5), POS) < 1e-10


def test_masking_contract_fails_when_masked_atoms_leak():
    def ignores_mask(positions, species, mask):
        return pair_np(positions, species, np.ones(len(positions), bool))

    def normalises_over_all(positions, species, mask):  # counts masked atoms
        return pair_np(positions, species, mask) / len(positions)

    for fn in (ignores_mask, normalises_over_all):
        with pytest.raises(AssertionError, match=r"masking contract broken for atoms \[.*\] "
                                                 r"of 6: masked gives .* eV, the extracted"):
            testing.assert_masking_contract(fn, POS)


def test_padding_check_catches_a_leak_only_padding_shows():
    """Reads every atom's species: harmless while masked atoms keep theirs, wrong for padding."""
    def reads_all_species(positions, species, mask):
        return pair_np(positions, species, mask) + 0.1 * float(np.min(species) == 0)

    assert testing.assert_masking_contract(reads_all_species, POS, padding=False) < 1e-12
    with pytest.raises(AssertionError, match=r"padded \(species 0, on atom \d\) gives"):
        testing.assert_masking_contract(reads_all_species, POS)


# ------------------------------------------------------------------- invariance

def test_invariant_passes_for_pair_potentials():
    assert testing.assert_invariant(pair_np, POS) < 1e-11
    assert testing.assert_invariant(potentials.morse(), POS, rotations=2) < 1e-10


@pytest.mark.parametrize("breaker,broken", [
    # (d_ij · z)²: translation and permutation invariant, not rotation invariant
    (lambda p, s, m: float(np.sum((p[:, None, 2] - p[None, :, 2]) ** 2)), "rotation"),
    # Σ|x_i|²: invariant under rotations about the origin and permutations, not translations
    (lambda p, s, m: float(np.sum(p ** 2)), "translation"),
    # Σ_i (i+1)|x_i − centroid|²: rotation and translation invariant, depends on atom order
    (lambda p, s, m: float(np.sum(np.arange(1, len(p) + 1) * np.sum((p - p.mean(0)) ** 2, 1))),
     "permutation"),
])
def test_invariant_fails_for_exactly_the_broken_symmetry(breaker, broken):
    counts = {"rotation": dict(rotations=2, translations=0, permutations=0),
              "translation": dict(rotations=0, translations=2, permutations=0),
              "permutation": dict(rotations=0, translations=0, permutations=2)}
    for name, only in counts.items():
        if name == broken:
            with pytest.raises(AssertionError, match=f"not invariant under {name}"):
                testing.assert_invariant(breaker, POS, **only)
        else:
            assert testing.assert_invariant(breaker, POS, **only) < 1e-10


# ------------------------------------------------------------------- forces

def test_finite_difference_forces_of_a_harmonic_energy():
    """E = ½ k Σ|x|² (cubic terms vanish: central differences are exact up to round-off)."""
    k = 3.0
    fd = testing.finite_difference_forces(lambda x: 0.5 * k * np.sum(x ** 2), POS)
    np.testing.assert_allclose(fd, -k * POS, atol=1e-9)
    both = testing.finite_difference_forces(lambda x: np.array([np.sum(x ** 2), x[0, 0]]), POS)
    assert both.shape == (2, 6, 3) and both[1, 0, 0] == pytest.approx(-1.0, abs=1e-9)


def test_forces_check_passes_for_autodiff_and_fails_for_wrong_forces():
    pot = potentials.morse(cutoff=2.5)
    assert testing.assert_forces_match_finite_differences(pot, POS) < 1e-6
    _, f = pot.energy_and_forces(POS, np.ones(6, np.int32))
    f = np.asarray(f)
    assert np.abs(f).max() > 1.0  # the check has something to see
    with pytest.raises(AssertionError, match=r"at atom \d, axis [xyz]: .* eV/Å"):
        testing.assert_forces_match_finite_differences(pot, POS, forces=1.01 * f)
    with pytest.raises(ValueError, match=r"forces must be \[N, 3\]"):
        testing.assert_forces_match_finite_differences(pot, POS, forces=f[:3])
    # a function JAX cannot differentiate (numpy): its forces are given (morse() = pair_np)
    _, f_np = potentials.morse().energy_and_forces(POS, np.ones(6, np.int32))
    assert testing.assert_forces_match_finite_differences(pair_np, POS, forces=f_np) < 1e-6


# ------------------------------------------------------------------- docs

def test_docs_testing_example_runs(capsys):
    text = (pathlib.Path(__file__).parents[1] / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/testing.md should hold one runnable python example"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/testing.md", "exec"), namespace)
    ref = namespace["ref"]
    assert ref.per_order[0] == pytest.approx(6 * E_ATOM, abs=1e-10)
    assert abs(ref.per_order[1]) > 0.1
