"""Contact, distogram-distance and torsion metrics against hand-computed numbers.

Also cross-checks contact precision against a plain-Python transcription of
PDNet's ``disteval.calculate_contact_precision`` on PDNet's real 1guuA maps.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.metrics import (
    NUM_CONTACT_BINS,
    argmax_distance,
    calibration_table,
    circular_abs_error_deg,
    circular_correlation,
    circular_mae,
    contact_calibration_error,
    contact_precision,
    contact_probabilities,
    distance_errors,
    distance_mae,
    distogram_nll,
    expected_angle,
    expected_calibration_error,
    expected_distance,
    mean_over_proteins,
    separation_mask,
    top_k_count,
    torsion_metrics,
)

# --------------------------------------------------------------------------
# Contact probabilities and expected distances from a distogram
# --------------------------------------------------------------------------


def _one_hot(bins: np.ndarray) -> np.ndarray:
    return np.eye(rc.NUM_DIST_BINS)[bins]


def test_contact_bins_are_those_below_8A():
    # 0.3125 A bins from 2 A: the 19th upper edge is 7.9375 A, the 20th 8.25 A.
    assert NUM_CONTACT_BINS == 19
    assert rc.DISTOGRAM_EDGES[19] == pytest.approx(7.9375)
    probs = _one_hot(np.array([0, 18, 19, 64]))
    np.testing.assert_array_equal(contact_probabilities(probs), [1.0, 1.0, 0.0, 0.0])
    uniform = np.full((2, 2, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS)
    np.testing.assert_allclose(contact_probabilities(uniform), 19 / 65)
    with pytest.raises(ValueError, match="65 bins"):
        contact_probabilities(np.ones((3, 64)))


def test_expected_and_argmax_distance_by_hand():
    # Bin 0 centre 2.15625, bin 10 centre 5.28125, overflow 22.3125.
    p = np.zeros((3, rc.NUM_DIST_BINS))
    p[0, 10] = 1.0
    p[1, 0], p[1, 10] = 0.25, 0.75  # 0.25*2.15625 + 0.75*5.28125 = 4.5
    p[2, 64] = 1.0
    np.testing.assert_allclose(expected_distance(p), [5.28125, 4.5, 22.3125], rtol=1e-6)
    np.testing.assert_allclose(argmax_distance(p), [5.28125, 5.28125, 22.3125], rtol=1e-6)


# --------------------------------------------------------------------------
# Contact precision
# --------------------------------------------------------------------------


def test_top_k_rounding_follows_pdnet_round():
    assert top_k_count(32, 0.2) == 6  # 6.4
    assert top_k_count(33, 0.2) == 7  # 6.6
    assert top_k_count(33, 0.5) == 16  # 16.5 -> half to even
    assert top_k_count(35, 0.5) == 18  # 17.5 -> half to even
    assert top_k_count(30, 1.0) == 30
    assert top_k_count(2, 0.2) == 1  # round(0.4) = 0 raised to 1


def test_separation_ranges():
    m = separation_mask(40, "short")
    assert m[0, 6] and m[0, 11] and not m[0, 5] and not m[0, 12] and not m[6, 0]
    m = separation_mask(40, "medium")
    assert m[0, 12] and m[0, 23] and not m[0, 24]
    m = separation_mask(40, "long")
    assert m[0, 24] and m[10, 39] and not m[0, 23]
    assert separation_mask(40, "medium_long").sum() == separation_mask(40, "medium").sum() + separation_mask(
        40, "long"
    ).sum()
    with pytest.raises(ValueError, match="unknown separation range"):
        separation_mask(10, "far")


def _hand_map():
    """L = 30: 21 long-range candidate pairs (j - i >= 24), hand-ranked."""
    L = 30
    true = np.full((L, L), 20.0)
    np.fill_diagonal(true, 0.0)
    for i, j in [(0, 24), (1, 25), (2, 26), (3, 29), (0, 7), (0, 12)]:
        true[i, j] = true[j, i] = 5.0
    probs = np.full((L, L), 0.1)
    # Ranked long-range predictions (symmetrised value in brackets):
    #  1 (0,25) 0.9 F   2 (0,24) 0.8 T   3 (2,26) 0.7 T   4 (5,29) 0.6 F
    #  5 (4,28) 0.5 F   6 (1,25) 0.4 T   7.. the 15 others tied at 0.1.
    for (i, j), v in {(0, 25): 0.9, (0, 24): 0.8, (2, 26): 0.7, (5, 29): 0.6, (4, 28): 0.5}.items():
        probs[i, j] = probs[j, i] = v
    # (1, 25) given asymmetrically: (0.7 + 0.1) / 2 = 0.4 after symmetrisation.
    probs[1, 25], probs[25, 1] = 0.7, 0.1
    return true, probs


def test_contact_precision_hand_counted():
    true, probs = _hand_map()
    out = contact_precision(probs, true, ranges=("long",))
    # top L/5 = 6: T at ranks 2, 3, 6 -> 3/6.
    assert out["long/top_L/5"] == pytest.approx(3 / 6)
    # top L/2 = 15: ranks 7..15 are the first 9 of the 15 tied pairs, taken in
    # reverse row-major order: (4,29), (3,29), (3,28), (3,27), (2,29), (2,28),
    # (2,27), (1,29), (1,28); (3,29) is the only true one -> (3 + 1) / 15.
    assert out["long/top_L/2"] == pytest.approx(4 / 15)
    # top L = 30 > 21 candidates: all of them, 4 true contacts -> 4/21.
    assert out["long/top_L"] == pytest.approx(4 / 21)


def test_contact_precision_ranges_masks_and_nan():
    true, probs = _hand_map()
    out = contact_precision(probs, true, ranges=("short", "medium"))
    # Short: the one true contact (0,7) ties at 0.1 with all 129 short
    # candidates; ties put the later row-major pair first, so row 0 comes last
    # and none of the top 6 / 15 / 30 is a contact. (Earlier-first tie-breaking
    # would put (0,7) first and give 1/6.)
    assert separation_mask(30, "short").sum() == 129
    for tag in ("L/5", "L/2", "L"):
        assert out[f"short/top_{tag}"] == 0.0
        assert out[f"medium/top_{tag}"] == 0.0
    # A range with no true contact is NaN (and skipped when averaging).
    true_nc = np.full((30, 30), 20.0)
    out_nc = contact_precision(probs, true_nc, ranges=("long",))
    assert math.isnan(out_nc["long/top_L/5"])
    # Residue 0 unknown: L drops to 29 (top L/5 = 6), pairs of residue 0 leave.
    masked = true.copy()
    masked[0, :] = masked[:, 0] = np.nan
    out_m = contact_precision(probs, masked, ranges=("long",))
    # Ranking without row 0: (2,26) T, (5,29) F, (4,28) F, (1,25) T, then ties
    # (4,29) F, (3,29) T -> 3/6.
    assert out_m["long/top_L/5"] == pytest.approx(3 / 6)
    # An explicit residue mask does the same.
    mask = np.ones(30)
    mask[0] = 0
    assert contact_precision(probs, true, mask, ranges=("long",)) == out_m


def test_mean_over_proteins_skips_nan():
    avg = mean_over_proteins([{"a": 0.5, "b": math.nan}, {"a": 1.0, "b": 0.25}, {"a": math.nan, "b": math.nan}])
    assert avg["a"] == pytest.approx(0.75) and avg["a/n"] == 2
    assert avg["b"] == pytest.approx(0.25) and avg["b/n"] == 1


def _pdnet_reference_precision(cpred, ctrue, minsep, topxl):
    """PDNet disteval.calculate_contact_precision, transcribed loop for loop (no sklearn)."""
    L = len(cpred)
    lpdb = int(np.sum(~np.isnan(np.diagonal(ctrue))))
    p_dict = {}
    for j in range(L):
        for k in range(j, L):
            if np.isnan(ctrue[j, k]) or np.isnan(cpred[j, k]) or abs(j - k) < minsep:
                continue
            p_dict[(j, k)] = cpred[j, k]
    nc = sum(
        1
        for j in range(L)
        for k in range(j, L)
        if not np.isnan(ctrue[j, k]) and abs(j - k) >= minsep and ctrue[j, k] == 1
    )
    if nc < 1:
        return math.nan
    xl = {"L/5": round(0.2 * lpdb), "L/2": round(0.5 * lpdb), "L": lpdb}[topxl]
    true_list = []
    for pair in reversed(sorted(p_dict.items(), key=lambda x: x[1])):
        true_list.append(ctrue[pair[0][0], pair[0][1]])
        xl -= 1
        if xl == 0:
            break
    return float(np.mean(true_list))


def test_contact_precision_matches_pdnet_on_real_1guuA(data_root):
    d = data_root / "pdnet_related" / "disteval_1guuA"
    true = np.load(d / "1guuA.true.npy").astype(np.float64)
    pred_dist = np.load(d / "1guuA.predicted.npy")[..., 0].astype(np.float64)
    # PDNet's distance -> contact conversion (metrics.py): 4 / d, capped at 1.
    c = np.minimum(4.0 / (pred_dist + 1e-6), 1.0)
    # PDNet symmetrises into the upper triangle before ranking.
    c_sym = 0.5 * (c + c.T)
    ctrue = (true < 8.0).astype(np.float64)
    ours = contact_precision(c, true, ranges=("medium_long", "long"))
    for name, minsep in (("medium_long", 12), ("long", 24)):
        for tag in ("L/5", "L/2", "L"):
            ref = _pdnet_reference_precision(c_sym, ctrue, minsep, tag)
            assert ours[f"{name}/top_{tag}"] == pytest.approx(ref, abs=1e-12), (name, tag)
    # A sanity anchor: the real prediction is far better than chance.
    assert ours["long/top_L/5"] > 0.5


def test_contact_precision_on_real_chain_true_map(data_root):
    """A distogram that is the one-hot true map scores precision 1 wherever k <= #contacts."""
    protein = next(iter_proteinnet(data_root / "proteinnet" / "validation.gz"))
    dist, pair_mask = geometry_np.cb_distance_map(protein)
    probs = _one_hot(rc.distance_to_bin(dist))
    out = contact_precision(contact_probabilities(probs), dist, ranges=("long",))
    # Contact probability is P(d < 7.9375): 7.9375 <= d < 8 pairs rank with the non-contacts.
    n_long = int(np.sum((dist < 7.9375) & separation_mask(len(protein), "long")))
    assert n_long >= top_k_count(len(protein), 0.2)
    assert out["long/top_L/5"] == 1.0


