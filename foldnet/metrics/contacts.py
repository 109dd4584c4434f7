"""Contact-map metrics with PDNet's definitions (Adhikari 2020, Bioinformatics).

* A contact is a CB-CB distance < 8 A (``rc.CONTACT_THRESHOLD``; virtual CB for
  glycine and for files without CB, ``foldnet.common.geometry_np.cb_positions``).
* Sequence-separation ranges ``s = j - i`` (``rc.SEP_*``): short 6-11,
  medium 12-23, long >= 24; ``medium_long`` (>= 12) is PDNet's "mlr".
* Precision of the top-k predictions per protein, k in {L/5, L/2, L}: the
  candidate pairs are i < j in the range whose true distance is known; they are
  ranked by the predicted contact probability, symmetrised as
  ``(P[i, j] + P[j, i]) / 2`` as PDNet does; precision = true contacts among the
  first k candidates / number taken (fewer than k when the range has fewer
  candidates). L = number of residues with known coordinates.
* k follows PDNet's ``disteval.py``: ``round(0.2 * L)``, ``round(0.5 * L)`` and
  ``L`` with Python's ``round`` (half to even, so L = 5 gives top-L/2 = 2 and
  L = 7 gives 4), raised to at least 1.
* Ties in the predicted probability are broken as PDNet's
  ``reversed(sorted(...))`` does: among equal probabilities the pair later in
  row-major (i, j) order ranks first.
* A protein whose range holds no true contact gets NaN precision for that
  range (as PDNet) and is left out of the average over proteins.

Numpy only.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional

import numpy as np

from foldnet.common import residue_constants as rc

SEPARATION_RANGES: dict[str, tuple[int, Optional[int]]] = {
    "short": (rc.SEP_SHORT[0], rc.SEP_SHORT[1]),
    "medium": (rc.SEP_MEDIUM[0], rc.SEP_MEDIUM[1]),
    "long": (rc.SEP_LONG_MIN, None),
    "medium_long": (rc.SEP_MEDIUM[0], None),
}
TOP_K_FRACTIONS: dict[str, float] = {"L/5": 0.2, "L/2": 0.5, "L": 1.0}

# Regular distogram bins lying entirely below the contact threshold: with the
# 0.3125 A bins of rc.DISTOGRAM_EDGES that is 19 bins, i.e. P(d < 7.9375 A).
NUM_CONTACT_BINS = int(np.sum(rc.DISTOGRAM_EDGES[1:] <= rc.CONTACT_THRESHOLD))


def contact_probabilities(dist_probs: np.ndarray) -> np.ndarray:
    """Contact probability from a distogram: the summed probability of the bins below 8 A.

    The bins counted are those whose upper edge is <= ``rc.CONTACT_THRESHOLD``
    (PDNet sums the bins below 8 A the same way); with the 64 x 0.3125 A bins
    over [2, 22) these are the first ``NUM_CONTACT_BINS`` = 19 bins, so the
    value is P(d < 7.9375 A).

    Args:
      dist_probs: [..., rc.NUM_DIST_BINS] bin probabilities (softmax output).

    Returns:
      [...] contact probabilities.
    """
    p = np.asarray(dist_probs)
    if p.shape[-1] != rc.NUM_DIST_BINS:
        raise ValueError(f"distogram must have {rc.NUM_DIST_BINS} bins on the last axis, got {p.shape}")
    return p[..., :NUM_CONTACT_BINS].sum(-1)


def separation_mask(length: int, range_name: str) -> np.ndarray:
    """[L, L] bool: pairs i < j whose separation j - i lies in the named range.

    Args:
      length: number of residues L.
      range_name: one of ``SEPARATION_RANGES`` ("short", "medium", "long", "medium_long").
    """
    if range_name not in SEPARATION_RANGES:
        raise ValueError(f"unknown separation range {range_name!r}; use one of {list(SEPARATION_RANGES)}")
    lo, hi = SEPARATION_RANGES[range_name]
    sep = np.arange(length)[None, :] - np.arange(length)[:, None]
    keep = sep >= lo
    if hi is not None:
        keep &= sep <= hi
    return keep


def top_k_count(n_residues: int, fraction: float) -> int:
    """Number of predictions evaluated for top-(fraction * L): PDNet's ``round``, at least 1."""
    return max(1, int(round(fraction * n_residues)))


