"""Hydra schemas of ``foldnet predict`` and ``foldnet evaluate``.

``PredictConfig`` / ``EvaluateConfig`` (with their nested ``TilingConfig`` and
``FoldConfig``) are registered in hydra's ConfigStore as ``predict_schema`` and
``evaluate_schema``; ``configs/predict.yaml`` and ``configs/evaluate.yaml`` list
them first in their defaults, so every key and override is type-checked at
compose time (``fold.num_steps=abc`` fails before anything runs). The frozen
dataclasses become read-only OmegaConf nodes; ``foldnet.common.config.writable_schema``
clears that so overrides still apply.
"""

from __future__ import annotations

from typing import Any, TypeVar

from omegaconf import OmegaConf

from foldnet.common.config import writable_schema
from foldnet.inference.evaluate import EvaluateConfig
from foldnet.inference.predict import PredictConfig

T = TypeVar("T")


def register_configs() -> None:
    """Store ``predict_schema`` and ``evaluate_schema`` in hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="predict_schema", node=writable_schema(PredictConfig))
    cs.store(name="evaluate_schema", node=writable_schema(EvaluateConfig))


def to_config(cfg: Any, cls: type[T]) -> T:
    """A composed hydra config -> the validated dataclass (hydra's own keys dropped).

    Args:
      cfg: DictConfig from hydra (or a mapping).
      cls: ``PredictConfig`` or ``EvaluateConfig``.

    Returns:
      The dataclass with nested TilingConfig / FoldConfig (their __post_init__ checks run).
    """
    if isinstance(cfg, cls):
        return cfg
    node = OmegaConf.merge(writable_schema(cls), cfg)
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, cls)
    return obj
