"""Hydra configs of `foldnet train`: every group option composes and builds what it names."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from foldnet.data.loader import CropLoader
from foldnet.model.config import ModelConfig
from foldnet.model.model import build_model
from foldnet.train.config import TrainConfig, register_configs, to_train_config, to_yaml
from foldnet.train.optim import OptimConfig, make_optimizer
from foldnet.train.parallel import ParallelConfig, parallelize_train_step, resolve

from dataset_fixtures import train_val_h5

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
GROUPS = ("data", "model", "optim", "parallel", "experiment", "debug")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, testdata):
    d = tmp_path_factory.mktemp("cfg_data")
    train_val_h5(testdata, d, 12, 4)
    return d


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), f"configs/{group}/ has no option"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_validates(group, tmp_path):
    for option in _options(group):
        cfg = _compose([f"{group}={option}", f"run_dir={tmp_path}/run"])
        tc = to_train_config(cfg)  # type-checks every value against the dataclasses
        assert isinstance(tc, TrainConfig)
        assert isinstance(tc.model, ModelConfig) and isinstance(tc.optim, OptimConfig)
        assert isinstance(tc.parallel, ParallelConfig)
        # the schedule follows the run length unless overridden
        assert tc.optim.total_steps == tc.steps
        assert tc.val.batch_size == tc.data.eval_batch_size and tc.val.crop_size == tc.data.crop_size
        # the resolved YAML (what <run_dir>/config.yaml holds) round-trips to the same config
        again = to_train_config(OmegaConf.create(to_yaml(cfg)))
        assert again == tc


def test_model_options_build_models():
    batch = None
    for option in _options("model"):
        tc = to_train_config(_compose([f"model={option}", "run_dir=x"]))
        assert tc.model.name == option
        if batch is None:
            from foldnet.data.loader import _empty_batch

            batch = _empty_batch(1, 8)
            batch["seq_mask"][:] = 1.0
        model = build_model(tc.model)
        # shapes only: abstract init is cheap even for the large preset
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
        n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
        assert n > 1000, option


def test_optim_and_parallel_options_build():
    from foldnet.data.loader import _empty_batch

    batch = _empty_batch(2, 8)
    batch["seq_mask"][:] = 1.0
    base = to_train_config(_compose(["model=tiny", "run_dir=x"]))
    model = build_model(base.model)
    # abstract parameters: the optimiser is built and initialised without compiling the model
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False)["params"])
    for opt in _options("optim"):
        tc = to_train_config(_compose([f"optim={opt}", "model=tiny", "run_dir=x"]))
        tx = make_optimizer(tc.optim)
        opt_state = jax.eval_shape(tx.init, params)
        # AdamW moments mirror the parameter tree
        n_params = len(jax.tree_util.tree_leaves(params))
        assert len(jax.tree_util.tree_leaves(opt_state)) >= 2 * n_params
    for par in _options("parallel"):
        tc = to_train_config(_compose([f"parallel={par}", "model=tiny", "run_dir=x"]))
        assert tc.parallel.mode == par
        # auto: batch 2 splits over conftest's 2 CPU devices (shard_map)
        pstep = parallelize_train_step(model, make_optimizer(tc.optim), resolve(tc.parallel, 2))
        n = 1 if par == "none" else jax.local_device_count()
        assert pstep.num_devices == n
        placed = pstep.shard_batch(batch)
        # pmap stacks a leading device axis; the others keep [B, N] (sharded or not)
        assert int(np.prod(placed["aatype"].shape)) == 2 * 8
        assert placed["aatype"].shape[-1] == 8


def test_data_options_build_loaders(small_data):
    for opt in _options("data"):
        tc = to_train_config(_compose([f"data={opt}", f"data.dir={small_data}", "data.train=null",
                                       "data.val=null", "data.batch_size=2", "run_dir=x"]))
        from foldnet.train.loop import split_paths

        train_path, val_path = split_paths(tc)
        loader = CropLoader(train_path, tc.data.crop_size, tc.data.batch_size, tc.seed,
                            profile_dropout=tc.data.profile_dropout, min_length=tc.data.min_length, prefetch=0)
        b = next(iter(loader))
        assert b["aatype"].shape == (2, tc.data.crop_size)
        assert b["cb_dist"].shape == (2, tc.data.crop_size, tc.data.crop_size)
        assert np.all(b["example_id"] >= 0)


def test_command_line_overrides_are_typed(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDNET_DATA", str(tmp_path / "raw"))
    cfg = _compose(["model=tiny", "model.channels_2d=12", "model.dilations=[1,3]", "optim.learning_rate=0.01",
                    "val.num_chains=7", "checkpoint.keep_last=5", "steps=123", f"run_dir={tmp_path}/r"])
    tc = to_train_config(cfg)
    assert tc.model.channels_2d == 12 and tc.model.dilations == (1, 3)
    assert tc.optim.learning_rate == 0.01 and tc.optim.total_steps == 123
    assert tc.val.num_chains == 7 and tc.checkpoint.keep_last == 5
    assert tc.data_root == str(tmp_path / "raw")  # ${oc.env:FOLDNET_DATA,data}
    with pytest.raises((ValidationError, ConfigCompositionException)):
        to_train_config(_compose(["model.channels_2d=wide", "run_dir=x"]))
    with pytest.raises(ConfigCompositionException):
        _compose(["model.no_such_key=1", "run_dir=x"])
    with pytest.raises(ValueError, match="dtype"):  # the dataclass's own validation runs too
        to_train_config(_compose(["model.dtype=float16", "run_dir=x"]))
    # distillation needs crops without their profile, and a weight in (0, 1]
    with pytest.raises(ValueError, match=r"^distill_from: needs data.profile_dropout > 0"):
        to_train_config(_compose(["distill_from=runs/a", "data.profile_dropout=0", "run_dir=x"]))
    with pytest.raises(ValueError, match=r"^distill_weight: must be in \(0, 1\]"):
        to_train_config(_compose(["distill_from=runs/a", "data.profile_dropout=0.5", "distill_weight=1.5", "run_dir=x"]))
    assert to_train_config(_compose(["distill_weight=7", "run_dir=x"])).distill_from is None  # unused: not checked


def test_default_run_dir_is_timestamped_under_runs():
    cfg = _compose([])
    run_dir = to_train_config(cfg).run_dir
    assert run_dir.startswith("runs/") and len(run_dir) == len("runs/YYYY-mm-dd_HH-MM-SS")


def test_debug_and_experiment_overlays():
    tiny = to_train_config(_compose(["debug=tiny", "run_dir=x"]))
    assert tiny.model.name == "tiny" and tiny.steps <= 20 and tiny.data.crop_size <= 64
    nan = to_train_config(_compose(["debug=nan_guard", "run_dir=x"]))
    assert nan.nan_steps and nan.model.name == "tiny"
    cpu = to_train_config(_compose(["experiment=base_cpu30", "run_dir=x"]))
    assert cpu.model.name == "base" and cpu.max_minutes == 30
    # an experiment can still be adjusted from the command line
    assert to_train_config(_compose(["experiment=base_cpu30", "max_minutes=5", "run_dir=x"])).max_minutes == 5
