"""Output heads; each head owns its loss (AlphaFold ``DistogramHead.loss`` style).

Targets are binned here, with jnp twins of ``residue_constants.distance_to_bin``
and ``angle_to_bin`` that use the very same edges, so the bins are defined once
(in residue_constants) and the data pipeline stays free of model concerns.

Every loss is a masked cross-entropy averaged *per example* (sum of masked
terms / number of valid terms, 0 when an example has none), returned as [B];
the model averages over the batch. Logits, softmax and losses are float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.model.config import ModelConfig
from foldnet.model.precision import Policy

TORSION_NAMES = ("phi", "psi", "omega")

# numpy, not jnp: creating device arrays at import would initialise the XLA backend
# before jax.distributed.initialize gets a chance to run.
_DIST_EDGES = np.asarray(rc.DISTOGRAM_EDGES, np.float32)
_TORSION_CENTERS = np.asarray(rc.TORSION_CENTERS_RAD, np.float32)


def distance_to_bin(d: jnp.ndarray) -> jnp.ndarray:
    """jnp twin of ``rc.distance_to_bin``: distogram bin (int32) of distances in A."""
    idx = jnp.searchsorted(_DIST_EDGES, d.astype(jnp.float32), side="right") - 1
    return jnp.clip(idx, 0, rc.NUM_DIST_BINS - 1).astype(jnp.int32)


def angle_to_bin(angle_rad: jnp.ndarray) -> jnp.ndarray:
    """jnp twin of ``rc.angle_to_bin``: torsion bin (int32) of angles in radians."""
    deg = jnp.rad2deg(angle_rad.astype(jnp.float32))
    deg = jnp.mod(deg + 180.0, 360.0) - 180.0
    idx = jnp.floor((deg + 180.0) / (360.0 / rc.NUM_TORSION_BINS)).astype(jnp.int32)
    return jnp.clip(idx, 0, rc.NUM_TORSION_BINS - 1)


def torsion_circular_mean(logits: jnp.ndarray) -> jnp.ndarray:
    """Circular mean angle (radians, (-pi, pi]) of binned torsion distributions.

    The mean of the unit vectors of the bin centres weighted by the softmax
    probabilities (Mardia & Jupp, "Directional Statistics", 2.2.1), so a
    distribution straddling +-180 degrees averages to ~180, not ~0.

    Args:
      logits: [..., NUM_TORSION_BINS].
    Returns:
      [...] float32 angles.
    """
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    s = jnp.sum(p * jnp.sin(_TORSION_CENTERS), axis=-1)
    c = jnp.sum(p * jnp.cos(_TORSION_CENTERS), axis=-1)
    return jnp.arctan2(s, c)


def _masked_ce(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Masked mean cross-entropy over all leading axes of one example (scalar f32)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    # A one-hot product, not take_along_axis: the gradient of a gather is a
    # scatter-add into a zeroed [.., bins] buffer, which XLA:CPU runs serially
    # (~0.1 s per distogram step at crop 128); this one is elementwise. Equal values:
    # the other terms are exact zeros.
    onehot = labels[..., None] == jnp.arange(logits.shape[-1], dtype=labels.dtype)
    nll = -jnp.sum(jnp.where(onehot, logp, 0.0), axis=-1)
    mask = mask.astype(jnp.float32)
    # where() rather than nll * mask: garbage (even inf) in masked positions must not leak.
    total = jnp.sum(jnp.where(mask > 0, nll, 0.0) * mask)
    return total / jnp.maximum(jnp.sum(mask), 1.0)


class DistogramHead(nn.Module):
    """CB-CB distogram logits [B, N, N, 65], symmetrised ((x + x^T) / 2)."""

    config: ModelConfig
    policy: Policy
    output_key = "dist_logits"

    @nn.compact
    def __call__(self, pair: jnp.ndarray) -> dict:
        p = self.policy
        logits = nn.Dense(
            rc.NUM_DIST_BINS, dtype=p.output_dtype, param_dtype=p.param_dtype, name="logits"
        )(pair.astype(p.output_dtype))
        logits = 0.5 * (logits + jnp.swapaxes(logits, 1, 2))
        return {self.output_key: logits}

    @staticmethod
    def loss(outputs: dict, batch: dict, config: ModelConfig) -> dict:
        """Per-example distogram cross-entropy.

        Args:
          outputs: needs "dist_logits" [B, N, N, 65].
          batch: cb_dist [B, N, N], pair_mask [B, N, N], residue_index [B, N].
          config: for distogram_min_separation.
        Returns:
          {"distogram_loss": [B]}.
        """

        def one(logits, dist, pmask, ri):
            sep = jnp.abs(ri[None, :] - ri[:, None])
            mask = pmask * (sep >= config.distogram_min_separation)
            dist = jnp.where(pmask > 0, dist, 0.0)
            return _masked_ce(logits, distance_to_bin(dist), mask)

        per_ex = jax.vmap(one)(
            outputs["dist_logits"], batch["cb_dist"], batch["pair_mask"], batch["residue_index"]
        )
        return {"distogram_loss": per_ex}


class TorsionHead(nn.Module):
    """Binned phi / psi (and optionally omega) logits [B, N, 36] from the 1D embedding."""

    config: ModelConfig
    policy: Policy

    @property
    def angle_names(self) -> tuple[str, ...]:
        return TORSION_NAMES if self.config.predict_omega else TORSION_NAMES[:2]

    @nn.compact
    def __call__(self, emb: jnp.ndarray) -> dict:
        p = self.policy
        out = {}
        for name in self.angle_names:
            out[f"{name}_logits"] = nn.Dense(
                self.config.torsion_bins, dtype=p.output_dtype, param_dtype=p.param_dtype, name=name
            )(emb.astype(p.output_dtype))
        return out

    @staticmethod
    def loss(outputs: dict, batch: dict, config: ModelConfig) -> dict:
        """Per-example torsion cross-entropy, the mean over the predicted angles.

        Args:
          outputs: "phi_logits", "psi_logits" (+ "omega_logits") [B, N, 36].
          batch: torsions [B, N, 3] radians, torsion_mask [B, N, 3].
          config: for predict_omega.
        Returns:
          {"torsion_loss": [B], "<angle>_loss": [B] per angle}.
        """
        names = TORSION_NAMES if config.predict_omega else TORSION_NAMES[:2]

        def one(logits, angle, mask):
            angle = jnp.where(mask > 0, angle, 0.0)
            return _masked_ce(logits, angle_to_bin(angle), mask)

        out = {}
        for k, name in enumerate(names):
            out[f"{name}_loss"] = jax.vmap(one)(
                outputs[f"{name}_logits"], batch["torsions"][..., k], batch["torsion_mask"][..., k]
            )
        out["torsion_loss"] = sum(out[f"{n}_loss"] for n in names) / len(names)
        return out
