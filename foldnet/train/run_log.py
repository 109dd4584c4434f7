"""Run logging: JSONL metrics, TensorBoard scalars, PNG curves.

One :class:`RunLogger` per run. Only process 0 of a multi-host job writes
(``enabled=False`` elsewhere makes every call a no-op), so hosts never race on
the same files. ``metrics.jsonl`` is append-only, one JSON object per line and
flushed per line: a crash loses at most the line being written, and a resumed
run appends to the same file (entries carry their ``step`` and ``kind``, so a
reader can keep the last entry per step when a resume repeats a few steps).
The PNG is written through :mod:`foldnet.common.atomic` (temp + rename).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from foldnet.common.atomic import atomic_path


def _to_jsonable(value: Any) -> Any:
    """Scalars/arrays -> plain JSON types; NaN/inf become null (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / jax arrays and numpy scalars
        return _to_jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: str | os.PathLike, kind: Optional[str] = None) -> list[dict]:
    """Read ``metrics.jsonl``.

    Args:
      path: the JSONL file.
      kind: keep only entries whose ``kind`` equals this ("train", "val", "skip", ...).

    Returns:
      The entries in file order.
    """
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            if kind is None or entry.get("kind") == kind:
                out.append(entry)
    return out


class RunLogger:
    """JSONL + TensorBoard writer for one run directory.

    Args:
      run_dir: the run directory; writes ``metrics.jsonl`` and ``tb/``.
      enabled: False on processes other than 0 (every method becomes a no-op).
      tensorboard: also write TensorBoard event files with tensorboardX.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._fh = None
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter  # heavy import, only on the writing host

            self._tb = SummaryWriter(logdir=str(self.run_dir / "tb"), flush_secs=30)

    def log(self, kind: str, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one JSON line ``{"kind", "step", **metrics}`` and the scalars to TensorBoard.

        Args:
          kind: entry type, also the TensorBoard tag prefix ("train", "val", "skip", ...).
          step: the global training step.
          metrics: name -> scalar (or small list, JSON only).
        """
        if not self.enabled:
            return
        entry = {"kind": kind, "step": int(step), **_to_jsonable(dict(metrics))}
        self._fh.write(json.dumps(entry, sort_keys=False) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                v = np.asarray(value)
                if v.ndim == 0 and np.issubdtype(v.dtype, np.number) and np.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{name}", float(v), int(step))

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _series(entries: Iterable[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric, keeping the last entry per step (resumes repeat steps)."""
    by_step: dict[int, float] = {}
    for e in entries:
        v = e.get(key)
        if isinstance(v, (int, float)) and v is not None:
            by_step[int(e["step"])] = float(v)
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def plot_curves(
    jsonl_path: str | os.PathLike,
    png_path: str | os.PathLike,
    baselines: Optional[Mapping[str, float]] = None,
) -> Path:
    """Plot training loss and the validation metrics from ``metrics.jsonl`` into one PNG.

    Panels: training loss; validation distogram NLL; long-range top-L/5 precision;
    phi/psi MAE. Horizontal dashed lines mark the baseline (prior) values when given.

    Args:
      jsonl_path: the run's ``metrics.jsonl``.
      png_path: where to write the PNG (atomically).
      baselines: metric name -> prior value (keys as in the "val" entries).

    Returns:
      The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on CI and compute nodes without a display
    import matplotlib.pyplot as plt

    entries = read_jsonl(jsonl_path)
    train = [e for e in entries if e.get("kind") == "train"]
    val = [e for e in entries if e.get("kind") == "val"]
    panels = [
        ("training loss", train, ["loss"]),
        ("val distogram NLL (nats)", val, ["dist_nll"]),
        ("val long-range top-L/5 precision", val, ["lr_top_l5_precision"]),
        ("val torsion MAE (deg)", val, ["phi_mae_deg", "psi_mae_deg"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, src, keys) in zip(axes, panels):
        for key in keys:
            steps, values = _series(src, key)
            if len(steps):
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=key)
            if baselines and key in baselines and baselines[key] is not None:
                ax.axhline(float(baselines[key]), ls="--", lw=1, color="gray", label=f"prior {key}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png_path
