"""PDB / mmCIF reader: every small real set, a promod3 sample, hand-checked facts, synthetic edge cases.

The expected values were read off the files with zcat/grep (quoted in comments).
"""

import gzip
from pathlib import Path

import numpy as np
import pytest
from Bio.PDB import MMCIFIO, PDBParser

from foldnet.common import residue_constants as rc
from foldnet.data.errors import ParseError
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.data.structure_parser import read_chains, read_structure


def _small_sets(root: Path) -> list[Path]:
    files = sorted((root / "cath_tools_testdata").iterdir())
    files += sorted((root / "scop_domains_foldseek/pdbstyle").glob("*.ent.gz"))
    files += sorted((root / "scop_domains_foldseek/homstrad_subset").glob("*/*.pdb"))
    files += sorted((root / "pdnet_related").glob("**/*.pdb"))
    return files


def _ca_count(path: Path) -> int:
    """Residues with a CA ATOM record, counted independently of Biopython (first altloc only)."""
    opener = gzip.open if path.suffix == ".gz" else open
    seen = set()
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith("ENDMDL"):
                break
            if line.startswith("ATOM") and line[12:16] == " CA " and line[16] in " A":
                seen.add((line[21], line[22:27]))
    return len(seen)


def test_parse_every_small_set(data_root):
    files = _small_sets(data_root)
    assert len(files) == 20 + 26 + 50 + 3
    for f in files:
        p = read_structure(f)
        assert len(p) == _ca_count(f), f
        assert p.atom_mask[:, rc.CA_IDX].all(), f
        assert np.isfinite(p.atom_positions).all(), f
        # Real, connected chains: most consecutive CA-CA distances are ~3.8 A.
        d = np.linalg.norm(np.diff(p.atom_positions[:, rc.CA_IDX], axis=0), axis=-1)
        assert np.mean(np.abs(d - 3.8) < 0.2) > 0.85, f
        # Glycine never has a CB; every other residue in these full-atom files mostly does.
        gly = p.aatype == rc.RESTYPE_ORDER["G"]
        assert p.atom_mask[gly, rc.CB_IDX].sum() == 0
        assert p.atom_mask[~gly, rc.CB_IDX].mean() > 0.9, f


