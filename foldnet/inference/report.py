"""Reports of predictions and evaluations: CSV, JSON, markdown tables and plots.

Every file goes through ``foldnet.common.atomic`` (temp file + rename), so an
interrupted run never leaves a truncated report. Plots use matplotlib's Agg
backend (no display needed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from foldnet.common import atomic
from foldnet.common import residue_constants as rc
from foldnet.metrics import contact_probabilities

PathLike = Union[str, os.PathLike]

# Length bins of the evaluation tables: (low, high] residues.
LENGTH_BINS = ((0, 100), (100, 200), (200, 300), (300, 10_000))


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------
# Distogram summaries used by the plots
# ----------------------------------------------------------------------------


def expected_distance(dist_probs: np.ndarray) -> np.ndarray:
    """Expected CB-CB distance [L, L] in Angstrom under a distogram (rc.DISTOGRAM_CENTERS)."""
    return np.asarray(dist_probs, np.float32) @ rc.DISTOGRAM_CENTERS


# ----------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------


def write_csv(rows: Sequence[Mapping[str, Any]], path: PathLike, columns: Optional[Sequence[str]] = None) -> list[str]:
    """Write dict rows as CSV (atomically).

    Args:
      rows: one mapping per row; missing values are written empty.
      path: output file.
      columns: column order (default: keys in first-seen order).

    Returns:
      The columns written.
    """
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    atomic.write_text(path, buf.getvalue())
    return list(columns)


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else f"{float(v):.6g}"
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_json(obj: Any, path: PathLike) -> None:
    """Write JSON (atomically); numpy scalars/arrays become plain numbers/lists, NaN -> null."""
    atomic.write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=False) + "\n")


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def length_bin(length: int) -> str:
    """Label of the LENGTH_BINS bin holding ``length`` (e.g. "101-200")."""
    for lo, hi in LENGTH_BINS:
        if lo < length <= hi:
            return f"{lo + 1}-{hi}" if hi < 10_000 else f">{lo}"
    return f">{LENGTH_BINS[-1][0]}"


def summarize(
    rows: Iterable[Mapping[str, Any]], metrics: Sequence[str], by: Sequence[str]
) -> dict[tuple, dict[str, Any]]:
    """Mean of each metric per group (NaN / missing values left out of that metric's mean).

    Args:
      rows: result rows.
      metrics: numeric columns to average.
      by: grouping columns (e.g. ("method",) or ("method", "cath_class")).

    Returns:
      {group values tuple: {"n": rows in group, metric: mean or None}} in sorted group order.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in by)].append(r)
    out = {}
    for key in sorted(groups, key=lambda t: tuple(str(v) for v in t)):
        g = groups[key]
        entry: dict[str, Any] = {"n": len(g)}
        for m in metrics:
            vals = [float(r[m]) for r in g if r.get(m) not in (None, "") and math.isfinite(float(r[m]))]
            entry[m] = float(np.mean(vals)) if vals else None
        out[key] = entry
    return out


