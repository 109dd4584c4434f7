"""Flax models: precision policy, 1D / 2D ResNets, heads (each owning its loss)."""

from foldnet.model.config import PRESETS, ModelConfig
from foldnet.model.heads import angle_to_bin, distance_to_bin, torsion_circular_mean
from foldnet.model.model import FoldNet, build_model, count_params, head_losses, loss_fn
from foldnet.model.precision import Policy, get_policy

__all__ = [
    "PRESETS",
    "ModelConfig",
    "FoldNet",
    "build_model",
    "loss_fn",
    "head_losses",
    "count_params",
    "torsion_circular_mean",
    "angle_to_bin",
    "distance_to_bin",
    "Policy",
    "get_policy",
]
