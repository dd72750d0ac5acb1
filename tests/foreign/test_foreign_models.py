"""The paper's own models through the engine: metatrain PET / SOAP-BPNN (metatomic exports) and
mace-torch MACE, against their own packages' ASE calculators.

Truth: each package's ASE calculator (``MetatomicCalculator``, ``MACECalculator``) run on every
subcluster in a plain loop, then an inclusion–exclusion written here with itertools (no jbo
code), for energies and forces. Models are built (random weights, float64) or trained
(``mtt train``, a few steps) inside the tests. The extras' tests skip with a reason when the
extra is missing, except under CI=true, where a missing extra fails.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import jbo  # noqa: F401
from jbo.decompose import body_orders

CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).parents[2]
TOL = 1e-6  # eV per order (eV/Å for forces), float64 everywhere


def need(module: str, extra: str):
    """Import an extra's module; skip without it, but fail under CI (which installs it)."""
    if CI:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs pip install -e '.[{extra}]'")


def loop_truth(atoms: Atoms, calc) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-order energies [N], per-order forces [N, N, 3] and ε(S): calculator on every
    subcluster, explicit inclusion–exclusion."""
    n = len(atoms)
    energy, force = {(): 0.0}, {(): np.zeros((n, 3))}
    for k in range(1, n + 1):
        for s in itertools.combinations(range(n), k):
            sub = Atoms(numbers=atoms.numbers[list(s)], positions=atoms.positions[list(s)])
            sub.calc = calc
            energy[s] = sub.get_potential_energy()
            force[s] = np.zeros((n, 3))
            force[s][list(s)] = sub.get_forces()

    def eps(table, s):
        return sum((-1) ** (len(s) - k) * table[t] for k in range(len(s) + 1)
                   for t in itertools.combinations(s, k))

    terms = {s: eps(energy, s) for s in energy if s}
    per_order = np.array([sum(terms[s] for s in terms if len(s) == k) for k in range(1, n + 1)])
    forces = np.array([sum(eps(force, s) for s in terms if len(s) == k)
                       for k in range(1, n + 1)])
    return per_order, forces, terms


_TRUTHS: dict = {}


def truth_of(atoms: Atoms, kind: str, path: Path, dtype: str = "float64"):
    """:func:`loop_truth` with the package's calculator, computed once per model and dtype."""
    key = (atoms.get_chemical_formula(), atoms.positions.tobytes(), kind, str(path), dtype)
    if key not in _TRUTHS:
        _TRUTHS[key] = loop_truth(atoms, calculator(kind, path, dtype))
    return _TRUTHS[key]


def bitmask(s) -> int:
    return sum(1 << i for i in s)


#: a compressed water-dimer-like cluster: every order is sizeable
CLUSTER = Atoms("OHHOH", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                                    [1.9, 1.2, 0.4], [2.3, 0.4, 0.9]])
#: a zig-zag chain, neighbours 1.75 Å apart, next neighbours 3.4 Å (> the 3 Å cutoffs)
CHAIN = Atoms("HOHHOH", positions=[[1.7 * i, 0.4 * (i % 2), 0.0] for i in range(6)])
CUTOFF = 3.0


# ----------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory) -> Path:
    need("mace", "mace")  # first: mace makes e3nn's torch.load work on torch >= 2.6
    torch = need("torch", "mace")
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = modules.ScaleShiftMACE(
            r_max=CUTOFF, num_bessel=4, num_polynomial_cutoff=5, max_ell=1,
            interaction_cls=block, interaction_cls_first=block, num_interactions=2,
            num_elements=2, hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("8x0e"),
            atomic_energies=np.array([-13.6, -75.0]), avg_num_neighbors=2.0,
            atomic_numbers=[1, 8], correlation=2, gate=torch.nn.functional.silu,
            atomic_inter_scale=0.8, atomic_inter_shift=0.1)
    finally:
        torch.set_default_dtype(old)
    path = tmp_path_factory.mktemp("mace") / "tiny.model"
    torch.save(model, path)
    return path


