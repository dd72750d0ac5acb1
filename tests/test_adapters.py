"""Foreign models through the engine: ASE calculators and torch models against independent truths.

Truths: a plain Python loop of ``calc.get_potential_energy()`` on every subcluster followed by an
independent inclusion–exclusion (itertools, no jbo code); Lennard-Jones pair sums; analytic
terms of a torch pair + three-body model; finite differences for per-order forces.
"""

from __future__ import annotations

import itertools
import json
from math import comb

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

import jbo  # noqa: F401
from jbo.adapters import from_ase, from_structures, known_cutoff
from jbo.decompose import body_orders
from jbo.host import SubclusterError


def cluster(symbol: str, n: int, seed: int = 0) -> Atoms:
    atoms = Icosahedron(symbol, 2)[:n]
    atoms.rattle(0.08, seed=seed)
    return atoms


def loop_truth(atoms: Atoms, calc) -> tuple[np.ndarray, dict]:
    """E^(1..N) and ε(S): a Python loop of calculator calls, explicit inclusion–exclusion."""
    n = len(atoms)
    energy = {(): 0.0}
    for k in range(1, n + 1):
        for s in itertools.combinations(range(n), k):
            sub = atoms[list(s)]
            sub.calc = calc
            energy[s] = sub.get_potential_energy()
    eps = {s: sum((-1) ** (len(s) - k) * energy[t] for k in range(len(s) + 1)
                  for t in itertools.combinations(s, k)) for s in energy if s}
    per_order = np.array([sum(e for s, e in eps.items() if len(s) == k) for k in range(1, n + 1)])
    return per_order, eps


def bitmask(s) -> int:
    return sum(1 << i for i in s)


@pytest.mark.parametrize("symbol,n", [("Cu", 10), ("Ag", 7), ("Au", 4)])
def test_emt_equals_loop_and_inclusion_exclusion(symbol, n):
    atoms = cluster(symbol, n, seed=n)
    truth, eps = loop_truth(atoms, EMT())
    pot = from_ase(EMT())
    r = body_orders(pot, atoms)
    np.testing.assert_allclose(np.asarray(r.per_order), truth, rtol=0, atol=1e-9)
    for s in [(0,), (0, 1), tuple(range(n - 1)), tuple(range(n))]:
        assert abs(float(r.terms[bitmask(s)]) - eps[s]) < 1e-9
    assert pot.n_evaluated == 2**n - 1
    r3 = body_orders(pot, atoms, max_order=3)  # truncated: every subset already cached
    np.testing.assert_allclose(np.asarray(r3.per_order), truth[:3], rtol=0, atol=1e-9)
    assert pot.n_evaluated == 2**n - 1
    assert abs(float(r.total) - sum(eps.values())) < 1e-9


def test_emt_connected_with_its_cutoff_equals_exhaustive():
    # a zig-zag chain 2.55 Å apart: EMT's cutoff (~5.9 Å) links only near neighbours
    n = 8
    pos = np.array([[2.3 * i, 1.1 * (i % 2), 0.0] for i in range(n)])
    atoms = Atoms("Cu8", positions=pos)
    pot = from_ase(EMT())
    assert pot.cutoff == known_cutoff(EMT()) and 5.0 < pot.cutoff < 7.0
    full = body_orders(pot, atoms)
    before = pot.n_evaluated
    pot.clear_cache()
    conn = body_orders(pot, atoms, cutoff=pot.cutoff)
    assert pot.n_evaluated - before < 2**n - 1  # fewer subclusters evaluated
    np.testing.assert_allclose(np.asarray(conn.per_order), np.asarray(full.per_order),
                               rtol=0, atol=1e-9)
    for j in range(len(conn.terms)):
        assert abs(float(conn.terms[j]) - float(full.terms[bitmask(conn.atoms(j))])) < 1e-9
    far = bitmask((0, 7))  # 16 Å apart: no interaction term
    assert abs(float(full.terms[far])) < 1e-9
    with pytest.raises(ValueError, match="smaller than the model's own cutoff"):
        body_orders(pot, atoms, cutoff=3.0)


