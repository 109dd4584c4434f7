"""foldnet.geometry: hand-computed dihedrals/angles, invariances, gradients; Kabsch (with reflection fix,
foldnet.metrics, the one implementation) on a real chain."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foldnet.common import geometry_np
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.geometry import (
    bond_angle,
    dihedral,
    distance,
    norm,
    pairwise_distances,
    virtual_cb,
)
from foldnet.metrics import kabsch, rmsd, superpose


@pytest.fixture(scope="module")
def chain(testdata):
    return next(p for p in iter_proteinnet(testdata / "proteinnet" / "validation.gz") if 60 <= len(p) <= 150)


def _rotation(axis, angle_deg):
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    t = math.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return (np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k).astype(np.float32)


@pytest.mark.parametrize(
    "p3, expected",
    [((1.0, 0.0, 1.0), 0.0), ((0.0, 1.0, 1.0), 90.0), ((0.0, -1.0, 1.0), -90.0), ((-1.0, 0.0, 1.0), 180.0)],
)
def test_dihedral_hand_values(p3, expected):
    # p0 on +x, central bond along +z; p3 rotated about z by the expected angle
    # (counter-clockwise seen from +z = positive, IUPAC).
    p0, p1, p2 = jnp.array([1.0, 0, 0]), jnp.array([0.0, 0, 0]), jnp.array([0.0, 0, 1])
    got = math.degrees(float(dihedral(p0, p1, p2, jnp.array(p3))))
    if abs(expected) == 180.0:
        assert abs(abs(got) - 180.0) < 1e-4
    else:
        assert got == pytest.approx(expected, abs=1e-4)


def test_bond_angle_and_distance_hand_values():
    o = jnp.zeros(3)
    assert math.degrees(float(bond_angle(jnp.array([1.0, 0, 0]), o, jnp.array([0.0, 2, 0])))) == pytest.approx(90.0, abs=1e-4)
    assert math.degrees(float(bond_angle(jnp.array([1.0, 0, 0]), o, jnp.array([-3.0, 0, 0])))) == pytest.approx(180.0, abs=1e-3)
    tetra = math.degrees(math.acos(-1.0 / 3.0))  # 109.47
    assert math.degrees(float(bond_angle(jnp.array([1.0, 1, 1]), o, jnp.array([1.0, -1, -1])))) == pytest.approx(tetra, abs=1e-4)
    assert float(distance(jnp.array([1.0, 2, 3]), jnp.array([4.0, 6, 3]))) == pytest.approx(5.0, abs=1e-5)
    d = pairwise_distances(jnp.array([[0.0, 0, 0], [3.0, 4, 0], [0, 0, 12]]))
    np.testing.assert_allclose(np.asarray(d), [[0, 5, 12], [5, 0, 13], [12, 13, 0]], atol=1e-3)


def test_matches_numpy_twins_on_real_chain(chain):
    x = chain.atom_positions
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    phi_np = geometry_np.dihedral(c[:-1], n[1:], ca[1:], c[1:])
    phi_j = dihedral(jnp.asarray(c[:-1]), jnp.asarray(n[1:]), jnp.asarray(ca[1:]), jnp.asarray(c[1:]))
    np.testing.assert_allclose(np.asarray(phi_j), phi_np, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(virtual_cb(jnp.asarray(n), jnp.asarray(ca), jnp.asarray(c))), geometry_np.virtual_cb(n, ca, c), atol=1e-4
    )
    # Real proteins: phi of non-Gly residues is mostly negative.
    assert np.mean(phi_np < 0) > 0.8


def test_kabsch_recovers_rotation_and_translation(chain):
    x = jnp.asarray(chain.atom_positions[:, 1])
    r_true = _rotation([1.0, 2.0, -0.5], 73.0)
    t_true = np.array([10.0, -4.0, 2.5], np.float32)
    y = x @ r_true.T + t_true
    r, t = kabsch(x, y)
    np.testing.assert_allclose(np.asarray(r), r_true, atol=1e-4)
    np.testing.assert_allclose(np.asarray(t), t_true, atol=1e-2)
    assert float(rmsd(x, y)) < 1e-3
    assert float(jnp.linalg.det(r)) == pytest.approx(1.0, abs=1e-5)
    # Without superposition the RMSD is large.
    assert float(np.sqrt(np.mean(np.sum((np.asarray(x) - np.asarray(y)) ** 2, -1)))) > 5.0


def test_kabsch_reflection_fix(chain):
    x = jnp.asarray(chain.atom_positions[:, 1])
    mirror = x * jnp.array([1.0, 1.0, -1.0])
    r, _ = kabsch(mirror, x)
    assert float(jnp.linalg.det(r)) == pytest.approx(1.0, abs=1e-5)  # proper rotation, never a reflection
    # A mirror image of a real (chiral) chain cannot be superposed: RMSD stays well above 0.
    assert float(rmsd(mirror, x)) > 2.0
    # An improper "fit" would make it 0: check that the reflection really is the whole difference.
    assert float(rmsd(mirror * jnp.array([1.0, 1.0, -1.0]), x)) < 1e-4


def test_kabsch_mask_ignores_outliers(chain):
    x = jnp.asarray(chain.atom_positions[:, 1])
    y = x @ _rotation([0, 0, 1], 30.0).T
    y = y.at[:5].add(20.0)  # five displaced points
    mask = jnp.ones(len(x)).at[:5].set(0.0)
    assert float(rmsd(x, y, mask)) < 1e-3
    assert float(rmsd(x, y)) > 1.0


def test_invariance_under_rigid_motion(chain):
    x = chain.atom_positions[:, :3]
    r = _rotation([0.3, -1.0, 0.2], 141.0)
    y = x @ r.T + np.array([-7.0, 3.0, 22.0], np.float32)
    a = jnp.asarray(x.reshape(-1, 3))
    b = jnp.asarray(y.reshape(-1, 3))
    np.testing.assert_allclose(np.asarray(dihedral(a[:-3], a[1:-2], a[2:-1], a[3:])),
                               np.asarray(dihedral(b[:-3], b[1:-2], b[2:-1], b[3:])), atol=2e-3)
    np.testing.assert_allclose(np.asarray(pairwise_distances(a)), np.asarray(pairwise_distances(b)), atol=2e-3)
    np.testing.assert_allclose(np.asarray(bond_angle(a[:-2], a[1:-1], a[2:])),
                               np.asarray(bond_angle(b[:-2], b[1:-1], b[2:])), atol=1e-4)
    # A reflection flips the sign of every dihedral.
    m = a * jnp.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(dihedral(m[:-3], m[1:-2], m[2:-1], m[3:])),
                               -np.asarray(dihedral(a[:-3], a[1:-2], a[2:-1], a[3:])), atol=1e-4)


def test_gradients_finite_at_degenerate_input(chain):
    # Collinear points and coincident points: the usual NaN traps.
    line = jnp.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]])
    g = jax.jit(jax.grad(lambda p: dihedral(p[0], p[1], p[2], p[3])))(line)
    assert bool(jnp.all(jnp.isfinite(g)))
    g = jax.jit(jax.grad(lambda p: bond_angle(p[0], p[1], p[2])))(line[:3])
    assert bool(jnp.all(jnp.isfinite(g)))
    g = jax.jit(jax.grad(lambda v: norm(v)))(jnp.zeros(3))
    assert bool(jnp.all(jnp.isfinite(g)))
    g = jax.jit(jax.grad(lambda p: jnp.sum(pairwise_distances(p))))(jnp.asarray(chain.atom_positions[:20, 1]))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_shape_checks():
    with pytest.raises(ValueError, match="expected shape"):
        dihedral(jnp.zeros(2), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"two \[N, 3\] arrays"):
        kabsch(jnp.zeros((5, 3)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="mask"):
        rmsd(jnp.zeros((5, 3)), jnp.zeros((5, 3)), jnp.ones(4))
    with pytest.raises(ValueError):
        pairwise_distances(jnp.zeros((2, 5, 3)))
    with pytest.raises(ValueError):
        superpose(jnp.zeros((5, 2)), jnp.zeros((5, 2)))
