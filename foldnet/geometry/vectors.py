"""Small pure-jnp vector helpers (f32): safe norms, distances, virtual C-beta.

Every function is differentiable everywhere it is called in foldnet: norms take
an epsilon inside the square root so that the gradient at a zero vector is
finite (the usual ``sqrt(x + eps)`` trick, as in AlphaFold's ``r3``/``quat_affine``).
"""

from __future__ import annotations

import jax.numpy as jnp

from foldnet.common import residue_constants as rc

_EPS = 1e-8


def check_last_dim(name: str, x: jnp.ndarray, size: int = 3) -> None:
    """Raise ValueError unless ``x`` has trailing dimension ``size`` (shape check on entry)."""
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name}: expected shape [..., {size}], got {tuple(x.shape)}")


def norm(v: jnp.ndarray, axis: int = -1, keepdims: bool = False, eps: float = _EPS) -> jnp.ndarray:
    """Euclidean norm with a finite gradient at zero: ``sqrt(sum v^2 + eps)``.

    Args:
      v: [..., D] vectors.
      axis: reduced axis.
      keepdims: keep the reduced axis.
      eps: added under the square root (A^2).
    Returns:
      [...] norms (f32).
    """
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axis, keepdims=keepdims) + eps)


def normalize(v: jnp.ndarray, eps: float = _EPS) -> jnp.ndarray:
    """Unit vectors ``v / |v|`` along the last axis (safe at zero).

    Args:
      v: [..., 3] vectors.
    Returns:
      [..., 3] unit vectors.
    """
    check_last_dim("normalize", v)
    return v / norm(v, keepdims=True, eps=eps)


def distance(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Euclidean distance between matching points.

    Args:
      a, b: [..., 3] points in Angstrom (broadcastable).
    Returns:
      [...] distances in Angstrom.
    """
    check_last_dim("distance a", a)
    check_last_dim("distance b", b)
    return norm(a - b)


def pairwise_distances(x: jnp.ndarray, y: jnp.ndarray | None = None) -> jnp.ndarray:
    """All-pairs Euclidean distances (differentiable, finite gradient on the diagonal).

    Args:
      x: [N, 3] points.
      y: [M, 3] points; ``x`` when None.
    Returns:
      [N, M] distances in Angstrom.
    """
    y = x if y is None else y
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"pairwise_distances: expected [N, 3] and [M, 3], got {x.shape}, {y.shape}")
    check_last_dim("pairwise_distances x", x)
    check_last_dim("pairwise_distances y", y)
    return norm(x[:, None, :] - y[None, :, :])


def virtual_cb(n: jnp.ndarray, ca: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    """Ideal C-beta from backbone N, CA, C (trRosetta construction, Yang et al. 2020 PNAS).

    ``CB = a (b x c) + b_coef b + c_coef c + CA`` with ``b = CA - N``, ``c = C - CA`` and the
    coefficients ``rc.VIRTUAL_CB_*`` (the jnp twin of ``geometry_np.virtual_cb``).

    Args:
      n, ca, c: [..., 3] backbone atom positions (Angstrom).
    Returns:
      [..., 3] virtual CB positions.
    """
    for name, x in (("n", n), ("ca", ca), ("c", c)):
        check_last_dim(f"virtual_cb {name}", x)
    b = ca - n
    c_ = c - ca
    a = jnp.cross(b, c_)
    return rc.VIRTUAL_CB_A * a + rc.VIRTUAL_CB_B * b + rc.VIRTUAL_CB_C * c_ + ca
