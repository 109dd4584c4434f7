"""The trRosetta orientation term of the folding potential, and orientations through tiling."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet
from foldnet.geometry.dihedral import bond_angle, dihedral
from foldnet.inference.tiling import TilingConfig, predict_tiled
from foldnet.metrics import tm_score
from foldnet.model.heads import orientation_targets
from foldnet.structure import (
    FoldConfig,
    energy_terms,
    fold,
    make_potential,
    total_energy,
    true_distributions,
    true_orientations,
)
from foldnet.structure.potential import orientation_angles

FAST = FoldConfig(num_restarts=4, num_steps=200, learning_rate=0.15)


@pytest.fixture(scope="module")
def chain(testdata):
    """A 50-64 residue ProteinNet test chain, CB slot = virtual CB (as in a folded backbone)."""
    p = next(p for p in iter_proteinnet(testdata / "proteinnet" / "testing.gz") if 50 <= len(p) <= 64)
    x = p.atom_positions.copy()
    x[:, rc.CB_IDX] = geometry_np.virtual_cb(x[:, rc.N_IDX], x[:, rc.CA_IDX], x[:, rc.C_IDX])
    m = p.atom_mask.copy()
    m[:, rc.CB_IDX] = 1.0
    return p.replace(atom_positions=x, atom_mask=m)


def test_angles_and_oracle_bins_match_the_head_definitions(chain):
    x = jnp.asarray(chain.atom_positions)
    ang = orientation_angles(x)
    ca, cb, n = x[:, rc.CA_IDX], x[:, rc.CB_IDX], x[:, rc.N_IDX]
    i, j = (slice(None), None), (None, slice(None))
    ref = {"omega": dihedral(ca[i], cb[i], cb[j], ca[j]), "theta": dihedral(n[i], ca[i], cb[i], cb[j]),
           "phi": bond_angle(ca[i], cb[i], cb[j])}
    off = ~np.eye(len(chain), dtype=bool)
    for k, want in ref.items():
        c, s = (np.asarray(v) for v in ang[k])
        err = np.abs(np.angle(np.exp(1j * (np.arctan2(s, c) - np.asarray(want)))))[off]
        assert err.max() < 1e-3, k
    bins, mask = orientation_targets(x[None], jnp.asarray(chain.atom_mask)[None])
    oracle = true_orientations(chain)
    for k in bins:
        same = np.argmax(oracle[k], -1) == np.asarray(bins[k][0])
        assert same[np.asarray(mask[0]) > 0].all(), k


def _perturbed(chain, sigma, seed):
    rng = np.random.default_rng(seed)
    x = chain.atom_positions + rng.normal(0, sigma, chain.atom_positions.shape).astype(np.float32)
    x[:, rc.CB_IDX] = geometry_np.virtual_cb(x[:, rc.N_IDX], x[:, rc.CA_IDX], x[:, rc.C_IDX])
    return x


def test_orientation_energy_minimal_at_native_and_finite_gradient(chain):
    L = len(chain)
    d, ph, ps = true_distributions(chain)
    cfg = FoldConfig(weight_orientation=1.0)
    potential = make_potential(d, ph, ps, cfg, orientation=true_orientations(chain))
    zeros = jnp.zeros(L)
    e = jax.jit(lambda y: energy_terms(potential, y, zeros, zeros, cfg)["orientation"])
    native = float(e(jnp.asarray(chain.atom_positions)))
    assert native >= 0.0
    for seed, sigma in enumerate((0.5, 1.0, 2.0)):
        assert native < float(e(jnp.asarray(_perturbed(chain, sigma, seed)))), sigma
    grad = jax.jit(jax.grad(lambda y: total_energy(energy_terms(potential, y, zeros, zeros, cfg), cfg)))
    bad = chain.atom_positions.copy()
    bad[5] = bad[20]  # two coincident residues: zero-length pair vectors
    bad[7, rc.CB_IDX] = bad[7, rc.CA_IDX]  # a collapsed CA-CB bond
    for y in (chain.atom_positions, _perturbed(chain, 1.0, 9), bad):
        g = np.asarray(grad(jnp.asarray(y)))
        assert np.all(np.isfinite(g))
    assert np.abs(np.asarray(grad(jnp.asarray(chain.atom_positions)))).max() > 0


def test_weight_zero_is_bit_identical(chain):
    d, ph, ps = true_distributions(chain)
    orient = true_orientations(chain)
    cfg = FAST.replace(num_steps=20)
    assert cfg.weight_orientation == 0.0
    potential = make_potential(d, ph, ps, cfg, orientation=orient)
    assert potential.orient_weight is None
    old = fold(d, ph, ps, cfg, seed=0)
    new = fold(d, ph, ps, cfg, seed=0, orientation=orient)
    assert set(new.energy_terms) == {"distogram", "torsion", "clash"}
    np.testing.assert_array_equal(old.protein.atom_positions, new.protein.atom_positions)
    np.testing.assert_array_equal(old.all_energies, new.all_energies)
    with pytest.raises(ValueError, match="orientation"):
        fold(d, ph, ps, cfg.replace(weight_orientation=1.0), seed=0)


def test_fold_with_true_orientations_at_least_as_good(chain):
    d, ph, ps = true_distributions(chain)
    ca = chain.atom_positions[:, rc.CA_IDX]
    base = fold(d, ph, ps, FAST, seed=0)
    cfg = FAST.replace(weight_orientation=1.0)
    with_o = fold(d, ph, ps, cfg, seed=0, orientation=true_orientations(chain))
    assert "orientation" in with_o.energy_terms and np.isfinite(with_o.energy)
    tm0 = tm_score(base.protein.atom_positions[:, rc.CA_IDX], ca)
    tm1 = tm_score(with_o.protein.atom_positions[:, rc.CA_IDX], ca)
    assert tm1 >= tm0 - 0.01, (tm0, tm1)
    assert tm1 > 0.5


def _fake_apply(with_orientation):
    """Window outputs that are fixed functions of the global (i, j): asymmetric on purpose."""
    def f(ri, bins, salt):
        k = (3 * ri[:, :, None] + 7 * ri[:, None, :] + salt) % bins
        return np.eye(bins, dtype=np.float32)[k]

    def apply_fn(batch):
        ri = batch["residue_index"]
        B, N = ri.shape
        out = {"dist_probs": np.full((B, N, N, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS, np.float32),
               "phi_probs": np.full((B, N, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS, np.float32),
               "psi_probs": np.full((B, N, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS, np.float32)}
        if with_orientation:
            for salt, name in enumerate(rc.ORIENTATION_NUM_BINS):
                out[f"orient_{name}_probs"] = f(ri, rc.ORIENTATION_NUM_BINS[name], salt)
        return out

    return apply_fn, f


def test_tiling_keeps_theta_phi_directional(caplog):
    L = 75
    feats = {"aatype": np.zeros(L, np.int32), "profile": np.zeros((L, 20), np.float32),
             "has_profile": np.float32(0.0), "residue_index": np.arange(L, dtype=np.int32)}
    cfg = TilingConfig(crop_size=32, stride=8, batch_size=3, pad_multiple=16)
    apply_fn, f = _fake_apply(True)
    out = predict_tiled(apply_fn, feats, cfg)
    assert out["num_windows"] > 1
    ri = np.arange(L)[None]
    for salt, name in enumerate(rc.ORIENTATION_NUM_BINS):
        want = f(ri, rc.ORIENTATION_NUM_BINS[name], salt)[0]
        if name == "omega":
            want = 0.5 * (want + want.transpose(1, 0, 2))
        np.testing.assert_allclose(out[f"orient_{name}_probs"], want, atol=1e-6)
    assert not np.allclose(out["orient_theta_probs"], out["orient_theta_probs"].transpose(1, 0, 2))
    plain = predict_tiled(_fake_apply(False)[0], feats, cfg)
    assert not any(k.startswith("orient_") for k in plain)
    for k in ("dist_probs", "phi_probs", "psi_probs", "pair_coverage"):
        np.testing.assert_array_equal(plain[k], out[k])
    # weight > 0 without orientations: fold_distributions warns and folds without the term.
    from foldnet.inference.predict import orientation_inputs

    with caplog.at_level(logging.WARNING):
        got, cfg2 = orientation_inputs(plain, FoldConfig(weight_orientation=1.0))
    assert got is None and cfg2.weight_orientation == 0.0
    got, cfg3 = orientation_inputs(out, FoldConfig(weight_orientation=1.0))
    assert set(got) == {"omega", "theta", "phi"} and cfg3.weight_orientation == 1.0
