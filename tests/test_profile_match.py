"""The predict-path profile (``training_profile``) against the ProteinNet profiles of training.

Thresholds come from the data: the validation split's per-chain statistics are measured here
(492 chains, ~1.5 s) and the bundle's DEEPCON alignments must fall inside their range.
"""

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.alignment import (
    RAW_PROFILE,
    ProfileConfig,
    henikoff_weights,
    msa_to_int,
    msa_to_profile,
    read_aln,
    training_profile,
)
from foldnet.data.proteinnet import iter_proteinnet

R = rc.RESTYPE_ORDER


def _entropy_bits(p):
    p = np.asarray(p, np.float64)
    p = p / p.sum(1, keepdims=True)
    return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(1)


def _stats(profile, query):
    """(zero fraction, median query probability, median column entropy in bits) of one chain."""
    ok = query < rc.NUM_STANDARD
    p, q = profile[ok], query[ok]
    return (float((p == 0).mean()), float(np.median(p[np.arange(len(q)), q])),
            float(np.median(_entropy_bits(p))))


@pytest.fixture(scope="module")
def proteinnet_stats(data_root):
    """Per-chain statistics of validation.gz chains that have homologs (< 50 % one-hot columns)."""
    rows, one_hot = [], 0
    for prot in iter_proteinnet(data_root / "proteinnet/validation.gz"):
        p, q = prot.profile, prot.aatype
        if (p[np.arange(len(q)), q] >= 0.999).mean() >= 0.5:
            one_hot += 1
            continue
        rows.append(_stats(p, q))
    return np.array(rows), one_hot


# --- hand-computed arithmetic on a 3-sequence MSA -------------------------------------------

TOY = ["ACD", "ACE", "GCE"]


def test_toy_pseudocount_arithmetic():
    # Unweighted, pseudocount 2: column 0 counts A=2, G=1 (+ 2/20 each letter), total 3 + 2 = 5.
    p = training_profile(TOY, ProfileConfig(weighting="none", pseudocount=2.0, quantize=0))
    assert p[0, R["A"]] == pytest.approx(2.1 / 5) and p[0, R["G"]] == pytest.approx(1.1 / 5)
    assert p[0, R["W"]] == pytest.approx(0.1 / 5)
    assert p[1, R["C"]] == pytest.approx(3.1 / 5)
    assert p[2, R["E"]] == pytest.approx(2.1 / 5) and p[2, R["D"]] == pytest.approx(1.1 / 5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert p.min() > 0


def test_toy_cluster_weights_at_062():
    # Identities: rows 0-1 share 2/3 = 0.667 >= 0.62, rows 1-2 2/3, rows 0-2 1/3.
    # Neighbour counts 2, 3, 2 -> weights 1/2, 1/3, 1/2 (total 4/3).
    p = training_profile(TOY, ProfileConfig(weighting="cluster", identity=0.62, quantize=0))
    assert p[0, R["A"]] == pytest.approx((1 / 2 + 1 / 3) / (4 / 3))  # 0.625
    assert p[0, R["G"]] == pytest.approx((1 / 2) / (4 / 3))  # 0.375
    assert p[2, R["E"]] == pytest.approx(0.625) and p[2, R["D"]] == pytest.approx(0.375)
    # With pseudocount 1: (5/6 + 1/20) / (4/3 + 1).
    pc = training_profile(TOY, ProfileConfig(weighting="cluster", identity=0.62, pseudocount=1.0, quantize=0))
    assert pc[0, R["A"]] == pytest.approx((5 / 6 + 0.05) / (7 / 3))


def test_toy_henikoff_and_quantize():
    # Column 0: r=2 (A x2, G x1) -> A rows 1/4, G row 1/2; column 1: r=1, n=3 -> 1/3 each;
    # column 2: D row 1/2, E rows 1/4. Sums 13/12, 5/6, 13/12 -> / 3.
    w = henikoff_weights(msa_to_int(TOY))
    np.testing.assert_allclose(w, np.array([13 / 12, 5 / 6, 13 / 12]) / 3)
    # Rounded to 1/256: column 0 = (13/12 + 5/6) / 3 = 0.6389 of A -> 164/256, G 0.3611 -> 92/256.
    p = training_profile(TOY, ProfileConfig(weighting="henikoff"))
    assert p[0, R["A"]] == pytest.approx(164 / 256) and p[0, R["G"]] == pytest.approx(92 / 256)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)


