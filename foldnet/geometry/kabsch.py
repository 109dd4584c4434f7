"""Optimal superposition (Kabsch 1976, Acta Cryst. A32:922) and RMSD in pure jnp (f32).

The rotation comes from the SVD of the 3x3 covariance; the reflection fix (Kabsch
1978, Acta Cryst. A34:827) flips the sign of the smallest singular direction when
``det(V U^T) < 0``, so the result is always a proper rotation: a mirror image can
never be superposed onto its original.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from foldnet.geometry.vectors import check_last_dim


def _check_pair(x: jnp.ndarray, y: jnp.ndarray, mask: Optional[jnp.ndarray]) -> jnp.ndarray:
    check_last_dim("kabsch x", x)
    check_last_dim("kabsch y", y)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"kabsch: expected two [N, 3] arrays of the same shape, got {x.shape}, {y.shape}")
    if mask is None:
        return jnp.ones(x.shape[:1], jnp.float32)
    if mask.shape != x.shape[:1]:
        raise ValueError(f"kabsch: mask has shape {mask.shape}, expected {x.shape[:1]}")
    return mask.astype(jnp.float32)


def kabsch(
    x: jnp.ndarray, y: jnp.ndarray, mask: Optional[jnp.ndarray] = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Proper rotation ``R`` and translation ``t`` minimising ``sum_i m_i |R x_i + t - y_i|^2``.

    Kabsch algorithm with the reflection (det) fix.

    Args:
      x: [N, 3] mobile points.
      y: [N, 3] target points.
      mask: [N] weights (1 = use the point); all ones when None.
    Returns:
      (R [3, 3], t [3]) so that ``x @ R.T + t`` is superposed on ``y``; ``det(R) = +1``.
    """
    m = _check_pair(x, y, mask)
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    w = m[:, None] / jnp.maximum(jnp.sum(m), 1e-8)
    cx = jnp.sum(w * x, axis=0)
    cy = jnp.sum(w * y, axis=0)
    h = ((x - cx) * w).T @ (y - cy)  # [3, 3] covariance
    u, _, vt = jnp.linalg.svd(h)
    d = jnp.sign(jnp.linalg.det(vt.T @ u.T))
    d = jnp.where(d == 0, 1.0, d)
    fix = jnp.diag(jnp.array([1.0, 1.0, 1.0], jnp.float32).at[2].set(d))
    r = vt.T @ fix @ u.T
    t = cy - r @ cx
    return r, t


def superpose(x: jnp.ndarray, y: jnp.ndarray, mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """``x`` rigidly moved onto ``y`` (Kabsch with reflection fix).

    Args:
      x: [N, 3] mobile points.
      y: [N, 3] target points.
      mask: [N] weights used for the fit.
    Returns:
      [N, 3] superposed copy of ``x``.
    """
    r, t = kabsch(x, y, mask)
    return x @ r.T + t


def rmsd(x: jnp.ndarray, y: jnp.ndarray, mask: Optional[jnp.ndarray] = None, align: bool = True) -> jnp.ndarray:
    """Root-mean-square deviation, after optimal proper superposition when ``align``.

    Args:
      x: [N, 3] points.
      y: [N, 3] reference points.
      mask: [N] weights (1 = counted).
      align: superpose ``x`` onto ``y`` first (Kabsch, no reflections).
    Returns:
      scalar RMSD in Angstrom.
    """
    m = _check_pair(x, y, mask)
    if align:
        x = superpose(x, y, m)
    sq = jnp.sum(jnp.square(x - y), axis=-1)
    return jnp.sqrt(jnp.sum(m * sq) / jnp.maximum(jnp.sum(m), 1e-8))
