"""NequIP through jax-md's implementation (``jax_md._nn.nequip.NequIPEnergyModel``).

jax-md's NequIP takes a jraph graph. We feed it a *dense, static* graph whose edges are all
ordered pairs ``(i, j), i != j`` of the cluster, and make it respect the mask contract with
three facts about its code:

- edge displacements come from :func:`layers.pair_geometry`: on a non-edge (masked atom or
  beyond the cutoff) the displacement is a dummy of length ``2 * cutoff``, where jax-md's
  Bessel embedding (multiplicative smooth cutoff) is exactly 0; its radial MLP has no
  biases and ``swish(0) = 0``, so the tensor-product weights, hence the message, are exactly
  0 — the masked atom sends and receives nothing;
- it normalises the neighbour sum by a fixed constant (``n_neighbors``), not by a count;
- it sums atomic outputs per graph with ``graph.n_node``: giving one "graph" per atom
  (``n_node = [1] * N``) returns the per-atom energies, which we then mask.

Masked atoms still run through the per-node layers (their outputs are discarded), so the
energy equals that of the extracted subcluster to rounding. jax-md's ``shift``/``scale``
(which ``default_config()`` leaves unset) are fixed to 0/1: the composition baseline is ours.

jax-md's network gives an isolated atom a non-zero energy (node embedding -> self-connection
-> gate -> linear readout all act without neighbours). With ``use_bias=False`` (default) we
subtract that per-species constant, read off ``S`` extra edgeless "ghost" nodes (one per
species) evaluated in the same graph, so an isolated atom predicts exactly 0; ``use_bias=True``
keeps it (it then acts as a learned per-species shift).
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jbo.models import layers
from jbo.models.base import ZooModel
from jbo.potential import contract_tested


def _energy_model_class():
    """jax-md's NequIP, imported on first use: importing jax_md costs seconds (its rigid-body
    module runs JAX ops at import), which every process of another model would pay."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from jax_md._nn.nequip import NequIPEnergyModel
    return NequIPEnergyModel


def _dense_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Static senders/receivers of all ordered pairs ``i != j`` (receiver = centre ``i``)."""
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    return j.astype(np.int32), i.astype(np.int32)


@contract_tested  # tests/models/test_models.py: masked == extracted, every zoo model
class NequIP(ZooModel):
    """NequIP (jax-md implementation) on a dense masked graph.

    Attributes:
        num_layers: convolutions (jax-md ``graph_net_steps``); receptive field = num_layers x cutoff.
        hidden_irreps: hidden features, e.g. ``"16x0e + 8x1o"``.
        sh_irreps: edge spherical harmonics, e.g. ``"1x0e + 1x1o + 1x2e"``.
        num_basis: Bessel basis functions.
        radial_hidden, radial_layers: radial MLP width and depth.
        avg_num_neighbors: jax-md's ``n_neighbors`` normalisation constant.
        use_bias: keep the network's isolated-atom output (False: an isolated atom gives 0).
    """

    cutoff: float = 5.0
    num_layers: int = 2
    hidden_irreps: str = "16x0e + 8x1o + 4x2e"
    sh_irreps: str = "1x0e + 1x1o + 1x2e"
    num_basis: int = 8
    radial_hidden: int = 32
    radial_layers: int = 2
    avg_num_neighbors: float = 4.0

    data_constants: ClassVar[tuple[str, ...]] = ("avg_num_neighbors",)

    @property
    def num_interactions(self) -> int:
        return self.num_layers

    def setup(self):
        self.net = _energy_model_class()(
            graph_net_steps=self.num_layers,
            use_sc=True,
            nonlinearities={"e": "raw_swish", "o": "tanh"},
            n_elements=self.n_species,
            hidden_irreps=self.hidden_irreps,
            sh_irreps=self.sh_irreps,
            num_basis=self.num_basis,
            r_max=self.cutoff,
            radial_net_nonlinearity="raw_swish",
            radial_net_n_hidden=self.radial_hidden,
            radial_net_n_layers=self.radial_layers,
            shift=0.0,
            scale=1.0,
            n_neighbors=self.avg_num_neighbors,
        )

    def atomic_energies(self, positions, species, mask) -> jax.Array:
        """``[N]`` per-atom energies (eV); exactly 0 for masked atoms."""
        _, idx, mask, pairs = self._prepare(positions, species, mask)
        dt = pairs.vec.dtype
        n, s = mask.shape[0], self.n_species
        senders, receivers = _dense_edges(n)
        # nodes: the N atoms, then one edgeless "ghost" atom per species whose output is the
        # network's isolated-atom energy (same evaluation, so no second compiled graph)
        nodes = jnp.concatenate(
            [layers.one_hot_species(idx, s, dt), jnp.eye(s, dtype=dt)], axis=0
        )
        graph = jraph.GraphsTuple(
            nodes=nodes,
            # edge (sender j -> receiver i) carries r_j - r_i: jax-md uses its norm and
            # spherical harmonics; its Bessel embedding vanishes at the dummy length 2*cutoff
            edges=pairs.vec[receivers, senders],
            senders=jnp.asarray(senders),
            receivers=jnp.asarray(receivers),
            n_node=jnp.ones((n + s,), jnp.int32),  # one "graph" per node: per-atom outputs
            n_edge=jnp.asarray([senders.shape[0]] + [0] * (n + s - 1), jnp.int32),
            globals=None,
        )
        with warnings.catch_warnings():  # jax-md calls deprecated e3nn aliases while tracing
            warnings.simplefilter("ignore", DeprecationWarning)
            out = self.net(graph)[:, 0].astype(dt)  # [N + S]
        e = out[:n]
        if not self.use_bias:
            e = e - out[n:][idx]
        return self._finish(mask, e)
