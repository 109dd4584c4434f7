"""featurize: real chains -> features; geometry checked against hand-computable facts."""

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.common.protein import from_sequence
from foldnet.data.featurize import RESIDUE_FEATURES, featurize, featurize_distances, to_protein
from foldnet.data.proteinnet import iter_proteinnet


@pytest.fixture(scope="module")
def proteinnet_chain(testdata):
    return next(iter_proteinnet(testdata / "proteinnet" / "validation.gz"))


def _angle(a, b, c):
    u, v = a - b, c - b
    cos = np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_proteinnet_chain_features(proteinnet_chain):
    p = proteinnet_chain
    f = featurize(p, source_id="validation.gz:" + p.id, cath="3.40.930.10")
    L = len(p)
    assert f["id"] == p.id and f["cath"] == "3.40.930.10" and f["source_id"].endswith(p.id)
    for key, (shape, dtype) in RESIDUE_FEATURES.items():
        assert f[key].shape == (L,) + shape, key
        assert f[key].dtype == dtype, key
    np.testing.assert_array_equal(f["aatype"], p.aatype)
    # ProteinNet has N, CA, C only: O absent, CB virtual for every residue.
    assert f["atom_mask"][:, rc.O_IDX].sum() == 0
    assert f["atom_mask"][:, rc.CB_IDX].all()
    x = f["atom_positions"]
    n, ca, c, cb = x[:, 0], x[:, 1], x[:, 2], x[:, 4]
    # Ideal tetrahedral CB: CA-CB ~ 1.53 A and N-CA-CB ~ 110 deg. The construction
    # scales with the real backbone (|b x c| varies with tau and the bond lengths
    # of coordinates rounded to 0.01 A), so single residues spread by ~0.2 A.
    d = np.linalg.norm(cb - ca, axis=-1)
    assert abs(np.median(d) - 1.53) < 0.03 and np.all(np.abs(d - 1.53) < 0.3), (d.min(), d.max())
    ang = _angle(n, ca, cb)
    assert abs(np.median(ang) - 110.0) < 2.0, np.median(ang)
    # Profile kept to float16 precision (3-decimal values in [0, 1]).
    assert np.max(np.abs(f["profile"].astype(np.float32) - p.profile)) <= 2.5e-4


def test_torsions_match_hand_dihedral(proteinnet_chain):
    f = featurize(proteinnet_chain)
    t = f["torsions"]
    # Chain ends: phi of the first, psi and omega of the last residue undefined.
    assert np.isnan(t[0, 0]) and np.isnan(t[-1, 1]) and np.isnan(t[-1, 2])
    x = proteinnet_chain.atom_positions.astype(np.float64)

    def dihedral(p0, p1, p2, p3):  # Praxeolitic formula, independent of geometry_np's
        b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
        b1 = b1 / np.linalg.norm(b1)
        v, w = b0 - np.dot(b0, b1) * b1, b2 - np.dot(b2, b1) * b1
        return np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))

    i = 10
    phi = dihedral(x[i - 1, 2], x[i, 0], x[i, 1], x[i, 2])
    psi = dihedral(x[i, 0], x[i, 1], x[i, 2], x[i + 1, 0])
    omega = dihedral(x[i, 1], x[i, 2], x[i + 1, 0], x[i + 1, 1])
    np.testing.assert_allclose(t[i], [phi, psi, omega], atol=1e-4)
    # Peptide bonds are planar and (almost all) trans.
    om = t[:-1, 2]
    assert np.mean(np.abs(om) > np.radians(150)) > 0.95


def test_real_cb_kept_and_glycine_virtual(testdata):
    from foldnet.data.structure_parser import read_structure

    p = read_structure(testdata / "cath_tools_testdata" / "1c0pA01")
    f = featurize(p, source_id="1c0pA01")
    gly = np.nonzero(p.aatype == rc.RESTYPE_ORDER["G"])[0]
    real = np.nonzero(p.atom_mask[:, rc.CB_IDX] > 0)[0]
    assert len(gly) > 0 and len(real) > 0
    # Residues with a CB in the file keep it exactly.
    np.testing.assert_array_equal(f["atom_positions"][real, rc.CB_IDX], p.atom_positions[real, rc.CB_IDX])
    # Glycines get the ideal virtual CB ~1.53 A from CA.
    d = np.linalg.norm(f["atom_positions"][gly, 4] - f["atom_positions"][gly, 1], axis=-1)
    assert f["atom_mask"][gly, rc.CB_IDX].all() and np.all(np.abs(d - 1.53) < 0.15), d
    # Real CBs and their virtual reconstruction agree to a few tenths of an Angstrom.
    from foldnet.common.geometry_np import virtual_cb

    x = p.atom_positions[real]
    v = virtual_cb(x[:, 0], x[:, 1], x[:, 2])
    assert np.median(np.linalg.norm(v - x[:, 4], axis=-1)) < 0.3
    back = to_protein(f)
    np.testing.assert_array_equal(back.residue_index, p.residue_index)
    assert back.sequence == p.sequence


def test_featurize_distances_real_map(data_root):
    d = data_root / "pdnet_related" / "disteval_1guuA"
    seq = (d / "1guuA.fasta").read_text().split("\n", 1)[1].replace("\n", "")
    m = np.load(d / "1guuA.true.npy")
    m = m.astype(np.float32)
    m[3, 7] = m[7, 3] = np.nan
    m[5, 9] = -1.0
    f = featurize_distances("1guuA", seq, m, source_id="1guuA.true.npy")
    assert f["cb_dist"].shape == (50, 50) and f["cb_dist"].dtype == np.float16
    assert np.isnan(f["cb_dist"][3, 7]) and np.isnan(f["cb_dist"][5, 9])
    assert f["atom_mask"].sum() == 0 and np.isnan(f["torsions"]).all()
    np.testing.assert_allclose(f["cb_dist"][0, 1], 5.973, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        featurize_distances("1guuA", seq[:-1], m)


def test_no_backbone_is_an_error():
    with pytest.raises(ValueError, match="no residue has N, CA and C"):
        featurize(from_sequence("x", "ACDEF"))