def test_lennard_jones_has_no_terms_above_two_body():
    sigma, epsilon, rc = 3.4, 0.0104, 9.0
    atoms = Icosahedron("Ar", 2)[:7]
    atoms.rattle(0.1, seed=3)
    r = body_orders(from_ase(LennardJones(sigma=sigma, epsilon=epsilon, rc=rc)), atoms)
    assert np.abs(np.asarray(r.per_order[2:])).max() < 1e-12
    d = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
    lj = lambda x: 4 * epsilon * ((sigma / x) ** 12 - (sigma / x) ** 6)  # noqa: E731
    pair = np.where(d < rc, lj(d) - lj(rc), 0.0).sum()  # ASE shifts the pair energy at rc
    assert abs(float(r.per_order[0])) < 1e-12
    assert abs(float(r.per_order[1]) - pair) < 1e-10


def test_per_order_forces_sum_to_the_calculator_and_match_finite_differences():
    atoms = cluster("Cu", 4, seed=1)
    pot = from_ase(EMT())
    r = body_orders(pot, atoms, forces=True)
    ref = atoms.copy()
    ref.calc = EMT()
    np.testing.assert_allclose(np.asarray(r.forces).sum(0), ref.get_forces(), atol=1e-9)
    h, i = 1e-5, 2
    for axis in range(3):
        shifted = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, axis] += sign * h
            shifted.append(np.asarray(body_orders(from_ase(EMT()), moved).per_order))
        fd = -(shifted[0] - shifted[1]) / (2 * h)
        np.testing.assert_allclose(np.asarray(r.forces)[:, i, axis], fd, atol=1e-6)
    r2 = body_orders(pot, atoms, max_order=2, forces=True)  # truncated path, same forces
    np.testing.assert_allclose(np.asarray(r2.forces), np.asarray(r.forces)[:2], atol=1e-10)


class FailsOnPair01(EMT):
    """EMT that raises on the subcluster of atoms 0 and 1 only (recognised by positions)."""

    def __init__(self, bad_positions, **kw):
        super().__init__(**kw)
        self.bad = np.asarray(bad_positions)

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if len(atoms) == 2 and np.allclose(atoms.positions, self.bad):
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties, system_changes)


def test_failing_subcluster_is_named_or_recorded_as_nan():
    atoms = cluster("Cu", 4, seed=2)
    with pytest.raises(SubclusterError, match=r"bitmask 0b11 = atoms \(0, 1\) of cluster 0.*"
                       r"SCF did not converge.*on_error='nan'"):
        body_orders(from_ase(FailsOnPair01(atoms.positions[:2])), atoms)
    pot = from_ase(FailsOnPair01(atoms.positions[:2]), on_error="nan")
    with pytest.warns(RuntimeWarning, match=r"atoms \(0, 1\)"):
        r = body_orders(pot, atoms)
    assert pot.failures == [{"cluster": 0, "bitmask": 3, "atoms": (0, 1),
                             "error": "RuntimeError: SCF did not converge"}]
    _, eps = loop_truth(atoms, EMT())
    terms = np.asarray(r.terms)
    assert np.isnan(terms[0b11]) and np.isnan(terms[0b1011]) and np.isnan(terms[0b1111])
    assert abs(terms[0b101] - eps[(0, 2)]) < 1e-9 and abs(terms[0b1110] - eps[(1, 2, 3)]) < 1e-9
    # only the orders holding a failed subcluster are NaN: E^(1) is the sum of the singletons
    per = np.asarray(r.per_order)
    assert np.isnan(per[1:]).all() and abs(per[0] - sum(eps[(i,)] for i in range(4))) < 1e-9


def test_periodic_structures_are_refused_unless_told():
    atoms = cluster("Cu", 4)
    atoms.cell = [20, 20, 20]
    atoms.pbc = True
    with pytest.raises(ValueError, match="periodic.*pbc='vacuum'"):
        body_orders(from_ase(EMT()), atoms)
    pos, numbers, mask = from_structures(atoms, pbc="vacuum")
    vac = body_orders(from_ase(EMT()), pos, numbers, atom_mask=mask)
    atoms.pbc = False
    np.testing.assert_allclose(np.asarray(vac.per_order),
                               np.asarray(body_orders(from_ase(EMT()), atoms).per_order), atol=0)


def test_batch_of_structures_is_padded():
    a, b = cluster("Cu", 5, 1), cluster("Au", 3, 2)
    pot = from_ase(EMT())
    r = body_orders(pot, [a, b], max_order=2)
    rc = body_orders(pot, [a, b], max_order=3, cutoff=pot.cutoff)  # connected, padded batch
    boxed = body_orders(from_ase(EMT(), vacuum=6.0), [a, b], max_order=2)  # cell, no PBC
    for i, atoms in enumerate((a, b)):
        truth = loop_truth(atoms, EMT())[0]
        np.testing.assert_allclose(np.asarray(r.per_order[i]), truth[:2], atol=1e-9)
        np.testing.assert_allclose(np.asarray(rc.per_order[i]), truth[:3], atol=1e-9)
        np.testing.assert_allclose(np.asarray(boxed.per_order[i]), truth[:2], atol=1e-9)


