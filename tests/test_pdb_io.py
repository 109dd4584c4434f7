"""PDB / mmCIF writer: fixed columns, re-parse with Biopython and the project reader, atomic write."""

import io

import numpy as np
import pytest
from Bio.PDB import MMCIFParser, PDBParser

from foldnet.common import geometry_np, pdb_io
from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet


@pytest.fixture(scope="module")
def protein(testdata):
    """A real chain with virtual CB, numbering with a gap and insertion codes, graded B-factors."""
    p = next(p for p in iter_proteinnet(testdata / "proteinnet" / "validation.gz") if "G" in p.sequence[:40])
    p = geometry_np.with_virtual_cb(p.select(np.arange(40)))
    resnum = np.arange(1, 41, dtype=np.int32) + 10
    resnum[20:] += 5  # a numbering gap
    icode = np.array([""] * 40, dtype=object)
    icode[7], icode[8] = "A", "B"
    resnum[8] = resnum[7]  # 17A, 17B share the number
    bfac = np.linspace(0.0, 99.99, 40).astype(np.float32)
    # Displace a few atoms far from the origin to exercise the column widths.
    pos = p.atom_positions.copy()
    pos[0, 0] = [-999.123, 1234.5, -0.001]
    return p.replace(residue_index=resnum, insertion_code=icode, b_factors=bfac, atom_positions=pos, chain_id="B")


def _expected_atoms(p):
    for k in range(len(p)):
        for a, name in enumerate(rc.ATOM_TYPES):
            if p.atom_mask[k, a] > 0 and not (name == "CB" and p.aatype[k] == rc.RESTYPE_ORDER["G"]):
                yield k, a, name


def _check_structure(p, structure):
    chains = list(structure[0])
    assert [c.id for c in chains] == ["B"]
    residues = list(chains[0])
    assert len(residues) == len(p)
    expected = list(_expected_atoms(p))
    got = [(r, atom) for r in residues for atom in r]
    assert len(got) == len(expected)
    for (k, a, name), (res, atom) in zip(expected, got):
        assert res.id[1] == p.residue_index[k]
        assert res.id[2] == (p.insertion_code[k] or " ")
        assert res.get_resname() == rc.RESTYPE_1TO3[p.sequence[k]]
        assert atom.get_id() == name
        assert atom.element == name[0]
        np.testing.assert_allclose(atom.coord, p.atom_positions[k, a], atol=1e-3)
        assert atom.bfactor == pytest.approx(float(p.b_factors[k]), abs=0.006)
        assert atom.occupancy == pytest.approx(1.0)


def test_pdb_round_trip_with_biopython(protein):
    text = pdb_io.to_pdb(protein)
    structure = PDBParser(QUIET=True).get_structure("x", io.StringIO(text))
    _check_structure(protein, structure)
    gly = [k for k in range(len(protein)) if protein.sequence[k] == "G"]
    assert gly  # the fixture has a glycine ...
    for k in gly:  # ... which gets no CB even though its mask is set
        assert protein.atom_mask[k, rc.CB_IDX] == 1
        assert "CB" not in structure[0]["B"][(" ", int(protein.residue_index[k]), protein.insertion_code[k] or " ")]


def test_pdb_fixed_columns(protein):
    lines = pdb_io.to_pdb(protein).splitlines()
    atom = next(line for line in lines if line.startswith("ATOM"))
    # wwPDB v3.3 columns (1-based): serial 7-11, name 13-16, resName 18-20, chain 22,
    # resSeq 23-26, iCode 27, x 31-38, y 39-46, z 47-54, occ 55-60, B 61-66, element 77-78.
    k = 0
    assert atom[6:11] == "    1"
    assert atom[12:16] == " N  "
    assert atom[17:20] == rc.RESTYPE_1TO3[protein.sequence[0]]
    assert atom[21] == "B"
    assert atom[22:26] == f"{protein.residue_index[k]:4d}"
    assert atom[30:38] == "-999.123" and atom[38:46] == "1234.500" and atom[46:54] == "  -0.001"
    assert atom[54:60] == "  1.00" and atom[60:66] == "  0.00"
    assert atom[76:78] == " N"
    ca = next(line for line in lines if line[12:16] == " CA ")
    assert ca[76:78] == " C"
    ins = [line for line in lines if line.startswith("ATOM") and line[26] == "A"]
    assert ins and all(line[22:26] == f"{protein.residue_index[7]:4d}" for line in ins)
    assert lines[-2].startswith("TER") and lines[-2][17:26] == f"{rc.RESTYPE_1TO3[protein.sequence[-1]]} B{protein.residue_index[-1]:4d}"
    assert lines[-1] == "END"
    assert all(len(line) <= 80 for line in lines)
    # Serial numbers run 1..N over the ATOM records, TER takes the next one.
    serials = [int(line[6:11]) for line in lines if line.startswith(("ATOM", "TER"))]
    assert serials == list(range(1, len(serials) + 1))


def test_mmcif_round_trip_with_biopython(protein):
    text = pdb_io.to_mmcif(protein)
    assert text.startswith("data_")
    structure = MMCIFParser(QUIET=True).get_structure("x", io.StringIO(text))
    _check_structure(protein, structure)


def test_write_pdb_is_atomic_and_reparses(protein, tmp_path):
    out = tmp_path / "sub" / "model.pdb"
    pdb_io.write_pdb(protein, out)
    assert out.read_text() == pdb_io.to_pdb(protein)
    assert [f.name for f in out.parent.iterdir()] == ["model.pdb"]  # no temp file left behind
    pdb_io.write_mmcif(protein, tmp_path / "model.cif")
    assert (tmp_path / "model.cif").read_text().startswith("data_")


def test_project_reader_round_trip(protein, tmp_path):
    structure = pytest.importorskip("foldnet.data.structure_parser")
    path = tmp_path / "model.pdb"
    pdb_io.write_pdb(protein, path)
    back = structure.read_structure(path, chain="B")
    assert back.sequence == protein.sequence
    np.testing.assert_array_equal(back.residue_index, protein.residue_index)
    np.testing.assert_allclose(back.atom_positions[:, :4], protein.atom_positions[:, :4], atol=1e-3)
    if back.b_factors is not None:
        np.testing.assert_allclose(back.b_factors, protein.b_factors, atol=0.006)
    if back.insertion_code is not None:
        assert [c.strip() for c in back.insertion_code] == [c for c in protein.insertion_code]


def test_bad_input_raises(protein):
    with pytest.raises(ValueError, match="chain id"):
        pdb_io.to_pdb(protein.replace(chain_id="AB"))
    pos = protein.atom_positions.copy()
    pos[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        pdb_io.to_pdb(protein.replace(atom_positions=pos))
    with pytest.raises(ValueError, match="B-factors"):
        pdb_io.to_pdb(protein.replace(b_factors=np.full(len(protein), 1000.0, np.float32)))
    big = protein.residue_index.copy()
    big[-1] = 10000
    with pytest.raises(ValueError, match="residue numbers"):
        pdb_io.to_pdb(protein.replace(residue_index=big))
