"""Crop + pad + batch: HDF5 cache -> fixed-shape numpy batches (the batch contract).

Every batch is a pure function of ``(seed, epoch, batch index, process)``:

* epoch order: ``np.random.default_rng([seed, epoch]).permutation`` of the
  eligible chains (identity when ``shuffle=False``);
* sharding: global batch ``g`` is ``order[g*B*P:(g+1)*B*P]``; process ``p``
  takes its ``p``-th block of ``B``. The global batch of ``P`` processes
  therefore equals the batch of one process with batch size ``B*P``, and all
  processes see the same number of batches;
* crop window of chain ``e`` in epoch ``k``: uniform start from
  ``default_rng([seed, k, e, 0])`` when ``random_crop``; otherwise the
  centered window ``start = (L - N) // 2`` (deterministic evaluation crops);
* profile dropout: ``default_rng([seed, k, e, 1]).random() < profile_dropout``;
* discontiguous crops (``discontiguous_prob`` > 0, chains longer than the crop):
  ``default_rng([seed, k, e, 2])`` draws whether the crop is two windows of N/2
  residues with a random gap between them (two sorted uniform points in
  [0, L - N]: the first window's start and the second's start minus N/2), so a
  crop of N residues also holds pairs far apart in sequence. ``residue_index``
  keeps the true chain positions, so the model sees the real separations.
* with ``teacher_profile=True`` (distillation, ``foldnet.train.distill``) a batch also
  carries ``teacher_profile`` [B, N, 21], the profile of every crop whose profile was
  withheld, and ``profile_withheld`` [B] (1 for those crops): the teacher sees what
  the student is denied.

Because of this, exact resume only needs ``(epoch, index)``, and the prefetch
thread cannot change the result (it only runs ahead).

CB-CB distances are computed per crop from the cached CB coordinates (for
distance-only sources the stored map is sliced): 0.21 ms for a 128 x 128 crop,
against 660 MB of extra cache (832 vs 172 MB) for stored float16 maps of the
bundled training set (measured, docs/dataset.md).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.data.cache import H5Dataset

PathLike = Union[str, os.PathLike]
BATCH_KEYS = (
    "aatype", "profile", "has_profile", "residue_index", "seq_mask", "cb_dist", "pair_mask",
    "torsions", "torsion_mask", "atom_positions", "atom_mask", "ss8", "ss_mask",
    "example_id", "crop_start", "length",
)
_READ_KEYS = ("aatype", "atom_positions", "atom_mask", "torsions", "profile", "cb_dist")


def crop_distances(cb: np.ndarray) -> np.ndarray:
    """[n, n] float32 Euclidean distances of points [n, 3] (Angstrom).

    Gram form |a|^2 + |b|^2 - 2 a.b in float64 on centered coordinates: 3x
    faster than broadcasting the differences (0.15 vs 0.45 ms at n = 128) with
    errors < 1e-5 A; the diagonal is set to exactly 0.
    """
    x = np.asarray(cb, np.float64)
    x = x - x.mean(axis=0)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    d = np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)
    np.fill_diagonal(d, 0.0)
    return d


def _empty_batch(batch_size: int, n: int) -> dict[str, np.ndarray]:
    return {
        "aatype": np.full((batch_size, n), rc.UNK_INDEX, np.int32),
        "profile": np.zeros((batch_size, n, rc.NUM_STANDARD), np.float32),
        "has_profile": np.zeros((batch_size,), np.float32),
        "residue_index": np.zeros((batch_size, n), np.int32),
        "seq_mask": np.zeros((batch_size, n), np.float32),
        "cb_dist": np.zeros((batch_size, n, n), np.float32),
        "pair_mask": np.zeros((batch_size, n, n), np.float32),
        "torsions": np.zeros((batch_size, n, 3), np.float32),
        "torsion_mask": np.zeros((batch_size, n, 3), np.float32),
        "atom_positions": np.zeros((batch_size, n, rc.NUM_ATOMS, 3), np.float32),
        "atom_mask": np.zeros((batch_size, n, rc.NUM_ATOMS), np.float32),
        "ss8": np.full((batch_size, n), rc.SS8_COIL, np.int32),
        "ss_mask": np.zeros((batch_size, n), np.float32),
        "example_id": np.full((batch_size,), -1, np.int32),
        "crop_start": np.zeros((batch_size,), np.int32),
        "length": np.zeros((batch_size,), np.int32),
    }


def fill_example(batch: dict[str, np.ndarray], b: int, dataset: H5Dataset, example: int, start: int,
                 size: int, keep_profile: bool = True, *, windows: Optional[Sequence[tuple[int, int]]] = None,
                 secondary_structure: Optional["SecondaryStructureCache"] = None) -> None:
    """Write residues ``start:start+size`` of chain ``example`` into row ``b`` of ``batch``.

    Padding (beyond the chain's end) keeps the batch's fill values: aatype 20
    and all masks 0. ``pair_mask`` is 1 only where both residues have a CB
    (real or virtual); with a stored map, where the distance is known.

    Args:
      batch: arrays from ``_empty_batch`` (crop size >= ``size``).
      b: row.
      dataset: the cache.
      example: chain index.
      start: first residue of the window.
      size: window length (clipped at the chain end).
      keep_profile: False withholds the profile (profile dropout).
      windows: instead of ``start``/``size``, the crop as ``(start, stop)`` residue
        ranges, concatenated in order (a discontiguous crop); ``residue_index`` holds
        the true chain positions.
      secondary_structure: fills ``ss8`` / ``ss_mask`` with the chain's DSSP states
        (computed on the whole chain, then cut, so crop edges do not change them).

    When ``batch`` has a ``teacher_profile`` array, a withheld profile goes there instead
    (and ``profile_withheld[b]`` = 1).
    """
    if windows is None:
        windows = [(start, start + size)]
    if len(windows) == 1:
        (w0, w1), = windows
        x = dataset.read(example, w0, w1, keys=_READ_KEYS)
        pos = np.arange(w0, w0 + len(x["aatype"]), dtype=np.int32)
    else:
        pos = np.concatenate([np.arange(a, b_) for a, b_ in windows]).astype(np.int32)
        full = dataset.read(example, 0, int(pos.max()) + 1, keys=_READ_KEYS)
        x = {k: (v[np.ix_(pos, pos)] if k == "cb_dist" else v[pos] if np.ndim(v) else v) for k, v in full.items()}
    n = len(x["aatype"])
    batch["aatype"][b, :n] = x["aatype"]
    batch["residue_index"][b, :n] = pos[:n]
    batch["seq_mask"][b, :n] = 1.0
    if keep_profile and "profile" in x:
        batch["profile"][b, :n] = x["profile"]
        batch["has_profile"][b] = 1.0
    elif "profile" in x and "teacher_profile" in batch:
        batch["teacher_profile"][b, :n] = x["profile"]
        batch["profile_withheld"][b] = 1.0
    tors = x["torsions"]
    defined = np.isfinite(tors)
    batch["torsions"][b, :n] = np.where(defined, tors, 0.0)
    batch["torsion_mask"][b, :n] = defined
    atom_mask = x["atom_mask"].astype(np.float32)
    batch["atom_positions"][b, :n] = np.where(atom_mask[..., None] > 0, x["atom_positions"], 0.0)
    batch["atom_mask"][b, :n] = atom_mask
    if "cb_dist" in x:
        d = x["cb_dist"].astype(np.float32)
        known = np.isfinite(d)
        batch["cb_dist"][b, :n, :n] = np.where(known, d, 0.0)
        batch["pair_mask"][b, :n, :n] = known
    else:
        m = atom_mask[:, rc.CB_IDX]
        d = crop_distances(x["atom_positions"][:, rc.CB_IDX])
        pm = m[:, None] * m[None, :]
        batch["cb_dist"][b, :n, :n] = d * pm
        batch["pair_mask"][b, :n, :n] = pm
    if secondary_structure is not None:
        ss8, ss_mask = secondary_structure.states(example)
        batch["ss8"][b, :n] = ss8[pos[:n]]
        batch["ss_mask"][b, :n] = ss_mask[pos[:n]]
    batch["example_id"][b] = example
    batch["crop_start"][b] = pos[0]
    batch["length"][b] = n


class SecondaryStructureCache:
    """DSSP 8-state labels per chain of one split, computed once per chain on first use.

    The states come from the backbone (``foldnet.data.dssp``; carbonyl oxygens are
    placed where the source has none, as in ProteinNet). A residue is labelled
    (mask 1) when it has N, CA and C; distance-only sources have no labels.
    Thread-safe for the prefetch thread: a race computes a chain twice, same result.
    """

    def __init__(self, dataset: H5Dataset):
        self.dataset = dataset
        self._states: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def states(self, example: int) -> tuple[np.ndarray, np.ndarray]:
        """(int32 [L] SS8 codes, f32 [L] mask) of chain ``example``."""
        got = self._states.get(example)
        if got is None:
            from foldnet.data.dssp import secondary_structure

            x = self.dataset.read(example, keys=("aatype", "atom_positions", "atom_mask"))
            mask = x["atom_mask"][:, [rc.N_IDX, rc.CA_IDX, rc.C_IDX]].min(axis=1).astype(np.float32)
            # aatype: prolines donate no H-bond (DSSP).
            ss = secondary_structure(x["atom_positions"], x["atom_mask"], x["aatype"]).astype(np.int32)
            got = self._states[example] = (ss, mask)
        return got


class CropLoader:
    """Deterministic, resumable, sharded crop loader over one HDF5 split.

    Args:
      dataset: an ``H5Dataset`` or the path of a cache file.
      crop_size: N, the residue length of every batch.
      batch_size: B, examples per batch for this process.
      seed: base seed of order, crops and dropout.
      shuffle: permute the chains each epoch.
      random_crop: random windows for long chains (else the centered window).
      repeat: iterate epochs forever (else stop after the current epoch).
      drop_remainder: drop the last incomplete global batch (else pad it with
        empty examples: ``example_id`` -1, all masks 0).
      profile_dropout: probability of withholding a crop's profile.
      min_length: chains shorter than this are never used.
      process_index, process_count: this process's shard.
      prefetch: batches prepared ahead in a background thread (0 = synchronous).
      discontiguous_prob: probability that a chain longer than the crop is cropped as
        two windows of ``crop_size // 2`` residues with a random gap (module docstring).
      secondary_structure: fill ``ss8`` / ``ss_mask`` with DSSP states (the
        secondary-structure head's targets); off, they stay coil / 0.
      teacher_profile: add ``teacher_profile`` / ``profile_withheld`` (module docstring).
    """

    def __init__(self, dataset: "H5Dataset | str | os.PathLike", crop_size: int, batch_size: int, seed: int = 0, *,
                 shuffle: bool = True, random_crop: bool = True, repeat: bool = True, drop_remainder: bool = True,
                 profile_dropout: float = 0.0, min_length: int = 1, process_index: int = 0, process_count: int = 1,
                 prefetch: int = 2, discontiguous_prob: float = 0.0, secondary_structure: bool = False,
                 teacher_profile: bool = False):
        self.dataset = dataset if isinstance(dataset, H5Dataset) else H5Dataset(dataset)
        if crop_size < 1 or batch_size < 1:
            raise ValueError(f"crop_size and batch_size must be >= 1, got {crop_size}, {batch_size}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if not 0.0 <= profile_dropout <= 1.0:
            raise ValueError(f"profile_dropout must be in [0, 1], got {profile_dropout}")
        self.crop_size = int(crop_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.random_crop = random_crop
        self.repeat = repeat
        self.drop_remainder = drop_remainder
        self.profile_dropout = float(profile_dropout)
        if not 0.0 <= discontiguous_prob <= 1.0:
            raise ValueError(f"discontiguous_prob must be in [0, 1], got {discontiguous_prob}")
        self.discontiguous_prob = float(discontiguous_prob)
        self.ss_cache = SecondaryStructureCache(self.dataset) if secondary_structure else None
        self.teacher_profile = bool(teacher_profile)
        self.min_length = int(min_length)
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.prefetch = int(prefetch)
        self.eligible = np.nonzero(self.dataset.lengths >= self.min_length)[0].astype(np.int64)
        if len(self.eligible) == 0:
            raise ValueError(f"{self.dataset.path}: no chain of length >= {self.min_length}")
        global_batch = self.batch_size * self.process_count
        if drop_remainder:
            self._num_batches = len(self.eligible) // global_batch
        else:
            self._num_batches = -(-len(self.eligible) // global_batch)
        if self._num_batches == 0:
            raise ValueError(
                f"{self.dataset.path}: {len(self.eligible)} chains make no full global batch of {global_batch} "
                "(use drop_remainder=False or a smaller batch)"
            )
        self.epoch = 0
        self.index = 0

    def __len__(self) -> int:
        return self._num_batches

    # -- state ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Position after the batches consumed so far (JSON-serialisable)."""
        return {
            "seed": self.seed, "epoch": self.epoch, "index": self.index,
            "batch_size": self.batch_size, "crop_size": self.crop_size,
            "process_index": self.process_index, "process_count": self.process_count,
            "num_examples": int(len(self.eligible)),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next batch is the one after the saved position.

        Raises:
          ValueError: if the state was saved by a loader with another seed,
            batch/crop size, sharding or dataset size.
        """
        mine = self.state_dict()
        for key in ("seed", "batch_size", "crop_size", "process_index", "process_count", "num_examples"):
            if key in state and int(state[key]) != mine[key]:
                raise ValueError(f"loader state has {key}={state[key]}, this loader has {mine[key]}")
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        if self.index >= self._num_batches:
            self.epoch, self.index = self.epoch + 1, 0

    # -- the pure batch function ------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Chain indices of ``epoch`` in global order (all processes)."""
        if not self.shuffle:
            return self.eligible
        return self.eligible[np.random.default_rng([self.seed, epoch]).permutation(len(self.eligible))]

    def examples(self, epoch: int, index: int, order: Optional[np.ndarray] = None) -> np.ndarray:
        """This process's chain indices of batch ``index`` of ``epoch`` (-1 = padding)."""
        order = self.epoch_order(epoch) if order is None else order
        B, P = self.batch_size, self.process_count
        g0 = index * B * P + self.process_index * B
        ex = order[g0 : g0 + B]
        if len(ex) < B:
            ex = np.concatenate([ex, np.full(B - len(ex), -1, np.int64)])
        return ex

    def crop_window(self, epoch: int, example: int) -> tuple[int, bool]:
        """(crop start, keep profile) of ``example`` in ``epoch``."""
        L = int(self.dataset.lengths[example])
        N = self.crop_size
        if L <= N:
            start = 0
        elif self.random_crop:
            start = int(np.random.default_rng([self.seed, epoch, int(example), 0]).integers(0, L - N + 1))
        else:
            start = (L - N) // 2
        keep = True
        if self.profile_dropout > 0.0:
            keep = bool(np.random.default_rng([self.seed, epoch, int(example), 1]).random() >= self.profile_dropout)
        return start, keep

    def crop_windows(self, epoch: int, example: int) -> Optional[list[tuple[int, int]]]:
        """The two ``(start, stop)`` windows of a discontiguous crop of ``example``, or None
        when this crop is contiguous (the module docstring gives the draw)."""
        L, N = int(self.dataset.lengths[example]), self.crop_size
        if self.discontiguous_prob <= 0.0 or not self.random_crop or L <= N or N < 2:
            return None
        rng = np.random.default_rng([self.seed, epoch, int(example), 2])
        if rng.random() >= self.discontiguous_prob:
            return None
        half = N // 2
        a, c = np.sort(rng.integers(0, L - N + 1, size=2))
        return [(int(a), int(a) + half), (int(c) + half, int(c) + N)]

    def make_batch(self, epoch: int, index: int, order: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """Batch ``index`` of ``epoch`` for this process."""
        batch = _empty_batch(self.batch_size, self.crop_size)
        if self.teacher_profile:
            batch["teacher_profile"] = np.zeros_like(batch["profile"])
            batch["profile_withheld"] = np.zeros_like(batch["has_profile"])
        for b, e in enumerate(self.examples(epoch, index, order)):
            if e < 0:
                continue
            start, keep = self.crop_window(epoch, int(e))
            fill_example(batch, b, self.dataset, int(e), start, self.crop_size, keep_profile=keep,
                         windows=self.crop_windows(epoch, int(e)), secondary_structure=self.ss_cache)
        return batch

    def _positions(self) -> Iterator[tuple[int, int]]:
        epoch, index = self.epoch, self.index
        while True:
            if index >= self._num_batches:
                if not self.repeat:
                    return
                epoch, index = epoch + 1, 0
            yield epoch, index
            index += 1
            if index >= self._num_batches and not self.repeat:
                return

    def _produce(self) -> Iterator[tuple[int, int, dict]]:
        order_epoch, order = None, None
        for epoch, index in self._positions():
            if epoch != order_epoch:
                order_epoch, order = epoch, self.epoch_order(epoch)
            yield epoch, index, self.make_batch(epoch, index, order)

    # -- iteration ---------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        source = self._produce() if self.prefetch <= 0 else _Prefetcher(self._produce(), self.prefetch)
        try:
            for epoch, index, batch in source:
                # Advance the consumer position before handing out the batch, so
                # state_dict() taken after receiving it resumes at the next one.
                self.epoch, self.index = epoch, index + 1
                if self.index >= self._num_batches:
                    self.epoch, self.index = epoch + 1, 0
                yield batch
        finally:
            if isinstance(source, _Prefetcher):
                source.close()


class _Prefetcher:
    """Run a generator in a daemon thread, ``depth`` items ahead, behind a bounded queue.

    Exceptions raised in the thread are re-raised in the consumer; ``close()``
    stops the thread (it may be blocked on a full queue) and joins it.
    """

    def __init__(self, gen: Iterator, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._gen = gen
        self._thread = threading.Thread(target=self._run, name="CropLoader-prefetch", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._gen:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put(("error", e))

    def __iter__(self):
        while True:
            kind, item = self._queue.get()
            if kind == "item":
                yield item
            elif kind == "done":
                return
            else:
                raise item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        _LIVE.discard(self)


# Prefetchers whose consumer never finished (an abandoned iterator still
# referenced at exit). Python freezes daemon threads at shutdown, and one frozen
# inside an h5py call holds h5py's global lock, so the main thread then
# deadlocks freeing h5py objects; stopping them in an atexit hook (which runs
# before that) avoids it.
_LIVE: "weakref.WeakSet[_Prefetcher]" = weakref.WeakSet()


@atexit.register
def _stop_prefetchers() -> None:
    for p in list(_LIVE):
        p.close()


def full_length_batches(dataset: "H5Dataset | str | os.PathLike", batch_size: int, max_length: int,
                        secondary_structure: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Uncropped evaluation batches, in file order.

    Each batch is padded to its longest chain rounded up to a multiple of 8,
    capped at ``max_length``; chains longer than ``max_length`` keep their first
    ``max_length`` residues (``length`` tells how many). The last batch is
    padded to ``batch_size`` with empty examples (``example_id`` -1).

    Args:
      dataset: an ``H5Dataset`` or a cache path.
      batch_size: examples per batch.
      max_length: the largest N.
      secondary_structure: fill ``ss8`` / ``ss_mask`` (DSSP states).

    Yields:
      Batches in the batch contract with N varying per batch.
    """
    ds = dataset if isinstance(dataset, H5Dataset) else H5Dataset(dataset)
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    ss_cache = SecondaryStructureCache(ds) if secondary_structure else None
    for b0 in range(0, len(ds), batch_size):
        idx = list(range(b0, min(b0 + batch_size, len(ds))))
        longest = int(max(ds.lengths[i] for i in idx))
        n = min(-(-longest // 8) * 8, int(max_length))
        batch = _empty_batch(batch_size, n)
        for b, e in enumerate(idx):
            fill_example(batch, b, ds, e, 0, n, secondary_structure=ss_cache)
        yield batch