def _residue_mask(true_dist: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    if mask is None:
        return np.isfinite(np.diagonal(true_dist))
    m = np.asarray(mask)
    if m.shape != (true_dist.shape[0],):
        raise ValueError(f"residue mask must be [L] = [{true_dist.shape[0]}], got {m.shape}")
    return (m > 0) & np.isfinite(np.diagonal(true_dist))


def _check_square(name: str, a: np.ndarray, length: Optional[int] = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square [L, L] map, got shape {a.shape}")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} is {a.shape[0]} x {a.shape[0]}, expected {length} x {length}")
    return a


def contact_precision(
    contact_probs: np.ndarray,
    true_dist: np.ndarray,
    mask: Optional[np.ndarray] = None,
    ranges: Iterable[str] = ("short", "medium", "long"),
) -> dict[str, float]:
    """Top-L/5, L/2, L contact precision of one protein, per separation range.

    Args:
      contact_probs: [L, L] predicted contact probabilities (e.g.
        ``contact_probabilities(dist_probs)``); symmetrised internally.
      true_dist: [L, L] true CB-CB distances in A; NaN where unknown.
      mask: optional [L] 0/1, residues with coordinates (default: the finite
        diagonal of ``true_dist``). L in "top L" = number of such residues.
      ranges: names from ``SEPARATION_RANGES``.

    Returns:
      {"<range>/top_<k>": precision} with k in "L/5", "L/2", "L" (NaN when the
      range has no true contact).

    Example:
      >>> contact_precision(contact_probabilities(p), cb_dist, mask)["long/top_L/5"]
    """
    true_dist = _check_square("true_dist", true_dist)
    n = true_dist.shape[0]
    probs = _check_square("contact_probs", contact_probs, n)
    res = _residue_mask(true_dist, mask)
    n_res = int(res.sum())
    sym = 0.5 * (probs + probs.T)
    known = res[:, None] & res[None, :] & np.isfinite(true_dist)
    is_contact = true_dist < rc.CONTACT_THRESHOLD
    out: dict[str, float] = {}
    for name in ranges:
        cand = separation_mask(n, name) & known
        ii, jj = np.nonzero(cand)  # row-major order
        labels = is_contact[ii, jj]
        scores = sym[ii, jj]
        # lexsort sorts by the last key first: probability descending, then the
        # later row-major pair first (PDNet's reversed stable sort).
        order = np.lexsort((-np.arange(len(ii)), -scores))
        ranked = labels[order]
        for tag, frac in TOP_K_FRACTIONS.items():
            key = f"{name}/top_{tag}"
            if labels.sum() == 0:
                out[key] = math.nan
                continue
            k = min(top_k_count(n_res, frac), len(ranked))
            out[key] = float(ranked[:k].mean())
    return out


def mean_over_proteins(per_protein: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average per-protein metric dicts key by key, skipping NaN (PDNet's averaging).

    Args:
      per_protein: dicts as returned by ``contact_precision`` or ``distance_errors``.

    Returns:
      {key: mean of the finite values} (NaN when no protein has a finite value),
      plus "<key>/n" entries counting the proteins that entered each mean.
    """
    values: dict[str, list[float]] = {}
    for d in per_protein:
        for k, v in d.items():
            values.setdefault(k, []).append(float(v))
    out: dict[str, float] = {}
    for k, vs in values.items():
        arr = np.asarray(vs)
        ok = np.isfinite(arr)
        out[k] = float(arr[ok].mean()) if ok.any() else math.nan
        out[f"{k}/n"] = int(ok.sum())
    return out
