"""One process of the 2-process data-parallel test (spawned by tests/test_multihost.py).

Joins a ``jax.distributed`` run on 127.0.0.1 (CPU, gloo collectives, one
local device), feeds its half of a fixed global batch for a few steps and, on
process 0, writes the resulting parameters to an .npz for the test to compare
with a single-process run of the same global batches.

Usage: python tests/multihost_worker.py --port P --process-id I --num-processes N
         --mode shard_map|pmap --steps S --out params.npz
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# One CPU device per process; must be set before jax is imported.
# Backend optimisation level 0 halves XLA:CPU compile time; a 3-step test needs no fast code.
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # model_fixtures
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # foldnet

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--mode", default="shard_map")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from foldnet.train import distributed
    from foldnet.train.parallel import ParallelConfig

    pcfg = ParallelConfig(
        mode=args.mode,
        distributed=True,
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=60,
    )
    pidx, pcount = distributed.initialize(pcfg)

    import jax

    import model_fixtures as mf
    from foldnet.train.parallel import parallelize_train_step

    assert (pidx, pcount) == (args.process_id, args.num_processes), (pidx, pcount)
    assert jax.device_count() == pcount and jax.local_device_count() == 1, jax.devices()

    model_cfg, optim_cfg = mf.parallel_test_configs()
    batches = mf.parallel_test_batches(os.environ["FOLDNET_DATA"], args.steps)
    from foldnet.train.state import create_train_state

    model, optimizer, state = create_train_state(model_cfg, optim_cfg, 0, batches[0])
    pstep = parallelize_train_step(model, optimizer, pcfg, compiler_options=mf.FAST_COMPILE)
    state = pstep.replicate(state)
    for batch in batches:
        per = len(batch["aatype"]) // pcount
        local = {k: v[pidx * per : (pidx + 1) * per] for k, v in batch.items()}
        state, metrics = pstep.step(state, pstep.shard_batch(local))
        print(f"process {pidx} step {int(pstep.unreplicate(state.step))} loss {metrics['loss']:.6f}", flush=True)
    host = pstep.unreplicate(state)
    if pidx == 0:
        flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(host.params)}
        np.savez(args.out, loss=np.float32(metrics["loss"]), **flat)
    distributed.shutdown()


if __name__ == "__main__":
    main()
