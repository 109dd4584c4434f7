"""NeRF: exact placement, round trips on real chains, ideal-geometry values, O placement, gradients."""

import functools
import gzip
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.geometry import (
    backbone_from_phi_psi,
    bond_angle,
    build_backbone,
    chain_fragments,
    chain_frames,
    chain_scan,
    local_transforms,
    dihedral,
    distance,
    internal_coordinates,
    place_atom,
    srf_point,
    torsion_gradients,
    trans_torsions,
)
from foldnet.metrics import kabsch, rmsd


@pytest.fixture(scope="module")
def chains(testdata):
    """Two real chains: one short (40-120 residues), one long (>= 250 residues)."""
    short = None
    long_ = None
    for p in iter_proteinnet(testdata / "proteinnet" / "validation.gz"):
        if 40 <= len(p) <= 120 and short is None:
            short = p
        elif len(p) >= 250 and long_ is None:
            long_ = p
        if short is not None and long_ is not None:
            return [short, long_]
    raise AssertionError("validation.gz lacks the expected chains")


@functools.partial(jax.jit, static_argnames="method")
def _round_trip(x, method):
    tors, bonds, angles, mask = internal_coordinates(x[:, 0], x[:, 1], x[:, 2])
    true_geo = build_backbone(tors, bonds, angles, method=method)
    ideal_geo = build_backbone(tors, method=method)
    return true_geo, ideal_geo, tors


_build = jax.jit(build_backbone, static_argnames=("method", "fragment_size"))


def _backbone(p):
    x = jnp.asarray(p.atom_positions)
    return x[:, 0], x[:, 1], x[:, 2]


@pytest.mark.parametrize("bond, angle, torsion", [(1.33, 116.2, 180.0), (1.46, 121.7, -60.0), (1.52, 111.0, 35.0), (1.0, 90.0, 0.0)])
def test_place_atom_reproduces_internal_coordinates(bond, angle, torsion):
    a, b, c = jnp.array([0.3, 1.2, -0.4]), jnp.array([0.0, 0.0, 0.0]), jnp.array([1.4, 0.1, 0.2])
    d = place_atom(a, b, c, jnp.float32(bond), jnp.float32(math.radians(angle)), jnp.float32(math.radians(torsion)))
    assert float(distance(c, d)) == pytest.approx(bond, abs=1e-5)
    assert math.degrees(float(bond_angle(b, c, d))) == pytest.approx(angle, abs=1e-3)
    got = math.degrees(float(dihedral(a, b, c, d)))
    assert math.cos(math.radians(got - torsion)) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("method", ["frames", "pnerf", "scan"])
def test_round_trip_true_geometry(chains, method):
    # coordinates -> torsions + true bonds/angles -> coordinates; the long chain only for the
    # parallel builders (scan is checked against them elsewhere) to keep compile time down.
    for p in chains if method != "scan" else chains[:1]:
        x = jnp.asarray(p.atom_positions)
        xyz, ideal, _ = _round_trip(x, method)
        native = x[:, :3].reshape(-1, 3)
        err = float(rmsd(xyz[:, :3].reshape(-1, 3), native))
        assert err < 0.1, (p.id, len(p), err)
        assert err < 2e-3  # in fact f32 rounding only
        # Ideal Engh & Huber bonds/angles with the true torsions: locally right, drifting
        # with length (measured: several A for long chains; see docs/structure.md).
        err_ideal = float(rmsd(ideal[:, :3].reshape(-1, 3), native))
        assert 0.05 < err_ideal < 25.0
        win = float(rmsd(ideal[:10, :3].reshape(-1, 3), x[:10, :3].reshape(-1, 3)))
        assert win < 1.0


def test_scan_and_fragments_agree_for_any_fragment_size(chains):
    p = chains[0].select(np.arange(30))
    tors, bonds, angles, _ = internal_coordinates(*_backbone(p))
    from foldnet.geometry.nerf import _atom_internals

    pts = srf_point(*_atom_internals(tors, bonds, angles))
    ref = jax.jit(chain_scan)(pts)
    frag = jax.jit(chain_fragments, static_argnums=1)
    for size in (3, 7, None, 3 * len(p) + 5):  # smallest, odd, default, one fragment
        np.testing.assert_allclose(np.asarray(frag(pts, size)), np.asarray(ref), atol=2e-3)


