"""Superposition-based structure scores on CA traces: RMSD, TM-score, GDT_TS, GDT_HA.

All scores assume a fixed residue correspondence: ``model[i]`` and ``native[i]``
are the same residue (what the TMscore program gets from matching residue
numbers). Numpy only.

* RMSD: Kabsch (1976) optimal superposition of all aligned residues, with the
  reflection fix (the rotation is proper, det = +1).
* TM-score (Zhang & Skolnick 2004, Proteins 57:702): ``max over superpositions
  of 1/L_N * sum_i 1 / (1 + (d_i/d0)^2)``, L_N the native length,
  ``d0 = 1.24 * cbrt(L_N - 15) - 1.8`` clamped below at 0.5 (so chains of
  L_N <= 21 get d0 = 0.5, as the TMscore program does).
* GDT_TS = mean of the fractions of residues within 1, 2, 4, 8 A; GDT_HA the
  same for 0.5, 1, 2, 4 A; every cut-off's count is maximised separately over
  the superpositions of the search (distance <= cut-off).

The superposition search reproduces the TMscore program (version 2019/08/22,
Debian package ``tm-align``): seeds are contiguous fragments of the aligned
residues of lengths ``n, n/2, n/4, ...`` (integer division) down to 4 (at most
six lengths), each slid one residue at a time along the chain; after the seed
superposition the residues closer than ``d0_search - 1`` are collected, then
up to 20 rounds of "superpose on the collected set, re-collect the residues
closer than ``d0_search + 1``" follow until the set stops changing
(``d0_search`` = d0 clamped to [4.5, 8]; a collection with fewer than 3
residues widens its cut-off by 0.5 A until it holds 3). Every superposition
visited updates the running maxima of the TM-score and of each GDT count.

Seeds are processed as a batch (vectorised Kabsch over all seeds of the
search); seeds that reach an identical residue set are merged, which does not
change the result because the refinement is deterministic in the set.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

# Cut-offs of the GDT scores (Zemla 2003, LGA); TMscore counts distance <= cut-off.
GDT_TS_CUTOFFS = (1.0, 2.0, 4.0, 8.0)
GDT_HA_CUTOFFS = (0.5, 1.0, 2.0, 4.0)
_ALL_GDT_CUTOFFS = (0.5, 1.0, 2.0, 4.0, 8.0)

# TMscore program constants.
_N_ITER = 20
_N_INIT_MAX = 6
_L_INI_MIN = 4
_MIN_CUT = 3
# Seeds per vectorised batch: bounds memory to a few [_CHUNK, L] float64 arrays.
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class StructureScores:
    """Scores of one model against its native (fixed residue correspondence)."""

    rmsd: float  # Kabsch RMSD over all aligned residues, Angstrom
    tm_score: float  # TM-score normalised by the native length
    gdt_ts: float  # in [0, 1] (multiply by 100 for the CASP convention)
    gdt_ha: float  # in [0, 1]
    gdt_fractions: dict  # {cut-off: best fraction of native residues within it}
    d0: float  # TM-score distance scale used, Angstrom
    n_aligned: int  # residues present in both model and native
    native_length: int  # normalisation length L_N


def _check_pair(
    model: np.ndarray, native: np.ndarray, mask: Optional[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    model = np.asarray(model, dtype=np.float64)
    native = np.asarray(native, dtype=np.float64)
    if model.ndim != 2 or model.shape[-1] != 3:
        raise ValueError(f"model coordinates must be [L, 3], got shape {model.shape}")
    if native.shape != model.shape:
        raise ValueError(f"native shape {native.shape} differs from model shape {model.shape}")
    if mask is None:
        keep = np.ones(len(model), bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != (len(model),):
            raise ValueError(f"mask must be [L] = [{len(model)}], got shape {mask.shape}")
        keep = mask > 0
    x, y = model[keep], native[keep]
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("non-finite coordinates among the masked-in residues")
    return x, y


def _proper_rotation(h: np.ndarray) -> np.ndarray:
    """Rotation R [..., 3, 3] maximising tr(R H) for cross-covariances H [..., 3, 3].

    With H = U S V^T, R = V diag(1, 1, d) U^T and d = sign det(V U^T): the
    reflection fix of Kabsch (1978).
    """
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.swapaxes(-1, -2) @ u.swapaxes(-1, -2)))
    d = np.where(d == 0, 1.0, d)
    fix = np.ones(h.shape[:-2] + (3,))
    fix[..., 2] = d
    return (vt.swapaxes(-1, -2) * fix[..., None, :]) @ u.swapaxes(-1, -2)


def kabsch(
    mobile: np.ndarray, target: np.ndarray, weights: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal rigid transform taking ``mobile`` onto ``target`` (Kabsch 1976).

    Batched: leading dimensions of ``weights`` index independent problems sharing
    the same point sets. The reflection fix flips the sign of the smallest
    singular direction when det(V U^T) < 0, so the result is a proper rotation.

    Args:
      mobile: [N, 3] points to move.
      target: [N, 3] corresponding fixed points.
      weights: optional [..., N] non-negative weights (0 drops a point); None = all 1.

    Returns:
      (R, t) with R [..., 3, 3], t [..., 3] such that ``mobile @ R.T + t`` is
      the best least-squares fit to ``target``.
    """
    x = np.asarray(mobile, np.float64)
    y = np.asarray(target, np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"kabsch needs two [N, 3] arrays, got {x.shape} and {y.shape}")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    wsum = np.maximum(w.sum(-1, keepdims=True), 1e-12)  # [..., 1]
    cx = (w @ x) / wsum  # [..., 3]
    cy = (w @ y) / wsum
    # Cross-covariance H = sum_i w_i (x_i - cx)(y_i - cy)^T
    #                   = sum_i w_i x_i y_i^T - W cx cy^T.
    wx = w[..., :, None] * x  # [..., N, 3]
    h = wx.swapaxes(-1, -2) @ y - wsum[..., None] * cx[..., :, None] * cy[..., None, :]
    r = _proper_rotation(h)
    t = cy - np.einsum("...ij,...j->...i", r, cx)
    return r, t


