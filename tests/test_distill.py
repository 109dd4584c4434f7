"""Distillation by relabelling (foldnet.train.distill): bin centres, sampling, which crops and
labels change, what the teacher sees, and the loader's teacher profiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dataset_fixtures import small_dataset  # noqa: F401  (session fixture)
from foldnet.common import residue_constants as rc
from foldnet.data.cache import H5Dataset
from foldnet.data.loader import CropLoader
from foldnet.model.heads import angle_to_bin, distance_to_bin
from foldnet.train.distill import _DIST_CENTERS, _TORSION_CENTERS, make_relabel, relabel, sample_bins

B, N = 3, 8


def test_bin_centres_map_back_to_their_bins():
    np.testing.assert_array_equal(distance_to_bin(_DIST_CENTERS), np.arange(rc.NUM_DIST_BINS))
    np.testing.assert_array_equal(angle_to_bin(_TORSION_CENTERS), np.arange(rc.NUM_TORSION_BINS))
    assert float(_DIST_CENTERS[-1]) > rc.DISTOGRAM_MAX  # the overflow bin


def test_sample_bins_follows_the_distribution():
    probs = jnp.tile(jnp.asarray([0.1, 0.0, 0.6, 0.3]), (40000, 1))
    counts = np.bincount(np.asarray(sample_bins(probs, jax.random.PRNGKey(0))), minlength=4) / 40000
    np.testing.assert_allclose(counts, [0.1, 0.0, 0.6, 0.3], atol=0.01)  # binomial sd <= 0.0025
    # unnormalised rows (softmax rounding) and one-hot rows
    onehot = jax.nn.one_hot(jnp.arange(7) % 5, 5) * 1.0001
    np.testing.assert_array_equal(sample_bins(onehot, jax.random.PRNGKey(1)), np.arange(7) % 5)


def _batch(withheld):
    rng = np.random.default_rng(0)
    return {
        "cb_dist": jnp.asarray(rng.uniform(3.0, 30.0, (B, N, N)), jnp.float32),
        "torsions": jnp.asarray(rng.uniform(-np.pi, np.pi, (B, N, 3)), jnp.float32),
        "profile": jnp.zeros((B, N, 21), jnp.float32),
        "has_profile": jnp.asarray([0.0 if w else 1.0 for w in withheld], jnp.float32),
        "teacher_profile": jnp.asarray(rng.uniform(0, 1, (B, N, 21)) * np.asarray(withheld)[:, None, None],
                                       jnp.float32),
        "profile_withheld": jnp.asarray(withheld, jnp.float32),
    }


def _onehot_outputs(dist_bin, phi_bin, psi_bin):
    return {"dist_logits": 1e4 * jax.nn.one_hot(dist_bin, rc.NUM_DIST_BINS),
            "phi_logits": 1e4 * jax.nn.one_hot(phi_bin, rc.NUM_TORSION_BINS),
            "psi_logits": 1e4 * jax.nn.one_hot(psi_bin, rc.NUM_TORSION_BINS)}


def test_relabel_replaces_only_the_withheld_crops_labels():
    batch = _batch([1, 0, 1])
    outs = _onehot_outputs(jnp.full((B, N, N), 7), jnp.full((B, N), 3), jnp.full((B, N), 30))
    new = relabel(batch, outs, jax.random.PRNGKey(0), 1.0)
    for b in (0, 2):  # withheld: every label is the teacher's bin
        np.testing.assert_array_equal(distance_to_bin(new["cb_dist"][b]), 7)
        np.testing.assert_array_equal(angle_to_bin(new["torsions"][b, :, 0]), 3)
        np.testing.assert_array_equal(angle_to_bin(new["torsions"][b, :, 1]), 30)
        np.testing.assert_array_equal(new["torsions"][b, :, 2], batch["torsions"][b, :, 2])  # no omega head
    np.testing.assert_array_equal(new["cb_dist"][1], batch["cb_dist"][1])
    np.testing.assert_array_equal(new["torsions"][1], batch["torsions"][1])
    # weight w: each label is the teacher's with probability w (4 withheld crops x 8 x 8 pairs)
    big = {k: jnp.repeat(v[:1], 4, axis=0) for k, v in _batch([1, 0, 0]).items()}
    big["cb_dist"] = jnp.full((4, N, N), 30.0)  # the overflow bin; the teacher says 7
    new = relabel(big, {"dist_logits": 1e4 * jax.nn.one_hot(jnp.full((4, N, N), 7), rc.NUM_DIST_BINS)},
                  jax.random.PRNGKey(3), 0.3)
    frac = float(jnp.mean(distance_to_bin(new["cb_dist"]) == 7))
    assert abs(frac - 0.3) < 0.06, frac  # 256 pairs: sd 0.029


class _ProfileEcho:
    """A fake teacher whose distogram bin is a function of what it is given: 10 x profile[0, 0]
    rounded when has_profile, else 64; phi bin 5 everywhere."""

    def apply(self, variables, batch, train):
        assert not train and variables == {"params": "teacher"}
        b = jnp.where(batch["has_profile"] > 0, jnp.round(10 * batch["profile"][:, 0, 0]), 64).astype(jnp.int32)
        return {"dist_logits": 1e4 * jax.nn.one_hot(jnp.broadcast_to(b[:, None, None], (B, N, N)), rc.NUM_DIST_BINS),
                "phi_logits": 1e4 * jax.nn.one_hot(jnp.full((B, N), 5), rc.NUM_TORSION_BINS)}


def test_the_teacher_sees_the_withheld_profiles():
    batch = _batch([1, 0, 1])
    fn = jax.jit(make_relabel(_ProfileEcho(), "teacher", 1.0))
    new = fn(batch, jax.random.PRNGKey(0))
    for b in (0, 2):
        want = int(np.round(10 * float(batch["teacher_profile"][b, 0, 0])))
        np.testing.assert_array_equal(distance_to_bin(new["cb_dist"][b]), want)
        np.testing.assert_array_equal(angle_to_bin(new["torsions"][b, :, 0]), 5)
    np.testing.assert_array_equal(new["cb_dist"][1], batch["cb_dist"][1])
    for key in ("profile", "has_profile", "teacher_profile"):  # the student's inputs are unchanged
        np.testing.assert_array_equal(new[key], batch[key])
    # no crop withheld: the batch comes back as it was
    plain = _batch([0, 0, 0])
    same = fn(plain, jax.random.PRNGKey(0))
    for key in plain:
        np.testing.assert_array_equal(same[key], plain[key])
    with pytest.raises(ValueError, match="distill_weight"):
        make_relabel(_ProfileEcho(), "teacher", 0.0)


def test_loader_hands_the_teacher_the_withheld_profiles(small_dataset):  # noqa: F811
    ds = H5Dataset(small_dataset / "val.h5")
    full = CropLoader(ds, 32, 4, seed=0, prefetch=0).make_batch(0, 0)
    dropped = CropLoader(ds, 32, 4, seed=0, prefetch=0, profile_dropout=1.0, teacher_profile=True).make_batch(0, 0)
    assert full["has_profile"].sum() == 4 and dropped["has_profile"].sum() == 0
    np.testing.assert_array_equal(dropped["profile"], 0.0)
    np.testing.assert_array_equal(dropped["teacher_profile"], full["profile"])
    np.testing.assert_array_equal(dropped["profile_withheld"], 1.0)
    kept = CropLoader(ds, 32, 4, seed=0, prefetch=0, teacher_profile=True).make_batch(0, 0)
    np.testing.assert_array_equal(kept["profile"], full["profile"])
    np.testing.assert_array_equal(kept["teacher_profile"], 0.0)
    np.testing.assert_array_equal(kept["profile_withheld"], 0.0)
    assert "teacher_profile" not in full
