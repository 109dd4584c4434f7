"""Structure module: config, potential terms (hand values), confidence, folding real chains."""

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.geometry import distance
from foldnet.structure import (
    FoldConfig,
    energy_terms,
    fold,
    make_potential,
    refine_cartesian,
    residue_confidence,
    true_distributions,
)
from foldnet.structure import potential as pot
from foldnet.metrics import rmsd, tm_score

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "fold"
FAST = FoldConfig(num_restarts=4, num_steps=200, learning_rate=0.15)


def _compose(name):
    node = OmegaConf.load(CONFIGS / f"{name}.yaml")
    defaults = node.pop("defaults", [])
    merged = OmegaConf.create()
    for d in defaults:
        merged = OmegaConf.merge(merged, node if d == "_self_" else _compose(d))
    return merged if defaults else node


def test_yaml_configs_match_the_dataclass():
    default = FoldConfig.from_dict(OmegaConf.to_container(_compose("default")))
    assert default == FoldConfig()  # every field present in default.yaml, with the same value
    assert set(OmegaConf.load(CONFIGS / "default.yaml")) == {f.name for f in dataclasses.fields(FoldConfig)}
    fast = FoldConfig.from_dict(OmegaConf.to_container(_compose("fast")))
    assert fast == FAST
    with pytest.raises(ValueError, match="unknown keys"):
        FoldConfig.from_dict({"num_restart": 3})
    with pytest.raises(ValueError, match="num_steps"):
        FoldConfig(num_steps=0)
    with pytest.raises(ValueError, match="nerf_method"):
        FoldConfig(nerf_method="loop")
    with pytest.raises(ValueError, match="torsion_gradient"):
        FoldConfig(torsion_gradient="numeric")


def _probs(L, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.dirichlet(np.ones(rc.NUM_DIST_BINS), (L, L)).astype(np.float32),
            rng.dirichlet(np.ones(36), L).astype(np.float32), rng.dirichlet(np.ones(36), L).astype(np.float32))


def test_distogram_spline_hand_values():
    p = np.full((1, 1, rc.NUM_DIST_BINS), 1e-3, np.float32)
    p[0, 0, 20] = 1.0 - 1e-3 * (rc.NUM_DIST_BINS - 1)
    table = pot.distogram_table(jnp.asarray(p), eps=1e-8)  # no envelope
    rows, off = table.reshape(-1), jnp.zeros(1, jnp.int32)  # one pair's 68 knots, flattened

    energy = jax.jit(lambda d: pot.spline_energy(rows, off, d))

    def e(d):
        return float(energy(jnp.array([d], jnp.float32))[0])

    v = -np.log(p[0, 0] + 1e-8)
    for k in (0, 5, 20, 21, 40, 63):  # the spline passes through the knots at the bin centres
        assert e(float(rc.DISTOGRAM_CENTERS[k])) == pytest.approx(v[k], abs=1e-4)
    # Beyond the overflow knot (centre_63 + 2 bin widths) it is flat at the overflow value.
    for d in (22.6, 25.0, 60.0):
        assert e(d) == pytest.approx(v[64], abs=1e-4)
    # Minimum at the probable bin; C1: the slope is continuous across a knot.
    assert min(e(d) for d in np.linspace(2.2, 21.8, 200)) == pytest.approx(v[20], abs=1e-3)
    grad = jax.jit(jax.grad(lambda d: pot.spline_energy(rows, off, d[None])[0]))
    for k in (20, 22):  # the one-sided slopes meet at a knot (they would differ by ~1 for linear interpolation)
        c = float(rc.DISTOGRAM_CENTERS[k])
        left, right = float(grad(jnp.float32(c - 2e-5))), float(grad(jnp.float32(c + 2e-5)))
        assert left == pytest.approx(right, abs=0.02)

