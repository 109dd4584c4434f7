"""Issue 14: hostile and broken inputs end in one clear line, and nothing is written where it
does not belong (record IDs as paths, pickles that run code, truncated gzip, nan coordinates,
all-bad builds, bad configuration, noisy logs, damaged checkpoints)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from foldnet.common.paths import NameAllocator, UnsafeNameError, confined, safe_stem
from foldnet.data.errors import ConfigError, InputError, ParseError

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["/tmp/somewhere/name", "../../etc/passwd", "a/b", "a\\b", "..", ".",
                                  "a\x00b", "tab\there", "bell\x07", "x" * 400, "CON", ".hidden",
                                  "rtl\u202eevil", "  ", "C:evil"])
def test_safe_stem_never_names_a_path(name, tmp_path):
    stem = safe_stem(name)
    assert "/" not in stem and "\\" not in stem and "\x00" not in stem and not stem.startswith(".")
    assert len(stem.encode()) <= 120 and all(ord(c) >= 32 for c in stem)
    assert confined(tmp_path, stem + ".npz").parent == tmp_path.absolute().resolve()


def test_plain_ids_unchanged_and_sanitised_ones_do_not_collide():
    assert safe_stem("1abcA01") == "1abcA01" and safe_stem("16vp_1_A") == "16vp_1_A"
    assert safe_stem("héllo_β") == "héllo_β" and safe_stem("hello_b") == "hello_b"  # unicode kept
    # "a/b" and "a_b" would both become a_b without the hash suffix
    stems = {safe_stem(n) for n in ["a/b", "a_b", "a\\b", "a\x00b", "a:b"]}
    assert len(stems) == 5
    # two long IDs with the same first 200 characters
    assert safe_stem("y" * 200 + "1") != safe_stem("y" * 200 + "2")
    with pytest.raises(UnsafeNameError):
        safe_stem("")
    with pytest.raises(UnsafeNameError):
        confined("/tmp/out", "../x")


def test_case_only_collisions_get_distinct_stems():
    names = NameAllocator()
    a, b = names.stem("1abcA"), names.stem("1abca")
    assert a == "1abcA" and a.casefold() != b.casefold()
    assert names.stem("1abca") == b  # stable for the same id


def _fake_predict(monkeypatch, tmp_path, fasta_text: str, out: Path, encoding="utf-8"):
    """predict_records with a stub network and fold (real FASTA reading and file writing)."""
    from foldnet.data.fasta import iter_fasta

    sys.path.insert(0, str(Path(__file__).parent))
    from fuzz_corpus import stub_predict_records

    fasta = tmp_path / "in.fasta"
    fasta.write_bytes(fasta_text.encode(encoding))
    return stub_predict_records(list(iter_fasta(fasta, errors="skip")), out, settings="s")


def test_predict_ids_never_write_outside_out_dir(monkeypatch, tmp_path):
    outside = tmp_path / "somewhere"
    outside.mkdir()
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    ids = [f"{outside}/name", "../../escape", "a/b", "a_b", "x" * 300, "1abcA", "1abca", "héllo_β", "hello_b",
           "ctrl\x01x", "nul\x00x"]
    text = "".join(f">{i} desc\n{seq}\n" for i in ids)
    out = tmp_path / "out"
    before = _files_under(tmp_path)
    results = _fake_predict(monkeypatch, tmp_path, text, out)
    new = _files_under(tmp_path) - before - {tmp_path / "in.fasta"}
    assert all(out in p.parents for p in new), [p for p in new if out not in p.parents]
    ok = [r for r in results if r.ok]
    assert len(ok) == 9  # control characters in an id are reported, not written
    bad = [r for r in results if not r.ok]
    assert all("control character" in r.error and "in.fasta:" in r.error for r in bad)
    npz = sorted(p.name for p in out.glob("*.npz"))
    assert len(npz) == 9 and len({n.casefold() for n in npz}) == 9  # no overwrites, no case twins
    assert {"héllo_β.npz", "hello_b.npz", "a_b.npz", "1abcA.npz"} <= set(npz)
    for r in ok:
        with np.load(out / f"{r.file}.npz") as z:
            assert str(z["record_id"]) == r.id


def test_predict_rerun_keeps_finished_records(monkeypatch, tmp_path):
    text = ">r1\nMKTAYIAKQRQISFV\n>r2\nGSHMKLVVLG\n"
    out = tmp_path / "out"
    first = _fake_predict(monkeypatch, tmp_path, text, out)
    assert all(r.ok and not r.resumed for r in first)
    (out / "r2.npz").unlink()  # as if killed while r2 was written
    again = _fake_predict(monkeypatch, tmp_path, text, out)
    assert [r.resumed for r in again] == [True, False] and all(r.ok for r in again)


def test_predict_input_problems_are_one_line(tmp_path):
    from foldnet.inference.predict import PredictConfig, predict

    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(InputError, match="no FASTA records"):
        predict(PredictConfig(input=str(tmp_path / "empty.fa"), out_dir=str(tmp_path / "o")))
    with pytest.raises(InputError, match="is a directory"):
        predict(PredictConfig(input=str(tmp_path), out_dir=str(tmp_path / "o")))


# ----------------------------------------------------------------------------- truncated / encodings


def _truncated_gz(path: Path, text: str, keep: float = 0.6) -> Path:
    blob = gzip.compress(text.encode())
    path.write_bytes(blob[: int(len(blob) * keep)])
    return path


def test_truncated_fasta_gz_names_file_and_record(tmp_path):
    from foldnet.data.fasta import iter_fasta, read_fasta

    rng = np.random.default_rng(0)
    text = "".join(f">r{i}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), 80))}\n" for i in range(400))
    path = _truncated_gz(tmp_path / "seqs.fa.gz", text)
    items = list(iter_fasta(path, errors="skip"))
    assert isinstance(items[-1], ParseError) and "truncated or corrupt gzip" in str(items[-1])
    assert "seqs.fa.gz" in str(items[-1]) and f"after record {len(items) - 1}" in str(items[-1])
    assert all(not isinstance(r, ParseError) for r in items[:-1])
    with pytest.raises(ParseError, match="truncated"):
        read_fasta(path)


def test_truncated_a3m_gz_is_a_parse_error(tmp_path):
    from foldnet.data.alignment import read_a3m

    rng = np.random.default_rng(1)
    text = "".join(f">s{i}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY-'), 60))}\n" for i in range(500))
    with pytest.raises(ParseError, match="truncated"):
        read_a3m(_truncated_gz(tmp_path / "q.a3m.gz", text))


def test_unicode_ids_are_read_as_utf8_and_do_not_collide(tmp_path):
    from foldnet.data.fasta import iter_fasta

    p = tmp_path / "u.fa"
    p.write_bytes(">héllo_β\nMKV\n>hello_b\nMKV\n>h\xe9llo\nMKV\n".encode("utf-8").replace(b"h\xc3\xa9llo\n", b"h\xe9llo\n"))
    items = list(iter_fasta(p, errors="skip"))
    assert [getattr(r, "id", None) for r in items[:2]] == ["héllo_β", "hello_b"]
    assert isinstance(items[2], ParseError) and "not valid UTF-8" in str(items[2])


def test_nan_and_inf_coordinates_are_masked(tmp_path):
    from foldnet.data.proteinnet import read_proteinnet

    L = 3
    ter = [[100.0 * (3 * i + k) for i in range(L) for k in range(3)] for _ in range(3)]
    ter[0][4] = float("nan")  # residue 2, CA x
    ter[1][7] = float("inf")  # residue 3, CA y
    rows = "\n".join("\t".join(str(v) for v in r) for r in ter)
    (tmp_path / "pn.txt").write_text(f"[ID]\nx_1_A\n[PRIMARY]\nMKV\n[TERTIARY]\n{rows}\n[MASK]\n+++\n\n")
    (prot,) = read_proteinnet(tmp_path / "pn.txt")
    assert np.isfinite(prot.atom_positions).all()
    assert prot.atom_mask[0, :3].tolist() == [1, 1, 1]
    assert prot.atom_mask[1, 1] == 0 and prot.atom_mask[2, 1] == 0


# ----------------------------------------------------------------------------- pickles


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payloads_are_refused_not_run(tmp_path):
    from foldnet.data import pdnet
    from foldnet.data.build import build_dataset
    from foldnet.data.config import BuildConfig, LeakageConfig, PdnetSourceConfig

    marker = tmp_path / "PWNED"
    (tmp_path / "feat").mkdir()
    (tmp_path / "dist").mkdir()
    with open(tmp_path / "feat" / "evil.pkl", "wb") as fh:
        pickle.dump({"seq": "MKV", "x": _Payload(marker)}, fh)
    obj = np.empty(3, dtype=object)
    obj[0], obj[1], obj[2] = 3, "MKV", _Payload(marker)
    with open(tmp_path / "dist" / "evil-cb.npy", "wb") as fh:
        np.save(fh, obj, allow_pickle=True)
    with pytest.raises(ParseError, match="refusing to load global"):
        pdnet.read_pdnet_features(tmp_path / "feat" / "evil.pkl")
    with pytest.raises(ParseError, match="refusing to load global"):
        pdnet.read_pdnet_distances(tmp_path / "dist" / "evil-cb.npy")
    # A good file in the same layout still reads.
    pdnet.write_pdnet_distances(tmp_path / "dist" / "good-cb.npy", "MKVL", np.ones((4, 4), np.float32))
    assert pdnet.read_pdnet_distances(tmp_path / "dist" / "good-cb.npy")[0] == "MKVL"
    cfg = BuildConfig(source="pdnet", pdnet=PdnetSourceConfig(distances_dir=str(tmp_path / "dist"),
                                                              features_dir=str(tmp_path / "feat")),
                      leakage=LeakageConfig(enabled=False))
    res = build_dataset(cfg, tmp_path / "built", log=lambda *a: None)
    assert [s.id for s in res.skipped] == ["evil"] and "refusing" in res.skipped[0].reason
    assert not marker.exists()


# ----------------------------------------------------------------------------- builds


def test_all_bad_build_writes_skipped_and_removes_stale_tmp(tmp_path):
    from foldnet.data.build import build_dataset
    from foldnet.data.config import BuildConfig, LeakageConfig, PdbDirSourceConfig

    src = tmp_path / "pdbs"
    src.mkdir()
    (src / "a.pdb").write_bytes(b"\x00\xff garbage")
    (src / "b.pdb").write_text("")
    out = tmp_path / "built"
    out.mkdir()
    stale = out / ".train.h5.999999.abcd.h5.tmp"  # a writer killed with -9 (pid gone)
    stale.write_bytes(b"half")
    cfg = BuildConfig(source="pdb_dir", pdb_dir=PdbDirSourceConfig(path=str(src)), leakage=LeakageConfig(enabled=False))
    with pytest.raises(ValueError, match="no chain survived"):
        build_dataset(cfg, out, log=lambda *a: None)
    rows = (out / "skipped.tsv").read_text().splitlines()
    assert rows[0] == "id\tfile\treason" and len(rows) == 3
    assert not stale.exists()


def test_mixed_generation_split_folder_is_refused(tmp_path, data_root):
    from foldnet.data.cache import H5Dataset, StaleCacheError, write_h5
    from foldnet.data.featurize import featurize
    from foldnet.data.proteinnet import iter_proteinnet

    feats = [featurize(next(iter_proteinnet(data_root / "proteinnet" / "validation.gz")), source_id="t")]
    write_h5(tmp_path / "train.h5", feats, split="train", build_key="new" * 10)
    write_h5(tmp_path / "val.h5", feats, split="val", build_key="old" * 10)
    (tmp_path / "manifest.json").write_text(json.dumps({"build_key": "old" * 10}))
    assert len(H5Dataset(tmp_path / "val.h5")) == 1
    with pytest.raises(StaleCacheError, match="mixes files of different builds"):
        H5Dataset(tmp_path / "train.h5")
    (tmp_path / "garbled.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ParseError, match="garbled.h5"):
        H5Dataset(tmp_path / "garbled.h5")


# ----------------------------------------------------------------------------- configuration


def test_impossible_config_values_name_the_key(tmp_path):
    from hydra import compose, initialize_config_dir

    from foldnet.inference.evaluate import EvaluateConfig
    from foldnet.train.config import register_configs, to_train_config

    with pytest.raises(ConfigError, match="^max_domains: must be >= 0"):
        EvaluateConfig(max_domains=-1)
    with pytest.raises(ConfigError, match="^data_root: "):
        EvaluateConfig(data_root=str(tmp_path / "nope"))
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        for override, key in [("data.crop_size=0", "data.crop_size"), ("optim.learning_rate=-1", "learning_rate"),
                              ("data.batch_size=0", "data.batch_size")]:
            cfg = compose("train", overrides=[override, f"run_dir={tmp_path / 'r'}"])
            with pytest.raises(ValueError, match=key):
                to_train_config(cfg)


def test_cli_user_errors_are_one_line(tmp_path):
    """Missing input folder, bad value: exit 2, one stderr line naming it, no traceback."""
    runs = [
        ["build-dataset", "data=promod3_pdb", "data.build.pdb_dir.path=/nonexistent/pdbs",
         f"data.dir={tmp_path / 'b'}"],
        ["evaluate", "max_domains=-1", f"out_dir={tmp_path / 'e'}"],
        ["train", "data.crop_size=abc", f"run_dir={tmp_path / 'r'}"],  # hydra's own type check, one line
    ]
    for args in runs:
        res = subprocess.run([sys.executable, "-m", "foldnet.cli.main", *args], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=120)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2, res.stderr
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert any(k in lines[0] for k in ("/nonexistent/pdbs", "max_domains", "data.crop_size"))
    assert not list(tmp_path.glob("*.log"))  # no predict.log / evaluate.log in the working directory


def test_library_logs_are_quiet_unless_verbose():
    code = ("import logging; logging.basicConfig(level=logging.INFO);"
            "from foldnet.cli.common import quiet_logs; quiet_logs();"
            "import jax; jax.devices(); logging.getLogger('foldnet').info('foldnet line')")
    env = dict(_env(), JAX_PLATFORMS="")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "foldnet line" in res.stderr and "Unable to initialize backend" not in res.stderr, res.stderr
    loud = subprocess.run([sys.executable, "-c", code], env=dict(env, FOLDNET_LOG_LEVEL="DEBUG"),
                          capture_output=True, text=True, timeout=120)
    assert "jax" in loud.stderr.lower()


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_damaged_newest_checkpoint_falls_back_with_warning(tmp_path, damage, caplog):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_checkpoint_resume import _state

    from foldnet.train.checkpoint import CheckpointConfig, Checkpointer

    d = tmp_path / "ck"
    with Checkpointer(d, CheckpointConfig(keep_last=3, keep_best=0)) as ck:
        for s in (2, 4):
            ck.save(s, _state(s), {"epoch": 0, "index": s})
    victim = d / "4" / "state" / "manifest.ocdbt"
    if damage == "delete":
        victim.unlink()
    else:
        victim.write_bytes(b"\x00garbage" * 8)
    with Checkpointer(d, CheckpointConfig(keep_last=3, keep_best=0)) as ck:
        state, loader = ck.restore(None, _state(0))
        assert int(state.step) == 2 and loader == {"epoch": 0, "index": 2}
        assert "step 4" in caplog.text and "cannot be restored" in caplog.text
        assert ck.save(4, _state(4), {"epoch": 0, "index": 4})  # the step can be written again
    assert (tmp_path / "ck.broken").is_dir()


def test_inference_skips_a_damaged_best_step(tmp_path, caplog):
    """``foldnet evaluate/predict checkpoint=<run>`` with a garbled newest step: warn, use the previous."""
    import dataclasses

    from omegaconf import OmegaConf

    sys.path.insert(0, str(Path(__file__).parent))
    from test_checkpoint_resume import _state

    from foldnet.inference.pretrained import load_for_inference
    from foldnet.model.config import PRESETS
    from foldnet.train.checkpoint import CheckpointConfig, Checkpointer

    run = tmp_path / "run"
    with Checkpointer(run / "checkpoints", CheckpointConfig(keep_last=3, keep_best=0)) as ck:
        for s in (2, 4):
            ck.save(s, _state(s, scale=float(s)), None)
    OmegaConf.save(OmegaConf.create({"model": dataclasses.asdict(PRESETS["tiny"])}), run / "config.yaml")
    (run / "checkpoints" / "4" / "state" / "manifest.ocdbt").write_bytes(b"garbage")
    _, params = load_for_inference(str(run))
    assert np.allclose(params["w"], np.arange(6).reshape(2, 3) * 2.0)  # step 2's weights
    assert "step 4" in caplog.text
    with pytest.raises(ValueError, match="cannot be restored"):
        load_for_inference(str(run), step=4)


def test_no_restorable_checkpoint_is_one_clear_error(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_checkpoint_resume import _state

    from foldnet.train.checkpoint import CheckpointConfig, Checkpointer

    d = tmp_path / "ck"
    with Checkpointer(d, CheckpointConfig(keep_last=3, keep_best=0)) as ck:
        ck.save(2, _state(2), None)
    (d / "2" / "state" / "manifest.ocdbt").unlink()
    with Checkpointer(d, CheckpointConfig(keep_last=3, keep_best=0)) as ck:
        with pytest.raises(ValueError, match="no checkpoint .* can be restored"):
            ck.restore(None, _state(0))
        assert ck.latest_step() is None  # the next run starts from step 0
