"""kill -9 in the middle of real ``foldnet`` subprocesses, then the same command again
(issue 14). The suite kills one build (seed 1: during the split-file writes, after an earlier build
of other options) and one download; ``scripts/kill_test.py`` runs every
stage (build, train, predict, evaluate, fetch) with more seeds and writes docs/bench/kill.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import kill_test  # noqa: E402


@pytest.mark.parametrize("stage,seed", [("build", 1), ("fetch", 0)])
def test_killed_stage_reruns_without_loss(stage, seed, tmp_path):
    row = kill_test.run_stage(stage, seed, tmp_path)
    assert row["ok"], row
    assert row["lost"] == 0
    if stage == "fetch" and row["killed"] and row["part_bytes_at_kill"]:
        assert row["resumed"]  # the rerun asked for the rest with a Range request
