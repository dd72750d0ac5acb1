"""The composition baseline read off isolated-atom rows makes a zoo model's E^(1) exact."""

import numpy as np
import pytest

import jbo  # noqa: F401
from jbo.train import TrainConfig
from jbo.train.dataset import normalization, prepare
from tests.toy import reference_energy, write_toy_db


@pytest.fixture(scope="module")
def toy_db(tmp_path_factory):
    return write_toy_db(tmp_path_factory.mktemp("db") / "toy.db", train_sizes=(4, 4, 5), heldout_sizes=(6,))


def test_baseline_from_isolated_atoms_is_the_atom_energy(toy_db):
    cfg = TrainConfig(db=str(toy_db), makeup="up_to:2+atoms", baseline_from_atoms=True,
                      progress=False, tensorboard=False)
    base, _ = normalization(cfg, prepare(cfg).train)
    atom = reference_energy(np.zeros((1, 3)))
    assert base == {1: pytest.approx(atom, abs=1e-12)}
    fitted, _ = normalization(cfg.__class__(**{**cfg.__dict__, "baseline_from_atoms": False}),
                              prepare(cfg).train)
    assert abs(fitted[1] - atom) > 1e-6  # least squares would not have found it


def test_baseline_from_atoms_without_atoms_is_a_clear_error(toy_db):
    cfg = TrainConfig(db=str(toy_db), makeup="full", baseline_from_atoms=True,
                      progress=False, tensorboard=False)
    with pytest.raises(ValueError, match="isolated-atom rows"):
        normalization(cfg, prepare(cfg).train)