def test_reference_weight_scales_the_background_correction():
    # Knots (bins 0..64, before the three padding knots) are -log(p + eps) + w log(ref + eps);
    # p is symmetrised and the reference renormalised per pair first.
    p, _, _ = _probs(3)
    ps = 0.5 * (p + p.transpose(1, 0, 2))
    ps /= ps.sum(-1, keepdims=True)
    ref = np.random.default_rng(1).dirichlet(np.ones(rc.NUM_DIST_BINS), (3, 3)).astype(np.float32)
    eps = 1e-8
    for w in (0.0, 0.5, 1.0, 1.25):
        table = np.asarray(pot.distogram_table(jnp.asarray(p), eps, jnp.asarray(3.0 * ref), None, w))
        want = -np.log(ps + eps) + w * np.log(ref + eps)
        np.testing.assert_allclose(table[..., 1:66], want, rtol=1e-5, atol=1e-5)
    no_ref = np.asarray(pot.distogram_table(jnp.asarray(p), eps))
    np.testing.assert_allclose(np.asarray(pot.distogram_table(jnp.asarray(p), eps, jnp.asarray(ref), None, 0.0)),
                               no_ref, atol=1e-6)
    with pytest.raises(ValueError, match="reference_weight"):
        FoldConfig(reference_weight=-0.5)



@pytest.mark.parametrize("L", [7, 8])
def test_packed_pairs_cover_each_pair_once(L):
    i, j = pot.packed_pair_indices(L)
    half, size = pot.packed_size(L)
    assert i.shape == (half, size) == (size // 2, L + L % 2)
    real = (j > i) & (j < L)
    pairs = sorted(zip(i[real].tolist(), j[real].tolist()))
    assert pairs == [(a, b) for a in range(L) for b in range(a + 1, L)]  # each once, none missing
    # jnp and numpy packings agree.
    x = np.arange(size * size, dtype=np.float32).reshape(size, size)
    np.testing.assert_array_equal(np.asarray(pot.pack_pairs(jnp.asarray(x), jnp)), pot.pack_pairs(x))


@pytest.mark.parametrize("L", [7, 8])
def test_packed_distances_equal_the_packed_distance_matrix(L):
    x = np.random.default_rng(L).normal(scale=8.0, size=(L, 3)).astype(np.float32)
    _, size = pot.packed_size(L)
    xp = np.concatenate([x, x[-1:]]) if size != L else x  # the dummy point of an odd L
    # Coincident points (self pairs, the dummy's pair) sit on the 1e-4 A^2 floor: 0.01 A.
    full = np.sqrt(np.maximum(np.sum(np.square(xp[:, None] - xp[None, :]), axis=-1), 1e-4))
    got = np.asarray(pot.packed_distances(jnp.asarray(x), size))
    np.testing.assert_allclose(got, pot.pack_pairs(full), rtol=1e-5, atol=2e-3)


def test_batched_energy_terms_equal_one_structure_at_a_time():
    # The pair-major lookup of R structures must give each structure its own terms and
    # gradient (a layout slip would mix restarts).
    L, R = 13, 3
    rng = np.random.default_rng(5)
    d, ph, ps = _probs(L, seed=5)
    cfg = FoldConfig()
    potential = make_potential(d, ph, ps, cfg)
    x = jnp.asarray(rng.normal(scale=6.0, size=(R, L, 5, 3)).astype(np.float32))
    tors = jnp.asarray(rng.uniform(-np.pi, np.pi, size=(R, 2, L)).astype(np.float32))
    batched = pot.batched_energy_terms(potential, x, tors[:, 0], tors[:, 1], cfg)

    def total(x, t):
        return jnp.sum(pot.total_energy(pot.batched_energy_terms(potential, x, t[:, 0], t[:, 1], cfg), cfg))

    grad = jax.grad(total)(x, tors)
    for r in range(R):
        one = energy_terms(potential, x[r], tors[r, 0], tors[r, 1], cfg)
        for k in ("distogram", "torsion", "clash"):
            assert float(batched[k][r]) == pytest.approx(float(one[k]), rel=1e-6)
        g = jax.grad(lambda y: pot.total_energy(energy_terms(potential, y, tors[r, 0], tors[r, 1], cfg), cfg))(x[r])
        np.testing.assert_allclose(np.asarray(grad[r]), np.asarray(g), rtol=1e-5, atol=1e-4)


def _catmull_rom(knots, d):
    """Reference: the spline through one pair's knot values, evaluated the textbook way."""
    u = min(max((d - (rc.DISTOGRAM_CENTERS[0] - rc.DISTOGRAM_BIN_WIDTH)) / rc.DISTOGRAM_BIN_WIDTH, 1.0), len(knots) - 2.0)
    k = int(min(np.floor(u), len(knots) - 3))
    s = u - k
    p0, p1, p2, p3 = knots[k - 1], knots[k], knots[k + 1], knots[k + 2]
    return 0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (3 * p1 - p0 - 3 * p2 + p3) * s**3)


