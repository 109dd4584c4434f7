"""One device or the batch split over the CPU cores: which places a training step faster, by shape.

``parallel=auto`` decides, per run, whether the batch is split over one CPU device per core
(``shard_map``) or runs on one device whose kernels spread over the cores themselves
(``none``); ``ParallelConfig.min_pairs_per_device`` is the rule. This benchmark measures
both placements of the real jitted training step (``bench_train.compile_step``: real
ProteinNet validation crops, state donated, forward + backward + AdamW) for each
crop x batch shape, alternating the placements round by round (their order flipped every
round), so that this machine's drift hits both alike, and reports the medians and the
per-round paired ratio.

Usage:
  python scripts/bench_placement.py [--shapes 64x4 96x4 128x2 128x4] [--rounds 5] [--steps 3]
      [--preset base | --model-config foldnet/pretrained/foldnet-base-cpu/config.yaml]
      [--out docs/bench/placement.json] [--md docs/bench/placement.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import jax  # noqa: E402

from bench_train import compile_step, median_seconds, real_batch, write_report  # noqa: E402 (one device per core)
from foldnet.common import paths  # noqa: E402
from foldnet.inference.checkpoint_io import load_model_config  # noqa: E402
from foldnet.model import PRESETS  # noqa: E402
from foldnet.train.optim import OptimConfig  # noqa: E402
from foldnet.train.parallel import ParallelConfig, parallelize_train_step, resolve  # noqa: E402
from foldnet.train.state import create_train_state  # noqa: E402


def placements(cfg, batch: dict) -> dict:
    """{"none": ..., "split": ...}: ``compile_step`` of the step on one device and split over
    as many local devices as ``parallel=auto`` would take with the pair threshold off."""
    split = resolve(ParallelConfig(min_pairs_per_device=0), len(batch["aatype"]))
    out = {}
    for name, pcfg in (("none", ParallelConfig(mode="none")), ("split", split)):
        model, opt, state = create_train_state(cfg, OptimConfig(warmup_steps=1, total_steps=1000), 0, batch)
        out[name] = compile_step(parallelize_train_step(model, opt, pcfg), state, batch)
    return out


def bench_shape(cfg, crop: int, batch_size: int, rounds: int, steps: int, data_root: Path) -> dict:
    batch = real_batch(data_root, batch_size, crop, atoms=True)  # for models with auxiliary heads
    steps_of = placements(cfg, batch)
    times: dict[str, list[float]] = {k: [] for k in steps_of}
    for r in range(rounds):
        for name in (("none", "split") if r % 2 == 0 else ("split", "none")):
            times[name].append(median_seconds(steps_of[name]["run"], steps))
    ratio = np.array(times["none"]) / np.array(times["split"])  # > 1: splitting is faster
    auto = resolve(ParallelConfig(), batch_size, crop_size=crop)
    return {
        "crop": crop, "batch": batch_size, "devices_split": steps_of["split"]["devices"],
        "pairs_per_device_split": batch_size * crop * crop // steps_of["split"]["devices"],
        "none_s": float(np.median(times["none"])), "split_s": float(np.median(times["split"])),
        "none_over_split_median": float(np.median(ratio)), "none_over_split_min": float(ratio.min()),
        "none_over_split_max": float(ratio.max()), "rounds_split_faster": int((ratio > 1).sum()),
        "auto_picks": "split" if auto.mode != "none" else "none",
        "rounds": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def to_markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Training-step placement on CPU: one device or the batch split over the cores ({meta['model']})",
        "",
        f"Machine: {meta['machine']}. JAX {meta['jax']}, {meta['devices']}. {meta['note']}",
        "",
        f"The real jitted training step (float32, foldnet's CPU kernels, real validation crops), median of "
        f"{meta['rounds']} rounds of {meta['steps']} steps, the two placements alternating round by round "
        "(order flipped each round). 'one device': `parallel=none`, the kernels and XLA spread each operation "
        "over the cores; 'split': `shard_map` over one CPU device per core. Ratio > 1: splitting is faster. "
        "'auto picks': what `parallel=auto` chooses for this shape with the default "
        f"`parallel.min_pairs_per_device` ({meta['min_pairs_per_device']}).",
        "",
        "| crop | batch | pairs per device when split | one device (ms) | split (ms) | one / split: median (min-max) "
        "| rounds split faster | auto picks |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['crop']} | {r['batch']} | {r['pairs_per_device_split']} | {1e3 * r['none_s']:.0f} | "
            f"{1e3 * r['split_s']:.0f} | {r['none_over_split_median']:.2f} ({r['none_over_split_min']:.2f}-"
            f"{r['none_over_split_max']:.2f}) | {r['rounds_split_faster']} of {meta['rounds']} | {r['auto_picks']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["64x4", "96x4", "128x2", "128x4"], help="CROPxBATCH")
    ap.add_argument("--preset", default="base", choices=sorted(PRESETS))
    ap.add_argument("--model-config", default=None, help="a run's or shipped model's config.yaml (its model node)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "placement.json"))
    ap.add_argument("--md", default=str(REPO / "docs" / "bench" / "placement.md"))
    args = ap.parse_args(argv)
    cfg = load_model_config(args.model_config) if args.model_config else PRESETS[args.preset]
    cfg = dataclasses.replace(cfg, dtype="float32")
    data_root = Path(paths.data_root(args.data_root))
    load_start = os.getloadavg()[0]
    results = []
    for shape in args.shapes:
        crop, batch_size = (int(x) for x in shape.lower().split("x"))
        results.append(bench_shape(cfg, crop, batch_size, args.rounds, args.steps, data_root))
        print(json.dumps(results[-1]), flush=True)
    meta = {
        "model": args.model_config or f"{args.preset} preset",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "jax": jax.__version__, "devices": f"{jax.local_device_count()} x {jax.devices()[0].device_kind}",
        "rounds": args.rounds, "steps": args.steps, "min_pairs_per_device": ParallelConfig().min_pairs_per_device,
        "note": (args.note + " " if args.note else "")
        + "Load average at start %.1f, at end %.1f (they include this benchmark)." % (load_start, os.getloadavg()[0]),
    }
    write_report(args.out, args.md, {"meta": meta, "results": results}, to_markdown(results, meta))


if __name__ == "__main__":
    main()
