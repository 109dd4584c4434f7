"""Calibrated confidence: distance error, correlation / ECE metrics, isotonic map, mmCIF metrics.

Every expected number here is computed by hand in the comment next to it.
"""

import io
import json
import math

import numpy as np
import pytest

from foldnet import metrics as M
from foldnet.common import geometry_np, pdb_io
from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.inference import report
from foldnet.metrics.calibration import average_ranks
from foldnet.structure import confidence as C

NB = rc.NUM_DIST_BINS


def _one_hot(length, bins):
    p = np.zeros((length, length, NB))
    p[np.arange(length)[:, None], np.arange(length)[None, :], bins] = 1.0
    return p


def test_distance_error_of_one_hot_is_zero():
    bins = np.random.default_rng(0).integers(0, NB, (5, 5))
    bins = np.minimum(bins, bins.T)
    assert np.allclose(C.distance_error_matrix(_one_hot(5, bins)), 0.0)


def test_distance_error_of_two_bins_is_half_the_gap():
    # Half the mass at centre c3, half at c10: E[d] is their midpoint, E|d - E[d]| = (c10 - c3) / 2.
    p = np.zeros((2, 2, NB))
    p[..., 3] = p[..., 10] = 0.5
    c = rc.DISTOGRAM_CENTERS
    assert np.allclose(C.distance_error_matrix(p), 0.5 * (c[10] - c[3]))
    # 3:1 at the same bins: mean = c3 + (c10 - c3) / 4 -> 0.75 * gap/4 + 0.25 * 3 gap/4 = 3/8 gap.
    p[..., 3], p[..., 10] = 0.75, 0.25
    assert np.allclose(C.distance_error_matrix(p), 0.375 * (c[10] - c[3]))


def test_bad_distograms_are_refused():
    p = np.full((3, 3, NB), 1.0 / NB)
    p[0, 1, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        C.distance_error_matrix(p)
    with pytest.raises(ValueError, match=r"\[L, L, 65\]"):
        C.distance_error_matrix(np.ones((3, 4, NB)))
    with pytest.raises(ValueError, match="model_dist must be"):
        C.residue_features(np.full((3, 3, NB), 1.0 / NB), np.zeros((4, 4)), False)


def test_pearson_spearman_hand_values():
    # x = 1..4, y = 1, 3, 2, 4: centred products sum 4.0 over sqrt(5 * 5) -> r = 0.8;
    # the ranks equal the values, so Spearman is 0.8 as well.
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    assert M.pearson(x, y) == pytest.approx(0.8)
    assert M.spearman(x, y) == pytest.approx(0.8)
    # A monotone but non-linear relation: Spearman 1, Pearson below 1.
    assert M.spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3, 4], [1, 10, 100, 1000]) < 0.9
    # Ties share their mean rank: [1, 1, 2] -> ranks 1.5, 1.5, 3.
    assert np.allclose(average_ranks([1, 1, 2]), [1.5, 1.5, 3.0])
    assert math.isnan(M.pearson([1, 2], [3, 4]))
    assert M.pearson([1, 2, np.nan, 4], [1, 2, 5, 4]) == pytest.approx(1.0)


def test_ece_perfect_and_offset():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 100, 5000)
    assert M.regression_ece(pred, pred) == pytest.approx(0.0)
    # Truth always 7 below the prediction: every bin is off by 7.
    assert M.regression_ece(pred, pred - 7.0) == pytest.approx(7.0)
    count, mp, mt = M.reliability_table([5.0, 15.0, 16.0], [10.0, 20.0, 30.0], 10)
    assert count[:3].tolist() == [1, 2, 0]
    assert mp[1] == pytest.approx(15.5) and mt[1] == pytest.approx(25.0)
    # (1 * |5 - 10| + 2 * |15.5 - 25|) / 3 = 24 / 3 = 8
    assert M.regression_ece([5.0, 15.0, 16.0], [10.0, 20.0, 30.0], 10) == pytest.approx(8.0)