def test_promod3_sample_matches_chains_table(data_root):
    """~300 of the 5,171 backbone files: sequence, numbering and CATH label vs chains.tsv.gz."""
    db = data_root / "promod3_structure_db"
    with gzip.open(db / "chains.tsv.gz", "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        table = {r[0]: dict(zip(header, r)) for r in (line.rstrip("\n").split("\t") for line in fh)}
    files = sorted((db / "pdb_single_domain").glob("*.pdb.gz"))
    assert len(files) == 5171
    sample = files[::17]
    assert len(sample) == 305
    for f in sample:
        p = read_structure(f)
        row = table[p.id]
        assert p.sequence == row["sequence"], f
        # "Residue numbers = SEQRES index", one per residue, gap-free.
        np.testing.assert_array_equal(np.diff(p.residue_index), 1)
        # Backbone only: N, CA, C, O present, no CB.
        assert p.atom_mask[:, :4].all() and not p.atom_mask[:, 4].any(), f
        assert p.cath == row["cath_superfamilies"], f
        assert p.chain_id == row["chain"]


def test_promod3_equals_proteinnet(data_root):
    """Same chains: ProteinNet `1a6j_1_B` <-> `1a6jB.pdb.gz`; pm integers round to 0.005 A."""
    db = data_root / "promod3_structure_db/pdb_single_domain"
    checked = 0
    for rec in iter_proteinnet(data_root / "proteinnet/validation.gz"):
        pdb, _, ch = rec.id.split("_")
        f = db / f"{pdb}{ch}.pdb.gz"
        if not f.exists():
            continue
        p = read_structure(f)
        assert p.sequence == rec.sequence
        np.testing.assert_allclose(p.atom_positions[:, :3], rec.atom_positions[:, :3], atol=0.0051)
        checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_hand_checked_facts(data_root):
    ct = data_root / "cath_tools_testdata"
    # 1c0pA01: three segments 999-1076, 1138-1185, 1289-1361 (199 residues), no header.
    p = read_structure(ct / "1c0pA01")
    assert p.id == "1c0pA01" and p.chain_id == "A" and len(p) == 78 + 48 + 73
    assert p.residue_index[0] == 999 and p.residue_index[-1] == 1361
    assert p.sequence.startswith("LMMHSQKRVVVLGSGVIGLS")
    # "ATOM 1 N LEU A 999 0.041 148.800 54.967"
    np.testing.assert_allclose(p.atom_positions[0, rc.N_IDX], [0.041, 148.800, 54.967], atol=1e-3)
    # Altlocs in 1hdoA00: SER 42 CB A 0.33 / B 0.67 -> B; MET 135 CB A 0.48 / B 0.52 -> B;
    # GLY 143 CA A 0.62 / B 0.38 -> A.
    p = read_structure(ct / "1hdoA00")
    at = {int(r): i for i, r in enumerate(p.residue_index)}
    np.testing.assert_allclose(p.atom_positions[at[42], rc.CB_IDX], [35.616, 8.891, -2.897], atol=1e-3)
    np.testing.assert_allclose(p.atom_positions[at[135], rc.CB_IDX], [20.040, -5.599, 19.969], atol=1e-3)
    np.testing.assert_allclose(p.atom_positions[at[143], rc.CA_IDX], [14.635, 4.075, 29.371], atol=1e-3)
    assert p.atom_mask[at[143], rc.CB_IDX] == 0  # glycine
    # HOMSTRAD 1tvdb (chain H): "GLY H 57", then insertion codes 57A..57E (ADFTQ), then 58.
    p = read_structure(data_root / "scop_domains_foldseek/homstrad_subset/igV/1tvdb.pdb")
    assert p.chain_id == "H"
    i = int(np.nonzero(p.residue_index == 57)[0][0])
    assert p.residue_index[i : i + 7].tolist() == [57] * 6 + [58]
    assert p.insertion_code[i : i + 7].tolist() == ["", "A", "B", "C", "D", "E", ""]
    assert p.sequence[i : i + 6] == "GADFTQ"
    # Blank chain IDs: the PSICOV/DEEPCON files; 1guuA = 50 residues from LYS 1.
    p = read_structure(data_root / "pdnet_related/disteval_1guuA/1guuA.pdb")
    assert p.chain_id == "" and len(p) == 50 and p.sequence.startswith("KTRWTREED")
    assert read_structure(data_root / "pdnet_related/disteval_1guuA/1guuA.pdb", chain=" ").chain_id == ""
    # ProMod3: REMARK 901 CATH 16vpA00 1.10.1290.10 v4_1_0_S35.
    p = read_structure(data_root / "promod3_structure_db/pdb_single_domain/16vpA.pdb.gz")
    assert p.cath == "1.10.1290.10" and len(p) == 303 and p.sequence[:3] == "SRM"


def test_read_chains_and_chain_errors(data_root):
    f = data_root / "scop_domains_foldseek/homstrad_subset/igV/1tvdb.pdb"
    chains = read_chains(f)
    assert list(chains) == ["H"] and chains["H"].id == "1tvdb_H"
    with pytest.raises(ParseError) as ei:
        read_structure(f, chain="Z")
    assert "chain 'Z' not found; chains present: 'H'" in str(ei.value) and str(f) in str(ei.value)
    with pytest.raises(ParseError, match="model index 3 out of range"):
        read_structure(f, model=3)


def _atom(serial, name, resn, chain, resseq, xyz, occ=1.0, alt=" ", icode=" ", het=False, b=10.0):
    rec = "HETATM" if het else "ATOM  "
    nm = f" {name:<3}" if len(name) < 4 else name
    x, y, z = xyz
    return (
        f"{rec}{serial:>5} {nm}{alt}{resn:>3} {chain}{resseq:>4}{icode}   "
        f"{x:>8.3f}{y:>8.3f}{z:>8.3f}{occ:>6.2f}{b:>6.2f}          {name[0]:>2}\n"
    )


def _backbone(serial, resn, chain, resseq, x0, het=False, atoms=("N", "CA", "C", "O", "CB")):
    offs = {
        "N": (0.0, 1.0, 0.0),
        "CA": (0.0, 0.0, 0.0),
        "C": (1.5, 0.0, 0.0),
        "O": (2.0, 1.0, 0.0),
        "CB": (-0.5, -0.8, 1.2),
    }
    lines = []
    for a in atoms:
        o = offs[a]
        lines.append(_atom(serial, a, resn, chain, resseq, (x0 + o[0], o[1], o[2]), het=het))
        serial += 1
    return lines


def _synthetic_pdb() -> str:
    lines = ["HEADER    SYNTHETIC TEST\n"]
    lines += _backbone(1, "ALA", "A", 1, 0.0)
    # Residue 2: CA in two locations, A occ 0.3 (x=100) and B occ 0.7 (x=200): B wins.
    lines += [_atom(6, "N", "SER", "A", 2, (3.8, 1.0, 0.0))]
    lines += [_atom(7, "CA", "SER", "A", 2, (100.0, 0.0, 0.0), occ=0.3, alt="A")]
    lines += [_atom(8, "CA", "SER", "A", 2, (200.0, 0.0, 0.0), occ=0.7, alt="B")]
    lines += [_atom(9, "C", "SER", "A", 2, (5.3, 0.0, 0.0))]
    lines += [_atom(10, "O", "SER", "A", 2, (5.8, 1.0, 0.0))]
    # Selenomethionine as HETATM with backbone -> kept as M.
    lines += _backbone(11, "MSE", "A", 3, 7.6, het=True)
    # Glycine missing its O -> mask 0; insertion code 3A.
    lines += [l[:26] + "A" + l[27:] for l in _backbone(16, "GLY", "A", 3, 11.4, atoms=("N", "CA", "C"))]
    # Unknown ATOM residue with a CA -> X; a residue without CA -> dropped.
    lines += _backbone(19, "UNK", "A", 4, 15.2, atoms=("N", "CA", "C", "O"))
    lines += [_atom(23, "N", "LYS", "A", 5, (19.0, 1.0, 0.0))]
    lines += ["TER\n"]
    # Ligand with CA-named atom, calcium ion, waters: all dropped.
    lines += [_atom(30, "CA", "CA", "A", 101, (0.0, 9.0, 9.0), het=True)]
    lines += _backbone(31, "ATP", "A", 102, 30.0, het=True, atoms=("N", "CA", "C"))
    lines += [_atom(40, "O", "HOH", "A", 201, (0.0, 5.0, 5.0), het=True)]
    # A second chain with a blank chain ID.
    lines += _backbone(50, "TRP", " ", 1, 40.0)
    lines += ["END\n"]
    return "".join(lines)


def test_synthetic_policies(tmp_path):
    f = tmp_path / "synth.pdb"
    f.write_text(_synthetic_pdb())
    p = read_structure(f)
    assert p.chain_id == "A" and p.id == "synth"
    assert p.sequence == "ASMGX"
    assert p.residue_index.tolist() == [1, 2, 3, 3, 4]
    assert p.insertion_code.tolist() == ["", "", "", "A", ""]
    assert p.atom_positions[1, rc.CA_IDX, 0] == pytest.approx(200.0)  # altloc B (occ 0.7)
    assert p.atom_mask[1].tolist() == [1, 1, 1, 1, 0]  # SER without CB in the file
    assert p.atom_mask[2].tolist() == [1, 1, 1, 1, 1]  # MSE kept with its CB
    assert p.atom_mask[3].tolist() == [1, 1, 1, 0, 0]  # GLY: missing O, no CB
    assert p.atom_mask[4].tolist() == [1, 1, 1, 1, 0]
    np.testing.assert_allclose(p.atom_positions[3, rc.O_IDX], 0.0)
    chains = read_chains(f)
    assert list(chains) == ["A", ""]
    assert chains[""].sequence == "W" and chains[""].id == "synth"
    assert read_structure(f, chain="").sequence == "W"
    # Same bytes gzip-compressed under a name without extension.
    g = tmp_path / "synth_noext"
    g.write_bytes(gzip.compress(f.read_bytes()))
    q = read_structure(g, id="x")
    assert q.id == "x" and q.sequence == p.sequence
    np.testing.assert_array_equal(q.atom_positions, p.atom_positions)


def test_altloc_tie_keeps_first(tmp_path):
    lines = _backbone(1, "ALA", "A", 1, 0.0, atoms=("N", "C", "O"))
    lines += [_atom(4, "CA", "ALA", "A", 1, (1.0, 2.0, 3.0), occ=0.5, alt="A")]
    lines += [_atom(5, "CA", "ALA", "A", 1, (4.0, 5.0, 6.0), occ=0.5, alt="B")]
    f = tmp_path / "tie.pdb"
    f.write_text("".join(lines))
    np.testing.assert_allclose(read_structure(f).atom_positions[0, rc.CA_IDX], [1.0, 2.0, 3.0])


def test_models(tmp_path):
    m1 = _backbone(1, "ALA", "A", 1, 0.0)
    m2 = _backbone(1, "ALA", "A", 1, 50.0)
    f = tmp_path / "nmr.pdb"
    text = "MODEL        1\n" + "".join(m1) + "ENDMDL\n"
    text += "MODEL        2\n" + "".join(m2) + "ENDMDL\nEND\n"
    f.write_text(text)
    assert read_structure(f).atom_positions[0, rc.CA_IDX, 0] == pytest.approx(0.0)
    assert read_structure(f, model=1).atom_positions[0, rc.CA_IDX, 0] == pytest.approx(50.0)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "empty file"),
        ("   \n\n", "empty file"),
        ("HEADER    NOTHING\nREMARK 1 nothing here\nEND\n", "no atoms"),
        ("data_broken\nloop_\n_atom_site.id\n1\n", "cannot parse as mmCIF"),
    ],
)
def test_bad_files(tmp_path, content, needle):
    f = tmp_path / "bad.pdb"
    f.write_text(content)
    with pytest.raises(ParseError) as ei:
        read_structure(f)
    assert needle in str(ei.value) and str(f) in str(ei.value)


