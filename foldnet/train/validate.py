"""Validation: distogram NLL, long-range top-L/5 contact precision, phi/psi MAE.

The same accumulator scores the model and the baselines (``baselines.py``), on
the same batches, so the comparison in the run summary is like for like:

* ``dist_nll`` - mean over residue pairs i != j with a known CB-CB distance
  (``pair_mask``) of -log p(true bin), in nats (micro-average over all pairs of
  all chains).
* ``lr_top_l5_precision`` - per chain, the round(L/5) pairs with |i - j| >= 24
  and the highest contact probability (``metrics.contacts.contact_probabilities``:
  the mass of the bins below 8 A), the fraction that are true contacts (CB-CB
  < 8 A); averaged over chains that have a true long-range contact (PDNet's
  definitions, ``metrics.contacts.contact_precision``). L is the number of
  residues of the chain (or crop) being scored.
* ``phi_mae_deg`` / ``psi_mae_deg`` - mean absolute circular error in degrees
  between the true angle and the circular mean of the predicted distribution
  (atan2 of the probability-weighted sin/cos of the bin centres), over residues
  where the angle is defined; ``torsion_mae_deg`` is their mean.

Batches come from ``foldnet.data.loader``: full-length chains (``mode: full``,
padded to a multiple of ``pad_multiple`` so only a few shapes compile) or
deterministic centred crops (``mode: crop``). The first ``num_chains`` chains of
the validation file, in file order, are scored (all when ``num_chains`` <= 0).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.data.cache import H5Dataset
from foldnet.data.loader import CropLoader, full_length_batches
from foldnet.metrics.contacts import contact_precision, contact_probabilities
from foldnet.metrics.distances import NLL_PROB_FLOOR
from foldnet.metrics.torsions import circular_abs_error_deg, expected_angle

TORSION_ANGLES = ("phi", "psi")
# Per-example losses of the auxiliary heads, averaged over chains in the validation lines.
AUX_LOSSES = ("ca_distogram_loss", "orientation_loss", "ss_loss")


@dataclasses.dataclass
class ValConfig:
    """Periodic validation on the validation split.

    Attributes:
      every_steps: validate every this many training steps (and at the end); 0 = only at the end.
      num_chains: score the first this many chains of the split (<= 0: all).
      mode: "full" (whole chains, up to max_length residues) or "crop" (centred crops).
      crop_size: crop length in "crop" mode.
      max_length: longest chain in "full" mode (longer chains keep their first max_length residues).
      pad_multiple: "full" mode pads N up to a multiple of this (bounds recompilation).
      batch_size: chains per evaluation batch.
      baselines: also score the sequence-separation / residue-type priors on the same chains.
      prior_max_separation: separations >= this share one pooled prior distribution.
      prior_max_chains: fit the priors on at most this many training chains (<= 0: all).
      train_chains: also score the first this many *training* chains the same way at every
        validation ("val_train" lines: the train/validation gap, i.e. over- or under-fitting).
      raw_params: with a parameter EMA (optim.ema_decay > 0) "val" scores the EMA; this also
        scores the raw parameters ("val_raw" lines).
      single_sequence: also score the same chains with their profiles withheld ("val_single"
        lines: the FASTA-only mode, which "val" - profile given - does not see).
    """

    every_steps: int = 500
    num_chains: int = 64
    mode: str = "full"
    crop_size: int = 128
    max_length: int = 512
    pad_multiple: int = 64
    batch_size: int = 1
    baselines: bool = True
    prior_max_separation: int = 64
    prior_max_chains: int = 0
    train_chains: int = 0
    raw_params: bool = False
    single_sequence: bool = False


def top_l5_long_range_precision(
    contact_probs: np.ndarray, cb_dist: np.ndarray, pair_mask: np.ndarray
) -> Optional[float]:
    """Precision of the top-L/5 predicted long-range (|i - j| >= 24) contacts of one chain.

    Delegates to ``foldnet.metrics.contacts.contact_precision`` (PDNet definitions:
    probabilities symmetrised, k = round(L/5) with L the residues that have a CB,
    candidates only among known pairs).

    Args:
      contact_probs: [L, L] P(contact).
      cb_dist: [L, L] true CB-CB distances (A).
      pair_mask: [L, L] 1 where the distance is known.

    Returns:
      The precision in [0, 1], or None when the chain has no true long-range contact
      (PDNet leaves such chains out of the average).
    """
    true = np.where(pair_mask > 0, cb_dist, np.nan)
    residues = (np.diagonal(pair_mask) > 0).astype(np.float32)
    prec = contact_precision(contact_probs, true, residues, ranges=("long",))["long/top_L/5"]
    return None if math.isnan(prec) else float(prec)


class MetricAccumulator:
    """Accumulates the validation metrics chain by chain (see the module docstring).

    Args:
      min_separation: pairs with |i - j| below this are left out of the NLL (1 = drop the diagonal).
    """

    def __init__(self, min_separation: int = 1):
        self.min_separation = int(min_separation)
        self.nll_sum = 0.0
        self.nll_count = 0
        self.precisions: list[float] = []
        self.abs_err = {a: [0.0, 0] for a in TORSION_ANGLES}
        self.num_chains = 0
        self.aux_losses: dict[str, list[float]] = {}
        self.ss_hits = {"ss8": [0, 0], "ss3": [0, 0]}

    def add_chain(
        self,
        dist_probs: Optional[np.ndarray],
        torsion_pred: Optional[Mapping[str, np.ndarray]],
        cb_dist: np.ndarray,
        pair_mask: np.ndarray,
        torsions: np.ndarray,
        torsion_mask: np.ndarray,
        residue_index: Optional[np.ndarray] = None,
    ) -> None:
        """Score one chain (arrays already cut to its L real residues).

        Args:
          dist_probs: [L, L, 65] predicted bin probabilities (None: no distogram head).
          torsion_pred: {"phi": [L], "psi": [L]} predicted angles in radians (None: no torsion head).
          cb_dist: [L, L] true CB-CB distances (A).
          pair_mask: [L, L] 1 where known.
          torsions: [L, 3] true phi, psi, omega (radians).
          torsion_mask: [L, 3] 1 where defined.
          residue_index: [L] chain positions (separations); default arange(L).
        """
        L = cb_dist.shape[0]
        ri = np.arange(L) if residue_index is None else np.asarray(residue_index)
        self.num_chains += 1
        if dist_probs is not None:
            sep = np.abs(ri[:, None] - ri[None, :])
            mask = (pair_mask > 0) & (sep >= self.min_separation)
            bins = rc.distance_to_bin(np.where(pair_mask > 0, cb_dist, 0.0))
            p = np.take_along_axis(dist_probs, bins[..., None], axis=-1)[..., 0]
            # Same floor as metrics.distances.distogram_nll: one underflowed
            # probability gives a large but finite NLL. Summed (not averaged per
            # chain) so the result is the mean over all pairs of all chains.
            nll = -np.log(np.maximum(p[mask].astype(np.float64), NLL_PROB_FLOOR))
            self.nll_sum += float(nll.sum())
            self.nll_count += int(mask.sum())
            prec = top_l5_long_range_precision(contact_probabilities(dist_probs), cb_dist, pair_mask)
            if prec is not None:
                self.precisions.append(prec)
        if torsion_pred is not None:
            for k, name in enumerate(TORSION_ANGLES):
                if name not in torsion_pred:
                    continue
                m = torsion_mask[:, k] > 0
                err = circular_abs_error_deg(torsion_pred[name][m], torsions[m, k])
                self.abs_err[name][0] += float(err.sum())
                self.abs_err[name][1] += int(m.sum())

    def add_aux(self, name: str, loss: float) -> None:
        """One chain's loss of an auxiliary head (reported as the mean over chains)."""
        self.aux_losses.setdefault(name, []).append(float(loss))

    def add_secondary_structure(self, ss8_probs: np.ndarray, ss8: np.ndarray, ss_mask: np.ndarray) -> None:
        """Q8 / Q3 accuracy counts of one chain ([L, 8] probabilities vs [L] DSSP states)."""
        m = ss_mask > 0
        if not m.any():
            return
        pred8 = np.argmax(ss8_probs[m], axis=-1)
        p3 = np.zeros(ss8_probs[m].shape[:-1] + (3,), np.float64)
        np.add.at(p3.T, rc.SS8_TO_SS3, ss8_probs[m].T)  # sum the 8 states into their 3 classes
        for key, pred, true in (("ss8", pred8, ss8[m]), ("ss3", np.argmax(p3, -1), rc.SS8_TO_SS3[ss8[m]])):
            self.ss_hits[key][0] += int((pred == true).sum())
            self.ss_hits[key][1] += int(m.sum())

    def result(self) -> dict[str, float]:
        """The metrics so far (NaN where nothing was scored)."""
        out = {
            "dist_nll": self.nll_sum / self.nll_count if self.nll_count else float("nan"),
            "lr_top_l5_precision": float(np.mean(self.precisions)) if self.precisions else float("nan"),
        }
        maes = []
        for name in TORSION_ANGLES:
            s, n = self.abs_err[name]
            out[f"{name}_mae_deg"] = s / n if n else float("nan")
            maes.append(out[f"{name}_mae_deg"])
        out["torsion_mae_deg"] = float(np.mean(maes))
        for name, values in self.aux_losses.items():
            out[name] = float(np.mean(values))
        for key, (hit, total) in self.ss_hits.items():
            if total:
                out[f"{key}_accuracy"] = hit / total
        out["num_chains"] = self.num_chains
        out["num_pairs"] = self.nll_count
        return out


