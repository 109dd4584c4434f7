"""ProteinNet text records -> Protein, streamed (plain or gzip).

Format (AlQuraishi 2019, BMC Bioinformatics): blocks introduced by ``[ID]``,
``[PRIMARY]``, ``[EVOLUTIONARY]`` (21 rows x L: 20 profile rows in
A C D E F G H I K L M N P Q R S T V W Y order, then information content),
``[TERTIARY]`` (3 rows x 3L: N, CA, C of each residue, in picometres) and
``[MASK]`` ('+' / '-' per residue), records separated by a blank line.
Residues with mask '-' get atom_mask 0 (their coordinates are zeros in the file).
"""

from __future__ import annotations

import os
from typing import Iterator, Optional, Union

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein, mask_unobserved
from foldnet.data.errors import ParseError
from foldnet.data.fasta import open_text

_SECTIONS = ("[ID]", "[PRIMARY]", "[EVOLUTIONARY]", "[TERTIARY]", "[MASK]")
_ERRORS = "__errors__"  # structural problems found while splitting records
PathLike = Union[str, os.PathLike]


def _iter_raw_records(path: PathLike) -> Iterator[tuple[int, dict[str, list[tuple[int, str]]]]]:
    """Yield (first line number, {section: [(line number, text), ...]}) per record."""
    record: dict[str, list[tuple[int, str]]] = {}
    section: Optional[str] = None
    start = 0
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if text in _SECTIONS:
                if text == "[ID]" and record:
                    yield start, record
                    record = {}
                if text == "[ID]":
                    start = lineno
                section = text
                if section in record:
                    # Reported by _parse_record, so errors="skip" can go on to the next record.
                    record.setdefault(_ERRORS, []).append((lineno, f"duplicate section {section}"))
                record[section] = []
            elif not text:
                continue
            elif section is None:
                if not record:
                    start = lineno
                    record[_ERRORS] = [(lineno, f"text before the first [ID]: {text[:40]!r}")]
            else:
                record[section].append((lineno, text))
    if record:
        yield start, record


def _rows(path, rid, rows, n_rows, n_cols, name) -> np.ndarray:
    if len(rows) != n_rows:
        line = rows[0][0] if rows else None
        raise ParseError(path, f"{name} has {len(rows)} rows, expected {n_rows}", rid, line)
    out = np.empty((n_rows, n_cols), np.float64)
    for r, (lineno, text) in enumerate(rows):
        fields = text.split()
        if len(fields) != n_cols:
            raise ParseError(path, f"{name} row has {len(fields)} values, expected {n_cols}", rid, lineno)
        try:
            out[r] = [float(f) for f in fields]
        except ValueError as e:
            raise ParseError(path, f"{name} row: {e}", rid, lineno) from None
    return out


def _parse_record(path: PathLike, start: int, rec: dict) -> Protein:
    if rec.get(_ERRORS):
        lineno, reason = rec[_ERRORS][0]
        rid = rec["[ID]"][0][1] if rec.get("[ID]") else None
        raise ParseError(path, reason, rid, lineno)
    if "[ID]" not in rec or not rec["[ID]"]:
        raise ParseError(path, "record without [ID]", line=start)
    rid = rec["[ID]"][0][1]
    if "[PRIMARY]" not in rec or not rec["[PRIMARY]"]:
        raise ParseError(path, "record without [PRIMARY]", rid, start)
    seq_line, seq = rec["[PRIMARY]"][0][0], "".join(t for _, t in rec["[PRIMARY]"])
    try:
        aatype = rc.sequence_to_aatype(seq)
    except KeyError as e:
        raise ParseError(path, f"invalid residue letter {e.args[0]!r} in [PRIMARY]", rid, seq_line) from None
    L = len(aatype)
    if L == 0:
        raise ParseError(path, "empty [PRIMARY]", rid, seq_line)

    profile = None
    if rec.get("[EVOLUTIONARY]"):
        evo = _rows(path, rid, rec["[EVOLUTIONARY]"], rc.NUM_STANDARD + 1, L, "[EVOLUTIONARY]")
        profile = np.ascontiguousarray(evo[: rc.NUM_STANDARD].T).astype(np.float32)
        if not np.isfinite(profile).all():
            raise ParseError(path, "[EVOLUTIONARY] holds nan or inf", rid, rec["[EVOLUTIONARY]"][0][0])

    if "[MASK]" in rec and rec["[MASK]"]:
        mline, mtext = rec["[MASK]"][0][0], "".join(t for _, t in rec["[MASK]"])
        if len(mtext) != L or set(mtext) - {"+", "-"}:
            raise ParseError(path, f"[MASK] must be {L} characters of '+'/'-'", rid, mline)
        res_mask = np.array([c == "+" for c in mtext], np.float32)
    else:
        res_mask = np.ones(L, np.float32)

    positions = np.zeros((L, rc.NUM_ATOMS, 3), np.float32)
    atom_mask = np.zeros((L, rc.NUM_ATOMS), np.float32)
    if rec.get("[TERTIARY]"):
        ter = _rows(path, rid, rec["[TERTIARY]"], 3, 3 * L, "[TERTIARY]")
        xyz = (ter.T / 100.0).reshape(L, 3, 3)  # picometres -> Angstrom
        positions[:, :3] = xyz
        atom_mask[:, :3] = res_mask[:, None]
        positions *= atom_mask[..., None]
    return mask_unobserved(Protein(
        id=rid,
        aatype=aatype,
        atom_positions=positions,
        atom_mask=atom_mask,
        residue_index=np.arange(1, L + 1, dtype=np.int32),
        chain_id=rid.rsplit("_", 1)[-1] if "_" in rid else "A",
        profile=profile,
    ))


def iter_proteinnet(path: PathLike, errors: str = "raise") -> Iterator[Protein]:
    """Stream the records of a ProteinNet text file (plain or .gz) as Proteins.

    Args:
      path: file path.
      errors: "raise" to stop at the first bad record with a ParseError naming
        file, record and line; "skip" to yield the ParseError object in place of
        the bad record so a batch job can report it and go on.
    """
    raw = _iter_raw_records(path)
    while True:
        try:
            start, rec = next(raw)
        except StopIteration:
            return
        except ParseError as e:  # truncated gzip: the record being read is incomplete
            if errors == "skip":
                yield e  # type: ignore[misc]
                return
            raise
        try:
            yield _parse_record(path, start, rec)
        except ParseError as e:
            if errors == "skip":
                yield e  # type: ignore[misc]
            else:
                raise


def read_proteinnet(path: PathLike, ids: Optional[set[str]] = None) -> list[Protein]:
    """All (or the selected ``ids``) records of a ProteinNet file."""
    return [p for p in iter_proteinnet(path) if ids is None or p.id in ids]
