"""The contract every zoo model obeys.

``module.apply(params, positions[N,3], species[N], mask[N]) -> energy`` (scalar, eV) is the
energy of the atoms where ``mask`` is True as if the others did not exist, and
``module.apply(params, ..., method="atomic_energies") -> [N]`` gives per-atom energies
(exactly 0 for masked atoms) whose sum is the energy.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jbo import geometry
from jbo.models import layers


class ZooModel(nn.Module):
    """Base class: common hyperparameters and ``__call__ = sum(atomic_energies)``.

    Attributes:
        cutoff: radial cutoff of every edge (Å).
        species: atomic numbers the model handles; position in the tuple = species index.
        use_bias: when False, an isolated atom predicts exactly 0 (its energy is then the
            composition baseline of :class:`jbo.models.Model`, the one place it lives).
        dtype: ``"float64"`` or ``"float32"``, for parameters and compute.
        is_local: class constant; True when interactions travel only along cutoff edges
            between present atoms (so ε(S) = 0 for S disconnected in the cutoff graph).
        num_interactions: class or instance value; message-passing depth (1 for descriptors).
        rotation_invariant: class constant; True when the energy is invariant under rotations
            by construction (False for PET, which learns it from rotational augmentation:
            ``TrainConfig.rotate``; its error is ``jbo.analysis.rotational_error``).
        data_constants: class constant; the hyperparameters that training takes from the
            training data when they are not given (:mod:`jbo.train.constants`), as the
            original architectures do (MACE: ``avg_num_neighbors``).
    """

    cutoff: float = 5.0
    species: tuple[int, ...] = (1,)
    use_bias: bool = False
    dtype: str = "float64"

    is_local: ClassVar[bool] = True
    rotation_invariant: ClassVar[bool] = True
    data_constants: ClassVar[tuple[str, ...]] = ()
    #: allowed values of the string hyperparameters (checked by ``models.create``)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def num_interactions(self) -> int:
        """Number of message-passing steps; receptive field = cutoff x this."""
        return 1

    @property
    def receptive_field(self) -> float:
        """Distance (Å) beyond which two fragments cannot feel each other."""
        return float(self.cutoff) * self.num_interactions

    def _prepare(self, positions, species, mask):
        """Cast inputs and compute the quantities every model needs.

        Returns:
            ``(positions[N,3] in dtype, species_idx[N], mask[N] bool, Pairs)``.
        """
        # shapes and dtypes always (trace time); values only on concrete input (never in jit)
        geometry.validate(positions, species, mask, known_species=self.species)
        dt = jnp.dtype(self.dtype)
        positions = jnp.asarray(positions, dt)
        idx = layers.species_index(species, self.species)
        pairs = layers.pair_geometry(positions, mask, self.cutoff)
        return positions, idx, mask, pairs

    @staticmethod
    def _finish(mask: jax.Array, learned: jax.Array) -> jax.Array:
        """Per-atom energies, exactly 0 on masked atoms."""
        return jnp.where(mask, learned, jnp.zeros((), learned.dtype))

    def atomic_energies(self, positions, species, mask) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, positions, species, mask) -> jax.Array:
        """Total energy (eV), a scalar."""
        return jnp.sum(self.atomic_energies(positions, species, mask))
