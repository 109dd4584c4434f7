"""FASTA sequence files -> FastaRecord / Protein, streamed (plain or gzip).

Format (Pearson & Lipman 1988): a record is a header line ``>id description``
followed by sequence lines. Accepted: several records, sequences wrapped over
any number of lines, lowercase letters, blank lines, a terminal ``*`` (stop),
spaces inside sequence lines, Windows (CRLF) line endings.

Letter policy: the 20 standard one-letter codes plus the ambiguous / rare codes
X B Z U O J, which are kept as uppercase letters in ``FastaRecord.sequence``
and mapped to residue types by ``residue_constants.AMBIGUOUS_CODE_MAP``
(B->D, Z->E, J->L, U->C, O->K, X->unknown) when building a Protein. Anything
else (digits, gaps '-' / '.', other symbols, a '*' that is not last) is an
error, as are sequence lines before the first header, records without
sequence, headers without an id, and duplicate ids.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
from typing import IO, Iterator, Optional, Union

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein, from_sequence
from foldnet.data.errors import ParseError

PathLike = Union[str, os.PathLike]

# Letters accepted in sequences: the standard 20 and the ambiguity codes.
VALID_LETTERS = frozenset(rc.RESTYPES) | frozenset(rc.AMBIGUOUS_CODE_MAP)


def open_text(path: PathLike, encoding: str = "ascii") -> IO[str]:
    """Open a text file that may be gzip-compressed (detected by its magic bytes).

    Detection by content rather than by the ``.gz`` suffix, so renamed or
    extension-less files (CATH domain files) open the same way. Undecodable
    bytes become U+FFFD so that the parser reports them with a line number.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding=encoding, errors="replace", newline=None)
    return open(path, "rt", encoding=encoding, errors="replace", newline=None)


@dataclasses.dataclass(frozen=True)
class FastaRecord:
    """One FASTA record.

    Attributes:
      id: first whitespace-separated word of the header (without '>').
      description: the rest of the header line ("" when absent).
      sequence: uppercase one-letter sequence (stop '*' and whitespace removed).
      line: 1-based line number of the header in the (decompressed) file.
    """

    id: str
    description: str
    sequence: str
    line: int


def _check_record(
    path: PathLike, header_line: int, header: str, seq_lines: list[tuple[int, str]]
) -> FastaRecord:
    parts = header.split(None, 1)
    if not parts:
        raise ParseError(path, "header without an id", line=header_line)
    rid = parts[0]
    description = parts[1].strip() if len(parts) > 1 else ""
    chunks: list[str] = []
    for k, (lineno, text) in enumerate(seq_lines):
        s = "".join(text.split()).upper()
        last_line = k == len(seq_lines) - 1
        if "*" in s:
            star = s.index("*")
            if not (last_line and star == len(s) - 1):
                raise ParseError(
                    path, f"stop '*' before the end of the sequence (column {star + 1})", rid, lineno
                )
            s = s[:-1]
        bad = [c for c in s if c not in VALID_LETTERS]
        if bad:
            raise ParseError(
                path,
                f"invalid sequence character {bad[0]!r} (allowed: {rc.RESTYPES} and "
                f"{''.join(sorted(rc.AMBIGUOUS_CODE_MAP))})",
                rid,
                lineno,
            )
        chunks.append(s)
    sequence = "".join(chunks)
    if not sequence:
        raise ParseError(path, "record has no sequence", rid, header_line)
    return FastaRecord(id=rid, description=description, sequence=sequence, line=header_line)


def _iter_raw(fh: IO[str]) -> Iterator[tuple[int, Optional[str], list[tuple[int, str]]]]:
    """Yield (header line, header text or None for orphan lines, [(line, text)])."""
    header_line, header = 0, None
    seq_lines: list[tuple[int, str]] = []
    for lineno, raw in enumerate(fh, start=1):
        text = raw.rstrip("\r\n").rstrip("\r")
        if text.startswith(">"):
            if header is not None or seq_lines:
                yield header_line, header, seq_lines
            header_line, header, seq_lines = lineno, text[1:], []
        elif text.strip():
            seq_lines.append((lineno, text))
    if header is not None or seq_lines:
        yield header_line, header, seq_lines


def _iter_records(
    name: PathLike, fh: IO[str], errors: str
) -> Iterator[Union[FastaRecord, ParseError]]:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    seen: dict[str, int] = {}
    for header_line, header, seq_lines in _iter_raw(fh):
        try:
            if header is None:
                raise ParseError(name, "sequence before the first '>' header", line=seq_lines[0][0])
            rec = _check_record(name, header_line, header, seq_lines)
            if rec.id in seen:
                raise ParseError(
                    name, f"duplicate id (first seen at line {seen[rec.id]})", rec.id, header_line
                )
            seen[rec.id] = header_line
            yield rec
        except ParseError as e:
            if errors == "skip":
                yield e
            else:
                raise


def iter_fasta(path: PathLike, errors: str = "raise") -> Iterator[Union[FastaRecord, ParseError]]:
    """Stream the records of a FASTA file (plain or gzip).

    Args:
      path: file path.
      errors: "raise" to stop at the first bad record with a ParseError naming
        file, record and line; "skip" to yield the ParseError in place of the bad
        record and continue with the next one (batch jobs report and go on).

    Yields:
      FastaRecord per good record (ParseError per bad one when errors="skip").

    Raises:
      ParseError: on the first bad record when errors="raise".
      ValueError: if ``errors`` is neither "raise" nor "skip".
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    with open_text(path) as fh:
        yield from _iter_records(path, fh, errors)


def read_fasta(path: PathLike) -> list[FastaRecord]:
    """All records of a FASTA file; raises ParseError on the first bad one.

    Args:
      path: file path (plain or gzip).

    Returns:
      The records in file order.
    """
    return list(iter_fasta(path))  # type: ignore[arg-type]


def record_to_protein(rec: FastaRecord) -> Protein:
    """A sequence-only Protein (no coordinates, all atom masks 0) from a record.

    Args:
      rec: a FASTA record.

    Returns:
      Protein with ``id = rec.id`` and aatype per the ambiguity policy.
    """
    return from_sequence(rec.id, rec.sequence)


def parse_fasta_string(text: str, name: str = "<string>") -> list[FastaRecord]:
    """Parse FASTA text held in memory (same rules as ``read_fasta``).

    Args:
      text: FASTA content.
      name: name used in error messages in place of a file path.

    Returns:
      The records in order.
    """
    return list(_iter_records(name, io.StringIO(text), "raise"))  # type: ignore[arg-type]
