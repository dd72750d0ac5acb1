"""SOAP-BPNN: SOAP power spectrum per atom -> per-species MLP -> sum (Behler-Parrinello).

The neighbour density of atom ``i`` is expanded as
``c[i, (a n), lm] = sum_j fc(r_ij) R_n(r_ij) Y_lm(r_ij_hat) [species_j == a] / avg_num_neighbors``
(Bessel radial basis, real spherical harmonics, smooth polynomial cutoff; the centre does not
contribute), and the rotation-invariant power spectrum is

``p[i, (a n) <= (a' n'), l] = (2l+1)^-1/2 sum_m c[i, (a n), lm] c[i, (a' n'), lm]``.

An MLP chosen by the centre's species maps ``p[i]`` to the learned part of its energy. With
``use_bias=False`` (the default) and ``silu(0) = 0`` an isolated atom (``p = 0``) predicts
exactly 0, so its energy is the model's composition baseline c_Z, as the reference study
required.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jbo.models import layers
from jbo.models.base import ZooModel
from jbo.potential import contract_tested


def power_spectrum(density, max_l: int) -> jax.Array:
    """SOAP power spectrum from a neighbour density.

    Args:
        density: IrrepsArray ``[N, K, (max_l+1)^2]`` (see :func:`layers.neighbour_density`).

    Returns:
        ``[N, (max_l+1) * K (K+1) / 2]`` invariants, ordered by ``l`` then pair ``k <= k'``.
    """
    k = density.shape[1]
    iu, ju = np.triu_indices(k)
    feats = []
    for l, chunk in zip(range(max_l + 1), density.chunks):
        c = chunk[..., 0, :]  # [N, K, 2l+1] (multiplicity 1 per l)
        p = jnp.einsum("ikm,ijm->ikj", c, c) / float(np.sqrt(2 * l + 1))
        feats.append(p[:, iu, ju])
    return jnp.concatenate(feats, axis=-1)


@contract_tested  # tests/models/test_models.py: masked == extracted, every zoo model
class SoapBPNN(ZooModel):
    """SOAP power spectrum + per-species MLP.

    Attributes:
        max_radial: number of radial basis functions ``n`` (reference study: 8).
        max_angular: largest ``l`` of the spherical harmonics (reference study: 6).
        hidden: widths of the hidden layers of each species' MLP (2 hidden layers).
        avg_num_neighbors: fixed constant dividing the density (no data-dependent
            normalisation, so masked atoms cannot leak in).
        feature_scale: fixed factor on the power spectrum. Training takes it from the data
            (1 / RMS of the features over the training atoms, :mod:`jbo.train.constants`)
            unless given: a fixed scale keeps ``p = 0 -> 0`` and the energy smooth, where a
            per-atom LayerNorm (metatrain) would not.
        radial: radial basis, ``bessel`` or ``gaussian`` (:func:`layers.radial_basis`).
    """

    cutoff: float = 5.0
    max_radial: int = 8
    max_angular: int = 6
    hidden: tuple[int, ...] = (64, 64)
    avg_num_neighbors: float = 4.0
    feature_scale: float = 1.0
    radial: str = "bessel"

    data_constants: ClassVar[tuple[str, ...]] = ("feature_scale",)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"radial": layers.RADIAL_BASES}

    def descriptor(self, pairs, idx) -> jax.Array:
        """``[N, F]`` SOAP power spectrum of every atom (0 for masked or isolated atoms)."""
        dens = layers.neighbour_density(
            pairs, idx, self.n_species, self.max_radial, self.max_angular, self.cutoff,
            scale=1.0 / self.avg_num_neighbors, radial=self.radial,
        )
        return power_spectrum(dens, self.max_angular) * self.feature_scale

    def features(self, positions, species, mask) -> jax.Array:
        """``[N, F]`` scaled power spectrum of each atom (0 for masked or isolated atoms)."""
        _, idx, _, pairs = self._prepare(positions, species, mask)
        return self.descriptor(pairs, idx)

    @property
    def num_features(self) -> int:
        k = self.n_species * self.max_radial
        return (self.max_angular + 1) * k * (k + 1) // 2

    def setup(self):
        self.readout = layers.SpeciesMLP(
            features=tuple(self.hidden) + (1,),
            n_species=self.n_species,
            use_bias=self.use_bias,
            dtype=self.dtype,
        )

    def atomic_energies(self, positions, species, mask) -> jax.Array:
        """``[N]`` per-atom energies (eV); exactly 0 for masked atoms."""
        _, idx, mask, pairs = self._prepare(positions, species, mask)
        p = self.descriptor(pairs, idx)
        e = self.readout(p, idx)[:, 0]
        return self._finish(mask, e)
