"""HDF5 cache of featurised chains: one file per split, ragged arrays + offsets.

Layout (``FORMAT_VERSION`` 1)::

    /                      attrs: format_version, split, source, config (JSON),
                                  residue_constants_fingerprint, num_chains, num_residues
    /chains/id             [N] str      record id
    /chains/source_id      [N] str      provenance (file[:record])
    /chains/cath           [N] str      comma-separated C.A.T.H labels ("" = unknown)
    /chains/length         [N] int32
    /chains/offset         [N+1] int64  residues of chain i: offset[i]:offset[i+1]
    /chains/has_profile    [N] uint8
    /chains/pair_offset    [N+1] int64  (only with stored maps) cb_dist of chain i,
                                        flattened row-major, pair_offset[i]:pair_offset[i+1]
                                        (empty for chains without a stored map)
    /residues/<feature>    [R, ...]     the per-residue features of
                                        ``featurize.RESIDUE_FEATURES`` concatenated
                                        over chains (profile only if some chain has one)
    /pairs/cb_dist         [P] float16  (only when some chain has a stored map)

Why not one group per chain: opening a file with 7k groups walks 7k object
headers (seconds) and each read pays a lookup; here opening reads six small
tables and a chain is one contiguous slice of each dataset (one seek), which
also lets the loader read just the crop window. Datasets are contiguous and
uncompressed because reads are small random slices.

A cache records the fingerprint of every ``residue_constants`` value the
features depend on (alphabet, atom order, virtual-CB coefficients, peptide-bond
cutoff); opening a cache whose fingerprint or format version differs raises
``StaleCacheError`` instead of silently training on mismatched features.
Files are written with object timestamps off, so rebuilding the same chains
with the same attributes gives a byte-identical file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import h5py
import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.common.atomic import atomic_path
from foldnet.common.protein import Protein
from foldnet.data.errors import ParseError
from foldnet.data.featurize import RESIDUE_FEATURES, to_protein

FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]
_STR = h5py.string_dtype("utf-8")


class StaleCacheError(RuntimeError):
    """The cache was written by another format version or other residue constants."""


def residue_constants_fingerprint() -> str:
    """sha256 (hex, 16 chars) of the residue constants the cached features depend on."""
    payload = {
        "restypes": rc.RESTYPES_WITH_X,
        "atom_types": list(rc.ATOM_TYPES),
        "virtual_cb": [rc.VIRTUAL_CB_A, rc.VIRTUAL_CB_B, rc.VIRTUAL_CB_C],
        "peptide_bond_max": rc.PEPTIDE_BOND_MAX,
        "ambiguous": sorted(rc.AMBIGUOUS_CODE_MAP.items()),
        "modified": sorted(rc.MODIFIED_RESIDUES.items()),
        "format_version": FORMAT_VERSION,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _dataset(group: h5py.Group, name: str, data: np.ndarray, dtype=None) -> None:
    group.create_dataset(name, data=data, dtype=dtype, track_times=False)


def write_h5(
    path: PathLike,
    chains: Sequence[dict],
    *,
    split: str = "",
    source: str = "",
    config: Optional[dict] = None,
    build_key: Optional[str] = None,
) -> Path:
    """Write featurised chains to ``path`` atomically (temp file + rename).

    Args:
      path: the target ``.h5`` file.
      chains: feature dicts from ``featurize.featurize`` / ``featurize_distances``.
      split: split name stored as an attribute.
      source: source description stored as an attribute.
      config: build configuration (JSON-serialisable) stored as an attribute.
      build_key: the build that wrote the file (``foldnet.data.build``); readers check that it
        matches the folder's ``manifest.json``, so split files of different builds are not mixed.

    Returns:
      The path written.
    """
    path = Path(path)
    lengths = np.array([len(c["aatype"]) for c in chains], np.int32)
    offsets = np.zeros(len(chains) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    has_profile = np.array([("profile" in c) for c in chains], np.uint8)
    has_map = [("cb_dist" in c) for c in chains]
    with atomic_path(path, suffix=".h5") as tmp:
        # track_order off, libver pinned: both keep the bytes reproducible.
        with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["split"] = split
            f.attrs["source"] = source
            f.attrs["config"] = json.dumps(config or {}, sort_keys=True, default=str)
            f.attrs["residue_constants_fingerprint"] = residue_constants_fingerprint()
            f.attrs["num_chains"] = len(chains)
            f.attrs["num_residues"] = int(offsets[-1])
            if build_key:
                f.attrs["build_key"] = build_key
            g = f.create_group("chains", track_order=False)
            for key in ("id", "source_id", "cath"):
                _dataset(g, key, np.array([str(c[key]) for c in chains], dtype=object), _STR)
            _dataset(g, "length", lengths)
            _dataset(g, "offset", offsets)
            _dataset(g, "has_profile", has_profile)
            r = f.create_group("residues", track_order=False)
            for key, (shape, dtype) in RESIDUE_FEATURES.items():
                if key == "profile" and not has_profile.any():
                    continue
                parts = []
                for c, L in zip(chains, lengths):
                    a = c.get(key)
                    if a is None:  # only profile may be absent
                        a = np.zeros((L,) + shape, dtype)
                    a = np.asarray(a, dtype)
                    if a.shape != (L,) + shape:
                        raise ValueError(f"chain {c['id']!r}: {key} has shape {a.shape}, expected {(L,) + shape}")
                    parts.append(a)
                data = np.concatenate(parts) if parts else np.zeros((0,) + shape, dtype)
                _dataset(r, key, data)
            if any(has_map):
                sizes = np.array([L * L if m else 0 for L, m in zip(lengths, has_map)], np.int64)
                pair_offsets = np.zeros(len(chains) + 1, np.int64)
                np.cumsum(sizes, out=pair_offsets[1:])
                _dataset(g, "pair_offset", pair_offsets)
                flat = [np.asarray(c["cb_dist"], np.float16).reshape(-1) for c in chains if "cb_dist" in c]
                p = f.create_group("pairs", track_order=False)
                _dataset(p, "cb_dist", np.concatenate(flat))
    return path


class H5Dataset:
    """Random access to the chains of one cache file.

    The per-chain tables (ids, lengths, offsets, CATH labels) are read once at
    construction; the file handle for the residue arrays opens lazily on first
    access and is reopened in a forked child (an HDF5 handle must not cross a
    fork). h5py serialises calls with its global lock, so one instance may be
    read from a loader's background thread.

    Args:
      path: a file written by ``write_h5``.
      check: raise ``StaleCacheError`` if the format version or residue-constant
        fingerprint differ from this code's.
    """

    def __init__(self, path: PathLike, check: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such dataset file (build it with `foldnet build-dataset`)")
        try:
            self._read_tables(check)
        except (OSError, KeyError, ValueError, TypeError, IndexError) as e:
            if isinstance(e, StaleCacheError):
                raise
            raise ParseError(self.path, f"not a readable foldnet cache ({type(e).__name__}: {e}); "
                                        "rebuild it with `foldnet build-dataset`") from None
        self._file: Optional[h5py.File] = None
        self._dsets: dict[str, h5py.Dataset] = {}
        self._pid: Optional[int] = None
        self._lock = threading.Lock()

    def _read_tables(self, check: bool) -> None:
        with h5py.File(self.path, "r") as f:
            self.attrs: dict[str, Any] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            if check:
                version = self.attrs.get("format_version")
                fp = self.attrs.get("residue_constants_fingerprint")
                if version != FORMAT_VERSION or fp != residue_constants_fingerprint():
                    raise StaleCacheError(
                        f"{self.path}: cache format {version} / residue-constants fingerprint {fp} does not "
                        f"match this code ({FORMAT_VERSION} / {residue_constants_fingerprint()}); "
                        "rebuild it with `foldnet build-dataset`"
                    )
                self._check_generation()
            g = f["chains"]
            self._ids = [s.decode() if isinstance(s, bytes) else s for s in g["id"][()]]
            self._source_ids = [s.decode() if isinstance(s, bytes) else s for s in g["source_id"][()]]
            self._cath = [s.decode() if isinstance(s, bytes) else s for s in g["cath"][()]]
            self._lengths = g["length"][()].astype(np.int64)
            self._offsets = g["offset"][()].astype(np.int64)
            self._has_profile = g["has_profile"][()].astype(bool)
            self._pair_offsets = g["pair_offset"][()].astype(np.int64) if "pair_offset" in g else None
            self._residue_keys = tuple(f["residues"].keys())
        n = len(self._ids)
        if not (len(self._lengths) == n and len(self._offsets) == n + 1 and len(self._cath) == n
                and (n == 0 or int(self._offsets[-1]) == int(self._lengths.sum()))):
            raise ValueError("chain tables disagree (ids / lengths / offsets)")
        if np.any(self._lengths < 0) or np.any(np.diff(self._offsets) != self._lengths):
            raise ValueError("chain offsets do not match the chain lengths")
        missing = [k for k in RESIDUE_FEATURES if k != "profile" and k not in self._residue_keys]
        if missing:
            raise ValueError(f"missing residue features {missing}")
        with h5py.File(self.path, "r") as f:
            short = [k for k in self._residue_keys if f["residues/" + k].shape[0] != int(self._offsets[-1])]
        if short:
            raise ValueError(f"residue features {short} do not hold {int(self._offsets[-1])} residues")

    def _check_generation(self) -> None:
        """A file of a build that did not finish (killed between split files) is refused."""
        key = self.attrs.get("build_key")
        if not key:
            return  # written outside build-dataset (tests, tools): nothing to compare
        manifest = self.path.parent / "manifest.json"
        try:
            recorded = json.loads(manifest.read_text()).get("build_key")
        except (OSError, ValueError):
            recorded = None
        if recorded != key:
            raise StaleCacheError(
                f"{self.path}: written by build {str(key)[:12]}, but {manifest} "
                f"{'records build ' + str(recorded)[:12] if recorded else 'is missing or unreadable'}: "
                "the folder mixes files of different builds (a build was interrupted); rerun "
                "`foldnet build-dataset` with the same options"
            )

    # -- per-chain tables ---------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def source_ids(self) -> list[str]:
        return self._source_ids

    @property
    def lengths(self) -> np.ndarray:
        """[N] int64 chain lengths."""
        return self._lengths

    @property
    def cath(self) -> list[str]:
        """Comma-separated C.A.T.H labels per chain ("" = unknown)."""
        return self._cath

    @property
    def has_profile(self) -> np.ndarray:
        return self._has_profile

    @property
    def has_distance_maps(self) -> bool:
        return self._pair_offsets is not None

    def index_of(self, id: str) -> int:
        """Index of the chain with record id ``id``."""
        if not hasattr(self, "_index"):
            self._index = {k: i for i, k in enumerate(self._ids)}
        return self._index[id]

    # -- file handle ----------------------------------------------------------
    def _handle(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            with self._lock:
                if self._file is None or self._pid != pid:
                    # In a forked child the parent's handle is unusable: drop it without closing.
                    self._file = h5py.File(self.path, "r")
                    # Dataset objects cached: a path lookup costs more than a small read.
                    self._dsets = {k: self._file["residues/" + k] for k in self._residue_keys}
                    if "pairs" in self._file:
                        self._dsets["cb_dist"] = self._file["pairs/cb_dist"]
                    self._pid = pid
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._dsets = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_dsets"] = {}
        state["_pid"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- reads ----------------------------------------------------------------
    def read(self, i: int, start: int = 0, stop: Optional[int] = None, keys: Optional[Iterable[str]] = None) -> dict:
        """Residues ``start:stop`` of chain ``i`` (one slice per dataset).

        Args:
          i: chain index.
          start, stop: residue window (clipped to the chain).
          keys: residue features to read (default all stored; ``cb_dist`` is
            included when stored, as the [n, n] block of the window).

        Returns:
          dict with ``id``, ``cath``, ``source_id``, ``length`` (full chain),
          ``start``, ``has_profile`` and the requested arrays.
        """
        n = len(self._ids)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: chain index {i} out of range ({n} chains)")
        i = int(i) % n
        L = int(self._lengths[i])
        stop = L if stop is None else min(int(stop), L)
        start = max(0, int(start))
        base = int(self._offsets[i])
        try:
            return self._read(i, start, stop, L, base, keys)
        except (OSError, KeyError, ValueError) as e:  # damaged after the tables were checked
            raise ParseError(self.path, f"cannot read chain {i}: {type(e).__name__}: {e}", self._ids[i]) from None

    def _read(self, i: int, start: int, stop: int, L: int, base: int, keys: Optional[Iterable[str]]) -> dict:
        self._handle()
        d = self._dsets
        if keys is None:
            keys = list(self._residue_keys) + (["cb_dist"] if self._pair_offsets is not None else [])
        out: dict[str, Any] = {
            "id": self._ids[i],
            "cath": self._cath[i],
            "source_id": self._source_ids[i],
            "length": L,
            "start": start,
            "has_profile": bool(self._has_profile[i]),
        }
        for key in keys:
            if key == "cb_dist":
                if self._pair_offsets is None or self._pair_offsets[i + 1] == self._pair_offsets[i]:
                    continue
                p0 = int(self._pair_offsets[i])
                # Rows start..stop of the L x L map are one contiguous run; cut columns after.
                rows = d["cb_dist"][p0 + start * L : p0 + stop * L].reshape(stop - start, L)
                out["cb_dist"] = rows[:, start:stop]
            elif key == "profile":
                if key in self._residue_keys and self._has_profile[i]:
                    out[key] = d["profile"][base + start : base + stop]
            else:
                out[key] = d[key][base + start : base + stop]
        return out

    def __getitem__(self, i: int) -> dict:
        """All features of chain ``i`` as a dict (see ``featurize``), plus ``length``."""
        return self.read(i)

    def protein(self, i: int) -> Protein:
        """Chain ``i`` as a Protein (CB slot holds the virtual CB)."""
        return to_protein(self.read(i))

    def __repr__(self) -> str:
        return f"H5Dataset({str(self.path)!r}, chains={len(self)}, split={self.attrs.get('split')!r})"
