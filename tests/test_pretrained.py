"""The shipped pretrained model: integrity, export round trip, and that it is a trained network."""

from __future__ import annotations

import hashlib
import json
import shutil

import jax
import numpy as np
import pytest

from foldnet.inference import pretrained
from foldnet.inference.pretrained import load_for_inference

from inference_fixtures import make_tiny_run


def test_default_model_is_shipped_small_and_verified():
    assert pretrained.DEFAULT_MODEL in pretrained.available()
    d = pretrained.model_dir()
    manifest = json.loads((d / "manifest.json").read_text())
    assert (d / "params.msgpack").stat().st_size == manifest["params_bytes"] < 8 * 2**20
    cfg, params = pretrained.load_pretrained()
    n = sum(np.size(x) for x in jax.tree.leaves(params))
    assert n == manifest["num_params"]
    assert all(np.asarray(x).dtype == np.float32 for x in jax.tree.leaves(params))
    # It was trained: its recorded validation beats the separation prior's NLL on the same chains.
    prior_nll = 2.273  # docs/training.md: separation prior on the first 48 validation chains
    assert manifest["validation_at_step"]["dist_nll"] < prior_nll


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    shutil.copytree(pretrained.model_dir(), tmp_path / pretrained.DEFAULT_MODEL)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    blob = bytearray((tmp_path / pretrained.DEFAULT_MODEL / "params.msgpack").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / pretrained.DEFAULT_MODEL / "params.msgpack").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="does not match the manifest"):
        pretrained.load_pretrained()


def test_export_round_trip(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    out = pretrained.export_pretrained(run, "tiny-test", out_root=tmp_path / "models", extra={"note": "x"},
                                       extra_files={"confidence.json": b"{}\n"})
    manifest = json.loads((out / "manifest.json").read_text())
    # sha256 of the three bytes "{}\n"
    assert manifest["files"]["confidence.json"] == hashlib.sha256(b"{}\n").hexdigest()
    assert (out / "confidence.json").read_bytes() == b"{}\n"
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "manifest.json", "params.msgpack", "confidence.json"}
    assert not any(p.name.startswith(".") for p in (tmp_path / "models").iterdir())  # no temp left
    cfg_a, params_a = load_for_inference(run)
    import foldnet.inference.pretrained as P

    old = P.PRETRAINED_DIR
    try:
        P.PRETRAINED_DIR = tmp_path / "models"
        cfg_b, params_b = load_for_inference("pretrained:tiny-test")
    finally:
        P.PRETRAINED_DIR = old
    assert cfg_a == cfg_b
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((out / "manifest.json").read_text())["note"] == "x"
