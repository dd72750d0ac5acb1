"""Uniformly random rotations (Haar measure on SO(3)), traceable, for augmentation and checks.

A unit quaternion drawn as a normalised 4-d Gaussian is uniform on S³, and S³ -> SO(3) is the
double cover that carries that uniform measure to the Haar measure; the matrix of a unit
quaternion is orthogonal with det +1 by construction (no sign fixes, no QR). Everything is a
pure ``jax.numpy`` function of a PRNG key: it runs inside ``jit`` on the device.

    R = random_rotations(key, (B,))               # [B, 3, 3]
    pos, frc = rotate(R, positions, forces)       # x' = R x, F' = R F per structure
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["random_rotations", "quaternion_matrix", "rotate"]


def quaternion_matrix(q: jax.Array) -> jax.Array:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``q[..., 4]`` = (w, x, y, z), normalised
    here (any nonzero q)."""
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = jnp.moveaxis(q, -1, 0)
    rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def random_rotations(key: jax.Array, shape: tuple[int, ...] = (), dtype=jnp.float64
                     ) -> jax.Array:
    """Independent Haar-uniform rotation matrices ``[*shape, 3, 3]`` (det +1) from ``key``."""
    return quaternion_matrix(jax.random.normal(key, (*shape, 4), dtype))


def rotate(rotations: jax.Array, *vectors: jax.Array) -> tuple[jax.Array, ...]:
    """Each ``v[..., N, 3]`` rotated by ``rotations[..., 3, 3]`` (v' = R v for every row; the
    leading axes broadcast). Positions rotate about the origin (energies are translation
    invariant); forces, being vectors, rotate with the same R."""
    return tuple(jnp.einsum("...ij,...nj->...ni", rotations.astype(v.dtype), v)
                 for v in vectors)
