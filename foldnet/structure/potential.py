"""The folding potential built from predicted distributions (pure jnp, f32).

Terms (each returned separately; the total is their config-weighted sum), in the spirit of
AlphaFold-CASP13 (Senior et al. 2020, Nature 577:706, "Improved protein structure
prediction using potentials from deep learning"):

* distogram: ``sum_{i<j, |i-j|>=s} V_ij(d_ij)`` over CB-CB distances, with
  ``V_ij = -log(p_ij + eps) [+ log(ref_ij + eps)]`` known at the bin centres and
  interpolated by a uniform Catmull-Rom cubic spline (C1-continuous, so gradients are
  continuous). The overflow bin (>= 22 A) is a knot one bin width after the last regular
  centre; two repeated knots after it make the spline flat (slope 0, still C1) from one
  more bin width on, and it is held constant there; below the first centre it is held
  at the first value (never reached in practice: the clash term acts first). The knots are first replaced
  by their Laplace lower envelope (``laplace_envelope``) so that no pair sits on a flat
  floor of ~zero probability without a gradient. An optional reference
  (background) distribution turns the term into a log-likelihood ratio.
* torsion: ``-log sum_k p_ik exp(kappa (cos(x_i - mu_k) - 1))`` for x = phi, psi: the
  predicted bin probabilities as a von Mises mixture over the bin centres (smooth and
  periodic; 0 for a perfect one-hot match).
* orientation (``FoldConfig.weight_orientation`` > 0 and a model with the trRosetta
  orientation head; Yang et al. 2020, PNAS 117:1496): for pairs with ``|i-j| >= s`` whose
  predicted P(CB-CB < 20 A) exceeds ``orientation_min_contact_prob``, the same von Mises
  mixture over the 15-degree bin centres of the renormalised angle distribution (last,
  "no contact" bin dropped) for omega_ij (i < j, symmetric), theta_ij and phi_ij (both
  directions), computed from N, CA and CB of the built chain (``orientation_energy``).
* clash: ``sum relu(t - d)^2`` over CA-CA (t = 3.8 A) and CB-CB (t = 3.6 A) pairs with
  ``|i-j| >= clash_min_separation``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.scipy.special import logsumexp

from foldnet.common import residue_constants as rc
from foldnet.geometry.vectors import norm
from foldnet.structure.config import FoldConfig

# Uniform spline grid: the 64 regular centres, the overflow knot one bin width later and a
# repeated overflow knot (zero end slope); one repeated knot in front likewise.
_W = float(rc.DISTOGRAM_BIN_WIDTH)
_FIRST_CENTRE = float(rc.DISTOGRAM_CENTERS[0])
# Knots of the padded table: index 0 is the repeated front knot at centre_0 - w.
_GRID_START = _FIRST_CENTRE - _W
_NUM_KNOTS = rc.NUM_DIST_BINS + 3  # front pad + 64 regular + overflow + 2 end pads


def packed_size(length: int) -> tuple[int, int]:
    """Shape (H, M) of the packed pair layout of ``length`` residues (M = L rounded up to even)."""
    m = length + (length % 2)
    return m // 2, m


def pack_pairs(x, xp=np):
    """Pack the strict upper triangle of a square [M, M, ...] array into [M/2, M, ...].

    Row r < M/2 keeps ``x[r, c]`` for c > r (pairs (r, c)); for c < r it holds
    ``x[M-1-r, M-1-c]`` (pairs of the bottom half, j = M-1-c > i = M-1-r); the diagonal
    c == r is a self pair. Every pair i < j appears exactly once, and the packing is
    slicing, reversal and a select only: dense ops whose gradients are dense too (a
    pair-index gather, and the scatter-add of its gradient, were the slowest part of a
    folding step on CPU).

    Args:
      x: [M, M, ...] array, M even (numpy, or jnp with ``xp=jnp``).
      xp: the array module.
    Returns:
      [M/2, M, ...] packed array.
    """
    m = x.shape[0]
    if m % 2 or x.shape[1] != m:
        raise ValueError(f"pack_pairs: need a square array of even size, got {x.shape}")
    half = m // 2
    top = x[:half]
    bottom = x[half:][::-1, ::-1]
    lower = np.arange(m)[None, :] < np.arange(half)[:, None]
    lower = lower.reshape(lower.shape + (1,) * (x.ndim - 2))
    return xp.where(lower, bottom, top)


def packed_pair_indices(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Residue indices (i, j) [M/2, M] of each packed slot (i == j on the diagonal slots)."""
    _, m = packed_size(length)
    ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    i, j = pack_pairs(ii), pack_pairs(jj)
    return np.minimum(i, j), np.maximum(i, j)


