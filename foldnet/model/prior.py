"""Sequence-separation / residue-type priors: the background model of a distogram.

A ``Prior`` is the model-side object both training (its baselines, ``foldnet.train.baselines``)
and inference (folding relative to the prior, the prior baseline of ``foldnet evaluate``) use;
``PriorBuilder`` accumulates its statistics chain by chain. numpy only.

* Sequence-separation prior (distogram): p(bin | s) = training-set frequency of
  each CB-CB distance bin among residue pairs at separation s = |i - j|, for
  s = 1 .. max_separation - 1; all pairs with s >= max_separation share one
  pooled distribution (few pairs per separation out there, and the distribution
  barely changes). Add-one (Laplace) smoothing keeps every bin's probability
  positive, so the NLL of the prior is finite. This is the "background"
  distogram of AlphaFold-CASP13 (Senior et al. 2020, the reference distogram
  conditioned only on separation) without the residue-type terms.
* Residue-type torsion prior: for each amino-acid type, the circular mean of
  the training phi and psi angles (atan2 of mean sin, mean cos); the unknown
  type (and any type absent from training) gets the all-residue circular mean.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.common.atomic import atomic_path
from foldnet.data.cache import H5Dataset
from foldnet.data.loader import full_length_batches


@dataclasses.dataclass
class Prior:
    """Fitted baselines.

    Attributes:
      dist_probs: [max_separation + 1, 65] p(bin | s); row s for s < max_separation,
        row max_separation pooled over s >= max_separation; row 0 (the diagonal) is uniform.
      pair_counts: [max_separation + 1, 65] raw counts behind ``dist_probs``.
      torsion_mean: [21, 2] circular mean phi, psi (radians) per residue type (20 = unknown).
      torsion_counts: [21, 2] number of defined angles per type.
      num_chains: training chains used.
    """

    dist_probs: np.ndarray
    pair_counts: np.ndarray
    torsion_mean: np.ndarray
    torsion_counts: np.ndarray
    num_chains: int

    @property
    def max_separation(self) -> int:
        return self.dist_probs.shape[0] - 1

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Prior predictions for a loader batch.

        Args:
          batch: needs residue_index [B, N] and aatype [B, N].

        Returns:
          {"dist_probs": [B, N, N, 65] f32, "phi": [B, N], "psi": [B, N] radians}.
        """
        ri = np.asarray(batch["residue_index"], np.int64)
        sep = np.minimum(np.abs(ri[:, :, None] - ri[:, None, :]), self.max_separation)
        aa = np.clip(np.asarray(batch["aatype"], np.int64), 0, rc.NUM_RESTYPES - 1)
        return {
            "dist_probs": self.dist_probs[sep].astype(np.float32),
            "phi": self.torsion_mean[aa, 0],
            "psi": self.torsion_mean[aa, 1],
        }

    def predict_chain(self, aatype: np.ndarray) -> dict[str, np.ndarray]:
        """``predict`` for one whole chain (residues 0..L-1), batch axis dropped.

        Args:
          aatype: [L] residue types.

        Returns:
          {"dist_probs": [L, L, 65] f32, "phi": [L], "psi": [L] radians}.
        """
        L = len(aatype)
        out = self.predict({"residue_index": np.arange(L)[None], "aatype": np.asarray(aatype)[None]})
        return {k: v[0] for k, v in out.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the prior as .npz (atomically)."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Prior":
        """Read a prior written by ``save``."""
        with np.load(path) as z:
            return cls(
                dist_probs=z["dist_probs"], pair_counts=z["pair_counts"], torsion_mean=z["torsion_mean"],
                torsion_counts=z["torsion_counts"], num_chains=int(z["num_chains"]),
            )


class PriorBuilder:
    """Accumulates prior statistics chain by chain (so they can be built from any source).

    Args:
      max_separation: separations >= this are pooled.
    """

    def __init__(self, max_separation: int = 64):
        if max_separation < 1:
            raise ValueError(f"max_separation must be >= 1, got {max_separation}")
        self.max_separation = int(max_separation)
        self.pair_counts = np.zeros((self.max_separation + 1, rc.NUM_DIST_BINS), np.int64)
        self.sin = np.zeros((rc.NUM_RESTYPES, 2), np.float64)
        self.cos = np.zeros((rc.NUM_RESTYPES, 2), np.float64)
        self.counts = np.zeros((rc.NUM_RESTYPES, 2), np.int64)
        self.num_chains = 0

    def add_chain(
        self,
        aatype: np.ndarray,
        cb_dist: np.ndarray,
        pair_mask: np.ndarray,
        torsions: np.ndarray,
        torsion_mask: np.ndarray,
        residue_index: Optional[np.ndarray] = None,
    ) -> None:
        """Count one chain.

        Args:
          aatype: [L] residue types.
          cb_dist: [L, L] CB-CB distances (A).
          pair_mask: [L, L] 1 where known.
          torsions: [L, 3] phi, psi, omega (radians).
          torsion_mask: [L, 3] 1 where defined.
          residue_index: [L] positions (default arange(L)).
        """
        L = len(aatype)
        ri = np.arange(L) if residue_index is None else np.asarray(residue_index, np.int64)
        i, j = np.triu_indices(L, k=1)  # each unordered pair once
        keep = pair_mask[i, j] > 0
        i, j = i[keep], j[keep]
        sep = np.minimum(np.abs(ri[j] - ri[i]), self.max_separation)
        bins = rc.distance_to_bin(cb_dist[i, j])
        K = rc.NUM_DIST_BINS
        self.pair_counts += np.bincount(sep * K + bins, minlength=self.pair_counts.size).reshape(
            self.pair_counts.shape
        )
        aa = np.clip(np.asarray(aatype, np.int64), 0, rc.NUM_RESTYPES - 1)
        for k in range(2):
            m = torsion_mask[:, k] > 0
            a = torsions[m, k].astype(np.float64)
            np.add.at(self.sin[:, k], aa[m], np.sin(a))
            np.add.at(self.cos[:, k], aa[m], np.cos(a))
            np.add.at(self.counts[:, k], aa[m], 1)
        self.num_chains += 1

    def build(self) -> Prior:
        """Normalise the counts into a Prior."""
        smoothed = self.pair_counts + 1.0
        dist_probs = smoothed / smoothed.sum(axis=1, keepdims=True)
        dist_probs[0] = 1.0 / rc.NUM_DIST_BINS  # the diagonal is never scored
        global_mean = np.arctan2(self.sin.sum(0), self.cos.sum(0))  # [2]
        mean = np.arctan2(self.sin, self.cos)
        mean = np.where(self.counts > 0, mean, global_mean[None, :])
        mean[rc.UNK_INDEX] = global_mean  # unknown residues: no type information
        return Prior(
            dist_probs=dist_probs.astype(np.float32), pair_counts=self.pair_counts.copy(),
            torsion_mean=mean.astype(np.float32), torsion_counts=self.counts.copy(), num_chains=self.num_chains,
        )


def fit_priors(train_h5: H5Dataset | str | os.PathLike, max_separation: int = 64,
               max_chains: int = 0) -> Prior:
    """Fit both priors on the training split.

    Args:
      train_h5: the training cache (H5Dataset or path).
      max_separation: separations >= this are pooled.
      max_chains: use the first this many chains (<= 0: all).

    Returns:
      The fitted Prior.
    """
    ds = train_h5 if isinstance(train_h5, H5Dataset) else H5Dataset(train_h5)
    limit = len(ds) if max_chains <= 0 else min(max_chains, len(ds))
    longest = int(ds.lengths.max())
    builder = PriorBuilder(max_separation)
    # One chain per batch, uncropped: targets are computed by the loader, like the model's.
    for n, batch in enumerate(full_length_batches(ds, 1, longest)):
        if n >= limit:
            break
        L = int(batch["length"][0])
        builder.add_chain(
            batch["aatype"][0, :L], batch["cb_dist"][0, :L, :L], batch["pair_mask"][0, :L, :L],
            batch["torsions"][0, :L], batch["torsion_mask"][0, :L], batch["residue_index"][0, :L],
        )
    return builder.build()
