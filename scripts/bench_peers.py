"""foldnet's training step side by side with the same network in PyTorch and Keras, one run.

Times foldnet's real jitted training step (``bench_train.bench_step``: real ProteinNet
validation crops, state donated, forward + backward + AdamW) and the peers' rebuild of
the same network (``../shared/peers/peer_step_bench.py``, run with the peers' own
interpreter: their stacks never enter foldnet's environment), alternating round by round
on the same crop and batch, and reports the median of the rounds. In the same run it
measures the machine's f32 matmul throughput (a 2048^3 ``jnp.dot``) and reports the
fraction of it that foldnet's step reaches (XLA's FLOP count of the compiled step / step
time), then times the network forward of one 300-residue chain and, in a subprocess
(``scripts/bench_fold.py``, as the CLIs run it), the folding of a 300-residue chain.

Usage:
  python scripts/bench_peers.py --peers-python /tmp/peers/bin/python
      [--crops 64 128] [--batch 4] [--rounds 3] [--steps 5] [--skip-fold]
      [--out docs/bench/peers.json] [--md docs/bench/peers.md]

The peers' environment: ``python3 -m venv /tmp/peers && /tmp/peers/bin/pip install
torch tensorflow-cpu keras numpy`` (see ../shared/peers/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench_train import RETAINED, bench_step, cpu_kernels, median_seconds, real_batch  # noqa: E402
from foldnet.common import atomic, paths  # noqa: E402
from foldnet.model import PRESETS, build_model  # noqa: E402


def matmul_flops_per_s(n: int = 2048, reps: int = 5) -> float:
    """f32 FLOP/s of one n x n x n ``jnp.dot`` (this machine's practical matmul ceiling)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    return 2.0 * n**3 / median_seconds(lambda: f(a, b).block_until_ready(), reps)


def faults_per_step(run, n: int = 3) -> float:
    """Minor page faults per call of ``run`` (memory the kernel had to map and zero again)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def peer_ms(python: str, script: Path, which: str, crop: int, batch: int, steps: int) -> float:
    """ms per training step of one peer (its own process, its own warm-up)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([python, str(script), which, str(crop), str(batch), str(steps)],
                         capture_output=True, text=True, env=env, timeout=1800)
    m = re.search(r"ms_per_step\s+([0-9.]+)", out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"{which} peer failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return float(m.group(1))


def forward_300(preset: str, dtype: str, reps: int = 3, kernels: bool = True) -> dict:
    """Compile and run time of the network forward (eval mode) of one 300-residue chain."""
    cfg = dataclasses.replace(PRESETS[preset], dtype=dtype)
    n = 300
    rng = np.random.default_rng(0)
    batch = {
        "aatype": rng.integers(0, 20, (1, n)).astype(np.int32),
        "profile": rng.dirichlet(np.ones(20), (1, n)).astype(np.float32),
        "has_profile": np.ones(1, np.float32),
        "residue_index": np.arange(n, dtype=np.int32)[None],
        "seq_mask": np.ones((1, n), np.float32),
    }
    model = build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), batch, train=False)["params"]
    with cpu_kernels(kernels):  # traced on the first call, inside the switch
        f = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))
        t = time.perf_counter()
        jax.block_until_ready(f(params, batch))
        first = time.perf_counter() - t
    run = median_seconds(lambda: jax.block_until_ready(f(params, batch)), reps)
    return {"length": n, "dtype": dtype, "cpu_kernels": kernels, "first_call_s": first, "run_s": run}


