"""The optimiser: AdamW with linear warm-up + cosine decay and global-norm clipping.

Loshchilov & Hutter 2019 (decoupled weight decay); warm-up + cosine as in
Goyal et al. 2017 / big_vision. Weight decay skips 1-D parameters (biases,
LayerNorm scales), the usual practice since decaying them only hurts.
The schedule is wrapped in ``optax.inject_hyperparams`` so the learning rate
of each step lives in the optimiser state (``current_learning_rate``) and the
pure train step can log it without knowing the schedule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW + schedule + clipping settings.

    Attributes:
      learning_rate: peak learning rate (reached at the end of warm-up).
      weight_decay: decoupled weight decay (not applied to 1-D params).
      warmup_steps: linear warm-up from 0 to the peak.
      total_steps: steps of warm-up + cosine decay; afterwards lr = peak * min_lr_ratio.
      clip_norm: global gradient-norm clip (<= 0 disables clipping).
      b1, b2, eps: Adam moments.
      max_consecutive_skips: the loop stops after this many consecutive non-finite steps.
      min_lr_ratio: final learning rate as a fraction of the peak.
      ema_decay: exponential moving average of the parameters kept in the train state
        (0 = none). The decay ramps up as min(ema_decay, (1 + t) / (10 + t)) at step t
        (TensorFlow's ExponentialMovingAverage with num_updates), so early averages are
        not dominated by the initialisation. Validation, checkpoint ranking and export
        use the average when there is one.
    """

    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    total_steps: int = 10_000
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_consecutive_skips: int = 10
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.0

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"OptimConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ValueError("OptimConfig: total_steps must be >= 1 and warmup_steps >= 0")
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"OptimConfig.warmup_steps ({self.warmup_steps}) > total_steps ({self.total_steps})"
            )
        if self.max_consecutive_skips < 1:
            raise ValueError("OptimConfig.max_consecutive_skips must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"OptimConfig.ema_decay must be in [0, 1), got {self.ema_decay}")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warm-up to ``learning_rate`` then cosine decay to ``learning_rate * min_lr_ratio``.

    The argument is the optimiser's update count k = 0, 1, ...; update k uses the
    rate of step k + 1 of the warm-up ramp (peak * (k + 1) / warmup_steps), so the
    first update is not wasted at learning rate 0, the peak is reached at update
    warmup_steps - 1 and the floor at update total_steps - 1.
    """
    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps,
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )
    return lambda count: base(count + 1)


def _decay_mask(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda p: jnp.ndim(p) > 1, params)


def _adamw_clipped(learning_rate, weight_decay, *, clip_norm, b1, b2, eps):
    parts = []
    if clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(
        optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask)
    )
    return optax.chain(*parts)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """The optimiser for a config.

    Args:
      cfg: OptimConfig.
    Returns:
      An optax GradientTransformation whose state records the learning rate used
      by the latest update (read it with ``current_learning_rate``).

    Example:
      >>> opt = make_optimizer(OptimConfig(learning_rate=1e-3, total_steps=1000))
    """
    return optax.inject_hyperparams(
        lambda learning_rate, weight_decay: _adamw_clipped(
            learning_rate, weight_decay, clip_norm=cfg.clip_norm, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps
        )
    )(learning_rate=make_schedule(cfg), weight_decay=cfg.weight_decay)


def current_learning_rate(opt_state: Any) -> jnp.ndarray:
    """The learning rate recorded in the state of ``make_optimizer``'s transformation.

    After ``optimizer.update`` it is the rate that update used.
    """
    return jnp.asarray(opt_state.hyperparams["learning_rate"], jnp.float32)