def test_isotonic_fit_pools_violators():
    # y = 1, 3, 2, 4: the violating pair (3, 2) pools to 2.5.
    kx, ky = C.isotonic_fit([0, 1, 2, 3], [1, 3, 2, 4])
    assert np.allclose(np.interp([0, 1, 2, 3], kx, ky), [1, 2.5, 2.5, 4])
    assert np.all(np.diff(ky) >= 0)


def test_calibration_is_monotone_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    feats = rng.uniform(0, 1, (400, len(C.FEATURES)))
    true = np.clip(100 * feats[:, 1] + rng.normal(0, 5, 400), 0, 100)
    calib = C.Calibration.fit(feats, true, {"test": True})
    grid = np.zeros((11, len(C.FEATURES)))
    grid[:, 1] = np.linspace(0, 1, 11)
    pred = calib.predict(grid)
    assert np.all(np.diff(pred) >= 0) and pred.min() >= 0 and pred.max() <= 100
    assert M.pearson(calib.predict(feats), true) > 0.9
    (tmp_path / C.CALIBRATION_FILE).write_text(calib.to_json())
    again = C.load_calibration(tmp_path)
    assert np.allclose(again.predict(feats), calib.predict(feats))
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {C.CALIBRATION_FILE: "0" * 64}}))
    with pytest.raises(ValueError, match="does not match the manifest"):
        C.load_calibration(tmp_path)
    (tmp_path / "manifest.json").unlink()
    bad = json.loads(calib.to_json())
    bad["features"] = ["other"]
    (tmp_path / C.CALIBRATION_FILE).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="refit"):
        C.load_calibration(tmp_path)


def test_missing_calibration_falls_back_with_a_warning(tmp_path, caplog):
    assert C.load_calibration(tmp_path) is None
    assert "uncalibrated" in caplog.text
    p = np.full((4, 4, NB), 1.0 / NB)
    assert np.allclose(C.model_confidence(None, p, np.zeros((4, 4)), False), C.residue_confidence(p)[0])


def test_expected_lddt_feature_of_an_exact_model_is_one():
    # The model's distances sit on the bin centres the distogram puts all mass on: every
    # near pair scores all four thresholds.
    d = np.array([[0, 5, 9], [5, 0, 6], [9, 6, 0]], float)
    bins = rc.distance_to_bin(d)
    p = _one_hot(3, bins)
    centres = rc.DISTOGRAM_CENTERS[bins]
    f = C.residue_features(p, centres, True)
    assert np.allclose(f[:, C.FEATURES.index("expected_lddt")], 1.0)
    assert np.allclose(f[:, C.FEATURES.index("has_profile")], 1.0)


def test_window_features_hand_values():
    # window_mean over +-1: (0+3)/2, (0+3+6)/3, (3+6)/2; a window wider than the chain is the chain mean.
    assert np.allclose(C.window_mean(np.array([0.0, 3.0, 6.0]), 1), [1.5, 3.0, 4.5])
    assert np.allclose(C.window_mean(np.array([0.0, 3.0, 6.0]), 8), 3.0)
    # Columns of residue_features: the windowed ones are window means of their base columns.
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.ones(NB), (12, 12))
    d = rng.uniform(3, 20, (12, 12))
    d = 0.5 * (d + d.T)
    f = C.residue_features(p, d, False)
    col = C.FEATURES.index
    assert np.allclose(f[:, col("expected_lddt_window3")], C.window_mean(f[:, col("expected_lddt")], 3))
    assert np.allclose(f[:, col("expected_lddt_window8")], C.window_mean(f[:, col("expected_lddt")], 8))
    assert np.allclose(f[:, col("sharpness_window3")], C.window_mean(f[:, col("sharpness")], 3))


def test_version_1_calibration_of_the_first_model_still_loads():
    # foldnet-base-cpu-v1 ships a five-feature calibration: it reads only those columns.
    from foldnet.inference.pretrained import checkpoint_home

    calib = C.load_calibration(checkpoint_home("pretrained:foldnet-base-cpu-v1", None)[0])
    assert calib.features == C.FEATURES[:5] and len(calib.weights) == 6
    feats = np.random.default_rng(5).uniform(0, 1, (20, len(C.FEATURES)))
    score = calib.weights[0] + feats[:, :5] @ np.asarray(calib.weights[1:])
    want = np.clip(np.interp(score, calib.knots_x, calib.knots_y), 0, 100)
    assert np.allclose(calib.predict(feats), want, atol=1e-4)
    assert json.loads(calib.to_json())["version"] == 1
    with pytest.raises(ValueError, match=r"features must be \[N, 8\]"):
        C.Calibration.fit(feats[:, :5], feats[:, 0])


