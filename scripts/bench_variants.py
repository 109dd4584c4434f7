"""Training-step cost of recipe variants, measured in one process, alternating.

Each variant is a set of hydra overrides on top of a common set (``--common``);
the script composes each one's TrainConfig exactly as ``foldnet train`` does,
builds its state and parallel step as the trainer does (``parallel=auto``, the
parameter EMA), compiles it on the same real training batch and then times the
variants in alternating rounds, so machine noise hits them alike (runs in
separate processes on the shared 2-core box differ by 20-30 %). The first
variant is the reference: ``steps_equal_compute`` is ``--budget_steps`` x (its
step time / the variant's), the run length that costs what the reference's
``--budget_steps`` cost.

Usage:
  python scripts/bench_variants.py --common experiment=foldnet_base_cpu_v2 \\
      --variant base= --variant bn64="model.channels_2d=64 model.bottleneck_2d=32" \\
      [--budget_steps 1000] [--rounds 4] [--out runs/variants.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores  # noqa: E402

retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
use_all_cpu_cores()  # as `foldnet train` does: one CPU device per core

import jax  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from foldnet.common import atomic  # noqa: E402
from foldnet.common.paths import config_dir  # noqa: E402
from foldnet.train.config import register_configs, to_train_config  # noqa: E402
from foldnet.train.loop import train_loader, split_paths  # noqa: E402
from foldnet.train.parallel import parallelize_train_step, resolve  # noqa: E402
from foldnet.train.state import create_train_state  # noqa: E402

from bench_train import compile_step  # noqa: E402  (scripts/ is on sys.path when run as a script)


def compiled_step(overrides: list[str]) -> dict:
    """The trainer's compiled step of one composed config, on its loader's first batch."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = to_train_config(compose(config_name="train", overrides=overrides + ["run_dir=unused"]))
    train_path, _ = split_paths(cfg)
    _, loader = train_loader(cfg, train_path, 0, 1)
    batch = loader.make_batch(0, 0)
    model, optimizer, state = create_train_state(cfg.model, cfg.optim, cfg.seed, batch)
    pcfg = resolve(cfg.parallel, cfg.data.batch_size, crop_size=cfg.data.crop_size)  # as the trainer does
    pstep = parallelize_train_step(model, optimizer, pcfg, ema_decay=cfg.optim.ema_decay)
    return {**compile_step(pstep, state, batch), "crops": cfg.data.batch_size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--common", default="", help="overrides shared by every variant (one string)")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES",
                    help="a variant: its name, '=', its own overrides (one string; may be empty)")
    ap.add_argument("--budget_steps", type=int, default=1000, help="the reference variant's run length")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--out", default="runs/variants.json")
    args = ap.parse_args(argv)
    register_configs()
    common = shlex.split(args.common)
    variants = {}
    for v in args.variant:
        name, _, over = v.partition("=")
        variants[name] = shlex.split(over)
    built = {}
    for name, over in variants.items():
        built[name] = compiled_step(common + over)
        print(f"{name}: {built[name]['params']:,} params, compile {built[name]['compile_s']:.1f} s", flush=True)
    times = {name: [] for name in built}
    for _ in range(args.rounds):
        for name, b in built.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                b["run"]()
            times[name].append((time.perf_counter() - t) / args.steps)
    ref = next(iter(built))
    ref_s = float(np.median(times[ref]))
    rows = []
    for name, b in built.items():
        s = float(np.median(times[name]))
        rows.append({"variant": name, "overrides": variants[name], "params": b["params"],
                     "step_s": s, "step_s_rounds": times[name], "relative_cost": s / ref_s,
                     "crops_per_s": b["crops"] / s, "compile_s": b["compile_s"],
                     "steps_equal_compute": int(round(args.budget_steps * ref_s / s))})
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "jax": jax.__version__,
                       "devices": built[ref]["devices"]},
           "common": common, "budget_steps": args.budget_steps, "variants": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    print(f"| variant | params | step (ms) | cost vs {ref} | steps at equal compute |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {1000 * r['step_s']:.0f} | {r['relative_cost']:.2f} | "
              f"{r['steps_equal_compute']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
