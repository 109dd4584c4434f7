"""CropLoader / full_length_batches on real chains: masks, geometry, determinism, resume, shards."""

import json

import numpy as np
import pytest

from dataset_fixtures import small_dataset  # noqa: F401  (session fixture)
from foldnet.common import residue_constants as rc
from foldnet.common.geometry_np import cb_distance_map
from foldnet.data.cache import H5Dataset, write_h5
from foldnet.data.featurize import featurize_distances
from foldnet.data.loader import BATCH_KEYS, CropLoader, full_length_batches

N = 64
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ds(small_dataset):  # noqa: F811
    return H5Dataset(small_dataset / "val.h5")


def _take(loader, k):
    out = []
    for b in loader:
        out.append(b)
        if len(out) == k:
            break
    return out


def _equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in BATCH_KEYS)


def test_batch_contract_and_geometry(ds):
    loader = CropLoader(ds, N, 4, seed=3, prefetch=0)
    batches = _take(loader, 6)
    shapes = {"aatype": (4, N), "profile": (4, N, 20), "has_profile": (4,), "residue_index": (4, N),
              "seq_mask": (4, N), "cb_dist": (4, N, N), "pair_mask": (4, N, N), "torsions": (4, N, 3),
              "torsion_mask": (4, N, 3), "atom_positions": (4, N, rc.NUM_ATOMS, 3), "atom_mask": (4, N, rc.NUM_ATOMS),
              "ss8": (4, N), "ss_mask": (4, N), "example_id": (4,), "crop_start": (4,), "length": (4,)}
    saw_pad = saw_crop = False
    for b in batches:
        assert set(b) == set(BATCH_KEYS)
        for k, s in shapes.items():
            assert b[k].shape == s, k
        assert b["aatype"].dtype == np.int32 and b["cb_dist"].dtype == np.float32
        for r in range(4):
            e, s, n = int(b["example_id"][r]), int(b["crop_start"][r]), int(b["length"][r])
            L = int(ds.lengths[e])
            assert n == min(N, L) and 0 <= s <= L - n
            saw_pad |= n < N
            saw_crop |= L > N
            # The crop equals the same slice of the full chain's features / CB map.
            prot = ds.protein(e)
            full_d, full_pm = cb_distance_map(prot)
            np.testing.assert_allclose(b["cb_dist"][r, :n, :n], full_d[s : s + n, s : s + n] * full_pm[s : s + n, s : s + n],
                                       atol=1e-4)
            np.testing.assert_array_equal(b["aatype"][r, :n], prot.aatype[s : s + n])
            np.testing.assert_array_equal(b["residue_index"][r, :n], np.arange(s, s + n))
            full_t = ds[e]["torsions"][s : s + n]
            np.testing.assert_array_equal(b["torsion_mask"][r, :n], np.isfinite(full_t))
            np.testing.assert_array_equal(b["torsions"][r, :n], np.nan_to_num(full_t, nan=0.0))
            # Padding never contributes.
            assert np.all(b["seq_mask"][r, :n] == 1) and np.all(b["seq_mask"][r, n:] == 0)
            assert np.all(b["aatype"][r, n:] == rc.UNK_INDEX) and np.all(b["profile"][r, n:] == 0)
            assert np.all(b["pair_mask"][r, n:, :] == 0) and np.all(b["pair_mask"][r, :, n:] == 0)
            assert np.all(b["torsion_mask"][r, n:] == 0) and np.all(b["cb_dist"][r, n:, :] == 0)
            # Profiles sum to ~1 per real residue.
            np.testing.assert_allclose(b["profile"][r, :n].sum(-1), 1.0, atol=0.03)
        assert not np.isnan(b["torsions"]).any() and not np.isnan(b["cb_dist"]).any()
    assert saw_pad and saw_crop


def test_missing_cb_masks_pairs(tmp_path, ds):
    """A residue without backbone has no CB: its whole row/column of pair_mask is 0."""
    f = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in ds[0].items()}
    L = len(f["aatype"])
    assert L > 32
    s = (L - 32) // 2  # the centered evaluation window
    m = s + 5
    f["atom_mask"][m] = 0
    f["atom_positions"][m] = 0
    f["torsions"][m - 1 : m + 2] = np.nan  # as featurize would: torsions touching it undefined
    h = H5Dataset(write_h5(tmp_path / "m.h5", [f]))
    b = next(iter(CropLoader(h, 32, 1, shuffle=False, random_crop=False, prefetch=0)))
    assert int(b["crop_start"][0]) == s
    assert b["pair_mask"][0, 5].sum() == 0 and b["pair_mask"][0, :, 5].sum() == 0
    assert b["cb_dist"][0, 5].sum() == 0 and b["seq_mask"][0, 5] == 1
    assert b["pair_mask"][0].sum() == 31 * 31
    np.testing.assert_array_equal(b["torsion_mask"][0, 4:7], 0)


