"""Package a training run's checkpoint as a shipped pretrained model folder.

Writes ``foldnet/pretrained/<name>/`` (params.msgpack, config.yaml, prior.npz,
confidence.json, manifest.json with the sha256 of the weights and of confidence.json and the
validation metrics at the chosen step) atomically: the folder is built beside the target and
renamed into place.

confidence.json is fitted here, on the chosen step, by ``foldnet.inference.calibrate``:
``--confidence-domains`` validation domains folded with fold=fast (about 5 minutes for 120 on
2 CPU cores; resumable in ``--confidence-work-dir``). ``--confidence-domains 0`` skips it
(the model then loads with the uncalibrated sharpness and a warning).

Usage:
  python scripts/export_pretrained.py RUN_DIR [--name foldnet-base-cpu] [--step N]
      [--recipe configs/experiment/pretrained_base_cpu.yaml] [--note TEXT]
      [--confidence-domains 120] [--confidence-work-dir calibration_fit]

Without ``--step`` the best checkpoint by the run's validation metric is taken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.inference.checkpoint_io import resolve_checkpoint  # noqa: E402
from foldnet.inference.pretrained import DEFAULT_MODEL, PRETRAINED_DIR, export_pretrained  # noqa: E402
from foldnet.structure.confidence import CALIBRATION_FILE  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="training run directory (holds checkpoints/ and config.yaml)")
    ap.add_argument("--name", default=DEFAULT_MODEL)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--out-root", default=str(PRETRAINED_DIR))
    ap.add_argument("--recipe", default=None, help="experiment config that reproduces the run")
    ap.add_argument("--note", action="append", default=[], help="KEY=VALUE manifest entries (repeatable)")
    ap.add_argument("--confidence-domains", type=int, default=120,
                    help="validation domains the confidence calibration is fitted on (0 = no calibration)")
    ap.add_argument("--confidence-work-dir", default="calibration_fit",
                    help="evaluation folder of the calibration fit (an interrupted fit resumes from it)")
    args = ap.parse_args(argv)
    extra_files = {}
    if args.confidence_domains > 0:
        import logging

        from foldnet.inference.calibrate import fit_calibration

        logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] %(message)s")
        _, chosen, _ = resolve_checkpoint(args.run, args.step)
        calib = fit_calibration(args.run, chosen, args.confidence_domains, args.confidence_work_dir)
        extra_files[CALIBRATION_FILE] = calib.to_json().encode()
    extra = {}
    if args.recipe:
        extra["recipe"] = args.recipe
    for item in args.note:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--note expects KEY=VALUE, got {item!r}")
        extra[key] = value
    out = export_pretrained(args.run, args.name, args.step, args.out_root, extra, extra_files)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
