"""Baselines the model must beat: the validation metrics of the priors.

The priors themselves (sequence-separation distogram, residue-type torsions; ``Prior``,
``PriorBuilder``, ``fit_priors``) live on the model side, ``foldnet.model.prior``, because
inference folds relative to them too. ``evaluate_baselines`` scores a prior with exactly the
accumulator and batches the model's validation uses (``foldnet.train.validate``).
"""

from __future__ import annotations

import os
from typing import Optional

from foldnet.data.cache import H5Dataset
from foldnet.model.prior import Prior
from foldnet.train.validate import ValConfig, validation_batches, validation_metrics


def evaluate_baselines(val_h5: H5Dataset | str | os.PathLike, prior: Prior,
                       cfg: Optional[ValConfig] = None) -> dict[str, float]:
    """The validation metrics of the priors (same batches and metrics as the model's validation).

    Args:
      val_h5: the validation cache (H5Dataset or path).
      prior: from ``fit_priors``.
      cfg: which chains and how (default ``ValConfig()``).

    Returns:
      dist_nll, lr_top_l5_precision, phi_mae_deg, psi_mae_deg, torsion_mae_deg, num_chains, ...
    """
    cfg = cfg or ValConfig()
    return validation_metrics(prior.predict, validation_batches(val_h5, cfg))