# --------------------------------------------------------------------------
# Distance MAE, NLL, calibration
# --------------------------------------------------------------------------


def test_distance_mae_by_hand():
    L = 30
    true = np.full((L, L), 20.0)
    pred = np.full((L, L), 20.0)
    cases = {(0, 7): (5.0, 6.5), (0, 15): (10.0, 13.0), (0, 25): (7.0, 7.5), (1, 26): (11.0, 9.0)}
    for (i, j), (t, p) in cases.items():
        true[i, j] = true[j, i] = t
        pred[i, j] = pred[j, i] = p
    pred[0, 7], pred[7, 0] = 6.0, 7.0  # symmetrised to 6.5
    out = distance_mae(pred, true)
    assert out["short/d8"] == pytest.approx(1.5)
    assert out["short/d12"] == pytest.approx(1.5)
    assert math.isnan(out["medium/d8"])
    assert out["medium/d12"] == pytest.approx(3.0)
    assert out["long/d8"] == pytest.approx(0.5)
    assert out["long/d12"] == pytest.approx((0.5 + 2.0) / 2)


def test_distance_errors_expected_vs_argmax():
    L = 8
    true = np.full((L, L), 20.0)
    true[0, 7] = true[7, 0] = 5.0
    probs = np.zeros((L, L, rc.NUM_DIST_BINS))
    probs[..., 64] = 1.0
    # Pair (0, 7): 0.6 on bin 10 (5.28125 A), 0.4 on bin 20 (8.40625 A).
    for a, b in ((0, 7), (7, 0)):
        probs[a, b] = 0.0
        probs[a, b, 10], probs[a, b, 20] = 0.6, 0.4
    out = distance_errors(probs, true, ranges=("short",))
    assert out["expected/short/d8"] == pytest.approx(abs(0.6 * 5.28125 + 0.4 * 8.40625 - 5.0))
    assert out["argmax/short/d8"] == pytest.approx(0.28125)


