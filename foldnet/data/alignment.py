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

``henikoff_weights`` is the position-based weighting of Henikoff & Henikoff
(1994, J. Mol. Biol. 243:574) that HH-suite builds its profiles with.
``ProfileConfig`` + ``training_profile`` give the profile ``foldnet predict``
feeds the model: the same kind of numbers as the ProteinNet [EVOLUTIONARY] rows
the model was trained on (docs/inference.md, "Profile inputs"). Those rows are
HH-suite profile frequencies *without* pseudo-counts, stored in 1/256 steps:
measured on validation.gz (492 chains, 82,982 columns) 27.8 % of the entries are
exactly 0, 92 % of the columns hold a zero, row sums are 1 +- 0.02 (3 decimals),
chains without homologs are one-hot (7 have >= half their columns so), row 21 is
1 - H(p)/log2(20) of the 20 rows (max difference 0.0046).
"""

from __future__ import annotations

import dataclasses
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


def henikoff_weights(msa_int: np.ndarray) -> np.ndarray:
    """Position-based sequence weights (Henikoff & Henikoff 1994), normalised to sum 1.

    Each column gives residue a of a sequence 1 / (r * n_a), r = number of distinct
    standard residues in the column, n_a = rows with a there; gaps and X get nothing
    and columns without a standard residue are skipped. A sequence's weight is its
    sum over columns, so rare residues and divergent rows weigh more, redundant rows less.

    Args:
      msa_int: int [N, L] codes from ``msa_to_int``.

    Returns:
      float64 [N] weights summing to 1 (uniform 1/N if no column has a standard residue).
    """
    m = np.asarray(msa_int)
    if m.ndim != 2:
        raise ValueError(f"msa_int must be [N, L], got {m.shape}")
    N, L = m.shape
    std = m < rc.NUM_STANDARD
    idx = np.where(std, m, rc.NUM_STANDARD).astype(np.int64)
    counts = np.zeros((L, rc.NUM_STANDARD + 1), np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(L), (N, L)), idx), 1)
    counts = counts[:, : rc.NUM_STANDARD]
    distinct = (counts > 0).sum(1)  # [L]
    n_a = np.take_along_axis(counts, np.minimum(idx, rc.NUM_STANDARD - 1).T, axis=1).T  # [N, L]
    contrib = np.where(std, 1.0 / np.maximum(distinct[None, :] * n_a, 1), 0.0)
    w = contrib.sum(1)
    total = w.sum()
    return w / total if total > 0 else np.full(N, 1.0 / N)


WEIGHTINGS = ("henikoff", "cluster", "none")


@dataclasses.dataclass
class ProfileConfig:
    """How ``foldnet predict`` turns an alignment into the model's profile input.

    The defaults make the profile look like the ProteinNet profiles of training
    (HH-suite frequencies, no pseudo-counts, 1/256 steps). The identity 0.62 (the
    BLOSUM62 clustering level) lies in the flat minimum, 0.4-0.62, of the mismatch
    between the bundle's DEEPCON alignments (16pkA, 1a0tP) and the validation
    chains' median query probability, column entropy and zero fraction; 0.8 is
    1.5x and Henikoff weights 1.3x as far off (docs/inference.md).

    Attributes:
      weighting: "henikoff" (position-based, as HH-suite), "cluster" (1 / neighbours
        at ``identity``, as PSICOV / DCA) or "none" (every row 1).
      identity: identity threshold of "cluster" weighting (``sequence_weights``).
      pseudocount: total pseudo-weight, in units of one effective sequence, spread
        uniformly over the 20 letters (``msa_to_profile``); 0 as in training, where
        unseen residues are 0 and a chain without homologs is one-hot.
      quantize: round to multiples of 1/quantize and renormalise, as the training
        profiles are stored (8 bit, 1/256); 0 = raw frequencies.
    """

    weighting: str = "cluster"
    identity: float = 0.62
    pseudocount: float = 0.0
    quantize: int = 256

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"profile weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0.0 <= self.identity <= 1.0:
            raise ValueError(f"profile identity must be in [0, 1], got {self.identity}")
        if self.pseudocount < 0:
            raise ValueError(f"profile pseudocount must be >= 0, got {self.pseudocount}")
        if self.quantize != 0 and self.quantize < 20:
            raise ValueError(f"profile quantize must be 0 (off) or >= 20, got {self.quantize}")


# msa_to_profile's plain frequencies (80 % cluster weights, no rounding): what foldnet predict used before.
RAW_PROFILE = ProfileConfig(weighting="cluster", identity=0.8, quantize=0)


def training_profile(msa: Sequence[str], cfg: Optional[ProfileConfig] = None) -> np.ndarray:
    """Profile [L, 20] of an MSA made like the ProteinNet profiles the model was trained on.

    Args:
      msa: aligned rows, the query first.
      cfg: ``ProfileConfig`` (default: the training-matching one); ``RAW_PROFILE``
        gives ``msa_to_profile``'s raw 80 %-cluster-weighted frequencies.

    Returns:
      float32 [L, 20], rows summing to 1. With pseudocount 0 a one-row MSA gives the
      query one-hot, the profile ProteinNet holds for chains without homologs.

    Examples:
      >>> p = training_profile(["ACD", "ACE", "GCE"], ProfileConfig(weighting="none", quantize=0))
      >>> round(float(p[0, rc.RESTYPE_ORDER["A"]]), 4)
      0.6667
    """
    cfg = ProfileConfig() if cfg is None else cfg
    m = msa_to_int(msa)
    if cfg.weighting == "henikoff":
        w = henikoff_weights(m) * len(m)  # mean weight 1: the pseudocount is in sequences
    elif cfg.weighting == "cluster":
        w = sequence_weights(m, cfg.identity).astype(np.float64)
    else:
        w = np.ones(len(m))
    prof = msa_to_profile(msa, pseudocount=cfg.pseudocount, weights=w).astype(np.float64)
    if cfg.quantize:
        q = np.round(prof * cfg.quantize)
        # A column's largest entry is >= 1/20 >= 1/quantize, so it rounds to >= 1 and q.sum > 0.
        prof = q / np.maximum(q.sum(1, keepdims=True), 1.0)
    return prof.astype(np.float32)
