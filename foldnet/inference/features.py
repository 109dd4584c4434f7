"""Sequence (+ optional alignment) -> the model's input features, numpy only.

Inference needs only the input half of the batch contract (docs/design.md):
``aatype``, ``profile``, ``has_profile``, ``residue_index`` (and ``seq_mask``,
added per window by ``tiling.window_batch``). Two modes:

* ``profile``: an alignment ``<msa_dir>/<id>.a3m`` / ``<id>.aln`` (optionally
  ``.gz``) whose first sequence is the query gives the sequence-weighted
  profile (``foldnet.data.alignment.training_profile``: made like the ProteinNet
  profiles of training, settings in ``ProfileConfig`` / ``predict.profile``) and
  has_profile = 1.
* ``single``: no alignment -- profile zeros and has_profile = 0, the same
  withheld-profile input the model sees in training, so a FASTA alone is enough.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein
from foldnet.data.errors import ParseError

PathLike = Union[str, os.PathLike]

# Looked up in this order; the first that exists is used.
MSA_SUFFIXES = (".a3m", ".a3m.gz", ".aln", ".aln.gz")


def find_alignment(msa_dir: Optional[PathLike], record_id: str) -> Optional[Path]:
    """The alignment file of a record in ``msa_dir``, or None.

    Args:
      msa_dir: folder of ``<id>.a3m`` / ``<id>.aln`` files (plain or .gz), or None.
      record_id: the FASTA id.

    Returns:
      Path of the first existing ``<stem><suffix>`` in ``MSA_SUFFIXES`` order, or None; the stem
      is ``foldnet.common.paths.safe_stem(record_id)`` (the id itself for plain ids).
    """
    if msa_dir in (None, "", "null"):
        return None
    from foldnet.common.paths import safe_stem

    # The same stem as the record's output files: an id such as ../x or /abs is never looked up
    # outside msa_dir.
    stem = safe_stem(record_id, "record id")
    for suffix in MSA_SUFFIXES:
        p = Path(msa_dir) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def alignment_profile(path: PathLike, sequence: str, record_id: str, cfg=None) -> np.ndarray:
    """Sequence-weighted profile [L, 20] of an alignment whose query is ``sequence``.

    Args:
      path: ``.a3m`` or ``.aln`` file (PSICOV format, one aligned sequence per line), maybe gzipped.
      sequence: the FASTA sequence the alignment must be built on.
      record_id: for error messages.
      cfg: ``foldnet.data.alignment.ProfileConfig`` (None: the training-matching default;
        ``alignment.RAW_PROFILE``: plain 80 %-cluster-weighted frequencies).

    Returns:
      [L, 20] float32 profile, rows summing to 1 (columns in rc.RESTYPES order).

    Raises:
      ParseError: if the file is malformed or its query differs from ``sequence``.
    """
    from foldnet.data import alignment

    name = Path(path).name.removesuffix(".gz")
    msa = alignment.read_a3m(path) if name.endswith(".a3m") else alignment.read_aln(path)
    query = _query_sequence(msa)
    if query != sequence:
        diff = next((i for i, (a, b) in enumerate(zip(query, sequence)) if a != b), min(len(query), len(sequence)))
        raise ParseError(
            path,
            f"alignment query ({len(query)} residues) does not match the FASTA sequence of "
            f"{record_id!r} ({len(sequence)} residues); first difference at position {diff + 1}",
            record=record_id,
        )
    profile = np.asarray(alignment.training_profile(msa, cfg), np.float32)
    if profile.shape != (len(sequence), rc.NUM_STANDARD):
        raise ParseError(path, f"profile has shape {profile.shape}, expected {(len(sequence), 20)}", record_id)
    return profile


def _query_sequence(msa: list[str]) -> str:
    """The query (first row, ungapped) of an alignment from ``read_a3m`` / ``read_aln``."""
    return msa[0].replace("-", "").upper() if msa else ""


def input_features(protein: Protein, profile: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Unbatched model inputs of one chain.

    Args:
      protein: the chain (only ``aatype`` is used; ``profile`` if not given here).
      profile: optional [L, 20] profile overriding ``protein.profile``.

    Returns:
      ``aatype`` [L] int32, ``profile`` [L, 20] float32 (zeros in single-sequence
      mode), ``has_profile`` float32 scalar (1 / 0), ``residue_index`` [L] int32
      (0-based chain position, as the loader gives it).
    """
    L = len(protein)
    if profile is None:
        profile = protein.profile
    has = profile is not None
    prof = np.zeros((L, rc.NUM_STANDARD), np.float32) if profile is None else np.asarray(profile, np.float32)
    if prof.shape != (L, rc.NUM_STANDARD):
        raise ValueError(f"{protein.id}: profile has shape {prof.shape}, expected {(L, rc.NUM_STANDARD)}")
    return {
        "aatype": np.asarray(protein.aatype, np.int32),
        "profile": prof,
        "has_profile": np.float32(1.0 if has else 0.0),
        "residue_index": np.arange(L, dtype=np.int32),
    }
