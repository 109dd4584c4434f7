"""Training-step throughput of a model preset: crops/s, residue pairs/s, FLOP/s vs a plain conv.

For each crop size and precision it compiles the real jitted train step
(state donated), times ``--steps`` steps after warm-up, reads the step's FLOPs
from XLA's cost analysis of the compiled executable
(``jit(step).lower(...).compile().cost_analysis()["flops"]``), and measures in
the same run a plain 3x3 ``lax.conv_general_dilated`` at the 2D trunk's shape
([B, N, N, C2] -> C2, same dtype), whose FLOP/s is this machine's practical
convolution ceiling. Batches are real ProteinNet validation crops.

Usage:
  python scripts/bench_train.py [--preset base] [--crops 64 128] [--parallel auto none]
      [--batch 4] [--steps 5]
      [--out docs/bench/train.json] [--md docs/bench/train.md]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores  # noqa: E402

RETAINED = retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
use_all_cpu_cores()  # as `foldnet train` does: one CPU device per core

from foldnet.common import atomic, geometry_np, paths  # noqa: E402
from foldnet.data.featurize import featurize  # noqa: E402
from foldnet.data.proteinnet import iter_proteinnet  # noqa: E402
from foldnet.model import PRESETS, count_params  # noqa: E402
from foldnet.model import conv as fconv, heads, layers  # noqa: E402
from foldnet.train.optim import OptimConfig  # noqa: E402
from foldnet.train.state import create_train_state  # noqa: E402
from foldnet.train.parallel import ParallelConfig, parallelize_train_step, resolve  # noqa: E402


def real_batch(data_root: Path, batch: int, crop: int, seed: int = 0, atoms: bool = False) -> dict:
    """A batch-contract batch of random crops of real validation chains (>= crop long); with
    ``atoms``, also their backbone + CB coordinates, which the auxiliary heads (CA distogram,
    orientations) are trained on."""
    rng = np.random.default_rng(seed)
    chains = [p for p in itertools.islice(iter_proteinnet(data_root / "proteinnet" / "validation.gz"), 200)
              if len(p) >= crop][:batch]
    if len(chains) < batch:
        raise SystemExit(f"need {batch} validation chains of >= {crop} residues, found {len(chains)}")
    ex = []
    for i, p in enumerate(chains):
        s = int(rng.integers(0, len(p) - crop + 1))
        sl = slice(s, s + crop)
        d, pm = geometry_np.cb_distance_map(p)
        t, tm = geometry_np.backbone_torsions(p)
        ex.append({
            "aatype": p.aatype[sl].astype(np.int32),
            "profile": p.profile[sl].astype(np.float32),
            "has_profile": np.float32(1.0),
            "residue_index": np.arange(s, s + crop, dtype=np.int32),
            "seq_mask": np.ones(crop, np.float32),
            "cb_dist": d[sl, sl], "pair_mask": pm[sl, sl],
            "torsions": np.where(tm > 0, t, 0.0)[sl].astype(np.float32), "torsion_mask": tm[sl],
            "example_id": np.int32(i), "crop_start": np.int32(s), "length": np.int32(crop),
        })
        if atoms:
            f = featurize(p)
            ex[-1].update(atom_positions=f["atom_positions"][sl], atom_mask=f["atom_mask"][sl])
    return {k: np.stack([e[k] for e in ex]) for k in ex[0]}


def median_seconds(fn, n: int) -> float:
    """Median seconds per call of ``fn`` (which must block) over n calls."""
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


@contextlib.contextmanager
def cpu_kernels(on: bool):
    """foldnet's CPU kernels on or off for the programs traced inside (the switches are read at
    trace time), so one process can time the step with and without them."""
    old = (fconv.USE_CPU_KERNELS, layers.USE_CPU_KERNELS, heads.USE_CPU_KERNELS)
    fconv.USE_CPU_KERNELS = layers.USE_CPU_KERNELS = heads.USE_CPU_KERNELS = on
    try:
        yield
    finally:
        fconv.USE_CPU_KERNELS, layers.USE_CPU_KERNELS, heads.USE_CPU_KERNELS = old


def _lower_compile(pstep, state, batch: dict):
    holder = {"s": pstep.replicate(state)}
    db = pstep.shard_batch(batch)
    t = time.perf_counter()
    compiled = pstep._step.lower(holder["s"], db).compile()
    return compiled, holder, db, time.perf_counter() - t


def xla_flops(compiled, num_devices: int) -> float:
    """XLA's FLOP count of a compiled step, summed over devices (an SPMD executable's cost
    analysis counts one device's share). Custom calls -- foldnet's CPU kernels -- count 0."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) * num_devices


