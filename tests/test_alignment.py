"""MSA readers, cluster weights and profiles: hand-computed tiny MSAs and the real DEEPCON alignments."""

import gzip

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.alignment import msa_to_int, msa_to_profile, read_a3m, read_aln, sequence_weights
from foldnet.data.errors import ParseError
from foldnet.data.structure_parser import read_structure

R = rc.RESTYPE_ORDER


def test_weights_by_hand():
    msa = ["ACDE", "ACDE", "ACDF", "GHIK"]
    m = msa_to_int(msa)
    # 0.8: rows 0,1 identical (1.0), row 2 shares 3/4 = 0.75 with them, row 3 nothing.
    np.testing.assert_allclose(sequence_weights(m, 0.8), [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(sequence_weights(m, 0.75), [1 / 3, 1 / 3, 1 / 3, 1.0])
    np.testing.assert_allclose(sequence_weights(m, 0.0), [0.25] * 4)
    # Exactly 4/5 = 0.8 counts (>=); gap == gap counts as identical.
    np.testing.assert_allclose(sequence_weights(msa_to_int(["AAAAA", "AAAAC"]), 0.8), [0.5, 0.5])
    np.testing.assert_allclose(sequence_weights(msa_to_int(["AA--C", "AA--D"]), 0.8), [0.5, 0.5])
    np.testing.assert_allclose(sequence_weights(msa_to_int(["AA--C", "AAKLD"]), 0.8), [1.0, 1.0])
    # Chunking does not change the result.
    np.testing.assert_allclose(sequence_weights(m, 0.8, chunk=1), sequence_weights(m, 0.8))


def test_profile_by_hand():
    msa = ["ACDE", "ACDE", "ACDF", "GHIK"]
    p = msa_to_profile(msa)  # weights 0.5, 0.5, 1, 1 (total 3)
    assert p.shape == (4, 20) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert p[0, R["A"]] == pytest.approx(2 / 3) and p[0, R["G"]] == pytest.approx(1 / 3)
    assert p[3, R["E"]] == p[3, R["F"]] == p[3, R["K"]] == pytest.approx(1 / 3)
    # Pseudocount: (2 + 1/20) / (3 + 1).
    assert msa_to_profile(msa, pseudocount=1.0)[0, R["A"]] == pytest.approx(2.05 / 4)
    # Explicit weights.
    assert msa_to_profile(msa, weights=np.ones(4))[0, R["A"]] == pytest.approx(0.75)


def test_profile_gaps_x_and_ambiguous():
    # Weights all 1 (no pair reaches 0.8). Column 1: C and gaps -> C = 1.
    # Column 2: gap, gap, X -> no standard letter -> uniform. Column 0: A, A, B(=D).
    p = msa_to_profile(["AC-", "A--", "B-X"])
    assert p[0, R["A"]] == pytest.approx(2 / 3) and p[0, R["D"]] == pytest.approx(1 / 3)
    assert p[1, R["C"]] == 1.0 and p[1].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p[2], 1 / 20)
    assert msa_to_int(["ABXZ-"]).tolist() == [[R["A"], R["D"], 20, R["E"], 21]]


def test_read_a3m(tmp_path):
    f = tmp_path / "x.a3m"
    f.write_text("#A3M#\n>query desc\nACDEF\n>s1\nAC-ekEF\n>s2\nA.CDg.EF\n\n>s3\nACD\nef\nEF\n")
    assert read_a3m(f) == ["ACDEF", "AC-EF", "ACDEF", "ACDEF"]
    g = tmp_path / "x.a3m.gz"
    g.write_bytes(gzip.compress(f.read_bytes()))
    assert read_a3m(g) == read_a3m(f)


@pytest.mark.parametrize(
    "text, line, record, needle",
    [
        (">q\nACDEF\n>s1\nACDE\n", 3, "s1", "4 match columns, the query has 5"),
        (">q\nACDEF\n>s1\nACD*F\n", 3, "s1", "invalid alignment character '*'"),
        ("ACDEF\n>q\nACDEF\n", 1, None, "before the first"),
        (">q\nACDEF\n>s1\n>s2\nACDEF\n", 3, "s1", "no sequence"),
    ],
)
def test_bad_a3m(tmp_path, text, line, record, needle):
    f = tmp_path / "bad.a3m"
    f.write_text(text)
    with pytest.raises(ParseError) as ei:
        read_a3m(f)
    assert ei.value.line == line and ei.value.record == record
    assert needle in str(ei.value) and str(f) in str(ei.value)


def test_bad_aln(tmp_path):
    f = tmp_path / "bad.aln"
    f.write_text("ACDEF\n\nAC-EF\nACDE\n")
    with pytest.raises(ParseError) as ei:
        read_aln(f)
    assert ei.value.line == 4 and "4 match columns, the query has 5" in str(ei.value)
    f.write_text("ACDEF\nacdef\n")
    with pytest.raises(ParseError, match="invalid alignment character 'a'"):
        read_aln(f)
    f.write_text("\n\n")
    with pytest.raises(ParseError, match="no sequences"):
        read_aln(f)


def _naive_weights(msa, identity):
    n, L = len(msa), len(msa[0])
    w = []
    for a in msa:
        close = sum(sum(x == y for x, y in zip(a, b)) / L >= identity for b in msa)
        w.append(1.0 / close)
    return np.array(w)


def test_real_16pka_alignment(data_root):
    d = data_root / "pdnet_related/deepcon_examples"
    msa = read_aln(d / "16pkA0.aln.gz")
    assert len(msa) == 706 and {len(s) for s in msa} == {256}
    prot = read_structure(d / "16pkA.pdb")
    assert msa[0] == prot.sequence  # the query is the first row
    m = msa_to_int(msa)
    w = sequence_weights(m)
    # The vectorised weights equal a plain double loop on the first 150 rows.
    np.testing.assert_allclose(sequence_weights(m[:150]), _naive_weights(msa[:150], 0.8), rtol=1e-6)
    assert 0 < w.min() and w.max() == 1.0 and 400 < w.sum() < 706  # measured: 483.1 effective sequences
    prof = msa_to_profile(msa)
    assert prof.shape == (len(prot), 20)
    np.testing.assert_allclose(prof.sum(1), 1.0, atol=1e-5)
    q = rc.sequence_to_aatype(msa[0])
    # Measured: the query residue is the most frequent at 57.8 % of columns, in the top 3 at 83 %.
    assert np.mean(prof.argmax(1) == q) > 0.5
    top3 = np.argsort(prof, axis=1)[:, -3:]
    assert np.mean([q[i] in top3[i] for i in range(len(q))]) > 0.75
    # Phosphoglycerate kinase motif "GGAK" (query columns 211-214, 0-based): the glycines
    # and the lysine are conserved (measured G 0.887, G 0.989, K 0.904).
    i = msa[0].index("VGGAKVSDK")
    assert i == 210
    assert prof[i + 1, R["G"]] > 0.85 and prof[i + 2, R["G"]] > 0.95 and prof[i + 4, R["K"]] > 0.85


def test_real_alignments_read(data_root):
    d = data_root / "pdnet_related/deepcon_examples"
    a = read_aln(d / "1a0tP0.aln.gz")
    assert len(a) == 437 and a[0] == read_structure(d / "1a0tP.pdb").sequence
    big = read_aln(d / "5ptpA.aln.gz")
    assert len(big) == 13370 and len(big[0]) == 222
    # B, Z and X occur in this file; they encode as D, E and unknown.
    m = msa_to_int(big)
    assert m.shape == (13370, 222) and (m == 20).sum() > 0