def test_only_ligands_is_an_error(tmp_path):
    f = tmp_path / "lig.pdb"
    water = _atom(1, "O", "HOH", "A", 1, (0, 0, 0), het=True)
    f.write_text(water + _atom(2, "C1", "NAG", "A", 2, (1, 1, 1), het=True))
    with pytest.raises(ParseError, match="no amino-acid residues"):
        read_structure(f)


def _assert_same_protein(a, b):
    assert a.sequence == b.sequence and a.chain_id == b.chain_id
    np.testing.assert_array_equal(a.residue_index, b.residue_index)
    np.testing.assert_array_equal(a.insertion_code, b.insertion_code)
    np.testing.assert_array_equal(a.atom_mask, b.atom_mask)
    np.testing.assert_allclose(a.atom_positions, b.atom_positions, atol=1e-3)
    np.testing.assert_allclose(a.b_factors, b.b_factors, atol=1e-2)


@pytest.mark.parametrize(
    "rel",
    [
        "scop_domains_foldseek/homstrad_subset/igV/1tvdb.pdb",
        "cath_tools_testdata/1hdoA00",
        "pdnet_related/disteval_1guuA/1guuA.pdb",
    ],
)
def test_mmcif_roundtrip_of_real_pdb(data_root, tmp_path, rel):
    """Insertion codes (1tvdb), altlocs (1hdoA00) and a blank chain (1guuA) survive PDB -> mmCIF."""
    src = data_root / rel
    structure = PDBParser(QUIET=True).get_structure("x", str(src))
    io_ = MMCIFIO()
    io_.set_structure(structure)
    out = tmp_path / "conv.cif"
    io_.save(str(out))
    assert out.read_text().startswith("data_")
    a = read_structure(src)
    b = read_structure(out)
    # A blank PDB chain ID is written as "." in mmCIF and must read back as "".
    _assert_same_protein(a, b)
    gz = tmp_path / "conv.cif.gz"
    gz.write_bytes(gzip.compress(out.read_bytes()))
    _assert_same_protein(b, read_structure(gz))


