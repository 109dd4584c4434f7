"""How well a predicted per-residue lDDT (pLDDT, 0-100) matches the true one (numpy only).

* ``pearson`` / ``spearman``: correlation over the finite pairs (Spearman = Pearson of
  average ranks, so ties get their mean rank; no scipy);
* ``regression_ece``: expected calibration error of a 0-100 prediction over equal-width
  bins, ``sum_b n_b / N * |mean pred_b - mean true_b|`` (the regression analogue of the
  contact ECE in ``distances.py``), and ``reliability_table`` with the per-bin means that
  the reliability diagram draws.
"""

from __future__ import annotations

import math

import numpy as np


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"need equal sizes, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def pearson(x, y) -> float:
    """Pearson r of the finite pairs; NaN with fewer than 3 pairs or a constant side."""
    x, y = _finite_pairs(x, y)
    if len(x) < 3:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y) / den) if den > 0 else math.nan


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of ``x`` with tied values sharing their mean rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    ranks = np.empty(len(x), np.float64)
    start = 0
    for k in range(1, len(x) + 1):
        if k == len(x) or sx[k] != sx[start]:
            ranks[order[start:k]] = 0.5 * (start + k - 1) + 1.0
            start = k
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation of the finite pairs (Pearson of average ranks)."""
    x, y = _finite_pairs(x, y)
    if len(x) < 3:
        return math.nan
    return pearson(average_ranks(x), average_ranks(y))


def reliability_table(pred, true, n_bins: int = 10, lo: float = 0.0, hi: float = 100.0):
    """Per-bin (count, mean prediction, mean truth) of a prediction in [lo, hi].

    Returns:
      (count [n_bins] int, mean pred [n_bins], mean true [n_bins]); empty bins are NaN.
    """
    p, t = _finite_pairs(pred, true)
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.bincount(idx, p, n_bins) / count
        mt = np.bincount(idx, t, n_bins) / count
    return count, np.where(count > 0, mp, np.nan), np.where(count > 0, mt, np.nan)


def regression_ece(pred, true, n_bins: int = 10, lo: float = 0.0, hi: float = 100.0) -> float:
    """Expected calibration error (same units as the inputs) over ``n_bins`` equal bins."""
    count, mp, mt = reliability_table(pred, true, n_bins, lo, hi)
    n = count.sum()
    if n == 0:
        return math.nan
    return float(np.nansum(count * np.abs(mp - mt)) / n)
