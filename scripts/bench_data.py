#!/usr/bin/env python
"""Benchmark the data pipeline: dataset build, cache size, distance maps, loader throughput.

Measures, on the bundled ProteinNet training file (or its first --max-chains):

1. build: parse + featurise + write time (chains/s) and HDF5 size;
2. distance maps: the size of the same cache with stored float16 [L, L] CB maps
   (written for real) against the time to compute a crop's map on the fly;
3. loader: crops/s of CropLoader at crop 64 and 128, prefetch off/on, on the
   computed-map cache, plus crop 128 on the stored-map cache.

Writes JSON (default docs/bench/data.json) and prints a markdown table.

Usage:
  python scripts/bench_data.py [--max-chains N] [--out docs/bench/data.json] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from foldnet.common import atomic  # noqa: E402
from foldnet.common.paths import data_root as resolve_data_root  # noqa: E402
from foldnet.data.build import build_dataset  # noqa: E402
from foldnet.data.cache import H5Dataset, write_h5  # noqa: E402
from foldnet.data.config import BuildConfig, LeakageConfig, ProteinNetSourceConfig  # noqa: E402
from foldnet.data.loader import CropLoader, crop_distances  # noqa: E402


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def loader_rate(path: Path, crop: int, prefetch: int, batches: int, batch_size: int = 8) -> float:
    loader = CropLoader(H5Dataset(path), crop, batch_size, seed=0, prefetch=prefetch)
    it = iter(loader)
    next(it)  # open the file, start the thread
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - t0
    it.close()
    return batches * batch_size / dt


def crop_map_time(crop: int, reps: int = 2000) -> float:
    """Seconds to compute one crop's CB-CB map from coordinates (the loader's formula)."""
    rng = np.random.default_rng(0)
    cb = (rng.normal(size=(crop, 3)) * 15).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(reps):
        crop_distances(cb)
    return (time.perf_counter() - t0) / reps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None, help="data root (default: FOLDNET_DATA or ./data)")
    ap.add_argument("--max-chains", type=int, default=None, help="first N training chains (default all 7,270)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=100, help="batches of 8 timed per loader setting")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "data.json"))
    ap.add_argument("--workdir", default=None, help="scratch folder (default a temp dir, removed)")
    args = ap.parse_args(argv)

    root = resolve_data_root(args.data_root)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="foldnet_bench_"))
    result: dict = {"machine": machine(), "max_chains": args.max_chains, "workers": args.workers}
    try:
        cfg = BuildConfig(
            proteinnet=ProteinNetSourceConfig(files={"train": str(root / "proteinnet" / "training.gz")}),
            cath_labels=str(root / "promod3_structure_db" / "chains.tsv.gz"),
            max_chains=args.max_chains, workers=args.workers, force=True,
            leakage=LeakageConfig(enabled=False),
        )
        def cpu() -> float:
            a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

        t0, c0 = time.perf_counter(), cpu()
        res = build_dataset(cfg, work / "computed", log=lambda *a, **k: None)
        build_s, build_cpu = time.perf_counter() - t0, cpu() - c0
        info = res.manifest["splits"]["train"]
        result["build"] = {
            "chains": info["chains"], "residues": info["residues"], "seconds": round(build_s, 2),
            "chains_per_s": round(info["chains"] / build_s, 1), "bytes": info["bytes"],
            # CPU seconds of this process and its workers: wall time on a loaded machine
            # says little; cpu_s / workers is the wall time on idle cores.
            "cpu_s": round(build_cpu, 2),
            "timing_s": res.manifest["timing_s"],
        }
        path = work / "computed" / "train.h5"

        # The same chains with stored float16 maps, written for real.
        ds = H5Dataset(path)
        t0 = time.perf_counter()
        chains = []
        for i in range(len(ds)):
            f = ds[i]
            cb = f["atom_positions"][:, 4].astype(np.float32)
            m = f["atom_mask"][:, 4] > 0
            d = np.sqrt(((cb[:, None] - cb[None]) ** 2).sum(-1))
            d[~(m[:, None] & m[None])] = np.nan
            f["cb_dist"] = d.astype(np.float16)
            chains.append(f)
        stored = write_h5(work / "stored.h5", chains, split="train", source="bench")
        stored_s = time.perf_counter() - t0
        del chains
        L = ds.lengths.astype(np.int64)
        result["distance_maps"] = {
            "computed_cache_bytes": info["bytes"],
            "stored_cache_bytes": stored.stat().st_size,
            "stored_map_bytes_exact": int((L * L).sum() * 2),
            "stored_build_extra_s": round(stored_s, 2),
            "compute_crop_map_ms": {str(n): round(crop_map_time(n) * 1e3, 4) for n in (64, 128, 256)},
        }

        rates = {}
        for crop in (64, 128):
            for pf in (0, 2):
                rates[f"crop{crop}_prefetch{pf}"] = round(loader_rate(path, crop, pf, args.batches), 1)
        rates["crop128_prefetch0_stored_maps"] = round(loader_rate(stored, 128, 0, args.batches), 1)
        result["loader_crops_per_s"] = rates
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    out = Path(args.out)
    atomic.write_text(out, json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"\nwrote {out}")
    return result


def markdown(r: dict) -> str:
    m, b, d, l = r["machine"], r["build"], r["distance_maps"], r["loader_crops_per_s"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores_usable']} usable cores (load average at start "
        f"{m['load_average_at_start'][0]:.1f}), Python {m['python']}, numpy {m['numpy']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| build: chains / residues | {b['chains']:,} / {b['residues']:,} |",
        f"| build: wall time (workers={r['workers']}) | {b['seconds']:.1f} s ({b['chains_per_s']:.0f} chains/s) |",
        f"| build: CPU time, all processes | {b['cpu_s']:.1f} s |",
        f"| cache size, maps computed in the loader | {d['computed_cache_bytes'] / 1e6:.1f} MB |",
        f"| cache size, float16 [L, L] maps stored | {d['stored_cache_bytes'] / 1e6:.1f} MB |",
    ]
    for n, ms in d["compute_crop_map_ms"].items():
        lines.append(f"| compute one {n} x {n} crop map | {ms:.3f} ms |")
    for k, v in l.items():
        lines.append(f"| loader {k.replace('_', ' ')} (batch 8) | {v:,.0f} crops/s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
