"""PDNet feature and distance files (Adhikari 2020, Sci. Rep. 10:13977; github ba-lab/pdnet).

Layout, as written by PDNet's ``scripts/make-features.py`` and ``scripts/pdb2dist.py``:

* Feature file ``<id>.pkl``: a pickled dict with
  ``seq`` (str, L), ``ss`` (3 x L, PSIPRED helix/strand/coil), ``pssm``
  (L x 22), ``sa`` (L, solvent accessibility), ``entropy`` (L),
  ``ccmpred`` / ``freecon`` / ``potential`` (L x L coupling maps).
* ``pssm`` column order (from PDNet's ``scripts/aln2pssm.py``, a trRosetta-style
  profile): 20 weighted amino-acid frequencies in the order
  ``A R N D C Q E G H I L K M F P S T W Y V``, then the gap frequency, then the
  column entropy. Sequences are reweighted at 80 % identity and every frequency
  carries +1e-9. ``pdnet_to_protein`` maps the 20 amino-acid columns to
  ``rc.RESTYPES`` order and renormalises them to sum to 1 (gaps excluded, as in
  ``alignment.msa_to_profile``); an all-gap column becomes uniform (1/20).
* Distance file ``<id>-cb.npy``: ``np.save`` of the object tuple
  ``(L, seq, cb_map)`` with an L x L float16 CB-CB map in Angstrom, NaN where a
  residue lacks coordinates; PDNet uses CA for residues without CB (glycine).
  Both are pickles, and a pickle can run code (``__reduce__``). They are read by
  :func:`safe_unpickle`, which rebuilds only numpy arrays / dtypes / scalars and the
  built-in containers and refuses every other global, so a crafted file fails with a
  ParseError instead of running. ``np.load(allow_pickle=True)`` is never used.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Union

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.common.atomic import atomic_path
from foldnet.common.protein import Protein, from_sequence
from foldnet.data.errors import ParseError

PathLike = Union[str, os.PathLike]

# Column order of PDNet's 22-column pssm (scripts/aln2pssm.py alphabet).
PDNET_PSSM_ALPHABET = "ARNDCQEGHILKMFPSTWYV"
PDNET_PSSM_GAP_COLUMN = 20
PDNET_PSSM_ENTROPY_COLUMN = 21
# pdnet column of each rc.RESTYPES letter: profile[:, k] = pssm[:, _PERM[k]].
_PERM = np.array([PDNET_PSSM_ALPHABET.index(a) for a in rc.RESTYPES], np.int64)

FEATURE_KEYS = ("seq", "ss", "pssm", "sa", "entropy", "ccmpred", "freecon", "potential")


def _expected_shapes(L: int) -> dict[str, tuple[int, ...]]:
    return {
        "ss": (3, L),
        "pssm": (L, 22),
        "sa": (L,),
        "entropy": (L,),
        "ccmpred": (L, L),
        "freecon": (L, L),
        "potential": (L, L),
    }


def _check_seq(path: PathLike, seq: Any, record: str) -> str:
    if not isinstance(seq, str) or not seq:
        raise ParseError(path, f"'seq' must be a non-empty str, got {type(seq).__name__}", record)
    try:
        rc.sequence_to_aatype(seq)
    except KeyError as e:
        raise ParseError(path, f"invalid residue letter {e.args[0]!r} in 'seq'", record) from None
    return seq


# Globals a PDNet pickle may name: what numpy's own pickles of arrays, dtypes and scalars use.
_SAFE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
})


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, dicts, lists, tuples, str and numbers only."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name} (only numpy arrays, dicts, lists and scalars "
            "are accepted; a pickle naming other objects can run code)"
        )


def safe_unpickle(fh) -> Any:
    """``pickle.load`` restricted to data (see :class:`_SafeUnpickler`); latin-1 for py2 pickles."""
    return _SafeUnpickler(fh, encoding="latin1").load()


def _load_npy(path: PathLike) -> Any:
    """``np.load`` of a ``.npy`` file whose object arrays are read by :func:`safe_unpickle`."""
    from numpy.lib import format as npy

    with open(path, "rb") as fh:
        version = npy.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = npy.read_array_header_2_0(fh)
        if dtype.hasobject:
            return safe_unpickle(fh)
    return np.load(path, allow_pickle=False)


def read_pdnet_features(path: PathLike) -> dict[str, Any]:
    """Load and validate a PDNet feature dict (``<id>.pkl``).

    Args:
      path: the pickle file (read with :func:`safe_unpickle`: data only, no code).

    Returns:
      dict with ``seq`` (str) and the array features as float32 numpy arrays of
      the shapes listed in the module docstring. Extra keys are kept as loaded.

    Raises:
      ParseError: unreadable pickle, not a dict, missing keys, or shape mismatch.
    """
    try:
        with open(path, "rb") as fh:
            obj = safe_unpickle(fh)
    except Exception as e:  # noqa: BLE001 - any malformed pickle (IndexError, KeyError, ...) is bad input
        raise ParseError(path, f"cannot unpickle PDNet feature file: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise ParseError(path, f"expected a dict, got {type(obj).__name__}")
    missing = [k for k in FEATURE_KEYS if k not in obj]
    if missing:
        raise ParseError(path, f"missing feature keys {missing}")
    seq = _check_seq(path, obj["seq"], "seq")
    out: dict[str, Any] = dict(obj)
    out["seq"] = seq
    for key, shape in _expected_shapes(len(seq)).items():
        try:
            arr = np.asarray(obj[key], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ParseError(path, f"'{key}' is not numeric: {e}", key) from None
        if arr.shape != shape:
            raise ParseError(
                path, f"'{key}' has shape {arr.shape}, expected {shape} for L={len(seq)}", key
            )
        out[key] = arr
    return out


def read_pdnet_distances(path: PathLike) -> tuple[str, np.ndarray]:
    """Load a PDNet distance file ``<id>-cb.npy`` = ``np.save((L, seq, cb_map))``.

    Args:
      path: the .npy file (its object array is read with :func:`safe_unpickle`).

    Returns:
      (seq, cb_map) with cb_map float32 [L, L] in Angstrom (NaN = no coordinates).

    Raises:
      ParseError: not a 3-tuple, L != len(seq), or a map that is not L x L.
    """
    try:
        obj = _load_npy(path)
    except Exception as e:  # noqa: BLE001 - any malformed file is bad input, never a traceback
        raise ParseError(path, f"cannot load .npy: {type(e).__name__}: {e}") from None
    if isinstance(obj, (tuple, list)):
        obj = np.array(list(obj) + [None], dtype=object)[:-1]
    items = list(obj) if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 1 else None
    if items is None or len(items) != 3:
        raise ParseError(path, "expected an object array (L, seq, cb_map)")
    L, seq, cb_map = items
    seq = _check_seq(path, seq, "seq")
    try:
        L = int(L)
    except (TypeError, ValueError):
        raise ParseError(path, f"L must be an integer, got {L!r}") from None
    if L != len(seq):
        raise ParseError(path, f"L={L} but len(seq)={len(seq)}")
    cb = np.asarray(cb_map, dtype=np.float32)
    if cb.shape != (L, L):
        raise ParseError(path, f"cb_map has shape {cb.shape}, expected {(L, L)}")
    return seq, cb


def write_pdnet_distances(path: PathLike, seq: str, cb_map: np.ndarray) -> None:
    """Write ``(L, seq, cb_map)`` in PDNet's layout, atomically (temp file + rename).

    Args:
      path: target ``<id>-cb.npy``.
      seq: one-letter sequence, length L.
      cb_map: [L, L] distances in Angstrom (stored as float16, as PDNet does).

    Raises:
      ValueError: shape / sequence mismatch.
    """
    cb = np.asarray(cb_map)
    L = len(seq)
    if cb.shape != (L, L):
        raise ValueError(f"cb_map has shape {cb.shape}, expected {(L, L)} for a sequence of {L}")
    obj = np.empty(3, dtype=object)
    obj[0], obj[1], obj[2] = L, seq, cb.astype(np.float16)
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:  # a handle, so np.save does not append ".npy"
            np.save(fh, obj, allow_pickle=True)


def pdnet_pssm_to_profile(pssm: np.ndarray) -> np.ndarray:
    """PDNet's [L, 22] pssm -> [L, 20] frequencies in rc.RESTYPES order, rows summing to 1.

    Args:
      pssm: [L, 22] (20 amino acids in PDNET_PSSM_ALPHABET order, gap, entropy).

    Returns:
      float32 [L, 20]; rows with no amino-acid mass become uniform 1/20.
    """
    pssm = np.asarray(pssm, np.float64)
    if pssm.ndim != 2 or pssm.shape[1] != 22:
        raise ValueError(f"pssm must be [L, 22], got {pssm.shape}")
    f = np.clip(pssm[:, _PERM], 0.0, None)
    s = f.sum(axis=1, keepdims=True)
    # 1e-6 > 20 * 1e-9: the pseudo-frequency PDNet adds is not real mass.
    uniform = np.full_like(f, 1.0 / rc.NUM_STANDARD)
    out = np.where(s > 1e-6, f / np.maximum(s, 1e-12), uniform)
    return out.astype(np.float32)


def pdnet_to_protein(id: str, features: dict[str, Any], seq: str | None = None) -> Protein:
    """Sequence-only Protein from PDNet features, with the pssm as profile.

    Args:
      id: Protein id.
      features: dict from ``read_pdnet_features``.
      seq: sequence to check against ``features['seq']`` (e.g. from the
        distance file); None to use the feature sequence.

    Returns:
      Protein without coordinates; ``profile`` = ``pdnet_pssm_to_profile(pssm)``.

    Raises:
      ValueError: ``seq`` differs from the feature sequence.
    """
    fseq = features["seq"]
    if seq is not None and seq != fseq:
        raise ValueError(f"{id}: sequence of the distance file differs from the feature file")
    return from_sequence(id, fseq, profile=pdnet_pssm_to_profile(features["pssm"]))
