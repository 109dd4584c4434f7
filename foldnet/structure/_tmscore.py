"""A small TM-score for tests and benchmarks of the folder (numpy; private).

Zhang & Skolnick (2004, Proteins 57:702) TM-score with a fixed residue correspondence:
``max_R,t (1/L) sum_i 1 / (1 + (d_i / d0)^2)``, ``d0 = 1.24 (L - 15)^(1/3) - 1.8``
(at least 0.5). The maximum over superpositions is searched as in TM-score: Kabsch fits on
seed fragments of length L, L/2, L/4, ... (>= 4) at several offsets, each refined by
re-fitting on the residues within ``d0 + 1`` A until the set stops changing. The full,
verified implementation lives in ``foldnet.metrics``; this one only needs to be right
enough to judge folding (it can only underestimate the maximum).
"""

from __future__ import annotations

import numpy as np


def _kabsch(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cx, cy = x.mean(0), y.mean(0)
    h = (x - cx).T @ (y - cy)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cy - r @ cx


def tm_score(pred: np.ndarray, native: np.ndarray) -> float:
    """TM-score of ``pred`` [L, 3] against ``native`` [L, 3] (CA atoms, same residues)."""
    x = np.asarray(pred, np.float64)
    y = np.asarray(native, np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"tm_score: expected two [L, 3] arrays, got {x.shape}, {y.shape}")
    n = len(x)
    d0 = max(0.5, 1.24 * np.cbrt(max(n, 16) - 15.0) - 1.8)
    best = 0.0
    frag = n
    while True:
        step = max(1, frag // 2)
        for start in range(0, n - frag + 1, step):
            sel = np.arange(start, start + frag)
            for _ in range(20):
                r, t = _kabsch(x[sel], y[sel])
                d = np.linalg.norm(x @ r.T + t - y, axis=1)
                best = max(best, float(np.mean(1.0 / (1.0 + (d / d0) ** 2))))
                new = np.nonzero(d < d0 + 1.0)[0]
                if len(new) < 3 or np.array_equal(new, sel):
                    break
                sel = new
        if frag <= 4:
            break
        frag = max(4, frag // 2)
    return best
