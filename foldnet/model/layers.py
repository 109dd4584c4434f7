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
import jax.numpy as jnp

from foldnet.model.precision import Policy


class F32LayerNorm(nn.Module):
    """LayerNorm over the channel axis computed and returned in the policy's norm dtype."""

    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(self.policy.norm_dtype)
        return nn.LayerNorm(
            epsilon=1e-5, dtype=self.policy.norm_dtype, param_dtype=self.policy.param_dtype
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
