"""A tiny randomly initialised training run on disk, in the format ``foldnet train`` writes.

Used by the predict / evaluate tests: ``<run>/checkpoints/<step>/{state,loader}``
written by ``foldnet.train.checkpoint.Checkpointer`` from a real TrainState, and
``<run>/config.yaml`` with the ``model`` section. The weights are random (the
tests check plumbing, files and invariants, not accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Fast folding for tests: few steps, the sequential NeRF (compiles ~3x faster on CPU).
FAST_FOLD = {"num_restarts": 2, "num_steps": 20, "nerf_method": "scan"}


def make_tiny_run(run_dir: Path, seed: int = 0) -> Path:
    """Write a tiny-preset run (one checkpoint at step 1) and return its directory."""
    from omegaconf import OmegaConf

    from foldnet.model import PRESETS
    from foldnet.train.checkpoint import CheckpointConfig, Checkpointer
    from foldnet.train.optim import OptimConfig
    from foldnet.train.state import create_train_state

    cfg = PRESETS["tiny"]
    n = 16
    batch = {
        "aatype": np.zeros((1, n), np.int32),
        "profile": np.zeros((1, n, 20), np.float32),
        "has_profile": np.zeros((1,), np.float32),
        "residue_index": np.arange(n, dtype=np.int32)[None],
        "seq_mask": np.ones((1, n), np.float32),
    }
    _, _, state = create_train_state(cfg, OptimConfig(), seed, batch)
    with Checkpointer(run_dir / "checkpoints", CheckpointConfig()) as ck:
        ck.save(1, state, None, {"dist_nll": 4.0})
    OmegaConf.save(OmegaConf.create({"model": cfg.to_dict(), "seed": seed}), run_dir / "config.yaml")
    return run_dir
