"""Per-residue confidence of a predicted structure, read off the distogram (numpy).

For residue pair (i, j) the sharpness of the predicted distance distribution is
``c_ij = 1 - H(p_ij) / log(65)`` (1 = all mass in one bin, 0 = uniform). Residue i's
confidence is the mean of ``c_ij`` over partners ``|i-j| >= min_separation``, each partner
weighted by the predicted probability that it lies within ``contact_cutoff`` (12 A):
distant pairs are trivially sharp (all mass in the >= 22 A bin) and say little about
where residue i sits, while its predicted neighbours pin it down. A residue with no
predicted neighbour (total weight < 1e-3) falls back to the unweighted mean. Scaled to
0-100 for the PDB B-factor column, like pLDDT.
"""

from __future__ import annotations

import numpy as np

from foldnet.common import residue_constants as rc


def residue_confidence(
    dist_probs: np.ndarray, min_separation: int = 3, contact_cutoff: float = 12.0
) -> tuple[np.ndarray, float]:
    """Per-residue confidence (0-100) and its mean.

    Args:
      dist_probs: [L, L, 65] predicted distogram probabilities.
      min_separation: partners closer in sequence are ignored.
      contact_cutoff: Angstrom; a partner's weight is P(d_ij < cutoff) (bins whose upper
        edge is <= cutoff).
    Returns:
      (confidence [L] float32 in [0, 100], summary = mean over residues).
    """
    p = np.asarray(dist_probs, np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[1] or p.shape[2] != rc.NUM_DIST_BINS:
        raise ValueError(f"residue_confidence: dist_probs must be [L, L, {rc.NUM_DIST_BINS}], got {p.shape}")
    length = p.shape[0]
    p = 0.5 * (p + p.transpose(1, 0, 2))
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-12)
    entropy = -np.sum(p * np.log(np.maximum(p, 1e-12)), axis=-1)
    sharp = 1.0 - entropy / np.log(rc.NUM_DIST_BINS)
    upper = rc.DISTOGRAM_EDGES[1:]
    near_bins = np.concatenate([upper <= contact_cutoff, [False]])
    w = p[..., near_bins].sum(-1)
    idx = np.arange(length)
    sep_ok = np.abs(idx[:, None] - idx[None, :]) >= min_separation
    w = np.where(sep_ok, w, 0.0)
    wsum = w.sum(1)
    weighted = (w * sharp).sum(1) / np.maximum(wsum, 1e-12)
    n_ok = sep_ok.sum(1)
    plain = np.where(sep_ok, sharp, 0.0).sum(1) / np.maximum(n_ok, 1)
    conf = np.where(wsum >= 1e-3, weighted, plain)
    conf = np.clip(100.0 * conf, 0.0, 100.0).astype(np.float32)
    return conf, float(conf.mean()) if length else 0.0