def test_local_transforms_hand_values():
    # Atom at bond 1.5 A, angle 90 degrees, torsion 0 from the identity frame: it sits at
    # (0, 1.5, 0); its own frame's x axis points along the new bond, its z axis (the plane
    # normal e_x x u) stays +z.
    q, t = local_transforms(jnp.float32(1.5), jnp.float32(math.pi / 2), jnp.float32(0.0))
    np.testing.assert_allclose(np.asarray(t), [0.0, 1.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(q), [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)
    # Any internal coordinates give a proper rotation whose first column is the unit bond.
    q, t = local_transforms(jnp.float32(1.33), jnp.float32(2.03), jnp.float32(-1.1))
    np.testing.assert_allclose(np.asarray(q @ q.T), np.eye(3), atol=1e-6)
    assert float(jnp.linalg.det(q)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.asarray(q[:, 0] * 1.33), np.asarray(t), atol=1e-6)
    # and the chain equals the sequential NeRF of the same atoms.
    rng = np.random.default_rng(0)
    b = jnp.asarray(rng.uniform(1.2, 1.6, 40).astype(np.float32))
    a = jnp.asarray(rng.uniform(1.8, 2.2, 40).astype(np.float32))
    w = jnp.asarray(rng.uniform(-np.pi, np.pi, 40).astype(np.float32))
    np.testing.assert_allclose(np.asarray(jax.jit(chain_frames)(b, a, w)), np.asarray(jax.jit(chain_scan)(srf_point(b, a, w))),
                               atol=1e-4)


def test_ideal_alpha_helix_and_beta_strand():
    # Pauling alpha helix (phi, psi) = (-57, -47): 3.6 residues/turn, rise ~1.5 A/residue;
    # Engh & Huber geometry gives CA-CA 3.80 A and CA(i)-CA(i+3) ~5.0-5.4 A.
    L = 24
    helix = jnp.tile(jnp.deg2rad(jnp.array([-57.0, -47.0, 180.0])), (L, 1))
    x = _build(helix)
    ca = x[:, 1]
    d1 = np.asarray(distance(ca[:-1], ca[1:]))
    np.testing.assert_allclose(d1, 3.80, atol=0.03)
    d3 = np.asarray(distance(ca[:-3], ca[3:]))
    assert 4.9 < d3.mean() < 5.6
    rise = float(distance(ca[2], ca[2 + 18])) / 18.0  # 18 residues = 5 turns, back on the axis
    assert rise == pytest.approx(1.5, abs=0.1)
    # Bond lengths and angles are the Engh & Huber values everywhere.
    n, c = x[:, 0], x[:, 2]
    np.testing.assert_allclose(np.asarray(distance(n, ca)), rc.BOND_N_CA, atol=1e-4)
    np.testing.assert_allclose(np.asarray(distance(c[:-1], n[1:])), rc.BOND_C_N, atol=1e-4)
    np.testing.assert_allclose(np.degrees(np.asarray(bond_angle(n, ca, c))), rc.ANGLE_N_CA_C, atol=1e-2)
    np.testing.assert_allclose(np.degrees(np.asarray(dihedral(c[:-1], n[1:], ca[1:], c[1:]))), -57.0, atol=1e-2)
    # Fully extended strand (-180, 180): CA(i)-CA(i+2) ~7.2-7.3 A.
    strand = _build(jnp.tile(jnp.deg2rad(jnp.array([-180.0, 180.0, 180.0])), (6, 1)))
    assert 7.0 < float(distance(strand[0, 1], strand[2, 1])) < 7.4


def test_carbonyl_oxygen_matches_real_structures(data_root):
    # TS50 chains carry real O atoms; O is placed from psi (anti to N(i+1), in the peptide plane).
    recs = json.load(gzip.open(data_root / "ts50_gvp" / "ts50.json.gz"))[:1]
    for r in recs:
        x = np.asarray(r["coords"], np.float32)
        n, ca, c, o = (jnp.asarray(x[:, k]) for k in range(4))
        y, _, tors = _round_trip(jnp.asarray(x[:, :3]), "pnerf")
        rot, t = kabsch(y[:, :3].reshape(-1, 3), jnp.stack([n, ca, c], 1).reshape(-1, 3))
        dev = np.linalg.norm(np.asarray(y[:, 3] @ rot.T + t) - x[:, 3], axis=1)[:-1]  # last psi undefined
        assert dev.mean() < 0.1, (r["name"], dev.mean())
        # O in the peptide plane: O(i)-C(i)-N(i+1)-CA(i+1) ~ 0 for trans peptides.
        od = np.degrees(np.asarray(dihedral(y[:-1, 3], y[:-1, 2], y[1:, 0], y[1:, 1])))
        omega = np.degrees(np.asarray(tors[:-1, 2]))
        trans = np.abs(np.abs(omega) - 180.0) < 10.0
        assert np.all(np.abs(od[trans]) < 12.0)


def test_internal_coordinates_invariant_under_rigid_motion(chains):
    p = chains[0]
    n, ca, c = _backbone(p)
    t = math.radians(50.0)
    rot = jnp.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1.0]])
    shift = jnp.array([5.0, -3.0, 12.0])
    a = internal_coordinates(n, ca, c)
    b = internal_coordinates(n @ rot.T + shift, ca @ rot.T + shift, c @ rot.T + shift)
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.cos(np.asarray(u)), np.cos(np.asarray(v)), atol=1e-4)
    # Mask: phi_0, psi_last, omega_last undefined.
    mask = np.asarray(a[3])
    assert mask[0, 0] == 0 and mask[-1, 1] == 0 and mask[-1, 2] == 0 and mask.sum() == 3 * len(p) - 3


