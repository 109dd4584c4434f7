"""The README's held-out results table from one or more ``foldnet evaluate`` output folders.

Reads each folder's ``results.csv`` (one row per domain and method) and ``summary.json``
(wall time), keeps the domains that every listed method scored (paired comparison), and
prints one markdown row per method (a method found in several folders: the last folder wins): contact precision, distance MAE, NLL, torsion MAE and
the structure scores, with TM-score mean, median and fraction >= 0.5.

Usage:
  python scripts/results_table.py outputs/eval_model outputs/eval_baselines [--methods single,profile,prior,true_distogram]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

LABELS = {"single": "model, single-sequence", "profile": "model, profile", "prior": "separation prior",
          "true_distogram": "true distogram (ceiling)"}
COLUMNS = [("prec_long_L5", "long P@L/5", 3), ("prec_long_L2", "long P@L/2", 3), ("prec_long_L", "long P@L", 3),
           ("prec_medium_L5", "med P@L/5", 3), ("prec_medium_L2", "med P@L/2", 3), ("prec_medium_L", "med P@L", 3),
           ("mae_long_d8", "MAE<8 Å (long)", 1), ("mae_long_d12", "MAE<12 Å (long)", 1), ("dist_nll", "NLL", 3),
           ("phi_mae_deg", "φ MAE°", 1), ("psi_mae_deg", "ψ MAE°", 1), ("gdt_ts", "GDT_TS", 3),
           ("lddt_ca", "lDDT-Cα", 3), ("rmsd", "RMSD Å", 1)]


def load(folders: list[Path]) -> tuple[dict[str, dict[str, dict]], float]:
    """{method: {domain: row}} over all folders, and their summed wall time."""
    rows: dict[str, dict[str, dict]] = {}
    seconds = 0.0
    for folder in folders:
        with open(folder / "results.csv", newline="") as f:
            for r in csv.DictReader(f):
                rows.setdefault(r["method"], {})[r["id"]] = r
        seconds += json.loads((folder / "summary.json").read_text())["seconds_total"]
    return rows, seconds


def table(rows: dict[str, dict[str, dict]], methods: list[str]) -> tuple[str, int]:
    common = set.intersection(*(set(rows.get(m, {})) for m in methods))
    lines = ["| method | " + " | ".join(c[1] for c in COLUMNS) + " | TM mean | TM median | TM ≥ 0.5 |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for m in methods:
        sel = [rows[m][d] for d in sorted(common)]

        def col(key):
            v = np.array([float(r[key]) for r in sel if r[key] not in ("", "nan")], float)
            return v[np.isfinite(v)]

        cells = [f"{col(k).mean():.{p}f}" for k, _, p in COLUMNS]
        tm = col("tm_score")
        cells += [f"{tm.mean():.3f}", f"{np.median(tm):.3f}", f"{np.mean(tm >= 0.5):.0%}"]
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines), len(common)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--methods", default="single,profile,prior,true_distogram")
    args = ap.parse_args(argv)
    rows, seconds = load(args.folders)
    methods = [m for m in args.methods.split(",") if m in rows]
    text, n = table(rows, methods)
    print(text)
    print(f"\n{n} domains scored by every method; evaluation wall time {seconds:.0f} s in total.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
