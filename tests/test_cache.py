"""HDF5 cache: exact round trip, windows, stale detection, atomic writes, threads and fork."""

import multiprocessing
import pickle
import threading

import h5py
import numpy as np
import pytest

from dataset_fixtures import small_dataset  # noqa: F401  (session fixture)
from foldnet.data.cache import H5Dataset, StaleCacheError, residue_constants_fingerprint, write_h5
from foldnet.data.featurize import featurize, featurize_distances
from foldnet.data.proteinnet import iter_proteinnet


@pytest.fixture(scope="module")
def chains(testdata):
    out = []
    for p in iter_proteinnet(testdata / "proteinnet" / "testing.gz"):
        out.append(featurize(p, source_id="testing.gz:" + p.id, cath="1.10.8.10" if len(out) % 2 else ""))
        if len(out) == 12:
            break
    del out[3]["profile"]  # one chain without a profile
    return out


def test_round_trip_exact(tmp_path, chains):
    path = write_h5(tmp_path / "t.h5", chains, split="test", source="proteinnet", config={"a": 1})
    ds = H5Dataset(path)
    assert len(ds) == len(chains) and ds.ids == [c["id"] for c in chains]
    np.testing.assert_array_equal(ds.lengths, [len(c["aatype"]) for c in chains])
    assert ds.cath == [c["cath"] for c in chains]
    assert ds.attrs["split"] == "test" and ds.attrs["num_chains"] == len(chains)
    assert ds.attrs["residue_constants_fingerprint"] == residue_constants_fingerprint()
    assert not ds.has_profile[3] and ds.has_profile[0]
    for i, c in enumerate(chains):
        x = ds[i]
        for key in ("aatype", "residue_number", "atom_positions", "atom_mask", "torsions"):
            np.testing.assert_array_equal(x[key], c[key], err_msg=key)
        if i == 3:
            assert "profile" not in x
        else:
            np.testing.assert_array_equal(x["profile"], c["profile"])
    # A window is the same slice of the full chain.
    w = ds.read(5, 7, 30)
    np.testing.assert_array_equal(w["atom_positions"], chains[5]["atom_positions"][7:30])
    assert w["length"] == len(chains[5]["aatype"]) and w["start"] == 7
    prot = ds.protein(0)
    assert prot.id == chains[0]["id"] and len(prot) == len(chains[0]["aatype"])
    with pytest.raises(IndexError):
        ds.read(len(chains))


def test_rewrite_is_byte_identical(tmp_path, chains):
    a = write_h5(tmp_path / "a.h5", chains, split="x", config={"k": 2})
    b = write_h5(tmp_path / "b.h5", chains, split="x", config={"k": 2})
    assert a.read_bytes() == b.read_bytes()


def test_stale_cache_detected(tmp_path, chains):
    path = write_h5(tmp_path / "s.h5", chains[:2])
    with h5py.File(path, "r+") as f:
        f.attrs["residue_constants_fingerprint"] = "0123456789abcdef"
    with pytest.raises(StaleCacheError, match="rebuild"):
        H5Dataset(path)
    assert len(H5Dataset(path, check=False)) == 2
    with h5py.File(path, "r+") as f:
        f.attrs["residue_constants_fingerprint"] = residue_constants_fingerprint()
        f.attrs["format_version"] = 0
    with pytest.raises(StaleCacheError):
        H5Dataset(path)


def test_failed_write_leaves_nothing(tmp_path, chains):
    bad = dict(chains[1])
    bad["torsions"] = bad["torsions"][:-1]
    with pytest.raises(ValueError, match="torsions"):
        write_h5(tmp_path / "bad.h5", [chains[0], bad])
    assert list(tmp_path.iterdir()) == []


def test_stored_distance_maps(tmp_path, data_root, chains):
    d = data_root / "pdnet_related" / "disteval_1guuA"
    seq = (d / "1guuA.fasta").read_text().split("\n", 1)[1].replace("\n", "")
    m = np.load(d / "1guuA.true.npy")
    f = featurize_distances("1guuA", seq, m)
    ds = H5Dataset(write_h5(tmp_path / "m.h5", [chains[0], f, chains[2]]))
    assert ds.has_distance_maps
    assert "cb_dist" not in ds[0]
    np.testing.assert_array_equal(ds[1]["cb_dist"], m)
    np.testing.assert_array_equal(ds.read(1, 10, 25)["cb_dist"], m[10:25, 10:25])


def _child_read(ds, i, q):
    q.put((ds.ids[i], ds[i]["atom_positions"].sum()))


def test_threads_fork_and_pickle(small_dataset):  # noqa: F811
    ds = H5Dataset(small_dataset / "val.h5")
    expected = [ds[i]["atom_positions"].sum() for i in range(len(ds))]  # opens in the parent
    results = {}

    def work(k):
        results[k] = [ds[i]["atom_positions"].sum() for i in range(k, len(ds), 3)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(3):
        assert results[k] == expected[k::3]
    # A forked child reopens the file instead of using the parent's handle.
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_read, args=(ds, 7, q))
    p.start()
    got = q.get(timeout=30)
    p.join(timeout=30)
    assert p.exitcode == 0 and got == (ds.ids[7], expected[7])
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2[7]["atom_positions"].sum() == expected[7]


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-dataset"):
        H5Dataset(tmp_path / "nope.h5")
