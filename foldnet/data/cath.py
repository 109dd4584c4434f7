"""CATH domain ids, domain lists and domain boundaries; cutting domains out of chains.

Formats (CATH, Sillitoe et al. 2021, NAR 49:D266; file formats documented at
cathdb.info "CATH List File (CLF) Format 2.0"):

* Domain id ``1abcA01``: 4-character PDB id, 1 chain character ("0" = blank
  chain ID), 2-digit domain number ("00" = the whole chain is one domain).
* CLF 2.0 domain list: '#' comment lines, then 12 whitespace-separated columns:
  domain id, Class, Architecture, Topology, Homologous superfamily, S35, S60,
  S95, S100 cluster numbers, S100 count, domain length, resolution in Angstrom
  (999.000 = NMR, 1000.000 = obsolete / not applicable; both read as None).
  The CATH-B ``.clfd`` lists use the same columns with length and resolution 0
  (read as None).
* Plain id lists: one domain id per line.
* CATH-B putative domains: ``<domain> putative <C.A.T.H> <boundaries>``.
* Boundaries: comma-separated segments ``start-end:chain`` in author numbering,
  each residue number optionally negative and optionally followed by an
  insertion code (``-5-50:A``, ``10A-50:A``, ``-10--3:A``). Repeated segments
  (seen in CATH-B, e.g. ``341-449:A,341-449:A``) are merged.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from foldnet.common.protein import Protein
from foldnet.data.errors import ParseError
from foldnet.data.fasta import open_text

PathLike = Union[str, os.PathLike]

_DOMAIN_ID = re.compile(r"^([0-9][0-9A-Za-z]{3})([0-9A-Za-z])([0-9]{2})$")
_SEGMENT = re.compile(r"^(-?\d+)([A-Za-z]?)-(-?\d+)([A-Za-z]?):([0-9A-Za-z])$")
_CATH_CODE = re.compile(r"^\d+(\.\d+){3}$")


@dataclasses.dataclass(frozen=True)
class CathDomain:
    """One entry of a CATH domain list.

    Attributes:
      domain_id: e.g. "1oaiA00".
      pdb_id: lowercase 4-character PDB id.
      chain: chain ID ("" for a blank chain, written "0" in CATH ids).
      domain_number: 0 for a whole-chain domain, else 1, 2, ...
      cath: "C.A.T.H" code, or None for id-only lists.
      length: number of residues, or None when not given.
      resolution: Angstrom, or None (NMR, obsolete, or not given).
    """

    domain_id: str
    pdb_id: str
    chain: str
    domain_number: int
    cath: Optional[str] = None
    length: Optional[int] = None
    resolution: Optional[float] = None

    def _level(self, n: int) -> Optional[str]:
        return None if self.cath is None else ".".join(self.cath.split(".")[:n])

    @property
    def class_(self) -> Optional[str]:
        """Class C, e.g. "3"."""
        return self._level(1)

    @property
    def architecture(self) -> Optional[str]:
        """Architecture C.A, e.g. "3.40"."""
        return self._level(2)

    @property
    def topology(self) -> Optional[str]:
        """Topology C.A.T, e.g. "3.40.50"."""
        return self._level(3)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A contiguous stretch of one chain, inclusive, in author numbering.

    Attributes:
      chain: chain ID as written in the boundary string.
      start: (residue number, insertion code or "").
      end: (residue number, insertion code or "").
    """

    chain: str
    start: tuple[int, str]
    end: tuple[int, str]


def parse_domain_id(
    domain_id: str, path: Optional[PathLike] = None, line: Optional[int] = None
) -> tuple[str, str, int]:
    """Split a CATH domain id into (pdb_id, chain, domain_number).

    Args:
      domain_id: e.g. "1abcA01"; chain "0" means a blank chain ID.
      path, line: where the id was read (for the error message).

    Returns:
      (lowercase pdb id, chain ("" when blank), domain number (0 = whole chain)).

    Raises:
      ParseError: if the id does not have the 7-character CATH form.
    """
    m = _DOMAIN_ID.match(domain_id.strip())
    if not m:
        raise ParseError(
            path or "<domain id>",
            f"invalid CATH domain id {domain_id!r} (expected e.g. '1abcA01')",
            line=line,
        )
    pdb_id, chain, num = m.groups()
    return pdb_id.lower(), ("" if chain == "0" else chain), int(num)


def _iter_lines(path: PathLike) -> Iterable[tuple[int, list[str]]]:
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            yield lineno, s.split()


def _cath_code(path, fields, lineno, rid) -> str:
    code = ".".join(fields)
    if not _CATH_CODE.match(code):
        raise ParseError(path, f"invalid CATH code {code!r}", rid, lineno)
    return code


def read_domain_list(path: PathLike) -> list[CathDomain]:
    """Read a CATH List File (CLF 2.0, 12 columns) or a CATH-B ``.clfd`` list.

    Args:
      path: file path (plain or gzip); '#' lines and blank lines are skipped.

    Returns:
      One CathDomain per line, in file order.

    Raises:
      ParseError: wrong column count, bad id, non-numeric fields (file + line).
    """
    out = []
    for lineno, f in _iter_lines(path):
        if len(f) != 12:
            raise ParseError(path, f"expected 12 columns (CLF 2.0), found {len(f)}", f[0], lineno)
        pdb_id, chain, num = parse_domain_id(f[0], path, lineno)
        cath = _cath_code(path, f[1:5], lineno, f[0])
        try:
            length = int(f[10])
            resolution = float(f[11])
        except ValueError as e:
            raise ParseError(path, f"bad length/resolution: {e}", f[0], lineno) from None
        out.append(
            CathDomain(
                domain_id=f[0],
                pdb_id=pdb_id,
                chain=chain,
                domain_number=num,
                cath=cath,
                length=length if length > 0 else None,
                # CLF: 999 = NMR, 1000 = obsolete/not applicable; .clfd writes 0.
                resolution=resolution if 0.0 < resolution < 999.0 else None,
            )
        )
    return out