def compile_step(pstep, state, batch: dict) -> dict:
    """A parallel training step (``parallelize_train_step``) compiled ahead of time on
    ``batch`` and warmed up, as the trainer runs it.

    Returns:
      {"run": a blocking callable running one step (the state advances), "flops": XLA's
      FLOP count of the compiled step (summed over devices; see ``model_flops`` when the
      step uses foldnet's CPU kernels), "compile_s", "params": parameter count, "mode",
      "devices"}.
    """
    compiled, holder, db, compile_s = _lower_compile(pstep, state, batch)

    def run():
        holder["s"], m = compiled(holder["s"], db)
        jax.block_until_ready(m["loss"])

    run()  # warm-up
    return {"run": run, "flops": xla_flops(compiled, pstep.num_devices), "compile_s": compile_s,
            "params": count_params(state.params), "mode": pstep.mode, "devices": pstep.num_devices}


def _preset_step(preset: str, dtype: str, batch: dict, parallel: str):
    cfg = dataclasses.replace(PRESETS[preset], dtype=dtype)
    model, opt, state = create_train_state(cfg, OptimConfig(warmup_steps=1, total_steps=1000), 0, batch)
    batch_size, crop = np.shape(batch["aatype"])
    pcfg = resolve(ParallelConfig(mode=parallel), batch_size, crop_size=crop)  # as the trainer does
    return parallelize_train_step(model, opt, pcfg), state


_MODEL_FLOPS: dict = {}


def model_flops(preset: str, dtype: str, batch: dict) -> float:
    """The network's FLOPs per training step: XLA's count of the same step traced without
    foldnet's CPU kernels (compiled, never run), one device. Compiled once per preset, dtype
    and batch shapes: every placement and kernel setting of a run shares the count."""
    key = (preset, dtype, tuple(sorted((k, np.shape(v)) for k, v in batch.items())))
    if key not in _MODEL_FLOPS:
        with cpu_kernels(False):
            pstep, state = _preset_step(preset, dtype, batch, "none")
            _MODEL_FLOPS[key] = xla_flops(_lower_compile(pstep, state, batch)[0], 1)
    return _MODEL_FLOPS[key]


def bench_step(preset: str, dtype: str, batch: dict, parallel: str = "auto", kernels: bool = True) -> dict:
    """``compile_step`` of a preset's training step on ``batch``, placed as the trainer does.

    Args:
      parallel: a ``ParallelConfig.mode``; ``auto`` (the trainer's default) splits the batch
        over the CPU devices (one per core: ``use_all_cpu_cores`` at import).
      kernels: trace with foldnet's CPU kernels (the default, as the trainer runs) or with
        XLA's own operations only (the step before the kernels).
    Returns ``compile_step``'s dict with "flops" = ``model_flops`` (the kernels' work is
    invisible to XLA's cost analysis).
    """
    with cpu_kernels(kernels):
        pstep, state = _preset_step(preset, dtype, batch, parallel)
        out = compile_step(pstep, state, batch)
    out["flops"] = model_flops(preset, dtype, batch)
    return out


def conv_reference(batch: int, crop: int, channels: int, dtype, reps: int) -> dict:
    """FLOP/s of one plain 3x3 SAME convolution [B, N, N, C] -> C."""
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, crop, crop, channels), dtype)
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, channels, channels), dtype)
    f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    f(x, w).block_until_ready()
    sec = median_seconds(lambda: f(x, w).block_until_ready(), reps)
    flops = 2.0 * batch * crop * crop * 9 * channels * channels
    return {"seconds": sec, "flops": flops, "flops_per_s": flops / sec}


