"""Backbone torsion metrics: circular MAE and circular correlation of phi / psi.

Angles come in radians (the batch contract's ``torsions`` [..., 3] = phi, psi,
omega) and errors are reported in degrees.

* Circular absolute error: ``min(|a - b|, 360 - |a - b|)`` in degrees after
  wrapping the difference into [0, 360), so 179 vs -179 is 2 degrees.
* Circular correlation: the Jammalamadaka & SenGupta (1988) coefficient
  ``r = sum sin(a - abar) sin(b - bbar) / sqrt(sum sin^2(a - abar) sum sin^2(b - bbar))``
  with abar, bbar the circular means ``atan2(sum sin, sum cos)`` (the
  estimator of Jammalamadaka & SenGupta, Topics in Circular Statistics, 2001,
  eq. 8.2.2; the same as astropy's ``circcorrcoef``). It is 1 for b = a + c,
  -1 for b = -a + c, and NaN when either sample has zero circular spread.
* Expected angle of a torsion-bin distribution: the circular mean
  ``atan2(sum p sin c, sum p cos c)`` over ``rc.TORSION_CENTERS_RAD``.

Numpy only.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from foldnet.common import residue_constants as rc

TORSION_NAMES = ("phi", "psi", "omega")


def _masked_pair(
    pred: np.ndarray, true: np.ndarray, mask: Optional[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred, np.float64)
    b = np.asarray(true, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"predicted angles {a.shape} and true angles {b.shape} differ in shape")
    if mask is None:
        keep = np.isfinite(a) & np.isfinite(b)
    else:
        m = np.asarray(mask)
        if m.shape != a.shape:
            raise ValueError(f"mask shape {m.shape} differs from angle shape {a.shape}")
        keep = m > 0
        if not (np.all(np.isfinite(a[keep])) and np.all(np.isfinite(b[keep]))):
            raise ValueError("non-finite angles among the masked-in entries")
    return a[keep], b[keep]


def circular_abs_error_deg(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Elementwise circular absolute difference in degrees, in [0, 180], of radian angles."""
    diff = np.abs(np.rad2deg(np.asarray(pred, np.float64) - np.asarray(true, np.float64))) % 360.0
    return np.minimum(diff, 360.0 - diff)


def circular_mae(pred: np.ndarray, true: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean circular absolute error in degrees.

    Args:
      pred: predicted angles in radians, any shape.
      true: true angles in radians, same shape.
      mask: optional 0/1 of the same shape (default: entries finite in both).

    Returns:
      mean of ``min(|d|, 360 - |d|)`` in degrees; NaN when nothing is masked in.
    """
    a, b = _masked_pair(pred, true, mask)
    if a.size == 0:
        return math.nan
    return float(np.mean(circular_abs_error_deg(a, b)))


def circular_mean(angles: np.ndarray, axis: Optional[int] = None) -> np.ndarray:
    """Circular mean ``atan2(sum sin, sum cos)`` of radian angles."""
    a = np.asarray(angles, np.float64)
    return np.arctan2(np.sin(a).sum(axis=axis), np.cos(a).sum(axis=axis))


def circular_correlation(pred: np.ndarray, true: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Jammalamadaka-SenGupta circular correlation coefficient of two angle samples.

    Args:
      pred: predicted angles in radians.
      true: true angles in radians, same shape.
      mask: optional 0/1 of the same shape.

    Returns:
      r in [-1, 1]; NaN for fewer than 2 samples or zero circular spread.
    """
    a, b = _masked_pair(pred, true, mask)
    if a.size < 2:
        return math.nan
    sa = np.sin(a - circular_mean(a))
    sb = np.sin(b - circular_mean(b))
    den = math.sqrt(float(np.sum(sa**2) * np.sum(sb**2)))
    if den < 1e-12:
        return math.nan
    return float(np.sum(sa * sb) / den)


def expected_angle(bin_probs: np.ndarray) -> np.ndarray:
    """Circular mean angle (radians, in (-pi, pi]) of torsion-bin probabilities.

    Args:
      bin_probs: [..., rc.NUM_TORSION_BINS] probabilities over ``rc.TORSION_CENTERS_RAD``.
    """
    p = np.asarray(bin_probs, np.float64)
    if p.shape[-1] != rc.NUM_TORSION_BINS:
        raise ValueError(f"torsion distribution must have {rc.NUM_TORSION_BINS} bins, got {p.shape}")
    c = rc.TORSION_CENTERS_RAD.astype(np.float64)
    return np.arctan2(p @ np.sin(c), p @ np.cos(c))


def torsion_metrics(
    pred: np.ndarray, true: np.ndarray, mask: np.ndarray, names: tuple[str, ...] = ("phi", "psi")
) -> dict[str, float]:
    """Circular MAE (degrees) and circular correlation per backbone angle.

    Args:
      pred: [L, 3] (or [..., 3]) predicted phi, psi, omega in radians.
      true: same shape, true angles (the batch's ``torsions``).
      mask: same shape 0/1 (the batch's ``torsion_mask``).
      names: which of "phi", "psi", "omega" to report.

    Returns:
      {"phi/mae_deg": ..., "phi/circ_corr": ..., "psi/mae_deg": ..., ...}.
    """
    pred = np.asarray(pred)
    if pred.shape[-1] != 3:
        raise ValueError(f"torsions must be [..., 3] (phi, psi, omega), got {pred.shape}")
    true = np.asarray(true)
    mask = np.asarray(mask)
    out = {}
    for name in names:
        k = TORSION_NAMES.index(name)
        out[f"{name}/mae_deg"] = circular_mae(pred[..., k], true[..., k], mask[..., k])
        out[f"{name}/circ_corr"] = circular_correlation(pred[..., k], true[..., k], mask[..., k])
    return out
