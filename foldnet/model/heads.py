"""Output heads; each head owns its loss (AlphaFold ``DistogramHead.loss`` style).

Targets are binned here, with jnp twins of ``residue_constants.distance_to_bin``
and ``angle_to_bin`` that use the very same edges, so the bins are defined once
(in residue_constants) and the data pipeline stays free of model concerns.

Every loss is a masked cross-entropy averaged *per example* (sum of masked
terms / number of valid terms, 0 when an example has none), returned as [B];
the model averages over the batch. Logits, softmax and losses are float32.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from foldnet.common import residue_constants as rc
from foldnet.geometry.dihedral import bond_angle, dihedral
from foldnet.model import cpu_kernels
from foldnet.model.config import ModelConfig
from foldnet.model.layers import KernelParams
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


class DenseLogits(NamedTuple):
    """Pair logits ``x @ kernel + bias`` not yet computed (``FoldNet(..., defer_pair_logits=True)``).

    The training loss only needs each pair's cross-entropy: on CPU, ``masked_ce`` hands
    these to foldnet's fused dense -> cross-entropy kernel (``cpu_kernels.dense_masked_nll``),
    which never writes the [B, N, N, bins] logits, their softmax or their gradient (XLA's
    version of the distogram head and its loss was ~15 % of the base network's training
    step at crop 128). ``logits()`` gives the array wherever one is needed.
    """

    x: jnp.ndarray  # [B, N, N, C] f32 head input (already symmetrised where the head is)
    kernel: jnp.ndarray  # [C, bins]
    bias: jnp.ndarray  # [bins]

    def logits(self) -> jnp.ndarray:
        return jnp.dot(self.x, self.kernel) + self.bias


Logits = Union[jnp.ndarray, DenseLogits]

# Whether pair heads may defer their logits to the fused CPU kernel (read at trace time;
# tests switch it off to compare against XLA's dense layer + log_softmax).
USE_CPU_KERNELS = True


def _defer_ok(x: jnp.ndarray, bins: int) -> bool:
    return (USE_CPU_KERNELS and jax.default_backend() == "cpu" and x.dtype == jnp.float32
            and cpu_kernels.dense_ce_supported(x.shape[-1], bins))


def masked_ce(logits: Logits, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """``_masked_ce`` of each example: [B] from logits [B, ..., bins] (or ``DenseLogits``),
    labels and mask [B, ...]."""
    if isinstance(logits, DenseLogits):
        b, c = logits.x.shape[0], logits.x.shape[-1]
        mask = mask.astype(jnp.float32).reshape(b, -1)
        total = cpu_kernels.dense_masked_nll(logits.x.reshape(b, -1, c), logits.kernel, logits.bias,
                                             labels.astype(jnp.int32).reshape(b, -1), mask)
        return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
    return jax.vmap(_masked_ce)(logits, labels, mask)


def materialize(outputs: dict) -> dict:
    """The model outputs with every ``DenseLogits`` computed into an array."""
    return {k: v.logits() if isinstance(v, DenseLogits) else v for k, v in outputs.items()}


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
    def __call__(self, pair: jnp.ndarray, defer: bool = False) -> dict:
        return {self.output_key: _pair_logits(pair, rc.NUM_DIST_BINS, self.policy, "logits", True, defer)}

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

        def targets(dist, pmask, ri):
            sep = jnp.abs(ri[None, :] - ri[:, None])
            mask = pmask * (sep >= config.distogram_min_separation)
            dist = jnp.where(pmask > 0, dist, 0.0)
            return distance_to_bin(dist), mask

        labels, mask = jax.vmap(targets)(batch["cb_dist"], batch["pair_mask"], batch["residue_index"])
        return {"distogram_loss": masked_ce(outputs["dist_logits"], labels, mask)}


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


# -- free supervision from the coordinates: CA distogram, orientations, secondary structure --


def _pair_logits(pair: jnp.ndarray, bins: int, policy: Policy, name: str, symmetric: bool,
                 defer: bool = False) -> Logits:
    """Dense logits [B, N, N, bins] of the pair representation; symmetric: (x + x^T) / 2.

    The dense layer is affine, so symmetrising its input ((p + p^T) / 2, channels_2d wide)
    gives the same logits as symmetrising its output (bins wide) with fewer values moved,
    forward and backward. ``defer``: return ``DenseLogits`` (same parameters) where the
    fused CPU loss kernel takes them.
    """
    x = pair.astype(policy.output_dtype)
    if symmetric:
        x = 0.5 * (x + jnp.swapaxes(x, 1, 2))
    if defer and _defer_ok(x, bins):
        kernel, bias = KernelParams(bins, (), policy.param_dtype, name=name)(x.shape[-1])
        return DenseLogits(x, kernel, bias)
    return nn.Dense(bins, dtype=policy.output_dtype, param_dtype=policy.param_dtype, name=name)(x)


def _pair_distances(x: jnp.ndarray) -> jnp.ndarray:
    """[B, N, N] distances of points [B, N, 3] (differences, not the Gram form: exact at 0)."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    return jnp.sqrt(jnp.maximum(jnp.sum(diff * diff, axis=-1), 1e-12))


