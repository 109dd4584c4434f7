"""build-dataset on real files: outputs, skip-and-report, idempotence, split modes, all sources, CLI."""

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from dataset_fixtures import SMALL_MAX_CHAINS, small_config, small_dataset  # noqa: F401
from foldnet.data.build import build_dataset, load_manifest
from foldnet.data.cache import H5Dataset
from foldnet.data.config import BuildConfig, LeakageConfig, PdbDirSourceConfig, PdnetSourceConfig, ProteinNetSourceConfig, SplitConfig
from foldnet.data.split import groups_of, read_chain_labels

QUIET = dict(log=lambda *a, **k: None)
REPO = Path(__file__).resolve().parent.parent


def _no_tmp(out: Path):
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_outputs_of_small_build(small_dataset, data_root):  # noqa: F811
    out = small_dataset
    m = load_manifest(out)
    assert set(m["splits"]) == {"val", "test"}
    for s, info in m["splits"].items():
        ds = H5Dataset(out / info["file"])
        assert len(ds) == info["chains"] == SMALL_MAX_CHAINS
        assert int(ds.lengths.sum()) == info["residues"]
        assert all(ds.cath) and info["labelled"] == SMALL_MAX_CHAINS  # labels from chains.tsv.gz
        assert ds.attrs["source"] == "proteinnet" and json.loads(ds.attrs["config"])["max_chains"] == SMALL_MAX_CHAINS
    # The first validation record, with its label from the ProMod3 table (16pk_1_A -> 16pkA).
    val = H5Dataset(out / "val.h5")
    with gzip.open(data_root / "proteinnet" / "validation.gz", "rt") as fh:
        fh.readline()
        first_id = fh.readline().strip()
    assert val.ids[0] == first_id
    pdb, _, chain = first_id.split("_")
    assert val.cath[0] == read_chain_labels(data_root / "promod3_structure_db" / "chains.tsv.gz")[pdb + chain]
    leak = json.loads((out / "leakage.json").read_text())
    assert leak["pairs"]["val~test"]["shared_topology"]["count"] == 0
    assert (out / "skipped.tsv").read_text().splitlines()[0] == "id\tfile\treason"
    _no_tmp(out)


def _write_bad_proteinnet(data_root: Path, path: Path) -> list[str]:
    """The first 4 validation records, the 2nd with a bad letter, the 4th with a short [TERTIARY] row."""
    records, cur = [], []
    with gzip.open(data_root / "proteinnet" / "validation.gz", "rt") as fh:
        for line in fh:
            if line.strip() == "[ID]" and cur:
                records.append(cur)
                cur = []
                if len(records) == 4:
                    break
            cur.append(line)
    ids = [r[1].strip() for r in records]
    records[1][3] = "J1" + records[1][3][2:]  # "1" is not a residue letter
    t = records[3].index("[TERTIARY]\n")
    records[3][t + 2] = " ".join(records[3][t + 2].split()[:-1]) + "\n"
    path.write_text("".join("".join(r) for r in records))
    return ids


def test_bad_records_skipped_and_reported(tmp_path, data_root):
    src = tmp_path / "bad.txt"
    ids = _write_bad_proteinnet(data_root, src)
    cfg = BuildConfig(proteinnet=ProteinNetSourceConfig(files={"train": str(src)}), max_length=300)
    res = build_dataset(cfg, tmp_path / "out", **QUIET)
    ds = H5Dataset(tmp_path / "out" / "train.h5")
    rows = [r.split("\t") for r in (tmp_path / "out" / "skipped.tsv").read_text().splitlines()[1:]]
    reasons = {r[0]: r[2] for r in rows}
    assert reasons[ids[1]].startswith("invalid residue letter '1'")
    assert "[TERTIARY] row has" in reasons[ids[3]]
    assert all(r[1] == str(src) for r in rows)
    kept = [i for i in (ids[0], ids[2]) if i not in reasons]
    assert ds.ids == kept and len(res.skipped) == len(rows)
    for r in rows:  # anything else skipped was over max_length
        assert r[0] in (ids[1], ids[3]) or r[2].startswith("length")
    _no_tmp(tmp_path / "out")


def test_idempotent_and_byte_identical(tmp_path, data_root):
    cfg = small_config(data_root, max_chains=8)
    out = tmp_path / "o"
    first = build_dataset(cfg, out, **QUIET)
    assert not first.up_to_date
    before = {p.name: p.read_bytes() for p in out.glob("*.h5")}
    assert build_dataset(cfg, out, **QUIET).up_to_date
    cfg.force = True
    forced = build_dataset(cfg, out, **QUIET)
    assert not forced.up_to_date
    assert {p.name: p.read_bytes() for p in out.glob("*.h5")} == before
    cfg.force, cfg.max_chains = False, 6  # another config -> another build key -> rebuilt
    assert not build_dataset(cfg, out, **QUIET).up_to_date
    assert len(H5Dataset(out / "val.h5")) == 6
    (out / "val.h5").write_bytes(b"corrupt")  # a damaged output is rebuilt
    assert not build_dataset(cfg, out, **QUIET).up_to_date
    cfg.proteinnet.files = {"val": cfg.proteinnet.files["val"]}  # test.h5 is no longer produced
    build_dataset(cfg, out, **QUIET)
    assert sorted(p.name for p in out.glob("*.h5")) == ["val.h5"]