def test_unpicklable_calculator_with_workers_is_refused():
    calc = EMT()
    calc.hook = lambda: None  # a lambda cannot be pickled
    with pytest.raises(ValueError, match="cannot be pickled.*workers=1"):
        from_ase(calc, workers=2)


class Interrupted(EMT):
    """EMT that is 'killed' (KeyboardInterrupt, not caught as a subcluster failure) after
    ``limit`` calls."""

    def __init__(self, limit, **kw):
        super().__init__(**kw)
        self.limit, self.calls = limit, 0

    def calculate(self, *args, **kw):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        super().calculate(*args, **kw)


def test_disk_cache_resumes_a_killed_decomposition(tmp_path):
    atoms = cluster("Cu", 8, seed=4)
    path = tmp_path / "emt.sqlite"
    with pytest.raises(KeyboardInterrupt):
        body_orders(from_ase(Interrupted(100), cache=path, batch=16, tag="emt"), atoms)
    pot = from_ase(EMT(), cache=path, batch=16, tag="emt")
    r = body_orders(pot, atoms)
    assert pot.n_evaluated == 255 - 96  # six chunks of 16 were committed before the kill
    np.testing.assert_allclose(np.asarray(r.per_order),
                               np.asarray(body_orders(from_ase(EMT()), atoms).per_order),
                               atol=1e-12)


def test_worker_pool_gives_the_same_result():
    atoms = cluster("Ag", 5, seed=5)
    pot = from_ase(EMT(), workers=2, batch=4)
    try:
        r = body_orders(pot, atoms, forces=True)
    finally:
        pot.close()
    ref = body_orders(from_ase(EMT()), atoms, forces=True)
    np.testing.assert_allclose(np.asarray(r.per_order), np.asarray(ref.per_order), atol=0)
    np.testing.assert_allclose(np.asarray(r.forces), np.asarray(ref.forces), atol=0)


def test_host_potentials_refuse_jit_and_mesh():
    import jax

    pot = from_ase(EMT())
    pos = cluster("Cu", 3).positions
    with pytest.raises(ValueError, match="outside JAX"):
        jax.jit(lambda p: body_orders(pot, p, np.full(3, 29)).total)(pos)
    with pytest.raises(ValueError, match="workers="):
        body_orders(pot, pos, np.full(3, 29), mesh=jax.make_mesh((1,), ("batch",)))


