"""Per-protein metric reports from the loader's batch contract (docs/design.md).

The metric functions take one protein's arrays; these helpers slice a padded
batch into proteins and gather the distogram and torsion metrics in one flat
dict per protein, ready for ``mean_over_proteins``. Numpy only.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from foldnet.metrics.contacts import contact_precision, contact_probabilities
from foldnet.metrics.distances import distance_errors, distogram_nll
from foldnet.metrics.torsions import torsion_metrics

REPORT_RANGES = ("short", "medium", "long")


def distogram_report(
    dist_probs: np.ndarray,
    true_dist: np.ndarray,
    mask: Optional[np.ndarray] = None,
    nll_min_separation: int = 1,
) -> dict[str, float]:
    """Contact precision, distance MAE and NLL of one protein's distogram.

    Args:
      dist_probs: [L, L, rc.NUM_DIST_BINS] predicted bin probabilities.
      true_dist: [L, L] true CB-CB distances (NaN where unknown).
      mask: optional [L] 0/1 residues with coordinates.
      nll_min_separation: minimum |i - j| of the pairs in the NLL.

    Returns:
      {"precision/<range>/top_<k>", "mae/expected/<range>/d8", ..., "nll"}.
    """
    out: dict[str, float] = {}
    for k, v in contact_precision(contact_probabilities(dist_probs), true_dist, mask, REPORT_RANGES).items():
        out[f"precision/{k}"] = v
    for k, v in distance_errors(dist_probs, true_dist, mask, REPORT_RANGES).items():
        out[f"mae/{k}"] = v
    out["nll"] = distogram_nll(dist_probs, true_dist, mask, nll_min_separation)
    return out


def batch_reports(
    dist_probs: np.ndarray,
    batch: Mapping[str, np.ndarray],
    pred_torsions: Optional[np.ndarray] = None,
) -> list[dict[str, float]]:
    """One report per example of a padded batch (keys of the batch contract).

    Each example keeps its real residues (``seq_mask`` > 0); residues without
    a CB (zero diagonal of ``pair_mask``) count as unknown, so "L" in top-L is
    the number of crop residues with coordinates.

    Args:
      dist_probs: [B, N, N, rc.NUM_DIST_BINS] predicted distogram probabilities.
      batch: dict with ``seq_mask`` [B, N], ``cb_dist`` [B, N, N], ``pair_mask``
        [B, N, N] and, when ``pred_torsions`` is given, ``torsions`` and
        ``torsion_mask`` [B, N, 3].
      pred_torsions: optional [B, N, 3] predicted phi, psi, omega in radians.

    Returns:
      list of B dicts (``distogram_report`` keys, plus ``torsion_metrics`` keys
      prefixed "torsion/" when torsions are given).
    """
    probs = np.asarray(dist_probs)
    seq_mask = np.asarray(batch["seq_mask"])
    if probs.ndim != 4 or probs.shape[:3] != np.shape(batch["cb_dist"]):
        raise ValueError(
            f"dist_probs {probs.shape} does not match cb_dist {np.shape(batch['cb_dist'])} as [B, N, N, bins]"
        )
    reports = []
    for b in range(probs.shape[0]):
        keep = seq_mask[b] > 0
        pair = np.asarray(batch["pair_mask"][b])[np.ix_(keep, keep)]
        dist = np.asarray(batch["cb_dist"][b], np.float64)[np.ix_(keep, keep)]
        rep = distogram_report(probs[b][np.ix_(keep, keep)], dist, np.diagonal(pair))
        if pred_torsions is not None:
            tors = torsion_metrics(
                np.asarray(pred_torsions[b])[keep],
                np.asarray(batch["torsions"][b])[keep],
                np.asarray(batch["torsion_mask"][b])[keep],
            )
            rep.update({f"torsion/{k}": v for k, v in tors.items()})
        reports.append(rep)
    return reports
