"""Where the training step's time goes: XLA:CPU's per-operation trace of the real jitted step.

Compiles the base network's training step as ``bench_train`` does (real validation crops,
state donated), runs it under ``jax.profiler.trace`` and sums the duration of every
executed operation (thunk) by kind: each foldnet CPU kernel by its FFI target, XLA's own
operations by fusion kind (``ynn_fusion``, ``add_select_fusion``, ...), plus the largest
single XLA operations with their HLO. Thunks of one device can overlap (XLA runs
independent ones concurrently) and a kernel's duration includes waiting for cores, so the
shares are of the summed thunk time, not of the wall-clock step. Writes JSON + a markdown
table.

Usage:
  python scripts/profile_step.py [--crop 128] [--batch 4] [--parallel none] [--steps 3]
      [--out docs/bench/profile_step.json] [--md docs/bench/profile_step.md]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_train as bt  # noqa: E402  (applies the CLIs' process settings at import)
import jax  # noqa: E402

from foldnet.common import atomic, paths  # noqa: E402


def profile(preset: str, crop: int, batch_size: int, parallel: str, steps: int, data_root: Path) -> dict:
    batch = bt.real_batch(data_root, batch_size, crop)
    with bt.cpu_kernels(True):
        pstep, state = bt._preset_step(preset, "float32", batch, parallel)
        compiled, holder, db, _ = bt._lower_compile(pstep, state, batch)
    hlo = compiled.as_text()
    target = dict(re.findall(r"(ffi_call\.\d+) = .*?custom_call_target=\"(\w+)\"", hlo))

    def run():
        holder["s"], m = compiled(holder["s"], db)
        jax.block_until_ready(m["loss"])

    for _ in range(2):
        run()
    step_ms = 1e3 * bt.median_seconds(run, 5)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(steps):
                run()
        trace = next(Path(tmp).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))["traceEvents"]
    ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
           and not e["name"].startswith("end:")]
    by_kind: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    by_op: dict[str, float] = collections.defaultdict(float)
    for e in ops:
        name = e["name"]
        kind = target.get(name, re.sub(r"\.\d+$", "", name))
        by_kind[kind] += e["dur"] / 1e3 / steps
        calls[kind] += 1
        if name not in target:
            by_op[name] += e["dur"] / 1e3 / steps
    total = sum(by_kind.values())
    kinds = [{"kind": k, "ms_per_step": v, "share": v / total, "calls_per_step": calls[k] / steps,
              "foldnet_kernel": k.startswith("foldnet_")}
             for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    top = []
    for name, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:15]:
        m = re.search(r"\n  %?" + re.escape(name) + r" = ([^\n]*)", hlo)
        op = re.search(r'op_name="([^"]*)"', m.group(1)).group(1) if m and "op_name" in m.group(1) else ""
        shape = m.group(1).split(" ")[0] if m else ""
        top.append({"op": name, "ms_per_step": v, "shape": shape, "jax_op": op})
    return {"preset": preset, "crop": crop, "batch": batch_size, "parallel": parallel,
            "devices": pstep.num_devices, "step_ms": step_ms, "thunk_ms_per_step": total,
            "kinds": kinds, "top_xla_ops": top}


def to_markdown(r: dict, machine: str) -> str:
    lines = [
        f"# Where the training step's time goes ({r['preset']} preset, batch {r['batch']}, crop {r['crop']}, "
        f"parallel={r['parallel']}, {r['devices']} device(s))",
        "",
        f"Machine: {machine}. `scripts/profile_step.py`: XLA:CPU's trace of the jitted step (f32, foldnet's "
        f"CPU kernels on). Step {r['step_ms']:.0f} ms (median of 5, just before tracing); summed operation "
        f"time {r['thunk_ms_per_step']:.0f} ms per step. Shares are of the summed operation time (operations "
        "of one device can overlap; a kernel's time includes waiting for cores).",
        "",
        "| operation kind | ms / step | share | calls / step |",
        "|---|---:|---:|---:|",
    ]
    for k in r["kinds"][:20]:
        lines.append(f"| {'**' + k['kind'] + '**' if k['foldnet_kernel'] else k['kind']} | {k['ms_per_step']:.1f} "
                     f"| {100 * k['share']:.1f} % | {k['calls_per_step']:.0f} |")
    xla = sum(k["ms_per_step"] for k in r["kinds"] if not k["foldnet_kernel"])
    lines += ["", f"foldnet's kernels (bold): {r['thunk_ms_per_step'] - xla:.0f} ms; XLA's own operations: "
              f"{xla:.0f} ms.", "", "Largest single XLA operations:", "",
              "| operation | ms / step | shape | JAX operation |", "|---|---:|---|---|"]
    for t in r["top_xla_ops"]:
        lines.append(f"| {t['op']} | {t['ms_per_step']:.2f} | `{t['shape']}` | `{t['jax_op'][:90]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--parallel", default="none", help="ParallelConfig mode (none: one device, no overlap)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="docs/bench/profile_step.json")
    ap.add_argument("--md", default="docs/bench/profile_step.md")
    args = ap.parse_args(argv)
    r = profile(args.preset, args.crop, args.batch, args.parallel, args.steps, Path(paths.data_root(args.data_root)))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, JAX {jax.__version__}"
    with atomic.atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"machine": machine, **r}, indent=2) + "\n")
    with atomic.atomic_path(args.md) as tmp:
        tmp.write_text(to_markdown(r, machine))
    print(to_markdown(r, machine))


if __name__ == "__main__":
    main()
