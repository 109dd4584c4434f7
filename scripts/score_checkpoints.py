"""Validation metrics of a run's kept checkpoints and of their average.

Scores, on the run's own validation chains and settings (its saved config), the
parameters of every kept step (the EMA when the run kept one) and the leaf-wise
mean of the last ``--last`` of them (``foldnet.inference.checkpoint_io.average_params``),
so a checkpoint average is compared with the final checkpoint on the same chains.
``--single`` also scores every row with the profiles withheld (the FASTA-only mode; columns
``single_*``), e.g. to follow that mode along a run that did not log "val_single" lines.
``--soup SOURCE`` adds two rows: another network of the same architecture (anything
``init_from`` takes: a run, a checkpoint, ``pretrained:NAME``), and the mean of its parameters
and the run's last kept step's -- a "model soup" of two relatives, e.g. a warm-started run and
the network it started from. ``--ensemble SOURCE`` adds the mean of the two networks'
predicted distributions (distogram, phi, psi; any two architectures): a two-model ensemble.

Usage:
  python scripts/score_checkpoints.py RUN_DIR [--last 5] [--steps S ...] [--single] [--soup SOURCE]
      [--ensemble SOURCE] [--out RUN_DIR/checkpoint_average.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from foldnet.common import atomic  # noqa: E402
from foldnet.data.cache import H5Dataset  # noqa: E402
from foldnet.inference.checkpoint_io import average_params, load_run, mean_params  # noqa: E402
from foldnet.model import build_model  # noqa: E402
from foldnet.train.config import register_configs, to_train_config  # noqa: E402
from foldnet.train.loop import split_paths  # noqa: E402
from foldnet.train.step import make_eval_step  # noqa: E402
from foldnet.train.validate import validation_batches, validation_metrics, withhold_profile  # noqa: E402

KEYS = ("dist_nll", "lr_top_l5_precision", "phi_mae_deg", "psi_mae_deg")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--last", type=int, default=5, help="average the last K kept steps (1: no average row)")
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="score only these kept steps (default: all; the average is over the last K kept)")
    ap.add_argument("--single", action="store_true", help="also score with the profiles withheld")
    ap.add_argument("--soup", default=None, help="also score this network and its mean with the last step")
    ap.add_argument("--ensemble", default=None,
                    help="also score the mean of this network's and the last step's predicted distributions")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    register_configs()
    cfg = to_train_config(OmegaConf.load(args.run / "config.yaml"))
    root = args.run / "checkpoints"
    kept = sorted(int(d.name) for d in root.iterdir() if d.name.isdigit())
    if not kept:
        raise SystemExit(f"{root}: no kept step")
    missing = sorted(set(args.steps or ()) - set(kept))
    if missing:
        raise SystemExit(f"{root}: steps {missing} not kept (kept: {kept})")
    steps = sorted(args.steps) if args.steps else kept
    last = kept[-args.last:]
    model = build_model(cfg.model)
    predict = jax.jit(make_eval_step(model))
    val = H5Dataset(split_paths(cfg)[1])

    def score_outputs(outputs) -> dict:
        """The metrics of ``outputs(batch) -> predictions``, in each input mode."""
        modes = {"": lambda b: b}
        if args.single:
            modes["single_"] = withhold_profile
        row = {}
        for prefix, inputs in modes.items():
            m = validation_metrics(outputs, inputs(validation_batches(val, cfg.val)),
                                   min_separation=cfg.model.distogram_min_separation)
            row.update({prefix + k: float(m[k]) for k in KEYS})
        return row

    def score(params) -> dict:
        return score_outputs(lambda b: predict(params, b))

    rows = [{"params": f"step {s}", **score(load_run(args.run, step=s)[1])} for s in steps]
    if len(last) >= 2:
        rows.append({"params": f"mean of steps {last[0]}-{last[-1]} ({len(last)})",
                     **score(average_params(root, last))})
    if args.soup or args.ensemble:
        from foldnet.inference.pretrained import load_for_inference

        final = load_run(args.run, step=kept[-1])[1]
    if args.soup:
        other = load_for_inference(args.soup)[1]
        try:
            soup = mean_params([(f"step {kept[-1]}", final), (args.soup, other)], str(args.run))
        except ValueError as e:
            raise SystemExit(f"{args.soup}: not the architecture of {args.run} ({e})") from None
        rows.append({"params": args.soup, **score(other)})
        rows.append({"params": f"mean of step {kept[-1]} and {args.soup}", **score(soup)})
    if args.ensemble:
        other_cfg, other = load_for_inference(args.ensemble)
        predict_other = jax.jit(make_eval_step(build_model(other_cfg)))

        def ensemble(b):
            # the angles are then the circular means of the averaged distributions (score_batch)
            a, o = predict(final, b), predict_other(other, b)
            return {k: (np.asarray(a[k]) + np.asarray(o[k])) / 2 for k in ("dist_probs", "phi_probs", "psi_probs")}

        rows.append({"params": f"ensemble of step {kept[-1]} and {args.ensemble}", **score_outputs(ensemble)})
    out = {"run": str(args.run), "num_chains": cfg.val.num_chains, "rows": rows}
    atomic.write_text(args.out or args.run / "checkpoint_average.json", json.dumps(out, indent=2) + "\n")
    prefixes = ("", "single_") if args.single else ("",)
    head = " | ".join(f"{p}val NLL | {p}top-L/5 LR | {p}phi / psi MAE" for p in prefixes)
    print(f"| parameters | {head} |\n|---|" + "---:|" * (3 * len(prefixes)))
    for r in rows:
        cells = " | ".join(f"{r[p + 'dist_nll']:.4f} | {r[p + 'lr_top_l5_precision']:.3f} | "
                           f"{r[p + 'phi_mae_deg']:.1f} / {r[p + 'psi_mae_deg']:.1f}" for p in prefixes)
        print(f"| {r['params']} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