def test_cli_decomposes_an_extxyz(tmp_path, capsys):
    import ase.io

    from jbo.cli import main

    frames = [cluster("Cu", 5, 1), cluster("Au", 4, 2)]
    path = tmp_path / "clusters.extxyz"
    ase.io.write(path, frames)
    out = tmp_path / "spec.json"
    assert main(["decompose", "--calculator", "emt", "--structures", str(path),
                 "--max-order", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["formula"] for r in rows] == ["Cu5", "Au4"]
    for atoms, row in zip(frames, rows):
        np.testing.assert_allclose(row["per_order_ev"], loop_truth(atoms, EMT())[0][:3],
                                   atol=1e-9)
    assert (tmp_path / "spec.png").stat().st_size > 1000
    assert "E^(3)" in capsys.readouterr().out
    assert main(["decompose", "--calculator", "emt", "--structures", str(path),
                 "--cutoff", "6.0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["mode"] == "connected"

    frames[0].cell, frames[0].pbc = [9, 9, 9], True
    ase.io.write(path, frames)
    assert main(["decompose", "--calculator", "emt", "--structures", str(path)]) == 2
    assert "periodic" in capsys.readouterr().err
    assert main(["decompose", "--calculator", "emt", "--structures", str(path),
                 "--pbc", "vacuum", "--max-order", "2"]) == 0
    assert main(["decompose", "--calculator", "nope", "--structures", str(path)]) == 2
    assert "emt, lj or module:factory" in capsys.readouterr().err
    assert main(["decompose"]) == 2


# ----------------------------------------------------------------------------- torch

A_PAIR, C_TRIPLE = 2.0, 5.0


def analytic_orders(pos: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """E^(1..3) of the torch model below, term by term (E^(k>=4) = 0)."""
    n = len(pos)
    r = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    e2 = sum(A_PAIR * np.exp(-r[i, j]) for i, j in itertools.combinations(range(n), 2))
    e3 = sum(C_TRIPLE * np.exp(-(r[i, j] + r[j, k] + r[i, k]))
             for i, j, k in itertools.combinations(range(n), 3))
    return np.array([-0.5 * numbers.sum(), e2, e3])


def make_torch_model():
    torch = pytest.importorskip("torch", reason="torch not installed: pip install 'jbo[torch]'")

    class PairTriple(torch.nn.Module):
        """E = Σ_i −Z_i/2 + Σ_{i<j} A e^{−r_ij} + Σ_{i<j<k} C e^{−(r_ij + r_jk + r_ik)}."""

        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, pos, numbers, mask):
            self.calls.append(tuple(pos.shape))
            n = pos.shape[1]
            pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
            d2 = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1)
            w = torch.where(pair, torch.exp(-torch.where(pair, d2, 1.0).sqrt()), 0.0)
            e1 = torch.where(mask, -0.5 * numbers.to(pos.dtype), 0.0).sum(-1)
            return (e1 + 0.5 * A_PAIR * w.sum((1, 2))
                    + C_TRIPLE * torch.einsum("bij,bjk,bki->b", w, w, w) / 6)

    return PairTriple()


def test_torch_model_matches_its_analytic_terms_one_batch_per_size():
    from jbo.adapters import from_torch

    model = make_torch_model()
    atoms = cluster("Cu", 6, seed=6)
    pos, num = atoms.positions / 2.0, atoms.numbers  # compressed: all terms sizeable
    r = body_orders(from_torch(model), pos, num, forces=True)
    assert model.calls == [(comb(6, k), k, 3) for k in range(1, 7)]  # one batch per size
    truth = analytic_orders(pos, num)
    np.testing.assert_allclose(np.asarray(r.per_order[:3]), truth, rtol=0, atol=1e-10)
    assert np.abs(np.asarray(r.per_order[3:])).max() < 1e-10
    h = 1e-6
    for i, axis in [(0, 0), (3, 2)]:
        plus, minus = pos.copy(), pos.copy()
        plus[i, axis] += h
        minus[i, axis] -= h
        fd = -(analytic_orders(plus, num) - analytic_orders(minus, num)) / (2 * h)
        np.testing.assert_allclose(np.asarray(r.forces)[:3, i, axis], fd, atol=1e-6)
    # batched, padded, truncated: the same analytic terms per cluster
    other = cluster("Ag", 4, seed=7).positions / 2.0
    batch = np.zeros((2, 6, 3))
    batch[0], batch[1, :4] = pos, other
    species = np.array([num, [47] * 4 + [0, 0]])
    mask = species > 0
    rb = body_orders(from_torch(model), batch, species, atom_mask=mask, max_order=3)
    np.testing.assert_allclose(np.asarray(rb.per_order[1]),
                               analytic_orders(other, np.full(4, 47)), atol=1e-10)


def test_from_torch_without_torch_says_how_to_install(monkeypatch):
    import sys

    from jbo.adapters import from_torch

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'jbo\[torch\]'"):
        from_torch(lambda p, z, m: p.sum())


def test_readme_examples_run():
    """README.md's ASE example (five lines) and docs/models.md's torch example (ten)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    emt = next(b for b in blocks if "from_ase(" in b)
    assert len(emt.strip().splitlines()) == 5
    ns: dict = {}
    exec(compile(emt, "README.md", "exec"), ns)
    atoms = Icosahedron("Cu", 2)[:10]
    assert abs(float(ns["r"].total) - sum(np.asarray(ns["r"].per_order))) < 1e-9
    ref = atoms.copy()
    ref.calc = EMT()
    assert abs(float(ns["r"].total) - ref.get_potential_energy()) < 1e-9
    pytest.importorskip("torch", reason="torch not installed: pip install 'jbo[torch]'")
    models = (pathlib.Path(__file__).parents[1] / "docs" / "models.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", models, flags=re.S)
                if "from_torch(" in b)
    assert len([x for x in code.strip().splitlines() if x.strip() and x[0] != "#"]) <= 10
    exec(compile(code, "docs/models.md", "exec"), ns)
    per = np.asarray(ns["rt"].per_order)
    assert np.abs(per[2:]).max() < 1e-12 and per[1] > 0 and ns["rt"].forces.shape == (4, 8, 3)
