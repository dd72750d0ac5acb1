"""Linear ACE: an explicitly body-ordered model (atomic cluster expansion, linear readout).

The one-particle basis is the neighbour density (:func:`layers.neighbour_density`)
``A[i, k, lm] = sum_j phi_klm(r_ij)`` with ``k = (neighbour species, radial index)``. The
rotation-invariant correlations of order ``nu`` are the fully coupled products of ``nu``
copies of ``A``:

- ``nu = 1``: ``B1[k] = A[k, 00]`` (pair terms);
- ``nu = 2``: ``B2[k k', l] = sum_m A[k, lm] A[k', lm] / sqrt(2l+1)``, ``k <= k'``;
- ``nu = 3``: ``B3[k1 k2 k3, l1 l2 l3] = sum_{m} C^{l1 l2 l3}_{m1 m2 m3} A[k1,l1m1] A[k2,l2m2]
  A[k3,l3m3]`` over ``l1 <= l2 <= l3`` with ``l1 + l2 + l3`` even (true scalars), Clebsch-Gordan
  coefficients from e3nn.

The atomic energy is ``E_i = E0[s_i] + sum_nu w_nu[s_i] . B_nu[i]``: linear in a basis that is
a polynomial of degree ``nu`` in sums over neighbours, so each term involves the centre and at
most ``nu`` neighbours. The many-body expansion therefore vanishes *exactly* beyond body order
``nu + 1`` (correlation_order ``nu``), which the tests check through the engine.
"""

from __future__ import annotations

import itertools

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jbo.models import layers
from jbo.models.base import ZooModel
from jbo.potential import contract_tested
from jbo.models.soap_bpnn import power_spectrum

MAX_CORRELATION = 3


def coupling_triples(max_l: int) -> list[tuple[int, int, int]]:
    """``(l1, l2, l3)`` with ``l1 <= l2 <= l3 <= max_l``, triangle rule and even sum."""
    return [
        (a, b, c)
        for a, b, c in itertools.combinations_with_replacement(range(max_l + 1), 3)
        if c <= a + b and (a + b + c) % 2 == 0
    ]


def triple_correlations(density, max_l: int) -> jax.Array:
    """``nu = 3`` invariants ``[N, n_triples * K^3]`` from a density ``[N, K, (max_l+1)^2]``."""
    chunks = [c[..., 0, :] for c in density.chunks]  # l -> [N, K, 2l+1]
    n = chunks[0].shape[0]
    feats = []
    for l1, l2, l3 in coupling_triples(max_l):
        cg = jnp.asarray(e3nn.clebsch_gordan(l1, l2, l3), chunks[0].dtype)
        b = jnp.einsum("iam,ibp,icq,mpq->iabc", chunks[l1], chunks[l2], chunks[l3], cg)
        feats.append(b.reshape(n, -1))
    return jnp.concatenate(feats, axis=-1)


def ace_basis(density, max_l: int, correlation: int) -> jax.Array:
    """All invariants up to correlation order ``correlation``, ``[N, F]``."""
    feats = [density.chunks[0][..., 0, 0]]  # nu = 1: [N, K]
    if correlation >= 2:
        feats.append(power_spectrum(density, max_l))
    if correlation >= 3:
        feats.append(triple_correlations(density, max_l))
    return jnp.concatenate(feats, axis=-1)


@contract_tested  # tests/models/test_models.py: masked == extracted, every zoo model
class LinearACE(ZooModel):
    """Linear atomic cluster expansion of correlation order ``correlation`` (body order nu+1).

    Attributes:
        correlation: ``nu`` in 1..3; the model is exactly ``(nu+1)``-body.
        max_radial: radial basis functions per neighbour species.
        max_angular: largest ``l``.
        avg_num_neighbors: fixed constant dividing the density (keeps the basis O(1)).
        use_bias: add a learned per-species constant (a trainable one-body term); when False
            an isolated atom predicts exactly 0.
    """

    cutoff: float = 5.0
    correlation: int = 2
    max_radial: int = 6
    max_angular: int = 3
    avg_num_neighbors: float = 4.0

    @property
    def num_features(self) -> int:
        k = self.n_species * self.max_radial
        f = k
        if self.correlation >= 2:
            f += (self.max_angular + 1) * k * (k + 1) // 2
        if self.correlation >= 3:
            f += len(coupling_triples(self.max_angular)) * k**3
        return f

    @nn.compact
    def atomic_energies(self, positions, species, mask) -> jax.Array:
        """``[N]`` per-atom energies (eV); exactly 0 for masked atoms."""
        if not 1 <= self.correlation <= MAX_CORRELATION:
            raise ValueError(f"correlation must be in 1..{MAX_CORRELATION}, got {self.correlation}")
        dt = jnp.dtype(self.dtype)
        _, idx, mask, pairs = self._prepare(positions, species, mask)
        dens = layers.neighbour_density(
            pairs, idx, self.n_species, self.max_radial, self.max_angular, self.cutoff,
            scale=1.0 / self.avg_num_neighbors,
        )
        b = ace_basis(dens, self.max_angular, self.correlation)  # [N, F]
        w = self.param(
            "weights", nn.initializers.normal(1.0 / np.sqrt(b.shape[-1])),
            (self.n_species, b.shape[-1]), dt,
        )
        e = jnp.sum(w[idx] * b, axis=-1)
        if self.use_bias:
            e = e + self.param("bias", nn.initializers.zeros, (self.n_species,), dt)[idx]
        return self._finish(mask, e)
