"""Shared building blocks of the model zoo, written once.

Everything works on *dense* pair arrays: a cluster of ``N`` atoms gives ``[N, N, ...]`` pair
arrays, with pair ``(i, j)`` meaning "neighbour ``j`` seen from centre ``i``". Clusters are
small, so dense arrays keep every shape static (jit- and vmap-friendly) and let a boolean
``mask[N]`` remove atoms without any data-dependent shape.

The mask contract: a masked atom is *absent*. A pair is an edge only when both atoms are
present, ``i != j`` and ``r_ij < cutoff``; every other pair has its displacement replaced by a
dummy vector *before* any norm (the double-``where`` trick), so values and gradients stay
finite, and its smooth-cutoff weight is exactly zero.

Units: lengths in Å, energies in eV.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------- species


def species_index(species: jax.Array, table: Sequence[int]) -> jax.Array:
    """Map atomic numbers to indices into ``table`` (branch-free).

    Args:
        species: ``[N]`` int atomic numbers.
        table: the model's species tuple, e.g. ``(1,)`` or ``(1, 6, 8)``.

    Returns:
        ``[N]`` int32 indices; an atomic number absent from ``table`` (e.g. padding, Z=0)
        maps to 0. Use :func:`check_species` on concrete inputs to reject unknown species.
    """
    table_arr = jnp.asarray(table, dtype=jnp.int32)
    hit = jnp.asarray(species, jnp.int32)[:, None] == table_arr[None, :]
    return jnp.argmax(hit, axis=1).astype(jnp.int32)


def check_species(species, mask, table: Sequence[int]) -> None:
    """Raise ``ValueError`` if a present atom has an atomic number not in ``table``.

    Only meaningful on concrete (non-traced) arrays; silently does nothing on tracers.
    """
    if isinstance(species, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
        return
    z = np.asarray(species)
    present = np.ones(z.shape, bool) if mask is None else np.asarray(mask, bool)
    bad = sorted(set(int(v) for v in z[present].ravel()) - set(int(t) for t in table))
    if bad:
        raise ValueError(
            f"atomic numbers {bad} are not among the model's species {tuple(table)}; "
            "create the model with species=(...) listing every element it must handle"
        )


def one_hot_species(index: jax.Array, n_species: int, dtype) -> jax.Array:
    """``[N]`` species indices -> ``[N, S]`` one-hot in ``dtype``."""
    return jax.nn.one_hot(index, n_species, dtype=dtype)


# ----------------------------------------------------------------------------- geometry


class Pairs(NamedTuple):
    """Dense pair geometry of a (masked) cluster.

    Attributes:
        vec: ``[N, N, 3]`` displacement ``r_j - r_i`` (Å) on edges, a dummy elsewhere.
        r: ``[N, N]`` distance (Å) on edges, ``2 * cutoff`` elsewhere.
        edge: ``[N, N]`` bool, ``mask_i & mask_j & (i != j) & (r_ij < cutoff)``.
        fc: ``[N, N]`` smooth cutoff weight on edges, exactly 0 elsewhere.
    """

    vec: jax.Array
    r: jax.Array
    edge: jax.Array
    fc: jax.Array


def smooth_cutoff(r: jax.Array, cutoff: float) -> jax.Array:
    """Polynomial envelope ``u_6(r / cutoff)`` (DimeNet/NequIP), e3nn's ``poly_envelope(5, 2)``.

    Equals 1 at r = 0, is exactly 0 for r >= cutoff, with zero first and second derivatives
    at the cutoff, so energies and forces are continuous when a neighbour crosses it.
    """
    return e3nn.poly_envelope(5, 2)(r / cutoff)


def pair_geometry(positions: jax.Array, mask: jax.Array, cutoff: float) -> Pairs:
    """Safe dense pair geometry (double-``where``): finite values and gradients everywhere.

    Args:
        positions: ``[N, 3]`` Cartesian positions (Å).
        mask: ``[N]`` bool, present atoms.
        cutoff: edge cutoff (Å).
    """
    n = positions.shape[0]
    dtype = positions.dtype
    raw = positions[None, :, :] - positions[:, None, :]  # [N, N, 3], r_j - r_i
    pair = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
    edge = pair & (jnp.sum(raw * raw, axis=-1) < cutoff * cutoff)
    # Dummy: a vector of length 2*cutoff along x, beyond the cutoff, never zero.
    dummy = jnp.asarray([2.0 * cutoff, 0.0, 0.0], dtype)
    vec = jnp.where(edge[..., None], raw, dummy)
    r = jnp.sqrt(jnp.sum(vec * vec, axis=-1))
    fc = jnp.where(edge, smooth_cutoff(r, cutoff), jnp.zeros((), dtype))
    return Pairs(vec=vec, r=r, edge=edge, fc=fc)


RADIAL_BASES = ("bessel", "gaussian")


def radial_basis(r: jax.Array, n: int, cutoff: float, kind: str = "bessel") -> jax.Array:
    """Radial basis functions of the pair distance, k = 1..n.

    ``bessel``: ``sqrt(2/c) sin(k pi r / c) / r`` (e3nn's ``bessel``; grows like 1/r at short
    range). ``gaussian``: ``exp(-((r - mu_k) / sigma)^2)`` on ``n`` centres ``mu_k`` evenly
    spaced over ``[0, c]``, ``sigma`` their spacing (e3nn's ``soft_one_hot_linspace``; bounded,
    equally resolved at every distance).

    Args:
        r: ``[...]`` distances (Å), strictly positive (see :func:`pair_geometry`).

    Returns:
        ``[..., n]`` basis values, not yet multiplied by the smooth cutoff.
    """
    if kind == "bessel":
        return e3nn.bessel(r, n, cutoff)
    if kind == "gaussian":
        return e3nn.soft_one_hot_linspace(r, start=0.0, end=cutoff, number=n,
                                          basis="gaussian", cutoff=False)
    raise ValueError(f"unknown radial basis {kind!r}; choose one of {RADIAL_BASES}")


def sh_irreps(max_l: int) -> e3nn.Irreps:
    """Irreps of the real spherical harmonics up to ``max_l``: ``0e + 1o + 2e + ...``."""
    return e3nn.Irreps.spherical_harmonics(max_l)


def spherical_harmonics(vec: jax.Array, max_l: int) -> e3nn.IrrepsArray:
    """Real spherical harmonics of the unit vectors of ``vec`` (component normalisation).

    e3nn's own function, jitted for one vector (:func:`_sh_of_one_vector`) and vmapped over
    the others, so it is traced once per process and input type rather than once per shape:
    e3nn derives its recursion with sympy at every trace (~1 s at ``max_l`` 6).

    Args:
        vec: ``[..., 3]`` non-zero vectors.

    Returns:
        IrrepsArray ``[..., (max_l+1)^2]`` with irreps ``0e + 1o + ... `` and ``Y_0 = 1``.
    """
    flat = jax.vmap(_sh_of_one_vector(max_l))(vec.reshape(-1, 3))
    return e3nn.IrrepsArray(sh_irreps(max_l), flat.reshape(*vec.shape[:-1], flat.shape[-1]))


@functools.lru_cache(maxsize=None)
def _sh_of_one_vector(max_l: int) -> Callable:
    """``[3] -> [(max_l+1)^2]``: e3nn's spherical harmonics, jitted (its trace is cached per
    input type, e.g. dtype or a ``shard_map``'s varying axes; batching, differentiation and
    custom JVP are e3nn's own)."""
    return jax.jit(lambda v: e3nn.spherical_harmonics(sh_irreps(max_l), v, normalize=True,
                                                      normalization="component").array)