class CaDistogramHead(nn.Module):
    """CA-CA distogram logits [B, N, N, 65] (the CB distogram's bins), symmetrised.

    CA positions exist for every residue, glycines included, and constrain the
    backbone trace directly; the target comes from the batch's atom positions.
    """

    config: ModelConfig
    policy: Policy

    @nn.compact
    def __call__(self, pair: jnp.ndarray, defer: bool = False) -> dict:
        return {"ca_dist_logits": _pair_logits(pair, rc.NUM_DIST_BINS, self.policy, "logits", True, defer)}

    @staticmethod
    def loss(outputs: dict, batch: dict, config: ModelConfig) -> dict:
        """{"ca_distogram_loss": [B]}: masked CE against binned CA-CA distances (|i - j| >= 1)."""
        ca = batch["atom_positions"][:, :, rc.CA_IDX].astype(jnp.float32)
        m = batch["atom_mask"][:, :, rc.CA_IDX].astype(jnp.float32)
        d = _pair_distances(ca)
        ri = batch["residue_index"]
        sep = jnp.abs(ri[:, None, :] - ri[:, :, None])
        mask = m[:, :, None] * m[:, None, :] * (sep >= config.distogram_min_separation)
        per_ex = masked_ce(outputs["ca_dist_logits"], distance_to_bin(jnp.where(mask > 0, d, 0.0)), mask)
        return {"ca_distogram_loss": per_ex}


def orientation_targets(atom_positions: jnp.ndarray, atom_mask: jnp.ndarray) -> tuple[dict, jnp.ndarray]:
    """trRosetta's inter-residue orientations, binned (see residue_constants).

    Args:
      atom_positions: [B, N, 5, 3] (N, CA, C, O, CB), Angstrom; CB real or virtual.
      atom_mask: [B, N, 5].
    Returns:
      ({"omega", "theta", "phi": int32 [B, N, N] bins}, f32 [B, N, N] mask): pairs i != j
      with N, CA and CB known at both residues; CB-CB >= ORIENTATION_MAX_DIST -> the last bin.
    """
    x = atom_positions.astype(jnp.float32)
    n, ca, cb = (x[:, :, k] for k in (rc.N_IDX, rc.CA_IDX, rc.CB_IDX))
    have = atom_mask[:, :, rc.N_IDX] * atom_mask[:, :, rc.CA_IDX] * atom_mask[:, :, rc.CB_IDX]
    have = have.astype(jnp.float32)
    num = x.shape[1]
    mask = have[:, :, None] * have[:, None, :] * (1.0 - jnp.eye(num, dtype=jnp.float32))
    # Targets carry no gradient, so a NaN angle of a masked pair (a zero-length vector at a
    # missing atom, or i == j) is harmless: _masked_ce selects with where(), never multiplies.
    i_, j_ = (slice(None), slice(None), None), (slice(None), None, slice(None))
    d = _pair_distances(cb)
    contact = d < rc.ORIENTATION_MAX_DIST
    omega = dihedral(ca[i_], cb[i_], cb[j_], ca[j_])
    theta = dihedral(n[i_], ca[i_], cb[i_], cb[j_])
    phi = bond_angle(ca[i_], cb[i_], cb[j_])
    width = 2.0 * np.pi / rc.ORIENTATION_DIHEDRAL_BINS

    def dihedral_bin(a):
        k = jnp.floor((a + np.pi) / width).astype(jnp.int32)
        return jnp.clip(k, 0, rc.ORIENTATION_DIHEDRAL_BINS - 1)

    phi_bin = jnp.clip(jnp.floor(phi / width).astype(jnp.int32), 0, rc.ORIENTATION_PLANAR_BINS - 1)
    bins = {
        "omega": jnp.where(contact, dihedral_bin(omega), rc.ORIENTATION_DIHEDRAL_BINS),
        "theta": jnp.where(contact, dihedral_bin(theta), rc.ORIENTATION_DIHEDRAL_BINS),
        "phi": jnp.where(contact, phi_bin, rc.ORIENTATION_PLANAR_BINS),
    }
    return bins, mask


class OrientationHead(nn.Module):
    """trRosetta orientation logits: omega (symmetric), theta and phi (asymmetric) [B, N, N, bins]."""

    config: ModelConfig
    policy: Policy

    @nn.compact
    def __call__(self, pair: jnp.ndarray, defer: bool = False) -> dict:
        return {
            f"orient_{k}_logits": _pair_logits(pair, nb, self.policy, k, symmetric=(k == "omega"), defer=defer)
            for k, nb in rc.ORIENTATION_NUM_BINS.items()
        }

    @staticmethod
    def loss(outputs: dict, batch: dict, config: ModelConfig) -> dict:
        """{"orientation_loss": [B]} (mean of the three) and "orient_<angle>_loss" [B] each."""
        bins, mask = orientation_targets(batch["atom_positions"], batch["atom_mask"])
        mask = mask * batch["pair_mask"].astype(jnp.float32)
        out = {f"orient_{k}_loss": masked_ce(outputs[f"orient_{k}_logits"], bins[k], mask) for k in bins}
        out["orientation_loss"] = sum(out.values()) / len(bins)
        return out


class SecondaryStructureHead(nn.Module):
    """DSSP 8-state logits [B, N, 8] from the 1D embedding (3-state by summing states)."""

    config: ModelConfig
    policy: Policy

    @nn.compact
    def __call__(self, emb: jnp.ndarray) -> dict:
        p = self.policy
        logits = nn.Dense(rc.NUM_SS8, dtype=p.output_dtype, param_dtype=p.param_dtype, name="logits")(
            emb.astype(p.output_dtype)
        )
        return {"ss8_logits": logits}

    @staticmethod
    def loss(outputs: dict, batch: dict, config: ModelConfig) -> dict:
        """{"ss_loss": [B]}: masked CE against the batch's DSSP states ("ss8", "ss_mask")."""
        return {"ss_loss": masked_ce(outputs["ss8_logits"], batch["ss8"], batch["ss_mask"])}
