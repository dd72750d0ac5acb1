"""The ASE calculator of a trained checkpoint: energy/forces vs the model and finite differences."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

from jbo import testing
from jbo.calculator import JboCalculator
from jbo.train import RegularizerConfig, TrainConfig, load_trained, train
from jbo.train.losses import structure_energy
from tests.toy import ToyEAM, toy_cluster, write_toy_db


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calc")
    db = write_toy_db(tmp / "toy.db", forces=False)
    cfg = TrainConfig(db=str(db), model="toy", makeup="up_to:2", epochs=1, batch_size=16,
                      progress=False, tensorboard=False, out_dir=str(tmp / "run"),
                      regularizer=RegularizerConfig())
    res = train(cfg, module=ToyEAM())
    return tmp / "run", res


def test_energy_and_forces_match_model_and_finite_differences(run_dir):
    path, res = run_dir
    calc = JboCalculator(path, module=ToyEAM())
    atoms = Atoms("H5", positions=toy_cluster(5, 77))
    atoms.calc = calc
    e = atoms.get_potential_energy()
    want = structure_energy(res.model, jnp.asarray(atoms.positions),
                            jnp.ones(5, jnp.int32), jnp.ones(5, bool))
    np.testing.assert_allclose(e, float(want), rtol=1e-12)
    f = atoms.get_forces()
    def energy(positions):
        x = atoms.copy()
        x.calc, x.positions = calc, positions
        return x.get_potential_energy()

    fd = testing.finite_difference_forces(energy, atoms.positions, h=1e-5)
    np.testing.assert_allclose(f, fd, atol=1e-6)
    assert np.abs(f.sum(0)).max() < 1e-9  # translation invariance


def test_latest_vs_best_and_errors(run_dir):
    path, res = run_dir
    latest = load_trained(path, which="latest", module=ToyEAM())
    assert latest.step == len(res.steps)
    with pytest.raises(ValueError, match="which"):
        load_trained(path, which="newest", module=ToyEAM())
    with pytest.raises(FileNotFoundError, match="no checkpoint folder"):
        JboCalculator(path / "nowhere", module=ToyEAM())
    atoms = Atoms("HLi", positions=[[0, 0, 0], [0, 0, 1.5]])
    atoms.calc = JboCalculator(path, module=ToyEAM())
    with pytest.raises(ValueError, match=r"elements \[3\]"):
        atoms.get_potential_energy()
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]], cell=[5, 5, 5], pbc=True)
    atoms.calc = JboCalculator(path, module=ToyEAM())
    with pytest.raises(NotImplementedError, match="pbc"):
        atoms.get_potential_energy()
