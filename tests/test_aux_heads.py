"""Free supervision from the coordinates (CA distogram, trRosetta orientations, DSSP head) and
the parameter EMA: targets by hand and against the numpy geometry, loss sums, weight 0 = not
built, EMA arithmetic and skipped steps."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.model import PRESETS, build_model
from foldnet.model.heads import CaDistogramHead, distance_to_bin, orientation_targets
from foldnet.model.model import head_losses
from foldnet.train.optim import OptimConfig
from foldnet.train.state import create_train_state
from foldnet.train.step import make_eval_step, make_train_step
from model_fixtures import FAST_COMPILE, make_batch

CROP = 16
AUX = dict(ca_distogram_weight=0.3, orientation_weight=0.5, ss_weight=0.2)


@pytest.fixture(scope="module")
def batch(testdata):
    return make_batch(testdata, 3, CROP, seed=5)


def _deg_bin(angle_deg: float) -> int:
    return int(math.floor((angle_deg + 180.0) / (360.0 / rc.ORIENTATION_DIHEDRAL_BINS)))


def _atoms(residues):
    """[1, R, 5, 3] positions and [1, R, 5] mask from {atom name: xyz} dicts."""
    x = np.zeros((1, len(residues), rc.NUM_ATOMS, 3), np.float32)
    m = np.zeros((1, len(residues), rc.NUM_ATOMS), np.float32)
    for r, atoms in enumerate(residues):
        for name, xyz in atoms.items():
            x[0, r, rc.ATOM_TYPES.index(name)] = xyz
            m[0, r, rc.ATOM_TYPES.index(name)] = 1.0
    return x, m


def test_orientation_targets_by_hand():
    s, c = math.sin(math.radians(7.5)), math.cos(math.radians(7.5))
    # Residue 0: CB at the origin, CA on +y, N tilted 7.5 deg from +z towards +x.
    # Residue 1: CB 5 A along +x, CA in the plane x = 5 at 97.5 deg from +y about +x, so that
    # omega_01 = +97.5 (mid-bin, away from the 15-degree bin edges).
    r0 = {"CB": (0, 0, 0), "CA": (0, 1.5, 0), "N": (s, 1.5, c)}
    om = math.radians(97.5)  # omega_01: from +y (CA0) rotated about +x by 97.5 deg
    r1 = {"CB": (5, 0, 0), "CA": (5, 1.5 * math.cos(om), 1.5 * math.sin(om)), "N": (6, 0, 1)}
    r2 = {"CB": (30, 0, 0), "CA": (30, 1.5, 0), "N": (30, 1.5, 1)}  # >= 20 A from both
    r3 = {"CA": (0, 0, 3), "N": (0, 1, 3)}  # no CB: masked
    x, m = _atoms([r0, r1, r2, r3])
    bins, mask = orientation_targets(jnp.asarray(x), jnp.asarray(m))
    bins = {k: np.asarray(v)[0] for k, v in bins.items()}
    mask = np.asarray(mask)[0]
    # omega_01 = dihedral(CA0, CB0, CB1, CA1) = +97.5 and omega is symmetric
    assert bins["omega"][0, 1] == bins["omega"][1, 0] == _deg_bin(97.5) == 18
    # theta_01 = dihedral(N0, CA0, CB0, CB1): v = (sin b, 0, cos b), w = +x, axis -y:
    # atan2((b1 x v) . w, v . w) = atan2(-cos b, sin b) = b - 90 = -82.5
    assert bins["theta"][0, 1] == _deg_bin(-82.5) == 6
    # phi_01 = angle(CA0, CB0, CB1) is 90 exactly, a bin edge (5 | 6): the numpy-reference
    # test below checks phi on real geometry.
    assert bins["phi"][0, 1] in (5, 6)
    # pairs >= 20 A apart: the "no contact" bin, for all three
    for k, last in (("omega", 24), ("theta", 24), ("phi", 12)):
        assert bins[k][0, 2] == bins[k][2, 0] == bins[k][1, 2] == last
    # mask: the diagonal and the CB-less residue
    np.testing.assert_array_equal(np.diag(mask), 0)
    assert mask[3].sum() == mask[:, 3].sum() == 0 and mask[0, 1] == mask[1, 0] == mask[0, 2] == 1


def test_orientation_targets_match_numpy_geometry_on_a_real_chain(batch):
    bins, mask = orientation_targets(jnp.asarray(batch["atom_positions"]), jnp.asarray(batch["atom_mask"]))
    x = batch["atom_positions"].astype(np.float64)
    n, ca, cb = x[..., rc.N_IDX, :], x[..., rc.CA_IDX, :], x[..., rc.CB_IDX, :]
    i, j = (slice(None), slice(None), None), (slice(None), None, slice(None))
    shape = batch["cb_dist"].shape + (3,)
    b = lambda a, ix: np.broadcast_to(a[ix], shape)  # noqa: E731
    omega = np.degrees(geometry_np.dihedral(b(ca, i), b(cb, i), b(cb, j), b(ca, j)))
    theta = np.degrees(geometry_np.dihedral(b(n, i), b(ca, i), b(cb, i), b(cb, j)))
    u, v = b(ca, i) - b(cb, i), b(cb, j) - b(cb, i)
    cosang = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-9)
    phi = np.degrees(np.arccos(np.clip(cosang, -1, 1)))
    far = np.linalg.norm(v, axis=-1) >= rc.ORIENTATION_MAX_DIST
    want = {
        "omega": np.where(far, 24, np.floor((omega + 180) / 15)),
        "theta": np.where(far, 24, np.floor((theta + 180) / 15)),
        "phi": np.where(far, 12, np.floor(phi / 15)),
    }
    m = np.asarray(mask) > 0
    assert m.sum() > 500
    for k in want:
        got = np.asarray(bins[k])[m]
        exp = np.clip(want[k][m], 0, 24)
        # float32 vs float64 can only move an angle that sits on a bin edge to the next bin
        assert np.mean(got == exp) > 0.999, k
    # omega is symmetric in (i, j); theta and phi are not
    om = np.asarray(bins["omega"])
    assert np.mean((om == np.swapaxes(om, 1, 2))[m]) > 0.999
    th = np.asarray(bins["theta"])
    assert np.mean((th == np.swapaxes(th, 1, 2))[m]) < 0.9


def test_ca_distogram_loss_by_hand(batch):
    cfg = dataclasses.replace(PRESETS["tiny"], dtype="float32", **AUX)
    ca = batch["atom_positions"][:, :, rc.CA_IDX]
    d = np.linalg.norm(ca[:, :, None] - ca[:, None], axis=-1)
    labels = np.asarray(distance_to_bin(jnp.asarray(d)))
    onehot = 50.0 * jax.nn.one_hot(labels, rc.NUM_DIST_BINS)
    perfect = CaDistogramHead.loss({"ca_dist_logits": onehot}, batch, cfg)["ca_distogram_loss"]
    np.testing.assert_allclose(np.asarray(perfect), 0.0, atol=1e-4)
    uniform = jnp.zeros(d.shape + (rc.NUM_DIST_BINS,))
    flat = CaDistogramHead.loss({"ca_dist_logits": uniform}, batch, cfg)["ca_distogram_loss"]
    np.testing.assert_allclose(np.asarray(flat), math.log(rc.NUM_DIST_BINS), rtol=1e-5)


def test_aux_heads_weight_zero_is_not_built_and_losses_sum(batch):
    base = dataclasses.replace(PRESETS["tiny"], dtype="float32")
    plain = build_model(base).init(jax.random.key(0), batch, train=False)["params"]
    assert not {"ca_distogram_head", "orientation_head", "ss_head"} & set(plain)
    cfg = dataclasses.replace(base, **AUX)
    model = build_model(cfg)
    params = model.init(jax.random.key(0), batch, train=False)["params"]
    assert {"ca_distogram_head", "orientation_head", "ss_head"} <= set(params)
    # the shared trunk and the old heads get the same initial values: adding heads changes nothing else
    for k in plain:
        for a, b in zip(jax.tree_util.tree_leaves(plain[k]), jax.tree_util.tree_leaves(params[k])):
            np.testing.assert_array_equal(a, b)
    batch = dict(batch)
    batch["ss8"] = np.random.default_rng(0).integers(0, rc.NUM_SS8, batch["ss8"].shape).astype(np.int32)
    batch["ss_mask"] = batch["seq_mask"].copy()
    out = model.apply({"params": params}, batch, train=False)
    assert out["ca_dist_logits"].shape == batch["cb_dist"].shape + (rc.NUM_DIST_BINS,)
    assert out["orient_omega_logits"].shape[-1] == 25 and out["orient_phi_logits"].shape[-1] == 13
    assert out["ss8_logits"].shape == batch["aatype"].shape + (rc.NUM_SS8,)
    losses = head_losses(cfg, out, batch)
    want = (losses["distogram_loss"] + losses["torsion_loss"] + 0.3 * losses["ca_distogram_loss"]
            + 0.5 * losses["orientation_loss"] + 0.2 * losses["ss_loss"])
    np.testing.assert_allclose(np.asarray(losses["loss_per_example"]), np.asarray(want), rtol=1e-6)
    o = losses
    np.testing.assert_allclose(np.asarray(o["orientation_loss"]),
                               np.asarray(o["orient_omega_loss"] + o["orient_theta_loss"] + o["orient_phi_loss"]) / 3,
                               rtol=1e-6)
    # near-uniform at init: each CE is close to log(bins)
    assert abs(float(jnp.mean(o["orient_phi_loss"])) - math.log(13)) < 0.5
    ev = make_eval_step(model)(params, batch)
    assert "ss8_probs" in ev and "dist_probs" in ev and "ca_dist_probs" not in ev


def test_parameter_ema_arithmetic_and_skipped_steps(batch):
    cfg = dataclasses.replace(PRESETS["tiny"], dtype="float32")
    opt_cfg = OptimConfig(learning_rate=3e-3, warmup_steps=1, total_steps=10, ema_decay=0.9)
    model, opt, state = create_train_state(cfg, opt_cfg, 0, batch)
    assert state.ema_params is not None and state.eval_params is state.ema_params
    step = jax.jit(make_train_step(model, opt, ema_decay=0.9), compiler_options=FAST_COMPILE)
    leaves = lambda t: [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(t)]  # noqa: E731
    ema = leaves(state.params)
    for t in range(3):
        state, _ = step(state, batch)
        d = min(0.9, (1 + t) / (10 + t))  # 0.1, 0.18..., 0.25: the warm-up of the decay
        ema = [d * e + (1 - d) * p for e, p in zip(ema, leaves(state.params))]
        for a, b in zip(ema, leaves(state.ema_params)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    # a non-finite step is skipped: params and their average stay as they were
    bad = dict(batch)
    bad["profile"] = batch["profile"].copy()
    bad["profile"][0, 2, 4] = np.nan
    before = leaves(state.ema_params)
    state, metrics = step(state, bad)
    assert int(state.total_skips) == 1
    for a, b in zip(before, leaves(state.ema_params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="ema_params"):
        plain = create_train_state(cfg, dataclasses.replace(opt_cfg, ema_decay=0.0), 0, batch)[2]
        make_train_step(model, opt, ema_decay=0.9)(plain, batch)


def test_ss_head_trains_on_loader_dssp_targets(testdata, tmp_path):
    """model.ss_weight > 0 end to end: the loader fills ss8 / ss_mask from foldnet.data.dssp on a
    real cache (ProteinNet chains, O placed) and one training step takes them: finite ss_loss."""
    from dataset_fixtures import train_val_h5
    from foldnet.data.loader import CropLoader

    train, _ = train_val_h5(testdata, tmp_path, 4, 1)
    loader = CropLoader(train, CROP, 2, seed=1, prefetch=0, secondary_structure=True)
    batch = loader.make_batch(0, 0)
    m = batch["ss_mask"] > 0
    assert m.sum() >= CROP and len(set(batch["ss8"][m].tolist())) >= 2  # real labels, not all coil
    cfg = dataclasses.replace(PRESETS["tiny"], dtype="float32", **AUX)
    model, opt, state = create_train_state(cfg, OptimConfig(learning_rate=1e-3, warmup_steps=1, total_steps=4), 0, batch)
    step = jax.jit(make_train_step(model, opt), compiler_options=FAST_COMPILE)
    state, metrics = step(state, batch)
    ss_loss = float(metrics["ss_loss"])
    assert math.isfinite(ss_loss) and 0.5 < ss_loss < 2 * math.log(rc.NUM_SS8)
    assert float(metrics["skipped"]) == 0.0 and int(state.step) == 1
