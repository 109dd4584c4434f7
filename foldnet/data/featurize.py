"""Protein -> per-chain training features (numpy only).

One chain becomes a flat dict of arrays that the HDF5 cache stores as-is and
the loader crops. The CB-CB distance map is NOT part of the features for
coordinate sources: the loader computes it per crop from the stored CB
coordinates (docs/dataset.md, "Distance maps: computed in the loader"): with
stored float16 [L, L] maps the bundled training cache measured 832 MB instead
of 172 MB, while computing a 128 x 128 crop's map costs 0.21 ms. Sources
that give distances but no coordinates (PDNet) store the map (``cb_dist``).

Feature dict (L residues):

| key | shape | dtype | meaning |
|---|---|---|---|
| ``id`` | - | str | record id (``16vp_1_A``, ``1c0pA01``) |
| ``source_id`` | - | str | where it came from (``training.gz:16vp_1_A``, a file path) |
| ``cath`` | - | str | comma-separated ``C.A.T.H`` of the chain's domains ("" if unknown) |
| ``aatype`` | [L] | int8 | residue type 0..20 |
| ``residue_number`` | [L] | int32 | numbering of the source file |
| ``atom_positions`` | [L, 5, 3] | float32 | N, CA, C, O, CB in Angstrom; CB virtual where missing |
| ``atom_mask`` | [L, 5] | uint8 | 1 = atom present (CB: real or computed) |
| ``torsions`` | [L, 3] | float32 | phi, psi, omega in radians, NaN where undefined |
| ``profile`` | [L, 20] | float16 | profile frequencies, or absent |
| ``cb_dist`` | [L, L] | float16 | only for distance-only sources; NaN where unknown |
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein, mask_unobserved

# Per-residue array features, in the order the cache stores them, with their
# on-disk dtype. float16 for profiles: their values are given to 3 decimals in
# [0, 1] and float16 spacing there is <= 2^-11 (error <= 0.00025), which halves
# the largest per-residue array. Coordinates stay float32 (float16 would lose
# ~0.03 A at 60 A from the origin).
RESIDUE_FEATURES: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "aatype": ((), np.dtype(np.int8)),
    "residue_number": ((), np.dtype(np.int32)),
    "atom_positions": ((rc.NUM_ATOMS, 3), np.dtype(np.float32)),
    "atom_mask": ((rc.NUM_ATOMS,), np.dtype(np.uint8)),
    "torsions": ((3,), np.dtype(np.float32)),
    "profile": ((rc.NUM_STANDARD,), np.dtype(np.float16)),
}
STRING_FEATURES = ("id", "source_id", "cath")


def featurize(protein: Protein, source_id: str = "", cath: Optional[str] = None) -> dict:
    """Training features of one chain.

    The CB slot is filled with the virtual CB (trRosetta construction,
    ``geometry_np.cb_positions``) wherever the file has N/CA/C but no CB;
    torsions follow ``geometry_np.backbone_torsions`` (NaN across chain breaks).

    Args:
      protein: the chain.
      source_id: provenance string stored with the chain.
      cath: CATH label(s) overriding ``protein.cath`` (comma-separated C.A.T.H).

    Returns:
      The feature dict described in the module docstring (no ``cb_dist``).

    Raises:
      ValueError: if the chain is empty or has no residue with a backbone.
    """
    L = len(protein)
    if L == 0:
        raise ValueError(f"{protein.id}: empty chain")
    cb, cb_mask = geometry_np.cb_positions(protein)
    if not np.any(cb_mask > 0):
        raise ValueError(f"{protein.id}: no residue has N, CA and C coordinates")
    pos = np.asarray(protein.atom_positions, np.float32).copy()
    mask = (np.asarray(protein.atom_mask) > 0).astype(np.uint8)
    pos[:, rc.CB_IDX] = cb
    mask[:, rc.CB_IDX] = (cb_mask > 0).astype(np.uint8)
    pos = np.where(mask[..., None] > 0, pos, 0.0).astype(np.float32)
    torsions, _ = geometry_np.backbone_torsions(protein)
    feats = {
        "id": protein.id,
        "source_id": source_id,
        "cath": cath if cath is not None else (protein.cath or ""),
        "aatype": np.asarray(protein.aatype, np.int8),
        "residue_number": np.asarray(protein.residue_index, np.int32),
        "atom_positions": pos,
        "atom_mask": mask,
        "torsions": torsions.astype(np.float32),
    }
    if protein.profile is not None:
        feats["profile"] = np.asarray(protein.profile, np.float16)
    return feats


def featurize_distances(
    id: str,
    sequence: str,
    cb_dist: np.ndarray,
    profile: Optional[np.ndarray] = None,
    source_id: str = "",
    cath: str = "",
) -> dict:
    """Features of a chain known only by sequence and CB-CB distance map (PDNet).

    Coordinates and torsions are absent (masks 0, torsions NaN); the map is
    stored. Non-finite or negative distances mean "unknown" and become NaN.

    Args:
      id: record id.
      sequence: one-letter sequence (length L).
      cb_dist: [L, L] CB-CB distances in Angstrom.
      profile: optional [L, 20] profile in rc.RESTYPES column order.
      source_id: provenance string.
      cath: CATH label(s), "" if unknown.

    Returns:
      The feature dict with ``cb_dist`` [L, L] float16.

    Raises:
      ValueError: on shape mismatches.
    """
    aatype = rc.sequence_to_aatype(sequence)
    L = len(aatype)
    d = np.asarray(cb_dist, np.float32)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.shape != (L, L):
        raise ValueError(f"{id}: distance map has shape {d.shape}, sequence has {L} residues")
    if profile is not None and np.shape(profile) != (L, rc.NUM_STANDARD):
        raise ValueError(f"{id}: profile has shape {np.shape(profile)}, expected {(L, rc.NUM_STANDARD)}")
    with np.errstate(invalid="ignore"):
        d = np.where(np.isfinite(d) & (d >= 0), d, np.nan)
    feats = {
        "id": id,
        "source_id": source_id,
        "cath": cath,
        "aatype": aatype.astype(np.int8),
        "residue_number": np.arange(1, L + 1, dtype=np.int32),
        "atom_positions": np.zeros((L, rc.NUM_ATOMS, 3), np.float32),
        "atom_mask": np.zeros((L, rc.NUM_ATOMS), np.uint8),
        "torsions": np.full((L, 3), np.nan, np.float32),
        "cb_dist": d.astype(np.float16),
    }
    if profile is not None:
        feats["profile"] = np.asarray(profile, np.float16)
    return feats


def to_protein(feats: dict) -> Protein:
    """The Protein a feature dict came from (CB slot holds the virtual CB)."""
    profile = feats.get("profile")
    cath = feats.get("cath") or None
    return mask_unobserved(Protein(
        id=str(feats["id"]),
        aatype=np.asarray(feats["aatype"], np.int32),
        atom_positions=np.asarray(feats["atom_positions"], np.float32),
        atom_mask=np.asarray(feats["atom_mask"], np.float32),
        residue_index=np.asarray(feats["residue_number"], np.int32),
        profile=None if profile is None else np.asarray(profile, np.float32),
        cath=cath,
    ))
