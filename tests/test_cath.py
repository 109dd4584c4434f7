"""CATH ids, lists and boundaries on the real CATH files; domains cut from real chains."""

import numpy as np
import pytest

from foldnet.data.cath import (
    CathDomain,
    Segment,
    parse_boundaries,
    parse_domain_id,
    read_domain_ids,
    read_domain_list,
    read_putative_boundaries,
    select_domain,
)
from foldnet.data.errors import ParseError
from foldnet.data.structure_parser import read_structure


def test_parse_domain_id():
    assert parse_domain_id("1abcA01") == ("1abc", "A", 1)
    assert parse_domain_id("16vpA00") == ("16vp", "A", 0)
    assert parse_domain_id("2prp000") == ("2prp", "", 0)  # chain "0" = blank
    assert parse_domain_id("1ABCa12") == ("1abc", "a", 12)
    for bad in ["1abcA1", "abcdA01", "1abcA001", "1ab_A01", "", "1abcAA1"]:
        with pytest.raises(ParseError):
            parse_domain_id(bad)


def test_domain_list_s35_v4_1(data_root):
    doms = read_domain_list(data_root / "cath_classification/cath-domain-list-S35-v4_1_0.txt")
    assert len(doms) == 21155
    assert doms[0] == CathDomain("1oaiA00", "1oai", "A", 0, "1.10.8.10", 59, 1.0)
    d = doms[0]
    assert (d.class_, d.architecture, d.topology) == ("1", "1.10", "1.10.8")
    by_id = {d.domain_id: d for d in doms}
    assert len(by_id) == 21155
    # "1q02A00 1 10 8 10 35 ... 52 999.000" (NMR) and "2prp000 ... 142 1000.000" (obsolete).
    assert by_id["1q02A00"].resolution is None and by_id["1q02A00"].length == 52
    assert by_id["2prp000"].chain == "" and by_id["2prp000"].cath == "1.10.790.10"
    assert by_id["2prp000"].resolution is None
    assert sum(d.resolution is None for d in doms) == 1569  # awk '$12>=999' | wc -l
    assert len({d.cath for d in doms}) == 2737  # superfamilies, as the README says
    assert {d.class_ for d in doms} <= {"1", "2", "3", "4", "6"}


def test_cath_b_clfd_and_id_list(data_root):
    doms = read_domain_list(data_root / "cath_classification/cath-b-s35-newest.clfd")
    assert len(doms) == 31964
    assert doms[0].domain_id == "1oaiA00" and doms[0].length is None and doms[0].resolution is None
    ids = read_domain_ids(data_root / "cath_classification/cath-dataset-nonredundant-S40-v4_3_0.list")
    assert len(ids) == 31885
    assert ids[0].domain_id == "12asA00" and ids[0].cath is None
    assert ids[-1] == CathDomain("7mdhA02", "7mdh", "A", 2)


def test_putative_boundaries(data_root):
    put = read_putative_boundaries(data_root / "cath_classification/cath-b-s35-newest-putative.txt")
    assert len(put) == 12427
    assert put["1av1A00"] == ("1.20.5.1230", "43-243:A")
    assert put["1dkiC01"] == ("3.90.70.50", "4P-8:C,154-253:C")
    assert parse_boundaries(put["1ry3A00"][1]) == [Segment("A", (-18, ""), (46, ""))]
    # Repeated segments (CATH-B artefact) merge into one.
    assert parse_boundaries(put["1br2A03"][1]) == [Segment("A", (341, ""), (449, ""))]


def test_parse_boundaries_forms():
    assert parse_boundaries("43-243:A") == [Segment("A", (43, ""), (243, ""))]
    assert parse_boundaries("1-100:A,150-200:A") == [
        Segment("A", (1, ""), (100, "")),
        Segment("A", (150, ""), (200, "")),
    ]
    assert parse_boundaries("-5-50:A") == [Segment("A", (-5, ""), (50, ""))]
    assert parse_boundaries("-10--3:B") == [Segment("B", (-10, ""), (-3, ""))]
    assert parse_boundaries("10A-50:A") == [Segment("A", (10, "A"), (50, ""))]
    assert parse_boundaries("4P-8:C, 154-253C:C") == [
        Segment("C", (4, "P"), (8, "")),
        Segment("C", (154, ""), (253, "C")),
    ]
    for bad in ["", "1-100", "1-100:AB", "a-100:A", "1-100:A,", "1--:A", "1-100:A;2-3:A"]:
        with pytest.raises(ParseError):
            parse_boundaries(bad)