def test_distogram_nll_by_hand():
    L = 3
    true = np.array([[0.0, 5.0, 9.0], [5.0, 0.0, 5.0], [9.0, 5.0, 0.0]])
    uniform = np.full((L, L, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS)
    assert distogram_nll(uniform, true) == pytest.approx(math.log(65))
    bins = rc.distance_to_bin(true)
    probs = np.full((L, L, rc.NUM_DIST_BINS), 0.0)
    for i, j in itertools.product(range(L), range(L)):
        probs[i, j, bins[i, j]] = 0.5 if i < j else 0.25
        probs[i, j, (bins[i, j] + 30) % 65] = 1.0 - probs[i, j, bins[i, j]]
    # Ordered pairs i != j: three at p = 0.5, three at p = 0.25.
    assert distogram_nll(probs, true) == pytest.approx(1.5 * math.log(2))
    # min_separation 2 keeps (0, 2) [0.5] and (2, 0) [0.25].
    assert distogram_nll(probs, true, min_separation=2) == pytest.approx(1.5 * math.log(2))
    assert distogram_nll(probs, true, mask=np.array([1, 1, 0])) == pytest.approx(1.5 * math.log(2))
    # Zero probability on the true bin is floored at 1e-12, not infinite.
    zero = np.zeros((L, L, rc.NUM_DIST_BINS))
    zero[..., 64] = 1.0
    assert distogram_nll(zero, true) == pytest.approx(-math.log(1e-12))
    assert math.isnan(distogram_nll(uniform, true, mask=np.array([1, 0, 0])))


def test_expected_calibration_error_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    # bin 0: |0.05 - 0.5| * 2/5; bin 9: |0.95 - 1| * 2/5; bin 5: |0.55 - 0| * 1/5.
    assert expected_calibration_error(p, y) == pytest.approx(0.18 + 0.02 + 0.11)
    count, conf, freq = calibration_table(np.array([1.0, 0.0, 0.1]), np.array([1, 0, 0]))
    assert count[9] == 1 and count[0] == 1 and count[1] == 1  # p = 1 lands in the last bin
    assert math.isnan(conf[4]) and freq[9] == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([1]))


