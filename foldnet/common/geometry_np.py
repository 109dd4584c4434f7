"""Numpy geometry for training targets: virtual CB, backbone dihedrals, distance maps.

These run in the data pipeline (loader threads/processes), so they are numpy
only. The differentiable jnp twins used by the structure module live in
``foldnet.geometry``.
"""

from __future__ import annotations

import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein


def virtual_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal C-beta position from backbone N, CA, C ([..., 3] each, Angstrom).

    Uses the tetrahedral construction of trRosetta (Yang et al. 2020, PNAS):
    CB = a (b x c) + b_coef b + c_coef c + CA with b = CA - N, c = C - CA.
    """
    b = ca - n
    c_ = c - ca
    a = np.cross(b, c_)
    return rc.VIRTUAL_CB_A * a + rc.VIRTUAL_CB_B * b + rc.VIRTUAL_CB_C * c_ + ca


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Dihedral angle p0-p1-p2-p3 in radians in (-pi, pi], via atan2 (IUPAC sign)."""
    b0 = p0 - p1
    b1 = p2 - p1
    b2 = p3 - p2
    b1n = b1 / np.maximum(np.linalg.norm(b1, axis=-1, keepdims=True), 1e-8)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1n, v) * w, axis=-1)
    return np.arctan2(y, x)


def peptide_bonded(protein: Protein) -> np.ndarray:
    """[L-1] bool: residue i and i+1 are joined by a peptide bond.

    Requires C(i) and N(i+1) present and closer than rc.PEPTIDE_BOND_MAX, so
    chain breaks (missing residues, gaps in numbering with real distance) count
    as unbonded whatever the numbering says.
    """
    pos, m = protein.atom_positions, protein.atom_mask
    if len(protein) < 2:
        return np.zeros((0,), bool)
    present = (m[:-1, rc.C_IDX] > 0) & (m[1:, rc.N_IDX] > 0)
    d = np.linalg.norm(pos[:-1, rc.C_IDX] - pos[1:, rc.N_IDX], axis=-1)
    return present & (d < rc.PEPTIDE_BOND_MAX)


def backbone_torsions(protein: Protein) -> tuple[np.ndarray, np.ndarray]:
    """phi, psi, omega [L, 3] in radians, and their mask [L, 3] (float32).

    phi_i = C(i-1)-N(i)-CA(i)-C(i); psi_i = N(i)-CA(i)-C(i)-N(i+1);
    omega_i = CA(i)-C(i)-N(i+1)-CA(i+1) (the peptide bond after residue i).
    Undefined angles (chain ends, gaps, missing atoms) are NaN with mask 0.
    """
    L = len(protein)
    x = protein.atom_positions.astype(np.float64)
    m = protein.atom_mask > 0
    n, ca, c = x[:, rc.N_IDX], x[:, rc.CA_IDX], x[:, rc.C_IDX]
    bb = m[:, rc.N_IDX] & m[:, rc.CA_IDX] & m[:, rc.C_IDX]
    angles = np.full((L, 3), np.nan, np.float64)
    if L >= 2:
        bonded = peptide_bonded(protein) & bb[:-1] & bb[1:]
        with np.errstate(invalid="ignore"):
            phi = dihedral(c[:-1], n[1:], ca[1:], c[1:])
            psi = dihedral(n[:-1], ca[:-1], c[:-1], n[1:])
            omega = dihedral(ca[:-1], c[:-1], n[1:], ca[1:])
        angles[1:, 0] = np.where(bonded, phi, np.nan)
        angles[:-1, 1] = np.where(bonded, psi, np.nan)
        angles[:-1, 2] = np.where(bonded, omega, np.nan)
    mask = np.isfinite(angles).astype(np.float32)
    return angles.astype(np.float32), mask


def cb_positions(protein: Protein) -> tuple[np.ndarray, np.ndarray]:
    """CB coordinates [L, 3] and mask [L]: real CB when present, else virtual CB.

    Glycine (and residues whose file lacks CB) get the virtual CB from N/CA/C,
    the PDNet/trRosetta convention for CB-CB contact maps.
    """
    x, m = protein.atom_positions, protein.atom_mask
    bb = (m[:, rc.N_IDX] > 0) & (m[:, rc.CA_IDX] > 0) & (m[:, rc.C_IDX] > 0)
    vcb = virtual_cb(x[:, rc.N_IDX], x[:, rc.CA_IDX], x[:, rc.C_IDX])
    has_cb = m[:, rc.CB_IDX] > 0
    cb = np.where(has_cb[:, None], x[:, rc.CB_IDX], vcb)
    mask = (has_cb | bb).astype(np.float32)
    cb = np.where(mask[:, None] > 0, cb, 0.0)
    return cb.astype(np.float32), mask


def with_virtual_cb(protein: Protein) -> Protein:
    """Fill the CB slot with the virtual CB wherever it is missing but N/CA/C exist."""
    cb, cb_mask = cb_positions(protein)
    pos = protein.atom_positions.copy()
    mask = protein.atom_mask.copy()
    pos[:, rc.CB_IDX] = cb
    mask[:, rc.CB_IDX] = cb_mask
    return protein.replace(atom_positions=pos, atom_mask=mask)


def distance_map(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise Euclidean distances [L, L] of points [L, 3], and pair mask [L, L]."""
    x = np.asarray(x, np.float32)
    d = np.sqrt(np.maximum(np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1), 0.0))
    if mask is None:
        pm = np.ones(d.shape, np.float32)
    else:
        mask = np.asarray(mask, np.float32)
        pm = mask[:, None] * mask[None, :]
    return d.astype(np.float32), pm


def cb_distance_map(protein: Protein) -> tuple[np.ndarray, np.ndarray]:
    """CB-CB distance map [L, L] (virtual CB for Gly / missing CB) and pair mask."""
    cb, mask = cb_positions(protein)
    return distance_map(cb, mask)
