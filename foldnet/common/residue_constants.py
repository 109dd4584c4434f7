"""One source of chemical truth: alphabet, atom order, ideal geometry, bins.

Everything that names a residue type, an atom slot, a bond length or a bin edge
is defined here once; every other module imports it. Derived tables are built at
import time. Numpy only (never imports jax).

Ideal backbone geometry: Engh & Huber (1991), Acta Cryst. A47, 392-400, as
tabulated in the CHARMM/AMBER-independent "Engh-Huber" parameter set used by
most structure-building tools (e.g. the values in AlphaFold's
``residue_constants`` for the backbone).
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------
# Residue alphabet
# --------------------------------------------------------------------------

# The 20 standard amino acids in alphabetical order of their one-letter code.
# This is also the column order of ProteinNet's [EVOLUTIONARY] profile rows,
# so a profile needs no permutation.
RESTYPES = "ACDEFGHIKLMNPQRSTVWY"
NUM_STANDARD = len(RESTYPES)  # 20
UNK_INDEX = NUM_STANDARD  # 20: unknown / non-standard residue
NUM_RESTYPES = NUM_STANDARD + 1  # 21, the size of the one-hot alphabet
RESTYPES_WITH_X = RESTYPES + "X"

RESTYPE_ORDER = {aa: i for i, aa in enumerate(RESTYPES)}

# Policy for ambiguous / rare one-letter codes in sequences (FASTA, SEQRES):
#   B (Asx) -> D, Z (Glx) -> E, J (Xle) -> L: the more frequent member of the pair;
#   U (selenocysteine) -> C, O (pyrrolysine) -> K: the parent residue;
#   X -> unknown (index 20).
# Anything else is not a residue code and is an error for the caller to report.
AMBIGUOUS_CODE_MAP = {"B": "D", "Z": "E", "J": "L", "U": "C", "O": "K", "X": "X"}

RESTYPE_1TO3 = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE",
    "G": "GLY", "H": "HIS", "I": "ILE", "K": "LYS", "L": "LEU",
    "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG",
    "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR",
    "X": "UNK",
}
RESTYPE_3TO1 = {v: k for k, v in RESTYPE_1TO3.items()}

# Modified residues seen in PDB entries, mapped to their standard parent
# (a subset of the PDB's chemical-component "parent" field covering the
# common cases; anything else with backbone atoms becomes UNK).
MODIFIED_RESIDUES = {
    "MSE": "MET", "SEP": "SER", "TPO": "THR", "PTR": "TYR", "CSO": "CYS",
    "CSD": "CYS", "CME": "CYS", "CSX": "CYS", "OCS": "CYS", "KCX": "LYS",
    "MLY": "LYS", "M3L": "LYS", "LLP": "LYS", "HYP": "PRO", "PCA": "GLN",
    "NEP": "HIS", "HIC": "HIS", "MLE": "LEU", "MVA": "VAL", "NLE": "LEU",
    "SEC": "CYS", "PYL": "LYS", "FME": "MET", "CAS": "CYS", "CGU": "GLU",
    "DAL": "ALA", "DLE": "LEU", "DVA": "VAL", "DPR": "PRO", "DSN": "SER",
    "ASX": "ASP", "GLX": "GLU", "ALY": "LYS", "SAC": "SER", "TYS": "TYR",
    "CSS": "CYS", "AIB": "ALA", "TRQ": "TRP", "TPQ": "TYR", "YCM": "CYS",
}


def one_letter_to_index(code: str) -> int:
    """Index in ``RESTYPES_WITH_X`` of a one-letter code (after the ambiguity policy).

    Raises:
      KeyError: if ``code`` is not an amino-acid letter.
    """
    c = code.upper()
    c = AMBIGUOUS_CODE_MAP.get(c, c)
    if c == "X":
        return UNK_INDEX
    return RESTYPE_ORDER[c]


def sequence_to_aatype(sequence: str) -> np.ndarray:
    """Map a one-letter sequence to int32 indices [L] (X and unknown -> 20)."""
    return np.array([one_letter_to_index(c) for c in sequence], dtype=np.int32)


def aatype_to_sequence(aatype: np.ndarray) -> str:
    return "".join(RESTYPES_WITH_X[int(i)] for i in aatype)


def three_to_one(resname: str) -> str:
    """One-letter code of a PDB residue name; modified residues map to parents, else X."""
    name = resname.strip().upper()
    name = MODIFIED_RESIDUES.get(name, name)
    return RESTYPE_3TO1.get(name, "X")


# --------------------------------------------------------------------------
# Atoms
# --------------------------------------------------------------------------

# Backbone atom slots of Protein.atom_positions; CB is real where present in
# the file (non-Gly), otherwise filled with the virtual CB by the featuriser.
ATOM_TYPES = ("N", "CA", "C", "O", "CB")
ATOM_ORDER = {a: i for i, a in enumerate(ATOM_TYPES)}
NUM_ATOMS = len(ATOM_TYPES)  # 5
N_IDX, CA_IDX, C_IDX, O_IDX, CB_IDX = range(5)

# --------------------------------------------------------------------------
# Ideal backbone geometry (Engh & Huber 1991), Angstrom and degrees.
# --------------------------------------------------------------------------

BOND_N_CA = 1.458
BOND_CA_C = 1.525
BOND_C_N = 1.329  # peptide bond
BOND_C_O = 1.231

ANGLE_N_CA_C = 111.2  # tau
ANGLE_CA_C_N = 116.2
ANGLE_C_N_CA = 121.7
ANGLE_CA_C_O = 120.1
ANGLE_O_C_N = 123.2  # so that CA-C-O + O-C-N + CA-C-N = 360 (planar carbonyl)

OMEGA_TRANS = 180.0  # degrees

# Virtual C-beta from N, CA, C (ideal tetrahedral geometry; the coefficients
# are those of trRosetta / Yang et al. 2020, which reproduce real CB positions
# to ~0.2 A RMSD):  CB = a*(b x c) + b_coef*b + c_coef*c + CA, b = CA-N, c = C-CA.
VIRTUAL_CB_A = -0.58273431
VIRTUAL_CB_B = 0.56802827
VIRTUAL_CB_C = -0.54067466

# Distance between consecutive CA atoms in a trans peptide (used for gap checks).
CA_CA_TRANS = 3.80
# Consecutive residues whose C(i)-N(i+1) distance exceeds this are not bonded:
# their torsions across the gap are undefined.
PEPTIDE_BOND_MAX = 2.0

# --------------------------------------------------------------------------
# Distogram and torsion bins
# --------------------------------------------------------------------------

# CB-CB distogram as in AlphaFold-CASP13: 64 equal bins over [2, 22) A plus one
# overflow bin for >= 22 A. Distances below 2 A (never physical) fall in bin 0.
DISTOGRAM_MIN = 2.0
DISTOGRAM_MAX = 22.0
DISTOGRAM_NUM_REGULAR = 64
DISTOGRAM_EDGES = np.linspace(DISTOGRAM_MIN, DISTOGRAM_MAX, DISTOGRAM_NUM_REGULAR + 1)
NUM_DIST_BINS = DISTOGRAM_NUM_REGULAR + 1  # 65, last one = overflow
DISTOGRAM_BIN_WIDTH = (DISTOGRAM_MAX - DISTOGRAM_MIN) / DISTOGRAM_NUM_REGULAR
# Representative distance of each bin: the midpoint; the overflow bin is given
# DISTOGRAM_MAX + one bin width (used only for expected distances).
DISTOGRAM_CENTERS = np.concatenate(
    [0.5 * (DISTOGRAM_EDGES[:-1] + DISTOGRAM_EDGES[1:]), [DISTOGRAM_MAX + DISTOGRAM_BIN_WIDTH]]
).astype(np.float32)

# Contact definitions (PDNet / CASP): CB-CB < 8 A, separations by |i-j|.
CONTACT_THRESHOLD = 8.0
SEP_SHORT = (6, 11)
SEP_MEDIUM = (12, 23)
SEP_LONG_MIN = 24

# Torsion bins: 36 bins of 10 degrees over [-180, 180).
NUM_TORSION_BINS = 36
TORSION_EDGES_DEG = np.linspace(-180.0, 180.0, NUM_TORSION_BINS + 1)
TORSION_CENTERS_DEG = (0.5 * (TORSION_EDGES_DEG[:-1] + TORSION_EDGES_DEG[1:])).astype(np.float32)
TORSION_CENTERS_RAD = np.deg2rad(TORSION_CENTERS_DEG).astype(np.float32)


def distance_to_bin(d: np.ndarray) -> np.ndarray:
    """Distogram bin index (int32) of distances in A; overflow -> NUM_DIST_BINS - 1."""
    idx = np.searchsorted(DISTOGRAM_EDGES, np.asarray(d), side="right") - 1
    return np.clip(idx, 0, NUM_DIST_BINS - 1).astype(np.int32)


def angle_to_bin(angle_rad: np.ndarray) -> np.ndarray:
    """Torsion bin index (int32) of angles in radians, wrapped into [-pi, pi)."""
    deg = np.rad2deg(np.asarray(angle_rad))
    deg = (deg + 180.0) % 360.0 - 180.0
    idx = np.floor((deg + 180.0) / (360.0 / NUM_TORSION_BINS)).astype(np.int64)
    return np.clip(idx, 0, NUM_TORSION_BINS - 1).astype(np.int32)

# --------------------------------------------------------------------------
# Inter-residue orientations (trRosetta; Yang et al. 2020, PNAS 117:1496)
# --------------------------------------------------------------------------

# omega_ij = dihedral(CA_i, CB_i, CB_j, CA_j) (symmetric), theta_ij = dihedral(N_i, CA_i,
# CB_i, CB_j) and phi_ij = angle(CA_i, CB_i, CB_j) (both asymmetric). As in trRosetta: 15
# degree bins (24 over [-180, 180) for the dihedrals, 12 over [0, 180] for the planar angle)
# plus a last "no contact" bin for pairs with CB-CB >= ORIENTATION_MAX_DIST.
ORIENTATION_MAX_DIST = 20.0
ORIENTATION_DIHEDRAL_BINS = 24
ORIENTATION_PLANAR_BINS = 12
ORIENTATION_NUM_BINS = {
    "omega": ORIENTATION_DIHEDRAL_BINS + 1,
    "theta": ORIENTATION_DIHEDRAL_BINS + 1,
    "phi": ORIENTATION_PLANAR_BINS + 1,
}

# Secondary structure: DSSP's 8 states (foldnet.data.dssp computes them) and their usual
# 3-state reduction (H, G, I -> helix; E, B -> strand; T, S, coil -> coil).
SS8_STATES = "HGIEBTS-"
SS3_STATES = "HEC"
NUM_SS8 = len(SS8_STATES)
SS8_COIL = SS8_STATES.index("-")
SS8_TO_SS3 = np.array([0, 0, 0, 1, 1, 2, 2, 2], np.int32)
