"""Tiling the pair network over overlapping windows (foldnet.inference.tiling)."""

import numpy as np
import pytest

from foldnet.common import residue_constants as rc
from foldnet.inference.tiling import TilingConfig, block_starts, make_windows, predict_tiled, window_batch


def _features(L, seed=0, profile=False):
    rng = np.random.default_rng(seed)
    return {
        "aatype": rng.integers(0, 20, L).astype(np.int32),
        "profile": rng.dirichlet(np.ones(20), L).astype(np.float32) if profile else np.zeros((L, 20), np.float32),
        "has_profile": np.float32(1.0 if profile else 0.0),
        "residue_index": np.arange(L, dtype=np.int32),
    }


@pytest.fixture(scope="module")
def tiny():
    import jax

    from foldnet.model import PRESETS, build_model

    cfg = PRESETS["tiny"]
    model = build_model(cfg)
    batch = window_batch(_features(16), [np.arange(16)])
    params = jax.jit(lambda k, b: model.init(k, b, train=False)["params"])(jax.random.PRNGKey(0), batch)

    @jax.jit
    def probs(params, batch):
        out = model.apply({"params": params}, batch, train=False)
        return {k.replace("logits", "probs"): jax.nn.softmax(v, axis=-1) for k, v in out.items()}

    return lambda b: {k: np.asarray(v) for k, v in probs(params, b).items()}


