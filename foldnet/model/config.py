"""Typed model configuration and the named presets (tiny / base / large).

The presets are defined once, as the hydra group ``configs/model/*.yaml`` that
``foldnet train model=<name>`` composes; ``PRESETS`` reads the same files at import.
``ModelConfig.from_dict`` turns a hydra/omegaconf node (or any mapping) into the
dataclass so every consumer works with one typed object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from foldnet.common import residue_constants as rc
from foldnet.common.config import from_mapping
from foldnet.common.paths import config_dir

_DTYPES = ("bfloat16", "float32")


def dropout_threshold(rate: float) -> int:
    """The byte threshold t of ``layers.dropout_multiplier``: an element is dropped when its random
    byte is below t = round(256 * rate), i.e. with probability t / 256. Raises if t is 0 or 256."""
    t = int(round(256 * rate))
    if not 0 < t < 256:
        raise ValueError(f"dropout rate {rate} rounds to {t} / 256 (the drop probability): "
                         "use 0 or a rate in [0.002, 0.998]")
    return t


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of the 1D torsion ResNet and the 2D distogram ResNet.

    Attributes:
      name: preset name (informational; shows up in logs and checkpoints).
      channels_1d: width of the per-residue (1D) ResNet.
      blocks_1d: number of residual blocks of the 1D ResNet.
      channels_2d: width of the pair (2D) ResNet.
      blocks_2d: number of residual blocks of the 2D ResNet.
      bottleneck_2d: 0 = plain blocks (two k x k convolutions at channels_2d); > 0 =
        bottleneck blocks (1x1 down to this width, one dilated k x k, 1x1 back up).
      dilations: dilation cycle of the 2D blocks (block k uses dilations[k % len]).
      triangle_every: 0 = none; k > 0 = a triangle block (AlphaFold 2's outgoing then incoming
        triangle multiplicative update: ``foldnet.model.triangle``) after every k-th 2D residual
        block, named ``triangle_0``, ...
      triangle_after: further triangle blocks after these 2D residual blocks (0-based), named
        after the ``triangle_every`` ones in list order: a trunk grown by ``init_grow`` keeps its
        trained blocks' names, so they keep their parameters.
      triangle_channels: width of the triangle updates' projections.
      kernel_1d: 1D convolution width.
      kernel_2d: 2D convolution size (kernel_2d x kernel_2d).
      dropout: dropout rate inside residual blocks (train only), applied as round(256 x rate) / 256
        (``layers.dropout_multiplier``: one random byte per element).
      use_profile: feed the profile (x has_profile) and the indicator channel.
      max_relpos: relative positions |i - j| are one-hot encoded, clipped here.
      torsion_bins: number of torsion bins (rc.NUM_TORSION_BINS; bins are fixed there).
      predict_omega: also predict omega.
      dtype: activation dtype, "bfloat16" (params stay f32) or "float32".
      distogram_weight: weight of the distogram loss (0 = head not built).
      torsion_weight: weight of the torsion loss (0 = head not built).
      distogram_min_separation: pairs with |i - j| below this are left out of the
        distogram loss (1 drops only the trivial diagonal).
      ca_distogram_weight: weight of the CA-CA distogram head (0 = not built).
      orientation_weight: weight of the trRosetta orientation head (omega, theta, phi; 0 = not built).
      ss_weight: weight of the DSSP 8-state secondary-structure head (0 = not built).
      Those three are training-only supervision from the coordinates: inference reads the CB
      distogram and the torsions, and jit drops the unused heads.
    """

    name: str = "base"
    channels_1d: int = 64
    blocks_1d: int = 4
    channels_2d: int = 32
    blocks_2d: int = 8
    bottleneck_2d: int = 0
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    triangle_every: int = 0
    triangle_after: tuple[int, ...] = ()
    triangle_channels: int = 32
    kernel_1d: int = 5
    kernel_2d: int = 3
    dropout: float = 0.0
    use_profile: bool = True
    max_relpos: int = 32
    torsion_bins: int = rc.NUM_TORSION_BINS
    predict_omega: bool = False
    dtype: str = "bfloat16"
    distogram_weight: float = 1.0
    torsion_weight: float = 1.0
    distogram_min_separation: int = 1
    ca_distogram_weight: float = 0.0
    orientation_weight: float = 0.0
    ss_weight: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        object.__setattr__(self, "triangle_after", tuple(int(b) for b in self.triangle_after))
        if self.dtype not in _DTYPES:
            raise ValueError(f"ModelConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        for f in ("channels_1d", "blocks_1d", "kernel_1d", "kernel_2d", "max_relpos"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"ModelConfig.{f} must be >= 1, got {getattr(self, f)}")
        if self.distogram_weight > 0 and (self.channels_2d < 1 or self.blocks_2d < 0):
            raise ValueError("ModelConfig: the distogram head needs channels_2d >= 1 and blocks_2d >= 0")
        if self.bottleneck_2d < 0:
            raise ValueError(f"ModelConfig.bottleneck_2d must be >= 0 (0 = plain blocks), got {self.bottleneck_2d}")
        if self.triangle_every < 0:
            raise ValueError(f"ModelConfig.triangle_every must be >= 0 (0 = none), got {self.triangle_every}")
        every = self._every_positions()
        for b in self.triangle_after:
            if not 0 <= b < self.blocks_2d:
                raise ValueError(f"ModelConfig.triangle_after: block {b} is not one of the "
                                 f"{self.blocks_2d} 2D residual blocks (0-based)")
        if len(set(every + self.triangle_after)) != len(every) + len(self.triangle_after):
            raise ValueError(f"ModelConfig.triangle_after {list(self.triangle_after)} repeats a block "
                             f"(triangle_every={self.triangle_every} puts blocks after {list(every)})")
        if self.triangle_channels < 1:
            raise ValueError(f"ModelConfig.triangle_channels must be >= 1, got {self.triangle_channels}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"ModelConfig.dilations must be positive, got {self.dilations}")
        if self.torsion_bins != rc.NUM_TORSION_BINS:
            # The bin edges live in residue_constants; a different count would
            # silently mislabel targets.
            raise ValueError(
                f"ModelConfig.torsion_bins={self.torsion_bins} but residue_constants defines "
                f"{rc.NUM_TORSION_BINS} torsion bins"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.dropout > 0:
            try:
                dropout_threshold(self.dropout)
            except ValueError as e:
                raise ValueError(f"ModelConfig.dropout: {e}") from None
        for f in ("distogram_weight", "torsion_weight", "ca_distogram_weight", "orientation_weight", "ss_weight"):
            if getattr(self, f) < 0:
                raise ValueError(f"ModelConfig.{f} must be >= 0, got {getattr(self, f)}")
        if self.distogram_weight == 0 and self.torsion_weight == 0:
            raise ValueError("ModelConfig: both loss weights are 0, nothing to train")

    def _every_positions(self) -> tuple[int, ...]:
        if self.triangle_every <= 0:
            return ()
        return tuple(b for b in range(self.blocks_2d) if (b + 1) % self.triangle_every == 0)

    def triangle_positions(self) -> tuple[int, ...]:
        """The 2D residual block each triangle block follows; entry k is ``triangle_k``."""
        return self._every_positions() + self.triangle_after

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping (e.g. an omegaconf node); unknown keys are an error.

        Args:
          d: field -> value; a ``preset`` key starts from that preset's values.
        Returns:
          The validated ModelConfig.
        """
        d = dict(d)
        base: dict[str, Any] = {}
        if "preset" in d:
            base = dataclasses.asdict(PRESETS[d.pop("preset")])
        base.update(d)
        return from_mapping(cls, base)

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (dilations as a list) for YAML / checkpoint metadata."""
        d = dataclasses.asdict(self)
        d["dilations"] = list(self.dilations)
        return d


def _load_presets() -> dict[str, ModelConfig]:
    """The named presets, read from the hydra group ``configs/model/`` (their one definition)."""
    import yaml

    folder = Path(config_dir()) / "model"
    return {p.stem: ModelConfig.from_dict(yaml.safe_load(p.read_text())) for p in sorted(folder.glob("*.yaml"))}


# tiny (tests), base (CPU-trainable), large (accelerator-sized): configs/model/<name>.yaml.
PRESETS: dict[str, ModelConfig] = _load_presets()
