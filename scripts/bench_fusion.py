"""The 2D residual block's convolution + LayerNorm -> ELU fusion: the training step with and without it.

``cpu_kernels.FUSE_NORM_ELU`` runs the block's inner convolution and the LayerNorm -> ELU
pass after it (backward: each input-gradient convolution and the norm's backward before it)
as one kernel call, the norm applied to each output row while the convolution has it in
cache. This benchmark compiles the real jitted training step (``bench_train.compile_step``:
real ProteinNet validation crops, placed as ``parallel=auto`` places them, forward + backward
+ AdamW) both ways in one process and alternates them round by round (order flipped every
round), so this machine's drift hits both alike; it reports the medians and the per-round
paired ratio.

Usage:
  python scripts/bench_fusion.py [--shapes 64x4 128x4 128x2] [--rounds 7] [--steps 3]
      [--preset base | --model-config foldnet/pretrained/foldnet-base-cpu/config.yaml]
      [--out docs/bench/fusion.json] [--md docs/bench/fusion.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

# bench_train first: it sets up one CPU device per core before JAX starts
from bench_train import compile_step, median_seconds, real_batch, shape_sweep, shape_sweep_args  # noqa: E402
from foldnet.model import cpu_kernels  # noqa: E402
from foldnet.train.optim import OptimConfig  # noqa: E402
from foldnet.train.parallel import ParallelConfig, parallelize_train_step, resolve  # noqa: E402
from foldnet.train.state import create_train_state  # noqa: E402


def bench_shape(cfg, crop: int, batch_size: int, rounds: int, steps: int, data_root: Path) -> dict:
    batch = real_batch(data_root, batch_size, crop, atoms=True)  # for models with auxiliary heads
    pcfg = resolve(ParallelConfig(), batch_size, pairs_per_example=crop * crop)
    steps_of = {}
    for name, fuse in (("fused", True), ("separate", False)):
        cpu_kernels.FUSE_NORM_ELU = fuse  # read when the step is traced (compile_step)
        model, opt, state = create_train_state(cfg, OptimConfig(warmup_steps=1, total_steps=1000), 0, batch)
        steps_of[name] = compile_step(parallelize_train_step(model, opt, pcfg), state, batch)
    cpu_kernels.FUSE_NORM_ELU = True
    times: dict[str, list[float]] = {k: [] for k in steps_of}
    for r in range(rounds):
        for name in (("fused", "separate") if r % 2 == 0 else ("separate", "fused")):
            times[name].append(median_seconds(steps_of[name]["run"], steps))
    ratio = np.array(times["separate"]) / np.array(times["fused"])  # > 1: the fusion is faster
    return {
        "crop": crop, "batch": batch_size, "placement": pcfg.mode, "devices": steps_of["fused"]["devices"],
        "fused_s": float(np.median(times["fused"])), "separate_s": float(np.median(times["separate"])),
        "separate_over_fused_median": float(np.median(ratio)), "separate_over_fused_min": float(ratio.min()),
        "separate_over_fused_max": float(ratio.max()), "rounds_fused_faster": int((ratio > 1).sum()),
        "rounds": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def to_markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# The residual block's convolution + LayerNorm -> ELU fusion ({meta['model']})",
        "",
        f"Machine: {meta['machine']}. JAX {meta['jax']}, {meta['devices']}. {meta['note']}",
        "",
        f"The real jitted training step (float32, foldnet's CPU kernels, real validation crops, placed as "
        f"`parallel=auto` places them), median of {meta['rounds']} rounds of {meta['steps']} steps, "
        "`cpu_kernels.FUSE_NORM_ELU` on ('fused') and off ('separate': the convolution and the norm as two "
        "calls each way) alternating round by round (order flipped each round). Ratio > 1: the fusion is faster.",
        "",
        "| crop | batch | placement | fused (ms) | separate (ms) | separate / fused: median (min-max) "
        "| rounds fused faster |",
        "|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['crop']} | {r['batch']} | {r['placement']} ({r['devices']}) | {1e3 * r['fused_s']:.0f} | "
            f"{1e3 * r['separate_s']:.0f} | {r['separate_over_fused_median']:.3f} "
            f"({r['separate_over_fused_min']:.3f}-{r['separate_over_fused_max']:.3f}) | "
            f"{r['rounds_fused_faster']} of {meta['rounds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    bench = REPO / "docs" / "bench"
    args = shape_sweep_args(__doc__, ["64x4", "128x4", "128x2"], 7, str(bench / "fusion.json"),
                            str(bench / "fusion.md")).parse_args(argv)
    if not cpu_kernels.available():
        raise SystemExit("foldnet's CPU kernels are not available here: nothing to compare")
    shape_sweep(args, bench_shape, to_markdown)


if __name__ == "__main__":
    main()
