"""Internal coordinates -> backbone Cartesian coordinates with NeRF, in pure jnp (f32).

NeRF (Natural Extension Reference Frame; Parsons, Holmes, Rojas, Tsai & Strauss 2005,
J. Comput. Chem. 26:1063, "Practical conversion from torsion space to Cartesian space
for in silico protein synthesis") places atom D from the three preceding atoms A, B, C
and the internal coordinates (bond |CD|, angle BCD, torsion ABCD):

    D2 = b * [-cos(theta), sin(theta) cos(tau), sin(theta) sin(tau)]     (local "SRF" point)
    bc = unit(C - B);  n = unit((B - A) x bc);  M = [bc, n x bc, n]       (columns)
    D  = C + M @ D2

The backbone is the atom sequence N0, CA0, C0, N1, CA1, C1, ...; residue i -> i+1 adds
N(i+1) (bond C-N, angle CA-C-N, torsion psi_i), CA(i+1) (bond N-CA, angle C-N-CA,
torsion omega_i) and C(i+1) (bond CA-C, angle N-CA-C, torsion phi_(i+1)).

Three chain builders, same result (to f32 rounding):

* ``"scan"``: the plain sequential recursion as one ``lax.scan`` over the 3L atoms.
* ``"frames"``: each atom's NeRF frame is its predecessor's times a rotation fixed by the
  atom's own (bond, angle, torsion) (``local_transforms``), so the chain is one prefix
  product of rigid transforms, composed with ``lax.associative_scan``: sequential depth
  log2(3L). The folding default: with it a 300-residue folding step runs ~330 operations per
  CPU device instead of ~2,500 with pNeRF's in-fragment scan (XLA's trace), on the CPU each
  costing more to launch than to compute.
* ``"pnerf"``: the parallel fragment method of AlQuraishi (2019, Bioinformatics 35:4842,
  "Parallelized Natural Extension Reference Frame"): the chain is cut into fragments
  that are each built in their own reference frame (all fragments at once, vmapped),
  then assembled. Because NeRF is equivariant under rigid motions, fragment m+1 is
  placed by the rigid transform defined by the last three atoms of fragment m; we
  compose those transforms with ``lax.associative_scan`` (log-depth) instead of
  pNeRF's sequential loop. Sequential depth: fragment_size + log2(#fragments)
  instead of 3L, which is what makes long chains fast on CPU and accelerators.

Folding differentiates the chain in (phi, psi) only: ``backbone_from_phi_psi`` builds it with
any of the three and returns the gradient in closed form (``torsion_gradients``: each torsion
turns the rest of the chain rigidly about its bond, so the gradient is a suffix sum of atom
moments, O(L)) instead of reverse-mode through the builder.

Carbonyl O and virtual CB are placed afterwards, vectorised over residues: O lies in
the peptide plane anti to N(i+1), i.e. torsion N-CA-C-O = psi + 180 degrees with the
Engh & Huber C=O bond and CA-C-O angle; CB is the ideal virtual CB (``virtual_cb``).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from foldnet.common import residue_constants as rc
from foldnet.geometry.dihedral import bond_angle, dihedral
from foldnet.geometry.vectors import check_last_dim, norm, normalize, virtual_cb

# 3D rotations in full f32: TPU/GPU matmuls and einsums default to bf16 passes, and NeRF chains
# hundreds of them, so the error would accumulate along the chain (alphafold's r3.py writes such
# products out for the same reason). On CPU the default already is f32: results there are unchanged.
_HIGHEST = jax.lax.Precision.HIGHEST

METHODS = ("frames", "pnerf", "scan")

# A reference triple whose NeRF frame is the identity with origin 0:
# unit(C - B) = x, unit((B - A) x x) = z, so M = I. Fragments are built from it.
# numpy, not jnp: a module-level jnp array would start the JAX backend at import time, before
# the CLIs can choose the number of CPU devices (foldnet.cli.runtime).
_INIT_TRIPLE = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)


def ideal_bond_lengths(length: int) -> jnp.ndarray:
    """Engh & Huber bond lengths [L, 3] (N-CA, CA-C, C-N(next)) in Angstrom."""
    row = jnp.array([rc.BOND_N_CA, rc.BOND_CA_C, rc.BOND_C_N], jnp.float32)
    return jnp.broadcast_to(row, (length, 3))


def ideal_bond_angles(length: int) -> jnp.ndarray:
    """Engh & Huber bond angles [L, 3] (N-CA-C, CA-C-N(next), C-N(next)-CA(next)) in radians."""
    row = jnp.deg2rad(jnp.array([rc.ANGLE_N_CA_C, rc.ANGLE_CA_C_N, rc.ANGLE_C_N_CA], jnp.float32))
    return jnp.broadcast_to(row, (length, 3))


def srf_point(bond: jnp.ndarray, angle: jnp.ndarray, torsion: jnp.ndarray) -> jnp.ndarray:
    """NeRF local ("SRF") coordinates of the new atom (Parsons et al. 2005, eq. 2).

    Args:
      bond: [...] bond length |CD| (Angstrom).
      angle: [...] bond angle B-C-D (radians).
      torsion: [...] torsion A-B-C-D (radians).
    Returns:
      [..., 3] position of D in the frame of (A, B, C).
    """
    bond, angle, torsion = jnp.broadcast_arrays(bond, angle, torsion)
    return jnp.stack(
        [
            -bond * jnp.cos(angle),
            bond * jnp.sin(angle) * jnp.cos(torsion),
            bond * jnp.sin(angle) * jnp.sin(torsion),
        ],
        axis=-1,
    )


def frame(a: jnp.ndarray, b: jnp.ndarray, c: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """NeRF reference frame of three consecutive atoms (Parsons et al. 2005).

    Args:
      a, b, c: [..., 3] atom positions.
    Returns:
      (M [..., 3, 3] rotation whose columns are bc, n x bc, n; origin c [..., 3]).
    """
    bc = normalize(c - b)
    n = normalize(jnp.cross(b - a, bc))
    m = jnp.stack([bc, jnp.cross(n, bc), n], axis=-1)
    return m, c


def place_atom(
    a: jnp.ndarray, b: jnp.ndarray, c: jnp.ndarray, bond: jnp.ndarray, angle: jnp.ndarray, torsion: jnp.ndarray
) -> jnp.ndarray:
    """Place atom D from A, B, C and (|CD|, angle BCD, torsion ABCD) with NeRF.

    Args:
      a, b, c: [..., 3] the three preceding atoms.
      bond, angle, torsion: [...] internal coordinates (Angstrom, radians).
    Returns:
      [..., 3] position of D; ``dihedral(a, b, c, D) == torsion``.
    """
    for name, x in (("a", a), ("b", b), ("c", c)):
        check_last_dim(f"place_atom {name}", x)
    m, origin = frame(a, b, c)
    return origin + jnp.einsum("...ij,...j->...i", m, srf_point(bond, angle, torsion))


def _atom_internals(
    torsions: jnp.ndarray, bond_lengths: jnp.ndarray, bond_angles: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per-atom (bond, angle, torsion) [3L] for the atom sequence N0, CA0, C0, N1, ...

    The first residue is placed from the reference triple with arbitrary (ideal) values
    for the internal coordinates that involve atoms before N0; they only fix the
    global pose, which is arbitrary anyway.
    """
    phi, psi, omega = torsions[:, 0], torsions[:, 1], torsions[:, 2]

    def prev(x, first):
        return jnp.concatenate([jnp.full((1,), first, jnp.float32), x[:-1]])

    bond = jnp.stack(
        [prev(bond_lengths[:, 2], rc.BOND_C_N), bond_lengths[:, 0], bond_lengths[:, 1]], axis=-1
    )
    angle = jnp.stack(
        [
            prev(bond_angles[:, 1], math.radians(rc.ANGLE_CA_C_N)),
            prev(bond_angles[:, 2], math.radians(rc.ANGLE_C_N_CA)),
            bond_angles[:, 0],
        ],
        axis=-1,
    )
    tors = jnp.stack([prev(psi, math.pi), prev(omega, math.pi), phi], axis=-1)
    return bond.reshape(-1), angle.reshape(-1), tors.reshape(-1)