def test_contact_calibration_of_true_one_hot_distograms_is_zero(data_root):
    proteins = list(itertools.islice(iter_proteinnet(data_root / "proteinnet" / "validation.gz"), 2))
    dists = [geometry_np.cb_distance_map(p)[0] for p in proteins]
    # Push distances in the straddling bin [7.9375, 8) to 7.9 so labels and bins agree exactly.
    dists = [np.where((d >= 7.9375) & (d < 8.0), 7.9, d) for d in dists]
    probs = [_one_hot(rc.distance_to_bin(d)) for d in dists]
    assert contact_calibration_error(probs, dists) == pytest.approx(0.0, abs=1e-12)
    # A constant 0.5 forecast is off by |0.5 - contact rate| everywhere.
    half = [np.full_like(p, 0.0) for p in probs]
    for h in half:
        h[..., 0] = 0.5
        h[..., 64] = 0.5
    rate_pairs = [
        (d < 8.0)[np.triu(np.ones(d.shape, bool), 6)] for d in dists
    ]
    rate = np.concatenate(rate_pairs).mean()
    assert contact_calibration_error(half, dists) == pytest.approx(abs(0.5 - rate))
    with pytest.raises(ValueError, match="2 distograms, 1 distance maps"):
        contact_calibration_error(probs, dists[:1])


# --------------------------------------------------------------------------
# Torsions
# --------------------------------------------------------------------------


def test_circular_mae_across_the_wrap():
    pred = np.deg2rad([179.0, -170.0, 10.0, 90.0])
    true = np.deg2rad([-179.0, 170.0, -10.0, -90.0])
    np.testing.assert_allclose(circular_abs_error_deg(pred, true), [2.0, 20.0, 20.0, 180.0], atol=1e-9)
    assert circular_mae(pred, true) == pytest.approx((2 + 20 + 20 + 180) / 4)
    assert circular_mae(pred, true, mask=np.array([1, 1, 0, 0])) == pytest.approx(11.0)
    # Masked-out entries may be NaN (undefined angles at chain ends).
    assert circular_mae(np.array([np.nan, 0.1]), np.array([0.0, 0.1]), np.array([0, 1])) == 0.0


