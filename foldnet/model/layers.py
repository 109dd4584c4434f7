"""Building blocks shared by the 1D and 2D trunks: f32 LayerNorm and residual blocks.

Normalisation is LayerNorm over channels (no batch statistics), so a training
step is a pure function of (params, batch) and the gradient of a global batch
split over devices equals the single-device gradient exactly (up to float
reassociation). Residual blocks are pre-activation (He et al. 2016, "Identity
mappings in deep residual networks"): norm -> ELU -> conv -> norm -> ELU ->
dropout -> conv, added to the input, as in the dilated 2D ResNets of
AlphaFold-CASP13 (Senior et al. 2020) and MiniFold. ``BottleneckBlock`` is
AlphaFold-CASP13's own 2D block: a wide residual stream with a 1x1 projection
down to a narrow dilated 3x3 convolution and a 1x1 projection back up.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
from flax.linen.linear import default_kernel_init
import jax
import jax.numpy as jnp
import numpy as np

from foldnet.model import cpu_kernels
from foldnet.model.config import dropout_threshold
from foldnet.model.conv import conv_general_dilated
from foldnet.model.precision import Policy


def _normalize(x: jnp.ndarray, epsilon: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(x - mean) * rsqrt(var + eps) over the last axis, and that rsqrt ([.., 1])."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    # flax's "fast variance" E[x^2] - E[x]^2, clamped at 0 as flax does.
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean))
    r = jax.lax.rsqrt(var + epsilon)
    return (x - mean) * r, r


def dropout_multiplier(key: jax.Array, rate: float, shape: Sequence[int]) -> jnp.ndarray:
    """Inverted-dropout multiplier: 0 with probability ~``rate``, else 1 / (1 - that probability).

    Each element draws one random byte and is dropped when the byte is below
    t = round(256 * rate), so the drop probability is t / 256 (0.1 -> 0.1016) and the
    kept elements are scaled by 256 / (256 - t): the multiplier's mean is exactly 1. One
    32-bit word makes four decisions, where ``jax.random.bernoulli`` spends a word on each:
    on CPU the random bits, not the multiply, are the cost of dropout (threefry, the default
    PRNG, measured 2.5x slower for the 2D trunk's masks; docs/model.md).
    """
    t = dropout_threshold(rate)
    shape = tuple(shape)
    n = int(np.prod(shape))
    words = jax.random.bits(key, ((n + 3) // 4,), jnp.uint32)
    byte = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:n].reshape(shape)
    return jnp.where(byte >= t, jnp.float32(256.0 / (256 - t)), jnp.float32(0.0))


class Dropout(nn.Module):
    """Inverted dropout with ``dropout_multiplier``'s masks (the "dropout" RNG stream, as
    ``flax.linen.Dropout``)."""

    rate: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
        if deterministic or self.rate == 0:
            return x
        return x * dropout_multiplier(self.make_rng("dropout"), self.rate, x.shape).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _norm_elu_mask(x, scale, bias, mask, epsilon):
    """elu(LayerNorm(x) * scale + bias) * mask with a hand-written backward pass.

    The pre-activation of every residual block. Autodiff of the composition keeps
    separate [.., C] intermediates for the centring, the variance and the affine
    map and XLA:CPU materialises several of them; the closed-form LayerNorm
    gradient needs only the normalised input and the per-position rsqrt.
    ``mask`` is treated as a constant (zero cotangent).
    """
    return _norm_elu_mask_fwd(x, scale, bias, mask, epsilon)[0]


def _norm_elu_mask_fwd(x, scale, bias, mask, epsilon):
    xhat, r = _normalize(x, epsilon)
    y = xhat * scale + bias
    return nn.elu(y) * mask, (xhat, r, y, scale, mask)


def _norm_elu_mask_bwd(epsilon, res, g):
    xhat, r, y, scale, mask = res
    dy = g * mask * jnp.where(y > 0, 1.0, jnp.exp(jnp.minimum(y, 0.0)))
    axes = tuple(range(dy.ndim - 1))
    dscale = jnp.sum(dy * xhat, axis=axes)
    dbias = jnp.sum(dy, axis=axes)
    dxhat = dy * scale
    dx = r * (dxhat - jnp.mean(dxhat, axis=-1, keepdims=True)
              - xhat * jnp.mean(dxhat * xhat, axis=-1, keepdims=True))
    # The mask is data (padding), never trained: its cotangent is left at zero.
    return dx, dscale, dbias, jnp.zeros_like(mask)


_norm_elu_mask.defvjp(_norm_elu_mask_fwd, _norm_elu_mask_bwd)

# Read at trace time (tests compare against the autodiff composition).
FUSED_PREACTIVATION = True
# Whether the pre-activation runs as foldnet's CPU kernel where it can (read at trace
# time; tests and benchmarks switch it off to compare against the XLA version above).
USE_CPU_KERNELS = True


def _cpu_kernel_ok(x: jnp.ndarray, mask: jnp.ndarray) -> bool:
    """f32 on the CPU backend, mask [..., 1] matching x [..., C], C a width the kernel takes."""
    return (USE_CPU_KERNELS and jax.default_backend() == "cpu" and x.dtype == jnp.float32
            and mask.dtype == jnp.float32 and mask.shape == x.shape[:-1] + (1,)
            and cpu_kernels.norm_elu_supported(x.shape[-1]))


class _LayerNorm(nn.Module):
    """LayerNorm over the last axis, flax's parameters (``scale``, ``bias``) and statistics.

    Written out instead of ``nn.LayerNorm`` to apply the scale *after* normalising,
    ``(x - mean) * rsqrt(var + eps) * scale + bias``: flax multiplies the
    per-position rsqrt by the per-channel scale first, a [.., C] product that
    XLA:CPU materialises at the full activation size (once more in the backward
    pass) -- 5-10 % of a 2D-trunk training step. Same values to float rounding
    (one reassociated product). With ``elu_mask`` it returns
    ``elu(LayerNorm(x)) * elu_mask``, the residual blocks' pre-activation, through
    ``_norm_elu_mask``.
    """

    epsilon: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jnp.ndarray, elu_mask: jnp.ndarray | None = None,
                 out_mask: jnp.ndarray | None = None) -> jnp.ndarray:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(self.dtype)
        x = x.astype(self.dtype)
        if out_mask is not None:  # LayerNorm(x) * out_mask, no ELU (the trunks' final norms)
            m = out_mask.astype(self.dtype)
            if _cpu_kernel_ok(x, m):
                return cpu_kernels.norm_elu_mask(x, scale, bias, m, self.epsilon, False)
            return (_normalize(x, self.epsilon)[0] * scale + bias) * m
        if elu_mask is not None and FUSED_PREACTIVATION:
            m = elu_mask.astype(self.dtype)
            if _cpu_kernel_ok(x, m):
                return cpu_kernels.norm_elu_mask(x, scale, bias, m, self.epsilon)
            return _norm_elu_mask(x, scale, bias, m, self.epsilon)
        y = _normalize(x, self.epsilon)[0] * scale + bias
        return y if elu_mask is None else nn.elu(y) * elu_mask


class F32LayerNorm(nn.Module):
    """LayerNorm over the channel axis computed and returned in the policy's norm dtype.

    ``F32LayerNorm(p)(x, elu_mask=m)`` is ``elu(F32LayerNorm(p)(x)) * m``, computed fused;
    ``F32LayerNorm(p)(x, out_mask=m)`` is ``F32LayerNorm(p)(x) * m``, likewise.
    """

    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray, elu_mask: jnp.ndarray | None = None,
                 out_mask: jnp.ndarray | None = None) -> jnp.ndarray:
        x = x.astype(self.policy.norm_dtype)
        # Named as nn.LayerNorm's auto-name so checkpoints keep their parameter paths.
        return _LayerNorm(
            epsilon=1e-5,
            dtype=self.policy.norm_dtype,
            param_dtype=self.policy.param_dtype,
            name="LayerNorm_0",
        )(x, elu_mask, out_mask)


def _conv(features: int, kernel_size: Sequence[int], dilation: int, policy: Policy, name: str) -> nn.Conv:
    """A 'SAME' dilated convolution in the policy's dtypes with the CPU-fast backward pass."""
    return nn.Conv(
        features,
        tuple(kernel_size),
        kernel_dilation=dilation,
        padding="SAME",
        dtype=policy.compute_dtype,
        param_dtype=policy.param_dtype,
        name=name,
        conv_general_dilated=conv_general_dilated,
    )


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
        if self._fused_ok(x, mask):
            return self._fused(x, mask, train)
        conv = lambda name: _conv(self.features, self.kernel_size, self.dilation, p, name)  # noqa: E731
        # LayerNorm of a zero (padded) vector is its bias, not zero: re-mask before
        # each convolution so padded positions never reach real ones through the
        # 'SAME' receptive field (predictions must not depend on the padding).
        m = mask.astype(jnp.float32)
        h = F32LayerNorm(p, name="norm_a")(x, elu_mask=m)
        h = conv("conv_a")(p.cast_compute(h))
        h = F32LayerNorm(p, name="norm_b")(h, elu_mask=m)
        h = Dropout(self.dropout)(h, deterministic=not train)
        h = conv("conv_b")(p.cast_compute(h))
        return (x + h) * mask.astype(x.dtype)

    def _fused_ok(self, x: jnp.ndarray, mask: jnp.ndarray) -> bool:
        """The whole block as ``cpu_kernels.residual_block``: 2D, f32 compute, on CPU, kernels built."""
        p = self.policy
        return (len(self.kernel_size) == 2 and all(k % 2 == 1 for k in self.kernel_size)
                and x.ndim == 4 and x.shape[-1] == self.features and p.compute_dtype == jnp.float32
                and p.norm_dtype == jnp.float32 and _cpu_kernel_ok(x.astype(jnp.float32),
                                                                  mask.astype(jnp.float32)))

    def _fused(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool) -> jnp.ndarray:
        # Same parameters (names, shapes, initialisers, RNG order) and dropout mask as
        # the composition in __call__; tests/test_cpu_kernels.py checks both.
        p, c = self.policy, self.features
        na = _NormParams(p.param_dtype, name="norm_a")(x.shape[-1])
        ka = KernelParams(c, tuple(self.kernel_size), p.param_dtype, name="conv_a")(x.shape[-1])
        nb = _NormParams(p.param_dtype, name="norm_b")(c)
        drop = None
        if train and self.dropout > 0:
            drop = Dropout(self.dropout)(jnp.ones(x.shape[:-1] + (c,), jnp.float32), deterministic=False)
        kb = KernelParams(c, tuple(self.kernel_size), p.param_dtype, name="conv_b")(c)
        m = mask.astype(jnp.float32)
        return cpu_kernels.residual_block(x.astype(jnp.float32), m, *na, *ka, *nb, *kb, drop,
                                          (self.dilation, self.dilation), 1e-5)