def test_cath_split_mode_pools_and_separates(tmp_path, data_root):
    cfg = small_config(data_root, max_chains=None, split=SplitConfig(mode="cath", level="superfamily",
                                                                      val_fraction=0.2, test_fraction=0.2, seed=3))
    cfg.proteinnet.files = {"all": str(data_root / "proteinnet" / "validation.gz")}
    res = build_dataset(cfg, tmp_path / "c", **QUIET)
    info = res.manifest["splits"]
    assert set(info) == {"train", "val", "test"} and sum(v["chains"] for v in info.values()) == 492
    for pair, e in res.leakage["pairs"].items():
        assert e["shared_superfamily"]["count"] == 0, pair
    groups = [set().union(*(groups_of(c, "superfamily") for c in H5Dataset(tmp_path / "c" / f"{s}.h5").cath))
              for s in info]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])


def test_pdb_dir_with_split_file(tmp_path, data_root):
    src = data_root / "promod3_structure_db" / "pdb_single_domain"
    d = tmp_path / "pdbs"
    d.mkdir()
    names = {"16vpA": "train", "1a17A": "train", "1a1xA": "test", "1a32A": "test", "1a6jB": "val", "1b0uA": None}
    for n in names:
        shutil.copy(src / f"{n}.pdb.gz", d)
    (d / "2bad.pdb").write_text("HEADER    NOTHING\nEND\n")
    cfg = BuildConfig(source="pdb_dir", pdb_dir=PdbDirSourceConfig(path=str(d)), workers=2,
                      split=SplitConfig(mode="file", file=str(data_root / "promod3_structure_db" / "splits_recommended.tsv")))
    res = build_dataset(cfg, tmp_path / "p", **QUIET)
    got = {}
    for s in res.manifest["splits"]:
        ds = H5Dataset(tmp_path / "p" / f"{s}.h5")
        got.update({i: s for i in ds.ids})
        assert all(c.count(".") == 3 for c in ds.cath)  # REMARK 901 labels
        x = ds[0]
        assert x["atom_mask"][:, :5].all()  # N, CA, C, O from the file + virtual CB
    assert got == {n: s for n, s in names.items() if s}
    reasons = {k.id: k.reason for k in res.skipped}
    assert reasons["1b0uA"] == "not in split file" and "2bad" in reasons
    assert H5Dataset(tmp_path / "p" / "train.h5").cath[0] == "1.10.1290.10"  # 16vpA


def test_pdb_list_with_domains(tmp_path, data_root):
    t = data_root / "cath_tools_testdata"
    lst = tmp_path / "list.tsv"
    lst.write_text(
        "path\tdomain\tboundaries\tsplit\n"
        f"{t / '1hykA'}\t1hykA00\t\ttrain\n"
        f"{t / '1wmtA'}\t1wmtA00\t\ttest\n"
        f"{t / '1c55A'}\tpart1c55\t5-24:A\ttrain\n"
    )
    cfg = BuildConfig(source="pdb_dir", pdb_dir=PdbDirSourceConfig(
        path=str(lst), domain_list=str(data_root / "cath_classification" / "cath-domain-list-S35-v4_1_0.txt")))
    res = build_dataset(cfg, tmp_path / "l", **QUIET)
    train = H5Dataset(tmp_path / "l" / "train.h5")
    test = H5Dataset(tmp_path / "l" / "test.h5")
    assert train.ids == ["1hykA00", "part1c55"] and test.ids == ["1wmtA00"]
    assert train.cath[0] == "4.10.760.10" and test.cath[0] == "3.30.30.10"  # from the CLF list
    part = train[1]
    assert len(part["aatype"]) == 20 and part["residue_number"][0] == 5 and part["residue_number"][-1] == 24
    assert res.manifest["splits"]["train"]["chains"] == 2


