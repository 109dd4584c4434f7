"""PDNet feature / distance files in PDNet's exact layout, and the real 1guuA true map."""

import pickle

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.common.geometry_np import cb_distance_map, distance_map
from foldnet.data.errors import ParseError
from foldnet.data.pdnet import (
    PDNET_PSSM_ALPHABET,
    pdnet_pssm_to_profile,
    pdnet_to_protein,
    read_pdnet_distances,
    read_pdnet_features,
    write_pdnet_distances,
)
from foldnet.data.structure_parser import read_structure

SEQ = "MKVLAGW"


def _features(L=len(SEQ), seq=SEQ, seed=0):
    rng = np.random.default_rng(seed)
    pssm = np.zeros((L, 22), np.float16)
    for i, a in enumerate(seq):
        # 0.6 on the query letter, 0.3 on alanine, 0.1 gap, entropy 0.9 -- PDNet's column order.
        pssm[i, PDNET_PSSM_ALPHABET.index(a)] += 0.6
        pssm[i, PDNET_PSSM_ALPHABET.index("A")] += 0.3
        pssm[i, 20] = 0.1
        pssm[i, 21] = 0.9
    return {
        "seq": seq,
        "ss": rng.random((3, L)).astype(np.float16),
        "pssm": pssm,
        "sa": rng.random(L).astype(np.float16),
        "entropy": rng.random(L).astype(np.float16),
        "ccmpred": rng.random((L, L)).astype(np.float16),
        "freecon": rng.random((L, L)).astype(np.float16),
        "potential": rng.random((L, L)).astype(np.float16),
    }


def _pickle(tmp_path, obj, name="x.pkl"):
    p = tmp_path / name
    with open(p, "wb") as fh:
        pickle.dump(obj, fh)
    return p


def test_read_features_and_profile(tmp_path):
    feats = _features()
    f = read_pdnet_features(_pickle(tmp_path, feats))
    assert f["seq"] == SEQ
    assert f["ccmpred"].dtype == np.float32 and f["ccmpred"].shape == (7, 7)
    np.testing.assert_allclose(f["ss"], feats["ss"].astype(np.float32))
    prot = pdnet_to_protein("x", f)
    assert prot.sequence == SEQ and prot.atom_mask.sum() == 0
    prof = prot.profile
    assert prof.shape == (7, 20)
    np.testing.assert_allclose(prof.sum(1), 1.0, atol=1e-6)
    # Gap mass removed: query letter 0.6/0.9, alanine 0.3/0.9 (alanine itself: 0.9/0.9).
    for i, a in enumerate(SEQ):
        if a == "A":
            assert prof[i, rc.RESTYPE_ORDER["A"]] == pytest.approx(1.0, abs=1e-3)
        else:
            assert prof[i, rc.RESTYPE_ORDER[a]] == pytest.approx(2 / 3, abs=1e-3)
            assert prof[i, rc.RESTYPE_ORDER["A"]] == pytest.approx(1 / 3, abs=1e-3)
    # The distance file's sequence must agree.
    with pytest.raises(ValueError):
        pdnet_to_protein("x", f, seq="MKVLAGA")


def test_pssm_column_permutation():
    """Column j of PDNet's pssm is letter ARNDCQEGHILKMFPSTWYV[j]; ours is ACDEFGHIKLMNPQRSTVWY."""
    pssm = np.zeros((20, 22), np.float32)
    pssm[np.arange(20), np.arange(20)] = 1.0
    prof = pdnet_pssm_to_profile(pssm)
    for j, a in enumerate(PDNET_PSSM_ALPHABET):
        assert prof[j].argmax() == rc.RESTYPE_ORDER[a] and prof[j].max() == 1.0
    # An all-gap column (only PDNet's 1e-9 pseudo-frequencies) becomes uniform.
    gap = np.full((1, 22), 1e-9, np.float32)
    gap[0, 20] = 1.0
    np.testing.assert_allclose(pdnet_pssm_to_profile(gap), 1 / 20)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("freecon"), "missing feature keys ['freecon']"),
        (lambda d: d.update(pssm=np.zeros((7, 21))), "'pssm' has shape (7, 21), expected (7, 22)"),
        (lambda d: d.update(ss=np.zeros((7, 3))), "'ss' has shape (7, 3), expected (3, 7)"),
        (lambda d: d.update(ccmpred=np.zeros((7, 6))), "'ccmpred' has shape"),
        (lambda d: d.update(seq="MKV1AGW"), "invalid residue letter '1'"),
        (lambda d: d.update(sa=np.zeros(8)), "'sa' has shape (8,)"),
    ],
)
def test_bad_features(tmp_path, mutate, needle):
    feats = _features()
    mutate(feats)
    p = _pickle(tmp_path, feats)
    with pytest.raises(ParseError) as ei:
        read_pdnet_features(p)
    assert needle in str(ei.value) and str(p) in str(ei.value)


