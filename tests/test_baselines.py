"""Baselines (separation / residue-type priors) and the validation metrics they share with the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.metrics.contacts import contact_probabilities
from foldnet.model.prior import Prior, PriorBuilder, fit_priors
from foldnet.train.baselines import evaluate_baselines
from foldnet.train.validate import (
    MetricAccumulator,
    ValConfig,
    top_l5_long_range_precision,
    validation_batches,
    withhold_profile,
)

from dataset_fixtures import train_val_h5


@pytest.fixture(scope="module")
def small_splits(tmp_path_factory, testdata):
    return train_val_h5(testdata, tmp_path_factory.mktemp("baseline_h5"), 24, 6)


def test_separation_prior_counts_by_hand():
    # 4 residues on a line 5 A apart: separations 1, 2, 3 -> 5, 10, 15 A; one pair per
    # separation at s=2,3 would be pooled with max_separation=2.
    b = PriorBuilder(max_separation=2)
    x = np.arange(4) * 5.0
    d = np.abs(x[:, None] - x[None, :])
    pm = np.ones((4, 4), np.float32)
    pm[0, 3] = pm[3, 0] = 0.0  # the 15 A pair is unknown: not counted
    tors = np.zeros((4, 3), np.float32)
    b.add_chain(np.zeros(4, np.int64), d, pm, tors, np.zeros((4, 3), np.float32))
    c = b.pair_counts
    assert c.sum() == 5  # 6 pairs i<j, one masked
    assert c[1, rc.distance_to_bin(np.float32(5.0))] == 3  # (0,1) (1,2) (2,3)
    assert c[2, rc.distance_to_bin(np.float32(10.0))] == 2  # (0,2) (1,3), pooled row s>=2
    p = b.build()
    # Laplace smoothing: row 1 has 3 counts in one bin, 65 pseudo-counts in all.
    K = rc.NUM_DIST_BINS
    assert p.dist_probs[1, rc.distance_to_bin(np.float32(5.0))] == pytest.approx(4 / (3 + K))
    assert p.dist_probs[1, 0] == pytest.approx(1 / (3 + K))
    np.testing.assert_allclose(p.dist_probs.sum(1), 1.0, rtol=1e-6)
    # predict: separation 5 uses the pooled row.
    ri = np.array([[0, 1, 5]])
    out = p.predict({"residue_index": ri, "aatype": np.zeros((1, 3), np.int64)})
    np.testing.assert_array_equal(out["dist_probs"][0, 0, 2], p.dist_probs[2])
    np.testing.assert_array_equal(out["dist_probs"][0, 1, 0], p.dist_probs[1])


def test_torsion_prior_is_circular_mean_per_type():
    b = PriorBuilder(max_separation=4)
    # Ala (0): phi 170 and -170 deg -> circular mean 180 (the arithmetic mean would say 0).
    # Gly (5): psi 10 and 30 -> 20. Cys (1): never seen -> falls back to the global mean.
    aat = np.array([0, 0, 5, 5])
    tors = np.deg2rad(np.array([[170, 0, 0], [-170, 0, 0], [0, 10, 0], [0, 30, 0]], np.float64)).astype(np.float32)
    tmask = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], np.float32)
    b.add_chain(aat, np.zeros((4, 4)), np.zeros((4, 4)), tors, tmask)
    p = b.build()
    assert abs(abs(np.degrees(p.torsion_mean[0, 0])) - 180.0) < 1e-3
    assert np.degrees(p.torsion_mean[5, 1]) == pytest.approx(20.0, abs=1e-4)
    assert p.torsion_counts[0, 0] == 2 and p.torsion_counts[5, 1] == 2 and p.torsion_counts[1].sum() == 0
    np.testing.assert_allclose(p.torsion_mean[1], p.torsion_mean[rc.UNK_INDEX])
    # global means over the defined angles only: phi {170, -170} -> 180, psi {10, 30} -> 20
    assert abs(abs(np.degrees(p.torsion_mean[rc.UNK_INDEX, 0])) - 180.0) < 1e-3
    assert np.degrees(p.torsion_mean[rc.UNK_INDEX, 1]) == pytest.approx(20.0, abs=1e-4)


def test_top_l5_precision_by_hand():
    L = 60  # round(L/5) = 12 long-range pairs are scored
    d = np.full((L, L), 20.0)
    pm = np.ones((L, L))
    probs = np.zeros((L, L))
    # the 12 highest-probability long-range pairs; 9 of them true contacts -> 0.75
    pairs = [(0, 30 + k) for k in range(12)]
    for n, (i, j) in enumerate(pairs):
        probs[i, j] = probs[j, i] = 0.9
        if n < 9:
            d[i, j] = d[j, i] = 6.0
    # a short-range true contact with the top probability is not long range (|i-j| < 24)
    probs[1, 5] = probs[5, 1] = 1.0
    d[1, 5] = d[5, 1] = 5.0
    # a true long-range contact ranked 13th (probability 0.1) is outside the top 12
    d[2, 50] = d[50, 2] = 7.0
    probs[2, 50] = probs[50, 2] = 0.1
    assert top_l5_long_range_precision(probs, d, pm) == pytest.approx(0.75)
    # unknown pairs are never candidates: hide 3 of the true contacts -> the top 12 now
    # holds 6 true contacts, the 3 non-contacts at 0.9, the 0.1 contact and 2 zeros
    pm[0, 30:33] = pm[30:33, 0] = 0
    assert top_l5_long_range_precision(probs, d, pm) == pytest.approx(7 / 12)
    # no long-range true contact at all: no precision (left out of the average)
    assert top_l5_long_range_precision(probs[:20, :20], d[:20, :20], pm[:20, :20]) is None


def test_accumulator_uniform_nll_and_mae():
    L = 30
    acc = MetricAccumulator()
    uniform = np.full((L, L, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS, np.float32)
    tors = np.zeros((L, 3), np.float32)
    tors[:, 0] = np.deg2rad(-60.0)
    tors[:, 1] = np.deg2rad(170.0)
    tmask = np.ones((L, 3), np.float32)
    tmask[0, 0] = 0  # phi of the first residue is undefined
    pred = {"phi": np.full(L, np.deg2rad(-70.0)), "psi": np.full(L, np.deg2rad(-170.0))}
    acc.add_chain(uniform, pred, np.full((L, L), 10.0), np.ones((L, L)), tors, tmask)
    r = acc.result()
    assert r["dist_nll"] == pytest.approx(math.log(rc.NUM_DIST_BINS), rel=1e-6)
    assert r["num_pairs"] == L * L - L  # diagonal excluded
    assert r["phi_mae_deg"] == pytest.approx(10.0, abs=1e-4)
    assert r["psi_mae_deg"] == pytest.approx(20.0, abs=1e-4)  # across the +-180 seam
    assert r["torsion_mae_deg"] == pytest.approx(15.0, abs=1e-4)


def test_priors_on_real_chains(small_splits, tmp_path):
    train, val = small_splits
    prior = fit_priors(train, max_separation=32)
    assert prior.num_chains == 24
    # Adjacent CB-CB distances are 4.5-7 A: the s=1 row must peak there, and the pooled
    # far row must put most mass beyond 8 A.
    peak_d = rc.DISTOGRAM_CENTERS[np.argmax(prior.dist_probs[1])]
    assert 4.0 < peak_d < 7.5
    far_contact = float(contact_probabilities(prior.dist_probs[32]))
    assert far_contact < 0.2
    # the save/load round trip is exact
    p2 = Prior.load(prior.save(tmp_path / "prior.npz"))
    np.testing.assert_array_equal(p2.dist_probs, prior.dist_probs)
    np.testing.assert_array_equal(p2.torsion_mean, prior.torsion_mean)

    cfg = ValConfig(num_chains=5, mode="full", batch_size=2, pad_multiple=64)
    batches = list(validation_batches(val, cfg))
    assert sum(int((b["example_id"] >= 0).sum()) for b in batches) == 5
    assert all(b["aatype"].shape[1] % 64 == 0 for b in batches)
    # the FASTA-only input: the same chains and targets, no profile
    assert any(b["has_profile"].any() and b["profile"].any() for b in batches)
    for b, s in zip(batches, withhold_profile(iter(batches)), strict=True):
        assert not s["has_profile"].any() and not s["profile"].any()
        assert s["profile"].shape == b["profile"].shape and s["profile"].dtype == b["profile"].dtype
        for k in ("aatype", "cb_dist", "pair_mask", "torsions", "example_id"):
            np.testing.assert_array_equal(s[k], b[k])
    res = evaluate_baselines(val, prior, cfg)
    assert res["num_chains"] == 5
    # better than the uniform distogram, and better than guessing 0 for every angle
    assert res["dist_nll"] < math.log(rc.NUM_DIST_BINS) - 0.5
    zero = MetricAccumulator()
    for b in batches:
        for k in range(b["aatype"].shape[0]):
            if b["example_id"][k] < 0:
                continue
            n = int(b["length"][k])
            zero.add_chain(None, {"phi": np.zeros(n), "psi": np.zeros(n)}, b["cb_dist"][k, :n, :n],
                           b["pair_mask"][k, :n, :n], b["torsions"][k, :n], b["torsion_mask"][k, :n])
    z = zero.result()
    assert res["phi_mae_deg"] < z["phi_mae_deg"] and res["psi_mae_deg"] < z["psi_mae_deg"]
    assert 0.0 <= res["lr_top_l5_precision"] <= 1.0
    # crop mode scores the same first chains through centred crops
    res_crop = evaluate_baselines(val, prior, ValConfig(num_chains=5, mode="crop", crop_size=64, batch_size=2))
    assert res_crop["num_chains"] == 5
