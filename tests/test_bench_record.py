"""``scripts/bench_inference.py --out``: runs accumulate in one JSON file and one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_inference  # noqa: E402


def test_runs_accumulate_in_order(tmp_path):
    out = tmp_path / "bench" / "inference"
    out.parent.mkdir()
    first = {"model": "m.yaml", "triangle_blocks": 3, "length": 1003, "network_second_s": 19.43}
    second = {"model": "m.yaml", "triangle_blocks": 0, "length": 1003, "network_second_s": 10.29, "fold_s": 4.5}
    bench_inference.record(out, first, "machine A")
    doc = bench_inference.record(out, second, "machine B")

    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == doc
    assert saved["machine"] == "machine A"  # the file's first run named the machine
    assert saved["runs"] == [first, second]
    rows = [line for line in out.with_suffix(".md").read_text().splitlines() if line.startswith("| ")]
    header, *body = rows
    # only the columns some run has, in TABLE_COLUMNS' order; a run without one shows "-"
    assert header == "| run | model | triangle_blocks | length | network_second_s | fold_s |"
    assert body == ["| 1 | m.yaml | 3 | 1003 | 19.43 | - |", "| 2 | m.yaml | 0 | 1003 | 10.29 | 4.5 |"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["inference.json", "inference.md"]  # no temp files left
