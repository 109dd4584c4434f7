"""Time and peak memory of predicting one long chain (tiled network + folding), on CPU.

Usage (from the repository root, FOLDNET_DATA pointing at the data bundle):
  python scripts/bench_inference.py --id 3bgaA --preset tiny --crop 128 --stride 64
  python scripts/bench_inference.py --id 3bgaA --preset base --fold-steps 100 --restarts 2
  python scripts/bench_inference.py --id 3bgaA --stride 64 [--without-triangles]
      --model-config foldnet/pretrained/foldnet-base-cpu/config.yaml

The chain's sequence comes from promod3_structure_db/all_chains.fasta.gz (3bgaA has
1,003 residues). The network has random weights of the chosen preset or saved model
config (time and memory do not depend on the values); ``--without-triangles`` drops its
triangle blocks, to time what they cost on a long chain. Prints one JSON line: seconds for the first
(compiling) and a second tiled pass, folding time, peak resident memory. With ``--out PATH`` the
run is also appended to ``PATH.json`` (its ``runs``) and every run so far is tabled in ``PATH.md``,
so alternating runs (with, without, with, ...) collect in one file:

  for t in "" --without-triangles "" --without-triangles; do
    python scripts/bench_inference.py --id 3bgaA --stride 64 $t --out docs/bench/inference_triangles \
        --model-config foldnet/pretrained/foldnet-base-cpu/config.yaml; done
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


TABLE_COLUMNS = ("model", "triangle_blocks", "length", "crop", "stride", "windows", "network_first_s",
                 "network_second_s", "peak_rss_mb_network", "fold_s", "peak_rss_mb_fold")


def record(out: Path, run: dict, machine: str) -> dict:
    """Append ``run``, measured on ``machine``, to ``out``.json (created if missing) and rewrite
    ``out``.md, both atomically.

    Runs keep their order, so a table of alternating configurations reads as pairs measured
    back to back on the same machine (the way ratios on a shared machine are comparable). Each
    run carries its own machine: a file that collects runs from two machines says so in its
    table instead of filing them all under the first one's name."""
    from foldnet.common import atomic

    path = out.parent / f"{out.name}.json"  # appended, not swapped in: OUT may hold a dot
    doc = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    legacy = doc.pop("machine", None)  # files written before runs carried their machine: one for all
    for r in doc["runs"]:
        r.setdefault("machine", legacy or "?")
    doc["runs"].append({**run, "machine": machine})
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n")
    machines = list(dict.fromkeys(r["machine"] for r in doc["runs"]))
    cols = [c for c in TABLE_COLUMNS if any(c in r for r in doc["runs"])]
    if len(machines) > 1:
        cols.append("machine")
        where = "Machine: per run (last column); compare runs of one machine only."
    else:
        where = f"Machine: {machines[0]}."
    lines = ["# Inference time and memory on one long chain (`scripts/bench_inference.py`)", "",
             f"{where} Runs in the order they ran.", "",
             "| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for i, r in enumerate(doc["runs"], 1):
        lines.append(f"| {i} | " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    atomic.write_text(out.parent / f"{out.name}.md", "\n".join(lines) + "\n")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--id", default="3bgaA")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model-config", default=None, help="a run's or package's config.yaml (overrides --preset)")
    ap.add_argument("--without-triangles", action="store_true", help="the same network without its triangle blocks")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--fold-steps", type=int, default=0, help="0 = skip folding")
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--nerf", default="pnerf")
    ap.add_argument("--out", type=Path, default=None,
                    help="append the run to OUT.json and table all runs in OUT.md (e.g. docs/bench/inference)")
    args = ap.parse_args()

    import jax

    from foldnet.common.paths import data_root
    from foldnet.data.fasta import iter_fasta, record_to_protein
    from foldnet.inference.checkpoint_io import load_model_config
    from foldnet.inference.features import input_features
    from foldnet.inference.predict import Predictor
    from foldnet.inference.tiling import TilingConfig, window_batch
    from foldnet.model import PRESETS, build_model

    rec = next(r for r in iter_fasta(data_root() / "promod3_structure_db" / "all_chains.fasta.gz") if r.id == args.id)
    prot = record_to_protein(rec)
    feats = input_features(prot)
    cfg = load_model_config(args.model_config) if args.model_config else PRESETS[args.preset]
    if args.without_triangles:
        cfg = dataclasses.replace(cfg, triangle_every=0, triangle_after=())
    tiling = TilingConfig(crop_size=args.crop, stride=args.stride, batch_size=args.batch)
    model = build_model(cfg)
    params = model.init(jax.random.PRNGKey(0), window_batch(feats, [np.arange(16)]), train=False)["params"]
    predictor = Predictor(cfg, params, tiling)
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    dist = predictor.distributions(feats)
    t1 = time.perf_counter()
    del dist
    dist = predictor.distributions(feats)
    t2 = time.perf_counter()
    out = {
        "id": args.id, "length": len(prot), "model": args.model_config or args.preset,
        "triangle_blocks": len(cfg.triangle_positions()), "crop": args.crop, "stride": args.stride,
        "windows": int(dist["num_windows"]), "network_first_s": round(t1 - t0, 2),
        "network_second_s": round(t2 - t1, 2), "peak_rss_mb_before": round(rss0), "peak_rss_mb_network": round(_peak_rss_mb()),
        "cpus": os.cpu_count(),
    }
    if args.fold_steps > 0:
        from foldnet.structure import FoldConfig, fold

        fc = FoldConfig(num_steps=args.fold_steps, num_restarts=args.restarts, nerf_method=args.nerf)
        t3 = time.perf_counter()
        res = fold(dist["dist_probs"], dist["phi_probs"], dist["psi_probs"], fc, 0, aatype=prot.aatype)
        out["fold_s"] = round(time.perf_counter() - t3, 2)
        out["fold_energy"] = float(res.energy)
        out["peak_rss_mb_fold"] = round(_peak_rss_mb())
    print(json.dumps(out))
    if args.out is not None:
        record(args.out, out, f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                              f"JAX {jax.__version__}")


if __name__ == "__main__":
    main()
