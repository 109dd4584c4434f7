"""Distilling the profile mode into the single-sequence mode, by relabelling.

A crop whose profile the loader withholds (``data.profile_dropout``) trains the
single-sequence mode: what ``foldnet predict`` does with a FASTA file alone. With
``train.distill_from`` set, a frozen teacher network sees the same crop *with* its
profile, and each distogram pair and torsion of that crop takes, with probability
``distill_weight``, a label drawn from the teacher's predicted distribution instead of
the native's bin. The expected loss is then exactly
``(1 - w) * CE(native) + w * CE(teacher)``: knowledge distillation with soft targets,
but through the unchanged hard-label losses, so the fused CPU cross-entropy kernel
(which never materialises the student's [N, N, 65] logits) still applies. Crops that
keep their profile are untouched; on a device whose crops all keep theirs the teacher
does not run (``lax.cond``).

The relabelled targets are written back as the batch's own inputs to the losses: a
distance at the drawn bin's centre in ``cb_dist`` and an angle at the drawn bin's
centre in ``torsions``. Masks are kept, so pairs and residues without a native label
stay out of the loss. The CA distogram, orientation and secondary-structure heads
keep their native labels.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from foldnet.common import residue_constants as rc
from foldnet.model.heads import TORSION_NAMES
from foldnet.model.model import FoldNet

# Bin centres the drawn labels are written as (distance_to_bin / angle_to_bin map them
# back to the same bin: tested).
_DIST_CENTERS = jnp.asarray(rc.DISTOGRAM_CENTERS, jnp.float32)
_TORSION_CENTERS = jnp.asarray(rc.TORSION_CENTERS_RAD, jnp.float32)


def sample_bins(probs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """One bin per distribution: int32 [...] drawn from ``probs`` [..., K] (inverse CDF:
    one uniform per distribution rather than K Gumbels)."""
    cdf = jnp.cumsum(probs.astype(jnp.float32), axis=-1)
    u = jax.random.uniform(key, probs.shape[:-1] + (1,), jnp.float32) * cdf[..., -1:]
    idx = jnp.sum((cdf <= u).astype(jnp.int32), axis=-1)
    return jnp.minimum(idx, probs.shape[-1] - 1)


def relabel(batch: dict, teacher_outputs: dict, key: jax.Array, weight: float) -> dict:
    """``batch`` with the withheld crops' distogram and torsion labels drawn, each with
    probability ``weight``, from the teacher's distributions (module docstring).

    Args:
      batch: a training batch with ``profile_withheld`` [B].
      teacher_outputs: the teacher's logits: ``dist_logits`` [B, N, N, 65] and
        ``<angle>_logits`` [B, N, 36] (those it has).
      key: PRNG key.
      weight: probability that a label is the teacher's.
    """
    withheld = batch["profile_withheld"] > 0
    out = dict(batch)
    keys = jax.random.split(key, 2 * (1 + len(TORSION_NAMES)))
    if "dist_logits" in teacher_outputs:
        drawn = _DIST_CENTERS[sample_bins(jax.nn.softmax(teacher_outputs["dist_logits"], axis=-1), keys[0])]
        use = withheld[:, None, None] & (jax.random.uniform(keys[1], drawn.shape) < weight)
        out["cb_dist"] = jnp.where(use, drawn, batch["cb_dist"])
    torsions = batch["torsions"]
    for k, name in enumerate(TORSION_NAMES):
        logits = teacher_outputs.get(f"{name}_logits")
        if logits is None:
            continue
        drawn = _TORSION_CENTERS[sample_bins(jax.nn.softmax(logits, axis=-1), keys[2 + 2 * k])]
        use = withheld[:, None] & (jax.random.uniform(keys[3 + 2 * k], drawn.shape) < weight)
        torsions = torsions.at[..., k].set(jnp.where(use, drawn, torsions[..., k]))
    out["torsions"] = torsions
    return out


def make_relabel(teacher: FoldNet, teacher_params: Any, weight: float) -> Callable[[dict, jax.Array], dict]:
    """``fn(batch, key) -> batch`` for the training step: the teacher's forward pass on the
    crops with their profiles restored, then ``relabel``. The teacher's parameters are
    constants of the step (no gradient reaches them); its forward runs only when some
    crop on this device had its profile withheld.

    Args:
      teacher: the teacher network (any architecture with a distogram or torsion head).
      teacher_params: its parameters.
      weight: ``TrainConfig.distill_weight``, in (0, 1].
    """
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"distill_weight must be in (0, 1], got {weight}")

    def fn(batch: dict, key: jax.Array) -> dict:
        withheld = batch["profile_withheld"]

        def teach(batch: dict) -> dict:
            restored = dict(batch)
            restored["profile"] = jnp.where(withheld[:, None, None] > 0, batch["teacher_profile"], batch["profile"])
            restored["has_profile"] = jnp.maximum(batch["has_profile"], withheld)
            outputs = teacher.apply({"params": teacher_params}, restored, train=False)
            outputs = jax.tree_util.tree_map(lax.stop_gradient, outputs)
            new = relabel(batch, outputs, key, weight)
            return {"cb_dist": new["cb_dist"], "torsions": new["torsions"]}

        def keep(batch: dict) -> dict:
            return {"cb_dist": batch["cb_dist"], "torsions": batch["torsions"]}

        labels = lax.cond(jnp.any(withheld > 0), teach, keep, batch)
        return dict(batch, **labels)

    return fn
