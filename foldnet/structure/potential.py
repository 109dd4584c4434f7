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
* clash: ``sum relu(t - d)^2`` over CA-CA (t = 3.8 A) and CB-CB (t = 3.6 A) pairs with
  ``|i-j| >= clash_min_separation``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp
import numpy as np
from jax import lax
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


class PairList(NamedTuple):
    """Static residue-pair list (numpy, built once per length)."""

    i: np.ndarray  # [P] int32 first residue
    j: np.ndarray  # [P] int32 second residue (j > i)
    dist_weight: np.ndarray  # [P] float32 1 where |i-j| >= min_separation
    clash_weight: np.ndarray  # [P] float32 1 where |i-j| >= clash_min_separation


def pair_list(length: int, min_separation: int, clash_min_separation: int) -> PairList:
    """Pairs i < j with ``|i-j| >= min(min_separation, clash_min_separation)``.

    Args:
      length: number of residues L.
      min_separation: smallest separation of the distogram term.
      clash_min_separation: smallest separation of the clash term.
    Returns:
      PairList of P pairs.
    """
    smin = min(min_separation, clash_min_separation)
    i, j = np.triu_indices(length, k=smin)
    sep = j - i
    return PairList(
        i=i.astype(np.int32),
        j=j.astype(np.int32),
        dist_weight=(sep >= min_separation).astype(np.float32),
        clash_weight=(sep >= clash_min_separation).astype(np.float32),
    )


