"""The one protein type every reader produces and every writer consumes.

A ``Protein`` is a single chain (or a CATH domain cut from one): its sequence,
backbone coordinates with per-atom masks, numbering, and optional evolutionary
profile and CATH label. Numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from foldnet.common import residue_constants as rc


# |coordinate| at or above this (Angstrom) is treated as missing; the PDB format tops out at 1e4.
MAX_COORDINATE = 1e5


@dataclasses.dataclass(frozen=True)
class Protein:
    """A protein chain with backbone coordinates.

    Coordinates are in Angstrom; masks are float32 0/1 arrays (1 = present).
    """

    # Identifier of the record: e.g. "16vp_1_A" (ProteinNet), "1abcA01" (CATH).
    id: str
    # [L] int32 residue type, index into rc.RESTYPES_WITH_X (20 = unknown).
    aatype: np.ndarray
    # [L, 5, 3] float32 positions of N, CA, C, O, CB (rc.ATOM_TYPES) in Angstrom.
    atom_positions: np.ndarray
    # [L, 5] float32: 1 where the atom was observed (or, for CB, computed).
    atom_mask: np.ndarray
    # [L] int32 residue number as in the source (author numbering for PDB).
    residue_index: np.ndarray
    # Chain identifier ("" for blank chain IDs).
    chain_id: str = "A"
    # [L] str insertion codes ("" where none); None when the source has none.
    insertion_code: Optional[np.ndarray] = None
    # [L, 20] float32 per-position amino-acid frequencies (columns in
    # rc.RESTYPES order), or None when no alignment/profile is available.
    profile: Optional[np.ndarray] = None
    # CATH classification "C.A.T.H" (e.g. "3.40.50.720"), or None.
    cath: Optional[str] = None
    # [L] float32 per-residue B-factor / confidence written to PDB; None -> 0.
    b_factors: Optional[np.ndarray] = None

    def __post_init__(self):
        L = len(self.aatype)
        checks = {
            "atom_positions": (self.atom_positions, (L, rc.NUM_ATOMS, 3)),
            "atom_mask": (self.atom_mask, (L, rc.NUM_ATOMS)),
            "residue_index": (self.residue_index, (L,)),
        }
        if self.profile is not None:
            checks["profile"] = (self.profile, (L, rc.NUM_STANDARD))
        if self.b_factors is not None:
            checks["b_factors"] = (self.b_factors, (L,))
        if self.insertion_code is not None:
            checks["insertion_code"] = (self.insertion_code, (L,))
        for name, (arr, shape) in checks.items():
            if tuple(np.shape(arr)) != shape:
                raise ValueError(
                    f"Protein {self.id!r}: {name} has shape {np.shape(arr)}, expected {shape}"
                )

    def __len__(self) -> int:
        return len(self.aatype)

    @property
    def sequence(self) -> str:
        return rc.aatype_to_sequence(self.aatype)

    @property
    def backbone_mask(self) -> np.ndarray:
        """[L] float32: 1 where N, CA and C are all present."""
        return np.prod(self.atom_mask[:, :3], axis=-1).astype(np.float32)

    def replace(self, **changes) -> "Protein":
        return dataclasses.replace(self, **changes)

    def select(self, index: np.ndarray, id: Optional[str] = None) -> "Protein":
        """Sub-protein of the residues at ``index`` (ints or a boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.nonzero(index)[0]

        def take(a):
            return None if a is None else np.asarray(a)[index]

        return dataclasses.replace(
            self,
            id=self.id if id is None else id,
            aatype=self.aatype[index],
            atom_positions=self.atom_positions[index],
            atom_mask=self.atom_mask[index],
            residue_index=self.residue_index[index],
            insertion_code=take(self.insertion_code),
            profile=take(self.profile),
            b_factors=take(self.b_factors),
        )


def from_sequence(id: str, sequence: str, profile: Optional[np.ndarray] = None) -> Protein:
    """A Protein with a sequence and no coordinates (all atom masks 0)."""
    aatype = rc.sequence_to_aatype(sequence)
    L = len(aatype)
    return Protein(
        id=id,
        aatype=aatype,
        atom_positions=np.zeros((L, rc.NUM_ATOMS, 3), np.float32),
        atom_mask=np.zeros((L, rc.NUM_ATOMS), np.float32),
        residue_index=np.arange(1, L + 1, dtype=np.int32),
        profile=profile,
    )


def mask_unobserved(protein: Protein) -> Protein:
    """The reader-side guard, applied by every reader (ProteinNet, PDB/mmCIF, the HDF5 cache).

    An atom whose coordinates are nan, inf or absurdly large (``MAX_COORDINATE``; a damaged
    record) is not observed: mask 0, position 0. Left at mask 1 it would give nan distances with
    pair mask 1 and poison a training step. A mask value other than 0/1 (a damaged cache) means
    not observed; a non-finite profile row carries no information and becomes uniform, as an
    all-gap alignment column does. Writers keep their own checks (``pdb_io`` refuses non-finite
    coordinates), so a model that produces nan is still reported, not hidden.
    """
    pos = np.asarray(protein.atom_positions)
    mask = np.asarray(protein.atom_mask)
    changes = {}
    if not ((mask == 0) | (mask == 1)).all():
        mask = (mask == 1).astype(np.float32)
        changes["atom_mask"] = mask
    bad = ~np.all(np.isfinite(pos) & (np.abs(pos) < MAX_COORDINATE), axis=-1)
    if bad.any():
        changes["atom_mask"] = np.where(bad, 0.0, mask).astype(np.float32)
        changes["atom_positions"] = np.where(bad[..., None], 0.0, pos).astype(np.float32)
    if protein.profile is not None and not np.isfinite(protein.profile).all():
        prof = np.asarray(protein.profile, np.float32)
        rows = ~np.isfinite(prof).all(axis=-1)
        changes["profile"] = np.where(rows[:, None], np.float32(1.0 / rc.NUM_STANDARD), prof).astype(np.float32)
    return dataclasses.replace(protein, **changes) if changes else protein
