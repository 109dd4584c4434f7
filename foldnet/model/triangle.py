"""Triangle multiplicative updates of the pair representation: the 2D trunk's global context.

Whether residues i and j touch is constrained by every third residue k: if i is close to k
and k to j, i and j are close (the triangle inequality of a distance map). A dilated 3x3
ResNet sees (i, j) only through a receptive field that grows with depth; the triangle update
of AlphaFold 2 (Jumper et al. 2021, Algorithms 11 and 12) combines, for every pair, the edges
(i, k) and (j, k) over *all* k in one step:

    outgoing:  t_ij = sum_k a_ik * b_jk        incoming:  t_ij = sum_k a_ki * b_kj

with a, b gated projections of the LayerNormed pairs, then LayerNorm(t), a projection back
and a sigmoid gate. It is O(N^3 c) as c matrix products of N x N, which XLA:CPU runs as large
products (the 32-wide product: 10 ms forward + backward at N = 128 on 2 cores); a gated
axial-attention block of the same width took 112-236 ms against this block's 50-81 ms, in small
batched products and the softmax (docs/model.md). The output projection starts at zero, so a new block is the identity and a
trained ResNet grown with these blocks computes what it did (``init_grow``).

Padding: a and b are zeroed at padded positions, so the sums over k see real residues only,
and the update is masked; predictions do not depend on the padding (tested).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from foldnet.model.layers import Dropout, F32LayerNorm
from foldnet.model.precision import Policy


def triangle_product(a: jnp.ndarray, b: jnp.ndarray, outgoing: bool) -> jnp.ndarray:
    """t_ij = sum_k a_ik b_jk (``outgoing``) or sum_k a_ki b_kj, per channel: [B, N, N, c] x2 ->
    [B, N, N, c], accumulated in f32."""
    spec = "bikc,bjkc->bijc" if outgoing else "bkic,bkjc->bijc"
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


class TriangleMultiplication(nn.Module):
    """One triangle multiplicative update (``outgoing`` or incoming) of [B, N, N, C] pairs; returns
    the input plus the masked update.

    Attributes:
      channels: width c of the projections a and b (the c matrix products).
      outgoing: t_ij = sum_k a_ik b_jk (edges leaving i and j); else sum_k a_ki b_kj.
      dropout: dropout rate of the update (train only).
      policy: precision policy.
    """

    channels: int
    outgoing: bool
    dropout: float
    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args:
          x: [B, N, N, C] pair activations.
          mask: [B, N, N, 1] pair mask (seq_mask_i * seq_mask_j).
          train: enables dropout.
        """
        p = self.policy
        c_out = x.shape[-1]
        m = mask.astype(jnp.float32)
        dense = lambda n, name, **kw: nn.Dense(n, dtype=p.compute_dtype, param_dtype=p.param_dtype,  # noqa: E731
                                               name=name, **kw)
        y = p.cast_compute(F32LayerNorm(p, name="norm_in")(x, out_mask=m))
        # a, b and their gates from one projection: one [.., C] x [C, 4c] product
        ab = dense(4 * self.channels, "ab")(y).astype(jnp.float32)
        a, ga, b, gb = jnp.split(ab, 4, axis=-1)
        a = a * jax.nn.sigmoid(ga) * m
        b = b * jax.nn.sigmoid(gb) * m
        a, b = p.cast_compute(a), p.cast_compute(b)
        t = triangle_product(a, b, self.outgoing)
        t = p.cast_compute(F32LayerNorm(p, name="norm_out")(t, out_mask=m))
        g = jax.nn.sigmoid(dense(c_out, "gate")(y).astype(jnp.float32))
        h = dense(c_out, "out", kernel_init=nn.initializers.zeros)(t).astype(jnp.float32) * g
        h = Dropout(self.dropout)(h, deterministic=not train)
        return (x + h.astype(x.dtype)) * mask.astype(x.dtype)


class TriangleBlock(nn.Module):
    """The outgoing, then the incoming triangle update (each its own residual update)."""

    channels: int
    dropout: float
    policy: Policy

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = TriangleMultiplication(self.channels, True, self.dropout, self.policy, name="outgoing")(
            x, mask, train=train)
        return TriangleMultiplication(self.channels, False, self.dropout, self.policy, name="incoming")(
            x, mask, train=train)
