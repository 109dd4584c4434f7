"""Tile the pair network over overlapping crops of a long chain and average.

The distogram ResNet is fully convolutional, but its activations grow as
L^2 x channels, so a long chain does not fit in memory in one piece. As in
AlphaFold-CASP13 (Senior et al. 2020, Nature 577:706, "Distogram prediction":
64 x 64 crops of the pair map, including off-diagonal ones, whose
predictions are averaged) and ProSPr (Billings et al. 2019, bioRxiv 830273:
overlapping 64 x 64 crops, averaged where they overlap), the chain is cut
into overlapping residue *blocks*, and the network is run on every pair of
blocks.

Scheme (``crop_size`` C, ``stride`` s):

* C >= L: one window holding the whole chain (the untiled prediction).
* otherwise the chain is cut into blocks of b = C // 2 residues starting every
  s residues (the last block ends at L). For every pair of blocks p < q the
  network sees one window of C residues: the two blocks side by side when they
  are disjoint (an i-block x j-block window: its four quadrants are the pair
  maps I x I, I x J, J x I and J x J), or C contiguous residues that contain
  both when they overlap. Every residue pair (i, j) lies in some block pair,
  so every pair is covered; near-diagonal pairs are covered more often.
* Residues keep their chain positions (``residue_index``), so the relative
  position features of an off-diagonal window are those of the full chain.
* Per pair, the probabilities of all windows that contain it are averaged
  (count-weighted mean), then the map is symmetrised (P + P^T) / 2. Torsion
  distributions of a residue are averaged over the windows that contain it.
* Orientation distributions (a model with the trRosetta orientation head) are averaged
  per ordered pair (i, j) with the same counts; omega is symmetric and symmetrised like
  the distogram, theta and phi are directional (theta_ij != theta_ji) and are not.

Peak memory is the [L, L, 65] float32 accumulator (260 MB at L = 1000) plus
one batch of windows through the network -- independent of L for the network.
Numpy only; the network is passed in as a function.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import numpy as np

from foldnet.common import residue_constants as rc

# apply_fn(batch) -> {"dist_probs": [B, C, C, 65], "phi_probs": [B, C, 36], "psi_probs": [B, C, 36]}
# and optionally ORIENTATION_KEYS: [B, C, C, bins]
ApplyFn = Callable[[dict], Mapping[str, np.ndarray]]


# Optional pair outputs: key -> symmetrise after averaging (omega yes; theta, phi directional).
ORIENTATION_KEYS = {"orient_omega_probs": True, "orient_theta_probs": False, "orient_phi_probs": False}


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """How a long chain is cut into windows.

    Attributes:
      crop_size: residues per window (C); chains of at most C residues are run whole.
        None: the crop the network was trained on (``for_model``), so its windows look
        like its training crops; set before ``predict_tiled`` runs.
      stride: distance between block starts (blocks are C // 2 long); stride <
        C // 2 makes blocks overlap, which averages away window-edge effects.
      batch_size: windows per network call (memory vs. speed).
      pad_multiple: pad each window up to a multiple of this many residues
        (padding has seq_mask 0), so chains shorter than the crop compile one
        network shape per bucket instead of one per length. The trunk re-masks
        padded positions before every convolution, so padding does not change
        the result (equal to 1e-5; see tests/test_tiling.py).
    """

    crop_size: Optional[int] = None
    stride: int = 32
    batch_size: int = 4
    pad_multiple: int = 1

    def __post_init__(self):
        if self.crop_size is not None and (self.crop_size < 2 or self.crop_size % 2):
            raise ValueError(f"TilingConfig.crop_size must be even and >= 2, got {self.crop_size}")
        half = None if self.crop_size is None else self.crop_size // 2
        if self.stride < 1 or (half is not None and self.stride > half):
            raise ValueError(
                f"TilingConfig.stride must be in [1, crop_size // 2 = {half}] so that "
                f"blocks leave no gap, got {self.stride}"
            )
        if self.batch_size < 1:
            raise ValueError(f"TilingConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.pad_multiple < 1:
            raise ValueError(f"TilingConfig.pad_multiple must be >= 1, got {self.pad_multiple}")

    def for_model(self, training_crop: int) -> "TilingConfig":
        """This config with an unset ``crop_size`` set to the network's training crop.

        A network trained on C-residue crops has never seen a pair map wider than C, nor
        (without discontiguous crops) a separation beyond C - 1: windows of its own crop
        length are the inputs it knows. A stride too long for that crop is cut to its half."""
        if self.crop_size is not None:
            return self
        crop = int(training_crop)
        return dataclasses.replace(self, crop_size=crop, stride=min(self.stride, crop // 2))


def block_starts(length: int, block: int, stride: int) -> list[int]:
    """Start positions of blocks of ``block`` residues every ``stride``, the last ending at L.

    Args:
      length: chain length L (> block).
      block: block length.
      stride: step between starts (<= block, so blocks tile the chain).

    Returns:
      Increasing start positions; the blocks cover 0..L-1.
    """
    starts = list(range(0, length - block, stride))
    starts.append(length - block)
    return starts


def make_windows(length: int, crop_size: int, stride: int) -> list[np.ndarray]:
    """The residue index sets the network is run on (see the module docstring).

    Args:
      length: chain length L.
      crop_size: window size C (even).
      stride: block stride.

    Returns:
      A list of int arrays, each of min(C, L) distinct increasing residue indices.
    """
    if length <= crop_size:
        return [np.arange(length)]
    b = crop_size // 2
    starts = block_starts(length, b, stride)
    windows = []
    for p, sp in enumerate(starts):
        for sq in starts[p + 1 :]:
            if sq <= sp + b:
                # Overlapping or adjacent blocks: one contiguous stretch of C
                # residues holding both (shifted left at the chain end).
                s = min(sp, length - crop_size)
                windows.append(np.arange(s, s + crop_size))
            else:
                idx = np.concatenate([np.arange(sp, sp + b), np.arange(sq, sq + b)])
                windows.append(idx)
    # Identical contiguous windows add nothing but weight; keep each once.
    unique = {tuple(w.tolist()): w for w in windows}
    return list(unique.values())


def window_batch(features: Mapping[str, np.ndarray], windows: list[np.ndarray], pad_to: int = 0) -> dict:
    """Stack the model inputs of several equally long windows into one batch.

    Args:
      features: unbatched inputs: ``aatype`` [L], ``profile`` [L, 20],
        ``has_profile`` scalar, ``residue_index`` [L].
      windows: residue index arrays of one common length C.
      pad_to: pad N up to this length (unknown residues, seq_mask 0), if > C.

    Returns:
      The batch dict of docs/design.md (input keys only) with B = len(windows), N = max(C, pad_to).
    """
    idx = np.stack(windows)
    B, C = idx.shape
    N = max(C, pad_to)
    pad = N - C
    ri = np.asarray(features["residue_index"], np.int32)[idx]
    return {
        "aatype": np.pad(np.asarray(features["aatype"], np.int32)[idx], ((0, 0), (0, pad)), constant_values=rc.UNK_INDEX),
        "profile": np.pad(np.asarray(features["profile"], np.float32)[idx], ((0, 0), (0, pad), (0, 0))),
        "has_profile": np.full((B,), float(features["has_profile"]), np.float32),
        # Padding continues the numbering, as after the end of a chain.
        "residue_index": np.concatenate([ri, ri[:, -1:] + 1 + np.arange(pad, dtype=np.int32)[None]], axis=1),
        "seq_mask": np.pad(np.ones((B, C), np.float32), ((0, 0), (0, pad))),
        "crop_start": idx[:, 0].astype(np.int32),
        "length": np.full((B,), C, np.int32),
    }


def _symmetrize(p: np.ndarray, block: int = 128) -> np.ndarray:
    """(P + P^T) / 2 over the two residue axes, in place, block pair by block pair.

    The one-shot expression would hold three [L, L, 65] temporaries (780 MB at
    L = 1000); block pairs need only a [block, block, 65] temporary.
    """
    L = p.shape[0]
    for a in range(0, L, block):
        for b in range(a, L, block):
            avg = 0.5 * (p[a : a + block, b : b + block] + p[b : b + block, a : a + block].transpose(1, 0, 2))
            p[a : a + block, b : b + block] = avg
            p[b : b + block, a : a + block] = avg.transpose(1, 0, 2)
    return p


def predict_tiled(
    apply_fn: ApplyFn, features: Mapping[str, np.ndarray], config: TilingConfig
) -> dict[str, np.ndarray]:
    """Distogram and torsion distributions of a whole chain from windowed network calls.

    Args:
      apply_fn: maps a batch (``window_batch``) to probabilities
        ``dist_probs`` [B, C, C, 65], ``phi_probs`` / ``psi_probs`` [B, C, 36].
      features: unbatched inputs of the chain (see ``window_batch``).
      config: crop size, stride and windows per call.

    Returns:
      ``dist_probs`` [L, L, 65] (symmetric, rows sum to 1), ``phi_probs`` /
      ``psi_probs`` [L, 36], ``pair_coverage`` [L, L] int32 (windows per pair,
      >= 1 everywhere) and ``num_windows``; plus, when ``apply_fn`` returns them,
      ``orient_omega_probs`` [L, L, 25] (symmetric), ``orient_theta_probs`` [L, L, 25] and
      ``orient_phi_probs`` [L, L, 13] (row i: residue i towards j; not symmetrised).
    """
    if config.crop_size is None:
        raise ValueError("TilingConfig.crop_size is unset: set it, or take the network's training crop "
                         "with TilingConfig.for_model (predict and evaluate do)")
    L = int(np.shape(features["aatype"])[0])
    windows = make_windows(L, config.crop_size, config.stride)
    dist = np.zeros((L, L, rc.NUM_DIST_BINS), np.float32)
    count2 = np.zeros((L, L), np.int32)
    tors = {k: np.zeros((L, rc.NUM_TORSION_BINS), np.float32) for k in ("phi_probs", "psi_probs")}
    count1 = np.zeros((L,), np.int32)
    orient: dict[str, np.ndarray] = {}
    bs = config.batch_size
    for k in range(0, len(windows), bs):
        chunk = windows[k : k + bs]
        # Fixed batch size keeps one compiled shape; the padding windows are dropped.
        padded = chunk + [chunk[-1]] * (bs - len(chunk)) if len(windows) > bs else chunk
        C = len(chunk[0])
        out = apply_fn(window_batch(features, padded, pad_to=-(-C // config.pad_multiple) * config.pad_multiple))
        dp = np.asarray(out["dist_probs"], np.float32)
        for w, idx in enumerate(chunk):
            dist[idx[:, None], idx[None, :]] += dp[w, :C, :C]
            count2[idx[:, None], idx[None, :]] += 1
            for key in ORIENTATION_KEYS:
                if key in out:
                    o = np.asarray(out[key], np.float32)
                    acc = orient.setdefault(key, np.zeros((L, L, o.shape[-1]), np.float32))
                    acc[idx[:, None], idx[None, :]] += o[w, :C, :C]
            for key in tors:
                tors[key][idx] += np.asarray(out[key][w, :C], np.float32)
            count1[idx] += 1
    if count2.min() < 1:  # a bug in make_windows, never a user error
        raise AssertionError("tiling left residue pairs uncovered")
    dist /= count2[..., None]
    for key in tors:
        tors[key] /= count1[:, None]
    dist = _symmetrize(dist)
    result = {
        "dist_probs": dist,
        "phi_probs": tors["phi_probs"],
        "psi_probs": tors["psi_probs"],
        "pair_coverage": count2,
        "num_windows": np.int32(len(windows)),
    }
    for key, acc in orient.items():
        acc /= count2[..., None]
        result[key] = _symmetrize(acc) if ORIENTATION_KEYS[key] else acc
    return result
