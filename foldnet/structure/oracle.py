"""Distributions a perfect predictor would output for a known structure (numpy).

Used to test and benchmark folding independently of the network: the native CB-CB
distances and phi/psi angles turned into smoothed bin probabilities with the same bins
the model predicts (``rc.DISTOGRAM_EDGES``, ``rc.TORSION_CENTERS_RAD``).
"""

from __future__ import annotations

import math

import numpy as np

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def distogram_from_distances(dist: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian-smoothed distogram: P(bin) of N(d, sigma^2), integrated over each bin.

    The first bin extends to -inf and the overflow bin to +inf, so rows sum to 1;
    ``sigma = 0`` gives the one-hot bin of ``d``.

    Args:
      dist: [L, L] distances in Angstrom.
      sigma: smoothing width in Angstrom.
    Returns:
      [L, L, 65] float32 probabilities.
    """
    d = np.asarray(dist, np.float64)
    if sigma <= 0:
        return np.eye(rc.NUM_DIST_BINS, dtype=np.float32)[rc.distance_to_bin(d)]
    inner = rc.DISTOGRAM_EDGES[1:-1]  # 63 inner edges between the 64 regular bins ... and overflow
    edges = np.concatenate([inner, [rc.DISTOGRAM_MAX]])  # 64 boundaries -> 65 bins
    cdf = _normal_cdf((edges[None, None, :] - d[..., None]) / sigma)
    cdf = np.concatenate([np.zeros(d.shape + (1,)), cdf, np.ones(d.shape + (1,))], axis=-1)
    return np.diff(cdf, axis=-1).astype(np.float32)


def torsion_bins_from_angles(angles: np.ndarray, mask: np.ndarray, sigma_deg: float = 10.0) -> np.ndarray:
    """Wrapped-Gaussian bin probabilities of angles; uniform where ``mask`` is 0.

    Args:
      angles: [L] radians.
      mask: [L] 1 where the angle is defined.
      sigma_deg: smoothing width in degrees (0 = one-hot).
    Returns:
      [L, 36] float32 probabilities.
    """
    a = np.nan_to_num(np.asarray(angles, np.float64))
    L = a.shape[0]
    if sigma_deg <= 0:
        p = np.eye(rc.NUM_TORSION_BINS)[rc.angle_to_bin(a)]
    else:
        delta = np.angle(np.exp(1j * (rc.TORSION_CENTERS_RAD[None, :] - a[:, None])))
        logit = -0.5 * (delta / math.radians(sigma_deg)) ** 2
        p = np.exp(logit - logit.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    uniform = np.full((L, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS)
    return np.where(np.asarray(mask)[:, None] > 0, p, uniform).astype(np.float32)


def true_orientations(protein: Protein) -> dict[str, np.ndarray]:
    """One-hot trRosetta orientation bins of a structure (the orientation head's targets).

    omega_ij = dihedral(CA_i, CB_i, CB_j, CA_j), theta_ij = dihedral(N_i, CA_i, CB_i, CB_j),
    phi_ij = angle(CA_i, CB_i, CB_j) with real CB where present, else virtual (as
    ``foldnet.model.heads.orientation_targets`` on a ``with_virtual_cb`` chain); pairs with
    CB-CB >= ``rc.ORIENTATION_MAX_DIST``, the diagonal and pairs with a missing atom get the
    last ("no contact") bin.

    Args:
      protein: chain with N, CA, C (CB real or virtual).
    Returns:
      {"omega": [L, L, 25], "theta": [L, L, 25], "phi": [L, L, 13]} float32 one-hot.
    """
    x = protein.atom_positions.astype(np.float64)
    cb, cb_mask = geometry_np.cb_positions(protein)
    cb = cb.astype(np.float64)
    n, ca = x[:, rc.N_IDX], x[:, rc.CA_IDX]
    m = protein.atom_mask
    have = (m[:, rc.N_IDX] > 0) & (m[:, rc.CA_IDX] > 0) & (cb_mask > 0)
    L = len(protein)
    pair = have[:, None] & have[None, :] & ~np.eye(L, dtype=bool)
    i_, j_ = (slice(None), None), (None, slice(None))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.linalg.norm(cb[j_] - cb[i_], axis=-1)
        omega = geometry_np.dihedral(ca[i_], cb[i_], cb[j_], ca[j_])
        theta = geometry_np.dihedral(n[i_], ca[i_], cb[i_], cb[j_])
        u, v = ca[i_] - cb[i_], cb[j_] - cb[i_]
        cos_phi = np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
        phi = np.arccos(np.clip(np.nan_to_num(cos_phi), -1.0, 1.0))
    contact = pair & (d < rc.ORIENTATION_MAX_DIST)
    width = 2.0 * np.pi / rc.ORIENTATION_DIHEDRAL_BINS

    def dihedral_bin(a):
        return np.clip(np.floor((np.nan_to_num(a) + np.pi) / width), 0, rc.ORIENTATION_DIHEDRAL_BINS - 1).astype(int)

    bins = {
        "omega": np.where(contact, dihedral_bin(omega), rc.ORIENTATION_DIHEDRAL_BINS),
        "theta": np.where(contact, dihedral_bin(theta), rc.ORIENTATION_DIHEDRAL_BINS),
        "phi": np.where(contact, np.clip(np.floor(phi / width), 0, rc.ORIENTATION_PLANAR_BINS - 1).astype(int),
                        rc.ORIENTATION_PLANAR_BINS),
    }
    return {k: np.eye(rc.ORIENTATION_NUM_BINS[k], dtype=np.float32)[b] for k, b in bins.items()}


def true_distributions(
    protein: Protein, dist_sigma: float = 1.0, torsion_sigma_deg: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed native distogram and phi/psi bin distributions of a structure.

    Args:
      protein: chain with N, CA, C (CB real or virtual).
      dist_sigma: distogram smoothing in Angstrom.
      torsion_sigma_deg: torsion smoothing in degrees.
    Returns:
      (dist_probs [L, L, 65], phi_probs [L, 36], psi_probs [L, 36]).
    """
    dist, _ = geometry_np.cb_distance_map(protein)
    tors, tmask = geometry_np.backbone_torsions(protein)
    return (
        distogram_from_distances(dist, dist_sigma),
        torsion_bins_from_angles(tors[:, 0], tmask[:, 0], torsion_sigma_deg),
        torsion_bins_from_angles(tors[:, 1], tmask[:, 1], torsion_sigma_deg),
    )