def test_pdnet_source(tmp_path, data_root):
    from foldnet.data.pdnet import PDNET_PSSM_ALPHABET, write_pdnet_distances

    d = data_root / "pdnet_related" / "disteval_1guuA"
    seq = (d / "1guuA.fasta").read_text().split("\n", 1)[1].replace("\n", "")
    cb = np.load(d / "1guuA.true.npy")
    L = len(seq)
    dist, feat = tmp_path / "dist", tmp_path / "feat"
    dist.mkdir(), feat.mkdir()
    write_pdnet_distances(dist / "1guuA-cb.npy", seq, cb)
    (dist / "2xxxA-cb.npy").write_bytes(b"not an npy file")
    pssm = np.zeros((L, 22), np.float32)
    pssm[np.arange(L), [PDNET_PSSM_ALPHABET.index(a) for a in seq]] = 1.0  # one-hot of the sequence
    pkl = {"seq": seq, "ss": np.zeros((3, L)), "pssm": pssm, "sa": np.zeros(L), "entropy": np.zeros(L),
           "ccmpred": np.zeros((L, L)), "freecon": np.zeros((L, L)), "potential": np.zeros((L, L))}
    (feat / "1guuA.pkl").write_bytes(pickle.dumps(pkl))
    cfg = BuildConfig(source="pdnet", pdnet=PdnetSourceConfig(distances_dir=str(dist), features_dir=str(feat)))
    res = build_dataset(cfg, tmp_path / "n", **QUIET)
    ds = H5Dataset(tmp_path / "n" / "train.h5")
    assert ds.ids == ["1guuA"] and ds.has_distance_maps
    x = ds[0]
    np.testing.assert_array_equal(x["cb_dist"], cb)
    # The one-hot pssm becomes a one-hot profile in rc.RESTYPES order.
    from foldnet.common import residue_constants as rc

    np.testing.assert_array_equal(np.argmax(x["profile"], -1), rc.sequence_to_aatype(seq))
    assert [k.id for k in res.skipped] == ["2xxxA"]


def test_hydra_configs_and_cli(tmp_path, data_root, monkeypatch):
    from hydra import compose, initialize_config_dir

    from foldnet.cli.build_dataset import run
    from foldnet.data.config import data_config

    groups = sorted(p.stem for p in (REPO / "configs" / "data").glob("*.yaml"))
    assert {"proteinnet", "proteinnet_small"} <= set(groups)
    monkeypatch.setenv("FOLDNET_DATASETS", str(tmp_path / "ds"))
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        for g in groups:
            cfg = compose("build_dataset", overrides=[f"data={g}", f"data_root={data_root}"])
            dc = data_config(cfg.data)
            assert dc.name == g and dc.dir == str(tmp_path / "ds" / g) and dc.train == f"{dc.dir}/train.h5"
        cfg = compose("build_dataset", overrides=["data=proteinnet_small", "data.build.max_chains=5",
                                                  "data.build.leakage.enabled=false", "verbose=false"])
        manifest = run(cfg)
    assert {s: v["chains"] for s, v in manifest["splits"].items()} == {"train": 5, "val": 5, "test": 5}
    assert (tmp_path / "ds" / "proteinnet_small" / "train.h5").is_file()
    assert str(data_root) in manifest["config"]["proteinnet"]["files"]["train"]


def test_truncated_gzip_keeps_what_was_read(tmp_path, data_root):
    src = tmp_path / "trunc.gz"
    src.write_bytes((data_root / "proteinnet" / "validation.gz").read_bytes()[:200_000])
    cfg = BuildConfig(proteinnet=ProteinNetSourceConfig(files={"val": str(src)}), leakage=LeakageConfig(enabled=False))
    res = build_dataset(cfg, tmp_path / "t", **QUIET)
    n = res.manifest["splits"]["val"]["chains"]
    assert n >= 3
    last = res.skipped[-1]
    assert last.file == str(src) and "truncated or corrupt gzip data after line" in last.reason
    _no_tmp(tmp_path / "t")


def test_sharded_parallel_parse_matches_sequential(tmp_path, data_root, monkeypatch):
    """workers=2 cuts files into record shards: same bytes, same skip reports (original lines)."""
    import foldnet.data.build as build

    monkeypatch.setattr(build, "PROTEINNET_SHARD_RECORDS", 2)
    bad = tmp_path / "bad.txt"
    ids = _write_bad_proteinnet(data_root, bad)
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes((data_root / "proteinnet" / "validation.gz").read_bytes()[:120_000])
    outs = {}
    for w in (1, 2):
        cfg = BuildConfig(proteinnet=ProteinNetSourceConfig(files={"train": str(bad), "val": str(trunc)}),
                          workers=w, leakage=LeakageConfig(enabled=False))
        res = build_dataset(cfg, tmp_path / f"w{w}", **QUIET)
        outs[w] = ({p.name: p.read_bytes() for p in (tmp_path / f"w{w}").glob("*.h5")},
                   [(k.id, k.file, k.reason) for k in res.skipped])
    assert outs[1][0] == outs[2][0] and len(outs[1][0]) == 2
    by_id = {k[0]: k for k in outs[2][1]}
    by_id1 = {k[0]: k for k in outs[1][1]}
    assert by_id[ids[1]][2].startswith(by_id1[ids[1]][2]) and by_id[ids[1]][1] == str(bad)
    # The sharded report names the line of the original file: the [PRIMARY] row of record 2.
    line = int(by_id[ids[1]][2].rsplit("line ", 1)[1].rstrip(")"))
    assert bad.read_text().splitlines()[line - 1].startswith("J1")
    assert any(k[2].startswith("stopped reading") for k in outs[2][1])
