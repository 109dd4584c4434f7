"""Test-time tiling on validation chains: whole-chain vs tiled windows at several offsets.

Usage:
  python scripts/measure_tiling.py [--checkpoint pretrained:foldnet-base-cpu]
      [--h5 data/built/proteinnet/val.h5] [--chains 48] [--max-length 384]
      [--crops 128] [--strides 64 32 16] [--out docs/pretrained/tiling_validation]

For the first N validation chains (file order, length <= --max-length) and both input modes
(single-sequence, profile), the network's distograms under each tiling setting are scored as
``foldnet evaluate`` scores them (long-range top-L/5 contact precision, all-pair NLL): the
whole chain in one call; and windows of each ``--crops`` length C (default 128) made of
C/2-residue block pairs at each of ``--strides`` (default 64 = no overlap at C 128, 32 =
predict's default, 16 = every pair averaged over more offsets, AlphaFold-CASP13-style
test-time averaging). Chains up to the smallest crop are never tiled, so the table also
reports the chains longer than it separately. (A network trained on 160-residue crops:
``--crops 160 128 --strides 32``.) Writes ``OUT.json`` and a markdown table ``OUT.md``
(atomically). Validation split only: the test split is for the final numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from foldnet.common import atomic  # noqa: E402

def settings(crops: list[int], strides: list[int]) -> dict[str, dict]:
    """Setting name -> TilingConfig fields: the whole chain, then every crop x stride."""
    out = {"whole chain": dict(crop_size=4096, stride=2048, pad_multiple=16)}
    for crop in crops:
        for stride in strides:
            out[f"{crop} / stride {stride}"] = dict(crop_size=crop, stride=stride, pad_multiple=16)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="pretrained:foldnet-base-cpu")
    ap.add_argument("--h5", default="data/built/proteinnet/val.h5")
    ap.add_argument("--chains", type=int, default=48)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--crops", type=int, nargs="+", default=[128], help="window lengths (even)")
    ap.add_argument("--strides", type=int, nargs="+", default=[64, 32, 16], help="block strides (<= crop / 2)")
    ap.add_argument("--out", default="docs/pretrained/tiling_validation")
    args = ap.parse_args(argv)
    shortest = min(args.crops)  # chains up to this long run whole in every setting

    from foldnet.data.cache import H5Dataset
    from foldnet.inference.evaluate import Native, distogram_scores
    from foldnet.inference.features import input_features
    from foldnet.inference.predict import Predictor
    from foldnet.inference.pretrained import load_for_inference
    from foldnet.inference.tiling import TilingConfig

    model_cfg, params = load_for_inference(args.checkpoint)
    ds = H5Dataset(args.h5)
    chains = [i for i in range(len(ds)) if ds.lengths[i] <= args.max_length][: args.chains]
    proteins = [ds.protein(i) for i in chains]
    natives = [Native.of(p) for p in proteins]
    rows = []
    for name, fields in settings(args.crops, args.strides).items():
        predictor = Predictor(model_cfg, params, TilingConfig(batch_size=4, **fields))
        for mode in ("single", "profile"):
            t0 = time.perf_counter()
            per_chain = []
            for prot, native in zip(proteins, natives):
                profile = prot.profile if mode == "profile" else None
                dist = predictor.distributions(input_features(prot.replace(profile=None), profile))
                scores, _ = distogram_scores(dist["dist_probs"], dist["phi_probs"], dist["psi_probs"], native)
                per_chain.append({"id": prot.id, "length": len(prot), "prec_long_L5": scores["prec_long_L5"],
                                  "dist_nll": scores["dist_nll"]})
            seconds = time.perf_counter() - t0
            rows.append({"setting": name, "mode": mode, "seconds": seconds, "chains": per_chain})
            print(f"{name:28s} {mode:8s} {seconds:7.1f} s", flush=True)

    def mean(per_chain, key, long_only):
        v = [c[key] for c in per_chain if (c["length"] > shortest or not long_only) and np.isfinite(c[key])]
        return float(np.mean(v)) if v else float("nan")

    for r in rows:
        for long_only, tag in ((False, "all"), (True, "longer_than_crop")):
            r[f"prec_long_L5_{tag}"] = mean(r["chains"], "prec_long_L5", long_only)
            r[f"dist_nll_{tag}"] = mean(r["chains"], "dist_nll", long_only)
    n_long = sum(len(p) > shortest for p in proteins)
    meta = {"checkpoint": args.checkpoint, "h5": args.h5, "num_chains": len(proteins), "num_longer_than_crop": n_long,
            "crops": args.crops, "strides": args.strides,
            "max_length": args.max_length, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}
    out = Path(args.out)
    atomic.write_text(out.parent / f"{out.name}.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"Validation chains: the first {len(proteins)} of `{args.h5}` with length <= {args.max_length} "
             f"({n_long} longer than the {shortest}-residue crop{'' if len(args.crops) == 1 else ', the shortest'}); checkpoint `{args.checkpoint}`. "
             "Means over chains of long-range top-L/5 precision and all-pair distogram NLL (nats).", "",
             f"| tiling | mode | top-L/5 LR (all) | NLL (all) | top-L/5 LR (L > {shortest}) | NLL (L > {shortest}) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['mode']} | {r['prec_long_L5_all']:.3f} | {r['dist_nll_all']:.3f} | "
                     f"{r['prec_long_L5_longer_than_crop']:.3f} | {r['dist_nll_longer_than_crop']:.3f} | "
                     f"{r['seconds']:.0f} |")
    atomic.write_text(out.parent / f"{out.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