def _extend_scan(points: jnp.ndarray, init: jnp.ndarray) -> jnp.ndarray:
    """Sequential NeRF over local points [K, 3] starting from the triple ``init`` [3, 3]."""

    def step(carry, d2):
        a, b, c = carry
        m, origin = frame(a, b, c)
        d = origin + jnp.matmul(m, d2, precision=_HIGHEST)
        return (b, c, d), d

    _, xs = lax.scan(step, (init[0], init[1], init[2]), points)
    return xs


def chain_scan(points: jnp.ndarray) -> jnp.ndarray:
    """NeRF chain from local points, one ``lax.scan`` over the atoms (Parsons et al. 2005).

    Args:
      points: [K, 3] SRF points (``srf_point``) of atoms 0..K-1.
    Returns:
      [K, 3] Cartesian positions (atom 0 placed from the identity reference triple).
    """
    check_last_dim("chain_scan points", points)
    return _extend_scan(points.astype(jnp.float32), _INIT_TRIPLE)


def _compose(first, second):
    """Rigid transforms (R, t) batched on axis 0: apply ``second`` then ``first``."""
    r1, t1 = first
    r2, t2 = second
    r = jnp.einsum("...ij,...jk->...ik", r1, r2, precision=_HIGHEST)
    return r, jnp.einsum("...ij,...j->...i", r1, t2, precision=_HIGHEST) + t1


