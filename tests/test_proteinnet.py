"""ProteinNet reader on the original CASP7 T0366 record and the bundled files; malformed records."""

import gzip

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.errors import ParseError
from foldnet.data.proteinnet import iter_proteinnet, read_proteinnet


def test_original_sample_record(testdata):
    """text_sample: L=106, mask '----------++++++++----+++...'.

    N of residue 11 (0-based 10) is at (1756.2, 3056.4, 1033.) pm in [TERTIARY].
    """
    (p,) = read_proteinnet(testdata / "proteinnet_sample/text_sample")
    assert p.id == "TBM#T0366" and len(p) == 106
    assert p.sequence.startswith("TENLYFQSMGLRTVEMKKGP")
    observed = p.atom_mask[:, rc.CA_IDX]
    assert observed[:10].sum() == 0 and observed[10:18].all() and observed[18:22].sum() == 0
    np.testing.assert_allclose(p.atom_positions[10, rc.N_IDX], [17.562, 30.564, 10.33], atol=1e-4)
    # '-' residues have zero coordinates and masks, CB is never set by ProteinNet.
    assert np.all(p.atom_positions[:10] == 0) and p.atom_mask[:, 3:].sum() == 0
    # Profile rows 1-20 in ACDEFGHIKLMNPQRSTVWY order: the first residues T, E, N have 1.0 on their letter.
    assert p.profile.shape == (106, 20)
    assert [rc.RESTYPES[i] for i in p.profile[:3].argmax(1)] == ["T", "E", "N"]
    assert p.profile[0, rc.RESTYPE_ORDER["T"]] == 1.0


def test_bundled_files(data_root):
    recs = list(iter_proteinnet(data_root / "proteinnet/validation.gz"))
    assert len(recs) == 492
    assert len({r.id for r in recs}) == 492
    for r in recs:
        assert 30 <= len(r) <= 400 and r.atom_mask[:, :3].all()
        np.testing.assert_allclose(r.profile.sum(1), 1.0, atol=0.02)  # 3-decimal frequencies
        d = np.linalg.norm(np.diff(r.atom_positions[:, rc.CA_IDX], axis=0), axis=-1)
        # Gap-free stretches: trans peptides ~3.8 A, cis peptides ~2.9 A (e.g. 1byf_1_A 84-85).
        assert np.all((d > 2.5) & (d < 4.1)), r.id  # measured range 2.62-3.98
    assert sum(1 for _ in iter_proteinnet(data_root / "proteinnet/testing.gz")) == 709


_GOOD = "[ID]\n{id}\n[PRIMARY]\nAC\n[EVOLUTIONARY]\n" + "\n".join(["0.5\t0.5"] * 21) + (
    "\n[TERTIARY]\n100\t200\t300\t400\t500\t600\n0\t0\t0\t0\t0\t0\n0\t0\t0\t0\t0\t0\n[MASK]\n++\n\n"
)


def _bad_file(tmp_path, middle: str):
    """Good record a (lines 1-33), the bad record b from line 34, good record c."""
    f = tmp_path / "pn.gz"
    f.write_bytes(gzip.compress((_GOOD.format(id="a_1_A") + middle + _GOOD.format(id="c_1_C")).encode()))
    return f


@pytest.mark.parametrize(
    "middle, line, needle",
    [
        ("[ID]\nb_1_B\n[PRIMARY]\nA1\n\n", 37, "invalid residue letter '1'"),
        ("[ID]\nb_1_B\n[PRIMARY]\nAC\n[MASK]\n+\n\n", 39, "[MASK] must be 2 characters"),
        (
            "[ID]\nb_1_B\n[PRIMARY]\nAC\n[TERTIARY]\n1\t2\n3\t4\n5\t6\n\n",
            39,
            "[TERTIARY] row has 2 values, expected 6",
        ),
        ("[ID]\nb_1_B\n[PRIMARY]\nAC\n[PRIMARY]\nAC\n\n", 38, "duplicate section [PRIMARY]"),
    ],
)
def test_malformed_records_raise_or_skip(tmp_path, middle, line, needle):
    f = _bad_file(tmp_path, middle)
    with pytest.raises(ParseError) as ei:
        read_proteinnet(f)
    assert ei.value.record == "b_1_B" and ei.value.line == line and needle in str(ei.value)
    out = list(iter_proteinnet(f, errors="skip"))
    assert [type(o).__name__ for o in out] == ["Protein", "ParseError", "Protein"]
    assert out[2].id == "c_1_C" and out[2].chain_id == "C"
    # x row "100 200 300 ...": N, CA, C of residue 1 at x = 1, 2, 3 A (picometres / 100).
    np.testing.assert_allclose(out[2].atom_positions[0, :3, 0], [1.0, 2.0, 3.0])


def test_text_before_first_id(tmp_path):
    f = tmp_path / "pn.txt"
    f.write_text("junk\n" + _GOOD.format(id="a_1_A"))
    with pytest.raises(ParseError, match="text before the first") as ei:
        read_proteinnet(f)
    assert ei.value.line == 1
    out = list(iter_proteinnet(f, errors="skip"))
    assert isinstance(out[0], ParseError) and out[1].id == "a_1_A"