def neighbour_density(
    pairs: Pairs,
    species_idx: jax.Array,
    n_species: int,
    n_radial: int,
    max_l: int,
    cutoff: float,
    scale: float = 1.0,
    radial: str = "bessel",
) -> e3nn.IrrepsArray:
    """Species-resolved atomic neighbour density projected on radial x angular functions.

    ``A[i, (a, n), lm] = scale * sum_j fc(r_ij) R_n(r_ij) Y_lm(r_ij_hat) [species_j == a]``,
    summed over edges only (the centre itself does not contribute), so an isolated atom has
    ``A = 0`` and each ``A[i]`` is a sum of pair terms: the one-particle basis of SOAP and ACE.

    Returns:
        IrrepsArray of shape ``[N, S * n_radial, (max_l+1)^2]``, irreps ``0e + 1o + ...``;
        the channel index is ``a * n_radial + n``.
    """
    dtype = pairs.vec.dtype
    radial = radial_basis(pairs.r, n_radial, cutoff, radial) * pairs.fc[..., None]  # [N, N, n]
    ylm = spherical_harmonics(pairs.vec, max_l).array  # [N, N, D]
    onehot = one_hot_species(species_idx, n_species, dtype)  # [N(j), S]
    dens = jnp.einsum("ijn,ja,ijd->iand", radial, onehot, ylm) * scale
    n = dens.shape[0]
    return e3nn.IrrepsArray(sh_irreps(max_l), dens.reshape(n, n_species * n_radial, -1))


# ----------------------------------------------------------------------------- MLPs


class MLP(nn.Module):
    """Plain MLP ``x -> act(W1 x + b1) -> ... -> W_out h + b_out`` (scalars only).

    With ``use_bias=False`` and ``act(0) = 0`` it maps 0 to exactly 0, which is what makes an
    isolated atom predict exactly its baseline.

    Attributes:
        features: widths of the hidden layers followed by the output width.
    """

    features: tuple[int, ...]
    use_bias: bool = False
    act: Callable[[jax.Array], jax.Array] = jax.nn.silu
    dtype: str = "float64"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = jnp.dtype(self.dtype)
        for k, width in enumerate(self.features):
            x = nn.Dense(
                width,
                use_bias=self.use_bias,
                dtype=dt,
                param_dtype=dt,
                kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
                name=f"dense_{k}",
            )(x)
            if k < len(self.features) - 1:
                x = self.act(x)
        return x


class SpeciesMLP(nn.Module):
    """One :class:`MLP` per centre species, selected branch-free by a one-hot mask.

    ``y[i] = sum_s onehot[i, s] * MLP_s(x[i])``: every MLP runs on every atom (S is small),
    and multiplying by an exact 0/1 selects without data-dependent control flow.
    """

    features: tuple[int, ...]
    n_species: int
    use_bias: bool = False
    act: Callable[[jax.Array], jax.Array] = jax.nn.silu
    dtype: str = "float64"

    @nn.compact
    def __call__(self, x: jax.Array, species_idx: jax.Array) -> jax.Array:
        onehot = one_hot_species(species_idx, self.n_species, x.dtype)  # [N, S]
        outs = [
            MLP(self.features, self.use_bias, self.act, self.dtype, name=f"species_{s}")(x)
            for s in range(self.n_species)
        ]
        return sum(onehot[:, s, None] * outs[s] for s in range(self.n_species))