_MMCIF = """\
# hand-written test file
data_TEST
#
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_entity_id
_atom_site.label_seq_id
_atom_site.pdbx_PDB_ins_code
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_model_num
ATOM   1  N N  . GLY A 1 1 ? 0.000 1.000 0.000 1.00 5.0 10 B 1
ATOM   2  C CA . GLY A 1 1 ? 0.000 0.000 0.000 1.00 6.0 10 B 1
ATOM   3  C C  . GLY A 1 1 ? 1.500 0.000 0.000 1.00 5.0 10 B 1
ATOM   4  O O  . GLY A 1 1 ? 2.000 1.000 0.000 1.00 5.0 10 B 1
HETATM 5  N N  . MSE A 1 2 ? 3.800 1.000 0.000 1.00 5.0 11 B 1
HETATM 6  C CA A MSE A 1 2 ? 3.800 0.000 0.000 0.40 7.0 11 B 1
HETATM 7  C CA B MSE A 1 2 ? 9.900 9.900 9.900 0.60 8.0 11 B 1
HETATM 8  C C  . MSE A 1 2 ? 5.300 0.000 0.000 1.00 5.0 11 B 1
HETATM 9  C CB . MSE A 1 2 ? 3.300 -0.800 1.200 1.00 5.0 11 B 1
ATOM   10 N N  . LEU A 1 3 A 7.600 1.000 0.000 1.00 5.0 11 B 1
ATOM   11 C CA . LEU A 1 3 A 7.600 0.000 0.000 1.00 9.0 11 B 1
HETATM 12 O O  . HOH C 2 . ? 0.000 5.000 5.000 1.00 5.0 301 B 1
"""