def distogram_table(
    dist_probs: jnp.ndarray,
    eps: float,
    reference: Optional[jnp.ndarray] = None,
    max_slope: Optional[float] = None,
) -> jnp.ndarray:
    """Spline knot values ``V`` [L, L, NUM_DIST_BINS + 2] of the distogram term.

    Args:
      dist_probs: [L, L, 65] predicted bin probabilities (symmetrised and renormalised here).
      eps: probability floor.
      reference: optional background distribution, broadcastable to [L, L, 65] (e.g. a
        separation-dependent prior [L, L, 65] or a global one [65]); the term becomes
        ``-log(p + eps) + log(ref + eps)``.
      max_slope: if set, replace the knots by their ``laplace_envelope`` (energy per A).
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
        v = v + jnp.log(ref + eps)
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


def spline_energy(table_flat: jnp.ndarray, pair_offset: jnp.ndarray, d: jnp.ndarray) -> jnp.ndarray:
    """Catmull-Rom interpolation of per-pair knot values at distances ``d``.

    Catmull & Rom (1974) cubic on a uniform grid: with knots p0..p3 around ``d`` and
    s in [0, 1), ``0.5 (2 p1 + (p2 - p0) s + (2 p0 - 5 p1 + 4 p2 - p3) s^2 +
    (3 p1 - p0 - 3 p2 + p3) s^3)``. Outside the grid the end knots are held constant.

    Args:
      table_flat: [L * L * 68] flattened ``distogram_table``.
      pair_offset: [P] int32 offset of each pair's row (``(i * L + j) * 68``).
      d: [P] distances in Angstrom.
    Returns:
      [P] energies.
    """
    # Knot 1 is the first centre, knot K-2 the (zero-slope) end of the overflow segment.
    u = jnp.clip((d - _GRID_START) / _W, 1.0, _NUM_KNOTS - 2.0)
    k = jnp.clip(jnp.floor(u), 1, _NUM_KNOTS - 3).astype(jnp.int32)
    s = u - k
    # Indices are in bounds by construction; plain indexing is the fastest XLA CPU gather.
    p = table_flat[pair_offset[:, None] + k[:, None] + jnp.arange(-1, 3, dtype=jnp.int32)]  # [P, 4]
    p0, p1, p2, p3 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    return 0.5 * (
        2.0 * p1
        + (p2 - p0) * s
        + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * s**2
        + (3.0 * p1 - p0 - 3.0 * p2 + p3) * s**3
    )


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


class Potential(NamedTuple):
    """Precomputed tables for one protein; ``energy_terms(coords)`` evaluates the terms."""

    table_flat: jnp.ndarray  # [L*L*68] distogram spline knots
    pair_offset: jnp.ndarray  # [P] int32
    pairs_i: jnp.ndarray  # [P] int32
    pairs_j: jnp.ndarray  # [P] int32
    dist_weight: jnp.ndarray  # [P] float32 (includes residue masks)
    clash_weight: jnp.ndarray  # [P] float32
    phi_log_probs: jnp.ndarray  # [L, 36]
    psi_log_probs: jnp.ndarray  # [L, 36]
    phi_mask: jnp.ndarray  # [L] 0 for the first residue (phi_0 moves nothing)
    psi_mask: jnp.ndarray  # [L] 0 for the last residue


def make_potential(
    dist_probs: jnp.ndarray,
    phi_probs: jnp.ndarray,
    psi_probs: jnp.ndarray,
    config: FoldConfig,
    reference: Optional[jnp.ndarray] = None,
    residue_mask: Optional[np.ndarray] = None,
) -> Potential:
    """Precompute everything the potential needs for one protein.

    Args:
      dist_probs: [L, L, 65] predicted CB-CB distogram probabilities.
      phi_probs, psi_probs: [L, 36] predicted torsion-bin probabilities.
      config: weights, separations, eps and kappa.
      reference: optional background distogram (see ``distogram_table``).
      residue_mask: [L] 1 for residues whose predictions count (None: all).
    Returns:
      Potential tables.
    """
    length = dist_probs.shape[0]
    for name, arr in (("phi_probs", phi_probs), ("psi_probs", psi_probs)):
        if arr.shape != (length, rc.NUM_TORSION_BINS):
            raise ValueError(f"make_potential: {name} must be [{length}, {rc.NUM_TORSION_BINS}], got {arr.shape}")
    table = distogram_table(jnp.asarray(dist_probs), config.prob_eps, reference, config.distogram_max_slope)
    pl = pair_list(length, config.min_separation, config.clash_min_separation)
    m = np.ones(length, np.float32) if residue_mask is None else np.asarray(residue_mask, np.float32)
    if m.shape != (length,):
        raise ValueError(f"make_potential: residue_mask must be [{length}], got {m.shape}")
    pm = m[pl.i] * m[pl.j]
    phi_mask = m.copy()
    phi_mask[0] = 0.0
    psi_mask = m.copy()
    psi_mask[-1] = 0.0
    return Potential(
        table_flat=table.reshape(-1),
        pair_offset=jnp.asarray((pl.i.astype(np.int64) * length + pl.j) * _NUM_KNOTS, jnp.int32),
        pairs_i=jnp.asarray(pl.i),
        pairs_j=jnp.asarray(pl.j),
        dist_weight=jnp.asarray(pl.dist_weight * pm),
        clash_weight=jnp.asarray(pl.clash_weight * pm),
        phi_log_probs=torsion_log_probs(jnp.asarray(phi_probs), config.prob_eps),
        psi_log_probs=torsion_log_probs(jnp.asarray(psi_probs), config.prob_eps),
        phi_mask=jnp.asarray(phi_mask),
        psi_mask=jnp.asarray(psi_mask),
    )


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
      {"distogram", "torsion", "clash"}: scalar energies (sums over pairs / residues).
    """
    # One gather of CA and CB together for all three pair terms: the pair gathers (and their
    # scatter-add gradients) dominate the cost of a folding step on CPU.
    atoms = coords[:, (rc.CA_IDX, rc.CB_IDX)]
    dist = norm(atoms[potential.pairs_i] - atoms[potential.pairs_j])  # [P, 2]
    d_ca, d = dist[:, 0], dist[:, 1]
    e_dist = jnp.sum(potential.dist_weight * spline_energy(potential.table_flat, potential.pair_offset, d))
    e_tors = jnp.sum(potential.phi_mask * torsion_energy(phi, potential.phi_log_probs, config.torsion_kappa))
    e_tors = e_tors + jnp.sum(potential.psi_mask * torsion_energy(psi, potential.psi_log_probs, config.torsion_kappa))
    e_clash = jnp.sum(
        potential.clash_weight
        * (jnp.square(jnp.maximum(config.clash_ca - d_ca, 0.0)) + jnp.square(jnp.maximum(config.clash_cb - d, 0.0)))
    )
    return {"distogram": e_dist, "torsion": e_tors, "clash": e_clash}


def total_energy(terms: dict[str, jnp.ndarray], config: FoldConfig) -> jnp.ndarray:
    """Config-weighted sum of the terms."""
    return (
        config.weight_distogram * terms["distogram"]
        + config.weight_torsion * terms["torsion"]
        + config.weight_clash * terms["clash"]
    )
