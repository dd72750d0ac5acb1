"""MACE-like equivariant message passing with higher-order (symmetric-contraction) messages.

Per layer ``t`` (Batatia et al., NeurIPS 2022), on dense pair arrays with e3nn-jax:

1. ``A_i = Linear( sum_j R_t(r_ij) [Linear(h_j) (x) Y(r_ij_hat)] / avg_num_neighbors )``: the
   atomic basis, one e3nn tensor product per edge weighted per path and channel by a radial
   MLP of the Bessel basis times the smooth cutoff (exactly 0 off-edge).
2. ``B_i = sum_{nu <= correlation} W_{s_i}^nu . (A_i (x) ... (x) A_i)`` channel-wise: the
   symmetric contraction, with weights per centre species, channel and coupling path.
3. ``h_i^{t+1} = Linear(B_i) + SelfConnection_{s_i}(h_i^t)`` (no self-connection in the first
   layer, as in MACE), and a readout per layer: linear for inner layers, an MLP for the last.

Every weight acting on zero input gives zero (no biases, ``silu(0) = 0``), so an atom without
neighbours has ``h = 0`` at every layer and predicts exactly 0 (its energy is the model's
composition baseline) unless ``use_bias=True`` (biases in the final readout MLP).
"""

from __future__ import annotations

from typing import ClassVar

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jbo.models import layers
from jbo.models.base import ZooModel
from jbo.potential import contract_tested


def hidden_irreps(num_channels: int, max_l: int) -> e3nn.Irreps:
    """``C x (0e + 1o + 2e + ...)`` up to ``max_l`` (natural parity)."""
    return (num_channels * layers.sh_irreps(max_l)).regroup()


class SymmetricContraction(nn.Module):
    """Channel-wise, species-weighted products of ``A`` up to ``correlation`` factors.

    ``out[i, c] = sum_nu sum_paths W[s_i, c, path] (a[i, c] (x) ... (x) a[i, c])_path``: the
    products are chained e3nn tensor products within each channel (intermediates kept up to
    ``max_l``), every coupling path gets its own weight per centre species and channel.
    Redundant (non-symmetrised) paths are kept: they only add parameters, and the chain keeps
    intermediates small (much cheaper under vmap than dense symmetric-power bases).

    Input ``a``: IrrepsArray ``[N, C, irreps_A]``; output ``[N, C, irreps_out]`` (mul 1 each).
    """

    irreps_out: e3nn.Irreps
    correlation: int
    max_l: int
    n_species: int

    @nn.compact
    def __call__(self, a: e3nn.IrrepsArray, species_idx: jax.Array) -> e3nn.IrrepsArray:
        keep_out = [ir for _, ir in e3nn.Irreps(self.irreps_out)]
        keep_mid = [ir for _, ir in layers.sh_irreps(self.max_l)]
        terms = [a]
        prod = a
        for nu in range(2, self.correlation + 1):
            keep = keep_out if nu == self.correlation else keep_mid + keep_out
            prod = e3nn.tensor_product(prod, a, filter_ir_out=keep)
            terms.append(prod)
        b = e3nn.concatenate([t.filter(keep=keep_out) for t in terms]).regroup()
        n, c = a.shape[0], a.shape[1]
        chunks = []
        for (mul, ir), chunk in zip(b.irreps, b.chunks):
            w = self.param(
                f"w_{ir}", nn.initializers.normal(1.0 / np.sqrt(mul)),
                (self.n_species, c, mul), b.dtype,
            )[species_idx]  # [N, C, mul]
            if chunk is None:
                chunk = jnp.zeros((n, c, mul, ir.dim), b.dtype)
            chunks.append(jnp.einsum("ickd,ick->icd", chunk, w)[:, :, None, :])
        irreps = e3nn.Irreps([(1, ir) for _, ir in b.irreps])
        return e3nn.from_chunks(irreps, chunks, (n, c), b.dtype)


