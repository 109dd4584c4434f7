"""Bond angles and dihedral (torsion) angles in pure jnp (f32).

The dihedral uses the atan2 form (Blondel & Karplus 1996, J. Comput. Chem. 17:1132;
the IUPAC-IUB 1970 sign convention: positive = clockwise looking from p1 to p2),
which is stable near 0 and 180 degrees where the arccos form loses precision and
has an infinite derivative.
"""

from __future__ import annotations

import jax.numpy as jnp

from foldnet.geometry.vectors import check_last_dim, norm


def bond_angle(p0: jnp.ndarray, p1: jnp.ndarray, p2: jnp.ndarray) -> jnp.ndarray:
    """Angle p0-p1-p2 at p1 in radians in [0, pi], via atan2(|u x v|, u . v).

    Args:
      p0, p1, p2: [..., 3] points (broadcastable).
    Returns:
      [...] angles in radians.
    """
    for name, x in (("p0", p0), ("p1", p1), ("p2", p2)):
        check_last_dim(f"bond_angle {name}", x)
    u = p0 - p1
    v = p2 - p1
    # A small eps under the root keeps 180 degrees accurate (1e-5 deg) and the gradient finite.
    return jnp.arctan2(norm(jnp.cross(u, v), eps=1e-12), jnp.sum(u * v, axis=-1))


def dihedral(p0: jnp.ndarray, p1: jnp.ndarray, p2: jnp.ndarray, p3: jnp.ndarray) -> jnp.ndarray:
    """Dihedral angle p0-p1-p2-p3 in radians in (-pi, pi] via atan2 (IUPAC sign).

    With ``b1`` the unit central bond, ``v``/``w`` the components of ``p0 - p1`` and
    ``p3 - p2`` perpendicular to it: ``atan2((b1 x v) . w, v . w)`` (Blondel & Karplus 1996).
    Same convention as ``foldnet.common.geometry_np.dihedral``.

    Args:
      p0, p1, p2, p3: [..., 3] points (broadcastable).
    Returns:
      [...] dihedral angles in radians.
    """
    for name, x in (("p0", p0), ("p1", p1), ("p2", p2), ("p3", p3)):
        check_last_dim(f"dihedral {name}", x)
    b0 = p0 - p1
    b1 = p2 - p1
    b2 = p3 - p2
    b1n = b1 / norm(b1, keepdims=True)
    v = b0 - jnp.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - jnp.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x = jnp.sum(v * w, axis=-1)
    y = jnp.sum(jnp.cross(b1n, v) * w, axis=-1)
    # A tiny offset on x keeps atan2's gradient finite for degenerate (collinear) input.
    return jnp.arctan2(y, x + 1e-12)