def test_stored_map_is_sliced(tmp_path, data_root):
    d = data_root / "pdnet_related" / "disteval_1guuA"
    seq = (d / "1guuA.fasta").read_text().split("\n", 1)[1].replace("\n", "")
    m = np.load(d / "1guuA.true.npy").astype(np.float32)
    m[2, 9] = m[9, 2] = np.nan
    h = H5Dataset(write_h5(tmp_path / "p.h5", [featurize_distances("1guuA", seq, m)]))
    b = next(iter(CropLoader(h, 32, 1, seed=1, prefetch=0)))
    s = int(b["crop_start"][0])
    want = m[s : s + 32, s : s + 32].astype(np.float16).astype(np.float32)
    known = np.isfinite(want)
    np.testing.assert_array_equal(b["pair_mask"][0], known)
    np.testing.assert_array_equal(b["cb_dist"][0][known], want[known])
    assert b["torsion_mask"].sum() == 0 and b["has_profile"][0] == 0


def test_determinism_and_seeds(ds):
    a = _take(CropLoader(ds, N, 4, seed=0, prefetch=0), 5)
    b = _take(CropLoader(ds, N, 4, seed=0, prefetch=0), 5)
    c = _take(CropLoader(ds, N, 4, seed=1, prefetch=0), 5)
    assert all(_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x["example_id"], y["example_id"]) for x, y in zip(a, c))


def test_prefetch_identical(ds):
    a = _take(CropLoader(ds, N, 4, seed=5, prefetch=0, profile_dropout=0.5), 12)
    b = _take(CropLoader(ds, N, 4, seed=5, prefetch=3, profile_dropout=0.5), 12)
    assert all(_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_exact_resume_across_epochs(ds, prefetch):
    ref = _take(CropLoader(ds, N, 4, seed=9, prefetch=0), 14)  # 10 batches/epoch: crosses an epoch
    first = CropLoader(ds, N, 4, seed=9, prefetch=prefetch)
    assert len(first) == len(ds) // 4
    _take(first, 7)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] == 0 and state["index"] == 7
    resumed = CropLoader(ds, N, 4, seed=9, prefetch=prefetch)
    resumed.load_state_dict(state)
    rest = _take(resumed, 7)
    assert all(_equal(x, y) for x, y in zip(ref[7:], rest))
    assert resumed.state_dict()["epoch"] == 1
    with pytest.raises(ValueError, match="seed"):
        CropLoader(ds, N, 4, seed=10).load_state_dict(state)


