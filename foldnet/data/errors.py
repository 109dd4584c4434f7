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


# The one error type of bad inputs: every reader (FASTA, PDB/mmCIF, ProteinNet, a3m/aln, CATH,
# PDNet, the HDF5 cache, the pretrained manifest) raises it with the file, and the record and
# line where they exist; the CLIs print it as one line.
InputError = ParseError


class ConfigError(ValueError):
    """A configuration value that cannot work; the message starts with the key."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")
