"""Validation metrics of a run's kept checkpoints and of their average.

Scores, on the run's own validation chains and settings (its saved config), the
parameters of every kept step (the EMA when the run kept one) and the leaf-wise
mean of the last ``--last`` of them (``foldnet.inference.checkpoint_io.average_params``),
so a checkpoint average is compared with the final checkpoint on the same chains.

Usage:
  python scripts/score_checkpoints.py RUN_DIR [--last 5] [--out RUN_DIR/checkpoint_average.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from foldnet.common import atomic  # noqa: E402
from foldnet.data.cache import H5Dataset  # noqa: E402
from foldnet.inference.checkpoint_io import average_params, load_run  # noqa: E402
from foldnet.model import build_model  # noqa: E402
from foldnet.train.config import register_configs, to_train_config  # noqa: E402
from foldnet.train.loop import split_paths  # noqa: E402
from foldnet.train.step import make_eval_step  # noqa: E402
from foldnet.train.validate import validation_batches, validation_metrics  # noqa: E402

KEYS = ("dist_nll", "lr_top_l5_precision", "phi_mae_deg", "psi_mae_deg")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--last", type=int, default=5, help="average the last K kept steps")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    register_configs()
    cfg = to_train_config(OmegaConf.load(args.run / "config.yaml"))
    root = args.run / "checkpoints"
    steps = sorted(int(d.name) for d in root.iterdir() if d.name.isdigit())
    if len(steps) < 2:
        raise SystemExit(f"{root}: {len(steps)} kept step(s); an average needs at least 2")
    last = steps[-args.last:]
    model = build_model(cfg.model)
    predict = jax.jit(make_eval_step(model))
    val = H5Dataset(split_paths(cfg)[1])

    def score(params) -> dict:
        m = validation_metrics(lambda b: predict(params, b), validation_batches(val, cfg.val),
                               min_separation=cfg.model.distogram_min_separation)
        return {k: float(m[k]) for k in KEYS}

    rows = [{"params": f"step {s}", **score(load_run(args.run, step=s)[1])} for s in steps]
    rows.append({"params": f"mean of steps {last[0]}-{last[-1]} ({len(last)})", **score(average_params(root, last))})
    out = {"run": str(args.run), "num_chains": cfg.val.num_chains, "rows": rows}
    atomic.write_text(args.out or args.run / "checkpoint_average.json", json.dumps(out, indent=2) + "\n")
    print("| parameters | val NLL | top-L/5 LR | phi / psi MAE |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['params']} | {r['dist_nll']:.4f} | {r['lr_top_l5_precision']:.3f} | "
              f"{r['phi_mae_deg']:.1f} / {r['psi_mae_deg']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
