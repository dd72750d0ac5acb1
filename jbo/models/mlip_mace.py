"""MACE through InstaDeep's ``mlip`` (``mlip.models.mace.Mace``, Flax/JAX, Apache-2.0).

``mlip``'s MACE takes an ``mlip.graph.Graph``: ``nodes.atomic_numbers[n_nodes]``, edge
``senders``/``receivers[n_edges]`` and the edge vectors ``graph.edge_vectors()`` =
``positions[receivers] - positions[senders]`` (or ``edges.displ_fun``), ``n_node``/``n_edge``
per graph; it returns the per-node energies in ``graph.nodes.features["energy"]``. We feed it
a *dense, static* graph: every ordered pair ``(i, j), i != j`` of the cluster is an edge
(sorted by sender: mlip's default ``EdgeOrdering.SENDER``, needed by e3j's fused GPU kernels,
and symmetric as they assume), and it honours the mask contract exactly because of four facts
about its code (``mlip==0.2.5``):

- edge vectors come from :func:`layers.pair_geometry` through ``displ_fun``: a non-edge
  (absent atom, or beyond the cutoff) carries a dummy of length ``2 * cutoff``, where mlip's
  Bessel x polynomial-envelope embedding is exactly 0 (``envelope * (r < cutoff)``), so its
  bias-free radial MLP gives 0; on top, mlip's per-edge ``edge_scale`` feature (multiplied
  into the edge scalars of every convolution) is the 0/1 edge indicator, so a non-edge's
  message is exactly 0 whatever the weights — absent atoms send and receive nothing;
- the neighbour sum is divided by a fixed constant (``DatasetInfo.avg_num_neighbors``,
  folded into e3j's Clebsch-Gordan coefficients), not by a count;
- one graph (``n_node = [N + S]``) means mlip's padding mask is all True, and the per-node
  energies are read before any per-graph sum: absent atoms' outputs are discarded by us;
- ``scaling_mean``/``scaling_stdev`` stay 0/1 and ``add_atomic_energies=False``: the
  composition baseline is ours.

Absent atoms still run through the per-node layers (their outputs are discarded), so the
energy equals that of the extracted subcluster to rounding. mlip's network gives an isolated
atom a non-zero energy (species embedding -> linear -> residual -> readout). With
``use_bias=False`` (default) we subtract it, read off ``S`` edgeless "ghost" nodes (one per
species) in the same graph, so an isolated atom predicts exactly 0;
``use_bias=True`` keeps it (a learned per-species shift), as :mod:`jbo.models.nequip` does.

``mlip`` is an optional dependency (``pip install 'jbo[mlip]'``), imported when the model is
first built.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jbo.models.mace import MACEHypers
from jbo.potential import contract_tested


def _mlip():
    """mlip's MACE, config, dataset info and graph types (lazy: mlip is optional)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlip.data.dataset_info import DatasetInfo
            from mlip.graph.edge_ordering import EdgeOrdering
            from mlip.graph.graph import Graph, GraphEdges, GraphGlobals, GraphNodes
            from mlip.models.mace.config import MaceConfig
            from mlip.models.mace.network import Mace
    except ImportError as e:  # pragma: no cover - exercised only without mlip
        raise ImportError("the mlip_mace model needs InstaDeep's mlip: "
                          "pip install 'jbo[mlip]' (mlip==0.2.5)") from e
    return Mace, MaceConfig, DatasetInfo, Graph, GraphNodes, GraphEdges, GraphGlobals, EdgeOrdering


