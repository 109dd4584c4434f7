"""Synthetic loader batches built from real ProteinNet chains (batch contract of docs/design.md).

The model tests must not depend on the loader (another module, another engineer),
so this builds batches with exactly the contract's keys, shapes and dtypes from
real chains: aatype and profile from the record, CB-CB distances from the virtual
CB, torsions from foldnet.common.geometry_np.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from foldnet.common import geometry_np
from foldnet.common import residue_constants as rc
from foldnet.data.proteinnet import iter_proteinnet


# XLA:CPU backend optimisation level 0: ~3x less compile time for the few steps a test runs.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.lru_cache(maxsize=4)
def load_chains(data_root: str, n: int = 8) -> tuple:
    """The first ``n`` chains of the ProteinNet validation split."""
    path = Path(data_root) / "proteinnet" / "validation.gz"
    return tuple(itertools.islice(iter_proteinnet(path), n))


def example_from_protein(
    protein, crop_size: int, start: int, example_id: int, has_profile: bool = True, max_residues: int | None = None
) -> dict:
    """One cropped (and padded) example following the batch contract, without the batch axis.

    ``max_residues`` shortens the crop so that the example carries padding.
    """
    L = len(protein)
    start = max(0, min(start, max(L - crop_size, 0)))
    stop = min(L, start + min(crop_size, max_residues or crop_size))
    n = stop - start
    sl = slice(start, stop)
    cb_d, pmask = geometry_np.cb_distance_map(protein)
    tors, tmask = geometry_np.backbone_torsions(protein)
    tors = np.where(tmask > 0, tors, 0.0)

    ex = {
        "aatype": np.full((crop_size,), rc.UNK_INDEX, np.int32),
        "profile": np.zeros((crop_size, rc.NUM_STANDARD), np.float32),
        "has_profile": np.float32(1.0 if (has_profile and protein.profile is not None) else 0.0),
        "residue_index": np.zeros((crop_size,), np.int32),
        "seq_mask": np.zeros((crop_size,), np.float32),
        "cb_dist": np.zeros((crop_size, crop_size), np.float32),
        "pair_mask": np.zeros((crop_size, crop_size), np.float32),
        "torsions": np.zeros((crop_size, 3), np.float32),
        "torsion_mask": np.zeros((crop_size, 3), np.float32),
        "atom_positions": np.zeros((crop_size, rc.NUM_ATOMS, 3), np.float32),
        "atom_mask": np.zeros((crop_size, rc.NUM_ATOMS), np.float32),
        "ss8": np.full((crop_size,), rc.SS8_COIL, np.int32),
        "ss_mask": np.zeros((crop_size,), np.float32),
        "example_id": np.int32(example_id),
        "crop_start": np.int32(start),
        "length": np.int32(n),
    }
    ex["aatype"][:n] = protein.aatype[sl]
    if ex["has_profile"] > 0:
        ex["profile"][:n] = protein.profile[sl]
    ex["residue_index"][:n] = np.arange(start, stop)
    ex["seq_mask"][:n] = 1.0
    ex["cb_dist"][:n, :n] = cb_d[sl, sl]
    ex["pair_mask"][:n, :n] = pmask[sl, sl]
    ex["torsions"][:n] = tors[sl]
    ex["torsion_mask"][:n] = tmask[sl]
    # N, CA, C (and O) as recorded, CB real or virtual: what the HDF5 cache stores.
    cb, cb_mask = geometry_np.cb_positions(protein)
    atoms = np.where(protein.atom_mask[..., None] > 0, protein.atom_positions, 0.0).astype(np.float32)
    atoms[:, rc.CB_IDX], amask = cb, protein.atom_mask.astype(np.float32).copy()
    amask[:, rc.CB_IDX] = cb_mask
    ex["atom_positions"][:n], ex["atom_mask"][:n] = atoms[sl], amask[sl]
    return ex


def make_batch(data_root, batch_size: int, crop_size: int, seed: int = 0, offset: int = 0) -> dict:
    """A batch of real-chain crops (chains offset.., deterministic random crop starts)."""
    chains = load_chains(str(data_root), max(8, offset + batch_size))
    rng = np.random.default_rng(seed)
    exs = []
    for b in range(batch_size):
        p = chains[(offset + b) % len(chains)]
        start = int(rng.integers(0, max(len(p) - crop_size, 0) + 1))
        # Every 4th example withholds its profile, every 3rd is padded: both paths get exercised.
        exs.append(
            example_from_protein(
                p, crop_size, start, example_id=offset + b, has_profile=(b % 4 != 3),
                max_residues=(crop_size * 3 // 4) if b % 3 == 1 else None,
            )
        )
    return {k: np.stack([e[k] for e in exs]) for k in exs[0]}


def perturbed(params, scale: float = 0.2, seed: int = 3):
    """Every parameter moved off its init by N(0, scale^2) noise: zero biases, LayerNorm shifts
    and zero-initialised output projections would hide a wrong (e.g. unmasked) path."""
    import jax

    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def parallel_test_configs():
    """Tiny f32 model + AdamW without warm-up (so step 1 already moves the params): the
    configs of every data-parallel equivalence test (f32: bf16 rounding would hide bugs).

    eps = 1e-4 rather than 1e-8: Adam divides by sqrt(v) + eps, so with eps = 1e-8 a
    gradient entry of ~1e-7 turns float-summation-order noise (1e-9) into a visible
    change of its update (seen: 2e-5 after 3 steps across 2 processes). With 1e-4 the
    update is at most lr / eps = 100 x the gradient difference, so a 1e-5 parameter
    tolerance tests the collectives, not Adam's conditioning.
    """
    import dataclasses

    from foldnet.model.config import PRESETS
    from foldnet.train.optim import OptimConfig

    model_cfg = dataclasses.replace(PRESETS["tiny"], dtype="float32")
    optim_cfg = OptimConfig(learning_rate=1e-2, warmup_steps=0, total_steps=100, clip_norm=1.0, eps=1e-4)
    return model_cfg, optim_cfg


def parallel_test_batches(data_root, steps: int, batch_size: int = 4, crop_size: int = 16) -> list[dict]:
    """A fixed sequence of global batches (different crops each step)."""
    return [make_batch(data_root, batch_size, crop_size, seed=s, offset=s) for s in range(steps)]


@functools.lru_cache(maxsize=2)
def single_device_reference(data_root: str, steps: int) -> dict:
    """Parameters after ``steps`` AdamW steps of ``parallel_test_batches`` on one device.

    Cached: test_parallel and test_multihost compare against the same run.
    """
    import jax

    from foldnet.train.parallel import ParallelConfig, parallelize_train_step
    from foldnet.train.state import create_train_state

    model_cfg, optim_cfg = parallel_test_configs()
    batches = parallel_test_batches(data_root, steps)
    model, opt, state = create_train_state(model_cfg, optim_cfg, 0, batches[0])
    pstep = parallelize_train_step(model, opt, ParallelConfig(mode="none"), compiler_options=FAST_COMPILE)
    state = pstep.replicate(state)
    losses = []
    for b in batches:
        state, m = pstep.step(state, pstep.shard_batch(b))
        losses.append(m["loss"])
    params = pstep.unreplicate(state.params)
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}
    return {"params": params, "flat": flat, "losses": losses}