def test_not_a_dict_or_not_a_pickle(tmp_path):
    with pytest.raises(ParseError, match="expected a dict"):
        read_pdnet_features(_pickle(tmp_path, [1, 2]))
    bad = tmp_path / "junk.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ParseError, match="cannot unpickle"):
        read_pdnet_features(bad)


def test_distance_file_pdnet_layout(tmp_path):
    """Written exactly as PDNet's pdb2dist.py does: np.save(f, ((L, seq, cb_map.astype(float16))))."""
    L = len(SEQ)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(L, 3)) * 10
    cb = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    cb[2, :] = cb[:, 2] = np.nan  # residue without coordinates
    f = tmp_path / "abcdA-cb.npy"
    obj = np.empty(3, dtype=object)
    obj[:] = [L, SEQ, cb.astype(np.float16)]
    np.save(f, obj, allow_pickle=True)
    seq, m = read_pdnet_distances(f)
    assert seq == SEQ and m.dtype == np.float32 and m.shape == (L, L)
    np.testing.assert_array_equal(np.isnan(m), np.isnan(cb))
    np.testing.assert_allclose(m, cb, rtol=1e-3, equal_nan=True)
    # Our writer produces the same layout (readable the way PDNet reads it) and round-trips.
    g = tmp_path / "out" / "abcdA-cb.npy"
    write_pdnet_distances(g, seq, m)
    L2, s2, m2 = np.load(g, allow_pickle=True)
    assert L2 == L and s2 == SEQ and m2.dtype == np.float16
    np.testing.assert_array_equal(read_pdnet_distances(g)[1], m)
    assert sorted(p.name for p in g.parent.iterdir()) == ["abcdA-cb.npy"]  # no temp left


def test_bad_distance_files(tmp_path):
    f = tmp_path / "bad-cb.npy"
    obj = np.empty(3, dtype=object)
    obj[:] = [5, SEQ, np.zeros((7, 7))]
    np.save(f, obj, allow_pickle=True)
    with pytest.raises(ParseError, match="L=5 but len"):
        read_pdnet_distances(f)
    obj[:] = [7, SEQ, np.zeros((7, 6))]
    np.save(f, obj, allow_pickle=True)
    with pytest.raises(ParseError, match="cb_map has shape"):
        read_pdnet_distances(f)
    np.save(f, np.zeros((7, 7)))
    with pytest.raises(ParseError, match=r"\(L, seq, cb_map\)"):
        read_pdnet_distances(f)
    with pytest.raises(ValueError):
        write_pdnet_distances(tmp_path / "w-cb.npy", SEQ, np.zeros((6, 6)))


def test_1guua_true_map_matches_structure(data_root):
    """1guuA.true.npy (float16) = CB-CB map of 1guuA.pdb with CA for glycine (PDNet's pdb2dist rule).

    Non-Gly pairs agree to 0.0078 A = half the float16 spacing at 16-32 A (2**-6 / 2).
    With our virtual CB for Gly 20, its pairs differ by up to ~1.5 A; with CA in its
    place, float16(our map) equals the file exactly.
    """
    d = data_root / "pdnet_related/disteval_1guuA"
    true = np.load(d / "1guuA.true.npy").astype(np.float32)
    assert true.shape == (50, 50)
    prot = read_structure(d / "1guuA.pdb")
    cb, _ = cb_distance_map(prot)
    gly = prot.aatype == rc.RESTYPE_ORDER["G"]
    assert np.nonzero(gly)[0].tolist() == [19]
    non_gly = ~(gly[:, None] | gly[None, :])
    err = np.abs(cb - true)
    assert err[non_gly].max() <= 2.0**-7 + 1e-6
    assert 1.0 < err[~non_gly].max() < 2.0
    has_cb = prot.atom_mask[:, rc.CB_IDX, None] > 0
    ca_for_gly = np.where(has_cb, prot.atom_positions[:, rc.CB_IDX], prot.atom_positions[:, rc.CA_IDX])
    pdnet_style, _ = distance_map(ca_for_gly)
    np.testing.assert_array_equal(pdnet_style.astype(np.float16).astype(np.float32), true)