def _dense_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Static senders/receivers of all ordered pairs ``i != j`` (sorted by sender), then one
    inert self-loop on node ``n`` (the first ghost): mlip cannot take a graph without edges."""
    s, r = np.nonzero(~np.eye(n, dtype=bool))
    return np.append(s, n).astype(np.int32), np.append(r, n).astype(np.int32)


def _given_vectors(vectors, senders_pos, receivers_pos, cell):
    """mlip ``displ_fun``: the edge vectors we computed (positions are not used)."""
    return vectors


@contract_tested  # tests/models/test_models.py: masked == extracted, every zoo model
class MlipMACE(MACEHypers):
    """MACE (mlip implementation) on a dense masked graph; hypers named as :class:`jbo.models.MACE`.

    Attributes:
        num_layers: MACE layers (mlip ``num_layers``); receptive field = num_layers x cutoff.
        num_channels: channels (mlip ``num_channels``).
        max_ell: largest ``l`` of the edge harmonics and messages (mlip ``l_max``).
        hidden_ell: largest ``l`` of node features between layers (mlip ``node_symmetry``).
        correlation: order of the symmetric contraction.
        num_radial: Bessel basis functions (mlip ``num_rbf``).
        radial_hidden: hidden widths of the radial MLP (mlip ``radial_mlp_hidden``).
        readout_hidden: scalars in the last layer's readout MLP (mlip ``readout_irreps[0]``).
        avg_num_neighbors: normalisation of the neighbour sum (mlip ``DatasetInfo``).
        use_bias: keep the network's isolated-atom output (False: an isolated atom gives 0).
    """


    def __post_init__(self):
        if self.hidden_ell > self.max_ell:
            raise ValueError(f"mlip_mace: hidden_ell={self.hidden_ell} must be <= "
                             f"max_ell={self.max_ell} (mlip's node_symmetry <= l_max)")
        if not 1 <= self.correlation <= 4:
            raise ValueError(f"mlip_mace: correlation={self.correlation} must be 1..4 (mlip)")
        super().__post_init__()

    @property
    def num_interactions(self) -> int:
        return self.num_layers

    def setup(self):
        Mace, MaceConfig, DatasetInfo, *_ = _mlip()
        config = MaceConfig(
            num_layers=self.num_layers, num_channels=self.num_channels, l_max=self.max_ell,
            node_symmetry=self.hidden_ell, correlation=self.correlation,
            readout_irreps=(f"{self.readout_hidden}x0e", "0e"), num_rbf=self.num_radial,
            radial_mlp_hidden=list(self.radial_hidden), add_atomic_energies=False,
        )
        info = DatasetInfo(
            atomic_energies_map={int(z): 0.0 for z in self.species},
            graph_cutoff_angstrom=float(self.cutoff),
            avg_num_neighbors=float(self.avg_num_neighbors),
        )
        self.net = Mace(config=config, dataset_info=info)

    def atomic_energies(self, positions, species, mask) -> jax.Array:
        """``[N]`` per-atom energies (eV); exactly 0 for masked atoms."""
        *_, Graph, GraphNodes, GraphEdges, GraphGlobals, EdgeOrdering = _mlip()
        _, idx, mask, pairs = self._prepare(positions, species, mask)
        dt = pairs.vec.dtype
        n, s = mask.shape[0], self.n_species
        senders, receivers = _dense_edges(n)
        table = jnp.asarray(self.species, jnp.int32)
        # nodes: the N atoms (absent ones get a valid species; their outputs are dropped),
        # then one edgeless "ghost" per species: the network's isolated-atom energy
        numbers = jnp.concatenate([table[idx], table])
        pair = (senders[:-1], receivers[:-1])
        dummy = jnp.asarray([[2.0 * self.cutoff, 0.0, 0.0]], dt)  # beyond the cutoff
        vectors = jnp.concatenate([pairs.vec[pair], dummy])
        edge_scale = jnp.append(pairs.edge[pair].astype(dt), jnp.zeros((1,), dt))
        graph = Graph(
            nodes=GraphNodes(positions=jnp.zeros((n + s, 3), dt), atomic_numbers=numbers),
            # mlip's edge vector is r_receiver - r_sender = pairs.vec[sender, receiver]
            edges=GraphEdges(
                displ_fun=jax.tree_util.Partial(_given_vectors, vectors),
                features={"edge_scale": edge_scale},
            ),
            globals=GraphGlobals(cell=jnp.zeros((1, 3, 3), dt), weight=jnp.ones((1,), dt)),
            n_node=jnp.asarray([n + s], jnp.int32),
            n_edge=jnp.asarray([senders.shape[0]], jnp.int32),
            senders=jnp.asarray(senders),
            receivers=jnp.asarray(receivers),
            ordering=EdgeOrdering.SENDER,
        )
        with warnings.catch_warnings():  # e3j's scatter mixes int32/int64 indices
            warnings.simplefilter("ignore", FutureWarning)
            out = self.net(graph).nodes.features["energy"].astype(dt)  # [N + S]
        e = out[:n]
        if not self.use_bias:
            e = e - out[n:][idx]
        return self._finish(mask, e)
