"""Validation curves of training runs side by side, against training wall-clock.

Reads each run's ``metrics.jsonl`` and plots, per metric, the "val" lines (the EMA when the
run kept one), and where present "val_raw" (the raw parameters) and "val_train" (the same
scoring on training chains: the train/validation gap that says whether a recipe is
capacity- or step-limited). Writes a PNG and a JSON of the plotted points.

Usage:
  python scripts/compare_runs.py LABEL=RUN_DIR_OR_METRICS_JSONL ... --out docs/pretrained/runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.common import atomic  # noqa: E402

METRICS = (("dist_nll", "distogram NLL (nats)"), ("lr_top_l5_precision", "long-range top-L/5 precision"))
KINDS = (("val", "-", "validation"), ("val_raw", ":", "validation, raw params"), ("val_train", "--", "training chains"))


def read_points(path: Path) -> dict[str, list[dict]]:
    """{kind: [{"step", "minutes", metric...}]} of the validation lines of one run."""
    f = path / "metrics.jsonl" if path.is_dir() else path
    out: dict[str, list[dict]] = {}
    for line in f.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") in {k for k, _, _ in KINDS}:
            point = {"step": rec["step"], "minutes": rec.get("elapsed_s", float("nan")) / 60.0}
            point.update({m: rec.get(m) for m, _ in METRICS})
            out.setdefault(rec["kind"], []).append(point)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=PATH (a run directory or its metrics.jsonl)")
    ap.add_argument("--out", required=True, help="output path without suffix (.png and .json are written)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for spec in args.runs:
        label, _, path = spec.partition("=")
        if not path:
            ap.error(f"{spec!r}: expected LABEL=PATH")
        runs[label] = read_points(Path(path))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4.2))
    for ax, (metric, title) in zip(axes, METRICS):
        for r, (label, kinds) in enumerate(runs.items()):
            color = f"C{r}"
            for kind, style, what in KINDS:
                pts = [p for p in kinds.get(kind, []) if p[metric] is not None]
                if pts:
                    ax.plot([p["minutes"] for p in pts], [p[metric] for p in pts], style, color=color,
                            marker="o", ms=3, label=f"{label}: {what}")
        ax.set_xlabel("training wall-clock (min)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.out)
    with atomic.atomic_path(out.with_suffix(".png"), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    atomic.write_text(out.with_suffix(".json"), json.dumps(runs, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