def read_domain_ids(path: PathLike) -> list[CathDomain]:
    """Read a plain list of domain ids (one per line, e.g. the CATH S40 ``.list``).

    Args:
      path: file path (plain or gzip).

    Returns:
      CathDomain per id with cath / length / resolution None.

    Raises:
      ParseError: a line that is not a single valid domain id.
    """
    out = []
    for lineno, f in _iter_lines(path):
        if len(f) != 1:
            raise ParseError(path, f"expected one domain id per line, found {len(f)} fields", line=lineno)
        pdb_id, chain, num = parse_domain_id(f[0], path, lineno)
        out.append(CathDomain(domain_id=f[0], pdb_id=pdb_id, chain=chain, domain_number=num))
    return out


def parse_boundaries(
    text: str, path: Optional[PathLike] = None, record: Optional[str] = None, line: Optional[int] = None
) -> list[Segment]:
    """Parse a boundary string such as ``"1-100:A,150-200:A"``.

    Args:
      text: comma-separated ``start-end:chain`` segments; numbers may be negative
        and carry an insertion code (``"10A-50:A"``, ``"-5-50:A"``).
      path, record, line: context for the error message.

    Returns:
      Segments in the order written, exact repeats removed.

    Raises:
      ParseError: an empty string or a malformed segment.
    """
    segs: list[Segment] = []
    parts = [p.strip() for p in text.strip().split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ParseError(path or "<boundaries>", f"empty segment in boundaries {text!r}", record, line)
    for part in parts:
        m = _SEGMENT.match(part)
        if not m:
            raise ParseError(
                path or "<boundaries>",
                f"invalid segment {part!r} (expected start-end:chain, e.g. '10A-50:A')",
                record,
                line,
            )
        s, si, e, ei, ch = m.groups()
        seg = Segment(chain=ch, start=(int(s), si), end=(int(e), ei))
        if seg not in segs:
            segs.append(seg)
    return segs


def read_putative_boundaries(path: PathLike) -> dict[str, tuple[str, str]]:
    """Read the CATH-B putative list ``<domain> putative <C.A.T.H> <boundaries>``.

    Args:
      path: file path (plain or gzip).

    Returns:
      {domain_id: (cath code, boundary string)}; the boundary string is validated
      with ``parse_boundaries``.

    Raises:
      ParseError: wrong column count, bad id / code / boundaries, duplicate id.
    """
    out: dict[str, tuple[str, str]] = {}
    for lineno, f in _iter_lines(path):
        if len(f) != 4:
            raise ParseError(path, f"expected 4 columns, found {len(f)}", f[0], lineno)
        parse_domain_id(f[0], path, lineno)
        code = _cath_code(path, f[2].split("."), lineno, f[0])
        parse_boundaries(f[3], path, f[0], lineno)
        if f[0] in out:
            raise ParseError(path, "duplicate domain id", f[0], lineno)
        out[f[0]] = (code, f[3])
    return out


def _chain_matches(seg_chain: str, chain_id: str) -> bool:
    # CATH writes a blank chain ID as "0".
    return seg_chain == chain_id or (seg_chain == "0" and chain_id == "")


def select_domain(
    protein: Protein, boundaries: Union[str, Sequence[Segment]], id: Optional[str] = None
) -> Protein:
    """Cut the residues inside CATH boundaries out of a chain.

    A segment covers the residues from its start residue to its end residue in
    chain (file) order, matched by author number and insertion code. A start
    (end) residue absent from the structure is replaced by the first (last)
    residue whose number is >= start (<= end), so unobserved boundary residues
    do not empty the domain. Residues in several segments are taken once; the
    result keeps chain order.

    Args:
      protein: a chain read with author numbering (e.g. ``read_structure``).
      boundaries: a boundary string or parsed segments; segments naming another
        chain than ``protein.chain_id`` are an error.
      id: id of the result (default: the protein's id).

    Returns:
      The sub-Protein of the domain.

    Raises:
      ValueError: segment on another chain, or a segment that selects nothing.
    """
    segs = parse_boundaries(boundaries) if isinstance(boundaries, str) else list(boundaries)
    resnum = np.asarray(protein.residue_index)
    icode = (
        np.asarray(protein.insertion_code)
        if protein.insertion_code is not None
        else np.full(len(protein), "", dtype="<U1")
    )
    keys = list(zip(resnum.tolist(), icode.tolist()))
    keep = np.zeros(len(protein), bool)
    for seg in segs:
        if not _chain_matches(seg.chain, protein.chain_id):
            raise ValueError(
                f"{protein.id}: segment {seg} is on chain {seg.chain!r}, "
                f"protein is chain {protein.chain_id!r}"
            )
        if seg.start in keys:
            i = keys.index(seg.start)
        else:
            ge = np.nonzero(resnum >= seg.start[0])[0]
            i = int(ge[0]) if len(ge) else len(keys)
        if seg.end in keys:
            j = len(keys) - 1 - keys[::-1].index(seg.end)
        else:
            le = np.nonzero(resnum <= seg.end[0])[0]
            j = int(le[-1]) if len(le) else -1
        if j < i:
            raise ValueError(f"{protein.id}: segment {seg} selects no residue")
        keep[i : j + 1] = True
    return protein.select(keep, id=id)
