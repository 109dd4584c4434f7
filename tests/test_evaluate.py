"""``foldnet evaluate`` on real held-out CATH test domains (foldnet.inference.evaluate)."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest

from foldnet.common import geometry_np
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.inference import evaluate as ev
from foldnet.inference.tiling import TilingConfig
from foldnet.structure import FoldConfig

from inference_fixtures import FAST_FOLD, make_tiny_run

# Two held-out test domains of the same length (38 residues: one fold compilation),
# both with a ProteinNet profile in testing.gz; 38 > crop 32, so the network is tiled.
DOMAINS = ("4cj0B", "5gqoB")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_root):
    from foldnet.model.prior import PriorBuilder

    d = tmp_path_factory.mktemp("evaluate")
    make_tiny_run(d / "run")
    (d / "ids.txt").write_text("# two test domains\n" + "\n".join(f"{x}00" for x in DOMAINS) + "\n")
    # A prior from 30 real training chains (the evaluate default fits on 1000).
    builder = PriorBuilder()
    for prot in itertools.islice(iter_proteinnet(data_root / "proteinnet" / "training.gz"), 30):
        dist, pmask = geometry_np.cb_distance_map(prot)
        tors, tmask = geometry_np.backbone_torsions(prot)
        builder.add_chain(prot.aatype, dist, pmask, np.nan_to_num(tors), tmask)
    builder.build().save(d / "prior.npz")
    return d


def _cfg(workdir, data_root, **kw):
    base = dict(
        checkpoint=str(workdir / "run"), out_dir=str(workdir / "out"), data_root=str(data_root),
        split_file=str(workdir / "ids.txt"), max_domains=2, prior=str(workdir / "prior.npz"),
        tiling=TilingConfig(crop_size=32, stride=16, batch_size=4), fold=FoldConfig(**FAST_FOLD), progress=False,
    )
    base.update(kw)
    return ev.EvaluateConfig(**base)


@pytest.fixture(scope="module")
def first_run(workdir, data_root):
    return ev.evaluate(_cfg(workdir, data_root))


def _rows(workdir):
    with open(workdir / "out" / "results.csv") as fh:
        return list(csv.DictReader(fh))


def test_unset_tiling_takes_the_runs_training_crop(workdir, data_root, first_run, tmp_path):
    import shutil

    from omegaconf import OmegaConf

    run = tmp_path / "run32"
    shutil.copytree(workdir / "run", run)
    config = OmegaConf.load(run / "config.yaml")
    config.data = {"crop_size": 32}  # trained on 32-residue crops: evaluate tiles with 32, like first_run
    OmegaConf.save(config, run / "config.yaml")
    summary = ev.evaluate(_cfg(workdir, data_root, checkpoint=str(run), out_dir=str(tmp_path / "out"),
                               methods=["single"], max_domains=1, tiling=TilingConfig(stride=16, batch_size=4)))
    assert summary["settings"]["tiling"]["crop_size"] == 32  # recorded resolved
    with open(tmp_path / "out" / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    (same,) = [r for r in _rows(workdir) if r["id"] == row["id"] and r["method"] == "single"]
    for key in ("dist_nll", "prec_long_L5", "mae_long_d8", "phi_mae_deg"):
        assert row[key] == same[key], key


def test_report_files_and_columns(workdir, first_run):
    out = workdir / "out"
    assert first_run["counts"] == {"evaluated": 2, "resumed": 0, "failed": 0}
    for name in ("results.csv", "summary.json", "report.md", "failures.csv", "tm_score_distribution.png",
                 "contact_precision_vs_length.png", "example_distance_maps.png"):
        assert (out / name).is_file(), name
    with open(out / "results.csv") as fh:
        assert next(csv.reader(fh)) == ev.CSV_COLUMNS
    rows = _rows(workdir)
    # Both domains have a ProteinNet profile, so every method scores both.
    assert sorted((r["id"], r["method"]) for r in rows) == sorted(
        (f"{d}00", m) for d in DOMAINS for m in ev.METHODS
    )
    for r in rows:
        assert r["length"] == "38" and r["length_bin"] == "1-100"
        assert r["cath_class"] == "2" and r["cath_topology"] == "2.40.50"
        assert 0.0 < float(r["tm_score"]) <= 1.0 and float(r["rmsd"]) > 0
        assert 0.0 <= float(r["lddt_ca"]) <= 1.0 and 0.0 <= float(r["gdt_ha"]) <= float(r["gdt_ts"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_domains"] == 2 and summary["paired_domains"] == 2
    assert set(summary["overall"]) == set(ev.METHODS)
    for m in ev.METHODS:
        c = summary["confidence_calibration"][m]
        assert c["num_domains"] == 2 and c["num_residues"] > 0
        assert -1.0 <= c["residue_pearson"] <= 1.0 and 0.0 <= c["ece"] <= 100.0
        assert 0.0 <= c["mean_plddt"] <= 100.0 and sum(c["reliability"]["count"]) == 2 * 38
    assert (out / "plddt_reliability.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "## Confidence calibration" in md
    for heading in ("## Overall", "## By CATH class", "## By length", "| true_distogram | 2 |"):
        assert heading in md


def test_baselines_are_sane(workdir, data_root, first_run):
    from foldnet.data.structure_parser import read_structure

    rows = {(r["id"], r["method"]): r for r in _rows(workdir)}
    for d in DOMAINS:
        true = rows[(f"{d}00", "true_distogram")]
        single = rows[(f"{d}00", "single")]
        native = read_structure(data_root / "promod3_structure_db" / "pdb_single_domain" / f"{d}.pdb.gz")
        dist, _ = geometry_np.cb_distance_map(native)
        sep = np.subtract.outer(np.arange(len(native)), np.arange(len(native)))
        # The smoothed native distogram ranks pairs by their true distance, so its
        # top-L/5 precision is the best possible: min(#contacts, k) / k.
        for name, sel in (("medium", (sep <= -12) & (sep >= -23)), ("long", sep <= -24)):
            n = int(np.sum(dist[sel] < 8.0))
            k = round(len(native) / 5)
            expected = min(n, k) / k if n else None
            got = true[f"prec_{name}_L5"]
            assert (got == "" if expected is None else float(got) == pytest.approx(expected)), (d, name, n, got)
        # ... and explains the native distances far better than a random network.
        assert float(true["mae_short_d8"]) < 0.5
        assert float(true["dist_nll"]) < float(rows[(f"{d}00", "prior")]["dist_nll"]) < float(single["dist_nll"])
        assert float(true["phi_mae_deg"]) < 5.0


def test_rerun_skips_evaluated_domains(workdir, data_root, first_run):
    files = sorted((workdir / "out" / "domains").glob("*.json"))
    assert [f.stem for f in files] == [f"{d}00" for d in DOMAINS]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = ev.evaluate(_cfg(workdir, data_root))
    assert again["counts"] == {"evaluated": 0, "resumed": 2, "failed": 0}
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert again["overall"]["single"]["tm_score"] == pytest.approx(first_run["overall"]["single"]["tm_score"])


def test_default_domains_are_the_held_out_test_split(data_root):
    # The profile lookup (promod3 name -> ProteinNet id) is covered by first_run: both
    # domains got a "profile" row. Here only the list, so no ProteinNet scan.
    cfg = ev.EvaluateConfig(data_root=str(data_root), max_domains=3, max_length=40, methods=["prior"])
    doms = list(ev.iter_domains(cfg))
    assert all(isinstance(d, ev.Domain) for d in doms) and len(doms) == 3
    table = {}
    with open(data_root / "promod3_structure_db" / "splits_recommended.tsv") as fh:
        for line in fh:
            f = line.rstrip("\n").split("\t")
            table[f[0]] = f
    for d in doms:
        row = table[d.id]
        assert row[1] == "test" and row[4] == "1" and len(d.protein) <= 40
        assert d.protein.cath == row[5]  # REMARK 901 label = the table's superfamily
        assert d.profile is None and d.source.endswith(f"{d.id}.pdb.gz")
    assert ev.proteinnet_id("16pkA") == "16pk_1_A"


def test_missing_structure_is_reported(workdir, data_root, tmp_path):
    (tmp_path / "ids.txt").write_text("9zzzA00\n")
    doms = list(ev.iter_domains(_cfg(workdir, data_root, split_file=str(tmp_path / "ids.txt"))))
    assert doms == [("9zzzA00", f"no structure file for 9zzzA00 in {data_root / 'promod3_structure_db' / 'pdb_single_domain'}")]


def test_network_methods_need_a_checkpoint(workdir, data_root, tmp_path, monkeypatch):
    """Without checkpoint= the bundled model is used; where none is shipped, a clear error."""
    from foldnet.inference import pretrained

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "no_models")
    with pytest.raises(ValueError, match="checkpoint="):
        ev.evaluate(_cfg(workdir, data_root, checkpoint=None, out_dir=str(workdir / "nock")))


def test_configs_compose():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from foldnet.inference.config import register_configs, to_config
    from foldnet.inference.predict import PredictConfig

    register_configs()
    configs = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        e = to_config(compose("evaluate", overrides=["fold=fast", "fold.num_steps=20", "methods=[prior]"]), ev.EvaluateConfig)
        assert isinstance(e.fold, FoldConfig) and e.fold.num_steps == 20 and e.fold.num_restarts == 4
        assert e.methods == ["prior"] and e.tiling == TilingConfig(pad_multiple=16) and e.workers == 1
        p = to_config(compose("predict", overrides=["input=x.fasta", "tiling.crop_size=64"]), PredictConfig)
        assert p.tiling.crop_size == 64 and p.tiling.pad_multiple == 1 and p.checkpoint is None
        with pytest.raises(ConfigCompositionException):
            compose("predict", overrides=["fold.num_steps=many"])
        with pytest.raises(ValueError, match="even"):
            to_config(compose("predict", overrides=["input=x", "tiling.crop_size=33"]), PredictConfig)
