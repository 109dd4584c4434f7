"""Multiple sequence alignments (A3M, PSICOV .aln) -> sequence weights -> profile.

Formats:

* A3M (HH-suite, Remmert et al. 2012, Nat. Methods 9:173): FASTA-like records;
  uppercase letters and '-' are match columns, lowercase letters and '.' are
  insertions relative to the query and are dropped, so every row has the
  query's length. Lines starting with '#' (e.g. ``#A3M#``) are skipped.
* PSICOV .aln (Jones et al. 2012, Bioinformatics 28:184): one aligned sequence
  per line, no headers, uppercase letters and '-'. Plain or gzip.

In both, the first row is the query. Rows of a different length are an error
naming the line.

Weights and profile: ``sequence_weights`` is the cluster weighting used by
PSICOV and DCA (Morcos et al. 2011, PNAS 108:E1293): each sequence gets
1 / (number of sequences, itself included, with fractional identity >= the
threshold over all L columns, a gap matching a gap). PDNet's aln2pssm /
trRosetta use a strict '>' instead of '>='; the two differ only at exact ties.
``msa_to_profile`` gives weighted frequencies of the 20 standard amino acids per
column; gaps and X are excluded from the counts, B/Z/J/U/O count as D/E/L/C/K
(``rc.AMBIGUOUS_CODE_MAP``). A column with no standard letter gets the uniform
distribution 1/20.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.data.errors import ParseError
from foldnet.data.fasta import open_text

PathLike = Union[str, os.PathLike]

# Integer codes of an MSA: 0..19 = rc.RESTYPES, 20 = X (unknown), 21 = gap.
MSA_UNKNOWN = rc.UNK_INDEX
MSA_GAP = rc.UNK_INDEX + 1
MSA_NUM_CODES = MSA_GAP + 1

_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CODE_LUT = np.full(256, -1, np.int16)
for _c in _UPPER:
    _CODE_LUT[ord(_c)] = rc.one_letter_to_index(_c)
_CODE_LUT[ord("-")] = MSA_GAP


def _check_rows(path: PathLike, rows: list[tuple[int, Optional[str], str]]) -> list[str]:
    if not rows:
        raise ParseError(path, "alignment has no sequences")
    L = len(rows[0][2])
    if L == 0:
        raise ParseError(path, "query (first sequence) is empty", rows[0][1], rows[0][0])
    out = []
    for lineno, rid, seq in rows:
        bad = [c for c in seq if c not in _UPPER and c != "-"]
        if bad:
            raise ParseError(path, f"invalid alignment character {bad[0]!r}", rid, lineno)
        if len(seq) != L:
            raise ParseError(
                path, f"row has {len(seq)} match columns, the query has {L}", rid, lineno
            )
        out.append(seq)
    return out


def read_a3m(path: PathLike) -> list[str]:
    """Read an A3M alignment, keeping match columns only.

    Args:
      path: file path (plain or gzip).

    Returns:
      Aligned rows (uppercase letters and '-'), all of the query's length; the
      first row is the query.

    Raises:
      ParseError: sequence before the first header, empty record, invalid
        character, or a row whose match-column count differs from the query's
        (names the record's header line).
    """
    rows: list[tuple[int, Optional[str], str]] = []
    header: Optional[tuple[int, str]] = None
    chunks: list[str] = []

    def flush():
        if header is not None:
            seq = "".join(chunks)
            if not seq:
                raise ParseError(path, "record has no sequence", header[1], header[0])
            rows.append((header[0], header[1], seq))

    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(">"):
                flush()
                header, chunks = (lineno, (line[1:].split() or [""])[0]), []
                continue
            if header is None:
                raise ParseError(path, "sequence before the first '>' header", line=lineno)
            # Insertions (lowercase, '.') are not match columns of the query.
            chunks.append("".join(c for c in line if not (c.islower() or c == ".")))
    flush()
    return _check_rows(path, rows)


def read_aln(path: PathLike) -> list[str]:
    """Read a PSICOV .aln alignment (one aligned sequence per line).

    Args:
      path: file path (plain or gzip); blank lines are skipped.

    Returns:
      Aligned rows, the query first.

    Raises:
      ParseError: invalid character or a row of another length (names the line).
    """
    rows: list[tuple[int, Optional[str], str]] = []
    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if line:
                rows.append((lineno, None, line))
    return _check_rows(path, rows)


def msa_to_int(msa: Sequence[str]) -> np.ndarray:
    """Encode aligned rows as int8 [N, L]: 0..19 amino acids, 20 = X, 21 = gap.

    Args:
      msa: rows of equal length (uppercase letters and '-').

    Returns:
      int8 array [N, L]; B/Z/J/U/O map per rc.AMBIGUOUS_CODE_MAP.

    Raises:
      ValueError: unequal lengths or characters outside A-Z and '-'.
    """
    if not msa:
        raise ValueError("empty MSA")
    L = len(msa[0])
    if any(len(s) != L for s in msa):
        raise ValueError("MSA rows differ in length")
    raw = np.frombuffer("".join(msa).encode("latin-1"), np.uint8).reshape(len(msa), L)
    codes = _CODE_LUT[raw]
    if (codes < 0).any():
        n, l = np.argwhere(codes < 0)[0]
        raise ValueError(f"invalid MSA character {msa[n][l]!r} in row {n} column {l}")
    return codes.astype(np.int8)


def sequence_weights(msa_int: np.ndarray, identity: float = 0.8, chunk: int = 1024) -> np.ndarray:
    """Cluster weights: 1 / (number of sequences with identity >= ``identity``).

    Identity of two rows = fraction of the L columns where their codes are equal
    (gap == gap counts, as in PSICOV). The count includes the sequence itself, so
    every weight is in (0, 1]. Computed as a one-hot matrix product in row
    chunks: O(N^2 L K) flops, O(chunk * N) extra memory; ~1 s for N=3000, L=300.

    Args:
      msa_int: int [N, L] codes from ``msa_to_int``.
      identity: identity threshold in [0, 1].
      chunk: rows per matrix-product block.

    Returns:
      float32 [N] weights.
    """
    msa_int = np.asarray(msa_int)
    if msa_int.ndim != 2:
        raise ValueError(f"msa_int must be [N, L], got {msa_int.shape}")
    N, L = msa_int.shape
    codes, inv = np.unique(msa_int, return_inverse=True)
    inv = inv.reshape(N, L)
    K = len(codes)
    onehot = np.zeros((N, L * K), np.float32)
    onehot[np.arange(N)[:, None], np.arange(L)[None, :] * K + inv] = 1.0
    # Integer counts in float32 are exact below 2**24; the slack guards the product identity*L.
    min_same = identity * L - 1e-6
    neighbours = np.empty(N, np.float64)
    for s in range(0, N, chunk):
        same = onehot[s : s + chunk] @ onehot.T
        neighbours[s : s + chunk] = np.count_nonzero(same >= min_same, axis=1)
    return (1.0 / neighbours).astype(np.float32)


def msa_to_profile(
    msa: Sequence[str],
    pseudocount: float = 0.0,
    identity: float = 0.8,
    weights: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Weighted amino-acid frequencies per column of an MSA.

    profile[l, a] = (sum_n w_n [x_nl = a] + pseudocount / 20) /
                    (sum_n w_n [x_nl standard] + pseudocount),
    over the 20 standard letters only (gaps and X excluded); a column with no
    standard letter and pseudocount 0 becomes uniform 1/20.

    Args:
      msa: aligned rows, the query first (from ``read_a3m`` / ``read_aln``).
      pseudocount: total pseudo-weight spread uniformly over the 20 letters.
      identity: threshold for ``sequence_weights`` (when ``weights`` is None).
      weights: optional [N] sequence weights.

    Returns:
      float32 [L, 20] in rc.RESTYPES order, rows summing to 1.
    """
    m = msa_to_int(msa)
    N, L = m.shape
    w = sequence_weights(m, identity) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (N,):
        raise ValueError(f"weights has shape {w.shape}, expected {(N,)}")
    counts = np.zeros((L, rc.NUM_STANDARD), np.float64)
    rows, cols = np.nonzero(m < rc.NUM_STANDARD)
    np.add.at(counts, (cols, m[rows, cols].astype(np.int64)), w[rows])
    counts += pseudocount / rc.NUM_STANDARD
    total = counts.sum(axis=1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / rc.NUM_STANDARD)
    prof = np.where(total > 0, counts / np.where(total > 0, total, 1.0), uniform)
    return prof.astype(np.float32)
