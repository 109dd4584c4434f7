"""1D ResNet over per-residue features (the torsion trunk).

Input features per residue (MiniFold / RaptorX-style sequence features):
one-hot residue type (21), profile frequencies (20) multiplied by
``has_profile``, the ``has_profile`` indicator (1), and a sinusoidal encoding
of the chain position ``residue_index`` (Vaswani et al. 2017), all zeroed on
padding.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.model.config import ModelConfig
from foldnet.model.layers import F32LayerNorm, ResidualBlock
from foldnet.model.precision import Policy

NUM_POS_FREQS = 8  # 16 sinusoidal channels, periods 2*pi .. 2*pi*1000^(7/8) residues


def residue_features(batch: dict, use_profile: bool) -> jnp.ndarray:
    """Per-residue input features [B, N, F] (float32), zero on padding.

    Args:
      batch: the loader batch (aatype, profile, has_profile, residue_index, seq_mask).
      use_profile: include profile * has_profile and the indicator channel.
    Returns:
      [B, N, 21 (+ 21) + 16] float32.
    """
    mask = batch["seq_mask"].astype(jnp.float32)[..., None]
    feats = [jnp.eye(rc.NUM_RESTYPES, dtype=jnp.float32)[batch["aatype"]]]
    if use_profile:
        has = batch["has_profile"].astype(jnp.float32)[:, None, None]
        prof = batch["profile"].astype(jnp.float32)
        feats += [prof * has, jnp.broadcast_to(has, prof.shape[:2] + (1,))]
    pos = batch["residue_index"].astype(jnp.float32)[..., None]
    freqs = 1.0 / (1000.0 ** (np.arange(NUM_POS_FREQS, dtype=np.float32) / NUM_POS_FREQS))
    feats += [jnp.sin(pos * freqs), jnp.cos(pos * freqs)]
    return jnp.concatenate(feats, axis=-1) * mask


class ResNet1D(nn.Module):
    """Per-residue embedding: input projection, residual blocks, final f32 LayerNorm.

    Returns [B, N, channels_1d] in float32.
    """

    config: ModelConfig
    policy: Policy

    @nn.compact
    def __call__(self, batch: dict, *, train: bool) -> jnp.ndarray:
        cfg, p = self.config, self.policy
        mask = batch["seq_mask"].astype(jnp.float32)[..., None]
        x = residue_features(batch, cfg.use_profile)
        x = nn.Dense(cfg.channels_1d, dtype=p.compute_dtype, param_dtype=p.param_dtype, name="input")(
            p.cast_compute(x)
        )
        x = x * mask.astype(x.dtype)
        for k in range(cfg.blocks_1d):
            x = ResidualBlock(
                cfg.channels_1d, (cfg.kernel_1d,), 1, cfg.dropout, p, name=f"block_{k}"
            )(x, mask, train=train)
        return F32LayerNorm(p, name="final_norm")(x, out_mask=mask)