def test_gradients_finite_and_methods_agree(chains):
    p = chains[0].select(np.arange(40))
    tors, _, _, _ = internal_coordinates(*_backbone(p))
    target = jnp.asarray(p.atom_positions[:, 1])

    def loss(t, m):
        x = build_backbone(t, method=m)
        d = jnp.sqrt(jnp.sum(jnp.square(x[:, None, 1] - x[None, :, 1]), -1) + 1e-8)
        dt = jnp.sqrt(jnp.sum(jnp.square(target[:, None] - target[None]), -1) + 1e-8)
        return jnp.mean(jnp.square(d - dt))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_p = grad(tors + 0.05, "pnerf")
    g_f = grad(tors + 0.05, "frames")
    g_s = grad(tors + 0.05, "scan")
    assert bool(jnp.all(jnp.isfinite(g_p))) and bool(jnp.all(jnp.isfinite(g_s)))
    assert float(jnp.abs(g_p).max()) > 0
    np.testing.assert_allclose(np.asarray(g_p), np.asarray(g_s), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(np.asarray(g_f), np.asarray(g_s), rtol=1e-2, atol=1e-3)


def _all_atom_loss(x, target):
    """A scalar that pulls on every atom type (N, CA, C, O, CB) and on long-range pairs."""
    cb = x[:, 4]
    d = jnp.sqrt(jnp.sum(jnp.square(cb[:, None] - cb[None]), -1) + 1e-6)
    weights = jnp.cos(0.37 * jnp.arange(5.0))[None, :, None]
    return jnp.mean(jnp.square(d - target)) + jnp.sum(weights * jnp.sin(0.1 * x))


@pytest.mark.parametrize("which", [0, 1])
def test_analytic_torsion_gradients_match_autodiff(chains, which):
    # Real torsions of a short and a 250+-residue chain, perturbed; the reference is reverse-mode
    # through the chain builder. The analytic gradient (rigid rotations + suffix sums)
    # must agree to f32 rounding relative to the largest component.
    p = chains[which]
    tors, _, _, _ = internal_coordinates(*_backbone(p))
    rng = np.random.default_rng(which)
    phi = tors[:, 0] + jnp.asarray(rng.normal(0, 0.3, len(p)), jnp.float32)
    psi = tors[:, 1] + jnp.asarray(rng.normal(0, 0.3, len(p)), jnp.float32)
    x_true = jnp.asarray(p.atom_positions[:, 1])
    target = jnp.sqrt(jnp.sum(jnp.square(x_true[:, None] - x_true[None]), -1))

    def reference(phi, psi):  # the frames builder is checked against the sequential one above
        return _all_atom_loss(build_backbone(trans_torsions(phi, psi), method="frames"), target)

    def analytic(phi, psi):
        return _all_atom_loss(backbone_from_phi_psi(phi, psi, "frames"), target)

    both = jax.jit(lambda a, b: (jax.grad(reference, argnums=(0, 1))(a, b), jax.grad(analytic, argnums=(0, 1))(a, b),
                                 backbone_from_phi_psi(a, b, "frames")))
    want, got, forward = both(phi, psi)
    for w, g in zip(want, got):
        w, g = np.asarray(w), np.asarray(g)
        scale = np.abs(w).max()
        assert scale > 1e-3
        np.testing.assert_allclose(g, w, atol=2e-4 * scale)
    # phi_0 moves only atoms placed from the arbitrary reference triple, but it still rotates
    # residue 0's C, O, CB: not zero, and equal too (checked above). Forward: the same builder.
    np.testing.assert_allclose(np.asarray(forward), np.asarray(_build(trans_torsions(phi, psi), method="frames")),
                               atol=1e-4)


def test_torsion_gradient_of_one_atom_by_hand():
    # E = g . x for the last residue's CB only: turning psi_(L-2) by d rotates that CB about the
    # unit axis u = C - CA of residue L-2 through C, so dE/dpsi = g . (u x (CB - C)).
    phi = jnp.deg2rad(jnp.array([-60.0, -65.0, -120.0, -70.0]))
    psi = jnp.deg2rad(jnp.array([140.0, -40.0, 130.0, 150.0]))
    x = backbone_from_phi_psi(phi, psi, "scan")
    g = jnp.zeros_like(x).at[3, 4].set(jnp.array([0.3, -1.2, 0.7]))
    d_phi, d_psi = torsion_gradients(x, g)
    ca, c, cb = np.asarray(x[2, 1], np.float64), np.asarray(x[2, 2], np.float64), np.asarray(x[3, 4], np.float64)
    u = (c - ca) / np.linalg.norm(c - ca)
    want = float(np.dot([0.3, -1.2, 0.7], np.cross(u, cb - c)))
    assert float(d_psi[2]) == pytest.approx(want, rel=1e-5)
    assert float(d_psi[3]) == 0.0  # psi_3 moves only O_3
    assert abs(float(d_phi[3])) > 0 and abs(float(d_phi[0])) > 0


def test_backbone_from_phi_psi_under_vmap():
    rng = np.random.default_rng(3)
    phi = jnp.asarray(rng.uniform(-3, 3, (3, 30)), jnp.float32)
    psi = jnp.asarray(rng.uniform(-3, 3, (3, 30)), jnp.float32)

    def total(phi, psi):
        x = jax.vmap(backbone_from_phi_psi, in_axes=(0, 0, None))(phi, psi, "frames")
        return jnp.sum(jnp.sin(0.2 * x))

    g_batch = jax.jit(jax.grad(total, argnums=(0, 1)))(phi, psi)
    one = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.sin(0.2 * backbone_from_phi_psi(a, b, "frames"))), argnums=(0, 1)))
    for r in range(3):
        g_one = one(phi[r], psi[r])
        np.testing.assert_allclose(np.asarray(g_batch[0][r]), np.asarray(g_one[0]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(g_batch[1][r]), np.asarray(g_one[1]), rtol=1e-5, atol=1e-5)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="torsions"):
        build_backbone(jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="bond_lengths"):
        build_backbone(jnp.zeros((5, 3)), bond_lengths=jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="method"):
        build_backbone(jnp.zeros((5, 3)), method="loop")