class _LayerNormParams(nn.Module):
    """``_LayerNorm``'s parameters alone (the fused block computes the norm itself)."""

    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, c: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        return (self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(jnp.float32),
                self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(jnp.float32))


class _NormParams(nn.Module):
    """``F32LayerNorm``'s parameter tree (``<name>/LayerNorm_0/{scale,bias}``) without the norm."""

    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, c: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        return _LayerNormParams(self.param_dtype, name="LayerNorm_0")(c)


class KernelParams(nn.Module):
    """``nn.Conv``'s parameters -- and, with ``kernel_size=()``, ``nn.Dense``'s -- (``kernel``
    then ``bias``: same names, shapes, initialisers and RNG order, so the same values at
    init) without the product, for code that computes the layer itself."""

    features: int
    kernel_size: tuple[int, ...]
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        kernel = self.param("kernel", default_kernel_init, self.kernel_size + (in_features, self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        return kernel.astype(jnp.float32), bias.astype(jnp.float32)


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck block (AlphaFold-CASP13's 2D block) for [B, N, N, C] inputs.

    norm -> ELU -> 1x1 down to ``bottleneck`` -> norm -> ELU -> dilated k x k ->
    norm -> ELU -> dropout -> 1x1 up to ``features``, added to the input. Per pair
    it costs 2 * features * bottleneck + k^2 * bottleneck^2 multiply-adds against
    2 * k^2 * features^2 for ``ResidualBlock``: a 64-wide stream around a 32-wide
    3x3 convolution is cheaper in FLOPs than two 32-wide 3x3 convolutions.

    Attributes:
      features: channel count of the residual stream (input and output).
      bottleneck: channel count of the k x k convolution.
      kernel_size: (k, k).
      dilation: dilation of the k x k convolution.
      dropout: dropout rate before the up-projection (train only).
      policy: precision policy.
    """

    features: int
    bottleneck: int
    kernel_size: Sequence[int]
    dilation: int
    dropout: float
    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args and returns as ``ResidualBlock``."""
        p = self.policy
        dense = lambda n, name: nn.Dense(  # noqa: E731
            n, dtype=p.compute_dtype, param_dtype=p.param_dtype, name=name)
        m = mask.astype(jnp.float32)
        h = F32LayerNorm(p, name="norm_a")(x, elu_mask=m)
        h = dense(self.bottleneck, "down")(p.cast_compute(h))
        # Masked before the k x k convolution, as in ResidualBlock: padding never
        # reaches real positions through its receptive field.
        h = F32LayerNorm(p, name="norm_b")(h, elu_mask=m)
        h = _conv(self.bottleneck, self.kernel_size, self.dilation, p, "conv")(p.cast_compute(h))
        h = F32LayerNorm(p, name="norm_c")(h, elu_mask=m)
        h = Dropout(self.dropout)(h, deterministic=not train)
        h = dense(self.features, "up")(p.cast_compute(h))
        return (x + h) * mask.astype(x.dtype)
