"""Evaluation metrics (numpy only, never imports jax).

* ``contacts``: contact probabilities from a distogram, PDNet top-L/k precision.
* ``distances``: expected / argmax distances, MAE, distogram NLL, calibration (ECE).
* ``torsions``: circular MAE and circular correlation of phi / psi.
* ``superposition``: Kabsch RMSD, TM-score, GDT_TS, GDT_HA (TMscore-program search).
* ``lddt``: lDDT-Calpha, global and per residue.
* ``report``: per-protein report dicts from the loader's padded batches.

See docs/metrics.md for the definitions and the agreement with the TMscore program.
"""

from foldnet.metrics.contacts import (
    NUM_CONTACT_BINS,
    SEPARATION_RANGES,
    contact_precision,
    contact_probabilities,
    mean_over_proteins,
    separation_mask,
    top_k_count,
)
from foldnet.metrics.distances import (
    argmax_distance,
    calibration_table,
    contact_calibration_error,
    contact_pairs,
    distance_errors,
    distance_mae,
    distogram_nll,
    expected_calibration_error,
    expected_distance,
)
from foldnet.metrics.lddt import lddt, lddt_per_residue
from foldnet.metrics.calibration import pearson, regression_ece, reliability_table, spearman
from foldnet.metrics.batch_report import batch_reports, distogram_report
from foldnet.metrics.superposition import (
    StructureScores,
    gdt_ha,
    gdt_ts,
    kabsch,
    rmsd,
    structure_scores,
    superpose,
    tm_d0,
    tm_score,
)
from foldnet.metrics.torsions import (
    circular_abs_error_deg,
    circular_correlation,
    circular_mae,
    circular_mean,
    expected_angle,
    torsion_metrics,
)

__all__ = [
    "pearson",
    "regression_ece",
    "reliability_table",
    "spearman",
    "NUM_CONTACT_BINS",
    "SEPARATION_RANGES",
    "StructureScores",
    "argmax_distance",
    "batch_reports",
    "calibration_table",
    "circular_abs_error_deg",
    "circular_correlation",
    "circular_mae",
    "circular_mean",
    "contact_calibration_error",
    "contact_pairs",
    "contact_precision",
    "contact_probabilities",
    "distance_errors",
    "distance_mae",
    "distogram_report",
    "distogram_nll",
    "expected_angle",
    "expected_calibration_error",
    "expected_distance",
    "gdt_ha",
    "gdt_ts",
    "kabsch",
    "lddt",
    "lddt_per_residue",
    "mean_over_proteins",
    "rmsd",
    "separation_mask",
    "structure_scores",
    "superpose",
    "tm_d0",
    "tm_score",
    "top_k_count",
    "torsion_metrics",
]
