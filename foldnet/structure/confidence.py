"""Per-residue confidence of a predicted structure, read off the distogram (numpy).

For residue pair (i, j) the sharpness of the predicted distance distribution is
``c_ij = 1 - H(p_ij) / log(65)`` (1 = all mass in one bin, 0 = uniform). Residue i's
confidence is the mean of ``c_ij`` over partners ``|i-j| >= min_separation``, each partner
weighted by the predicted probability that it lies within ``contact_cutoff`` (12 A):
distant pairs are trivially sharp (all mass in the >= 22 A bin) and say little about
where residue i sits, while its predicted neighbours pin it down. A residue with no
predicted neighbour (total weight < 1e-3) falls back to the unweighted mean. Scaled to
0-100 for the PDB B-factor column, like pLDDT.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from foldnet.common import residue_constants as rc

log = logging.getLogger(__name__)


def residue_confidence(
    dist_probs: np.ndarray, min_separation: int = 3, contact_cutoff: float = 12.0
) -> tuple[np.ndarray, float]:
    """Per-residue confidence (0-100) and its mean.

    Args:
      dist_probs: [L, L, 65] predicted distogram probabilities.
      min_separation: partners closer in sequence are ignored.
      contact_cutoff: Angstrom; a partner's weight is P(d_ij < cutoff) (bins whose upper
        edge is <= cutoff).
    Returns:
      (confidence [L] float32 in [0, 100], summary = mean over residues).
    """
    p = np.asarray(dist_probs, np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[1] or p.shape[2] != rc.NUM_DIST_BINS:
        raise ValueError(f"residue_confidence: dist_probs must be [L, L, {rc.NUM_DIST_BINS}], got {p.shape}")
    length = p.shape[0]
    p = 0.5 * (p + p.transpose(1, 0, 2))
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-12)
    entropy = -np.sum(p * np.log(np.maximum(p, 1e-12)), axis=-1)
    sharp = 1.0 - entropy / np.log(rc.NUM_DIST_BINS)
    upper = rc.DISTOGRAM_EDGES[1:]
    near_bins = np.concatenate([upper <= contact_cutoff, [False]])
    w = p[..., near_bins].sum(-1)
    idx = np.arange(length)
    sep_ok = np.abs(idx[:, None] - idx[None, :]) >= min_separation
    w = np.where(sep_ok, w, 0.0)
    wsum = w.sum(1)
    weighted = (w * sharp).sum(1) / np.maximum(wsum, 1e-12)
    n_ok = sep_ok.sum(1)
    plain = np.where(sep_ok, sharp, 0.0).sum(1) / np.maximum(n_ok, 1)
    conf = np.where(wsum >= 1e-3, weighted, plain)
    conf = np.clip(100.0 * conf, 0.0, 100.0).astype(np.float32)
    return conf, float(conf.mean()) if length else 0.0


# ----------------------------------------------------------------------------
# Calibrated confidence: an estimate of the residue's lDDT-Calpha (0-100)
# ----------------------------------------------------------------------------
#
# The sharpness above says how peaked the distogram is, not how right the folded model is;
# on held-out domains it pointed the wrong way (issue 13). The shipped estimate is a
# calibration fitted on the validation split (``foldnet.inference.calibrate``): a linear
# score of a few per-residue features, mapped by isotonic regression onto the true
# per-residue lDDT-Calpha x 100 of folded validation models. The features compare the
# *written* structure with the distogram, so a model that folded away from its own
# prediction is flagged even when the distogram is sharp. The windowed features carry the
# neighbourhood along the chain: a residue inside a badly placed segment is badly placed too
# (5-fold domain cross-validation on the validation fit, runs/v2 step 3600: residue r 0.570 ->
# 0.579 single-sequence, 0.615 -> 0.622 profile; docs/inference.md).

CALIBRATION_FILE = "confidence.json"
CALIBRATION_VERSION = 2
FEATURES = ("sharpness", "expected_lddt", "log_neighbours", "log_length", "has_profile",
            "expected_lddt_window3", "expected_lddt_window8", "sharpness_window3")
# Version 1 (the first shipped models) read the first five.
_KNOWN_FEATURES = {1: FEATURES[:5], 2: FEATURES}
LDDT_RADIUS = 15.0
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)


def _checked_probs(dist_probs: np.ndarray, who: str) -> np.ndarray:
    p = np.asarray(dist_probs, np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[1] or p.shape[2] != rc.NUM_DIST_BINS:
        raise ValueError(f"{who}: dist_probs must be [L, L, {rc.NUM_DIST_BINS}], got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{who}: dist_probs has {int(np.sum(~np.isfinite(p)))} non-finite values (NaN/inf)")
    if np.any(p < 0):
        raise ValueError(f"{who}: dist_probs has negative probabilities")
    p = 0.5 * (p + p.transpose(1, 0, 2))
    return p / np.maximum(p.sum(-1, keepdims=True), 1e-12)


def distance_error_matrix(dist_probs: np.ndarray) -> np.ndarray:
    """Predicted distance error [L, L] in A: ``E_p |d - E_p[d]|`` over the distogram bins.

    The expected absolute deviation of the CB-CB distance from the distance foldnet predicts
    (bin centres ``rc.DISTOGRAM_CENTERS``; the open last bin counts at its centre). It is a
    distance error, not AlphaFold's aligned error: no frame, no superposition. A one-hot
    distogram gives 0; half the mass in each of two bins gives half their centres' gap.
    """
    p = _checked_probs(dist_probs, "distance_error_matrix")
    c = rc.DISTOGRAM_CENTERS.astype(np.float64)
    mean = p @ c
    return np.einsum("ijb,ijb->ij", p, np.abs(c[None, None, :] - mean[..., None]))


def residue_features(dist_probs: np.ndarray, model_dist: np.ndarray, has_profile: bool) -> np.ndarray:
    """Per-residue features [L, len(FEATURES)] of a folded model and its distogram.

    Args:
      dist_probs: [L, L, 65] predicted distogram.
      model_dist: [L, L] CB-CB distances of the written model (A).
      has_profile: the prediction used a sequence profile.

    Returns:
      Columns in ``FEATURES`` order: distogram sharpness near the residue (0-1); the expected
      lDDT of the model's distances if the true distance were drawn from the distogram (pairs
      whose drawn distance is < 15 A, thresholds 0.5/1/2/4 A, as lDDT); log(1 + expected
      number of partners within 15 A); log(L); 1 in profile mode; the expected lDDT averaged
      over the residues within 3 and within 8 along the chain, and the sharpness within 3
      (``window_mean``).
    """
    p = _checked_probs(dist_probs, "residue_features")
    length = p.shape[0]
    d = np.asarray(model_dist, np.float64)
    if d.shape != (length, length):
        raise ValueError(f"residue_features: model_dist must be [{length}, {length}], got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("residue_features: model_dist has non-finite distances")
    c = rc.DISTOGRAM_CENTERS.astype(np.float64)
    near = (c < LDDT_RADIUS)[None, None, :]
    off = ~np.eye(length, dtype=bool)
    w = p * near * off[..., None]
    diff = np.abs(d[..., None] - c[None, None, :])
    score = np.mean([diff < t for t in LDDT_THRESHOLDS], axis=0)
    wsum = w.sum((1, 2))
    exp_lddt = np.where(wsum > 1e-6, (w * score).sum((1, 2)) / np.maximum(wsum, 1e-12), 0.0)
    sharp = residue_confidence(p)[0].astype(np.float64) / 100.0
    cols = [sharp, exp_lddt, np.log1p(wsum), np.full(length, np.log(max(length, 1))),
            np.full(length, float(bool(has_profile))),
            window_mean(exp_lddt, 3), window_mean(exp_lddt, 8), window_mean(sharp, 3)]
    return np.stack(cols, axis=1)


def window_mean(values: np.ndarray, half_width: int) -> np.ndarray:
    """Mean of ``values[i - k : i + k + 1]`` for every i (the window truncated at the chain ends).

    >>> window_mean(np.array([0.0, 3.0, 6.0]), 1)   # (0+3)/2, (0+3+6)/3, (3+6)/2
    array([1.5, 3. , 4.5])
    """
    v = np.asarray(values, np.float64)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(len(v))
    lo = np.maximum(idx - half_width, 0)
    hi = np.minimum(idx + half_width + 1, len(v))
    return (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)


def isotonic_fit(x, y, w=None) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of y on x (pool adjacent violators).

    Returns:
      Knots (x, y) for ``np.interp``: both ends of every pooled block, x ascending.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
    order = np.argsort(x, kind="mergesort")
    x, y, w = x[order], y[order], w[order]
    means, weights, lo, hi = [], [], [], []
    for k in range(len(x)):
        means.append(y[k]); weights.append(w[k]); lo.append(x[k]); hi.append(x[k])
        while len(means) > 1 and means[-2] >= means[-1]:
            m2, w2, h2 = means.pop(), weights.pop(), hi.pop()
            lo.pop()
            m1, w1 = means[-1], weights[-1]
            means[-1] = (m1 * w1 + m2 * w2) / (w1 + w2)
            weights[-1] = w1 + w2
            hi[-1] = h2
    kx = np.ravel(np.column_stack([lo, hi]))
    ky = np.repeat(means, 2)
    return kx, ky


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Features -> estimated lDDT-Calpha x 100: a linear score, then an isotonic map.

    Attributes:
      weights: [1 + len(features)] intercept and feature weights of the score.
      knots_x, knots_y: the isotonic map of the score (``np.interp``, clipped at the ends).
      info: how and on what it was fitted (written into the JSON as is).
      features: the ``FEATURES`` it reads, in order (a version-1 calibration reads five).
    """

    weights: tuple
    knots_x: tuple
    knots_y: tuple
    info: dict = dataclasses.field(default_factory=dict)
    features: tuple = FEATURES

    @classmethod
    def fit(cls, features: np.ndarray, lddt100: np.ndarray, info: Optional[dict] = None) -> "Calibration":
        """Least squares on the features, then isotonic regression of the truth on the score."""
        x = np.asarray(features, np.float64)
        y = np.asarray(lddt100, np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"Calibration.fit: features must be [N, {len(FEATURES)}] ({list(FEATURES)}), "
                             f"got {x.shape}")
        ok = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
        if ok.sum() < 10:
            raise ValueError(f"Calibration.fit: need >= 10 residues with a true lDDT, got {int(ok.sum())}")
        a = np.column_stack([np.ones(ok.sum()), x[ok]])
        weights = np.linalg.lstsq(a, y[ok], rcond=None)[0]
        kx, ky = isotonic_fit(a @ weights, y[ok])
        # Thin the knots to a JSON of a few kB; the map stays monotone.
        if len(kx) > 400:
            keep = np.unique(np.linspace(0, len(kx) - 1, 400).round().astype(int))
            kx, ky = kx[keep], ky[keep]
        return cls(tuple(np.round(weights, 6).tolist()), tuple(np.round(kx, 5).tolist()),
                   tuple(np.round(np.clip(ky, 0, 100), 3).tolist()), dict(info or {}))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Estimated lDDT-Calpha x 100 [L] (float32, in [0, 100]) from ``FEATURES`` columns."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"Calibration.predict: features must be [L, {len(FEATURES)}], got {x.shape}")
        x = x[:, [FEATURES.index(f) for f in self.features]]
        score = self.weights[0] + x @ np.asarray(self.weights[1:])
        return np.clip(np.interp(score, self.knots_x, self.knots_y), 0.0, 100.0).astype(np.float32)

    def to_json(self) -> str:
        version = next(v for v, f in _KNOWN_FEATURES.items() if f == self.features)
        return json.dumps({"version": version, "target": "per-residue lDDT-Calpha x 100",
                           "features": list(self.features), "weights": list(self.weights),
                           "knots_x": list(self.knots_x), "knots_y": list(self.knots_y), "info": self.info},
                          indent=1) + "\n"

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read ``confidence.json``; a wrong version or feature list is an error, not a guess."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{path}: not a valid calibration JSON ({e})") from None
        features = tuple(d.get("features", ()))
        if _KNOWN_FEATURES.get(d.get("version")) != features:
            raise ValueError(f"{path}: calibration version {d.get('version')} / features {d.get('features')} "
                             f"do not match this foldnet ({CALIBRATION_VERSION}, {list(FEATURES)}); refit it")
        kx = np.asarray(d["knots_x"], np.float64)
        if len(kx) < 2 or np.any(np.diff(kx) < 0) or np.any(np.diff(d["knots_y"]) < 0):
            raise ValueError(f"{path}: isotonic knots must be non-decreasing")
        if len(d["weights"]) != len(features) + 1:
            raise ValueError(f"{path}: {len(d['weights'])} weights for {len(features)} features")
        return cls(tuple(d["weights"]), tuple(d["knots_x"]), tuple(d["knots_y"]), d.get("info", {}), features)


def load_calibration(folder) -> Optional[Calibration]:
    """The ``confidence.json`` of a model folder, or None (with a warning) when it has none."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        log.warning("%s does not exist: the B-factors fall back to the uncalibrated distogram sharpness "
                    "(not an lDDT estimate); refit with scripts/fit_confidence.py", path)
        return None
    # A shipped model lists the file's sha256 in its manifest: a replaced or damaged
    # calibration is refused, as damaged weights are.
    manifest = Path(folder) / "manifest.json"
    if manifest.is_file():
        import hashlib

        want = (json.loads(manifest.read_text(encoding="utf-8")).get("files") or {}).get(CALIBRATION_FILE)
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if want is not None and want != got:
            raise ValueError(f"{path}: sha256 {got} does not match the manifest ({want}); refit or re-export")
    return Calibration.load(path)


def model_confidence(calibration: Optional[Calibration], dist_probs: np.ndarray, model_dist: np.ndarray,
                     has_profile: bool) -> np.ndarray:
    """Per-residue confidence [L] (0-100) of a written model: calibrated pLDDT, else sharpness."""
    if calibration is None:
        return residue_confidence(dist_probs)[0]
    return calibration.predict(residue_features(dist_probs, model_dist, has_profile))