def test_handwritten_mmcif(tmp_path):
    f = tmp_path / "test_no_extension"
    f.write_text(_MMCIF)
    p = read_structure(f)
    assert p.chain_id == "B" and p.sequence == "GML"
    assert p.residue_index.tolist() == [10, 11, 11]
    assert p.insertion_code.tolist() == ["", "", "A"]
    np.testing.assert_allclose(p.atom_positions[1, rc.CA_IDX], [9.9, 9.9, 9.9])  # altloc B, occ 0.6
    assert p.atom_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 1], [1, 1, 0, 0, 0]]
    np.testing.assert_allclose(p.b_factors, [6.0, 8.0, 9.0])


def test_point_mutation_keeps_most_occupied_residue(tmp_path):
    """Microheterogeneity: residue 2 is SER (altloc A, occ 0.4) or THR (altloc B, occ 0.6)."""
    lines = _backbone(1, "ALA", "A", 1, 0.0)
    for k, (alt, resn, occ, x) in enumerate([("A", "SER", 0.4, 10.0), ("B", "THR", 0.6, 20.0)]):
        for j, name in enumerate(("N", "CA", "C", "O")):
            lines.append(_atom(10 + 4 * k + j, name, resn, "A", 2, (x + j, 0.0, 0.0), occ=occ, alt=alt))
    lines += _backbone(20, "GLY", "A", 3, 30.0, atoms=("N", "CA", "C", "O"))
    f = tmp_path / "mut.pdb"
    f.write_text("".join(lines))
    p = read_structure(f)
    assert p.sequence == "ATG"
    assert p.atom_positions[1, rc.CA_IDX, 0] == pytest.approx(21.0)
