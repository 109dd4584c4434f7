"""2D dilated ResNet over pair features (the distogram trunk).

Pair features (AlphaFold-CASP13, Senior et al. 2020; RaptorX-Contact):
the outer concatenation of projected 1D embeddings [e_i, e_j], a one-hot of
the signed sequence separation ``residue_index_j - residue_index_i`` clipped
at +-max_relpos, and log(1 + |i - j|). Dilations cycle through
``config.dilations`` so the receptive field grows geometrically with depth.
With ``config.bottleneck_2d > 0`` the blocks are AlphaFold-CASP13's bottleneck
blocks (``channels_2d`` wide stream, ``bottleneck_2d`` wide dilated convolution).
With ``config.triangle_every = k > 0`` a triangle block (``foldnet.model.triangle``: AlphaFold
2's triangle multiplicative updates) follows every k-th residual block: each pair (i, j)
combines the edges (i, k), (j, k) of every third residue k in one step; ``config.triangle_after``
places more of them after chosen blocks.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from foldnet.model.config import ModelConfig
from foldnet.model.layers import BottleneckBlock, F32LayerNorm, KernelParams, ResidualBlock
from foldnet.model.precision import Policy
from foldnet.model.triangle import TriangleBlock


def _relpos_index(residue_index: jnp.ndarray, max_relpos: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(one-hot index [B, N, N] int32, log-separation [B, N, N] f32) of ``relpos_features``."""
    ri = residue_index.astype(jnp.int32)
    d = ri[:, None, :] - ri[:, :, None]
    logsep = jnp.log1p(jnp.abs(d).astype(jnp.float32)) / jnp.log(1001.0)
    return jnp.clip(d, -max_relpos, max_relpos) + max_relpos, logsep


def relpos_features(residue_index: jnp.ndarray, max_relpos: int) -> jnp.ndarray:
    """Sequence-separation features [B, N, N, 2*max_relpos + 2] (float32).

    Args:
      residue_index: [B, N] chain positions.
      max_relpos: clip value of the signed separation one-hot.
    Returns:
      one-hot of clip(j - i, -max_relpos, max_relpos) and log(1 + |j - i|) / log(1 + 1000).
    """
    idx, logsep = _relpos_index(residue_index, max_relpos)
    return jnp.concatenate([jax.nn.one_hot(idx, 2 * max_relpos + 1), logsep[..., None]], axis=-1)


def outer_concat(e: jnp.ndarray) -> jnp.ndarray:
    """[e_i, e_j] for every pair: [B, N, N, 2 C] from [B, N, C]."""
    b, n, c = e.shape
    return jnp.concatenate([jnp.broadcast_to(e[:, :, None, :], (b, n, n, c)),
                            jnp.broadcast_to(e[:, None, :, :], (b, n, n, c))], axis=-1)


def factored_pair_input(e: jnp.ndarray, residue_index: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray,
                        max_relpos: int) -> jnp.ndarray:
    """``Dense(concat([e_i, e_j], relpos_features))`` [B, N, N, C] without the concatenation.

    The dense layer is linear in each block of its input, so it is e_i W_i + e_j W_j (two
    [N]-sized products, broadcast) + the row of W_rel that the separation's one-hot picks +
    log-separation * w_log + bias: O(N) multiply-adds where the concatenated form spends
    O(N^2) on the outer product and materialises a [B, N, N, 2 half + 2 max_relpos + 2] input.
    Equal to the dense layer to float rounding (tested).
    """
    half = e.shape[-1]
    a = jnp.einsum("bnh,hc->bnc", e, kernel[:half], precision=jax.lax.Precision.HIGHEST)
    b = jnp.einsum("bnh,hc->bnc", e, kernel[half:2 * half], precision=jax.lax.Precision.HIGHEST)
    idx, logsep = _relpos_index(residue_index, max_relpos)
    # a row lookup; its gradient is a scatter-add into the small [2 max_relpos + 1, C] table
    # (1.1 ms at batch 4, crop 128, against 10.5 ms for a one-hot product that materialises
    # [B, N, N, 65]; measured in one process)
    rel = jnp.take(kernel[2 * half:-1], idx, axis=0)
    return a[:, :, None, :] + b[:, None, :, :] + rel + logsep[..., None] * kernel[-1] + bias


class ResNet2D(nn.Module):
    """Pair representation [B, N, N, channels_2d] (float32) from 1D embeddings."""

    config: ModelConfig
    policy: Policy

    @nn.compact
    def __call__(self, emb_1d: jnp.ndarray, batch: dict, *, train: bool) -> jnp.ndarray:
        """Args:
          emb_1d: [B, N, C1] float32 from the 1D trunk.
          batch: needs residue_index, seq_mask, pair_mask-independent (seq_mask defines padding).
          train: enables dropout.
        """
        cfg, p = self.config, self.policy
        seq_mask = batch["seq_mask"].astype(jnp.float32)
        mask = (seq_mask[:, :, None] * seq_mask[:, None, :])[..., None]
        half = max(cfg.channels_2d // 2, 1)
        e = nn.Dense(half, dtype=p.compute_dtype, param_dtype=p.param_dtype, name="pair_proj")(
            p.cast_compute(emb_1d)
        )
        if jnp.dtype(p.compute_dtype) == jnp.float32:
            # f32 (every CPU run): the same layer, factored (see factored_pair_input)
            kernel, bias = KernelParams(cfg.channels_2d, (), p.param_dtype, name="input")(
                2 * half + 2 * cfg.max_relpos + 2)
            x = factored_pair_input(e, batch["residue_index"], kernel, bias, cfg.max_relpos)
        else:
            # bf16 on accelerators: one dense layer over the concatenation accumulates in
            # f32, where the factored sum would add its terms in bf16
            rel = p.cast_compute(relpos_features(batch["residue_index"], cfg.max_relpos))
            x = jnp.concatenate([outer_concat(e), rel], axis=-1)
            x = nn.Dense(cfg.channels_2d, dtype=p.compute_dtype, param_dtype=p.param_dtype, name="input")(x)
        x = x * mask.astype(x.dtype)
        k = cfg.kernel_2d
        triangle_name = {b: f"triangle_{t}" for t, b in enumerate(cfg.triangle_positions())}
        for b in range(cfg.blocks_2d):
            d = cfg.dilations[b % len(cfg.dilations)]
            if cfg.bottleneck_2d:
                block = BottleneckBlock(cfg.channels_2d, cfg.bottleneck_2d, (k, k), d, cfg.dropout, p,
                                        name=f"block_{b}")
            else:
                block = ResidualBlock(cfg.channels_2d, (k, k), d, cfg.dropout, p, name=f"block_{b}")
            x = block(x, mask, train=train)
            if b in triangle_name:
                x = TriangleBlock(cfg.triangle_channels, cfg.dropout, p,
                                  name=triangle_name[b])(x, mask, train=train)
        return F32LayerNorm(p, name="final_norm")(x, out_mask=mask)