def test_pde_json_layout(tmp_path):
    m = np.array([[0.0, 1.234], [1.234, 0.0]])
    report.write_distance_error_json(m, tmp_path / "x_pde.json")
    body = json.loads((tmp_path / "x_pde.json").read_text())
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["predicted_distance_error"] == [[0.0, 1.23], [1.23, 0.0]]
    assert body[0]["max_predicted_distance_error"] > 0
    with pytest.raises(ValueError):
        report.write_distance_error_json(np.array([[np.nan]]), tmp_path / "y_pde.json")


def test_mmcif_carries_plddt_and_round_trips(testdata, tmp_path):
    from Bio.PDB import MMCIFParser
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    from foldnet.data.structure_parser import read_structure

    p = next(iter_proteinnet(testdata / "proteinnet" / "validation.gz"))
    p = geometry_np.with_virtual_cb(p.select(np.arange(30)))
    plddt = np.round(np.linspace(10.0, 95.5, 30), 2).astype(np.float32)
    p = p.replace(b_factors=plddt, id="m1")
    path = tmp_path / "m1.cif"
    pdb_io.write_mmcif(p, path, local_metric="pLDDT")
    s = MMCIFParser(QUIET=True).get_structure("m1", str(path))
    ca_b = [r["CA"].get_bfactor() for r in next(iter(s[0]))]
    assert np.allclose(ca_b, plddt, atol=0.01)
    d = MMCIF2Dict(str(path))
    assert d["_ma_qa_metric.name"] == ["pLDDT"]
    assert np.allclose(np.asarray(d["_ma_qa_metric_local.metric_value"], float), plddt, atol=0.01)
    back = read_structure(path)
    assert np.allclose(np.asarray(back.b_factors), plddt, atol=0.01)


def test_write_outputs_both_formats_carry_the_calibrated_plddt(testdata, tmp_path):
    from types import SimpleNamespace

    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    from foldnet.inference.predict import write_outputs

    p = next(iter_proteinnet(testdata / "proteinnet" / "validation.gz"))
    p = geometry_np.with_virtual_cb(p.select(np.arange(24))).replace(id="q1")
    dmap, _ = geometry_np.cb_distance_map(p)
    probs = _one_hot(24, rc.distance_to_bin(dmap))
    dist = {"dist_probs": probs, "phi_probs": np.full((24, 36), 1 / 36), "psi_probs": np.full((24, 36), 1 / 36),
            "pair_coverage": np.ones((24, 24))}
    rng = np.random.default_rng(3)
    feats = rng.uniform(0, 1, (200, len(C.FEATURES)))
    calib = C.Calibration.fit(feats, 100 * feats[:, 1])
    fold_result = SimpleNamespace(protein=p, energy=1.0, confidence=np.zeros(24))
    conf = write_outputs(tmp_path, p, dist, fold_result, False, False, calibration=calib, fmt="both")
    # The model is the native and the distogram one-hot on it: expected lDDT 1 -> the top of the map.
    assert np.allclose(conf, calib.predict(C.residue_features(probs, dmap, False)), atol=1e-4)
    pde = json.loads((tmp_path / "q1_pde.json").read_text())[0]["predicted_distance_error"]
    assert np.allclose(pde, 0.0)
    d = MMCIF2Dict(str(tmp_path / "q1.cif"))
    assert np.allclose(np.asarray(d["_ma_qa_metric_local.metric_value"], float), conf, atol=0.01)
    assert (tmp_path / "q1.pdb").is_file()
    with pytest.raises(ValueError, match="distogram is"):
        write_outputs(tmp_path, p.select(np.arange(20)), dist, fold_result, False, False)
