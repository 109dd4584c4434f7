"""End to end: `foldnet train debug=tiny` on a few real chains, and the non-finite guard."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from foldnet.data.loader import CropLoader
from foldnet.train.config import register_configs, to_train_config
from foldnet.train.run_log import read_jsonl
from foldnet.train.loop import NonFiniteLossError, train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_root):
    from foldnet.data.cache import write_h5
    from foldnet.data.featurize import featurize
    from foldnet.data.proteinnet import iter_proteinnet

    d = tmp_path_factory.mktemp("loop_data")
    for split, src, n in (("train", "training.gz", 12), ("val", "validation.gz", 4)):
        chains = [featurize(p, source_id=f"{src}:{i}")
                  for i, p in enumerate(itertools.islice(iter_proteinnet(data_root / "proteinnet" / src), n))]
        write_h5(d / f"{split}.h5", chains, split=split)
    return d


def _data_overrides(d: Path) -> list[str]:
    # the runs share compiled steps through JAX's persistent cache (test time only); the tiny
    # crops (2 x 32^2 pairs) are below parallel.min_pairs_per_device, so without the last
    # override parallel=auto would run them on one device: these runs cover the split loop
    return [f"data.train={d / 'train.h5'}", f"data.val={d / 'val.h5'}", f"compilation_cache_dir={d / 'jax_cache'}",
            "parallel.min_pairs_per_device=0"]


def test_cli_debug_tiny_end_to_end(small, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "foldnet.cli.main", "train", "debug=tiny", f"run_dir={run}", *_data_overrides(small),
         # the issue-11 options ride along: auxiliary heads, discontiguous crops, parameter EMA,
         # validation of the raw parameters, of training chains and without the profiles
         "model.ca_distogram_weight=0.3", "model.orientation_weight=0.5", "data.discontiguous_prob=0.5",
         "optim.ema_decay=0.9", "val.raw_params=true", "val.train_chains=3", "val.single_sequence=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert printed["steps_done"] == 10

    # the run directory layout
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["steps"] == 10 and cfg["model"]["name"] == "tiny" and cfg["run_dir"] == str(run)
    assert "${" not in (run / "config.yaml").read_text()  # resolved
    assert cfg["data"]["train"] == str(small / "train.h5")
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.is_dir()) == [5, 10]
    assert set(json.loads((run / "checkpoints" / "metrics.json").read_text())) == {"5", "10"}
    assert (run / "prior.npz").exists()

    # metrics.jsonl: every line parses; train lines every 2 steps, val at 5 and 10
    entries = read_jsonl(run / "metrics.jsonl")
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "run" and "baseline" in kinds
    # parallel=auto (the default; min_pairs_per_device=0 here) split the batch of 2 over conftest's 2 CPU devices
    assert (entries[0]["parallel"], entries[0]["devices"]) == ("shard_map", 2)
    train_lines = [e for e in entries if e["kind"] == "train"]
    assert [e["step"] for e in train_lines] == [2, 4, 6, 8, 10]
    losses = [e["loss"] for e in train_lines]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.5, losses  # it learns, even in 10 steps
    assert all(e["crops_per_s"] > 0 for e in train_lines)
    val = [e for e in entries if e["kind"] == "val"]
    assert [e["step"] for e in val] == [5, 10]
    for e in val:
        assert e["num_chains"] == 4 and np.isfinite(e["dist_nll"]) and 0 <= e["lr_top_l5_precision"] <= 1
        assert 0 <= e["phi_mae_deg"] <= 180 and 0 <= e["psi_mae_deg"] <= 180
        assert np.isfinite(e["ca_distogram_loss"]) and np.isfinite(e["orientation_loss"])
    raw = [e for e in entries if e["kind"] == "val_raw"]
    on_train = [e for e in entries if e["kind"] == "val_train"]
    assert [e["step"] for e in raw] == [e["step"] for e in on_train] == [5, 10]
    assert all(e["num_chains"] == 3 for e in on_train) and all(e["num_chains"] == 4 for e in raw)
    assert raw[-1]["dist_nll"] != val[-1]["dist_nll"]  # "val" scores the EMA, "val_raw" the params
    single = [e for e in entries if e["kind"] == "val_single"]
    assert [e["step"] for e in single] == [5, 10] and all(e["num_chains"] == 4 for e in single)
    assert single[-1]["dist_nll"] != val[-1]["dist_nll"]  # the same chains, the profile withheld
    assert all("orientation_loss" in e for e in train_lines)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps_done"] == 10 and summary["total_skips"] == 0
    assert summary["val"]["dist_nll"] == val[-1]["dist_nll"]
    assert set(summary["beats_baseline"]) == {"dist_nll", "lr_top_l5_precision", "phi_mae_deg", "psi_mae_deg"}


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_nan_guard_skips_logs_and_stops(small, tmp_path):
    common = ["debug=nan_guard", "val.baselines=false", "logging.tensorboard=false", "logging.curves=false",
              "val.every_steps=0", "checkpoint.every_steps=0", *_data_overrides(small)]
    # same steps (= same schedule constants) as the CLI test: its compiled step is reused
    cfg = _compose([f"run_dir={tmp_path / 'skip'}", *common])
    tc = to_train_config(cfg)
    assert tc.nan_steps == [3, 4]
    summary = train(cfg)
    assert summary["steps_done"] == 10 and summary["total_skips"] == 2
    skips = read_jsonl(tmp_path / "skip" / "metrics.jsonl", "skip")
    assert [e["step"] for e in skips] == [3, 4]
    # the reported example is the poisoned one: the first chain of the batch of that step
    loader = CropLoader(small / "train.h5", tc.data.crop_size, tc.data.batch_size, tc.seed,
                        min_length=tc.data.min_length, prefetch=0)
    from foldnet.data.cache import H5Dataset

    ids = H5Dataset(small / "train.h5").ids
    for e in skips:
        per_epoch = len(loader)
        epoch, index = divmod(e["step"] - 1, per_epoch)
        first = int(loader.examples(epoch, index)[0])
        assert e["example_ids"] == [first] and e["chain_ids"] == [ids[first]]
    assert skips[1]["consecutive_skips"] == 2 and skips[1]["total_skips"] == 2
    # the run went on after the skips and the final loss is finite
    assert np.isfinite(summary["final_train_loss"])

    # with max_consecutive_skips=2 the second bad step in a row stops the run
    cfg = _compose([f"run_dir={tmp_path / 'stop'}", "optim.max_consecutive_skips=2", *common])
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite steps"):
        train(cfg)
    assert [e["step"] for e in read_jsonl(tmp_path / "stop" / "metrics.jsonl", "skip")] == [3, 4]


def test_init_from_warm_starts_from_a_runs_parameters(small, tmp_path):
    import jax

    from foldnet.inference.checkpoint_io import load_run
    from foldnet.train.state import create_train_state, warm_start

    common = ["debug=tiny", "val.baselines=false", "logging.tensorboard=false", "logging.curves=false",
              *_data_overrides(small)]
    train(_compose([f"run_dir={tmp_path / 'a'}", *common]))
    _, a_params = load_run(tmp_path / "a")

    # scripts/score_checkpoints.py on it: both input modes, and a "soup" of the run with itself,
    # which is its last step exactly
    sys.path.insert(0, str(REPO / "scripts"))
    import score_checkpoints

    out = tmp_path / "scores.json"
    score_checkpoints.main([str(tmp_path / "a"), "--single", "--last", "2", "--steps", "10",
                            "--soup", str(tmp_path / "a"), "--ensemble", str(tmp_path / "a"), "--out", str(out)])
    rows = {r.pop("params"): r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["step 10", "mean of steps 5-10 (2)", str(tmp_path / "a"),
                          f"mean of step 10 and {tmp_path / 'a'}", f"ensemble of step 10 and {tmp_path / 'a'}"]
    assert rows[str(tmp_path / "a")] == rows["step 10"] == rows[f"mean of step 10 and {tmp_path / 'a'}"]
    # an ensemble of a network with itself predicts its distributions (its angles then come from
    # the averaged distributions, the same circular means up to rounding)
    ens = rows[f"ensemble of step 10 and {tmp_path / 'a'}"]
    for k, v in rows["step 10"].items():
        assert ens[k] == pytest.approx(v, rel=1e-5, abs=1e-4), k
    assert rows["step 10"]["single_dist_nll"] != rows["step 10"]["dist_nll"]
    assert rows["mean of steps 5-10 (2)"]["dist_nll"] != rows["step 10"]["dist_nll"]
    with pytest.raises(SystemExit, match="not kept"):
        score_checkpoints.main([str(tmp_path / "a"), "--steps", "7"])
    # B starts from A's parameters: its first update (Adam: at most the learning rate,
    # 1.5e-3 at warm-up step 1 of 2, per element) keeps it that close to them; a
    # random init is ~0.1 away.
    train(_compose([f"run_dir={tmp_path / 'b'}", f"init_from={tmp_path / 'a'}", "checkpoint.every_steps=1",
                    "halt_at_step=2", "val.every_steps=0", *common]))
    _, b_params = load_run(tmp_path / "b", step=1)
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(x - y))),
                                                             a_params, b_params))
    assert max(diffs) <= 1.6e-3 and max(diffs) > 1e-4
    run_line = read_jsonl(tmp_path / "b" / "metrics.jsonl", "run")[0]
    assert run_line["init_from"] == str(tmp_path / "a")

    # A as the teacher of a run whose crops all lose their profile (foldnet.train.distill;
    # test_distill checks the relabelling itself): it trains, and says so
    train(_compose([f"run_dir={tmp_path / 'd'}", f"distill_from={tmp_path / 'a'}", "data.profile_dropout=1.0",
                    "halt_at_step=2", "val.every_steps=0", "checkpoint.every_steps=1", *common]))
    _, d_params = load_run(tmp_path / "d", step=1)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(d_params))
    assert read_jsonl(tmp_path / "d" / "metrics.jsonl", "run")[0]["distill_from"] == str(tmp_path / "a")

    # another architecture is refused, naming the source and the parameter
    tc = to_train_config(_compose([f"run_dir={tmp_path / 'c'}", "model.channels_2d=12", *common]))
    example = CropLoader(small / "train.h5", tc.data.crop_size, tc.data.batch_size, 0, prefetch=0).make_batch(0, 0)
    _, opt, state = create_train_state(tc.model, tc.optim, 0, example)
    with pytest.raises(ValueError, match=r"init_from runs/a: parameter .* has shape"):
        warm_start(state, opt, a_params, "runs/a")


def test_init_grow_appends_identity_blocks(small, tmp_path):
    """A deeper trunk grown from trained parameters computes what they did: the appended blocks
    and the inserted triangle blocks start as the identity (last layer zero), everything else is
    copied; without init_grow, or with a missing parameter outside a whole new block, it is
    refused."""
    import jax

    from foldnet.train.state import create_train_state, warm_start

    common = ["debug=tiny", "val.baselines=false", "logging.tensorboard=false", "logging.curves=false",
              *_data_overrides(small)]
    tc_a = to_train_config(_compose([f"run_dir={tmp_path / 'a'}", *common]))
    tc_b = to_train_config(_compose([f"run_dir={tmp_path / 'b'}", *common,
                                     f"model.blocks_2d={tc_a.model.blocks_2d + 2}",
                                     f"model.blocks_1d={tc_a.model.blocks_1d + 1}",
                                     # a triangle block after the source's last block and one after the new ones
                                     f"model.triangle_every={tc_a.model.blocks_2d}", "model.triangle_channels=4"]))
    example = CropLoader(small / "train.h5", tc_a.data.crop_size, tc_a.data.batch_size, 0, prefetch=0).make_batch(0, 0)
    model_a, _, state_a = create_train_state(tc_a.model, tc_a.optim, 0, example)
    model_b, opt_b, state_b = create_train_state(tc_b.model, tc_b.optim, 1, example)
    # perturb A away from its init so that the copy is checked against trained-like values
    leaves, tree = jax.tree_util.tree_flatten(state_a.params)
    rng = np.random.default_rng(0)
    a_params = jax.tree_util.tree_unflatten(
        tree, [x + 0.05 * rng.standard_normal(x.shape).astype(np.float32) for x in leaves])

    with pytest.raises(ValueError, match=r"init_from runs/a: it has no parameter .*block_.*init_grow=true"):
        warm_start(state_b, opt_b, a_params, "runs/a")
    grown = warm_start(state_b, opt_b, a_params, "runs/a", grow=True)
    n2 = tc_a.model.blocks_2d
    new_2d = grown.params["trunk_2d"][f"block_{n2}"]
    assert not np.any(np.asarray(new_2d["conv_b"]["kernel"]))
    assert np.any(np.asarray(new_2d["conv_a"]["kernel"]))  # fresh init, not zero: it can learn
    for t in ("triangle_0", "triangle_1"):
        for layer in ("outgoing", "incoming"):
            assert not np.any(np.asarray(grown.params["trunk_2d"][t][layer]["out"]["kernel"]))
            assert np.any(np.asarray(grown.params["trunk_2d"][t][layer]["ab"]["kernel"]))
    np.testing.assert_array_equal(grown.params["trunk_2d"]["block_0"]["conv_a"]["kernel"],
                                  a_params["trunk_2d"]["block_0"]["conv_a"]["kernel"])

    batch = {k: v for k, v in example.items() if k != "example_id"}
    out_a = model_a.apply({"params": a_params}, batch, train=False)
    out_b = model_b.apply({"params": grown.params}, batch, train=False)
    for key in ("dist_logits", "phi_logits", "psi_logits"):
        np.testing.assert_allclose(np.asarray(out_b[key]), np.asarray(out_a[key]), rtol=0, atol=1e-5)

    # a parameter missing outside a new block (the source's own block lacks a layer) is refused
    del a_params["trunk_2d"]["block_0"]["conv_b"]
    with pytest.raises(ValueError, match=r"it has no parameter .*block_0.*conv_b"):
        warm_start(state_b, opt_b, a_params, "runs/a", grow=True)