def test_sharding_disjoint_and_complete(ds):
    one = CropLoader(ds, N, 8, seed=2, prefetch=0)
    shards = [CropLoader(ds, N, 4, seed=2, prefetch=0, process_index=p, process_count=2) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(one)
    a, b, g = _take(shards[0], len(one)), _take(shards[1], len(one)), _take(one, len(one))
    ids0 = np.concatenate([x["example_id"] for x in a])
    ids1 = np.concatenate([x["example_id"] for x in b])
    assert not set(ids0) & set(ids1)
    # Global batch of 2 processes x 4 == the 1-process batch of 8, crops included.
    for x, y, z in zip(a, b, g):
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(np.concatenate([x[k], y[k]]), z[k], err_msg=k)
    assert sorted(np.concatenate([ids0, ids1])) == sorted(np.concatenate([z["example_id"] for z in g]))


def test_profile_dropout_rate(ds):
    loader = CropLoader(ds, 16, 8, seed=0, prefetch=0, profile_dropout=0.3)
    batches = _take(loader, 50)  # 400 crops
    kept = np.concatenate([b["has_profile"] for b in batches])
    rate = 1.0 - kept.mean()
    assert abs(rate - 0.3) < 0.07, rate  # binomial sd ~0.023
    for b in batches:
        dropped = b["has_profile"] == 0
        assert np.all(b["profile"][dropped] == 0)


def test_eval_crops_and_no_repeat(ds):
    loader = CropLoader(ds, N, 6, shuffle=False, random_crop=False, repeat=False, drop_remainder=False, prefetch=0)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(ds) // 6)
    ids = np.concatenate([b["example_id"] for b in batches])
    np.testing.assert_array_equal(ids[: len(ds)], np.arange(len(ds)))
    assert np.all(ids[len(ds):] == -1)
    last = batches[-1]
    pad = last["example_id"] == -1
    assert last["seq_mask"][pad].sum() == 0 and last["pair_mask"][pad].sum() == 0
    for b in batches:
        for r in range(6):
            e = int(b["example_id"][r])
            if e >= 0:
                assert b["crop_start"][r] == max(0, (int(ds.lengths[e]) - N) // 2)
    assert list(loader)[0]["example_id"][0] == 0  # the next epoch starts over


def test_prefetch_error_reraised(ds, monkeypatch):
    loader = CropLoader(ds, N, 2, prefetch=2)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loader, "make_batch", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(iter(loader))


def test_full_length_batches(ds):
    batches = list(full_length_batches(ds, 3, max_length=128))
    assert len(batches) == -(-len(ds) // 3)
    seen = []
    for b in batches:
        n = b["aatype"].shape[1]
        real = b["example_id"] >= 0
        longest = int(max(ds.lengths[e] for e in b["example_id"][real]))
        assert n % 8 == 0 or n == 128
        assert n == min(-(-longest // 8) * 8, 128)
        for r in np.nonzero(real)[0]:
            e = int(b["example_id"][r])
            assert b["length"][r] == min(int(ds.lengths[e]), 128) and b["crop_start"][r] == 0
        seen += list(b["example_id"][real])
    assert seen == list(range(len(ds)))


def test_data_pipeline_never_imports_jax():
    import subprocess
    import sys

    code = ("import sys, foldnet.data.loader, foldnet.data.build, foldnet.data.split; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO_ROOT))


def test_discontiguous_crops_keep_true_positions_and_geometry(ds):
    loader = CropLoader(ds, N, 4, seed=5, prefetch=0, discontiguous_prob=1.0)
    again = CropLoader(ds, N, 4, seed=5, prefetch=0, discontiguous_prob=1.0)
    half, saw_gap = N // 2, False
    for index in range(3):
        b = loader.make_batch(0, index)
        assert _equal(b, again.make_batch(0, index))  # a pure function of (seed, epoch, index)
        for r in range(4):
            e, n = int(b["example_id"][r]), int(b["length"][r])
            L = int(ds.lengths[e])
            pos = b["residue_index"][r, :n]
            if L <= N:  # short chains stay whole
                np.testing.assert_array_equal(pos, np.arange(L))
                continue
            # two runs of N/2 consecutive true positions, the second after the first
            assert n == N and np.all(np.diff(pos[:half]) == 1) and np.all(np.diff(pos[half:]) == 1)
            assert pos[half] >= pos[half - 1] + 1 and pos[-1] < L and b["crop_start"][r] == pos[0]
            saw_gap |= pos[half] > pos[half - 1] + 1
            # every feature is the chain's, gathered at those positions (the pair map too)
            prot = ds.protein(e)
            full_d, full_pm = cb_distance_map(prot)
            np.testing.assert_allclose(b["cb_dist"][r], (full_d * full_pm)[np.ix_(pos, pos)], atol=1e-4)
            np.testing.assert_array_equal(b["aatype"][r], prot.aatype[pos])
            np.testing.assert_allclose(b["atom_positions"][r][b["atom_mask"][r] > 0],
                                       prot.atom_positions[pos][prot.atom_mask[pos] > 0], atol=1e-4)
    assert saw_gap
    # probability 0 (the default) is the contiguous loader, bit for bit
    plain, zero = CropLoader(ds, N, 4, seed=5, prefetch=0), CropLoader(ds, N, 4, seed=5, prefetch=0, discontiguous_prob=0.0)
    assert plain.crop_windows(0, 0) is None and _equal(plain.make_batch(0, 1), zero.make_batch(0, 1))
    with pytest.raises(ValueError, match="discontiguous_prob"):
        CropLoader(ds, N, 4, discontiguous_prob=1.5)


def test_secondary_structure_targets_from_dssp(ds):
    """secondary_structure=True (what model.ss_weight > 0 turns on): ss8 / ss_mask are the chain's
    DSSP states (foldnet.data.dssp, O placed: ProteinNet has none) at the crop's true positions."""
    from foldnet.data.dssp import secondary_structure

    loader = CropLoader(ds, N, 4, seed=2, prefetch=0, discontiguous_prob=0.5, secondary_structure=True)
    off = CropLoader(ds, N, 4, seed=2, prefetch=0, discontiguous_prob=0.5)
    labelled = helix = strand = 0
    for index in range(3):
        b, plain = loader.make_batch(0, index), off.make_batch(0, index)
        assert all(np.array_equal(b[k], plain[k]) for k in BATCH_KEYS if k not in ("ss8", "ss_mask"))
        assert np.all(plain["ss_mask"] == 0) and np.all(plain["ss8"] == rc.SS8_COIL)
        for r in range(4):
            e, n = int(b["example_id"][r]), int(b["length"][r])
            pos = b["residue_index"][r, :n]
            x = ds.read(e, keys=("aatype", "atom_positions", "atom_mask"))
            assert x["atom_mask"][:, rc.O_IDX].max() == 0
            want = secondary_structure(x["atom_positions"], x["atom_mask"], x["aatype"])
            np.testing.assert_array_equal(b["ss8"][r, :n], want[pos])
            np.testing.assert_array_equal(b["ss_mask"][r, :n], x["atom_mask"][pos, :3].min(1))
            assert np.all(b["ss_mask"][r, n:] == 0) and np.all(b["ss8"][r, n:] == rc.SS8_COIL)
            m = b["ss_mask"][r] > 0
            labelled += m.sum()
            helix += np.isin(b["ss8"][r][m], [0, 1, 2]).sum()
            strand += np.isin(b["ss8"][r][m], [3, 4]).sum()
    # real chains: a fair share of helix and strand, not all coil
    assert helix > 0.15 * labelled and strand > 0.05 * labelled, (helix, strand, labelled)
