"""FASTA reader: real files from the data bundle and malformed files written to tmp_path."""

import gzip

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.errors import ParseError
from foldnet.data.fasta import FastaRecord, iter_fasta, parse_fasta_string, read_fasta, record_to_protein


def _write(tmp_path, name, text, newline="\n"):
    p = tmp_path / name
    p.write_bytes(text.replace("\n", newline).encode())
    return p


def test_1guua_fasta(data_root):
    (rec,) = read_fasta(data_root / "pdnet_related/disteval_1guuA/1guuA.fasta")
    assert rec == FastaRecord("1guu", "", "KTRWTREEDEKLKKLVEQNGTDDWKVIANYLPNRTDVQCQHRWQKVLNPE", 1)
    prot = record_to_protein(rec)
    assert prot.id == "1guu" and len(prot) == 50
    assert prot.sequence == rec.sequence
    assert prot.atom_mask.sum() == 0
    np.testing.assert_array_equal(prot.residue_index, np.arange(1, 51))


def test_promod3_all_chains_streamed(data_root):
    """21,119 records; lengths and sequences agree with chains.tsv.gz."""
    path = data_root / "promod3_structure_db/all_chains.fasta.gz"
    with gzip.open(data_root / "promod3_structure_db/chains.tsv.gz", "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in fh]
    table = {r["name"]: r for r in rows}
    n = 0
    first = None
    for rec in iter_fasta(path):
        n += 1
        first = first or rec
        if n % 997 == 1:  # a deterministic sample of ~22 records
            row = table[rec.id]
            assert len(rec.sequence) == int(row["length"]), rec.id
            assert rec.sequence == row["sequence"], rec.id
            assert f"length={row['length']}" in rec.description
    assert n == 21119 == len(table)
    assert first.id == "12asA" and first.line == 1 and first.sequence.startswith("AYIAKQRQISF")
    assert first.description.startswith("pdb=12as chain=A seqres_start=4 length=327")


def test_wrapped_lowercase_stop_blank_crlf_gz(tmp_path):
    text = ">a first one\nacdef\nGHIKL*\n\n\n>b\nMN PQ\nRSTVWY\n>c  spaced   description \nxbzuoj\n"
    for newline in ("\n", "\r\n"):
        p = _write(tmp_path, "x.fa", text, newline)
        recs = read_fasta(p)
        assert [r.id for r in recs] == ["a", "b", "c"]
        assert [r.line for r in recs] == [1, 6, 9]
        assert recs[0].sequence == "ACDEFGHIKL" and recs[0].description == "first one"
        assert recs[1].sequence == "MNPQRSTVWY" and recs[1].description == ""
        assert recs[2].sequence == "XBZUOJ" and recs[2].description == "spaced   description"
    gz = tmp_path / "x.fa.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert read_fasta(gz) == recs
    # Renamed gzip without the suffix is still detected by content.
    raw = tmp_path / "noext"
    raw.write_bytes(gzip.compress(text.encode()))
    assert read_fasta(raw) == recs


def test_ambiguous_letters_policy():
    (rec,) = parse_fasta_string(">u\nXBZUOJA\n")
    prot = record_to_protein(rec)
    # X -> unknown, B->D, Z->E, U->C, O->K, J->L (rc.AMBIGUOUS_CODE_MAP).
    assert prot.aatype.tolist() == [20] + [rc.RESTYPE_ORDER[c] for c in "DECKLA"]
    assert prot.sequence == "XDECKLA"


@pytest.mark.parametrize(
    "text, line, record, needle",
    [
        (">a\nACD1EF\n", 2, "a", "'1'"),
        (">a\nACD\n>b\nAC-D\n", 4, "b", "'-'"),
        (">a\nAC.D\n", 2, "a", "'.'"),
        (">a\nAC#D\n", 2, "a", "'#'"),
        (">a\nAC*D\n", 2, "a", "stop"),
        (">a\nAC*\nDE\n", 2, "a", "stop"),
        ("ACDE\n>a\nAC\n", 1, None, "before the first"),
        (">a\n\n>b\nAC\n", 1, "a", "no sequence"),
        (">a\n*\n", 1, "a", "no sequence"),
        (">a\nAC\n>a\nDE\n", 3, "a", "duplicate id (first seen at line 1)"),
        (">\nAC\n", 1, None, "header without an id"),
    ],
)
def test_malformed_raise(tmp_path, text, line, record, needle):
    p = _write(tmp_path, "bad.fasta", text)
    with pytest.raises(ParseError) as ei:
        read_fasta(p)
    e = ei.value
    assert e.line == line and e.record == record and e.path == str(p)
    assert needle in str(e) and str(p) in str(e)


def test_errors_skip_yields_error_and_continues(tmp_path):
    p = _write(tmp_path, "mixed.fa", "XX\n>a\nACD\n>b\nA1C\n>c\nMK\n>a\nGG\n>d\nW\n")
    out = list(iter_fasta(p, errors="skip"))
    kinds = [type(o).__name__ for o in out]
    assert kinds == ["ParseError", "FastaRecord", "ParseError", "FastaRecord", "ParseError", "FastaRecord"]
    assert [o.id for o in out if isinstance(o, FastaRecord)] == ["a", "c", "d"]
    assert [o.line for o in out if isinstance(o, ParseError)] == [1, 5, 8]
    with pytest.raises(ValueError):
        list(iter_fasta(p, errors="ignore"))
