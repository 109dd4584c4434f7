"""Distogram metrics: predicted distances, their MAE, the distogram NLL, calibration.

* Expected distance: ``sum_k p_k c_k`` over ``rc.DISTOGRAM_CENTERS`` (bin
  midpoints; the overflow bin counts as 22.3125 A). Argmax distance: the
  centre of the most probable bin (PDNet's "mean distance of the most
  confident bin").
* MAE (PDNet's ``calculate_mae``): |predicted - true| over pairs i < j in a
  separation range whose true CB-CB distance is below 8 A or below 12 A; the
  prediction is symmetrised as ``(D[i, j] + D[j, i]) / 2``.
* Distogram NLL: mean of ``-log p(true bin)`` over ordered pairs i != j with
  both residues known and ``|i - j| >= min_separation`` (the training loss's
  pair set); probabilities are floored at 1e-12 so an impossible bin costs
  27.6 nats instead of infinity.
* Calibration: expected calibration error (Naeini et al. 2015; Guo et al.
  2017) of contact probabilities with 10 equal-width bins on [0, 1]:
  ``ECE = sum_b n_b / N * |mean confidence_b - contact frequency_b|``; a
  probability of exactly 1 falls in the last bin.

Numpy only.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.metrics.contacts import _check_square, _residue_mask, contact_probabilities, separation_mask

NLL_PROB_FLOOR = 1e-12
MAE_DISTANCE_CUTOFFS = (8.0, 12.0)


def _check_distogram(dist_probs: np.ndarray) -> np.ndarray:
    p = np.asarray(dist_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[1] or p.shape[2] != rc.NUM_DIST_BINS:
        raise ValueError(f"distogram must be [L, L, {rc.NUM_DIST_BINS}], got shape {p.shape}")
    return p


def expected_distance(dist_probs: np.ndarray) -> np.ndarray:
    """Probability-weighted mean distance over ``rc.DISTOGRAM_CENTERS``.

    Args:
      dist_probs: [..., rc.NUM_DIST_BINS] bin probabilities.

    Returns:
      [...] expected distances in A.
    """
    p = np.asarray(dist_probs)
    if p.shape[-1] != rc.NUM_DIST_BINS:
        raise ValueError(f"distogram must have {rc.NUM_DIST_BINS} bins on the last axis, got {p.shape}")
    return p @ rc.DISTOGRAM_CENTERS.astype(p.dtype if p.dtype.kind == "f" else np.float64)


def argmax_distance(dist_probs: np.ndarray) -> np.ndarray:
    """Centre (A) of the most probable bin, [...] from [..., rc.NUM_DIST_BINS]."""
    p = np.asarray(dist_probs)
    if p.shape[-1] != rc.NUM_DIST_BINS:
        raise ValueError(f"distogram must have {rc.NUM_DIST_BINS} bins on the last axis, got {p.shape}")
    return rc.DISTOGRAM_CENTERS[np.argmax(p, axis=-1)]


def distance_mae(
    pred_dist: np.ndarray,
    true_dist: np.ndarray,
    mask: Optional[np.ndarray] = None,
    ranges: Iterable[str] = ("short", "medium", "long"),
    cutoffs: Iterable[float] = MAE_DISTANCE_CUTOFFS,
) -> dict[str, float]:
    """MAE of predicted distances on pairs truly closer than each cut-off, per range.

    Args:
      pred_dist: [L, L] predicted distances in A (symmetrised internally).
      true_dist: [L, L] true CB-CB distances; NaN where unknown.
      mask: optional [L] 0/1 residues with coordinates.
      ranges: names from ``foldnet.metrics.contacts.SEPARATION_RANGES``.
      cutoffs: true-distance cut-offs (strict ``<``).

    Returns:
      {"<range>/d<cut>": MAE in A} (NaN when no pair qualifies), e.g. "long/d8".
    """
    true_dist = _check_square("true_dist", true_dist)
    n = true_dist.shape[0]
    pred = _check_square("pred_dist", pred_dist, n)
    res = _residue_mask(true_dist, mask)
    known = res[:, None] & res[None, :] & np.isfinite(true_dist)
    sym = 0.5 * (pred + pred.T)
    err = np.abs(sym - np.where(known, true_dist, 0.0))
    out: dict[str, float] = {}
    for name in ranges:
        sel = separation_mask(n, name) & known
        for cut in cutoffs:
            s = sel & (np.where(known, true_dist, np.inf) < cut)
            out[f"{name}/d{cut:g}"] = float(err[s].mean()) if s.any() else math.nan
    return out


def distance_errors(
    dist_probs: np.ndarray,
    true_dist: np.ndarray,
    mask: Optional[np.ndarray] = None,
    ranges: Iterable[str] = ("short", "medium", "long"),
) -> dict[str, float]:
    """MAE of the expected and of the argmax distance of a distogram (see ``distance_mae``).

    Returns:
      {"expected/<range>/d8": ..., "argmax/<range>/d12": ..., ...}.
    """
    p = _check_distogram(dist_probs)
    ranges = tuple(ranges)
    out = {}
    for tag, d in (("expected", expected_distance(p)), ("argmax", argmax_distance(p))):
        for k, v in distance_mae(d, true_dist, mask, ranges).items():
            out[f"{tag}/{k}"] = v
    return out


def distogram_nll(
    dist_probs: np.ndarray,
    true_dist: np.ndarray,
    mask: Optional[np.ndarray] = None,
    min_separation: int = 0,
) -> float:
    """Mean negative log-likelihood (nats) of the true distance bins.

    Args:
      dist_probs: [L, L, rc.NUM_DIST_BINS] predicted bin probabilities.
      true_dist: [L, L] true CB-CB distances in A; NaN where unknown.
      mask: optional [L] 0/1 residues with coordinates.
      min_separation: only pairs with |i - j| >= this (0 keeps every i != j).

    Returns:
      mean over ordered pairs i != j of -log max(p[i, j, bin(d_ij)], 1e-12);
      NaN when no pair qualifies.
    """
    p = _check_distogram(dist_probs)
    true_dist = _check_square("true_dist", true_dist, p.shape[0])
    n = p.shape[0]
    res = _residue_mask(true_dist, mask)
    sep = np.abs(np.arange(n)[None, :] - np.arange(n)[:, None])
    sel = res[:, None] & res[None, :] & np.isfinite(true_dist) & (sep >= max(min_separation, 1))
    if not sel.any():
        return math.nan
    bins = rc.distance_to_bin(true_dist[sel])
    pt = p[sel][np.arange(len(bins)), bins]
    return float(np.mean(-np.log(np.maximum(pt, NLL_PROB_FLOOR))))


def contact_pairs(
    contact_probs: np.ndarray,
    true_dist: np.ndarray,
    mask: Optional[np.ndarray] = None,
    min_separation: int = rc.SEP_SHORT[0],
) -> tuple[np.ndarray, np.ndarray]:
    """Flat (probability, is-contact) arrays of one protein's pairs, for pooled calibration.

    Pairs are i < j with both residues known and j - i >= ``min_separation``.

    Returns:
      (probabilities [P] float64, labels [P] bool).
    """
    true_dist = _check_square("true_dist", true_dist)
    n = true_dist.shape[0]
    probs = _check_square("contact_probs", contact_probs, n)
    res = _residue_mask(true_dist, mask)
    sep = np.arange(n)[None, :] - np.arange(n)[:, None]
    sel = res[:, None] & res[None, :] & np.isfinite(true_dist) & (sep >= max(min_separation, 1))
    return probs[sel], true_dist[sel] < rc.CONTACT_THRESHOLD


def calibration_table(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability table over ``n_bins`` equal-width probability bins on [0, 1].

    Returns:
      (count [n_bins] int, mean confidence [n_bins], positive frequency [n_bins]);
      empty bins have NaN confidence and frequency.
    """
    p = np.asarray(probabilities, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(np.float64)
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} differ")
    if p.size and (p.min() < 0.0 or p.max() > 1.0 or not np.all(np.isfinite(p))):
        raise ValueError("probabilities must lie in [0, 1]")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(b, weights=p, minlength=n_bins) / count
        freq = np.bincount(b, weights=y, minlength=n_bins) / count
    return count, conf, freq


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum_b n_b / N |conf_b - freq_b| over equal-width bins (NaN for no samples).

    Args:
      probabilities: [P] predicted probabilities of the positive class.
      labels: [P] 0/1 or bool outcomes.
      n_bins: number of equal-width bins on [0, 1] (10 by default).
    """
    count, conf, freq = calibration_table(probabilities, labels, n_bins)
    total = count.sum()
    if total == 0:
        return math.nan
    ok = count > 0
    return float(np.sum(count[ok] / total * np.abs(conf[ok] - freq[ok])))


def contact_calibration_error(
    dist_probs_list: Iterable[np.ndarray],
    true_dist_list: Iterable[np.ndarray],
    mask_list: Optional[Iterable[Optional[np.ndarray]]] = None,
    min_separation: int = rc.SEP_SHORT[0],
    n_bins: int = 10,
) -> float:
    """ECE of distogram contact probabilities pooled over the pairs of several proteins.

    Args:
      dist_probs_list: per protein [L, L, rc.NUM_DIST_BINS] distograms.
      true_dist_list: per protein [L, L] true CB-CB distances (NaN unknown).
      mask_list: per protein optional [L] residue masks (None: all from the diagonal).
      min_separation: pairs with j - i >= this (default 6, the short-range start).
      n_bins: calibration bins.
    """
    probs = list(dist_probs_list)
    dists = list(true_dist_list)
    masks = [None] * len(dists) if mask_list is None else list(mask_list)
    if not len(probs) == len(dists) == len(masks):
        raise ValueError(
            f"got {len(probs)} distograms, {len(dists)} distance maps and {len(masks)} masks"
        )
    ps, ys = [], []
    for p, d, m in zip(probs, dists, masks):
        cp, lab = contact_pairs(contact_probabilities(_check_distogram(p)), d, m, min_separation)
        ps.append(cp)
        ys.append(lab)
    if not ps:
        return math.nan
    return expected_calibration_error(np.concatenate(ps), np.concatenate(ys), n_bins)
