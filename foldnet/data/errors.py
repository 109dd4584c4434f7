"""Errors raised by readers: every one names the file, the record and the line."""

from __future__ import annotations

from typing import Optional


class ParseError(ValueError):
    """A malformed input file.

    Attributes:
      path: the file being read.
      record: the record identifier (FASTA header, ProteinNet [ID], model/chain), if known.
      line: 1-based line number in the (decompressed) file, if known.
      reason: what is wrong.
    """

    def __init__(self, path, reason: str, record: Optional[str] = None, line: Optional[int] = None):
        self.path = str(path)
        self.record = record
        self.line = line
        self.reason = reason
        where = self.path
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f" (record {record!r})"
        super().__init__(f"{where}: {reason}")