def markdown_table(summary: Mapping[tuple, Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> str:
    """A markdown table of a ``summarize`` result (3 significant decimals)."""
    head = list(by) + ["n"] + list(metrics)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, entry in summary.items():
        cells = [str(k) for k in key] + [str(entry["n"])]
        cells += ["-" if entry.get(m) is None else f"{entry[m]:.3f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------


def plot_prediction(
    dist_probs: np.ndarray, confidence: np.ndarray, path: PathLike, title: str = "",
    distance_error: Optional[np.ndarray] = None,
) -> None:
    """PNG: expected distance map, predicted distance error (or contact map), pLDDT along the sequence.

    Args:
      dist_probs: [L, L, 65] distogram.
      confidence: [L] per-residue confidence (pLDDT, 0-100).
      path: output .png.
      title: figure title (e.g. record id and mode).
      distance_error: [L, L] predicted distance error (A) drawn beside the distance map;
        None: the contact map P(d < 8 A) instead.
    """
    plt = _mpl()
    L = dist_probs.shape[0]
    fig = plt.figure(figsize=(11, 6.2))
    gs = fig.add_gridspec(2, 2, height_ratios=[4, 1.3], hspace=0.35, wspace=0.25)
    ax0, ax1, ax2 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    im0 = ax0.imshow(expected_distance(dist_probs), cmap="viridis_r", vmin=2, vmax=22, origin="upper")
    ax0.set_title("expected CB-CB distance (A)")
    fig.colorbar(im0, ax=ax0, fraction=0.046)
    if distance_error is None:
        im1 = ax1.imshow(contact_probabilities(dist_probs), cmap="Greys", vmin=0, vmax=1, origin="upper")
        ax1.set_title("contact probability P(d < 8 A)")
    else:
        # AlphaFold's PAE colours (green = small error); a distance error, not an aligned one.
        im1 = ax1.imshow(distance_error, cmap="Greens_r", vmin=0, vmax=max(float(np.max(distance_error)), 1.0),
                         origin="upper")
        ax1.set_title("predicted distance error (A)")
    fig.colorbar(im1, ax=ax1, fraction=0.046)
    ax2.plot(np.arange(1, L + 1), np.asarray(confidence), lw=1.2)
    ax2.set_xlim(1, max(L, 2))
    ax2.set_ylim(0, 100)
    ax2.set_xlabel("residue")
    ax2.set_ylabel("pLDDT")
    if title:
        fig.suptitle(title)
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def plot_histograms(values: Mapping[str, Sequence[float]], path: PathLike, xlabel: str, bins=None) -> None:
    """Overlaid histograms of one metric per method (e.g. the TM-score distribution)."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 21) if bins is None else bins
    for name, v in values.items():
        v = [x for x in v if x is not None and math.isfinite(x)]
        if v:
            ax.hist(v, bins=bins, alpha=0.5, label=f"{name} (n={len(v)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("domains")
    ax.legend(fontsize=8)
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_scatter(
    xy: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: PathLike, xlabel: str, ylabel: str
) -> None:
    """Scatter of one metric against another per method (e.g. contact precision vs length)."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in xy.items():
        ax.scatter(x, y, s=12, alpha=0.7, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_distance_maps(examples: Sequence[tuple[str, np.ndarray, np.ndarray]], path: PathLike) -> None:
    """Rows of (true | predicted expected) distance maps for a few domains.

    Args:
      examples: (label, true [L, L] distances, predicted [L, L] expected distances).
      path: output .png.
    """
    plt = _mpl()
    n = max(len(examples), 1)
    fig, axes = plt.subplots(n, 2, figsize=(7, 3.4 * n), squeeze=False)
    for row, (label, true, pred) in enumerate(examples):
        for col, (m, t) in enumerate(((true, "true"), (pred, "predicted"))):
            ax = axes[row, col]
            ax.imshow(np.minimum(m, 22.0), cmap="viridis_r", vmin=2, vmax=22)
            ax.set_title(f"{label} {t}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png", bbox_inches="tight")
    plt.close(fig)


def write_distance_error_json(matrix: np.ndarray, path: PathLike) -> None:
    """``<id>_pde.json`` in the layout of AlphaFold's PAE file, named for what it holds.

    A list with one dict: ``predicted_distance_error`` ([L][L], A, 2 decimals) and
    ``max_predicted_distance_error`` (the largest value the distogram's bins allow: the gap
    between the first and the last bin centre). A distance error, not an aligned error.
    """
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.all(np.isfinite(m)):
        raise ValueError(f"distance error matrix must be a finite [L, L] array, got shape {m.shape}")
    c = rc.DISTOGRAM_CENTERS
    body = [{"predicted_distance_error": np.round(m, 2).tolist(),
             "max_predicted_distance_error": round(float(c[-1] - c[0]), 2)}]
    atomic.write_text(path, json.dumps(body, separators=(",", ":")) + "\n")


def plot_reliability(tables: Mapping[str, tuple], path: PathLike) -> None:
    """Reliability diagram of per-residue pLDDT: mean true lDDT x 100 per pLDDT bin, per method.

    Args:
      tables: method -> (count, mean pLDDT, mean true lDDT) per bin
        (``foldnet.metrics.reliability_table``).
    """
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--", label="perfect")
    for name, (count, mp, mt) in tables.items():
        mp, mt = np.asarray(mp, np.float64), np.asarray(mt, np.float64)
        ok = np.asarray(count) > 0
        ax.plot(mp[ok], mt[ok], marker="o", lw=1.2, label=f"{name} (n={int(np.sum(count))})")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("predicted lDDT-Ca (pLDDT), bin mean")
    ax.set_ylabel("true lDDT-Ca x 100, bin mean")
    ax.legend(fontsize=8)
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    plt.close(fig)