def distogram_table(
    dist_probs: jnp.ndarray,
    eps: float,
    reference: Optional[jnp.ndarray] = None,
    max_slope: Optional[float] = None,
    reference_weight: float = 1.0,
) -> jnp.ndarray:
    """Spline knot values ``V`` [L, L, NUM_DIST_BINS + 2] of the distogram term.

    Args:
      dist_probs: [L, L, 65] predicted bin probabilities (symmetrised and renormalised here).
      eps: probability floor.
      reference: optional background distribution, broadcastable to [L, L, 65] (e.g. a
        separation-dependent prior [L, L, 65] or a global one [65]); the term becomes
        ``-log(p + eps) + log(ref + eps)``.
      max_slope: if set, replace the knots by their ``laplace_envelope`` (energy per A).
      reference_weight: w in ``-log(p + eps) + w log(ref + eps)`` (1 = the full correction).
    Returns:
      [L, L, 68] knot values on the uniform grid starting one bin before the first centre.
    """
    if dist_probs.ndim != 3 or dist_probs.shape[0] != dist_probs.shape[1] or dist_probs.shape[2] != rc.NUM_DIST_BINS:
        raise ValueError(f"distogram_table: dist_probs must be [L, L, {rc.NUM_DIST_BINS}], got {dist_probs.shape}")
    p = dist_probs.astype(jnp.float32)
    p = 0.5 * (p + jnp.swapaxes(p, 0, 1))
    p = p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-12)
    v = -jnp.log(p + eps)
    if reference is not None:
        ref = jnp.broadcast_to(jnp.asarray(reference, jnp.float32), p.shape)
        ref = ref / jnp.maximum(jnp.sum(ref, axis=-1, keepdims=True), 1e-12)
        v = v + reference_weight * jnp.log(ref + eps)
    if max_slope is not None:
        v = laplace_envelope(v, max_slope)
    return jnp.concatenate([v[..., :1], v, v[..., -1:], v[..., -1:]], axis=-1)


def laplace_envelope(v: jnp.ndarray, max_slope: float) -> jnp.ndarray:
    """Lower envelope ``V'_k = min_m (V_m + max_slope * w * |k - m|)`` along the last axis.

    The 1-D L1 distance transform (Felzenszwalb & Huttenlocher 2012, Theory of Computing
    8:415), computed with one forward and one backward running-minimum pass. In probability
    terms it is ``-log`` of the distogram max-convolved with a Laplace kernel
    ``exp(-max_slope |dd|)``: where the predicted probability is ~0 the potential no longer
    sits on the flat floor ``-log(eps)`` (zero gradient) but rises with slope ``max_slope``
    per Angstrom away from the nearest probable bin; where it is steeper than that (a
    very sharp prediction) it becomes linear, like a Huber loss.

    Args:
      v: [..., K] knot values on a uniform grid of spacing ``rc.DISTOGRAM_BIN_WIDTH``.
      max_slope: largest slope in energy units per Angstrom.
    Returns:
      [..., K] envelope (<= v).
    """
    step = jnp.float32(max_slope * _W)
    vt = jnp.moveaxis(v, -1, 0)

    def run_min(carry, x):
        y = jnp.minimum(x, carry + step)
        return y, y

    _, fwd = lax.scan(run_min, vt[0], vt)
    _, bwd = lax.scan(run_min, fwd[-1], fwd[::-1])
    return jnp.moveaxis(bwd[::-1], 0, -1)


