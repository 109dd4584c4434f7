"""``scripts/bench_inference.py --out``: runs accumulate in one JSON file and one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_inference  # noqa: E402


def _table(out):
    return [line for line in (out.parent / f"{out.name}.md").read_text().splitlines() if line.startswith("| ")]


def test_runs_accumulate_in_order(tmp_path):
    out = tmp_path / "bench" / "inference"
    out.parent.mkdir()
    first = {"model": "m.yaml", "triangle_blocks": 3, "length": 1003, "network_second_s": 19.43}
    second = {"model": "m.yaml", "triangle_blocks": 0, "length": 1003, "network_second_s": 10.29, "fold_s": 4.5}
    bench_inference.record(out, first, "machine A")
    doc = bench_inference.record(out, second, "machine A")

    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == doc
    assert saved["runs"] == [{**first, "machine": "machine A"}, {**second, "machine": "machine A"}]
    md = out.with_suffix(".md").read_text()
    assert "Machine: machine A. Runs in the order they ran." in md
    header, *body = _table(out)
    # only the columns some run has, in TABLE_COLUMNS' order; a run without one shows "-"
    assert header == "| run | model | triangle_blocks | length | network_second_s | fold_s |"
    assert body == ["| 1 | m.yaml | 3 | 1003 | 19.43 | - |", "| 2 | m.yaml | 0 | 1003 | 10.29 | 4.5 |"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["inference.json", "inference.md"]  # no temp files left


def test_runs_from_two_machines_keep_their_own(tmp_path):
    out = tmp_path / "inference_v1.2"  # a dotted name is kept whole
    # a file written before runs carried their machine: its one label goes to its runs
    (tmp_path / "inference_v1.2.json").write_text(json.dumps({"machine": "old box", "runs": [{"length": 50}]}))
    doc = bench_inference.record(out, {"length": 60}, "new box")

    assert "machine" not in doc
    assert [r["machine"] for r in doc["runs"]] == ["old box", "new box"]
    assert "compare runs of one machine only" in (tmp_path / "inference_v1.2.md").read_text()
    header, *body = _table(out)
    assert header == "| run | length | machine |"
    assert body == ["| 1 | 50 | old box |", "| 2 | 60 | new box |"]
