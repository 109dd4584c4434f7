"""Package a training run's checkpoint as a shipped pretrained model folder.

Writes ``foldnet/pretrained/<name>/`` (params.msgpack, config.yaml, prior.npz,
manifest.json with the weights' sha256 and the validation metrics at the chosen step)
atomically: the folder is built beside the target and renamed into place.

Usage:
  python scripts/export_pretrained.py RUN_DIR [--name foldnet-base-cpu] [--step N]
      [--recipe configs/experiment/pretrained_base_cpu.yaml] [--note TEXT]

Without ``--step`` the best checkpoint by the run's validation metric is taken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.inference.pretrained import DEFAULT_MODEL, PRETRAINED_DIR, export_pretrained  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="training run directory (holds checkpoints/ and config.yaml)")
    ap.add_argument("--name", default=DEFAULT_MODEL)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--out-root", default=str(PRETRAINED_DIR))
    ap.add_argument("--recipe", default=None, help="experiment config that reproduces the run")
    ap.add_argument("--note", action="append", default=[], help="KEY=VALUE manifest entries (repeatable)")
    args = ap.parse_args(argv)
    extra = {}
    if args.recipe:
        extra["recipe"] = args.recipe
    for item in args.note:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--note expects KEY=VALUE, got {item!r}")
        extra[key] = value
    out = export_pretrained(args.run, args.name, args.step, args.out_root, extra)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
