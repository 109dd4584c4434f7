"""Typed configuration of the folding procedure (the hydra ``fold`` group maps 1:1 onto it)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from foldnet.common.config import from_mapping
from foldnet.geometry.nerf import METHODS


@dataclasses.dataclass(frozen=True)
class FoldConfig:
    """How ``foldnet.structure.fold`` turns predicted distributions into coordinates.

    Frozen and hashable: it is a static argument of the jitted folding function, so one
    compilation serves every protein of the same length.
    """

    # Independent gradient-descent runs (vmapped); the lowest-energy one is kept.
    num_restarts: int = 8
    # Adam steps per run (inside one lax.scan).
    num_steps: int = 400
    # Peak Adam learning rate on the torsions (radians per step) ...
    learning_rate: float = 0.1
    # ... decayed by a cosine schedule to learning_rate * final_lr_fraction.
    final_lr_fraction: float = 0.02
    # Gaussian noise (degrees) added to the torsions sampled from the predicted bins.
    init_noise_deg: float = 10.0
    # Weights of the potential terms (a term with weight 0 is still reported).
    weight_distogram: float = 1.0
    weight_torsion: float = 5.0
    weight_clash: float = 1.0
    # trRosetta orientation term (omega, theta, phi of CB-contacting pairs; needs a model
    # with the orientation head). 0 = off: the potential is built without it and every
    # number is exactly that of a potential without orientations.
    weight_orientation: float = 0.0
    # ... only on pairs (|i - j| >= min_separation) whose predicted P(CB-CB < 20 A), the
    # mean of 1 - p(last bin) over the three angle heads, exceeds this ...
    orientation_min_contact_prob: float = 0.5
    # ... with this von Mises concentration per 15-degree bin (15 ~ a standard deviation of
    # 15 degrees, one bin).
    orientation_kappa: float = 15.0
    # Distogram term only on pairs with |i - j| >= min_separation.
    min_separation: int = 3
    # Sequence-separation curriculum (trRosetta's short -> medium -> long restraint stages,
    # as one schedule): over the first ``separation_ramp`` fraction of the descent only pairs
    # with |i - j| <= a cutoff count in the distogram term, the cutoff growing linearly from
    # ``ramp_start_separation`` to the chain length; afterwards all pairs count. Local
    # structure settles before the blurry long-range terms pull on it. 0 = off (all pairs
    # from the first step). 0.2: on 2 x 40 validation chains (fold=fast, the shipped model's
    # predictions) median TM +0.011 / +0.023 over 0 (docs/structure.md, fold ablation).
    separation_ramp: float = 0.2
    ramp_start_separation: int = 12
    # Weight w of the background in -log(p + eps) + w log(ref + eps) when a reference
    # distogram is given (1 = AlphaFold-CASP13's full correction).
    reference_weight: float = 1.0
    # Probability floor in -log(p + eps) (caps the penalty of impossible bins).
    prob_eps: float = 1e-8
    # Largest slope (energy per Angstrom) of the distogram term's Laplace envelope; the
    # envelope gives a gradient towards probable bins where the prediction is ~0 (None: off).
    distogram_max_slope: Optional[float] = 1.0
    # Von Mises concentration of each torsion-bin component (1/kappa ~ variance in rad^2;
    # 30 is a standard deviation of about 10 degrees, one bin).
    torsion_kappa: float = 30.0
    # Steric clash thresholds (Angstrom) and the smallest |i - j| they apply to.
    clash_ca: float = 3.8
    clash_cb: float = 3.6
    clash_min_separation: int = 2
    # NeRF chain builder: "frames" (prefix product of per-atom transforms), "pnerf"
    # (parallel fragments) or "scan" (sequential); all equal to f32 rounding.
    nerf_method: str = "frames"
    # Gradient of the energy in the torsions: "analytic" (the rigid-rotation formula with suffix
    # sums, geometry.torsion_gradients: O(L), no reverse pass through the chain builder) or
    # "autodiff" (reverse-mode through nerf_method's builder). Equal to f32 rounding.
    torsion_gradient: str = "analytic"
    # Split the restarts across the local devices (one per CPU core when the CLI set
    # jax_num_cpu_devices; GPUs/TPUs likewise); False: all restarts on one device.
    shard_restarts: bool = True
    # Atoms per pNeRF fragment; None = about sqrt(3L).
    fragment_size: Optional[int] = None
    # Chains are padded at the C-terminus to a multiple of this many residues (masked out
    # of every term, and NeRF is N->C so they cannot move real atoms): one compilation
    # serves all lengths in a bucket. 1 = no padding.
    length_bucket: int = 32
    # Optional Cartesian refinement after the torsion descent (0 = off): Adam steps on
    # the N/CA/C coordinates under the distogram + clash terms plus harmonic restraints
    # that keep bond lengths and angles at their Engh & Huber values.
    refine_steps: int = 0
    refine_learning_rate: float = 0.02
    refine_bond_weight: float = 100.0
    # Confidence: partners j count for residue i with weight P(d_ij < this cutoff).
    confidence_contact_cutoff: float = 12.0

    def __post_init__(self):
        positive = ("num_restarts", "num_steps", "learning_rate", "torsion_kappa", "prob_eps", "orientation_kappa")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"FoldConfig.{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = (
            "weight_distogram", "weight_torsion", "weight_clash", "weight_orientation", "init_noise_deg", "refine_steps",
            "final_lr_fraction", "clash_ca", "clash_cb", "refine_bond_weight", "reference_weight",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"FoldConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.separation_ramp <= 1.0:
            raise ValueError(f"FoldConfig.separation_ramp must be in [0, 1], got {self.separation_ramp}")
        if self.ramp_start_separation < 1:
            raise ValueError(f"FoldConfig.ramp_start_separation must be >= 1, got {self.ramp_start_separation}")
        if not 0.0 <= self.orientation_min_contact_prob < 1.0:
            raise ValueError(
                f"FoldConfig.orientation_min_contact_prob must be in [0, 1), got {self.orientation_min_contact_prob}")
        if self.length_bucket < 1:
            raise ValueError(f"FoldConfig.length_bucket must be >= 1, got {self.length_bucket}")
        if self.min_separation < 1 or self.clash_min_separation < 1:
            raise ValueError("FoldConfig.min_separation and clash_min_separation must be >= 1")
        if self.nerf_method not in METHODS:
            raise ValueError(f"FoldConfig.nerf_method must be one of {METHODS}, got {self.nerf_method!r}")
        if self.torsion_gradient not in ("analytic", "autodiff"):
            raise ValueError(
                f"FoldConfig.torsion_gradient must be 'analytic' or 'autodiff', got {self.torsion_gradient!r}")
        if self.fragment_size is not None and self.fragment_size < 3:
            raise ValueError(f"FoldConfig.fragment_size must be >= 3 or None, got {self.fragment_size}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FoldConfig":
        """Build from a mapping (e.g. a hydra/OmegaConf ``fold`` node); unknown keys are an error.

        Args:
          values: field name -> value.
        Returns:
          The validated config.
        """
        return from_mapping(cls, values)

    def replace(self, **changes) -> "FoldConfig":
        return dataclasses.replace(self, **changes)
