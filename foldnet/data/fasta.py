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
import zlib
from typing import IO, Iterator, Optional, Union

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein, from_sequence
from foldnet.data.errors import ParseError

PathLike = Union[str, os.PathLike]

# Letters accepted in sequences: the standard 20 and the ambiguity codes.
VALID_LETTERS = frozenset(rc.RESTYPES) | frozenset(rc.AMBIGUOUS_CODE_MAP)


class _GuardedText:
    """A text stream whose decompression / decoding failures become one ParseError.

    A truncated ``.gz`` (a download cut short, a file copied while written) otherwise surfaces
    as ``EOFError`` or ``zlib.error`` from deep inside a reader; here it names the file and the
    last line read, and every reader that opens files through :func:`open_text` gets it.
    """

    def __init__(self, path: PathLike, fh: IO[str], compressed: bool):
        self._path, self._fh, self._gz = path, fh, compressed
        self.lines_read = 0

    def _fail(self, e: BaseException) -> ParseError:
        what = "truncated or corrupt gzip data" if self._gz else "unreadable file"
        return ParseError(self._path, f"{what} after line {self.lines_read} ({type(e).__name__}: {e})",
                          line=self.lines_read + 1)

    def __iter__(self):
        while True:
            try:
                line = self._fh.readline()
            except (EOFError, OSError, zlib.error) as e:
                raise self._fail(e) from None
            if not line:
                return
            self.lines_read += 1
            yield line

    def read(self) -> str:
        try:
            return self._fh.read()
        except (EOFError, OSError, zlib.error) as e:
            raise self._fail(e) from None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_text(path: PathLike, encoding: str = "utf-8"):
    """Open a text file that may be gzip-compressed (detected by its magic bytes).

    Detection by content rather than by the ``.gz`` suffix, so renamed or
    extension-less files (CATH domain files) open the same way. Undecodable
    bytes become U+FFFD so that the parser reports them with a line number; a truncated
    or corrupt gzip stream raises :class:`ParseError` naming the file and line.

    Raises:
      ParseError: ``path`` is a directory.
      OSError: the file cannot be opened.
    """
    if os.path.isdir(path):
        raise ParseError(path, "is a directory, not a file")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        fh = gzip.open(path, "rt", encoding=encoding, errors="replace", newline=None)
        return _GuardedText(path, fh, True)
    return _GuardedText(path, open(path, "rt", encoding=encoding, errors="replace", newline=None), False)


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
    if "\ufffd" in rid:
        raise ParseError(path, "header id is not valid UTF-8 text", rid.replace("\ufffd", "?"), header_line)
    bad_c = next((c for c in rid if ord(c) < 32 or ord(c) == 127), None)
    if bad_c is not None:
        raise ParseError(path, f"control character {bad_c!r} in the header id", rid, header_line)
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
    raw = _iter_raw(fh)
    while True:
        try:
            header_line, header, seq_lines = next(raw)
        except StopIteration:
            return
        except ParseError as e:  # truncated gzip: the record being read is incomplete
            err = ParseError(name, f"{e.reason}; stopped after record {len(seen)}", line=e.line)
            if errors == "skip":
                yield err
                return
            raise err from None
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