def test_circular_correlation_by_hand():
    a = np.array([0.0, np.pi / 2, np.pi])
    b = np.array([0.0, np.pi / 2, np.pi / 2])
    # abar = pi/2, bbar = atan2(2, 1): r = (3/sqrt5) / sqrt(2 * 6/5) = sqrt(3)/2.
    assert circular_correlation(a, b) == pytest.approx(math.sqrt(3) / 2)
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, 50)
    assert circular_correlation(x, x + 2.0) == pytest.approx(1.0)
    assert circular_correlation(x, -x + 0.3) == pytest.approx(-1.0)
    assert math.isnan(circular_correlation(x, np.full(50, 0.7)))


def test_expected_angle_wraps():
    p = np.zeros(rc.NUM_TORSION_BINS)
    p[0] = p[35] = 0.5  # centres -175 and +175 degrees
    assert abs(abs(np.rad2deg(expected_angle(p))) - 180.0) < 1e-9
    p = np.zeros(rc.NUM_TORSION_BINS)
    p[18] = 1.0  # centre +5 degrees
    assert np.rad2deg(expected_angle(p)) == pytest.approx(5.0)


def test_torsion_metrics_on_real_chain(data_root):
    protein = next(iter_proteinnet(data_root / "proteinnet" / "validation.gz"))
    angles, mask = geometry_np.backbone_torsions(protein)
    # A constant 30 degree offset (wrapped) is a 30 degree error with correlation 1.
    shifted = (angles + np.deg2rad(30.0) + np.pi) % (2 * np.pi) - np.pi
    out = torsion_metrics(shifted, angles, mask)
    assert out["phi/mae_deg"] == pytest.approx(30.0, abs=1e-3)
    assert out["psi/mae_deg"] == pytest.approx(30.0, abs=1e-3)
    assert out["phi/circ_corr"] == pytest.approx(1.0, abs=1e-6)
    # Predicting the mirror image flips the sign of the correlation.
    assert torsion_metrics(-angles, angles, mask)["phi/circ_corr"] == pytest.approx(-1.0, abs=1e-6)


# --------------------------------------------------------------------------
# Reports from padded batches
# --------------------------------------------------------------------------


def test_batch_reports_match_unpadded_reports(data_root):
    from foldnet.metrics import batch_reports, distogram_report

    proteins = list(itertools.islice(iter_proteinnet(data_root / "proteinnet" / "validation.gz"), 3))[1:]
    N = max(len(p) for p in proteins) + 7
    B = len(proteins)
    batch = {
        "seq_mask": np.zeros((B, N), np.float32),
        "cb_dist": np.zeros((B, N, N), np.float32),
        "pair_mask": np.zeros((B, N, N), np.float32),
        "torsions": np.zeros((B, N, 3), np.float32),
        "torsion_mask": np.zeros((B, N, 3), np.float32),
    }
    probs = np.zeros((B, N, N, rc.NUM_DIST_BINS), np.float32)
    probs[..., 64] = 1.0  # padding predicts "far"
    singles = []
    rng = np.random.default_rng(5)
    for b, p in enumerate(proteins):
        L = len(p)
        dist, pair = geometry_np.cb_distance_map(p)
        tors, tmask = geometry_np.backbone_torsions(p)
        noisy = dist + rng.normal(0, 2.0, dist.shape)
        pb = _one_hot(rc.distance_to_bin(0.5 * (noisy + noisy.T)))
        batch["seq_mask"][b, :L] = 1
        batch["cb_dist"][b, :L, :L] = dist
        batch["pair_mask"][b, :L, :L] = pair
        batch["torsions"][b, :L] = np.nan_to_num(tors)
        batch["torsion_mask"][b, :L] = tmask
        probs[b, :L, :L] = pb
        singles.append(distogram_report(pb, dist.astype(np.float64)))
    pred_t = batch["torsions"] + np.deg2rad(10.0)
    reports = batch_reports(probs, batch, pred_torsions=pred_t)
    assert len(reports) == B
    for rep, single in zip(reports, singles):
        for k, v in single.items():
            assert rep[k] == pytest.approx(v, nan_ok=True), k
        assert rep["torsion/phi/mae_deg"] == pytest.approx(10.0, abs=1e-3)
        assert 0.0 < rep["precision/long/top_L/5"] <= 1.0
        assert rep["nll"] > 0.0
    with pytest.raises(ValueError, match="does not match cb_dist"):
        batch_reports(probs[:, :-1], batch)