def test_single_sequence_is_one_hot_like_proteinnet():
    # ProteinNet stores a chain without homologs as its one-hot sequence (no pseudo-counts).
    p = training_profile(["ACDW"])
    np.testing.assert_array_equal(p, np.eye(20, dtype=np.float32)[[R["A"], R["C"], R["D"], R["W"]]])


def test_raw_profile_is_msa_to_profile():
    msa = ["ACDE", "ACDE", "ACDF", "GHIK"]
    np.testing.assert_allclose(training_profile(msa, RAW_PROFILE), msa_to_profile(msa))


def test_config_checks():
    for bad in (dict(weighting="psiblast"), dict(identity=1.5), dict(pseudocount=-1), dict(quantize=5)):
        with pytest.raises(ValueError):
            ProfileConfig(**bad)


# --- the bundle's real alignments against ProteinNet ----------------------------------------

def test_proteinnet_profile_conventions(proteinnet_stats):
    stats, one_hot = proteinnet_stats
    assert len(stats) + one_hot == 492 and one_hot == 7  # measured: 7 chains with >= half the columns one-hot
    z, qp, h = np.median(stats, axis=0)
    assert 0.2 < z < 0.3  # measured 0.253: unseen residues are exact zeros (no pseudo-counts)
    assert 0.12 < qp < 0.18 and 3.1 < h < 3.5  # measured 0.147 and 3.34 bits


@pytest.mark.parametrize("name", ["16pkA0", "1a0tP0"])
def test_real_alignment_profile_within_proteinnet_range(data_root, proteinnet_stats, name):
    stats, _ = proteinnet_stats
    lo5, lo25 = np.percentile(stats, 5, axis=0), np.percentile(stats, 25, axis=0)
    hi75, hi95 = np.percentile(stats, 75, axis=0), np.percentile(stats, 95, axis=0)
    msa = read_aln(data_root / "pdnet_related/deepcon_examples" / f"{name}.aln.gz")
    p = training_profile(msa)
    q = msa_to_int(msa[:1])[0]
    assert p.shape == (len(msa[0]), 20) and np.isfinite(p).all() and p.min() >= 0
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    # Like training: exact zeros for unseen residues and nothing between 0 and ~1/256
    # (rounded to 1/256, then renormalised so rows sum to 1).
    assert (p == 0).any() and p[p > 0].min() > 0.9 / 256
    z, qp, h = _stats(p, q)
    # Zero fraction and entropy within ProteinNet's interquartile range for both alignments
    # (16pkA: 0.277, 2.69 bits -- entropy in [P25, P75] only below 3 bits, so [P5, P95] there);
    # the median query probability within [P5, P95] (16pkA 0.275, 1a0tP 0.156; IQR 0.122-0.194).
    assert lo25[0] <= z <= hi75[0]
    assert lo5[1] <= qp <= hi95[1]
    assert lo5[2] <= h <= hi95[2]
    # Closer to ProteinNet than the raw 80 %-identity frequencies (the old predict profile).
    med = np.median(stats, axis=0)
    _, qp_raw, h_raw = _stats(training_profile(msa, RAW_PROFILE), q)
    assert abs(qp - med[1]) < abs(qp_raw - med[1]) and abs(h - med[2]) < abs(h_raw - med[2])


def test_shallow_alignments_stay_sane(data_root, proteinnet_stats):
    # The first 1, 2, 5, 20 rows of 16pkA: valid distributions that widen with depth.
    msa = read_aln(data_root / "pdnet_related/deepcon_examples/16pkA0.aln.gz")
    q = msa_to_int(msa[:1])[0]
    qps = []
    for n in (1, 2, 5, 20):
        p = training_profile(msa[:n])
        assert np.isfinite(p).all() and p.min() >= 0
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
        qps.append(_stats(p, q)[1])
    assert qps[0] == 1.0 and qps[-1] < qps[0]