class MACEInteraction(nn.Module):
    """One MACE layer: edge tensor products -> atomic basis -> symmetric contraction."""

    irreps_out: e3nn.Irreps
    num_channels: int
    max_ell: int
    correlation: int
    radial_hidden: tuple[int, ...]
    avg_num_neighbors: float
    n_species: int
    dtype: str

    @nn.compact
    def __call__(self, h, sh, radial, fc, species_idx) -> e3nn.IrrepsArray:
        """
        Args:
            h: IrrepsArray ``[N, irreps_h]`` node features.
            sh: IrrepsArray ``[N, N, (max_ell+1)^2]`` edge spherical harmonics.
            radial: ``[N, N, n_radial]`` radial basis; fc: ``[N, N]`` cutoff (0 off-edge).
        """
        n = h.shape[0]
        h_up = e3nn.flax.Linear(h.irreps, name="linear_up")(h)
        h_j = e3nn.IrrepsArray(h_up.irreps, jnp.broadcast_to(h_up.array[None], (n,) + h_up.shape))
        keep = [ir for _, ir in layers.sh_irreps(self.max_ell)]
        msg = e3nn.tensor_product(h_j, sh, filter_ir_out=keep)  # [N, N, irreps_msg]
        w = layers.MLP(
            tuple(self.radial_hidden) + (msg.irreps.num_irreps,), use_bias=False,
            dtype=self.dtype, name="radial",
        )(radial)
        msg = msg * (w * fc[..., None])
        a = e3nn.IrrepsArray(msg.irreps, jnp.sum(msg.array, axis=1) / self.avg_num_neighbors)
        a = e3nn.flax.Linear(
            hidden_irreps(self.num_channels, self.max_ell), force_irreps_out=True, name="linear_A"
        )(a)
        a = a.mul_to_axis(self.num_channels)  # [N, C, 0e+1o+...]
        b = SymmetricContraction(
            e3nn.Irreps([(1, ir) for _, ir in e3nn.Irreps(self.irreps_out)]),
            self.correlation, self.max_ell, self.n_species, name="product",
        )(a, species_idx)
        b = b.axis_to_mul()  # [N, C x irreps]
        return e3nn.flax.Linear(self.irreps_out, name="linear_out")(b)


class MACEHypers(ZooModel):
    """The hyperparameters every MACE of the zoo takes (:class:`MACE`, and ``mlip_mace``)."""

    cutoff: float = 5.0
    num_layers: int = 2
    num_channels: int = 16
    max_ell: int = 2
    hidden_ell: int = 1
    correlation: int = 3
    num_radial: int = 8
    radial_hidden: tuple[int, ...] = (32,)
    readout_hidden: int = 16
    avg_num_neighbors: float = 4.0

    data_constants: ClassVar[tuple[str, ...]] = ("avg_num_neighbors",)


@contract_tested  # tests/models/test_models.py: masked == extracted, every zoo model
class MACE(MACEHypers):
    """MACE-like model.

    Attributes:
        num_layers: message-passing layers (receptive field = num_layers x cutoff).
        num_channels: channels ``C`` of the hidden features.
        max_ell: largest ``l`` of the edge spherical harmonics and of the atomic basis ``A``
            (MACE's papers use 3; 2 keeps an 8-atom cluster, vmapped over its 255 subsets,
            several times cheaper on CPU).
        hidden_ell: largest ``l`` of the hidden features passed between layers.
        correlation: order of the symmetric contraction (MACE uses 3).
        num_radial: Bessel radial basis functions.
        radial_hidden: hidden widths of the radial MLP.
        readout_hidden: hidden width of the final readout MLP.
        avg_num_neighbors: fixed normalisation of the neighbour sum.
    """

    @property
    def num_interactions(self) -> int:
        return self.num_layers

    @nn.compact
    def atomic_energies(self, positions, species, mask) -> jax.Array:
        """``[N]`` per-atom energies (eV); exactly 0 for masked atoms."""
        _, idx, mask, pairs = self._prepare(positions, species, mask)
        dt = pairs.vec.dtype
        sh = layers.spherical_harmonics(pairs.vec, self.max_ell)
        radial = layers.radial_basis(pairs.r, self.num_radial, self.cutoff)
        onehot = layers.one_hot_species(idx, self.n_species, dt)
        h = e3nn.IrrepsArray(f"{self.n_species}x0e", onehot)
        h = e3nn.flax.Linear(f"{self.num_channels}x0e", name="embedding")(h)
        energy = jnp.zeros(mask.shape, dt)
        for t in range(self.num_layers):
            last = t == self.num_layers - 1
            irreps_out = hidden_irreps(self.num_channels, 0 if last else self.hidden_ell)
            h_new = MACEInteraction(
                irreps_out, self.num_channels, self.max_ell, self.correlation,
                tuple(self.radial_hidden), self.avg_num_neighbors, self.n_species, self.dtype,
                name=f"interaction_{t}",
            )(h, sh, radial, pairs.fc, idx)
            if t > 0:  # species-dependent self-connection (none in the first layer)
                h_new = h_new + e3nn.flax.Linear(
                    irreps_out, num_indexed_weights=self.n_species, name=f"skip_{t}"
                )(idx, h)
            h = h_new
            scalars = h.filter(keep="0e").array
            if last:
                e_t = layers.MLP(
                    (self.readout_hidden, 1), use_bias=self.use_bias, dtype=self.dtype,
                    name=f"readout_{t}",
                )(scalars)
            else:
                e_t = layers.MLP((1,), use_bias=False, dtype=self.dtype, name=f"readout_{t}")(scalars)
            energy = energy + e_t[:, 0]
        return self._finish(mask, energy)
