"""Pure energy/force losses of a model (:class:`jbo.models.Model`, its params the leaves).

The trained energy of a structure is

    E(x) = Σ_i c_{Z_i} + s · model(x)          (eV)

with a composition baseline c_Z (eV/atom, a pure one-body term) and a scale s (eV): both leave
the body-order structure of the model untouched apart from the order-1 shift. Losses are in
units of s per atom, so λ and the loss weights are dimensionless.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jbo.models.model import Model
from jbo.potential import cast_tree

__all__ = ["structure_energy", "batch_energy_forces", "energy_force_loss", "cast_tree"]


def structure_energy(model: Model, positions, species, mask, dtype=None) -> jnp.ndarray:
    """Energy (eV, float64) of one structure ``positions[N,3]`` where ``mask[N]`` is True; the
    module computes in ``dtype`` (default: the model's training dtype)."""
    return model.potential_in(dtype or model.dtype).energy(positions, species, mask)


def batch_energy_forces(model: Model, positions, species, mask, forces: bool = False):
    """Energies ``[B]`` (eV) and, if ``forces``, forces ``[B,N,3]`` (eV/Å) of a padded batch."""
    def one(pos, sp, m):
        return structure_energy(model, pos, sp, m)
    if not forces:
        return jax.vmap(one)(positions, species, mask), None
    e, g = jax.vmap(jax.value_and_grad(one))(positions, species, mask)
    return e, -jnp.where(mask[..., None], g, 0.0)


def energy_force_loss(model: Model, batch, energy_weight: float = 1.0, force_weight: float = 0.0
                      ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Weighted MSE of per-atom energies (and forces) of ``model`` (its params) on a padded
    :class:`jbo.data.batch.Batch`, in units of the scale s.

    loss = w_E Σ_b w_b ((E_b − Ê_b)/(n_b s))² / Σ_b w_b
         + w_F Σ_{b,i} w_b |F_bi − F̂_bi|² / (3 s² Σ_b w_b n_b [b has forces])

    i.e. the MACE / metatrain convention: the energy term is the mean squared per-atom energy
    error over structures, the force term the mean squared force component over atoms (every
    row with forces is a label, subclusters included); ``w_E``, ``w_F`` are their weights.
    Returns (loss, sums) where ``sums`` are additive over batches: ``weight``, ``abs_e``
    (Σ w |ΔE|/n, eV/atom), ``sq_e`` ((eV/atom)²), ``abs_f`` (eV/Å), ``sq_f``, ``n_f`` (force
    components).
    """
    use_f = force_weight > 0
    mask = batch.mask
    e, f = batch_energy_forces(model, batch.positions, batch.species, mask, use_f)
    w = batch.weight
    n = jnp.maximum(jnp.sum(mask, -1), 1)
    de = (e - batch.energy) / n
    wsum = jnp.sum(w)
    loss = energy_weight * jnp.sum(w * de**2) / jnp.maximum(wsum, 1e-12) / model.scale**2
    sums = {"weight": wsum, "abs_e": jnp.sum(w * jnp.abs(de)), "sq_e": jnp.sum(w * de**2)}
    if use_f:
        wf = w * batch.has_forces
        df = jnp.where(mask[..., None], f - batch.forces, 0.0)
        sq = jnp.sum(df**2, (-1, -2))
        n_f = 3.0 * jnp.sum(wf * n)
        loss = loss + force_weight * jnp.sum(wf * sq) / jnp.maximum(n_f, 1e-12) / model.scale**2
        sums.update(sq_f=jnp.sum(wf * sq), n_f=n_f,
                    abs_f=jnp.sum(wf * jnp.sum(jnp.abs(df), (-1, -2))))
    return loss, sums
