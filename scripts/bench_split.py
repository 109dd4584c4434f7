"""Benchmark the leakage report (foldnet.data.split.leakage_report) on the bundled split.

Times the exact / near-duplicate (5-mer containment) / shared-topology report over every
chain of promod3_structure_db (train, val, test of splits_recommended.tsv), the check that
``foldnet build-dataset`` runs on each build. It used to be a timed assertion in
tests/test_split.py (``took < 30``); a wall-clock bound belongs in a benchmark, not a test.

Writes docs/bench/split.json and docs/bench/split.md.

Usage:
  python scripts/bench_split.py [--data-root DIR] [--out docs/bench] [--repeats 3] [--budget-s 30]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from foldnet.common import paths  # noqa: E402
from foldnet.data import split as S  # noqa: E402


def _inputs(root: Path) -> dict[str, S.LeakageInput]:
    """Every chain of the bundled split file, with its sequence and CATH labels."""
    db = root / "promod3_structure_db"
    labels = S.read_chain_labels(db / "chains.tsv.gz")
    with gzip.open(db / "chains.tsv.gz", "rt") as fh:
        rows = csv.DictReader((line.lstrip("#") if i == 0 else line for i, line in enumerate(fh)), delimiter="\t")
        sequence = {row["name"]: row["sequence"] for row in rows}
    inputs: dict[str, S.LeakageInput] = {}
    for name, split in sorted(S.read_split_file(db / "splits_recommended.tsv").items()):
        d = inputs.setdefault(split, S.LeakageInput())
        d.ids.append(name)
        d.sequences.append(sequence[name])
        d.cath.append(labels.get(name, ""))
    return inputs

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(REPO / "docs" / "bench"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=30.0, help="exit 1 when the best time exceeds it")
    args = ap.parse_args()
    inputs = _inputs(paths.data_root(args.data_root))
    n = sum(len(d.ids) for d in inputs.values())
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        rep = S.leakage_report(inputs)
        times.append(time.perf_counter() - t0)
    leaks = {p: {k: e[k]["count"] for k in ("exact_duplicates", "near_duplicates", "shared_topology")}
             for p, e in rep["pairs"].items()}
    result = {
        "benchmark": "leakage_report", "chains": n, "splits": {s: len(d.ids) for s, d in inputs.items()},
        "seconds": times, "best_s": min(times), "budget_s": args.budget_s,
        "within_budget": min(times) < args.budget_s, "leaks": leaks,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Leakage report benchmark (scripts/bench_split.py)", "",
          f"{n} chains ({', '.join(f'{s} {k}' for s, k in result['splits'].items())}), "
          f"{args.repeats} repeats: best {min(times):.2f} s, all {', '.join(f'{t:.2f}' for t in times)} s "
          f"(budget {args.budget_s:.0f} s: {'ok' if result['within_budget'] else 'EXCEEDED'}).", "",
          "| pair | exact dup | near dup | shared topology |", "|---|---|---|---|"]
    md += [f"| {p} | {c['exact_duplicates']} | {c['near_duplicates']} | {c['shared_topology']} |" for p, c in leaks.items()]
    (out / "split.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
