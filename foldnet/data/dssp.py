"""DSSP secondary structure from backbone coordinates (Kabsch & Sander 1983), numpy only.

The secondary-structure head's targets are computed here from the cached backbone, so
every chain of every source gets labels without an external program. The assignment
follows Kabsch & Sander (1983, Biopolymers 22:2577, "Dictionary of protein secondary
structure") as mkdssp 4.x implements it (PDB-REDO/dssp, libdssp ``dssp.cpp``), step by
step; the tests compare it residue by residue with recorded mkdssp 4.2.2 output.

1. Residues. A residue takes part when it has N, CA and C. Consecutive residues are
   peptide-bonded when they are neighbours in the input and C(i)-N(i+1) <= 2.5 A
   (mkdssp's ``kMaxPeptideBondLength``); anything else is a chain break, which no
   turn, helix, bridge, ladder or bend may span.
2. Carbonyl O. Used as given where the input has it. Where it lacks it (ProteinNet has
   N, CA, C only) O is placed in the peptide plane of CA(i), C(i), N(i+1), trans to N(i+1)
   across the CA-C bond (torsion N(i+1)-CA-C-O = 180 deg), with the Engh & Huber C=O
   bond 1.231 A and CA-C-O angle 120.1 deg (``rc.BOND_C_O``, ``rc.ANGLE_CA_C_O``); the
   O-C-N angle is then 360 - CA-C-N - CA-C-O, ~123.7 deg for an ideal peptide. The last
   residue before a break has no N(i+1): its O is put in the N-CA-C plane cis to N(i)
   (psi = 180 deg, extended), a guess that cannot change its own state (the last residue of
   a segment is always coil) and rarely any other.
3. Amide H (DSSP's rule, not the file's H): H(i) = N(i) + unit(C(i-1) - O(i-1)) * 1.0 A,
   the direction of the previous carbonyl; the first residue, and prolines, keep H = N.
   As in mkdssp 4.x the previous residue is the previous one in the list even across a
   break.
4. H-bond energy (K&S eq. 1): E = q1 q2 f (1/r(ON) + 1/r(CH) - 1/r(OH) - 1/r(CN)), q1 q2 f =
   0.42 * 0.20 * 332 = 27.888 kcal/mol A, for donor N-H and acceptor C=O whose CA atoms are
   within 9 A; any of the four distances under 0.5 A gives -9.9 kcal/mol; E is rounded to
   0.001 (mkdssp's "DSSP compatibility mode"). Prolines donate nothing; residue i+1 is not
   tried as a donor to i. Each donor keeps its two lowest energies; Hbond(acceptor i ->
   donor j) holds when i is one of them with E < -0.5 kcal/mol.
5. n-turn(i), n = 3, 4, 5: Hbond(i, i+n) and no break from i to i+n.
6. Minimal helices (K&S): two consecutive n-turns at i-1 and i make residues i .. i+n-1 a
   helix: H for n = 4 (set unconditionally), then G for n = 3 where all of i .. i+2 are still
   coil or G, then I for n = 5 where all of i .. i+4 are coil, I or H. mkdssp >= 2.2 (and
   4.x, followed here) prefers pi helices: I overrides H, not E, B or G; the original K&S
   priority H > I is the ``prefer_pi=False`` variant.
7. Bridges (K&S): for i >= 1 and j >= i+3, each with a bonded neighbour on both sides,
   parallel if [Hbond(i-1, j) and Hbond(j, i+1)] or [Hbond(j-1, i) and Hbond(i, j+1)],
   antiparallel if [Hbond(i, j) and Hbond(j, i)] or [Hbond(i-1, j+1) and Hbond(j-1, i+1)].
   Consecutive bridges of one type extend a ladder; ladders of one type whose ends are at
   most one gap of < 3 residues on one strand and < 6 on the other apart join across a
   beta bulge (mkdssp's rule, unsigned arithmetic included). Every residue from the first
   to the last of a ladder's strands is E when the ladder has more than one bridge, else B;
   E wins over B. Beta is assigned before helices, so H (set unconditionally) wins over E.
8. Turn T: a coil residue inside some n-turn (i-k for 1 <= k < n). Bend S: a remaining
   coil residue whose CA(i-2)-CA(i)-CA(i+2) direction change (kappa, the angle between
   CA(i)-CA(i-2) and CA(i+2)-CA(i)) exceeds 70 deg, with no break from i-2 to i+2.

Priority therefore is H > B/E > G > I > T > S as in K&S, but for pi helices (4.x: I > H). mkdssp
4.x also writes P (polyproline II) on coil residues only; the 8-state alphabet here has
no P, so those residues are coil, exactly as mkdssp's eight K&S states have them.

All pairwise steps are vectorised; only the ladder bookkeeping loops, over bridges.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from foldnet.common import residue_constants as rc

# K&S eq. 1: partial charges q1 = 0.42 e (C=O), q2 = 0.20 e (N-H), f = 332 A kcal/mol / e^2.
# mkdssp keeps the product as a float32 constant; so does this module (rounding matches).
COUPLING = float(np.float32(0.42 * 0.20 * 332.0))  # 27.888 kcal/mol * A
HBOND_MAX_ENERGY = -0.5  # kcal/mol: a bond needs E below this (K&S)
HBOND_MIN_ENERGY = -9.9  # kcal/mol: floor, also the value for atoms closer than MIN_DISTANCE
MIN_DISTANCE = 0.5  # A
CA_CUTOFF = 9.0  # A: mkdssp's kMinimalCADistance, pairs farther apart are not tried
PEPTIDE_BOND_MAX = 2.5  # A: mkdssp's kMaxPeptideBondLength (C(i)-N(i+1))
BEND_MIN_KAPPA = 70.0  # degrees (K&S)
NH_LENGTH = 1.0  # A: DSSP's N-H bond

_SS = {s: i for i, s in enumerate(rc.SS8_STATES)}
_H, _G, _I, _E, _B, _T, _S, _COIL = (_SS[s] for s in "HGIEBTS-")
_PRO = rc.RESTYPE_ORDER["P"]


class _Backbone(NamedTuple):
    """The residues that take part (N, CA, C present), in input order."""

    index: np.ndarray  # [M] int: their rows in the input
    n: np.ndarray  # [M, 3] float32 N
    ca: np.ndarray  # [M, 3] float32 CA
    c: np.ndarray  # [M, 3] float32 C
    o: np.ndarray  # [M, 3] float32 O, given or placed
    proline: np.ndarray  # [M] bool: no amide H, so never a donor
    segment: np.ndarray  # [M] int: residues k, l with segment[k] == segment[l] have no break between


def _check(atom_positions, atom_mask, aatype):
    pos = np.asarray(atom_positions)
    mask = np.asarray(atom_mask)
    if pos.ndim != 3 or pos.shape[1:] != (rc.NUM_ATOMS, 3):
        raise ValueError(f"secondary_structure: atom_positions must be [L, {rc.NUM_ATOMS}, 3] "
                         f"({', '.join(rc.ATOM_TYPES)}), got shape {pos.shape}")
    if mask.shape != pos.shape[:2]:
        raise ValueError(f"secondary_structure: atom_mask must be [L, {rc.NUM_ATOMS}] = {pos.shape[:2]}, "
                         f"got shape {mask.shape}")
    if aatype is not None:
        aatype = np.asarray(aatype)
        if aatype.shape != pos.shape[:1]:
            raise ValueError(f"secondary_structure: aatype must be [L] = {pos.shape[:1]}, got shape {aatype.shape}")
    return pos, mask, aatype


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


def _in_plane(c: np.ndarray, ca: np.ndarray, ref: np.ndarray, side: float) -> np.ndarray:
    """O at |C-O| = rc.BOND_C_O, angle CA-C-O = rc.ANGLE_CA_C_O, in the plane of CA, C, ref:
    on ref's side of the CA-C line (side=+1, torsion ref-CA-C-O = 0) or opposite (-1, 180 deg)."""
    u = _unit(ca - c)
    r = ref - c
    w = _unit(r - np.sum(r * u, axis=-1, keepdims=True) * u)
    theta = math.radians(rc.ANGLE_CA_C_O)
    return c + rc.BOND_C_O * (math.cos(theta) * u + side * math.sin(theta) * w)


