"""CATH labels, splits by CATH group / split file, and the leakage report on real chains."""

import gzip

import pytest

from foldnet.data import split as S


@pytest.fixture(scope="module")
def promod3(data_root):
    db = data_root / "promod3_structure_db"
    labels = S.read_chain_labels(db / "chains.tsv.gz")
    splits = S.read_split_file(db / "splits_recommended.tsv")
    seqs = {}
    with gzip.open(db / "chains.tsv.gz", "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        i = header.index("sequence")
        for line in fh:
            f = line.rstrip("\n").split("\t")
            seqs[f[0]] = f[i]
    return labels, splits, seqs


def test_chain_names():
    assert S.chain_name("16pk_1_A") == "16pkA"
    assert S.chain_name("1abc_2_AB") == "1abcAB"
    assert S.chain_name("1c0pA01") == "1c0pA"
    assert S.chain_name("custom") == "custom"
    assert S.topology("3.40.50.720") == "3.40.50"
    assert S.groups_of("3.90.15.10,1.20.120.380", "topology") == {"3.90.15", "1.20.120"}
    with pytest.raises(ValueError):
        S.groups_of("1.2.3.4", "fold")


def test_real_labels_and_split_file(promod3):
    labels, splits, _ = promod3
    # Multi-domain chains: labels in domain-id order (1a41A01, 1a41A02).
    assert labels["1a41A"] == "3.90.15.10,1.20.120.380"
    assert labels["1a5tA"] == "3.40.50.300,1.10.8.10,1.20.272.10"
    assert labels["16vpA"] == "1.10.1290.10"
    assert "12asA" not in labels  # no CATH domain
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 7270, "val": 492, "test": 709}
    assert "1a12C" not in splits  # unlabeled_train_ok rows are not train/val/test


def test_assign_by_cath_rules():
    cath = ["1.10.8.10", "1.10.8.20", "2.40.50.140", "2.40.50.140,1.10.8.10", "3.40.50.300", "", "3.40.50.300"]
    out = S.assign_by_cath(cath, level="topology", val_fraction=0.2, test_fraction=0.2, seed=0)
    out_sf = S.assign_by_cath(cath, level="superfamily", val_fraction=0.2, test_fraction=0.2, seed=0)
    for assigned, level in ((out, "topology"), (out_sf, "superfamily")):
        assert assigned[5] == "train"  # unlabeled -> train
        seen = {}
        for c, s in zip(cath, assigned):
            for g in S.groups_of(c, level):
                seen.setdefault(g, set()).add(s)
        # A held-out group never appears in train; a chain is held out if any domain is.
        for g, ss in seen.items():
            assert not ({"val", "test"} & ss and "train" in ss), (g, ss)
    assert S.assign_by_cath(cath, unlabeled="drop")[5] is None
    assert S.assign_by_cath(cath, seed=4) == S.assign_by_cath(cath, seed=4)


def test_assign_by_cath_real(promod3):
    labels, splits, _ = promod3
    names = sorted(splits)
    cath = [labels.get(n, "") for n in names]
    a = S.assign_by_cath(cath, level="topology", val_fraction=0.05, test_fraction=0.1, seed=0)
    b = S.assign_by_cath(cath, level="topology", val_fraction=0.05, test_fraction=0.1, seed=1)
    assert a != b
    frac = {s: a.count(s) / len(a) for s in ("train", "val", "test")}
    # Group granularity (and multi-domain chains pulled into held-out splits) overshoot a little.
    assert 0.09 <= frac["test"] <= 0.2 and 0.04 <= frac["val"] <= 0.12, frac
    groups = {s: {g for c, x in zip(cath, a) if x == s for g in S.groups_of(c, "topology")} for s in frac}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    assert not groups["val"] & groups["test"]


def test_kmer_containment_by_hand():
    a = "ACDEFGHIKL"  # 6 distinct 5-mers
    assert S.near_duplicates([a], [a[:9]], k=5, threshold=0.9) == [(0, 0, 1.0)]  # 5 of 5
    got = S.near_duplicates([a], ["ACDEFGHIKW"], k=5, threshold=0.5)  # 5 shared of 6
    assert got == [(0, 0, pytest.approx(5 / 6))]
    assert S.near_duplicates([a], ["ACDEFGHIKW"], k=5, threshold=0.9) == []
    assert S.near_duplicates([a], ["WWWWWWWWW"], k=5, threshold=0.1) == []


def test_leakage_report_real(promod3):
    labels, splits, seqs = promod3
    inputs = {}
    for name, s in sorted(splits.items()):
        d = inputs.setdefault(s, S.LeakageInput())
        d.ids.append(name)
        d.sequences.append(seqs[name])
        d.cath.append(labels.get(name, ""))
    # its time (~3 s for the 8,471 chains; budget 30 s) is scripts/bench_split.py's job
    rep = S.leakage_report(inputs)
    for pair, e in rep["pairs"].items():
        # The bundled split holds out topologies and 30 % clusters: nothing leaks.
        assert e["shared_topology"]["count"] == 0 and e["exact_duplicates"]["count"] == 0, pair
        assert e["near_duplicates"]["count"] == 0, pair
    # Inject a copy of a test chain with 2 point mutations into val, and an exact copy.
    test = inputs["test"]
    i = next(j for j, q in enumerate(test.sequences) if len(q) >= 200)
    seq = test.sequences[i]
    mut = seq[:50] + ("A" if seq[50] != "A" else "G") + seq[51:150] + ("W" if seq[150] != "W" else "G") + seq[151:]
    inputs["val"].ids += ["mutant", "copy"]
    inputs["val"].sequences += [mut, test.sequences[i + 1]]
    inputs["val"].cath += [test.cath[i], ""]
    rep = S.leakage_report({"val": inputs["val"], "test": test})
    e = rep["pairs"]["val~test"]
    assert e["exact_duplicates"]["pairs"] == [["copy", test.ids[i + 1]]]
    near = {(p[0], p[1]): p[2] for p in e["near_duplicates"]["pairs"]}
    # 2 substitutions remove at most 10 of the >= 196 5-mers.
    assert near[("mutant", test.ids[i])] >= 0.94 and near[("copy", test.ids[i + 1])] == 1.0
    assert e["near_duplicates"]["count"] == 2
    assert e["shared_topology"]["count"] == len(S.groups_of(test.cath[i], "topology"))
    text = S.format_leakage(rep)
    assert "val~test" in text and "exact dup    1" in text


def test_read_split_file_errors(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("#name\tsplit\nabcA\ttraining\nxyzB\tvalidation\nfooC\n")
    with pytest.raises(ValueError, match=":4"):
        S.read_split_file(p)
    p.write_text("abcA\ttraining\nxyzB\tvalidation\nq\texcluded\n")
    assert S.read_split_file(p) == {"abcA": "train", "xyzB": "val"}
