"""PET-like model: per-atom transformers over neighbour tokens, with message passing.

Following the Point Edge Transformer (Pozdnyakov & Ceriotti, NeurIPS 2023), atom ``i`` holds
one *central token* and one *edge token* per neighbour ``j`` (dense: a token for every ``j``,
present only on edges). Each message-passing layer runs transformer blocks over the tokens
of each atom; the next layer's edge token ``ij`` is built from the geometry and the previous
outputs of both ``ij`` and the reverse edge ``ji`` (the message from ``j``'s environment).

No rotational constraint: raw Cartesian displacements are fed to the network, so the model
is translation- and permutation-invariant but only approximately rotation-invariant (train
with random rotations). Smoothness and the mask contract come from *cutoff-weighted
attention*: ``alpha_iu = w_u exp(s_iu) / sum_u' w_u' exp(s_iu')`` with ``w = fc(r_ij)`` for
edge tokens, 0 for absent ones and 1 for the central token, so absent atoms carry no weight
in any normalisation and a neighbour enters continuously at the cutoff.

Energy ``E_i = E0[s_i] + sum_layers sum_j fc(r_ij) MLP(edge_token_ij)``: an atom without
neighbours predicts exactly its baseline whatever ``use_bias``.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jbo.models import layers
from jbo.models.base import ZooModel
from jbo.potential import contract_tested


def cutoff_weighted_softmax(scores: jax.Array, weights: jax.Array, valid: jax.Array) -> jax.Array:
    """``w_u exp(s_u) / sum_u' w_u' exp(s_u')`` over the last axis; absent keys get 0.

    Args:
        scores: ``[..., T]`` attention logits; weights: ``[..., T]`` >= 0; valid: ``[..., T]``
            bool (at least one valid key with weight > 0 per row, the central token).
    """
    s = jnp.where(valid, scores, -jnp.inf)
    s_max = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    e = jnp.where(valid, weights * jnp.exp(jnp.where(valid, scores - s_max, 0.0)), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block acting on each atom's tokens ``[N, T, d]``."""

    d_model: int
    num_heads: int
    ffn_dim: int
    use_bias: bool
    dtype: str

    @nn.compact
    def __call__(self, tokens, key_weight, valid) -> jax.Array:
        dt = jnp.dtype(self.dtype)
        dense = lambda f, name: nn.Dense(f, use_bias=self.use_bias, dtype=dt, param_dtype=dt, name=name)
        norm = lambda name: nn.LayerNorm(dtype=dt, param_dtype=dt, name=name)
        n, t, d = tokens.shape
        dh = self.d_model // self.num_heads
        x = norm("ln_attn")(tokens)
        q = dense(self.d_model, "q")(x).reshape(n, t, self.num_heads, dh)
        k = dense(self.d_model, "k")(x).reshape(n, t, self.num_heads, dh)
        v = dense(self.d_model, "v")(x).reshape(n, t, self.num_heads, dh)
        s = jnp.einsum("ithd,iuhd->ihtu", q, k) / float(np.sqrt(dh))
        alpha = cutoff_weighted_softmax(s, key_weight[:, None, None, :], valid[:, None, None, :])
        att = jnp.einsum("ihtu,iuhd->ithd", alpha, v).reshape(n, t, self.d_model)
        tokens = tokens + dense(self.d_model, "o")(att)
        y = norm("ln_ffn")(tokens)
        y = dense(self.d_model, "ffn_out")(jax.nn.silu(dense(self.ffn_dim, "ffn_in")(y)))
        tokens = tokens + y
        return jnp.where(valid[..., None], tokens, jnp.zeros((), tokens.dtype))


@contract_tested  # tests/models/test_models.py: masked == extracted, every zoo model
class PET(ZooModel):
    """PET-like transformer.

    Attributes:
        num_layers: message-passing layers (receptive field = num_layers x cutoff).
        num_blocks: transformer blocks per message-passing layer.
        d_model, num_heads, ffn_dim: transformer sizes.
        num_radial: Bessel radial basis functions in the geometric token embedding.
        readout_hidden: hidden width of the per-edge readout MLP.
        use_bias: biases in the dense layers (an isolated atom still predicts its baseline).
    """

    cutoff: float = 5.0
    num_layers: int = 2
    num_blocks: int = 1
    d_model: int = 32
    num_heads: int = 4
    ffn_dim: int = 64
    num_radial: int = 8
    readout_hidden: int = 32

    rotation_invariant: ClassVar[bool] = False  # raw Cartesian displacements (see module doc)

    @property
    def num_interactions(self) -> int:
        return self.num_layers

    @nn.compact
    def atomic_energies(self, positions, species, mask) -> jax.Array:
        """``[N]`` per-atom energies (eV); exactly 0 for masked atoms."""
        if self.d_model % self.num_heads:
            raise ValueError("d_model must be a multiple of num_heads")
        _, idx, mask, pairs = self._prepare(positions, species, mask)
        dt = pairs.vec.dtype
        n = mask.shape[0]
        zero = jnp.zeros((), dt)
        dense = lambda f, name: nn.Dense(f, use_bias=self.use_bias, dtype=dt, param_dtype=dt, name=name)

        onehot = layers.one_hot_species(idx, self.n_species, dt)
        geom = jnp.concatenate(
            [
                pairs.vec / self.cutoff,
                layers.radial_basis(pairs.r, self.num_radial, self.cutoff) * float(np.sqrt(self.cutoff / 2)),
                jnp.broadcast_to(onehot[:, None, :], (n, n, self.n_species)),  # centre species
                jnp.broadcast_to(onehot[None, :, :], (n, n, self.n_species)),  # neighbour species
            ],
            axis=-1,
        )  # [N, N, F]
        valid = jnp.concatenate([jnp.ones((n, 1), bool), pairs.edge], axis=1)  # [N, 1+N]
        key_weight = jnp.concatenate([jnp.ones((n, 1), dt), pairs.fc], axis=1)
        central = nn.Embed(self.n_species, self.d_model, dtype=dt, param_dtype=dt, name="central")(idx)

        energy = jnp.zeros((n,), dt)
        edges = None
        for t in range(self.num_layers):
            if t == 0:
                inp = geom
            else:  # message from the reverse edge ji, computed in j's environment
                inp = jnp.concatenate([geom, edges, jnp.swapaxes(edges, 0, 1)], axis=-1)
            edges = dense(self.d_model, f"embed_{t}")(inp)
            tokens = jnp.concatenate([central[:, None, :], edges], axis=1)
            tokens = jnp.where(valid[..., None], tokens, zero)
            for b in range(self.num_blocks):
                tokens = TransformerBlock(
                    self.d_model, self.num_heads, self.ffn_dim, self.use_bias, self.dtype,
                    name=f"block_{t}_{b}",
                )(tokens, key_weight, valid)
            central, edges = tokens[:, 0], tokens[:, 1:]
            e_edge = layers.MLP(
                (self.readout_hidden, 1), use_bias=self.use_bias, dtype=self.dtype,
                name=f"readout_{t}",
            )(edges)[..., 0]  # [N, N]
            energy = energy + jnp.sum(pairs.fc * e_edge, axis=1)
        return self._finish(mask, energy)
