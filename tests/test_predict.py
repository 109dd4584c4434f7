"""``foldnet predict`` on real files with a tiny random network (foldnet.inference.predict)."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import sys

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.alignment import RAW_PROFILE, msa_to_profile, read_aln, training_profile
from foldnet.data.errors import ParseError
from foldnet.inference import features
from foldnet.inference.predict import PredictConfig, predict
from foldnet.inference.tiling import TilingConfig
from foldnet.structure import FoldConfig

from inference_fixtures import FAST_FOLD, make_tiny_run

NPZ_KEYS = {
    "dist_probs", "phi_probs", "psi_probs", "confidence", "contact_probs", "dist_bin_edges",
    "torsion_bin_centers_deg", "sequence", "has_profile", "fold_energy", "pair_coverage", "record_id", "settings",
}


@pytest.fixture(scope="module")
def aln_path(data_root):
    return data_root / "pdnet_related" / "deepcon_examples" / "16pkA0.aln.gz"


@pytest.fixture(scope="module")
def query(aln_path):
    with gzip.open(aln_path, "rt") as fh:
        return fh.readline().strip()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, query, aln_path):
    d = tmp_path_factory.mktemp("predict")
    make_tiny_run(d / "run")
    # Record 2 has a digit in its sequence (line 5): reported and skipped.
    (d / "in.fasta").write_text(f">16pkA phosphoglycerate kinase\n{query[:130]}\n{query[130:]}\n>broken\nACDE1FGH\n")
    (d / "msa").mkdir()
    shutil.copy(aln_path, d / "msa" / "16pkA.aln.gz")
    return d


def _cfg(workdir, out, msa=None):
    return PredictConfig(
        input=str(workdir / "in.fasta"), checkpoint=str(workdir / "run"), out_dir=str(workdir / out),
        msa_dir=None if msa is None else str(workdir / msa), tiling=TilingConfig(crop_size=64, stride=32, batch_size=4),
        fold=FoldConfig(**FAST_FOLD), progress=False,
    )


@pytest.fixture(scope="module")
def single_run(workdir):
    return predict(_cfg(workdir, "single"))


@pytest.fixture(scope="module")
def profile_run(workdir):
    return predict(_cfg(workdir, "profile", msa="msa"))


def _pdb_ca_bfactors(path):
    return np.array([float(l[60:66]) for l in path.read_text().splitlines() if l.startswith("ATOM") and l[12:16] == " CA "])


def test_valid_record_finishes_invalid_is_reported(workdir, single_run, query):
    ok, bad = single_run
    assert ok.ok and ok.id == "16pkA" and ok.length == len(query) == 256 and ok.mode == "single"
    assert ok.num_windows > 1  # 256 residues in 64-residue windows
    assert not bad.ok and bad.id == "broken"
    assert "in.fasta:5" in bad.error and "invalid sequence character '1'" in bad.error
    out = workdir / "single"
    assert sorted(p.name for p in out.iterdir()) == ["16pkA.npz", "16pkA.pdb", "16pkA.png", "16pkA_pde.json", "predict.log", "summary.tsv"]
    rows = [l.split("\t") for l in (out / "summary.tsv").read_text().splitlines()]
    assert rows[0][:4] == ["id", "ok", "length", "mode"]
    assert rows[1][:4] == ["16pkA", "1", "256", "single"] and rows[2][:2] == ["broken", "0"]
    assert (out / "16pkA.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pdb_reparses_with_confidence_in_bfactors(workdir, single_run, query):
    from foldnet.data.structure_parser import read_structure

    prot = read_structure(workdir / "single" / "16pkA.pdb")
    assert prot.sequence == query
    assert np.all(prot.atom_mask[:, :4] == 1)
    ca = prot.atom_positions[:, rc.CA_IDX]
    # Folding builds the chain with ideal trans peptides: consecutive CA 3.8 A apart.
    np.testing.assert_allclose(np.linalg.norm(np.diff(ca, axis=0), axis=-1), rc.CA_CA_TRANS, atol=0.05)
    with np.load(workdir / "single" / "16pkA.npz") as z:
        np.testing.assert_allclose(_pdb_ca_bfactors(workdir / "single" / "16pkA.pdb"), z["confidence"], atol=0.006)


def test_npz_keys_and_normalised_distributions(workdir, single_run, query):
    with np.load(workdir / "single" / "16pkA.npz") as z:
        assert set(z.files) == NPZ_KEYS
        L = len(query)
        p = z["dist_probs"]
        assert p.shape == (L, L, rc.NUM_DIST_BINS) and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(p, p.transpose(1, 0, 2))
        for k in ("phi_probs", "psi_probs"):
            assert z[k].shape == (L, rc.NUM_TORSION_BINS)
            np.testing.assert_allclose(z[k].sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(z["contact_probs"], p[..., :19].sum(-1), atol=1e-6)  # bins below 8 A
        assert z["confidence"].shape == (L,) and 0 <= z["confidence"].min() <= z["confidence"].max() <= 100
        assert str(z["sequence"]) == query and float(z["has_profile"]) == 0.0
        assert z["pair_coverage"].min() >= 1
        np.testing.assert_allclose(z["dist_bin_edges"], rc.DISTOGRAM_EDGES)


def test_profile_mode_uses_the_alignment(workdir, single_run, profile_run, aln_path):
    ok, bad = profile_run
    assert ok.ok and ok.mode == "profile" and not bad.ok
    with np.load(workdir / "profile" / "16pkA.npz") as zp, np.load(workdir / "single" / "16pkA.npz") as zs:
        assert float(zp["has_profile"]) == 1.0
        # Same network, same sequence: only the profile input differs.
        assert np.abs(zp["dist_probs"] - zs["dist_probs"]).max() > 1e-4
    prof = features.alignment_profile(aln_path, read_aln(aln_path)[0], "16pkA")
    # The default is the training-matching profile (tests/test_profile_match.py); RAW_PROFILE the old one.
    np.testing.assert_allclose(prof, training_profile(read_aln(aln_path)))
    raw = features.alignment_profile(aln_path, read_aln(aln_path)[0], "16pkA", RAW_PROFILE)
    np.testing.assert_allclose(raw, msa_to_profile(read_aln(aln_path)))
    np.testing.assert_allclose(prof.sum(-1), 1.0, atol=1e-5)


def test_alignment_must_match_the_sequence(aln_path, query):
    with pytest.raises(ParseError, match=r"does not match the FASTA sequence of 'x'.*position 3"):
        features.alignment_profile(aln_path, query[:2] + "W" + query[3:], "x")


def test_single_sequence_features():
    from foldnet.common.protein import from_sequence

    f = features.input_features(from_sequence("x", "ACDXW"))
    np.testing.assert_array_equal(f["aatype"], [0, 1, 2, 20, 18])
    assert f["has_profile"] == 0.0 and not f["profile"].any()
    np.testing.assert_array_equal(f["residue_index"], np.arange(5))


def test_find_alignment_order(tmp_path):
    assert features.find_alignment(tmp_path, "q") is None
    (tmp_path / "q.aln.gz").write_bytes(b"")
    (tmp_path / "q.a3m").write_text(">q\nAC\n")
    assert features.find_alignment(tmp_path, "q").name == "q.a3m"
    assert features.find_alignment(None, "q") is None


def test_cli_without_checkpoint_uses_bundled_model_or_explains(workdir, tmp_path, monkeypatch):
    """No checkpoint: the bundled model is used; with none shipped, exit 2 with a clear message."""
    import os
    import subprocess
    from pathlib import Path

    from foldnet.inference import pretrained
    from foldnet.inference.pretrained import load_for_inference

    cfg, params = load_for_inference(None)  # the shipped default, checksum verified
    assert cfg.name and len(params) > 0

    # A checkout without the shipped model (an empty pretrained dir) must explain itself.
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    with pytest.raises(ValueError, match="no bundled pretrained model"):
        load_for_inference(None)

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "foldnet.cli.main", "predict", f"input={workdir / 'missing.fasta'}",
           f"out_dir={workdir / 'cli'}"]
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "missing.fasta does not exist" in res.stderr
    assert not (workdir / "cli").exists() and not (workdir / "outputs").exists()


def test_failures_are_counted(single_run):
    from foldnet.inference.predict import RecordResult

    assert [r.ok for r in single_run] == [True, False]
    assert RecordResult("x", ok=False, error="boom").line() == "x: FAILED: boom"


def test_checkpoint_locations(workdir, tmp_path):
    from foldnet.inference.checkpoint_io import resolve_checkpoint
    from foldnet.inference.pretrained import load_for_inference

    run = workdir / "run"
    for loc in (run, run / "checkpoints", run / "checkpoints" / "1"):
        root, step, run_dir = resolve_checkpoint(loc)
        assert (root, step, run_dir) == (run / "checkpoints", 1, run)
    with pytest.raises(FileNotFoundError, match=r"step 7 not in .* \(have \[1\]\)"):
        resolve_checkpoint(run, step=7)
    with pytest.raises(FileNotFoundError, match="no checkpoint step directories"):
        resolve_checkpoint(tmp_path)
    model_cfg, params = load_for_inference(run)
    assert model_cfg.name == "tiny" and "trunk_1d" in params and "distogram_head" in params
    shutil.copytree(run / "checkpoints", tmp_path / "copy" / "checkpoints")
    with pytest.raises(FileNotFoundError, match="no saved run config"):
        load_for_inference(tmp_path / "copy")


def test_tiling_defaults_to_the_training_crop(workdir, single_run, tmp_path):
    from omegaconf import OmegaConf

    from foldnet.inference.pretrained import available, training_crop

    assert training_crop(workdir / "run") == 128  # a hand-written config without data.crop_size: the fallback
    if "foldnet-base-cpu" in available():
        assert training_crop(None) == 128  # the shipped model's recipe
    run = tmp_path / "run64"
    shutil.copytree(workdir / "run", run)
    config = OmegaConf.load(run / "config.yaml")
    config.data = {"crop_size": 64}
    OmegaConf.save(config, run / "config.yaml")
    assert training_crop(run) == 64 and training_crop(run / "checkpoints" / "1") == 64

    # unset crop: windows of the run's 64 residues, the same network output as single_run's explicit 64 / 32
    cfg = dataclasses.replace(_cfg(workdir, "unused"), checkpoint=str(run), out_dir=str(tmp_path / "out"),
                              tiling=TilingConfig(stride=32, batch_size=4))
    predict(cfg)
    assert "windows of 64 residues (stride 32)" in (tmp_path / "out" / "predict.log").read_text()
    with np.load(tmp_path / "out" / "16pkA.npz") as a, np.load(workdir / "single" / "16pkA.npz") as b:
        assert a["pair_coverage"].max() > 1  # tiled: the chain is longer than 64
        for k in ("dist_probs", "pair_coverage", "phi_probs"):
            np.testing.assert_array_equal(a[k], b[k])


def test_fold_reference_prior_is_the_background_of_the_distogram_term(data_root, workdir, caplog):
    """Folding the prior's own distogram relative to the prior leaves a zero distogram term."""
    import logging

    from foldnet.data.proteinnet import iter_proteinnet
    from foldnet.inference import pretrained
    from foldnet.inference.predict import fold_distributions, load_checkpoint_prior, prior_distogram

    prior = load_checkpoint_prior(None)  # the bundled model's prior.npz
    assert prior is not None
    assert load_checkpoint_prior(f"pretrained:{pretrained.DEFAULT_MODEL}") is not None
    protein = next(p for p in iter_proteinnet(data_root / "proteinnet" / "validation.gz") if 40 <= len(p) <= 60)
    ref = prior_distogram(prior, protein)
    L = len(protein)
    assert ref.shape == (L, L, rc.NUM_DIST_BINS)
    np.testing.assert_allclose(ref.sum(-1), 1.0, atol=1e-4)
    uniform = np.full((L, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS, np.float32)
    dist = {"dist_probs": ref, "phi_probs": uniform, "psi_probs": uniform}
    cfg = FoldConfig(**FAST_FOLD)
    relative = fold_distributions(protein, dist, cfg, 0, prior)
    absolute = fold_distributions(protein, dist, cfg, 0, None)
    assert abs(relative.energy_terms["distogram"]) < 1e-3
    assert absolute.energy_terms["distogram"] > 10.0
    # A run without a prior.npz folds without a background, and says so.
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint_prior(str(workdir / "run")) is None
    assert "prior.npz does not exist" in caplog.text
    with pytest.raises(ValueError, match="fold_reference"):
        PredictConfig(input="x.fasta", fold_reference="background")


def test_evaluate_fingerprint_tracks_fold_reference():
    from foldnet.inference.evaluate import EvaluateConfig, settings_fingerprint

    a = settings_fingerprint(EvaluateConfig(fold_reference="prior"), "ckpt")
    b = settings_fingerprint(EvaluateConfig(fold_reference="none"), "ckpt")
    assert a != b  # a resumed run never mixes results folded with and without the background
    with pytest.raises(ValueError, match="fold_reference"):
        EvaluateConfig(fold_reference="yes")
