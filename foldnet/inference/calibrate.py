"""Fit the per-residue confidence calibration (``confidence.json``) of a checkpoint.

The recipe (run by ``scripts/export_pretrained.py``, or alone by ``scripts/fit_confidence.py``):
``foldnet evaluate`` on the first N single-domain chains of the **validation** split (never
test), single-sequence and profile mode, ``fold=fast``; every domain's result keeps each
residue's features (``foldnet.structure.confidence.FEATURES``) and its true lDDT-Calpha of
the folded model; ``Calibration.fit`` maps the features to lDDT-Calpha x 100. The test split
is left for ``foldnet evaluate`` to measure the result on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from foldnet.common import paths
from foldnet.structure.config import FoldConfig
from foldnet.structure.confidence import FEATURES, Calibration

log = logging.getLogger(__name__)


def fast_fold_config() -> FoldConfig:
    """``configs/fold/fast.yaml`` as a FoldConfig (the fit folds as a quick evaluation does)."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(OmegaConf.load(Path(paths.config_dir()) / "fold" / "fast.yaml"))
    d.pop("defaults", None)
    return FoldConfig.from_dict(d)


def fit_calibration(
    checkpoint: Optional[str],
    step: Optional[int] = None,
    num_domains: int = 120,
    out_dir: str = "calibration_fit",
    data_root: Optional[str] = None,
    max_length: int = 300,
) -> Calibration:
    """Evaluate ``num_domains`` validation domains and fit the calibration on their residues.

    Args:
      checkpoint: training run, checkpoint or ``pretrained:<name>`` (as ``foldnet evaluate``).
      step: checkpoint step.
      num_domains: validation domains (in the split table's order).
      out_dir: the evaluation folder (an interrupted fit resumes from it).
      data_root: data bundle (None: $FOLDNET_DATA).
      max_length: skip longer domains (keeps the fit within minutes on 2 CPU cores).

    Returns:
      The fitted Calibration; its ``info`` records the data and the fit's own scores.
    """
    from foldnet.inference.evaluate import EvaluateConfig, evaluate

    root = paths.data_root(data_root)
    cfg = EvaluateConfig(
        checkpoint=checkpoint, step=step, out_dir=out_dir, data_root=str(root), split="val",
        proteinnet=str(Path(root) / "proteinnet" / "validation.gz"), max_domains=num_domains,
        max_length=max_length, methods=["single", "profile"], fold=fast_fold_config(),
        num_example_maps=0, progress=False,
    )
    summary = evaluate(cfg)
    feats, target = [], []
    for p in sorted(Path(out_dir, "domains").glob("*.json")):
        res = json.loads(p.read_text())
        if res.get("fingerprint") != summary["settings"]["fingerprint"]:
            continue
        for r in res.get("residues", {}).values():
            f = np.asarray(r["features"], np.float64)
            if f.ndim != 2 or f.shape[1] != len(FEATURES):
                raise ValueError(f"{p}: residues carry {f.shape[-1]} features, this foldnet computes "
                                 f"{len(FEATURES)} ({list(FEATURES)}): an evaluation by an older foldnet; "
                                 f"fit in a new work dir")
            feats.append(f)
            target.append(np.asarray([np.nan if v is None else v for v in r["lddt"]], np.float64))
    if not feats:
        raise ValueError(f"fit_calibration: no validation domain was evaluated in {out_dir}")
    x, y = np.concatenate(feats), np.concatenate(target)
    info = {
        "fitted_on": "validation split (splits_recommended.tsv split=val, single_domain_chain=1)",
        "num_domains": summary["num_domains"], "num_residues": int(np.isfinite(y).sum()),
        "methods": ["single", "profile"], "fold": dataclasses.asdict(cfg.fold), "max_length": max_length,
        "checkpoint": summary["settings"]["checkpoint"],
    }
    calib = Calibration.fit(x, y, info)
    from foldnet import metrics as M

    pred = calib.predict(x)
    calib.info["fit_residue_pearson"] = round(M.pearson(pred, y), 4)
    calib.info["fit_ece"] = round(M.regression_ece(pred, y), 3)
    log.info("confidence calibration on %d residues: r=%.3f ECE=%.2f", calib.info["num_residues"],
             calib.info["fit_residue_pearson"], calib.info["fit_ece"])
    return calib
