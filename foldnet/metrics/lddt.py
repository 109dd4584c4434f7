"""lDDT-Calpha (Mariani et al. 2013, Bioinformatics 29:2722), superposition-free.

Convention of AlphaFold's ``model/lddt.py``:

* scored pairs (i, j), i != j, are those whose *reference* (native) distance
  is below the inclusion radius (15 A) with both residues present in the
  reference; the model's distances are never used to choose pairs;
* each pair scores the fraction of the thresholds 0.5, 1, 2, 4 A that its
  distance difference ``|d_model - d_native|`` is strictly below;
* global lDDT = sum of pair scores / number of pairs (every ordered pair
  counts, so it is a pair-weighted, not a residue-weighted, mean);
  per-residue lDDT of i = mean over its pairs (i, j).

Unlike AlphaFold (which adds 1e-10 to numerator and denominator), a residue
with no pair in the radius gets NaN per-residue lDDT, and a structure with no
pair at all NaN global lDDT. Scores are in [0, 1] (multiply by 100 for the
CASP convention). Numpy only.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

LDDT_INCLUSION_RADIUS = 15.0
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)


def _pair_scores(
    model: np.ndarray, native: np.ndarray, mask: Optional[np.ndarray], cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(model, np.float64)
    y = np.asarray(native, np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(f"lddt needs model and native [L, 3] of equal shape, got {x.shape}, {y.shape}")
    m = np.ones(len(y), bool) if mask is None else np.asarray(mask) > 0
    if m.shape != (len(y),):
        raise ValueError(f"mask must be [L] = [{len(y)}], got {np.shape(mask)}")
    if not (np.all(np.isfinite(x[m])) and np.all(np.isfinite(y[m]))):
        raise ValueError("non-finite coordinates among the masked-in residues")
    x = np.where(m[:, None], x, 0.0)
    y = np.where(m[:, None], y, 0.0)
    d_nat = np.linalg.norm(y[:, None] - y[None], axis=-1)
    d_mod = np.linalg.norm(x[:, None] - x[None], axis=-1)
    scored = (d_nat < cutoff) & m[:, None] & m[None, :] & ~np.eye(len(y), dtype=bool)
    diff = np.abs(d_mod - d_nat)
    score = np.mean([diff < t for t in LDDT_THRESHOLDS], axis=0)
    return scored, score


def lddt(
    model: np.ndarray,
    native: np.ndarray,
    mask: Optional[np.ndarray] = None,
    cutoff: float = LDDT_INCLUSION_RADIUS,
) -> float:
    """Global lDDT-Calpha of a model against its native.

    Args:
      model: [L, 3] model CA coordinates (Angstrom).
      native: [L, 3] native (reference) CA coordinates, same residue order.
      mask: optional [L] 0/1: residues present (in the native and the model).
      cutoff: inclusion radius on the native distances (15 A).

    Returns:
      lDDT in [0, 1]; NaN when no pair lies within the radius.

    Example:
      >>> lddt(native_ca + 0.1, native_ca)  # rigid shift
      1.0
    """
    scored, score = _pair_scores(model, native, mask, cutoff)
    n = scored.sum()
    return float((score * scored).sum() / n) if n else math.nan


def lddt_per_residue(
    model: np.ndarray,
    native: np.ndarray,
    mask: Optional[np.ndarray] = None,
    cutoff: float = LDDT_INCLUSION_RADIUS,
) -> np.ndarray:
    """Per-residue lDDT-Calpha [L]: mean score of residue i's pairs (NaN where it has none).

    Args: as ``lddt``.

    Returns:
      [L] float64 in [0, 1] or NaN (masked-out residues and residues without
      a native neighbour inside the radius).
    """
    scored, score = _pair_scores(model, native, mask, cutoff)
    n = scored.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (score * scored).sum(-1) / n, np.nan)