@pytest.mark.parametrize("L", [11, 12])
def test_energy_terms_match_a_pair_by_pair_reference(L):
    rng = np.random.default_rng(L)
    d, ph, ps = _probs(L, seed=L)
    mask = np.ones(L, np.float32)
    mask[4] = 0.0
    cfg = FoldConfig()
    potential = make_potential(d, ph, ps, cfg, residue_mask=mask)
    x = rng.normal(scale=6.0, size=(L, 5, 3)).astype(np.float32)
    tors = jnp.asarray(rng.uniform(-np.pi, np.pi, size=(2, L)).astype(np.float32))
    got = energy_terms(potential, jnp.asarray(x), tors[0], tors[1], cfg)
    knots = np.asarray(pot.distogram_table(jnp.asarray(d), cfg.prob_eps, None, cfg.distogram_max_slope))
    e_dist = e_clash = 0.0
    for i in range(L):
        for j in range(i + 1, L):
            if not (mask[i] and mask[j]):
                continue
            d_cb = float(np.linalg.norm(x[i, rc.CB_IDX] - x[j, rc.CB_IDX]))
            d_ca = float(np.linalg.norm(x[i, rc.CA_IDX] - x[j, rc.CA_IDX]))
            if j - i >= cfg.min_separation:
                e_dist += _catmull_rom(knots[i, j], d_cb)
            if j - i >= cfg.clash_min_separation:
                e_clash += max(cfg.clash_ca - d_ca, 0.0) ** 2 + max(cfg.clash_cb - d_cb, 0.0) ** 2
    assert float(got["distogram"]) == pytest.approx(e_dist, rel=1e-5)
    assert float(got["clash"]) == pytest.approx(e_clash, rel=1e-4, abs=1e-4)


def test_potential_is_differentiable_in_the_predicted_distogram():
    # End to end: d energy / d probabilities through the custom JVP (coefficient tangent),
    # checked against central finite differences in float64-free f32 tolerance.
    L = 6
    d, ph, ps = _probs(L, seed=3)
    cfg = FoldConfig(distogram_max_slope=None)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(scale=4.0, size=(L, 5, 3)).astype(np.float32))
    zeros = jnp.zeros(L)

    def e(probs):
        return energy_terms(make_potential(probs, ph, ps, cfg), x, zeros, zeros, cfg)["distogram"]

    logits = jnp.log(jnp.asarray(d))
    f = jax.jit(lambda z: e(jax.nn.softmax(z, axis=-1)))
    g = np.asarray(jax.grad(f)(logits))
    direction = rng.normal(size=g.shape).astype(np.float32)
    h = 1e-2
    numeric = (float(f(logits + h * direction)) - float(f(logits - h * direction))) / (2 * h)
    assert float(np.sum(g * direction)) == pytest.approx(numeric, rel=2e-2)


def test_laplace_envelope_hand_values():
    v = jnp.array([[0.0, 10.0, 10.0, 10.0, 1.0, 10.0]])
    s = 1.0 / rc.DISTOGRAM_BIN_WIDTH  # slope 1 per knot
    np.testing.assert_allclose(np.asarray(pot.laplace_envelope(v, s)), [[0.0, 1.0, 2.0, 2.0, 1.0, 2.0]], atol=1e-6)


def test_torsion_and_clash_terms_hand_values():
    one_hot = np.zeros((2, 36), np.float32)
    one_hot[:, 12] = 1.0  # bin centre -55 degrees
    lp = jax.jit(pot.torsion_log_probs, static_argnums=1)(jnp.asarray(one_hot), 1e-8)
    mu = float(rc.TORSION_CENTERS_RAD[12])
    e = pot.torsion_energy(jnp.array([mu, mu + 2 * math.pi]), lp, 30.0)
    np.testing.assert_allclose(np.asarray(e), 0.0, atol=1e-4)  # zero at the centre, periodic
    off = pot.torsion_energy(jnp.array([mu + 0.3]), lp, 30.0)
    assert float(off[0]) == pytest.approx(30.0 * (1 - math.cos(0.3)), rel=1e-3)
    x = jnp.array([[0.0, 0, 0], [3.0, 0, 0], [10.0, 0, 0]])
    clash = pot.clash_energy(x, jnp.array([0, 0]), jnp.array([1, 2]), 3.8)
    np.testing.assert_allclose(np.asarray(clash), [0.8**2, 0.0], atol=1e-5)


