"""Stand-ins for the training tests: a tiny many-body Flax model and a tiny labelled ase.db.

The analytic reference is a Finnis–Sinclair-like potential (pairs + −√ρ embedding), which has
interaction terms at every body order (``test_train_regularizer::test_reference_is_many_body``).
Helpers only; the pytest fixtures built on them are in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import jbo  # noqa: F401  (float64)
from jbo import testing
from jbo.train.config import RegularizerConfig, TrainConfig

E_ATOM = -13.6  # eV, isolated-atom energy of the analytic reference


def _pair_geometry(positions, mask):
    n = positions.shape[0]
    d = positions[:, None, :] - positions[None, :, :]
    pm = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
    r = jnp.sqrt(jnp.where(pm, jnp.sum(d**2, -1), 1.0))
    return r, pm


class ToyEAM(nn.Module):
    """E = Σ_i F(ρ_i) + ½ Σ_ij φ(r_ij), ρ_i = Σ_j g(r_ij), all learned (contract-compliant)."""

    cutoff: float = 5.0
    n_basis: int = 6
    hidden: int = 8
    is_local: bool = True

    @nn.compact
    def __call__(self, positions, species, mask):
        r, pm = _pair_geometry(positions, mask)
        fc = jnp.where(pm & (r < self.cutoff), 0.5 * (jnp.cos(jnp.pi * r / self.cutoff) + 1), 0.0)
        mu = jnp.linspace(0.5, self.cutoff, self.n_basis)
        rbf = jnp.exp(-2.0 * (r[..., None] - mu) ** 2) * fc[..., None]  # [N,N,nb]
        pair = nn.Dense(1, use_bias=False, name="pair")(rbf)[..., 0]
        rho = jnp.sum(nn.Dense(self.hidden, use_bias=False, name="dens")(rbf), 1)  # [N,h]
        x = nn.tanh(nn.Dense(self.hidden, name="emb1")(rho))
        f = nn.Dense(1, name="emb2")(x)[:, 0] - nn.Dense(1, name="emb0")(jnp.zeros((1,)))[0]
        return jnp.sum(jnp.where(mask, f, 0.0)) + 0.5 * jnp.sum(pair)


def reference_energy(positions, mask=None) -> float:
    """Analytic many-body reference (eV): E_ATOM n + Σ_{i<j} φ − Σ_i (√(1+ρ_i) − 1)."""
    p = np.asarray(positions, float)
    m = np.ones(len(p), bool) if mask is None else np.asarray(mask, bool)
    p = p[m]
    r = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(len(p)) * 1e9
    phi = 2.0 * np.exp(-2.0 * (r - 0.8)) - 1.0 * np.exp(-(r - 0.8))
    rho = np.sum(np.exp(-1.5 * r), 1)
    return float(E_ATOM * len(p) + 0.5 * phi.sum() - 2.0 * np.sum(np.sqrt(1 + rho) - 1))


def reference_forces(positions, h: float = 1e-5) -> np.ndarray:
    """−∂E/∂x of :func:`reference_energy` by central differences (eV/Å)."""
    return testing.finite_difference_forces(reference_energy, positions, h)


def toy_cluster(n: int, seed: int, d_min: float = 0.8, d_max: float = 1.4) -> np.ndarray:
    """A connected random cluster (Å): each new atom d ∈ [d_min, d_max] from a placed one."""
    rng = np.random.default_rng(seed)
    pos = [np.zeros(3)]
    while len(pos) < n:
        v = rng.normal(size=3)
        cand = pos[rng.integers(len(pos))] + v / np.linalg.norm(v) * rng.uniform(d_min, d_max)
        if min(np.linalg.norm(cand - q) for q in pos) >= d_min:
            pos.append(cand)
    return np.array(pos)


def write_toy_db(path: str | Path, train_sizes=(4, 4, 5, 5, 4, 5), heldout_sizes=(6, 7),
                 forces: bool = True, seed: int = 0) -> Path:
    """A tiny reference db following docs/CONTRACTS.md, labelled with :func:`reference_energy`.

    ``split="train"`` parents carry every subcluster; ``heldout`` ones only the full cluster.
    """
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    path = Path(path)
    with ase.db.connect(str(path), append=False) as db:
        for split, sizes in (("train", train_sizes), ("heldout", heldout_sizes)):
            for j, n in enumerate(sizes):
                s = seed * 1000 + j + (500 if split == "heldout" else 0)
                pos = toy_cluster(n, s)
                cid = f"toy-n{n}-s{s:04d}"
                subsets = range(1, 1 << n) if split == "train" else [(1 << n) - 1]
                for sub in subsets:
                    idx = [i for i in range(n) if (sub >> i) & 1]
                    atoms = Atoms("H" * len(idx), positions=pos[idx])
                    e = reference_energy(pos[idx])
                    f = reference_forces(pos[idx]) if forces else None
                    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
                    db.write(atoms, cluster=cid, subset=sub, n_parent=n, regime="toy",
                             split=split, method="analytic", basis="none", spin=0, status="ok",
                             seed=s)
            # one failed row that readers must skip
        db.write(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]), cluster="bad", subset=3,
                 n_parent=2, regime="toy", split="train", method="analytic", basis="none",
                 spin=0, status="failed", reason="test", seed=-1)
    return path


# a fast-to-compile regularizer and the standard toy run of the training tests
TOY_REG = RegularizerConfig(lam=0.05, order=2, batch_size=2, backend="masks")


def toy_config(db, **kw) -> TrainConfig:
    """The toy training run (3 epochs, forces and the regularizer on); ``kw`` overrides."""
    base = dict(db=str(db), model="toy", makeup="up_to:2", epochs=3, batch_size=16, lr=1e-2,
                progress=False, tensorboard=False, force_weight=0.1, regularizer=TOY_REG,
                checkpoint_seconds=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _unvetted(params, positions, species, mask, *, inner):
    """A user's wrapper: code the test suite does not prove, so the engine checks its contract."""
    return inner(params, positions, species, mask)


def unvetted(pot):
    """``pot`` behind a user's wrapper: same energy, but its masking contract is checked at run
    time (jbo's own parts skip the check: ``jbo.potential.contract_tested``)."""
    import dataclasses

    from jbo.potential import Bound

    return dataclasses.replace(pot, apply=Bound.of(_unvetted, inner=pot.apply))