def superpose(mobile: np.ndarray, target: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Return ``mobile`` [L, 3] moved onto ``target`` by the Kabsch fit on ``mask`` residues."""
    mobile = np.asarray(mobile, np.float64)
    x, y = _check_pair(mobile, target, mask)
    r, t = kabsch(x, y)
    return mobile @ r.T + t


def rmsd(model: np.ndarray, native: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """RMSD in Angstrom after optimal superposition (Kabsch, reflection fixed).

    Args:
      model: [L, 3] model CA coordinates.
      native: [L, 3] native CA coordinates, same residue order.
      mask: optional [L] 0/1, residues to use (present in both).

    Returns:
      sqrt(mean_i |R x_i + t - y_i|^2) over the masked residues.
    """
    x, y = _check_pair(model, native, mask)
    if len(x) == 0:
        raise ValueError("rmsd: no aligned residues")
    r, t = kabsch(x, y)
    return float(np.sqrt(np.mean(np.sum((x @ r.T + t - y) ** 2, axis=-1))))


def tm_d0(native_length: int) -> float:
    """TM-score distance scale d0 for a native of ``native_length`` residues.

    ``1.24 * cbrt(L - 15) - 1.8`` for L > 15, floored at 0.5 (Zhang & Skolnick
    2004; the floor is the TMscore program's short-chain rule, which makes
    d0 = 0.5 for every L <= 21).
    """
    if native_length > 15:
        d0 = 1.24 * (native_length - 15) ** (1.0 / 3.0) - 1.8
    else:
        d0 = 0.5
    return max(d0, 0.5)


def _seed_lengths(n: int) -> list[int]:
    """Fragment lengths of the TMscore search: n, n/2, n/4, ... (integer), then 4."""
    l_min = min(_L_INI_MIN, n)
    out: list[int] = []
    for i in range(_N_INIT_MAX - 1):
        length = n // (2**i)
        if length <= l_min:
            out.append(l_min)
            return out
        out.append(length)
    out.append(l_min)
    return out


class _PairGeometry:
    """Per-pair constants that turn batched Kabsch fits and distances into GEMMs.

    For weights W [S, n] (one residue set per row) the cross-covariance is
    ``W @ (x y^T per residue)`` and, with R, t the fitted transform,
    ``|R x + t - y|^2 = |x|^2 + |y|^2 + |t|^2 - 2 t.y + 2 (R^T t).x - 2 sum_ij R_ij y_i x_j``,
    so no [S, n, 3] array of moved coordinates is ever built. Both sets are
    centred first (harmless: the fit is translation-invariant) to keep the
    expansion's cancellation small.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = x - x.mean(0)
        y = y - y.mean(0)
        n = len(x)
        xy = (x[:, :, None] * y[:, None, :]).reshape(n, 9)
        yx = (y[:, :, None] * x[:, None, :]).reshape(n, 9)
        # Skinny GEMMs with 3 columns are slow in OpenBLAS; grouping the
        # per-residue features into one wide matrix makes each step one GEMM.
        self.fit_features = np.ascontiguousarray(np.concatenate([x, y, xy], axis=1))  # [n, 15]
        self.dist_features_t = np.ascontiguousarray(np.concatenate([x, y, yx], axis=1).T)  # [15, n]
        self.sq = np.sum(x**2, 1) + np.sum(y**2, 1)

    def squared_distances(self, sets: np.ndarray) -> np.ndarray:
        """[S, n] squared distances after superposing on each row of ``sets`` ([S, n] bool)."""
        w = sets.astype(np.float64)
        wsum = np.maximum(w.sum(1), 1e-12)[:, None]
        sums = w @ self.fit_features  # [S, 15]
        cx = sums[:, 0:3] / wsum
        cy = sums[:, 3:6] / wsum
        h = sums[:, 6:15].reshape(-1, 3, 3) - wsum[:, :, None] * cx[:, :, None] * cy[:, None, :]
        r = _proper_rotation(h)
        t = cy - np.einsum("sij,sj->si", r, cx)
        rt_t = np.einsum("sji,sj->si", r, t)
        coef = np.concatenate([2.0 * rt_t, -2.0 * t, -2.0 * r.reshape(-1, 9)], axis=1)  # [S, 15]
        d2 = coef @ self.dist_features_t + self.sq[None, :] + np.sum(t**2, 1)[:, None]
        return np.maximum(d2, 0.0)


def _collect(d2: np.ndarray, cut: float) -> np.ndarray:
    """Residues with distance < cut; rows with < 3 widen the cut by 0.5 A steps (TMscore).

    Args:
      d2: [S, n] squared distances.
    """
    n = d2.shape[1]
    sets = d2 < cut * cut
    if n <= _MIN_CUT:
        return sets
    short = sets.sum(1) < _MIN_CUT
    if np.any(short):
        dist = np.sqrt(d2[short])
        d3 = np.partition(dist, _MIN_CUT - 1, axis=1)[:, _MIN_CUT - 1]
        # Smallest cut + 0.5 k strictly above the third-smallest distance.
        k = np.floor((d3 - cut) / 0.5) + 1.0
        widened = cut + 0.5 * np.maximum(k, 0.0)
        sets[short] = dist < widened[:, None]
    return sets


def _unique_rows(sets: np.ndarray) -> np.ndarray:
    packed = np.packbits(sets, axis=1)
    _, idx = np.unique(packed, axis=0, return_index=True)
    return sets[np.sort(idx)]


def _search(x: np.ndarray, y: np.ndarray, d0: float, norm: float) -> tuple[float, np.ndarray]:
    """TMscore-program search; returns (best TM-score, best count per _ALL_GDT_CUTOFFS)."""
    n = len(x)
    d0_search = min(max(d0, 4.5), 8.0)
    geom = _PairGeometry(x, y)
    cut2 = np.asarray(_ALL_GDT_CUTOFFS) ** 2
    best_tm = -1.0
    best_counts = np.full(len(cut2), -1, dtype=np.int64)

    def score(d2: np.ndarray) -> None:
        nonlocal best_tm, best_counts
        tm = np.sum(1.0 / (1.0 + d2 / (d0 * d0)), axis=1) / norm
        best_tm = max(best_tm, float(tm.max()))
        counts = np.array([(d2 <= c).sum(1).max() for c in cut2])
        best_counts = np.maximum(best_counts, counts)

    seeds = []
    for length in _seed_lengths(n):
        for start in range(n - length + 1):
            s = np.zeros(n, bool)
            s[start : start + length] = True
            seeds.append(s)
    seeds = _unique_rows(np.stack(seeds))

    for c0 in range(0, len(seeds), _CHUNK):
        d2 = geom.squared_distances(seeds[c0 : c0 + _CHUNK])
        score(d2)
        current = _unique_rows(_collect(d2, d0_search - 1.0))
        for _ in range(_N_ITER):
            d2 = geom.squared_distances(current)
            score(d2)
            new = _collect(d2, d0_search + 1.0)
            # A set that reproduces itself is a fixed point: TMscore stops there.
            moving = np.any(new != current, axis=1)
            if not np.any(moving):
                break
            current = _unique_rows(new[moving])
    return best_tm, best_counts


def structure_scores(
    model: np.ndarray,
    native: np.ndarray,
    mask: Optional[np.ndarray] = None,
    native_length: Optional[int] = None,
) -> StructureScores:
    """RMSD, TM-score, GDT_TS and GDT_HA of a model CA trace against its native.

    One TMscore-style superposition search (see the module docstring) gives
    TM-score and every GDT count, so evaluate with this rather than calling
    ``tm_score``, ``gdt_ts`` and ``gdt_ha`` separately.

    Args:
      model: [L, 3] model CA coordinates (Angstrom).
      native: [L, 3] native CA coordinates in the same residue order.
      mask: optional [L] 0/1: residues present in both structures.
      native_length: normalisation length L_N; default the number of masked
        residues. Pass the full native length when the model misses residues
        (the TMscore program normalises by all native residues).

    Returns:
      StructureScores (GDT values as fractions in [0, 1]).

    Example:
      >>> s = structure_scores(model_ca, native_ca, mask)
      >>> s.tm_score, s.gdt_ts
    """
    x, y = _check_pair(model, native, mask)
    n = len(x)
    if n == 0:
        raise ValueError("structure_scores: no aligned residues")
    lnat = n if native_length is None else int(native_length)
    if lnat < n:
        raise ValueError(f"native_length {lnat} is smaller than the {n} aligned residues")
    d0 = tm_d0(lnat)
    tm, counts = _search(x, y, d0, float(lnat))
    frac = {c: float(k) / lnat for c, k in zip(_ALL_GDT_CUTOFFS, counts)}
    r, t = kabsch(x, y)
    rms = float(np.sqrt(np.mean(np.sum((x @ r.T + t - y) ** 2, axis=-1))))
    return StructureScores(
        rmsd=rms,
        tm_score=tm,
        gdt_ts=float(np.mean([frac[c] for c in GDT_TS_CUTOFFS])),
        gdt_ha=float(np.mean([frac[c] for c in GDT_HA_CUTOFFS])),
        gdt_fractions=frac,
        d0=d0,
        n_aligned=n,
        native_length=lnat,
    )


def tm_score(
    model: np.ndarray,
    native: np.ndarray,
    mask: Optional[np.ndarray] = None,
    native_length: Optional[int] = None,
) -> float:
    """TM-score normalised by the native length (TMscore-program search).

    Args/Returns: as ``structure_scores``; returns the TM-score in (0, 1].
    """
    return structure_scores(model, native, mask, native_length).tm_score


def gdt_ts(
    model: np.ndarray,
    native: np.ndarray,
    mask: Optional[np.ndarray] = None,
    native_length: Optional[int] = None,
) -> float:
    """GDT_TS in [0, 1]: mean best fraction within 1, 2, 4, 8 A (see ``structure_scores``)."""
    return structure_scores(model, native, mask, native_length).gdt_ts


def gdt_ha(
    model: np.ndarray,
    native: np.ndarray,
    mask: Optional[np.ndarray] = None,
    native_length: Optional[int] = None,
) -> float:
    """GDT_HA in [0, 1]: mean best fraction within 0.5, 1, 2, 4 A (see ``structure_scores``)."""
    return structure_scores(model, native, mask, native_length).gdt_ha