def place_carbonyl_oxygens(n: np.ndarray, ca: np.ndarray, c: np.ndarray, bonded: np.ndarray) -> np.ndarray:
    """Carbonyl O of each residue from the backbone (module docstring, step 2).

    Args:
      n, ca, c: [M, 3] backbone atoms of consecutive residues (Angstrom).
      bonded: [M - 1] bool, residue k is peptide-bonded to k + 1.
    Returns:
      [M, 3] O positions: in the peptide plane trans to N(k+1) where bonded, else in the
      N-CA-C plane cis to N(k) (an extended-chain guess for a segment's last residue).
    """
    m = len(n)
    bonded = np.asarray(bonded, bool)
    if bonded.shape != (max(m - 1, 0),):
        raise ValueError(f"place_carbonyl_oxygens: bonded must be [{max(m - 1, 0)}], got shape {bonded.shape}")
    has_next = np.zeros(m, bool)
    has_next[:-1] = bonded
    next_n = np.concatenate([n[1:], n[-1:]], axis=0) if m else n
    o_mid = _in_plane(c, ca, next_n, -1.0)
    o_end = _in_plane(c, ca, n, +1.0)
    return np.where(has_next[:, None], o_mid, o_end)


def _backbone(pos: np.ndarray, mask: np.ndarray, aatype: Optional[np.ndarray]) -> _Backbone:
    atoms = pos[:, [rc.N_IDX, rc.CA_IDX, rc.C_IDX]]
    keep = np.all(mask[:, [rc.N_IDX, rc.CA_IDX, rc.C_IDX]] > 0, axis=1) & np.all(np.isfinite(atoms), axis=(1, 2))
    index = np.nonzero(keep)[0]
    # mkdssp's points are float32; so are these, so distances and energies round alike.
    n, ca, c = (pos[index, k].astype(np.float32) for k in (rc.N_IDX, rc.CA_IDX, rc.C_IDX))
    bonded = (np.diff(index) == 1) & (np.linalg.norm(c[:-1] - n[1:], axis=-1) <= PEPTIDE_BOND_MAX)
    o = pos[index, rc.O_IDX].astype(np.float32)
    has_o = (mask[index, rc.O_IDX] > 0) & np.all(np.isfinite(o), axis=-1)
    if not np.all(has_o):
        o = np.where(has_o[:, None], o, place_carbonyl_oxygens(n, ca, c, bonded).astype(np.float32))
    proline = np.zeros(len(index), bool) if aatype is None else np.asarray(aatype)[index] == _PRO
    segment = np.concatenate([[0], np.cumsum(~bonded)]).astype(np.int64)
    return _Backbone(index, n, ca, c, o, proline, segment)


