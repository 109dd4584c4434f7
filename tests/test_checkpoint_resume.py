"""Orbax checkpoints: retention (last K + best), atomic layout, and bit-exact resume."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from foldnet.model.config import PRESETS
from foldnet.train.checkpoint import CheckpointConfig, Checkpointer, tree_equal
from foldnet.train.config import train_schema
from foldnet.train.run_log import read_jsonl
from foldnet.train.loop import train
from foldnet.train.state import TrainState

from dataset_fixtures import train_val_h5


def _state(step: int, scale: float = 1.0) -> TrainState:
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params={"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) * scale, "b": jnp.ones(3, jnp.float32)},
        opt_state=({"mu": jnp.full(3, scale, jnp.float32)},),
        rng=jax.random.key(7),
        consecutive_skips=jnp.asarray(0, jnp.int32),
        total_skips=jnp.asarray(step % 3, jnp.int32),
    )


def test_keeps_last_k_and_best(tmp_path):
    ck = Checkpointer(tmp_path / "ck", CheckpointConfig(keep_last=2, keep_best=1, best_metric="dist_nll"))
    # step 2 has the best (lowest) validation loss; later steps are worse or unvalidated
    plan = {1: 3.0, 2: 1.0, 3: None, 4: 2.5, 5: None, 6: 4.0}
    for step, nll in plan.items():
        m = None if nll is None else {"dist_nll": nll, "lr_top_l5_precision": 0.1}
        assert ck.save(step, _state(step), {"epoch": 0, "index": step}, m)
    assert ck.all_steps() == [2, 5, 6]  # best + the last two
    assert ck.best_step() == 2 and ck.latest_step() == 6
    assert not ck.save(6, _state(6), None)  # an existing step is never overwritten
    ck.close()
    # atomic layout: only finished step directories, no orbax temp directories left
    names = sorted(p.name for p in (tmp_path / "ck").iterdir() if p.name != "metrics.json")
    assert names == ["2", "5", "6"]
    # The ranking survives the manager: a new reader (inference) still finds step 2 best,
    # although steps 4 and 6 (validated, worse) and 5/6 (latest) are newer.
    from foldnet.inference.checkpoint_io import resolve_checkpoint

    assert resolve_checkpoint(tmp_path / "ck")[1] == 2
    for s in names:
        assert (tmp_path / "ck" / s / "state").is_dir() and (tmp_path / "ck" / s / "loader").is_dir()


def test_restore_round_trip_and_ignores_unfinished(tmp_path):
    d = tmp_path / "ck"
    ck = Checkpointer(d, CheckpointConfig(keep_last=3, keep_best=0))
    s = _state(4, scale=2.5)
    ck.save(4, s, {"epoch": 1, "index": 3, "seed": 0})
    ck.close()
    # a crash in the middle of a later save leaves only a temp directory: it must not count
    (d / "8.orbax-checkpoint-tmp-1234").mkdir()
    (d / "8.orbax-checkpoint-tmp-1234" / "partial").write_text("half")
    ck = Checkpointer(d, CheckpointConfig(keep_last=3, keep_best=0))
    assert ck.latest_step() == 4
    restored, loader_state = ck.restore(None, _state(0))
    # Orbax removes leftover temp directories in the background from open; a save waits for it
    ck.save(5, _state(5), None)
    assert not (d / "8.orbax-checkpoint-tmp-1234").exists()
    assert ck.all_steps() == [4, 5]
    ck.close()
    assert tree_equal(jax.random.key_data(restored.rng), jax.random.key_data(s.rng))
    assert restored.rng.dtype == s.rng.dtype  # typed key comes back typed
    assert tree_equal(restored.params, s.params) and tree_equal(restored.opt_state, s.opt_state)
    assert int(restored.step) == 4 and int(restored.total_skips) == 1
    assert loader_state == {"epoch": 1, "index": 3, "seed": 0}
    with pytest.raises(FileNotFoundError):
        Checkpointer(tmp_path / "empty", CheckpointConfig()).restore(None, _state(0))


def test_checkpoint_average_is_the_mean_of_the_kept_steps(tmp_path):
    from foldnet.inference.checkpoint_io import average_params, mean_params

    ck = Checkpointer(tmp_path / "ck", CheckpointConfig(keep_last=3, keep_best=0))
    for step, scale in ((1, 1.0), (2, 2.0), (3, 6.0)):
        ck.save(step, _state(step, scale), None)
    ck.close()
    avg = average_params(tmp_path / "ck", [1, 2, 3])  # w scaled by (1 + 2 + 6) / 3 = 3
    np.testing.assert_allclose(avg["w"], np.arange(6, dtype=np.float32).reshape(2, 3) * 3.0)
    np.testing.assert_array_equal(avg["b"], np.ones(3, np.float32))
    assert avg["w"].dtype == np.float32
    # With an EMA in the state, the average is over the EMAs (what inference uses).
    ck = Checkpointer(tmp_path / "ema", CheckpointConfig(keep_last=3, keep_best=0))
    for step, scale in ((1, 1.0), (2, 3.0)):
        st = _state(step, scale)
        ck.save(step, dataclasses.replace(st, ema_params=jax.tree.map(lambda x: x * 10, st.params)), None)
    ck.close()
    np.testing.assert_allclose(average_params(tmp_path / "ema", [1, 2])["w"],
                               np.arange(6, dtype=np.float32).reshape(2, 3) * 20.0)
    with pytest.raises(ValueError, match="no steps"):
        average_params(tmp_path / "ck", [])
    # the shared mean (checkpoint averages, soups of two networks) names the tree that differs
    with pytest.raises(ValueError, match="soup: b has other parameters than a"):
        mean_params([("a", {"w": np.ones(2)}), ("b", {"v": np.ones(2)})], "soup")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, testdata):
    d = tmp_path_factory.mktemp("resume_data")
    train_val_h5(testdata, d, 10, 2)
    return d


def _cfg(run_dir, data_dir, **over):
    cfg = train_schema()
    cfg.merge_with(OmegaConf.create({
        "run_dir": str(run_dir), "steps": 7, "seed": 3,
        # the three runs share compiled steps through JAX's persistent cache (test time)
        "compilation_cache_dir": str(data_dir / "jax_cache"),
        # 10 chains / batch 4 = 2 batches per epoch: the resumed run crosses epoch boundaries
        "data": {"name": "t", "dir": str(data_dir), "crop_size": 24, "batch_size": 4, "prefetch": 2,
                 "eval_batch_size": 2, "eval_max_length": 64, "profile_dropout": 0.3},
        "model": {**dataclasses.asdict(PRESETS["tiny"]), "dtype": "float32", "dropout": 0.1},
        # with a parameter EMA: the average is part of the state that must resume bit-exact
        "optim": {"warmup_steps": 2, "total_steps": 7, "learning_rate": 3e-3, "ema_decay": 0.9},
        "val": {"every_steps": 0, "num_chains": 2, "mode": "crop", "crop_size": 24, "batch_size": 2,
                "baselines": False},
        "checkpoint": {"every_steps": 3, "keep_last": 2},
        "logging": {"every_steps": 1, "progress": False, "tensorboard": False, "curves": False},
        **over,
    }))
    return cfg


def _final_state(run_dir, step):
    """The saved TrainState tree (as stored: typed keys as uint32 data) and loader state."""
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(run_dir / "checkpoints", item_names=("state", "loader"))
    raw = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                     loader=ocp.args.JsonRestore()))
    mngr.close()
    return raw.state, raw.loader


def test_killed_run_resumes_bit_exact(tmp_path, tiny_data):
    """Uninterrupted 7 steps == (run, killed after step 5, last checkpoint at 3) + resume to 7."""
    ref = train(_cfg(tmp_path / "ref", tiny_data))
    assert ref["steps_done"] == 7 and not ref["halted"]

    run = tmp_path / "killed"
    first = train(_cfg(run, tiny_data, halt_at_step=5))
    assert first["halted"] and first["steps_done"] == 5
    # the "kill" happened after step 5: only the step-3 checkpoint exists
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["3"]
    second = train(_cfg(run, tiny_data))
    assert second["start_step"] == 3 and second["steps_done"] == 7

    ref_state, ref_loader = _final_state(tmp_path / "ref", 7)
    res_state, res_loader = _final_state(run, 7)
    # bit-exact on CPU: same params, optimiser moments, step, RNG and loader position
    flat_ref = jax.tree_util.tree_leaves(ref_state)
    flat_res = jax.tree_util.tree_leaves(res_state)
    assert len(flat_ref) == len(flat_res) > 10
    for a, b in zip(flat_ref, flat_res):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ref_loader == res_loader and ref_loader["epoch"] == 3 and ref_loader["index"] == 1
    # the logged training losses of steps 4..7 are identical too
    ref_log = {e["step"]: e["loss"] for e in read_jsonl(tmp_path / "ref" / "metrics.jsonl", "train")}
    res_log = {e["step"]: e["loss"] for e in read_jsonl(run / "metrics.jsonl", "train")}  # last entry per step
    for s in range(4, 8):
        assert res_log[s] == ref_log[s], s
    assert json.loads((run / "summary.json").read_text())["start_step"] == 3
