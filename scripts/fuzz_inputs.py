"""Run the whole malformed-input corpus (``tests/fuzz_corpus.py``) and report the counts.

    python scripts/fuzz_inputs.py                 # seed 0, 8 cases per (format, mutation)
    python scripts/fuzz_inputs.py --per-mutation 12 --seed 3

Writes ``docs/bench/fuzz.json`` (every case's outcome) and ``docs/bench/fuzz.md`` (counts per
format: cases, correct results, clean errors, tracebacks, hangs, partial files, plus the first
tracebacks). Exit status 1 when any case is a traceback, a hang or a partial file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import fuzz_corpus  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-mutation", type=int, default=8)
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "fuzz"))
    ap.add_argument("--data-root", default=os.environ.get("FOLDNET_DATA", str(REPO.parent / "shared" / "data")))
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)  # per-record warnings of the batch jobs: thousands of lines
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="foldnet-fuzz-") as tmp:
        work = Path(tmp)
        cases = fuzz_corpus.generate(Path(args.data_root), work, seed=args.seed, per_mutation=args.per_mutation)
        outcomes = []
        for i, case in enumerate(cases):
            outcomes.append(fuzz_corpus.run_case(case, work))
            if (i + 1) % 200 == 0:
                print(f"{i + 1}/{len(cases)} cases, {time.perf_counter() - t0:.0f} s", flush=True)
    summary = fuzz_corpus.summarize(outcomes)
    summary.update(seed=args.seed, per_mutation=args.per_mutation, seconds=round(time.perf_counter() - t0, 1))
    bad = [o for o in outcomes if o.category in ("traceback", "hang", "partial_file")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({**dataclasses.asdict(o), "detail": o.detail[:240]}) for o in outcomes]
    out.with_suffix(".json").write_text(
        '{"summary": ' + json.dumps(summary, indent=1) + ',\n "cases": [\n' + ",\n".join(rows) + "\n]}\n")
    cols = ("cases", "correct", "clean_error", "traceback", "hang", "partial_file", "errors_reported",
            "with_line_or_record")
    lines = [
        "# Malformed-input corpus (issue 14)", "",
        f"`python scripts/fuzz_inputs.py --seed {args.seed} --per-mutation {args.per_mutation}`: "
        f"{summary['total']['cases']} cases in {summary['seconds']} s "
        "(generated from real bundle files by `tests/fuzz_corpus.py`; categories defined there). "
        "Batch readers (FASTA, ProteinNet) skip and report bad records and go on, so their cases are "
        "`correct` with the skipped records counted in `errors_reported`; `with_line_or_record` counts "
        "the errors that also give the line or the record (binary formats have neither).", "",
        "| format | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols),
    ]
    for fmt, row in sorted(summary["by_format"].items()):
        lines.append(f"| {fmt} | " + " | ".join(str(row[c]) for c in cols) + " |")
    lines.append("| **total** | " + " | ".join(f"**{summary['total'][c]}**" for c in cols) + " |")
    if bad:
        lines += ["", "## Failures", ""]
        for o in bad[:30]:
            lines += [f"* `{o.case}` ({o.category}):", "", "```", o.detail.strip()[-800:], "```"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(summary["by_format"]) + 2]))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