def test_bad_list_lines(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("# comment\n1oaiA00 1 10 8 10 1 1 1 1 1 59 1.000\n3frhA01 1 10 8 10 2 1 1 1 1 58\n")
    with pytest.raises(ParseError) as ei:
        read_domain_list(f)
    assert ei.value.line == 3 and ei.value.record == "3frhA01" and "12 columns" in str(ei.value)
    f.write_text("1oaiA00 1 10 x 10 1 1 1 1 1 59 1.000\n")
    with pytest.raises(ParseError, match="invalid CATH code"):
        read_domain_list(f)
    f.write_text("1oaiA00\nnot_an_id\n")
    with pytest.raises(ParseError) as ei:
        read_domain_ids(f)
    assert ei.value.line == 2
    f.write_text("1av1A00 putative 1.20.5.1230 43-243\n")
    with pytest.raises(ParseError, match="invalid segment"):
        read_putative_boundaries(f)


def test_select_domain_discontinuous(data_root):
    """1c0pA01 holds residues 999-1076, 1138-1185, 1289-1361 (grep of the CA lines)."""
    p = read_structure(data_root / "cath_tools_testdata/1c0pA01")
    same = select_domain(p, "999-1076:A,1138-1185:A,1289-1361:A")
    assert len(same) == len(p) == 199
    np.testing.assert_array_equal(same.atom_positions, p.atom_positions)
    two = select_domain(p, "1289-1361:A,999-1076:A", id="1c0pA_x")
    assert two.id == "1c0pA_x" and len(two) == 78 + 73
    # Chain order is kept whatever the segment order.
    assert two.residue_index[0] == 999 and two.residue_index[-1] == 1361
    assert two.residue_index[77] == 1076 and two.residue_index[78] == 1289
    # Boundary residues absent from the structure: 1080-1140 covers 1138..1140.
    assert select_domain(p, "1080-1140:A").residue_index.tolist() == [1138, 1139, 1140]
    with pytest.raises(ValueError, match="selects no residue"):
        select_domain(p, "1100-1130:A")
    with pytest.raises(ValueError, match="chain 'B'"):
        select_domain(p, "999-1076:B")


def test_select_domain_gap_and_insertion_codes(data_root):
    # 1a04A02: residues 129-142 then 150-215 (143-149 unobserved).
    p = read_structure(data_root / "cath_tools_testdata/1a04A02")
    assert len(select_domain(p, "129-215:A")) == 14 + 66 == len(p)
    assert len(select_domain(p, "125-145:A")) == 14
    # 1tvdb chain H: 57, 57A..57E, 58: "57A-57D:H" = 4 residues, "57-57:H" only 57.
    p = read_structure(data_root / "scop_domains_foldseek/homstrad_subset/igV/1tvdb.pdb")
    d = select_domain(p, "57A-57D:H")
    assert d.insertion_code.tolist() == ["A", "B", "C", "D"] and d.sequence == "ADFT"
    assert select_domain(p, "57-57:H").insertion_code.tolist() == [""]
    assert select_domain(p, "57-58:H").insertion_code.tolist() == ["", "A", "B", "C", "D", "E", ""]


def test_select_domain_promod3_and_blank_chain(data_root):
    p = read_structure(data_root / "promod3_structure_db/pdb_single_domain/16vpA.pdb.gz")
    d = select_domain(p, "1-100:A")
    assert len(d) == 100 and d.sequence == p.sequence[:100] and d.cath == p.cath
    q = read_structure(data_root / "pdnet_related/disteval_1guuA/1guuA.pdb")
    assert q.chain_id == ""
    assert select_domain(q, "10-19:0").sequence == q.sequence[9:19]