def spline_coefficients(knots: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Catmull-Rom polynomial coefficients of a segment from its four knots [..., 4].

    Catmull & Rom (1974) cubic on a uniform grid: with knots p0..p3 around ``d`` and
    s in [0, 1), ``E = c0 + c1 s + c2 s^2 + c3 s^3`` with ``c0 = p1``, ``c1 = (p2 - p0)/2``,
    ``c2 = (2 p0 - 5 p1 + 4 p2 - p3)/2``, ``c3 = (3 p1 - p0 - 3 p2 + p3)/2``.

    Args:
      knots: [..., 4] knot values p0..p3.
    Returns:
      (c0, c1, c2, c3), each [...].
    """
    p0, p1, p2, p3 = knots[..., 0], knots[..., 1], knots[..., 2], knots[..., 3]
    return p1, 0.5 * (p2 - p0), 0.5 * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3), 0.5 * (3.0 * p1 - p0 - 3.0 * p2 + p3)


def _knot_windows(knots: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """``knots[index + 0..3]`` [..., 4]: one gather of a contiguous window per lookup."""
    dims = lax.GatherDimensionNumbers(offset_dims=(index.ndim,), collapsed_slice_dims=(), start_index_map=(0,))
    # In bounds by construction (``_spline_parts`` clips the segment), so no clamping.
    return lax.gather(knots, index[..., None], dims, slice_sizes=(4,), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def _spline_parts(knots: jnp.ndarray, row: jnp.ndarray, d: jnp.ndarray):
    """(energy, dE/dd, gathered window start, s) of ``spline_energy``."""
    u_raw = (d - _GRID_START) / _W
    # Knot 1 is the first centre, knot K-2 the (zero-slope) end of the overflow segment;
    # outside [1, K-2] the end values are held (slope 0).
    u = jnp.clip(u_raw, 1.0, _NUM_KNOTS - 2.0)
    k = jnp.clip(jnp.floor(u), 1, _NUM_KNOTS - 3).astype(jnp.int32)
    s = u - k
    index = row + (k - 1)
    c0, c1, c2, c3 = spline_coefficients(_knot_windows(knots, index))
    energy = c0 + s * (c1 + s * (c2 + s * c3))
    slope = (c1 + s * (2.0 * c2 + 3.0 * s * c3)) / _W
    slope = jnp.where((u_raw > 1.0) & (u_raw < _NUM_KNOTS - 2.0), slope, 0.0)
    return energy, slope, index, s


@jax.custom_jvp
def spline_energy(knots: jnp.ndarray, row: jnp.ndarray, d: jnp.ndarray) -> jnp.ndarray:
    """Per-pair Catmull-Rom distogram energies at distances ``d``.

    Each lookup gathers the four knots around ``d`` (one contiguous window) and forms the
    segment's cubic on the fly: the table is the 68 knots per pair, a quarter of the
    precomputed 65 x 4 coefficients, so a 300-residue table (~12 MB) stays in cache
    (value and gradient of the lookup, 300 residues x 8 restarts: ~1.3x faster).
    Differentiable in ``d`` and in the knots. The derivative in ``d`` is the analytic slope
    of the gathered segment (a custom JVP), so the backward pass of a folding step needs no
    second gather and no scatter.

    Args:
      knots: [N * 68] ``distogram_table`` values of N pairs, flattened (pair, knot).
      row: [...] int32 ``pair * 68``, the first knot of each pair.
      d: [...] distances in Angstrom (same shape as ``row``).
    Returns:
      [...] energies.
    """
    return _spline_parts(knots, row, d)[0]


@functools.partial(spline_energy.defjvp, symbolic_zeros=True)
def _spline_energy_jvp(primals, tangents):
    knots, row, d = primals
    knots_dot, _, d_dot = tangents
    energy, slope, index, s = _spline_parts(knots, row, d)
    out = jnp.zeros_like(energy) if type(d_dot) is SymbolicZero else slope * d_dot
    if type(knots_dot) is not SymbolicZero:
        c0, c1, c2, c3 = spline_coefficients(_knot_windows(knots_dot, index))
        out = out + c0 + s * (c1 + s * (c2 + s * c3))
    return energy, out


def torsion_energy(angles: jnp.ndarray, log_probs: jnp.ndarray, kappa: float) -> jnp.ndarray:
    """Von Mises mixture negative log-density (up to a constant) of torsion angles.

    Args:
      angles: [L] angles in radians.
      log_probs: [L, 36] log bin probabilities (``rc.TORSION_CENTERS_RAD`` centres).
      kappa: concentration of each component.
    Returns:
      [L] energies, ``-logsumexp_k(log p_k + kappa (cos(x - mu_k) - 1))`` (>= 0 when the
      probabilities sum to 1).
    """
    mu = jnp.asarray(rc.TORSION_CENTERS_RAD, jnp.float32)
    return -logsumexp(log_probs + kappa * (jnp.cos(angles[:, None] - mu) - 1.0), axis=-1)


def torsion_log_probs(probs: jnp.ndarray, eps: float) -> jnp.ndarray:
    """Renormalised ``log(p + eps)`` of [L, 36] torsion-bin probabilities."""
    if probs.ndim != 2 or probs.shape[1] != rc.NUM_TORSION_BINS:
        raise ValueError(f"torsion probabilities must be [L, {rc.NUM_TORSION_BINS}], got {probs.shape}")
    p = probs.astype(jnp.float32)
    p = p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-12)
    return jnp.log(p + eps) - jnp.log1p(eps * rc.NUM_TORSION_BINS)


_torsion_log_probs = jax.jit(torsion_log_probs, static_argnames=("eps",))


def clash_energy(x: jnp.ndarray, pairs_i: jnp.ndarray, pairs_j: jnp.ndarray, threshold: float) -> jnp.ndarray:
    """Flat-bottom repulsion ``relu(t - d)^2`` per pair.

    Args:
      x: [L, 3] atom positions.
      pairs_i, pairs_j: [P] residue indices.
      threshold: t in Angstrom.
    Returns:
      [P] penalties (A^2).
    """
    d = norm(x[pairs_i] - x[pairs_j])
    return jnp.square(jnp.maximum(threshold - d, 0.0))


# Orientation bin centres (radians): 24 dihedral bins over [-pi, pi), 12 planar over [0, pi).
_O_WIDTH = 2.0 * np.pi / rc.ORIENTATION_DIHEDRAL_BINS
ORIENTATION_DIHEDRAL_CENTERS = (-np.pi + _O_WIDTH * (np.arange(rc.ORIENTATION_DIHEDRAL_BINS) + 0.5)).astype(np.float32)
ORIENTATION_PLANAR_CENTERS = (_O_WIDTH * (np.arange(rc.ORIENTATION_PLANAR_BINS) + 0.5)).astype(np.float32)


def _cos_sin(x: jnp.ndarray, y: jnp.ndarray, tiny: float = 1e-8) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(cos, sin) of ``atan2(y, x)`` without the angle: ``(x, y) / |(x, y)|``.

    Where ``|(x, y)|^2 <= tiny`` (a degenerate pair, e.g. i == j) it is (1, 0) with a zero
    gradient: the select happens before the rsqrt, so no NaN or inf reaches the backward pass.
    """
    r2 = x * x + y * y
    ok = r2 > tiny
    inv = lax.rsqrt(jnp.where(ok, r2, 1.0))
    return jnp.where(ok, x * inv, 1.0), jnp.where(ok, y * inv, 0.0)


def orientation_angles(coords: jnp.ndarray) -> dict[str, tuple[jnp.ndarray, jnp.ndarray]]:
    """(cos, sin) [L, L] of trRosetta's omega_ij, theta_ij and phi_ij of a chain.

    omega_ij = dihedral(CA_i, CB_i, CB_j, CA_j), theta_ij = dihedral(N_i, CA_i, CB_i, CB_j),
    phi_ij = angle(CA_i, CB_i, CB_j) (``foldnet.model.heads.orientation_targets``'s
    definitions; Yang et al. 2020). Every pair quantity is a dot or triple product of
    per-residue vectors with ``CB_j - CB_i``, so it is computed as [L, L] matmuls without
    [L, L, 3] temporaries; dihedrals follow Blondel & Karplus (1996):
    ``atan2(b1^ . (b0 x b2), (b0 . b2) - (b0 . b1^)(b2 . b1^))``, each scaled by a positive
    factor that ``_cos_sin`` removes.

    Args:
      coords: [L, 5, 3] N, CA, C, O, CB (Angstrom).
    Returns:
      {"omega", "theta", "phi": (cos [L, L], sin [L, L])}; the diagonal is (1, 0).
    """
    if coords.ndim != 3 or coords.shape[1:] != (rc.NUM_ATOMS, 3):
        raise ValueError(f"orientation_angles: coords must be [L, {rc.NUM_ATOMS}, 3], got {coords.shape}")
    x = coords.astype(jnp.float32)
    x = x - jnp.mean(x[:, rc.CA_IDX], axis=0)
    n, ca, cb = x[:, rc.N_IDX], x[:, rc.CA_IDX], x[:, rc.CB_IDX]
    hi = lax.Precision.HIGHEST

    def dots(u, v):  # [L, L]: u_i . (v_j - v_i) for per-residue u and points v
        return jnp.matmul(u, v.T, precision=hi) - jnp.sum(u * v, axis=-1)[:, None]

    sq = jnp.sum(cb * cb, axis=-1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(cb, cb.T, precision=hi)  # |CB_j - CB_i|^2
    ok = d2 > 1e-4
    d = jnp.sqrt(jnp.where(ok, d2, 1.0))
    # omega: b0 = a_i, b1 = CB_j - CB_i, b2 = a_j with a = CA - CB; scaled by |d|^2.
    a = ca - cb
    ad_i = dots(a, cb)  # a_i . (CB_j - CB_i)
    ad_j = -ad_i.T  # a_j . (CB_j - CB_i)
    aa = jnp.matmul(a, a.T, precision=hi)
    # d . (a_i x a_j) = a_i . (a_j x CB_j) - a_j . (CB_i x a_i)
    triple = jnp.matmul(a, jnp.cross(a, cb).T, precision=hi) - jnp.matmul(jnp.cross(cb, a), a.T, precision=hi)
    omega = _cos_sin(jnp.where(ok, d2 * aa - ad_i * ad_j, 1.0), jnp.where(ok, d * triple, 0.0))
    # theta: b0 = N_i - CA_i, b1^ = (CB_i - CA_i)^ (per residue), b2 = CB_j - CB_i.
    b1 = cb - ca
    b1n = b1 * lax.rsqrt(jnp.maximum(jnp.sum(b1 * b1, axis=-1, keepdims=True), 1e-8))
    b0 = n - ca
    v = b0 - jnp.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    theta = _cos_sin(jnp.where(ok, dots(v, cb), 1.0), jnp.where(ok, dots(jnp.cross(b1n, v), cb), 0.0))
    # phi: angle between a_i = CA_i - CB_i and CB_j - CB_i; |a x d|^2 = |a|^2 |d|^2 - (a . d)^2.
    s2 = jnp.sum(a * a, axis=-1)[:, None] * d2 - ad_i * ad_i
    s_ok = ok & (s2 > 1e-4)
    sin_phi = jnp.where(s_ok, jnp.sqrt(jnp.where(s_ok, s2, 1.0)), 0.0)
    phi = _cos_sin(jnp.where(ok, ad_i, 1.0), sin_phi)
    return {"omega": omega, "theta": theta, "phi": phi}


def von_mises_mixture_energy(cos_sin: tuple[jnp.ndarray, jnp.ndarray], log_probs: jnp.ndarray,
                             centers: np.ndarray, kappa: float) -> jnp.ndarray:
    """``-logsumexp_k(log p_k + kappa (cos(x - mu_k) - 1))`` from (cos x, sin x).

    Args:
      cos_sin: ([...], [...]) cosine and sine of the angles.
      log_probs: [..., K] log bin probabilities.
      centers: [K] bin centres mu_k (radians).
      kappa: concentration of each component.
    Returns:
      [...] energies (>= 0 when the probabilities sum to 1).
    """
    c, s = cos_sin
    cos_mu = jnp.asarray(np.cos(centers), jnp.float32)
    sin_mu = jnp.asarray(np.sin(centers), jnp.float32)
    cos_delta = c[..., None] * cos_mu + s[..., None] * sin_mu
    return -logsumexp(log_probs + kappa * (cos_delta - 1.0), axis=-1)


def orientation_tables(
    omega_probs: jnp.ndarray, theta_probs: jnp.ndarray, phi_probs: jnp.ndarray, eps: float
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Renormalised log angle probabilities and the contact probability of every pair.

    Args:
      omega_probs, theta_probs: [L, L, 25]; phi_probs: [L, L, 13] (last bin: CB-CB >= 20 A).
      eps: probability floor.
    Returns:
      (omega [L, L, 24], theta [L, L, 24], phi [L, L, 12] log probabilities of the angle
      bins given a contact; contact [L, L] = mean over the three heads of 1 - p(last bin),
      symmetrised). omega is symmetrised; theta and phi are directional and kept as given.
    """
    def split(p):
        p = p.astype(jnp.float32)
        p = p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-12)
        angles = p[..., :-1]
        angles = angles / jnp.maximum(jnp.sum(angles, axis=-1, keepdims=True), 1e-12)
        k = angles.shape[-1]
        return jnp.log(angles + eps) - jnp.log1p(eps * k), 1.0 - p[..., -1]

    omega_probs = 0.5 * (omega_probs + jnp.swapaxes(omega_probs, 0, 1))
    (lo, co), (lt, ct), (lp, cp) = split(omega_probs), split(theta_probs), split(phi_probs)
    contact = (co + ct + cp) / 3.0
    return lo, lt, lp, 0.5 * (contact + contact.T)


_orientation_tables = jax.jit(orientation_tables, static_argnames=("eps",))


def orientation_energy(potential: "Potential", coords: jnp.ndarray, kappa: float) -> jnp.ndarray:
    """Weighted sum of the omega (i < j), theta and phi (i != j) mixture energies."""
    ang = orientation_angles(coords)
    e_omega = von_mises_mixture_energy(ang["omega"], potential.omega_log_probs, ORIENTATION_DIHEDRAL_CENTERS, kappa)
    e_theta = von_mises_mixture_energy(ang["theta"], potential.theta_log_probs, ORIENTATION_DIHEDRAL_CENTERS, kappa)
    e_phi = von_mises_mixture_energy(ang["phi"], potential.orient_phi_log_probs, ORIENTATION_PLANAR_CENTERS, kappa)
    w = potential.orient_weight
    return jnp.sum(jnp.triu(w, 1) * e_omega) + jnp.sum(w * (e_theta + e_phi))


class Potential(NamedTuple):
    """Precomputed tables for one protein; ``energy_terms(coords)`` evaluates the terms.

    Pair quantities use the packed layout of ``pack_pairs`` ([H, M] with M = L rounded up
    to even, H = M/2): every pair i < j once, no index gather.
    """

    knots: jnp.ndarray  # [H*M*68] distogram spline knots, flattened (pair, knot)
    row: jnp.ndarray  # [H, M] int32 first knot of each packed pair
    dist_weight: jnp.ndarray  # [H, M] float32 (separation >= min_separation, residue masks)
    clash_weight: jnp.ndarray  # [H, M] float32
    phi_log_probs: jnp.ndarray  # [L, 36]
    psi_log_probs: jnp.ndarray  # [L, 36]
    phi_mask: jnp.ndarray  # [L] 0 for the first residue (phi_0 moves nothing)
    psi_mask: jnp.ndarray  # [L] 0 for the last residue
    # Orientation term (None unless weight_orientation > 0 and orientations were given):
    omega_log_probs: Optional[jnp.ndarray] = None  # [L, L, 24] symmetric
    theta_log_probs: Optional[jnp.ndarray] = None  # [L, L, 24] row i: theta_ij
    orient_phi_log_probs: Optional[jnp.ndarray] = None  # [L, L, 12] row i: phi_ij
    orient_weight: Optional[jnp.ndarray] = None  # [L, L] float32 0/1, symmetric, 0 on the diagonal


def make_potential(
    dist_probs: jnp.ndarray,
    phi_probs: jnp.ndarray,
    psi_probs: jnp.ndarray,
    config: FoldConfig,
    reference: Optional[jnp.ndarray] = None,
    residue_mask: Optional[np.ndarray] = None,
    orientation: Optional[dict] = None,
) -> Potential:
    """Precompute everything the potential needs for one protein.

    Args:
      dist_probs: [L, L, 65] predicted CB-CB distogram probabilities.
      phi_probs, psi_probs: [L, 36] predicted torsion-bin probabilities.
      config: weights, separations, eps and kappa.
      reference: optional background distogram (see ``distogram_table``).
      residue_mask: [L] 1 for residues whose predictions count (None: all).
      orientation: {"omega": [L, L, 25], "theta": [L, L, 25], "phi": [L, L, 13]} predicted
        orientation probabilities (``rc.ORIENTATION_*`` bins), or None. Used only when
        ``config.weight_orientation > 0``, and then required.
    Returns:
      Potential tables.
    """
    length = dist_probs.shape[0]
    for name, arr in (("phi_probs", phi_probs), ("psi_probs", psi_probs)):
        if arr.shape != (length, rc.NUM_TORSION_BINS):
            raise ValueError(f"make_potential: {name} must be [{length}, {rc.NUM_TORSION_BINS}], got {arr.shape}")
    m = np.ones(length, np.float32) if residue_mask is None else np.asarray(residue_mask, np.float32)
    if m.shape != (length,):
        raise ValueError(f"make_potential: residue_mask must be [{length}], got {m.shape}")
    half, size = packed_size(length)
    knots = _packed_knots(jnp.asarray(dist_probs), reference, config.prob_eps, config.distogram_max_slope,
                          config.reference_weight)
    i, j = packed_pair_indices(length)
    mask = np.concatenate([m, np.zeros(size - length, np.float32)])
    pm = mask[i] * mask[j] * (j > i)
    sep = j - i
    phi_mask = m.copy()
    phi_mask[0] = 0.0
    psi_mask = m.copy()
    psi_mask[-1] = 0.0
    extra = {}
    if config.weight_orientation > 0:
        extra = _orientation_fields(orientation, m, config)
    return Potential(
        knots=knots,
        row=jnp.asarray(np.arange(half * size, dtype=np.int32).reshape(half, size) * _NUM_KNOTS),
        dist_weight=jnp.asarray((sep >= config.min_separation) * pm, jnp.float32),
        clash_weight=jnp.asarray((sep >= config.clash_min_separation) * pm, jnp.float32),
        phi_log_probs=_torsion_log_probs(jnp.asarray(phi_probs), config.prob_eps),
        psi_log_probs=_torsion_log_probs(jnp.asarray(psi_probs), config.prob_eps),
        phi_mask=jnp.asarray(phi_mask),
        psi_mask=jnp.asarray(psi_mask),
        **extra,
    )


def _orientation_fields(orientation: Optional[dict], residue_mask: np.ndarray, config: FoldConfig) -> dict:
    """The orientation fields of ``Potential`` (``make_potential`` with weight_orientation > 0)."""
    length = residue_mask.shape[0]
    if orientation is None:
        raise ValueError("make_potential: weight_orientation > 0 needs orientation probabilities "
                         "(a model with the orientation head)")
    for name, arr in orientation.items():
        want = (length, length, rc.ORIENTATION_NUM_BINS[name])
        if np.shape(arr) != want:
            raise ValueError(f"make_potential: orientation[{name!r}] must be {list(want)}, got {np.shape(arr)}")
    lo, lt, lp, contact = _orientation_tables(
        jnp.asarray(orientation["omega"]), jnp.asarray(orientation["theta"]), jnp.asarray(orientation["phi"]),
        config.prob_eps)
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    keep = (np.abs(i - j) >= config.min_separation) * residue_mask[:, None] * residue_mask[None, :]
    weight = jnp.asarray(keep, jnp.float32) * (contact > config.orientation_min_contact_prob).astype(jnp.float32)
    return {"omega_log_probs": lo, "theta_log_probs": lt, "orient_phi_log_probs": lp, "orient_weight": weight}


@functools.partial(jax.jit, static_argnames=("eps", "max_slope", "reference_weight"))
def _packed_knots(
    dist_probs: jnp.ndarray, reference: Optional[jnp.ndarray], eps: float, max_slope: Optional[float],
    reference_weight: float = 1.0,
) -> jnp.ndarray:
    """[H * M * 68] spline knots of all pairs in the packed layout (jitted: one compilation
    per length instead of one per primitive)."""
    length = dist_probs.shape[0]
    table = distogram_table(dist_probs, eps, reference, max_slope, reference_weight)
    _, size = packed_size(length)
    if size != length:  # odd L: one dummy residue, weight 0 in every pair
        table = jnp.concatenate([table, jnp.broadcast_to(table[-1:], (1,) + table.shape[1:])], axis=0)
        table = jnp.concatenate([table, jnp.broadcast_to(table[:, -1:], (size, 1) + table.shape[2:])], axis=1)
    return pack_pairs(table, jnp).reshape(-1)


def _with_dummy_residue(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Points [..., L, 3] with the packed layout's dummy residue (a copy of the last point,
    weight 0 in every pair) appended when L is odd (L == size - 1)."""
    if x.shape[-2] == size:
        return x
    return jnp.concatenate([x, x[..., -1:, :]], axis=-2)


def packed_distances(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Distances of all pairs of ``x`` [L, 3] in the packed layout [size/2, size].

    From the Gram matrix (``|a|^2 + |b|^2 - 2 a.b``, a matmul, after centring the points
    so f32 cancellation stays ~1e-4 A^2) rather than from per-pair difference vectors:
    on CPU the [L, L, 3] differences and their gradient cost ~6x more. The two halves of the
    packed layout are built directly, each from its own [M/2, 3] x [3, M] matmul (the top rows
    from ``x``, the bottom rows from ``x`` reversed), instead of packing the full [M, M] square
    with ``pack_pairs``: the same numbers, but the 2-D reversal and its gradient were most of
    the cost (300 residues, 8 restarts, value and gradient: 1.6x faster on the 2-core CPU).
    Squared distances are floored at 1e-4 A^2 so a coincident pair has a finite (zero) gradient.

    Args:
      x: [L, 3] positions, L == size or size - 1 (a dummy point is appended).
      size: even packed size M.
    Returns:
      [M/2, M] distances in Angstrom.
    """
    x = _with_dummy_residue(x, size)
    half = size // 2
    x = x - jnp.mean(x, axis=0)
    sq = jnp.sum(x * x, axis=-1)
    hi = lax.Precision.HIGHEST
    # Row r holds pairs (r, c) for c > r and (M-1-r, M-1-c) for c < r (``pack_pairs``).
    top = sq[:half, None] + sq[None, :] - 2.0 * jnp.matmul(x[:half], x.T, precision=hi)
    xr, sqr = x[::-1], sq[::-1]
    bottom = sqr[:half, None] + sqr[None, :] - 2.0 * jnp.matmul(xr[:half], xr.T, precision=hi)
    lower = np.arange(size)[None, :] < np.arange(half)[:, None]
    return jnp.sqrt(jnp.maximum(jnp.where(lower, bottom, top), 1e-4))


def energy_terms(
    potential: Potential, coords: jnp.ndarray, phi: jnp.ndarray, psi: jnp.ndarray, config: FoldConfig
) -> dict[str, jnp.ndarray]:
    """Unweighted energy terms of one structure.

    Args:
      potential: tables from ``make_potential``.
      coords: [L, 5, 3] N, CA, C, O, CB positions.
      phi, psi: [L] torsions in radians (those that built ``coords``).
      config: kappa and clash thresholds.
    Returns:
      {"distogram", "torsion", "clash"[, "orientation"]}: scalar energies (sums over pairs /
      residues); "orientation" only when the potential has orientation tables
      (``make_potential`` with weight_orientation > 0).
    """
    terms = batched_energy_terms(potential, coords[None], phi[None], psi[None], config)
    return {k: v[0] for k, v in terms.items()}


# The distogram and clash terms run as one CPU kernel (``foldnet.model.cpu_kernels.pair_terms``)
# when the kernels are available and JAX computes on the CPU; False forces the jnp reference
# below on every backend (tests compare the two).
USE_CPU_KERNEL = True


def _use_cpu_kernel(coords: jnp.ndarray) -> bool:
    # The kernel's spline grid is fixed at 68 knots (64 bins + overflow, padded), as here.
    if not USE_CPU_KERNEL or coords.dtype != jnp.float32 or jax.default_backend() != "cpu" or _NUM_KNOTS != 68:
        return False
    from foldnet.model import cpu_kernels  # lazy: the kernels are built on first use

    return cpu_kernels.available()


def _pair_terms(potential: Potential, coords: jnp.ndarray, config: FoldConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """[R] distogram and clash energies of R structures (jnp: packed Gram distances, spline gather)."""
    size = potential.row.shape[1]
    distances = jax.vmap(packed_distances, in_axes=(0, None))
    d_ca = distances(coords[:, :, rc.CA_IDX], size)  # [R, H, M]
    d = distances(coords[:, :, rc.CB_IDX], size)
    pair_energy = spline_energy(potential.knots, potential.row[..., None], jnp.moveaxis(d, 0, -1))
    e_dist = jnp.sum(potential.dist_weight[..., None] * pair_energy, axis=(0, 1))
    e_clash = jnp.sum(
        potential.clash_weight
        * (jnp.square(jnp.maximum(config.clash_ca - d_ca, 0.0)) + jnp.square(jnp.maximum(config.clash_cb - d, 0.0))),
        axis=(1, 2),
    )
    return e_dist, e_clash


def _kernel_pair_terms(potential: Potential, coords: jnp.ndarray, config: FoldConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``_pair_terms`` as one pass of the CPU kernel over the pairs (energies and gradients)."""
    size = potential.row.shape[1]
    cb = _with_dummy_residue(coords[:, :, rc.CB_IDX], size)
    ca = _with_dummy_residue(coords[:, :, rc.CA_IDX], size)
    return _kernel_terms(cb, ca, potential.knots, potential.row, potential.dist_weight, potential.clash_weight,
                         config.clash_ca, config.clash_cb)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _kernel_terms(cb, ca, knots, row, dist_weight, clash_weight, t_ca: float, t_cb: float):
    return _kernel_terms_fwd(cb, ca, knots, row, dist_weight, clash_weight, t_ca, t_cb)[0]


def _kernel_terms_fwd(cb, ca, knots, row, dist_weight, clash_weight, t_ca, t_cb):
    from foldnet.model import cpu_kernels

    energies, g_dist_cb, g_clash_cb, g_clash_ca = cpu_kernels.pair_terms(
        cb, ca, knots, dist_weight, clash_weight, _GRID_START, _W, t_ca, t_cb)
    return (energies[0], energies[1]), (g_dist_cb, g_clash_cb, g_clash_ca, cb, knots, row, dist_weight, clash_weight)


def _kernel_terms_bwd(t_ca, t_cb, res, g):
    g_dist_cb, g_clash_cb, g_clash_ca, cb, knots, row, dist_weight, clash_weight = res
    gd, gc = g[0][:, None, None], g[1][:, None, None]

    # d/d knots (the potential is differentiable in the predicted distogram) through the jnp
    # lookup. A folding step differentiates the coordinates only: this part is then dead code
    # that jit removes.
    def dist_energy(k):
        d = jax.vmap(packed_distances, in_axes=(0, None))(cb, cb.shape[1])
        pair = spline_energy(k, row[..., None], jnp.moveaxis(d, 0, -1))
        return jnp.sum(dist_weight[..., None] * pair, axis=(0, 1))

    d_knots = jax.vjp(dist_energy, knots)[1](g[0])[0]
    return (gd * g_dist_cb + gc * g_clash_cb, gc * g_clash_ca, d_knots, None, jnp.zeros_like(dist_weight),
            jnp.zeros_like(clash_weight))


_kernel_terms.defvjp(_kernel_terms_fwd, _kernel_terms_bwd)


def batched_energy_terms(
    potential: Potential, coords: jnp.ndarray, phi: jnp.ndarray, psi: jnp.ndarray, config: FoldConfig
) -> dict[str, jnp.ndarray]:
    """``energy_terms`` of R structures of the same protein at once (e.g. folding restarts).

    Equal to ``jax.vmap(energy_terms, in_axes=(None, 0, 0, 0, None))``. On the CPU the
    distogram and clash terms are one kernel pass over the pairs (``USE_CPU_KERNEL``);
    elsewhere the spline lookup runs pair-major: the distances are laid out [H, M, R], so
    the R lookups of one pair read the same 68-knot block one after another while it is in
    cache (under ``vmap`` the batch axis leads and each restart sweeps the whole table from
    memory; ~1.4x faster on the 2-core CPU, the same numbers).

    Args:
      potential: tables from ``make_potential``.
      coords: [R, L, 5, 3] N, CA, C, O, CB positions.
      phi, psi: [R, L] torsions in radians.
      config: kappa and clash thresholds.
    Returns:
      {"distogram", "torsion", "clash"[, "orientation"]}: [R] energies.
    """
    if _use_cpu_kernel(coords):
        e_dist, e_clash = _kernel_pair_terms(potential, coords, config)
    else:
        e_dist, e_clash = _pair_terms(potential, coords, config)
    kappa = config.torsion_kappa
    e_tors = jnp.sum(potential.phi_mask * jax.vmap(torsion_energy, in_axes=(0, None, None))(
        phi, potential.phi_log_probs, kappa), axis=-1)
    e_tors = e_tors + jnp.sum(potential.psi_mask * jax.vmap(torsion_energy, in_axes=(0, None, None))(
        psi, potential.psi_log_probs, kappa), axis=-1)
    terms = {"distogram": e_dist, "torsion": e_tors, "clash": e_clash}
    if potential.orient_weight is not None:
        terms["orientation"] = jax.vmap(orientation_energy, in_axes=(None, 0, None))(
            potential, coords, config.orientation_kappa)
    return terms


def total_energy(terms: dict[str, jnp.ndarray], config: FoldConfig) -> jnp.ndarray:
    """Config-weighted sum of the terms (the orientation term only when its weight is > 0,
    so weight 0 is the old expression exactly)."""
    total = (
        config.weight_distogram * terms["distogram"]
        + config.weight_torsion * terms["torsion"]
        + config.weight_clash * terms["clash"]
    )
    if config.weight_orientation > 0 and "orientation" in terms:
        total = total + config.weight_orientation * terms["orientation"]
    return total