def test_energy_invariant_under_rigid_motion_and_finite_gradient(native_chains):
    p = geometry_np.with_virtual_cb(native_chains[0].select(np.arange(24)))
    L = len(p)
    d, ph, ps = _probs(L)
    cfg = FoldConfig()
    potential = make_potential(d, ph, ps, cfg)
    tors = jnp.asarray(np.nan_to_num(geometry_np.backbone_torsions(p)[0]))
    x = jnp.asarray(p.atom_positions)
    rot = jnp.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    terms = jax.jit(lambda y: energy_terms(potential, y, tors[:, 0], tors[:, 1], cfg))
    a = terms(x)
    b = terms(x @ rot.T + 7.0)
    for k in ("distogram", "torsion", "clash"):
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4, abs=1e-3)
    # Gradient w.r.t. coordinates (NeRF gradients are tested in test_nerf.py), including a
    # pair of coincident CB atoms, the degenerate case of the distance.
    x_bad = x.at[5, 4].set(x[9, 4])
    g = jax.jit(jax.grad(lambda y: pot.total_energy(energy_terms(potential, y, tors[:, 0], tors[:, 1], cfg), cfg)))(x_bad)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_confidence_hand_values():
    L = 12
    one_hot = np.zeros((L, L, rc.NUM_DIST_BINS), np.float32)
    one_hot[..., 10] = 1.0
    conf, summary = residue_confidence(one_hot)
    np.testing.assert_allclose(conf, 100.0, atol=1e-3)
    uniform = np.full((L, L, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS, np.float32)
    conf, summary = residue_confidence(uniform)
    np.testing.assert_allclose(conf, 0.0, atol=1e-3)
    # Mixed: pairs within residues 0-7 sharp, everything else uniform.
    mixed = uniform.copy()
    mixed[:8, :8] = one_hot[:8, :8]
    conf, _ = residue_confidence(mixed)
    assert conf[:8].min() > 50.0 and conf[8:].max() < 1e-3


@pytest.fixture(scope="module")
def native_chains(testdata):
    """The first two ProteinNet test chains of 50-64 residues (one folding compilation)."""
    out = [p for p in iter_proteinnet(testdata / "proteinnet" / "testing.gz") if 50 <= len(p) <= 64]
    return out[:2]


@pytest.fixture(scope="module")
def folded(native_chains):
    results = []
    for p in native_chains:
        d, ph, ps = true_distributions(p)
        results.append(fold(d, ph, ps, FAST, seed=0, aatype=p.aatype, id=p.id))
    return results


def test_fold_recovers_native_from_true_distributions(native_chains, folded):
    assert len(native_chains) == 2
    for p, r in zip(native_chains, folded):
        pred = r.protein.atom_positions[:, 1]
        nat = p.atom_positions[:, 1]
        tm = tm_score(pred, nat)
        mirror = tm_score(pred * np.array([1.0, 1.0, -1.0]), nat)
        assert tm >= 0.8, (p.id, tm)
        assert tm > mirror + 0.2, (p.id, tm, mirror)  # not the mirror image
        assert float(rmsd(jnp.asarray(pred), jnp.asarray(nat))) < 3.0


def test_fold_result_contents(native_chains, folded):
    p, r = native_chains[0], folded[0]
    L = len(p)
    prot = r.protein
    assert prot.atom_positions.shape == (L, 5, 3) and prot.id == p.id
    assert r.all_energies.shape == (FAST.num_restarts,)
    assert r.energy == pytest.approx(float(r.all_energies.min()), rel=1e-5)
    assert r.best_restart == int(np.argmin(r.all_energies))
    assert set(r.energy_terms) == {"distogram", "torsion", "clash"}
    total = sum(getattr(FAST, f"weight_{k}") * v for k, v in r.energy_terms.items())
    assert total == pytest.approx(r.energy, rel=1e-4)
    np.testing.assert_array_equal(prot.b_factors, r.confidence)
    assert 0.0 <= r.confidence.min() and r.confidence.max() <= 100.0
    gly = p.aatype == rc.RESTYPE_ORDER["G"]
    np.testing.assert_array_equal(prot.atom_mask[:, rc.CB_IDX], (~gly).astype(np.float32))
    # Ideal covalent geometry and trans peptides in the output.
    x = jnp.asarray(prot.atom_positions)
    np.testing.assert_allclose(np.asarray(distance(x[:-1, 2], x[1:, 0])), rc.BOND_C_N, atol=1e-3)
    np.testing.assert_allclose(np.asarray(distance(x[:, 2], x[:, 3])), rc.BOND_C_O, atol=1e-3)
    np.testing.assert_allclose(np.abs(r.torsions[:-1, 2]), math.pi, atol=1e-4)


def test_fold_is_deterministic_per_seed(native_chains, folded):
    p = native_chains[0]
    d, ph, ps = true_distributions(p)
    again = fold(d, ph, ps, FAST, seed=0, aatype=p.aatype)
    np.testing.assert_array_equal(again.protein.atom_positions, folded[0].protein.atom_positions)
    np.testing.assert_array_equal(again.all_energies, folded[0].all_energies)


def test_restarts_split_across_devices_match_one_device(native_chains):
    # conftest exposes 2 CPU devices: the sharded descent must equal the one-device one on a
    # short run (over hundreds of steps float reordering may send restarts apart).
    from foldnet.structure.fold import _descend, restart_mesh

    assert jax.local_device_count() >= 2
    mesh = restart_mesh(4)
    assert mesh is not None and mesh.devices.size == 2
    assert restart_mesh(3) is None  # 3 restarts do not split over 2 devices
    p = native_chains[0]
    d, ph, ps = true_distributions(p)
    cfg = FAST.replace(num_steps=5)
    potential = make_potential(d, ph, ps, cfg)
    key = jax.random.PRNGKey(0)
    phi0 = jax.random.uniform(key, (4, len(p)), minval=-3.0, maxval=3.0)
    psi0 = jax.random.uniform(jax.random.fold_in(key, 1), (4, len(p)), minval=-3.0, maxval=3.0)
    one = _descend(potential, phi0, psi0, cfg, None)
    split = _descend(potential, phi0, psi0, cfg, mesh)
    np.testing.assert_allclose(np.asarray(split[2]), np.asarray(one[2]), rtol=1e-4)  # final energies
    np.testing.assert_allclose(np.asarray(split[0]), np.asarray(one[0]), atol=1e-3)  # phi
    assert split[0].sharding.device_set == set(mesh.devices.flat)


def test_sample_torsions_follows_the_bin_distribution():
    from foldnet.structure.fold import sample_torsions

    centres = np.asarray(rc.TORSION_CENTERS_RAD)
    width = 2 * np.pi / rc.NUM_TORSION_BINS
    probs = np.full((3, 36), 1e-12)
    probs[0, 5] = 1.0  # residue 0: one bin
    probs[1, [2, 30]] = [0.25, 0.75]  # residue 1: two bins, 1:3
    probs[2] = 1.0  # residue 2: uniform
    log_probs = np.log(probs)
    x = sample_torsions(np.random.default_rng(0), log_probs, 4000, 0.0)
    assert x.shape == (4000, 3) and x.dtype == np.float32
    assert np.all(np.abs(x[:, 0] - centres[5]) <= width / 2 + 1e-6)  # inside its bin
    in_30 = np.abs(x[:, 1] - centres[30]) <= width / 2 + 1e-6
    in_2 = np.abs(x[:, 1] - centres[2]) <= width / 2 + 1e-6
    assert np.all(in_30 | in_2) and abs(in_30.mean() - 0.75) < 0.03  # 3 s.d. of a binomial
    counts = np.bincount(((x[:, 2] - centres[0] + width / 2) // width).astype(int) % 36, minlength=36)
    assert counts.min() > 60 and counts.max() < 170  # ~111 per bin
    noisy = sample_torsions(np.random.default_rng(0), log_probs[:1], 4000, np.radians(10.0))
    assert abs(float(np.std(noisy[:, 0] - centres[5])) - np.hypot(np.radians(10.0), width / np.sqrt(12))) < 0.01
    again = sample_torsions(np.random.default_rng(0), log_probs, 4000, 0.0)
    np.testing.assert_array_equal(x, again)  # same seed, same samples


def test_analytic_torsion_gradient_descends_like_autodiff(native_chains):
    # The same short descent with the analytic torsion gradient and with reverse-mode through
    # the chain builder: equal to f32 rounding (over hundreds of steps the chaotic descent
    # amplifies rounding, so only a short run can be compared).
    from foldnet.structure.fold import _descend

    p = native_chains[1]
    d, ph, ps = true_distributions(p)
    cfg = FAST.replace(num_steps=5, nerf_method="frames", torsion_gradient="analytic")
    potential = make_potential(d, ph, ps, cfg)
    key = jax.random.PRNGKey(3)
    phi0 = jax.random.uniform(key, (2, len(p)), minval=-3.0, maxval=3.0)
    psi0 = jax.random.uniform(jax.random.fold_in(key, 1), (2, len(p)), minval=-3.0, maxval=3.0)
    analytic = _descend(potential, phi0, psi0, cfg, None)
    autodiff = _descend(potential, phi0, psi0, cfg.replace(torsion_gradient="autodiff"), None)
    np.testing.assert_allclose(np.asarray(analytic[4]), np.asarray(autodiff[4]), rtol=1e-4)  # trajectories
    np.testing.assert_allclose(np.asarray(analytic[0]), np.asarray(autodiff[0]), atol=1e-3)  # phi
    np.testing.assert_allclose(np.asarray(analytic[1]), np.asarray(autodiff[1]), atol=1e-3)  # psi
    assert float(np.abs(np.asarray(analytic[0]) - np.asarray(phi0)).max()) > 0.05  # it moved


def test_separation_ramp_stages_and_native_recovery(native_chains, folded):
    from foldnet.structure.fold import _separation_stages
    from foldnet.structure.potential import packed_pair_indices

    p = native_chains[0]
    d, ph, ps = true_distributions(p)
    cfg = FAST.replace(separation_ramp=0.5, ramp_start_separation=12)
    potential = make_potential(d, ph, ps, cfg)
    staged = _separation_stages(potential, cfg)
    i, j = packed_pair_indices(potential.row.shape[1])
    sep = j - i
    full = np.asarray(potential.dist_weight)
    # Step 0: only pairs up to 12 apart; half-way through the ramp (step 50 of 100) the cutoff
    # is 12 + 0.5 * (M - 12); from the end of the ramp on, every pair.
    np.testing.assert_array_equal(np.asarray(staged(jnp.int32(0)).dist_weight), full * (sep <= 12))
    m = potential.row.shape[1]
    np.testing.assert_array_equal(np.asarray(staged(jnp.int32(50)).dist_weight), full * (sep <= 12 + 0.5 * (m - 12)))
    np.testing.assert_array_equal(np.asarray(staged(jnp.int32(100)).dist_weight), full)
    assert full[sep > 12].sum() > 0  # the chain has long-range pairs the ramp holds back
    # Off: the potential itself, so folding is bit-identical to the code without the option.
    assert _separation_stages(potential, FAST.replace(separation_ramp=0.0))(jnp.int32(0)) is potential
    # With the ramp the true distributions still fold to the native.
    r = fold(d, ph, ps, cfg, seed=0, aatype=p.aatype)
    assert tm_score(r.protein.atom_positions[:, 1], p.atom_positions[:, 1]) >= 0.8
    with pytest.raises(ValueError, match="separation_ramp"):
        FoldConfig(separation_ramp=1.5)


def test_cartesian_refinement_keeps_geometry(native_chains, folded):
    p, r = native_chains[0], folded[0]
    d, ph, ps = true_distributions(p)
    cfg = FAST.replace(refine_steps=30, refine_learning_rate=0.01)
    potential = make_potential(d, ph, ps, cfg)
    x = jnp.asarray(r.protein.atom_positions)
    y = refine_cartesian(potential, x, cfg)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert float(rmsd(y[:, 1], x[:, 1])) < 1.0  # a small polish, not a refold
    np.testing.assert_allclose(np.asarray(distance(y[:, 0], y[:, 1])), rc.BOND_N_CA, atol=0.05)
    assert tm_score(np.asarray(y[:, 1]), p.atom_positions[:, 1]) >= 0.8


def test_fold_rejects_bad_input():
    d, ph, ps = _probs(8)
    with pytest.raises(ValueError, match="dist_probs"):
        fold(d[:, :7], ph, ps, FAST)
    with pytest.raises(ValueError, match="phi_probs"):
        fold(d, ph[:, :30], ps, FAST)
    bad = d.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fold(bad, ph, ps, FAST)
