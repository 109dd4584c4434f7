"""The typed config of ``foldnet train``, and the one place that registers the schemas.

``TrainConfig`` composes the group schemas that live next to their code
(``DataConfig`` in foldnet/data/config.py, ``ModelConfig`` in
foldnet/model/config.py, ``OptimConfig`` in foldnet/train/optim.py,
``ParallelConfig`` in foldnet/train/parallel.py) with the loop's own sections
(validation, checkpoints, logging). ``register_configs`` stores it in hydra's
ConfigStore as ``train_schema`` (``configs/train.yaml`` lists it first in its
defaults), so every YAML value and every command-line override is type-checked
against the dataclasses (a typo'd key or a string for an int fails at compose
time, before anything runs).

The model/optim/parallel dataclasses are frozen (immutable once built), which
OmegaConf turns into read-only nodes; ``foldnet.common.config.writable_schema`` clears that flag on the
schema node so YAML groups and ``key=value`` overrides can still set them.
``to_train_config`` turns the composed DictConfig back into the dataclasses
(the frozen ones run their own ``__post_init__`` validation there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from foldnet.common.config import writable_schema
from foldnet.data.config import DataConfig
from foldnet.model.config import ModelConfig
from foldnet.train.checkpoint import CheckpointConfig
from foldnet.train.optim import OptimConfig
from foldnet.train.parallel import ParallelConfig
from foldnet.train.validate import ValConfig


@dataclass
class LoggingConfig:
    """What the loop writes.

    Attributes:
      every_steps: write a "train" line (means over the interval) every this many steps.
      tensorboard: also write TensorBoard events to ``<run_dir>/tb``.
      progress: show a tqdm progress bar (loss, crops/s) on process 0.
      curves: write ``<run_dir>/curves.png`` at the end of the run.
    """

    every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True
    curves: bool = True


@dataclass
class TrainConfig:
    """Root config of ``foldnet train`` (configs/train.yaml).

    Attributes:
      data_root: where raw data lives (``${oc.env:FOLDNET_DATA,data}``).
      run_dir: output folder (config.yaml, metrics.jsonl, tb/, checkpoints/, curves.png).
      seed: model init, dropout and data order.
      steps: total training steps (the learning-rate schedule's length).
      max_minutes: stop after this much wall time (<= 0: no limit); the run then
        validates, checkpoints and exits normally (a time-budgeted run).
      halt_at_step: stop right after this step WITHOUT the final validation and
        checkpoint, as a crash / preemption would (tests of exact resume); null = never.
      nan_steps: debugging: poison the first example of the batch of these steps
        with NaN (exercises the non-finite guard).
      compilation_cache_dir: JAX persistent compilation cache for this run (null = off):
        a resumed or repeated run loads its compiled steps instead of recompiling.
      init_from: start from a trained network's parameters instead of a random init
        (a run directory, a checkpoint, or ``pretrained:<name>``; null = random): a warm
        restart with a fresh optimiser, schedule and EMA. Ignored when the run resumes
        from its own checkpoint. The architecture must match ``model``.
      init_grow: let ``model`` have residual blocks that ``init_from`` lacks (a deeper
        trunk grown from a trained one): they start as the identity
        (``train.state.warm_start``).
      distill_from: a teacher network (same forms as ``init_from``; null = none): the
        crops whose profile is withheld take labels drawn from the teacher's
        predictions on the same crop with its profile (``foldnet.train.distill``).
        Needs ``data.profile_dropout`` > 0.
      distill_weight: probability that such a crop's distogram pair or torsion takes the
        teacher's label instead of the native's, in (0, 1].
      data, model, optim, parallel: the group configs.
      val, checkpoint, logging: the loop's sections.
    """

    data_root: str = "data"
    run_dir: str = MISSING
    seed: int = 0
    steps: int = 1000
    max_minutes: float = 0.0
    halt_at_step: Optional[int] = None
    nan_steps: list[int] = field(default_factory=list)
    compilation_cache_dir: Optional[str] = None
    init_from: Optional[str] = None
    init_grow: bool = False
    distill_from: Optional[str] = None
    distill_weight: float = 0.5
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    val: ValConfig = field(default_factory=ValConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def train_schema() -> DictConfig:
    """``TrainConfig`` as a typed, writable DictConfig (what the ConfigStore holds)."""
    return writable_schema(TrainConfig)


def register_configs() -> None:
    """Register every schema ``foldnet train`` composes (idempotent).

    Names: ``train_schema`` (root) and one ``<group>/<group>_schema`` per group,
    which a group's YAML may list in its own defaults to be validated on its own.
    """
    from hydra.core.config_store import ConfigStore

    from foldnet.data.config import register_configs as register_data

    register_data()  # data/data_schema + build_dataset_schema
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=train_schema())
    for group, cls in (("model", ModelConfig), ("optim", OptimConfig), ("parallel", ParallelConfig)):
        cs.store(group=group, name=f"{group}_schema", node=writable_schema(cls))


def to_train_config(cfg: Any) -> TrainConfig:
    """A composed config (DictConfig / dict / TrainConfig) -> validated ``TrainConfig``.

    Args:
      cfg: the hydra config of ``foldnet train``.

    Returns:
      The TrainConfig with nested dataclasses (interpolations resolved).
    """
    if isinstance(cfg, TrainConfig):
        return cfg
    merged = OmegaConf.merge(train_schema(), cfg)
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, TrainConfig)
    check_train_config(obj)
    return obj


def check_train_config(cfg: TrainConfig) -> None:
    """Values that type-check but cannot work; fails before any data is read or step compiled.

    Raises:
      ConfigError: naming the first offending key.
    """
    from foldnet.data.errors import ConfigError

    positive = {
        "steps": cfg.steps, "data.crop_size": cfg.data.crop_size, "data.batch_size": cfg.data.batch_size,
        "data.eval_batch_size": cfg.data.eval_batch_size, "data.eval_max_length": cfg.data.eval_max_length,
        "checkpoint.keep_last": cfg.checkpoint.keep_last, "logging.every_steps": cfg.logging.every_steps,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(key, f"must be >= 1, got {value}")
    non_negative = {
        "data.min_length": cfg.data.min_length, "data.prefetch": cfg.data.prefetch,
        "checkpoint.every_steps": cfg.checkpoint.every_steps, "checkpoint.keep_best": cfg.checkpoint.keep_best,
        "val.every_steps": cfg.val.every_steps,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(key, f"must be >= 0, got {value}")
    for key in ("profile_dropout", "discontiguous_prob"):
        value = getattr(cfg.data, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"data.{key}", f"must be in [0, 1], got {value}")
    if cfg.distill_from is not None:
        if not 0.0 < cfg.distill_weight <= 1.0:
            raise ConfigError("distill_weight", f"must be in (0, 1], got {cfg.distill_weight}")
        if cfg.data.profile_dropout <= 0.0:
            raise ConfigError("distill_from", "needs data.profile_dropout > 0 (only crops whose profile "
                              "is withheld are distilled)")
    if cfg.halt_at_step is not None and cfg.halt_at_step < 1:
        raise ConfigError("halt_at_step", f"must be >= 1 or null, got {cfg.halt_at_step}")


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what ``<run_dir>/config.yaml`` holds)."""
    if isinstance(cfg, TrainConfig):
        node = OmegaConf.structured(cfg)
    else:
        node = OmegaConf.merge(train_schema(), cfg)
    return OmegaConf.to_yaml(node, resolve=True)