def chain_fragments(points: jnp.ndarray, fragment_size: Optional[int] = None) -> jnp.ndarray:
    """NeRF chain built as parallel fragments, then assembled (pNeRF, AlQuraishi 2019).

    Args:
      points: [K, 3] SRF points of atoms 0..K-1.
      fragment_size: atoms per fragment; ``ceil(sqrt(K))`` rounded up to a multiple of 3
        when None (balances the in-fragment scan against the number of fragments).
    Returns:
      [K, 3] Cartesian positions, equal (to f32 rounding) to ``chain_scan(points)``.
    """
    check_last_dim("chain_fragments points", points)
    k = points.shape[0]
    if fragment_size is None:
        fragment_size = max(3, 3 * math.ceil(math.sqrt(k) / 3))
    if fragment_size < 1:
        raise ValueError(f"chain_fragments: fragment_size must be >= 1, got {fragment_size}")
    n_frag = -(-k // fragment_size)
    pad = n_frag * fragment_size - k
    # Padding atoms (ideal-ish local points) come after the last real atom; dropped below.
    filler = jnp.broadcast_to(jnp.array([0.5, 1.0, 0.5], jnp.float32), (pad, 3))
    pts = jnp.concatenate([points.astype(jnp.float32), filler]).reshape(n_frag, fragment_size, 3)
    local = jax.vmap(lambda p: _extend_scan(p, _INIT_TRIPLE))(pts)  # [F, S, 3]
    if n_frag == 1:
        return local[0, :k]
    # Frame at the end of each fragment, in that fragment's own coordinates.
    if fragment_size >= 3:
        tail = local[:, -3:]
    else:  # tiny fragments: the last three atoms straddle fragments; fall back to scan
        return chain_scan(points)
    r_end, t_end = frame(tail[:, 0], tail[:, 1], tail[:, 2])  # [F, 3, 3], [F, 3]
    # Fragment m+1 sits in the frame T_0 o T_1 o ... o T_m; fragment 0 in the identity.
    r_cum, t_cum = lax.associative_scan(_compose, (r_end[:-1], t_end[:-1]))
    eye = jnp.eye(3, dtype=jnp.float32)[None]
    r_all = jnp.concatenate([eye, r_cum])
    t_all = jnp.concatenate([jnp.zeros((1, 3), jnp.float32), t_cum])
    placed = jnp.einsum("fij,fsj->fsi", r_all, local, precision=_HIGHEST) + t_all[:, None, :]
    return placed.reshape(-1, 3)[:k]


def local_transforms(
    bond: jnp.ndarray, angle: jnp.ndarray, torsion: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Rigid transform from each atom's NeRF frame to the next atom's (closed form).

    NeRF places atom d at ``c + M_c srf(d)`` and the frame of (b, c, d) is ``M_d = M_c Q_d``
    with ``Q_d``'s columns the unit bond ``u = srf(d)/|srf(d)|`` = (-cos a, sin a cos t,
    sin a sin t), ``n x u`` and ``n = e_x x u / |e_x x u|`` = (0, -sin t, cos t) in c's frame
    (``frame``'s definition; ``c - b`` is ``e_x`` there). Both depend on the atom's own
    internal coordinates only, so the chain is a product of per-atom transforms.

    Args:
      bond, angle, torsion: [...] internal coordinates of each atom (Angstrom, radians).
    Returns:
      (Q [..., 3, 3] rotation, t [..., 3] = srf(d)) of each atom.
    """
    ca, sa = jnp.cos(angle), jnp.sin(angle)
    ct, st = jnp.cos(torsion), jnp.sin(torsion)
    zero = jnp.zeros_like(ca)
    q = jnp.stack(
        [
            jnp.stack([-ca, -sa, zero], axis=-1),
            jnp.stack([sa * ct, -ca * ct, -st], axis=-1),
            jnp.stack([sa * st, -ca * st, ct], axis=-1),
        ],
        axis=-2,
    )
    return q, bond[..., None] * q[..., 0]


def chain_frames(bond: jnp.ndarray, angle: jnp.ndarray, torsion: jnp.ndarray) -> jnp.ndarray:
    """NeRF chain as a prefix product of per-atom rigid transforms (``local_transforms``).

    Atom k sits at the translation of ``T_0 o T_1 o ... o T_k`` (atom 0 placed from the
    identity reference triple, as in ``chain_scan``), composed with ``lax.associative_scan``:
    sequential depth log2(K) for every atom, not pNeRF's fragment_size + log2(#fragments).
    On the CPU that is what matters: pNeRF's in-fragment scan (forward and backward) made a
    300-residue folding step ~2,500 small operations per device, ~330 with this builder.

    Args:
      bond, angle, torsion: [K] internal coordinates of atoms 0..K-1 (``srf_point``'s).
    Returns:
      [K, 3] Cartesian positions, equal (to f32 rounding) to ``chain_scan`` of their SRF points.
    """
    q, t = local_transforms(bond.astype(jnp.float32), angle.astype(jnp.float32), torsion.astype(jnp.float32))
    _, positions = lax.associative_scan(_compose, (q, t))
    return positions


def build_backbone(
    torsions: jnp.ndarray,
    bond_lengths: Optional[jnp.ndarray] = None,
    bond_angles: Optional[jnp.ndarray] = None,
    method: str = "pnerf",
    fragment_size: Optional[int] = None,
) -> jnp.ndarray:
    """Backbone N, CA, C, O and virtual CB of a chain from torsions (NeRF).

    Args:
      torsions: [L, 3] phi, psi, omega per residue in radians (phi_0 only orients the
        first residue; psi_(L-1) places the last O; omega_(L-1) is unused).
      bond_lengths: [L, 3] N-CA, CA-C, C-N(next) in Angstrom; Engh & Huber when None.
      bond_angles: [L, 3] N-CA-C, CA-C-N(next), C-N(next)-CA(next) in radians; Engh &
        Huber when None.
      method: "pnerf" (parallel fragments, default), "frames" (prefix product of per-atom
        transforms) or "scan" (sequential).
      fragment_size: atoms per pNeRF fragment (None: about sqrt(3L)).
    Returns:
      [L, 5, 3] float32 positions in ``rc.ATOM_TYPES`` order (N, CA, C, O, CB).
    """
    if torsions.ndim != 2 or torsions.shape[1] != 3:
        raise ValueError(f"build_backbone: torsions must be [L, 3], got {torsions.shape}")
    length = torsions.shape[0]
    torsions = torsions.astype(jnp.float32)
    bl = ideal_bond_lengths(length) if bond_lengths is None else bond_lengths.astype(jnp.float32)
    ba = ideal_bond_angles(length) if bond_angles is None else bond_angles.astype(jnp.float32)
    for name, x in (("bond_lengths", bl), ("bond_angles", ba)):
        if x.shape != (length, 3):
            raise ValueError(f"build_backbone: {name} must be [{length}, 3], got {x.shape}")
    if method not in METHODS:
        raise ValueError(f"build_backbone: method must be one of {METHODS}, got {method!r}")
    internals = _atom_internals(torsions, bl, ba)
    if method == "frames":
        xyz = chain_frames(*internals)
    elif method == "scan":
        xyz = chain_scan(srf_point(*internals))
    else:
        xyz = chain_fragments(srf_point(*internals), fragment_size)
    xyz = xyz.reshape(length, 3, 3)
    n, ca, c = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    o = place_atom(
        n,
        ca,
        c,
        jnp.float32(rc.BOND_C_O),
        jnp.float32(math.radians(rc.ANGLE_CA_C_O)),
        torsions[:, 1] + jnp.float32(math.pi),
    )
    cb = virtual_cb(n, ca, c)
    return jnp.stack([n, ca, c, o, cb], axis=1)


def internal_coordinates(
    n: jnp.ndarray, ca: jnp.ndarray, c: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Backbone internal coordinates of a chain: the inverse of ``build_backbone``.

    Args:
      n, ca, c: [L, 3] backbone positions (Angstrom), consecutive residues bonded.
    Returns:
      torsions [L, 3] (phi, psi, omega; radians), bond_lengths [L, 3], bond_angles [L, 3]
      (same layout as ``build_backbone``), and torsion_mask [L, 3] (0 where undefined:
      phi_0, psi_(L-1), omega_(L-1); those entries hold -60, 140, 180 degrees and the
      last residue's inter-residue bonds/angles hold the Engh & Huber values).
    """
    for name, x in (("n", n), ("ca", ca), ("c", c)):
        check_last_dim(f"internal_coordinates {name}", x)
        if x.ndim != 2 or x.shape != n.shape:
            raise ValueError(f"internal_coordinates: {name} must be [L, 3] like n, got {x.shape}")
    length = n.shape[0]
    phi = jnp.concatenate([jnp.full((1,), math.radians(-60.0)), dihedral(c[:-1], n[1:], ca[1:], c[1:])])
    psi = jnp.concatenate([dihedral(n[:-1], ca[:-1], c[:-1], n[1:]), jnp.full((1,), math.radians(140.0))])
    omega = jnp.concatenate([dihedral(ca[:-1], c[:-1], n[1:], ca[1:]), jnp.full((1,), math.pi)])
    torsions = jnp.stack([phi, psi, omega], axis=-1).astype(jnp.float32)
    ideal_b = ideal_bond_lengths(1)[0]
    ideal_a = ideal_bond_angles(1)[0]
    bonds = jnp.stack(
        [
            norm(ca - n),
            norm(c - ca),
            jnp.concatenate([norm(n[1:] - c[:-1]), ideal_b[2:3]]),
        ],
        axis=-1,
    )
    angles = jnp.stack(
        [
            bond_angle(n, ca, c),
            jnp.concatenate([bond_angle(ca[:-1], c[:-1], n[1:]), ideal_a[1:2]]),
            jnp.concatenate([bond_angle(c[:-1], n[1:], ca[1:]), ideal_a[2:3]]),
        ],
        axis=-1,
    )
    mask = jnp.ones((length, 3), jnp.float32).at[0, 0].set(0.0).at[-1, 1:].set(0.0)
    return torsions, bonds.astype(jnp.float32), angles.astype(jnp.float32), mask


def trans_torsions(phi, psi, xp=jnp):
    """[L, 3] torsions (phi, psi, omega = 180 degrees) for ``build_backbone``; ``xp=np`` on the host."""
    return xp.stack([phi, psi, xp.full_like(phi, math.pi)], axis=-1)


def torsion_gradients(coords: jnp.ndarray, cotangent: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Gradient in (phi, psi) of a scalar whose gradient in the backbone atoms is ``cotangent``.

    With bonds, angles and omega fixed, turning phi_i by d rotates C_i, O_i, CB_i and every
    later residue rigidly about the unit axis u = CA_i - N_i through CA_i (psi_i: O_i and
    every later residue about C_i - CA_i through C_i), so atom x moves by d u x (x - p) and

        dE/dtorsion = sum over moved atoms of g . (u x (x - p)) = u . (sum x x g - p x sum g).

    The sums over the later residues are suffix sums: the whole gradient is O(L) (one
    triangular matmul), where reverse-mode through the chain builder is a second prefix
    product of 3 x 3 transforms, which dominated the folding step's operation count and
    compile. Coordinates are centred first (the formula is translation invariant) to keep
    the moment sums small in f32.

    Args:
      coords: [L, 5, 3] N, CA, C, O, CB as ``build_backbone`` returns them (ideal geometry).
      cotangent: [L, 5, 3] gradient of the scalar in those positions.
    Returns:
      (d/dphi [L], d/dpsi [L]).
    """
    length = coords.shape[0]
    x = coords - jnp.mean(coords[:, 1], axis=0)
    g = cotangent.astype(jnp.float32)
    moment = jnp.cross(x, g)  # [L, 5, 3]
    per_residue = jnp.concatenate([moment.sum(1), g.sum(1)], axis=-1)  # [L, 6]
    later = np.triu(np.ones((length, length), np.float32), 1)  # later[i, k] = k > i
    suffix = jnp.matmul(later, per_residue, precision=_HIGHEST)
    m_after, g_after = suffix[:, :3], suffix[:, 3:]
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    m_phi = m_after + moment[:, rc.C_IDX] + moment[:, rc.O_IDX] + moment[:, rc.CB_IDX]
    g_phi = g_after + g[:, rc.C_IDX] + g[:, rc.O_IDX] + g[:, rc.CB_IDX]
    d_phi = jnp.sum(normalize(ca - n) * (m_phi - jnp.cross(ca, g_phi)), axis=-1)
    m_psi = m_after + moment[:, rc.O_IDX]
    g_psi = g_after + g[:, rc.O_IDX]
    d_psi = jnp.sum(normalize(c - ca) * (m_psi - jnp.cross(c, g_psi)), axis=-1)
    return d_phi, d_psi


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def backbone_from_phi_psi(
    phi: jnp.ndarray, psi: jnp.ndarray, method: str = "frames", fragment_size: Optional[int] = None
) -> jnp.ndarray:
    """``build_backbone`` of (phi, psi, omega = 180 degrees) with ideal bonds and angles, with
    the analytic gradient of ``torsion_gradients`` (what folding differentiates).

    Args:
      phi, psi: [L] torsions in radians.
      method, fragment_size: ``build_backbone``'s.
    Returns:
      [L, 5, 3] N, CA, C, O, CB.
    """
    return build_backbone(trans_torsions(phi, psi), method=method, fragment_size=fragment_size)


def _backbone_fwd(phi, psi, method, fragment_size):
    coords = backbone_from_phi_psi(phi, psi, method, fragment_size)
    return coords, coords


def _backbone_bwd(method, fragment_size, coords, cotangent):
    return torsion_gradients(coords, cotangent)


backbone_from_phi_psi.defvjp(_backbone_fwd, _backbone_bwd)