def bench_one(preset: str, crop: int, batch: int, dtype: str, steps: int, data_root: Path,
              parallel: str = "auto", kernels: bool = True) -> dict:
    cfg = PRESETS[preset]
    s = bench_step(preset, dtype, real_batch(data_root, batch, crop), parallel, kernels)
    sec = median_seconds(s["run"], steps)
    conv = conv_reference(batch, crop, cfg.channels_2d, jnp.bfloat16 if dtype == "bfloat16" else jnp.float32,
                          max(steps, 3))
    flops_per_s = s["flops"] / sec
    return {
        "preset": preset, "crop": crop, "batch": batch, "dtype": dtype,
        "parallel": parallel, "mode": s["mode"], "devices": s["devices"], "cpu_kernels": kernels,
        "params": s["params"],
        "compile_s": round(s["compile_s"], 2),
        "step_s": sec,
        "crops_per_s": batch / sec,
        "residue_pairs_per_s": batch * crop * crop / sec,
        "step_flops_xla": s["flops"],
        "model_flops_per_s": flops_per_s,
        "conv3x3_flops_per_s": conv["flops_per_s"],
        "fraction_of_conv3x3": flops_per_s / conv["flops_per_s"],
    }


def write_report(out: str, md: str, payload: dict, markdown: str) -> None:
    """A benchmark's JSON and markdown table, each written atomically; the table printed."""
    with atomic.atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    with atomic.atomic_path(md) as tmp:
        tmp.write_text(markdown)
    print(markdown)


def to_markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Training-step throughput ({meta['preset']} preset)",
        "",
        f"Machine: {meta['machine']}. JAX {meta['jax']} on {meta['backend']} ({meta['devices']}). "
        f"{meta['note']}",
        "",
        "FLOPs per step are XLA's cost analysis of the compiled step (forward + backward + AdamW) "
        "traced without foldnet's CPU kernels (their custom calls count 0 in XLA's analysis). "
        "`kernels`: the step with foldnet's CPU kernels (the trainer's default on CPU) or with "
        "XLA's own operations only. "
        "The last column divides the step's FLOP/s by the FLOP/s of a plain 3x3 convolution of the "
        "2D trunk's shape measured in the same run (one device, XLA's own threading). `parallel`: the "
        "trainer's placement, `auto` (its default: the batch split over one CPU device per core) or "
        "`none` (one device).",
        "",
        "| crop | batch | dtype | parallel (devices) | kernels | step (s) | crops/s | residue pairs/s | GFLOP/step | GFLOP/s "
        "| conv3x3 GFLOP/s | fraction |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['crop']} | {r['batch']} | {r['dtype']} | {r['parallel']} ({r['devices']}) | "
            f"{'on' if r.get('cpu_kernels', False) else 'off'} | "
            f"{r['step_s']:.3f} | {r['crops_per_s']:.2f} | "
            f"{r['residue_pairs_per_s']:.0f} | {r['step_flops_xla'] / 1e9:.2f} | "
            f"{r['model_flops_per_s'] / 1e9:.2f} | {r['conv3x3_flops_per_s'] / 1e9:.2f} | "
            f"{r['fraction_of_conv3x3']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="base", choices=sorted(PRESETS))
    ap.add_argument("--crops", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--parallel", nargs="+", default=["auto", "none"],
                    help="ParallelConfig modes to time (auto = the trainer's default)")
    ap.add_argument("--kernels", nargs="+", default=["on", "off"], choices=["on", "off"],
                    help="with foldnet's CPU kernels (as the trainer runs) and/or XLA's operations only")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default="docs/bench/train.json")
    ap.add_argument("--md", default="docs/bench/train.md")
    args = ap.parse_args(argv)
    data_root = paths.data_root(args.data_root)
    results = []
    for crop, dtype, parallel, kern in itertools.product(args.crops, args.dtypes, args.parallel, args.kernels):
        r = bench_one(args.preset, crop, args.batch, dtype, args.steps, Path(data_root), parallel, kern == "on")
        print(json.dumps(r), flush=True)
        results.append(r)
    meta = {
        "preset": args.preset,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "note": (args.note + " " if args.note else "")
        + "Load average at the end of the run: %.1f / %.1f / %.1f." % os.getloadavg(),
        "flops_source": "XLA cost_analysis of the compiled train step traced without foldnet's CPU kernels",
    }
    write_report(args.out, args.md, {"meta": meta, "results": results}, to_markdown(results, meta))


if __name__ == "__main__":
    main()