@pytest.mark.parametrize("L,C,s", [(1000, 128, 32), (1000, 128, 64), (100, 64, 32), (130, 128, 64), (65, 64, 7), (97, 16, 8)])
def test_windows_cover_every_pair(L, C, s):
    windows = make_windows(L, C, s)
    cov = np.zeros((L, L), np.int32)
    for w in windows:
        assert len(w) == min(C, L)
        assert len(np.unique(w)) == len(w) and w.min() >= 0 and w.max() < L
        assert np.all(np.diff(w) > 0)
        cov[np.ix_(w, w)] += 1
    assert cov.min() >= 1
    # Blocks of C/2 every s residues: n blocks -> at most n(n-1)/2 windows.
    n = len(block_starts(L, C // 2, s)) if L > C else 1
    assert len(windows) <= max(1, n * (n - 1) // 2)


def test_block_starts_hand_computed():
    assert block_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert block_starts(64, 32, 32) == [0, 32]


def test_off_diagonal_window_is_two_blocks():
    # L = 100, C = 32: blocks of 16 every 16 (the last at 84). Blocks 0 and 2
    # are disjoint and not adjacent, so their window is [0..15] + [32..47].
    windows = make_windows(100, 32, 16)
    as_tuples = {tuple(w.tolist()) for w in windows}
    assert tuple(range(0, 16)) + tuple(range(32, 48)) in as_tuples
    # Adjacent blocks 0 and 1 give the contiguous window [0, 32).
    assert tuple(range(0, 32)) in as_tuples


def test_bookkeeping_with_a_pair_function():
    # A "network" whose output for a pair depends only on the chain positions of
    # the two residues: every window agrees, so the tiled map equals the full map.
    L = 75

    def target(i, j):
        d = np.abs(i - j) % rc.NUM_DIST_BINS
        return np.eye(rc.NUM_DIST_BINS, dtype=np.float32)[d]

    def apply_fn(batch):
        ri = batch["residue_index"]
        dist = target(ri[:, :, None], ri[:, None, :])
        tor = np.eye(rc.NUM_TORSION_BINS, dtype=np.float32)[ri % rc.NUM_TORSION_BINS]
        return {"dist_probs": dist, "phi_probs": tor, "psi_probs": tor[..., ::-1]}

    out = predict_tiled(apply_fn, _features(L), TilingConfig(crop_size=20, stride=5, batch_size=3))
    i = np.arange(L)
    np.testing.assert_array_equal(out["dist_probs"], target(i[:, None], i[None, :]))
    np.testing.assert_array_equal(out["phi_probs"], np.eye(36, dtype=np.float32)[i % 36])
    assert out["pair_coverage"].min() >= 1 and int(out["num_windows"]) == len(make_windows(L, 20, 5))


def test_crop_at_least_length_equals_untiled(tiny):
    L = 40
    f = _features(L, seed=1, profile=True)
    direct = tiny(window_batch(f, [np.arange(L)]))
    for crop in (40, 64):
        out = predict_tiled(tiny, f, TilingConfig(crop_size=crop, stride=16, batch_size=2))
        np.testing.assert_array_equal(out["dist_probs"], direct["dist_probs"][0])
        np.testing.assert_array_equal(out["phi_probs"], direct["phi_probs"][0])
        np.testing.assert_array_equal(out["psi_probs"], direct["psi_probs"][0])
        assert int(out["num_windows"]) == 1


def test_small_crops_on_tiny_model(tiny):
    L = 90
    f = _features(L, seed=2)
    out = predict_tiled(tiny, f, TilingConfig(crop_size=32, stride=8, batch_size=4))
    p = out["dist_probs"]
    assert p.shape == (L, L, rc.NUM_DIST_BINS)
    assert np.all(np.isfinite(p)) and p.min() >= 0
    np.testing.assert_array_equal(p, p.transpose(1, 0, 2))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    for k in ("phi_probs", "psi_probs"):
        assert out[k].shape == (L, rc.NUM_TORSION_BINS)
        np.testing.assert_allclose(out[k].sum(-1), 1.0, atol=1e-5)
    assert out["pair_coverage"].min() >= 1
    assert int(out["num_windows"]) > 1
    # Windows see only their own residues, so the tiled map differs from a
    # full-length pass, but it is an average of probability maps of the same network.
    full = tiny(window_batch(f, [np.arange(L)]))["dist_probs"][0]
    assert not np.allclose(p, full)


def test_padding_to_a_bucket(tiny):
    L = 40
    f = _features(L, seed=3)
    exact = predict_tiled(tiny, f, TilingConfig(crop_size=64, stride=16))
    padded = predict_tiled(tiny, f, TilingConfig(crop_size=64, stride=16, pad_multiple=16))
    # Padded positions (seq_mask 0) are re-masked before every convolution, so padding a
    # chain to a length bucket (fewer compiles) must not change its prediction.
    assert padded["dist_probs"].shape == (L, L, rc.NUM_DIST_BINS)
    np.testing.assert_allclose(padded["dist_probs"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(padded["dist_probs"], exact["dist_probs"], atol=1e-5)
    np.testing.assert_allclose(padded["phi_probs"], exact["phi_probs"], atol=1e-5)
    b = window_batch(f, [np.arange(L)], pad_to=48)
    assert b["aatype"].shape == (1, 48) and b["seq_mask"][0, :L].all() and not b["seq_mask"][0, L:].any()
    np.testing.assert_array_equal(b["residue_index"][0], np.arange(48))
    assert (b["aatype"][0, L:] == rc.UNK_INDEX).all()


def test_config_validation():
    with pytest.raises(ValueError, match="even"):
        TilingConfig(crop_size=33)
    with pytest.raises(ValueError, match="stride"):
        TilingConfig(crop_size=32, stride=17)


def test_unset_crop_takes_the_training_crop():
    unset = TilingConfig(stride=48, batch_size=2)
    assert unset.crop_size is None
    assert unset.for_model(160) == TilingConfig(crop_size=160, stride=48, batch_size=2)
    assert unset.for_model(64).stride == 32  # a stride beyond half the crop would leave gaps: cut to it
    assert TilingConfig(crop_size=96, stride=16).for_model(160) == TilingConfig(crop_size=96, stride=16)  # set: kept
    with pytest.raises(ValueError, match="unset"):
        predict_tiled(lambda b: b, _features(40), unset)
