"""FoldNet: 1D torsion ResNet + 2D distogram ResNet, and the weighted loss.

The 1D trunk embeds residues; the torsion head reads it directly and the 2D
trunk builds pair features from it (outer concatenation + separation
encoding) for the distogram head. A head whose loss weight is 0 is not built
(and neither is the 2D trunk when only it would use it).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from foldnet.model.config import ModelConfig
from foldnet.model.heads import (
    CaDistogramHead,
    DenseLogits,
    DistogramHead,
    OrientationHead,
    SecondaryStructureHead,
    TorsionHead,
    materialize,
)
from foldnet.model.precision import get_policy
from foldnet.model.resnet1d import ResNet1D
from foldnet.model.resnet2d import ResNet2D


class FoldNet(nn.Module):
    """The foldnet network.

    Attributes:
      config: the ModelConfig.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, batch: dict, *, train: bool, defer_pair_logits: bool = False) -> dict:
        """Run the network on a loader batch (see docs/design.md for the contract).

        Args:
          batch: dict with aatype, profile, has_profile, residue_index, seq_mask [B, N ...].
          train: enables dropout (then the "dropout" RNG stream is required).
          defer_pair_logits: the pair heads may return ``heads.DenseLogits`` instead of
            arrays, for ``head_losses`` only (the fused CPU cross-entropy; ``loss_fn``).
        Returns:
          float32 logits: "dist_logits" [B, N, N, 65] (symmetric) when the distogram
          head is built; "phi_logits", "psi_logits" (+ "omega_logits") [B, N, 36]
          when the torsion head is built; "ca_dist_logits" [B, N, N, 65],
          "orient_{omega,theta,phi}_logits" [B, N, N, 25 / 25 / 13] and "ss8_logits" [B, N, 8]
          when those heads are built.
        """
        cfg = self.config
        policy = get_policy(cfg.dtype)
        emb = ResNet1D(cfg, policy, name="trunk_1d")(batch, train=train)
        out: dict[str, jnp.ndarray] = {}
        if cfg.torsion_weight > 0:
            out.update(TorsionHead(cfg, policy, name="torsion_head")(emb))
        if cfg.ss_weight > 0:
            out.update(SecondaryStructureHead(cfg, policy, name="ss_head")(emb))
        if cfg.distogram_weight > 0 or cfg.ca_distogram_weight > 0 or cfg.orientation_weight > 0:
            pair = ResNet2D(cfg, policy, name="trunk_2d")(emb, batch, train=train)
            defer = defer_pair_logits
            if cfg.distogram_weight > 0:
                out.update(DistogramHead(cfg, policy, name="distogram_head")(pair, defer))
            if cfg.ca_distogram_weight > 0:
                out.update(CaDistogramHead(cfg, policy, name="ca_distogram_head")(pair, defer))
            if cfg.orientation_weight > 0:
                out.update(OrientationHead(cfg, policy, name="orientation_head")(pair, defer))
        return {k: v if isinstance(v, DenseLogits) else v.astype(jnp.float32) for k, v in out.items()}


def build_model(cfg: ModelConfig) -> FoldNet:
    """The FoldNet module for a config (unbound; initialise with ``model.init``)."""
    return FoldNet(cfg)


def head_losses(cfg: ModelConfig, outputs: dict, batch: dict) -> dict:
    """Per-example losses [B] of every built head, and their weighted sum.

    Args:
      cfg: model config (weights, options).
      outputs: the model outputs.
      batch: the batch (targets and masks).
    Returns:
      dict of [B] f32 arrays: each head's losses and "loss_per_example" (weighted sum).
    """
    aux: dict[str, jnp.ndarray] = {}
    total = 0.0
    if cfg.torsion_weight > 0:
        t = TorsionHead.loss(outputs, batch, cfg)
        aux.update(t)
        total = total + cfg.torsion_weight * t["torsion_loss"]
    heads = (
        (cfg.distogram_weight, DistogramHead, "distogram_loss"),
        (cfg.ca_distogram_weight, CaDistogramHead, "ca_distogram_loss"),
        (cfg.orientation_weight, OrientationHead, "orientation_loss"),
        (cfg.ss_weight, SecondaryStructureHead, "ss_loss"),
    )
    for weight, head, key in heads:
        if weight > 0:
            d = head.loss(outputs, batch, cfg)
            aux.update(d)
            total = total + weight * d[key]
    aux["loss_per_example"] = total
    return aux


def loss_fn(
    model: FoldNet, params: Any, batch: dict, rng: jax.Array, *, train: bool = True
) -> tuple[jnp.ndarray, dict]:
    """Total loss (the batch mean of the weighted per-example losses) and aux.

    Args:
      model: the FoldNet.
      params: its parameters (the "params" collection).
      batch: a loader batch.
      rng: dropout key (used only when ``train``).
      train: training mode (dropout on).
    Returns:
      (scalar f32 loss, aux) where aux holds [B] per-example losses per head and
      "loss_per_example", plus "outputs" (the model outputs).

    The losses take the pair heads' deferred logits (the fused CPU cross-entropy, where it
    applies); ``aux["outputs"]`` computes them as arrays, which costs nothing under ``jit``
    when the caller drops them (the training step does).
    """
    rngs = {"dropout": rng} if train else {}
    outputs = model.apply({"params": params}, batch, train=train, rngs=rngs, defer_pair_logits=True)
    aux = head_losses(model.config, outputs, batch)
    aux["outputs"] = materialize(outputs)
    return jnp.mean(aux["loss_per_example"]), aux


def count_params(params: Any) -> int:
    """Number of scalar parameters in a params pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