def _amide_hydrogens(bb: _Backbone) -> np.ndarray:
    """[M, 3] H(i) = N(i) + unit(C(i-1) - O(i-1)) (DSSP); N for the first residue and prolines."""
    h = bb.n.copy()
    if len(h) > 1:
        step = bb.c[:-1] - bb.o[:-1]
        step = step / np.linalg.norm(step, axis=-1, keepdims=True).astype(np.float32)
        h[1:] = np.where(bb.proline[1:, None], bb.n[1:], bb.n[1:] + step)
    return h


def hbond_energies(bb: _Backbone) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(donor [P], acceptor [P], energy [P] kcal/mol) of every tried N-H..O=C pair (steps 3-4)."""
    ca = bb.ca.astype(np.float64)
    d2 = np.sum((ca[:, None] - ca[None]) ** 2, axis=-1)
    i, j = np.nonzero(np.triu(d2 <= CA_CUTOFF**2, k=1))
    back = j != i + 1  # mkdssp never tries residue i+1 as a donor to i
    donor = np.concatenate([i, j[back]])
    acceptor = np.concatenate([j, i[back]])
    keep = ~bb.proline[donor]
    donor, acceptor = donor[keep], acceptor[keep]
    h = _amide_hydrogens(bb)

    def dist(a, b):  # float32 distances, as mkdssp's
        return np.sqrt(np.sum((a - b) ** 2, axis=-1, dtype=np.float32)).astype(np.float64)

    r_ho = dist(h[donor], bb.o[acceptor])
    r_hc = dist(h[donor], bb.c[acceptor])
    r_nc = dist(bb.n[donor], bb.c[acceptor])
    r_no = dist(bb.n[donor], bb.o[acceptor])
    close = np.minimum(np.minimum(r_ho, r_hc), np.minimum(r_nc, r_no)) < MIN_DISTANCE
    with np.errstate(divide="ignore"):
        e = COUPLING * (1.0 / r_no + 1.0 / r_hc - 1.0 / r_ho - 1.0 / r_nc)
    e = np.where(close, HBOND_MIN_ENERGY, e)
    e = np.sign(e) * np.floor(np.abs(e) * 1000.0 + 0.5) / 1000.0  # C's round(): half away from zero
    e = np.maximum(e, HBOND_MIN_ENERGY)
    return donor, acceptor, e


def hbond_matrix(bb: _Backbone) -> np.ndarray:
    """[M, M] bool, hb[d, a]: N-H of d bonds to C=O of a (each donor's two best, E < -0.5)."""
    m = len(bb.index)
    donor, acceptor, e = hbond_energies(bb)
    # mkdssp keeps, per donor, the two lowest energies met in order of acceptor index
    # (strict <, so ties go to the lower index): a stable sort by (donor, energy, acceptor).
    order = np.lexsort((acceptor, e, donor))
    donor, acceptor, e = donor[order], acceptor[order], e[order]
    first = np.searchsorted(donor, donor, side="left")
    rank = np.arange(len(donor)) - first
    ok = (rank < 2) & (e < HBOND_MAX_ENERGY)
    hb = np.zeros((m, m), bool)
    hb[donor[ok], acceptor[ok]] = True
    return hb


def _turns(hb: np.ndarray, segment: np.ndarray) -> dict[int, np.ndarray]:
    """{n: [M] bool}: n-turn at i = Hbond(C=O of i, N-H of i+n), no break in i .. i+n (step 5)."""
    m = len(segment)
    turns = {}
    for n in (3, 4, 5):
        t = np.zeros(m, bool)
        if m > n:
            k = np.arange(m - n)
            t[: m - n] = hb[k + n, k] & (segment[k] == segment[k + n])
        turns[n] = t
    return turns


def _bridges(hb: np.ndarray, segment: np.ndarray) -> list[tuple[int, int, bool]]:
    """Bridge pairs (i, j, parallel) with j >= i + 3 in (i, j) order (K&S, step 7)."""
    m = len(segment)
    if m < 5:
        return []
    # Rows: i = 1 .. m-2, columns: j = 1 .. m-2; hb[x, y] = N-H of x to C=O of y.
    inner = slice(1, m - 1)
    up, down = slice(2, m), slice(0, m - 2)  # i+1, i-1 (rows) / j+1, j-1 (columns)
    hbt = hb.T
    parallel = (hb[up, inner] & hbt[down, inner]) | (hbt[inner, up] & hb[inner, down])
    # hb[up, inner][i, j] = hb[i+1, j]; hbt[down, inner][i, j] = hb[j, i-1];
    # hbt[inner, up][i, j] = hb[j+1, i]; hb[inner, down][i, j] = hb[i, j-1].
    anti = (hb[up, down] & hbt[down, up]) | (hbt[inner, inner] & hb[inner, inner])
    # hb[up, down][i, j] = hb[i+1, j-1]; hbt[down, up][i, j] = hb[j+1, i-1]; the pair (i, j) both ways.
    k = np.arange(1, m - 1)
    flank = segment[k - 1] == segment[k + 1]  # residue and both neighbours unbroken
    ii, jj = np.meshgrid(k, k, indexing="ij")
    allowed = (jj >= ii + 3) & flank[:, None] & flank[None, :]
    kind = np.where(parallel, 1, np.where(anti, 2, 0)) * allowed
    ri, rj = np.nonzero(kind)
    return [(int(a) + 1, int(b) + 1, bool(kind[a, b] == 1)) for a, b in zip(ri, rj)]


def _u32(x: int) -> int:
    """mkdssp compares residue-number differences as uint32: negative ones wrap to huge."""
    return x if x >= 0 else x + (1 << 32)


def _ladders(bridges: list[tuple[int, int, bool]], segment: np.ndarray) -> list[tuple[list[int], list[int], bool]]:
    """Bridges -> ladders (consecutive bridges) -> ladders joined across beta bulges (step 7)."""
    ladders: list[tuple[list[int], list[int], bool]] = []
    open_end: dict[tuple[bool, int, int], int] = {}  # (parallel, last i, j end it grows at) -> ladder
    for i, j, par in bridges:
        key = (par, i - 1, j - 1 if par else j + 1)
        at = open_end.pop(key, None)
        if at is None:
            at = len(ladders)
            ladders.append(([i], [j], par))
        else:
            li, lj, _ = ladders[at]
            li.append(i)
            if par:
                lj.append(j)
            else:
                lj.insert(0, j)
        li, lj, _ = ladders[at]
        open_end[(par, li[-1], lj[-1] if par else lj[0])] = at
    ladders.sort(key=lambda ld: ld[0][0])  # stable: equal starts keep their order
    a = 0
    while a < len(ladders):
        b = a + 1
        while b < len(ladders):
            ia, ja, par = ladders[a]
            ib, jb, par_b = ladders[b]
            ibi, iei, jbi, jei = ia[0], ia[-1], ja[0], ja[-1]
            ibj, iej, jbj, jej = ib[0], ib[-1], jb[0], jb[-1]
            if (par != par_b or segment[min(ibi, ibj)] != segment[max(iei, iej)]
                    or segment[min(jbi, jbj)] != segment[max(jei, jej)]
                    or _u32(ibj - iei) >= 6 or (iei >= ibj and ibi <= iej)):
                b += 1
                continue
            gap_i = _u32(ibj - iei)
            gap_j = _u32(jbj - jei) if par else _u32(jbi - jej)
            if (gap_j < 6 and gap_i < 3) or gap_j < 3:  # a beta bulge: one ladder
                ia.extend(ib)
                if par:
                    ja.extend(jb)
                else:
                    ja[:0] = jb
                del ladders[b]
            else:
                b += 1
        a += 1
    return ladders


def _kappa_bends(ca: np.ndarray, index: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """[M] bool: kappa(i) = angle(CA(i) - CA(i-2), CA(i+2) - CA(i)) > 70 deg, unbroken i-2 .. i+2."""
    m = len(ca)
    bend = np.zeros(m, bool)
    if m < 5:
        return bend
    k = np.arange(2, m - 2)
    ok = (segment[k - 2] == segment[k + 2]) & (index[k + 2] - index[k - 2] == 4)
    v1 = (ca[k] - ca[k - 2]).astype(np.float64)
    v2 = (ca[k + 2] - ca[k]).astype(np.float64)
    cos = np.sum(v1 * v2, -1) / np.maximum(np.linalg.norm(v1, axis=-1) * np.linalg.norm(v2, axis=-1), 1e-12)
    kappa = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    bend[k] = ok & (kappa > BEND_MIN_KAPPA)
    return bend


def _windows(start: np.ndarray, n: int) -> np.ndarray:
    """[M] bool: residue r lies in some window [s, s + n) with start[s] True."""
    m = len(start)
    out = np.zeros(m, bool)
    for k in range(min(n, m)):
        out[k:] |= start[: m - k]
    return out


def _all_in_window(ok: np.ndarray, n: int) -> np.ndarray:
    """[M] bool at s: ok[s .. s+n-1] all True (False where the window runs off the end)."""
    m = len(ok)
    out = np.zeros(m, bool)
    if m >= n:
        w = np.ones(m - n + 1, bool)
        for k in range(n):
            w &= ok[k : m - n + 1 + k]
        out[: m - n + 1] = w
    return out


def _assign(bb: _Backbone, prefer_pi: bool) -> np.ndarray:
    m = len(bb.index)
    ss = np.full(m, _COIL, np.int32)
    hb = hbond_matrix(bb)

    # Step 7: beta first (mkdssp's order), so that H later overrides E.
    for li, lj, _ in _ladders(_bridges(hb, bb.segment), bb.segment):
        code = _E if len(li) > 1 else _B
        for lo, hi in ((li[0], li[-1]), (lj[0], lj[-1])):
            rng = slice(lo, hi + 1)
            ss[rng] = np.where(ss[rng] == _E, _E, code)

    # Step 6: minimal helices from two consecutive n-turns at i-1 and i.
    turns = _turns(hb, bb.segment)
    r = np.arange(m)

    def helix_starts(n: int, last: int) -> np.ndarray:  # i in [1, last): turn at i-1 and at i
        t = turns[n]
        s = np.zeros(m, bool)
        s[1:] = t[1:] & t[:-1]
        return s & (r < last)

    ss[_windows(helix_starts(4, m - 4), 4)] = _H
    start = helix_starts(3, m - 3) & _all_in_window(ss == _COIL, 3)
    ss[_windows(start, 3)] = _G
    free = (ss == _COIL) | (ss == _H) if prefer_pi else ss == _COIL
    start = helix_starts(5, m - 5) & _all_in_window(free, 5)
    ss[_windows(start, 5)] = _I

    # Step 8: turns and bends on what is still coil (never the first or last residue).
    inside = np.zeros(m, bool)
    for n, t in turns.items():
        after = np.zeros(m, bool)
        after[1:] = t[:-1]
        inside |= _windows(after, n - 1)  # residues i+1 .. i+n-1 of an n-turn at i
    inner = (r >= 1) & (r < m - 1) & (ss == _COIL)
    ss[inner & inside] = _T
    ss[inner & ~inside & _kappa_bends(bb.ca, bb.index, bb.segment)] = _S
    return ss


def secondary_structure(atom_positions: np.ndarray, atom_mask: np.ndarray, aatype: Optional[np.ndarray] = None,
                        *, prefer_pi: bool = True) -> np.ndarray:
    """DSSP 8-state secondary structure of one chain (Kabsch & Sander 1983; module docstring).

    Args:
      atom_positions: [L, 5, 3] N, CA, C, O, CB (``rc.ATOM_TYPES``) in Angstrom, as in
        ``Protein.atom_positions``; only N, CA, C and O are used.
      atom_mask: [L, 5] 1 where an atom is present. Residues without N, CA or C are coil
        and break the chain; a missing O is placed from the backbone.
      aatype: [L] residue types (``rc.RESTYPES_WITH_X``) or None. Prolines have no amide
        H and donate no H-bond; without aatype every residue may donate.
      prefer_pi: mkdssp >= 2.2 behaviour, pi helices (I) override alpha helices (H);
        False gives the original K&S priority H > I.

    Returns:
      [L] int32 codes into ``rc.SS8_STATES`` ("HGIEBTS-"; coil = ``rc.SS8_COIL``).

    Raises:
      ValueError: arrays of the wrong shape (the message names the shape).

    Examples:
      >>> ss = secondary_structure(protein.atom_positions, protein.atom_mask, protein.aatype)
      >>> to_string(ss)  # e.g. "--HHHHHHHHT--EEEE-..."
    """
    pos, mask, aatype = _check(atom_positions, atom_mask, aatype)
    out = np.full(len(pos), rc.SS8_COIL, np.int32)
    bb = _backbone(pos, mask, aatype)
    if len(bb.index):
        out[bb.index] = _assign(bb, prefer_pi)
    return out


def to_string(codes: np.ndarray) -> str:
    """SS8 codes [L] -> DSSP letters, coil as '-'."""
    return "".join(rc.SS8_STATES[int(k)] for k in np.asarray(codes))


def to_three_state(codes: np.ndarray) -> np.ndarray:
    """SS8 codes [L] -> 3-state codes into ``rc.SS3_STATES`` (H, G, I -> H; E, B -> E; else C)."""
    return rc.SS8_TO_SS3[np.asarray(codes)]