def _metatrain_export(name: str, model_hypers: dict, path: Path) -> Path:
    torch = need("torch", "metatrain")
    need("metatrain", "metatrain")
    from metatrain.utils.architectures import get_default_hypers, import_architecture
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    hypers = copy.deepcopy(get_default_hypers(name)["model"])
    for key, value in model_hypers.items():
        hypers[key] = {**hypers[key], **value} if isinstance(value, dict) else value
    info = DatasetInfo(length_unit="angstrom", atomic_types=[1, 8], targets={
        "energy": get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"})})
    torch.manual_seed(0)
    model = import_architecture(name).__model__(hypers, info).to(torch.float64)
    model.export().save(str(path))
    return path


@pytest.fixture(scope="module")
def pet_file(tmp_path_factory) -> Path:
    return _metatrain_export("pet", dict(
        cutoff=CUTOFF, d_pet=16, d_head=16, d_node=16, d_feedforward=16, num_heads=2,
        num_attention_layers=1, num_gnn_layers=2), tmp_path_factory.mktemp("pet") / "pet.pt")


@pytest.fixture(scope="module")
def soap_file(tmp_path_factory) -> Path:
    need("spex", "metatrain")  # metatrain's soap-bpnn extra (torch-spex, sphericart)
    return _metatrain_export("soap_bpnn", dict(
        soap=dict(max_angular=2, max_radial=3, cutoff=dict(radius=CUTOFF, width=0.5)),
        bpnn=dict(num_hidden_layers=1, num_neurons_per_layer=8)),
        tmp_path_factory.mktemp("soap") / "soap.pt")


def calculator(kind: str, path: Path, dtype: str = "float64"):
    if kind == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=str(path), device="cpu", default_dtype=dtype)
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(str(path), device="cpu")


MODELS = ["mace", "pet", "soap_bpnn"]


@pytest.fixture(params=MODELS)
def model(request) -> tuple[str, Path]:
    fixture = {"mace": "mace_file", "pet": "pet_file", "soap_bpnn": "soap_file"}[request.param]
    return request.param, request.getfixturevalue(fixture)


# ----------------------------------------------------------------------------- exactness


def test_adapter_equals_the_packages_calculator_on_every_subcluster(model):
    from jbo.foreign import load_potential

    kind, path = model
    pot = load_potential(path)
    calls = []
    evaluate = pot.evaluator
    pot.evaluator = lambda items, forces: calls.append(len(items)) or evaluate(items, forces)
    r = body_orders(pot, CLUSTER, forces=True)
    assert calls == [31]  # all 2^5 - 1 subclusters, sorted by size, in one batched call
    assert pot.dtype == "float64"
    truth, forces, terms = truth_of(CLUSTER, kind, path)
    per, f = np.asarray(r.per_order), np.asarray(r.forces)
    print(f"{kind}: max |ΔE^(k)| = {np.abs(per - truth).max():.1e} eV, "
          f"max |ΔF^(k)| = {np.abs(f - forces).max():.1e} eV/Å, E^(k) = {per}")
    assert np.abs(truth[1:]).min() > 10 * TOL  # a real many-body model: every order is there
    np.testing.assert_allclose(per, truth, rtol=0, atol=TOL)
    np.testing.assert_allclose(f, forces, rtol=0, atol=TOL)
    for s in [(0,), (0, 1), (1, 3, 4), (0, 1, 2, 3, 4)]:
        assert abs(float(r.terms[bitmask(s)]) - terms[s]) < TOL
    r3 = body_orders(pot, CLUSTER, max_order=3)  # truncated: from the cache, same numbers
    np.testing.assert_allclose(np.asarray(r3.per_order), per[:3], rtol=0, atol=1e-12)
    assert calls == [31]
    energy_only = body_orders(load_potential(path, cache=False), CLUSTER)  # no autograd
    np.testing.assert_allclose(np.asarray(energy_only.per_order), per, rtol=0, atol=1e-9)


def test_cli_decomposes_a_foreign_model_file_recognised_by_content(model, tmp_path, capsys):
    """`jbo decompose FILE --structures F --json OUT` on a metatomic/MACE file (renamed: no
    extension to go by) writes the --calculator layout with the package calculator's orders."""
    import json

    import ase.io

    from jbo.cli import main

    kind, path = model
    renamed = tmp_path / "model.bin"
    shutil.copy(path, renamed)
    ase.io.write(tmp_path / "c.extxyz", CLUSTER)
    out = tmp_path / "o.json"
    assert main(["decompose", str(renamed), "--structures", str(tmp_path / "c.extxyz"),
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    truth, _, _ = truth_of(CLUSTER, kind, path)
    np.testing.assert_allclose(rows[0]["per_order_ev"], truth, rtol=0, atol=TOL)
    assert main(["decompose", str(renamed), "--structures", str(tmp_path / "c.extxyz"),
                 "--workers", "2"]) == 2  # refused in one line: workers are for --calculator
    assert "--workers" in capsys.readouterr().err


def test_connected_mode_with_the_declared_cutoff_equals_exhaustive(model):
    from jbo.foreign import load_potential

    kind, path = model
    pot = load_potential(path)
    assert pot.cutoff == pytest.approx(CUTOFF)  # from the model's own metadata
    assert pot.receptive_field == pytest.approx(2 * CUTOFF if kind != "soap_bpnn" else CUTOFF)
    full = body_orders(pot, CHAIN, forces=True)
    pot.clear_cache()
    before = pot.n_evaluated
    conn = body_orders(pot, CHAIN, cutoff=pot.cutoff, forces=True)
    assert pot.n_evaluated - before == 21  # the connected subsets of a 6-chain, not 63
    np.testing.assert_allclose(np.asarray(conn.per_order), np.asarray(full.per_order),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(conn.forces), np.asarray(full.forces),
                               rtol=0, atol=1e-9)
    for s in [(0, 2), (0, 5), (0, 1, 3), (0, 1, 2, 4)]:  # disconnected at the cutoff
        assert abs(float(full.terms[bitmask(s)])) < 1e-10
    assert abs(float(full.terms[bitmask((0, 1, 2))])) > 1e-6  # connected: a real term
    with pytest.raises(ValueError, match="smaller than the model's own cutoff"):
        body_orders(pot, CHAIN, cutoff=CUTOFF - 0.5)


def test_elements_the_model_does_not_know_are_refused(model):
    from jbo.foreign import load_potential

    kind, path = model
    pot = load_potential(path)
    assert pot.species == (1, 8)
    with pytest.raises(ValueError, match=r"\[6\] are not among the elements this"):
        body_orders(pot, Atoms("CH", positions=[[0, 0, 0], [1.1, 0, 0]]))
    assert pot.n_evaluated == 0


def test_mace_in_float32_agrees_within_float32_rounding(mace_file):
    from jbo.foreign.mace import from_mace

    pot = from_mace(mace_file, dtype="float32")
    r = body_orders(pot, CLUSTER)
    truth32 = truth_of(CLUSTER, "mace", mace_file, "float32")[0]
    truth64 = truth_of(CLUSTER, "mace", mace_file)[0]
    per = np.asarray(r.per_order)
    # each subcluster energy (|E| <= 2·75 + 3·13.6 eV: the atomic energies dominate) rounded
    # to float32 (2^-24 relative); E^(k) weighs them C(N-|T|, k-|T|), in all C(N,k)·2^k <= 80
    tol = 80 * (2 * 75.0 + 3 * 13.6) * 2.0**-24
    print(f"float32: max |ΔE^(k)| vs calculator {np.abs(per - truth32).max():.1e}, "
          f"vs float64 {np.abs(per - truth64).max():.1e} (tolerance {tol:.1e}) eV")
    np.testing.assert_allclose(per, truth32, rtol=0, atol=tol)
    np.testing.assert_allclose(per, truth64, rtol=0, atol=tol)
    assert pot.dtype == "float32" and pot.tag != from_mace(mace_file).tag


def test_mace_module_is_not_modified_and_heads_are_checked(mace_file):
    torch = need("torch", "mace")
    from jbo.foreign.mace import from_mace, load_mace

    module = load_mace(mace_file).float()
    pot = from_mace(module)
    assert next(module.parameters()).dtype == torch.float32  # converted on a copy
    assert pot.dtype == "float64" and pot.tag.startswith("mace:")
    with pytest.raises(ValueError, match=r"head 'omat' is not among .*\['Default'\]"):
        from_mace(mace_file, head="omat")
    with pytest.raises(TypeError, match="mace-torch energy model"):
        from_mace(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- files


def test_mtt_trained_and_exported_pet_loads_and_decomposes(tmp_path):
    need("metatrain", "metatrain")
    from metatomic_ase import MetatomicCalculator

    from jbo.foreign import load_potential
    from jbo.data.records import export, read_parents
    from jbo.foreign import identify

    parents = [p for p in read_parents(ROOT / "data/h_clusters.npz") if p.n == 4][:3]
    assert export(parents, tmp_path / "h.extxyz") == 45  # as `jbo data export` writes them
    (tmp_path / "options.yaml").write_text(f"""
seed: 0
device: cpu
base_precision: 64
architecture:
  name: pet
  model: {{cutoff: {CUTOFF}, d_pet: 8, d_head: 8, d_node: 8, d_feedforward: 8, num_heads: 1,
          num_attention_layers: 1, num_gnn_layers: 1}}
  training: {{batch_size: 8, num_epochs: 1, log_interval: 1}}
training_set:
  systems: {{read_from: h.extxyz, length_unit: angstrom}}
  targets: {{energy: {{key: energy, unit: eV, forces: false}}}}
validation_set: 0.2
test_set: 0.0
""")
    mtt = [sys.executable, "-m", "metatrain"]  # `mtt`, of this interpreter
    # `mtt train` exports the trained model itself (model.pt, what `mtt export` writes)
    run = subprocess.run(mtt + ["train", "options.yaml", "-o", "trained.pt"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with pytest.raises(ValueError, match=r"metatrain checkpoint.*mtt export trained\.ckpt"):
        load_potential(tmp_path / "trained.ckpt")
    shutil.copy(tmp_path / "trained.pt", tmp_path / "model.bin")  # by content, not by name
    assert identify(tmp_path / "model.bin") == "metatomic"
    pot = load_potential(tmp_path / "model.bin")
    assert (pot.kind, pot.dtype, pot.cutoff, pot.species) == ("metatomic", "float64", CUTOFF,
                                                              (1,))
    atoms = Atoms("H4", positions=[[0, 0, 0], [0.8, 0, 0], [0.3, 0.9, 0], [0.5, 0.4, 0.8]])
    r = body_orders(pot, atoms, forces=True)
    truth, forces, _ = loop_truth(atoms, MetatomicCalculator(str(tmp_path / "trained.pt")))
    print(f"mtt-trained PET: max |ΔE^(k)| = {np.abs(np.asarray(r.per_order) - truth).max():.1e}")
    np.testing.assert_allclose(np.asarray(r.per_order), truth, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(r.forces), forces, rtol=0, atol=TOL)


def test_load_potential_recognises_files_by_content(tmp_path, mace_file, pet_file):
    torch = need("torch", "mace")
    from jbo import models
    from jbo.foreign import load_potential
    from jbo.foreign import identify
    from jbo.models import Model

    jbo_file = tmp_path / "plain.weights"
    shutil.copy(ROOT / "results/train_body_order_reg/plain.jbo", jbo_file)
    for path, kind in [(jbo_file, "jbo"), (pet_file, "metatomic"), (mace_file, "mace")]:
        renamed = tmp_path / f"{kind}.pt"
        shutil.copy(path, renamed)
        assert identify(renamed) == kind
    trained = load_potential(tmp_path / "jbo.pt")
    assert isinstance(trained, Model)
    h3 = Atoms("H3", positions=[[0, 0, 0], [0.9, 0, 0], [0.2, 0.8, 0]])
    np.testing.assert_array_equal(np.asarray(body_orders(trained, h3).per_order), np.asarray(
        body_orders(models.load(ROOT / "results/train_body_order_reg/plain.jbo"), h3).per_order))
    assert load_potential(tmp_path / "mace.pt").kind == "mace"
    from jbo.foreign.mace import load_mace

    torch.save(load_mace(mace_file), tmp_path / "legacy", _use_new_zipfile_serialization=False)
    assert identify(tmp_path / "legacy") == "mace"  # the pre-zip torch.save format too
    assert load_potential(tmp_path / "metatomic.pt").kind == "metatomic"
    with pytest.raises(ValueError, match="options .*cutoff.* apply to metatomic and MACE"):
        load_potential(jbo_file, cutoff=3.0)

    CLUSTER.write(tmp_path / "c.xyz")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pt")
    for name, what in [("c.xyz", "content is none of these formats"),
                       ("linear.pt", "torch.save file of torch.nn.modules.linear.Linear"),
                       ("script.pt", "TorchScript file but not a metatomic model")]:
        with pytest.raises(ValueError, match=what):
            load_potential(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_potential(tmp_path / "missing.model")


@pytest.mark.parametrize("module,extra,call", [
    ("mace", "mace", "from_mace"), ("metatomic.torch", "metatrain", "from_metatomic")])
def test_missing_extra_names_the_pip_install(monkeypatch, tmp_path, module, extra, call):
    import jbo.foreign

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install 'jbo\[{extra}\]'"):
        getattr(jbo.foreign, call)(tmp_path / "model")