def fold_300(restarts: int = 8) -> dict:
    """bench_fold.py's length section for 300 residues, in its own process (one CPU device per core)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "scripts" / "bench_fold.py"), "--sections", "length",
               "--lengths", "300", "--out", tmp]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"bench_fold failed: {out.stderr[-2000:]}")
        res = json.loads((Path(tmp) / "fold.json").read_text())
    return next(r for r in res["length"] if r["length"] == 300)


def _paired(row: dict, peer: str) -> str:
    """The round-by-round ratio peer / foldnet f32: median (min-max), rounds at >= 1.5x."""
    ratios = row.get(f"{peer}_over_foldnet_rounds")
    if not ratios:
        return "-"
    return (f"{np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), "
            f"{sum(r >= 1.5 for r in ratios)} of {len(ratios)}")


def to_markdown(res: dict) -> str:
    meta = res["meta"]
    lines = [
        "# Training step: foldnet vs the same network in PyTorch and Keras",
        "",
        f"Machine: {meta['machine']}. foldnet on JAX {meta['jax']}; peers: {meta['peers']}. "
        f"Load average at start {meta['load_start']}, at end {meta['load_end']} "
        f"({meta['note']}).",
        "",
        f"Batch {meta['batch']}, median of {meta['rounds']} rounds of {meta['steps']} steps, "
        "the stacks alternating round by round (the per-round column pairs each PyTorch round with the "
        "foldnet f32 round just before it). foldnet: real ProteinNet validation crops, "
        "the jitted train step with the state donated; peers: "
        "`../shared/peers/peer_step_bench.py` (random inputs of the same shapes). "
        f"Matmul ceiling measured in this run: {meta['matmul_gflops']:.0f} GFLOP/s "
        "(2048^3 f32 `jnp.dot`). On CPU the bf16 policy computes in f32 (docs/model.md): the f32 and "
        "bf16 columns run the same program there, so their difference is this run's noise.",
        "",
        "foldnet f32 / bf16: the trainer's default placement (`parallel=auto`: the batch split over "
        "one CPU device per core, shard_map, when each device keeps `parallel.min_pairs_per_device` "
        "residue pairs, else one device; the 'auto' column says which) with foldnet's CPU kernels "
        "(docs/model.md); 'other placement': f32 placed the other way (one device where auto splits, "
        "split where auto takes one device); 'XLA only': the same step traced without the kernels, i.e. "
        "the step before them. GFLOP/s: XLA's FLOP count of the step without the kernels / step time.",
        "",
        "| crop | auto | foldnet f32 (ms) | foldnet f32, other placement (ms) | foldnet bf16 (ms) "
        "| foldnet f32, XLA only (ms) "
        "| PyTorch (ms) | Keras (ms) | PyTorch / foldnet f32 | per round: median (min-max), rounds >= 1.5x "
        "| foldnet GFLOP/s | fraction of matmul | XLA only: fraction of matmul |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in res["train"]:
        lines.append(
            f"| {r['crop']} | {'split' if r['foldnet_mode'] != 'none' else 'one device'} | "
            f"{r['foldnet_float32_ms']:.0f} | {r.get('foldnet_float32_other_placement_ms', float('nan')):.0f} | "
            f"{r.get('foldnet_bfloat16_ms', float('nan')):.0f} | "
            f"{r.get('foldnet_float32_xla_ms', float('nan')):.0f} | "
            f"{r.get('torch_ms', float('nan')):.0f} | {r.get('keras_ms', float('nan')):.0f} | "
            f"{r.get('torch_ms', float('nan')) / r['foldnet_float32_ms']:.2f} | {_paired(r, 'torch')} | "
            f"{r['foldnet_float32_gflops']:.1f} | {r['fraction_of_matmul']:.2f} | "
            f"{r.get('fraction_of_matmul_xla', float('nan')):.2f} |"
        )
    if any("foldnet_float32_page_faults_per_step" in r for r in res["train"]):
        faults = ", ".join(f"{r['foldnet_float32_page_faults_per_step']:.0f} at crop {r['crop']}" for r in res["train"])
        lines += ["", f"Minor page faults per foldnet f32 step: {faults} (glibc keeps freed memory for reuse: "
                  f"{'yes' if meta.get('retain_freed_memory') else 'no'}; `foldnet.cli.runtime.retain_freed_memory`)."]
    if res.get("forward"):
        lines += ["", "Network forward, one 300-residue chain (base preset, random weights):", "",
                  "| dtype | kernels | first call (compile + run, s) | run (s) |", "|---|---|---:|---:|"]
        for r in res["forward"]:
            lines.append(f"| {r['dtype']} | {'on' if r.get('cpu_kernels', True) else 'off (XLA only)'} | "
                         f"{r['first_call_s']:.2f} | {r['run_s']:.3f} |")
    if res.get("fold"):
        f = res["fold"]
        lines += ["", f"Folding one 300-residue chain ({f['restarts']} restarts x {f['steps']} steps, "
                  f"{f['devices']} CPU device(s)): first call {f['first_call_s']:.2f} s, "
                  f"run {f['run_s']:.2f} s, compile {f['compile_s']:.2f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="base", choices=sorted(PRESETS))
    ap.add_argument("--crops", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peers-python", default="/tmp/peers/bin/python")
    ap.add_argument("--peers-script", default=str(REPO.parent / "shared" / "peers" / "peer_step_bench.py"))
    ap.add_argument("--peers", nargs="*", default=["torch", "keras"])
    ap.add_argument("--skip-fold", action="store_true")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "peers.json"))
    ap.add_argument("--md", default=str(REPO / "docs" / "bench" / "peers.md"))
    args = ap.parse_args(argv)
    data_root = Path(paths.data_root(args.data_root))
    load_start = "%.1f" % os.getloadavg()[0]
    script = Path(args.peers_script)

    versions = {}
    for which, code in (("torch", "import torch; print(torch.__version__)"),
                        ("keras", "import keras, tensorflow as tf; print(keras.__version__, '/ TF', tf.__version__)")):
        if which in args.peers:
            v = subprocess.run([args.peers_python, "-c", code], capture_output=True, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            versions[which] = v.stdout.strip().splitlines()[-1] if v.returncode == 0 else "unavailable"

    mm = matmul_flops_per_s()
    train = []
    for crop in args.crops:
        batch = real_batch(data_root, args.batch, crop)
        # the trainer's placement (parallel=auto) in both precisions, f32 placed the other way
        # (split where auto takes one device, one device where it splits), and f32 with XLA's own
        # operations only (the step before foldnet's CPU kernels)
        steps = {dt: bench_step(args.preset, dt, batch) for dt in ("float32", "bfloat16")}
        other = "shard_map" if steps["float32"]["mode"] == "none" else "none"
        steps["float32_other_placement"] = bench_step(args.preset, "float32", batch, parallel=other)
        steps["float32_xla"] = bench_step(args.preset, "float32", batch, kernels=False)
        times: dict[str, list[float]] = {k: [] for k in [*steps, *args.peers]}
        for _ in range(args.rounds):
            for dt, s in steps.items():
                times[dt].append(1e3 * median_seconds(s["run"], args.steps))
            for which in args.peers:
                times[which].append(peer_ms(args.peers_python, script, which, crop, args.batch, args.steps))
        row = {"crop": crop, "batch": args.batch, "rounds_ms": times,
               "foldnet_devices": steps["float32"]["devices"], "foldnet_mode": steps["float32"]["mode"]}
        for dt, s in steps.items():
            row[f"foldnet_{dt}_ms"] = float(np.median(times[dt]))
            row[f"foldnet_{dt}_gflops"] = s["flops"] / (row[f"foldnet_{dt}_ms"] / 1e3) / 1e9
            row[f"foldnet_{dt}_compile_s"] = s["compile_s"]
        row["step_gflop"] = steps["float32"]["flops"] / 1e9
        row["foldnet_float32_page_faults_per_step"] = faults_per_step(steps["float32"]["run"])
        for which in args.peers:
            row[f"{which}_ms"] = float(np.median(times[which]))
            # Paired by round: the two stacks ran seconds apart, so a slow phase of this shared
            # machine (step times here drift by tens of percent over minutes) hits both alike.
            ratios = [p / f for p, f in zip(times[which], times["float32"])]
            row[f"{which}_over_foldnet_rounds"] = ratios
            row[f"{which}_over_foldnet_paired_median"] = float(np.median(ratios))
        row["fraction_of_matmul"] = row["foldnet_float32_gflops"] * 1e9 / mm
        row["fraction_of_matmul_xla"] = row["foldnet_float32_xla_gflops"] * 1e9 / mm
        print(json.dumps({k: v for k, v in row.items() if k != "rounds_ms"}), flush=True)
        train.append(row)

    forward = [forward_300(args.preset, dt, kernels=k) for dt, k in
               (("float32", True), ("bfloat16", True), ("float32", False))]
    fold = None if args.skip_fold else fold_300()
    res = {
        "meta": {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
            "jax": jax.__version__,
            "peers": ", ".join(f"{k} {v}" for k, v in versions.items()) or "none",
            "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
            "matmul_gflops": mm / 1e9,
            # applied by bench_train's import, before JAX started: see foldnet.cli.runtime
            "retain_freed_memory": RETAINED,
            "load_start": load_start,
            "load_end": "%.1f" % os.getloadavg()[0],
            "note": args.note or "load averages include this benchmark itself",
        },
        "train": train,
        "forward": forward,
        "fold": fold,
    }
    with atomic.atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(res, indent=2) + "\n")
    with atomic.atomic_path(args.md) as tmp:
        tmp.write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
