"""Building blocks shared by the 1D and 2D trunks: f32 LayerNorm and residual blocks.

Normalisation is LayerNorm over channels (no batch statistics), so a training
step is a pure function of (params, batch) and the gradient of a global batch
split over devices equals the single-device gradient exactly (up to float
reassociation). Residual blocks are pre-activation (He et al. 2016, "Identity
mappings in deep residual networks"): norm -> ELU -> conv -> norm -> ELU ->
dropout -> conv, added to the input, as in the dilated 2D ResNets of
AlphaFold-CASP13 (Senior et al. 2020) and MiniFold.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from foldnet.model.conv import conv_general_dilated
from foldnet.model.precision import Policy


class _LayerNorm(nn.Module):
    """LayerNorm over the last axis, flax's parameters (``scale``, ``bias``) and statistics.

    Written out instead of ``nn.LayerNorm`` to apply the scale *after* normalising,
    ``(x - mean) * rsqrt(var + eps) * scale + bias``: flax multiplies the
    per-position rsqrt by the per-channel scale first, a [.., C] product that
    XLA:CPU materialises at the full activation size (once more in the backward
    pass) -- 5-10 % of a 2D-trunk training step. Same values to float rounding
    (one reassociated product).
    """

    epsilon: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        x = x.astype(self.dtype)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        # flax's "fast variance" E[x^2] - E[x]^2, clamped at 0 as flax does.
        var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean))
        xhat = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return xhat * scale.astype(self.dtype) + bias.astype(self.dtype)


class F32LayerNorm(nn.Module):
    """LayerNorm over the channel axis computed and returned in the policy's norm dtype."""

    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(self.policy.norm_dtype)
        # Named as nn.LayerNorm's auto-name so checkpoints keep their parameter paths.
        return _LayerNorm(
            epsilon=1e-5,
            dtype=self.policy.norm_dtype,
            param_dtype=self.policy.param_dtype,
            name="LayerNorm_0",
        )(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block for 1D ([B, N, C]) or 2D ([B, N, N, C]) inputs.

    Attributes:
      features: channel count (input and output).
      kernel_size: (k,) for 1D or (k, k) for 2D.
      dilation: kernel dilation of both convolutions.
      dropout: dropout rate between the two convolutions (train only).
      policy: precision policy.
    """

    features: int
    kernel_size: Sequence[int]
    dilation: int
    dropout: float
    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args:
          x: [B, *spatial, C] activations in the compute dtype.
          mask: [B, *spatial, 1] 1 for real positions; padding is zeroed after the
            block so 'SAME' padding never leaks padded values into real ones.
          train: enables dropout (needs the "dropout" RNG stream).
        Returns:
          [B, *spatial, C] in the compute dtype.
        """
        p = self.policy
        conv = lambda name: nn.Conv(  # noqa: E731
            self.features,
            tuple(self.kernel_size),
            kernel_dilation=self.dilation,
            padding="SAME",
            dtype=p.compute_dtype,
            param_dtype=p.param_dtype,
            name=name,
            conv_general_dilated=conv_general_dilated,
        )
        # LayerNorm of a zero (padded) vector is its bias, not zero: re-mask before
        # each convolution so padded positions never reach real ones through the
        # 'SAME' receptive field (predictions must not depend on the padding).
        m = mask.astype(jnp.float32)
        h = nn.elu(F32LayerNorm(p, name="norm_a")(x)) * m
        h = conv("conv_a")(p.cast_compute(h))
        h = nn.elu(F32LayerNorm(p, name="norm_b")(h)) * m
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv("conv_b")(p.cast_compute(h))
        return (x + h) * mask.astype(x.dtype)