def _pad_batch(batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Pad the residue axes of a loader batch to length n with the loader's fill values."""
    cur = batch["aatype"].shape[1]
    if cur == n:
        return batch
    out = {}
    for key, x in batch.items():
        if x.ndim < 2:
            out[key] = x
            continue
        pad = [(0, 0)] * x.ndim
        pad[1] = (0, n - cur)
        if key in ("cb_dist", "pair_mask"):
            pad[2] = (0, n - cur)
        fill = rc.UNK_INDEX if key == "aatype" else 0
        out[key] = np.pad(x, pad, constant_values=fill)
    return out


def validation_batches(val: H5Dataset | str, cfg: ValConfig, *, num_chains: Optional[int] = None,
                       secondary_structure: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The deterministic validation batches (first ``cfg.num_chains`` chains, file order).

    Args:
      val: the validation split (H5Dataset or path).
      cfg: validation options.
      num_chains: overrides ``cfg.num_chains`` (e.g. for the training-split lines).
      secondary_structure: fill the DSSP targets (a model with the secondary-structure head).

    Yields:
      Loader batches; padding examples have ``example_id`` -1.
    """
    ds = val if isinstance(val, H5Dataset) else H5Dataset(val)
    wanted = cfg.num_chains if num_chains is None else num_chains
    limit = len(ds) if wanted <= 0 else min(wanted, len(ds))
    if cfg.mode == "full":
        source: Iterator[dict] = full_length_batches(ds, cfg.batch_size, cfg.max_length, secondary_structure)
    elif cfg.mode == "crop":
        source = iter(
            CropLoader(ds, cfg.crop_size, cfg.batch_size, seed=0, shuffle=False, random_crop=False,
                       repeat=False, drop_remainder=False, prefetch=0, secondary_structure=secondary_structure)
        )
    else:
        raise ValueError(f"val.mode must be 'full' or 'crop', got {cfg.mode!r}")
    seen = 0
    for batch in source:
        if seen >= limit:
            return
        ex = batch["example_id"]
        over = (ex >= 0) & (ex >= limit)  # file order: chain index == position
        if over.any():
            batch = {k: v.copy() for k, v in batch.items()}
            for k in ("seq_mask", "pair_mask", "torsion_mask", "atom_mask", "ss_mask", "length", "has_profile"):
                batch[k][over] = 0
            batch["example_id"][over] = -1
        seen += int(((ex >= 0) & ~over).sum())
        if cfg.mode == "full":
            n = batch["aatype"].shape[1]
            m = max(1, int(cfg.pad_multiple))
            batch = _pad_batch(batch, -(-n // m) * m)
        yield batch


def withhold_profile(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The same batches with every profile withheld (zeros, ``has_profile`` 0): the input a
    FASTA-only prediction gives the network, and a profile-dropped training crop."""
    for batch in batches:
        yield {**batch, "profile": np.zeros_like(batch["profile"]),
               "has_profile": np.zeros_like(batch["has_profile"])}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _probs(out: Mapping[str, Any], name: str) -> Optional[np.ndarray]:
    """``<name>_probs`` from the eval outputs, else softmax of ``<name>_logits``, else None."""
    if f"{name}_probs" in out:
        return np.asarray(out[f"{name}_probs"], np.float32)
    if f"{name}_logits" in out:
        return _softmax(np.asarray(out[f"{name}_logits"], np.float64)).astype(np.float32)
    return None


def score_batch(acc: MetricAccumulator, batch: Mapping[str, np.ndarray], out: Mapping[str, Any]) -> None:
    """Add every real example of a batch to ``acc``.

    Args:
      acc: the accumulator.
      batch: the loader batch (targets).
      out: predictions for the batch: "dist_probs"/"dist_logits" [B, N, N, 65] and
        "phi_probs"/"phi_logits", "psi_probs"/"psi_logits" [B, N, 36], or directly
        "phi"/"psi" angles [B, N] in radians (the residue-type prior).
    """
    dist = _probs(out, "dist")
    tors = {}
    for name in TORSION_ANGLES:
        if name in out:
            tors[name] = np.asarray(out[name])
        else:
            p = _probs(out, name)
            if p is not None:
                tors[name] = expected_angle(p)
    for b in range(batch["aatype"].shape[0]):
        if batch["example_id"][b] < 0:
            continue
        n = int(batch["length"][b])
        acc.add_chain(
            dist[b, :n, :n] if dist is not None else None,
            {k: v[b, :n] for k, v in tors.items()} if tors else None,
            batch["cb_dist"][b, :n, :n],
            batch["pair_mask"][b, :n, :n],
            batch["torsions"][b, :n],
            batch["torsion_mask"][b, :n],
            batch["residue_index"][b, :n],
        )
        for name in AUX_LOSSES:
            if name in out:
                acc.add_aux(name, float(np.asarray(out[name])[b]))
        if "ss8_probs" in out and "ss8" in batch:
            acc.add_secondary_structure(np.asarray(out["ss8_probs"][b, :n]), batch["ss8"][b, :n],
                                        batch["ss_mask"][b, :n])


def validation_metrics(
    predict: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
    batches: Iterator[dict[str, np.ndarray]],
    min_separation: int = 1,
) -> dict[str, float]:
    """Score a predictor on validation batches.

    Args:
      predict: batch -> outputs (see ``score_batch``), e.g. the jitted eval step
        bound to parameters, or ``SeparationPrior.predict``.
      batches: loader batches (``validation_batches``).
      min_separation: smallest |i - j| in the NLL.

    Returns:
      The metrics of ``MetricAccumulator.result`` plus ``seconds``.
    """
    t0 = time.perf_counter()
    acc = MetricAccumulator(min_separation)
    for batch in batches:
        score_batch(acc, batch, predict(batch))
    res = acc.result()
    res["seconds"] = time.perf_counter() - t0
    return res
