"""Fit the per-residue confidence calibration of a checkpoint and write ``confidence.json``.

Usage:
  python scripts/fit_confidence.py CHECKPOINT [--step N] [--domains 120] [--out FILE]
      [--work-dir calibration_fit]

CHECKPOINT is a training run or ``pretrained:<name>``. Without ``--out`` the file goes into
the checkpoint's folder (the run directory, or the shipped model folder, whose manifest then
lists its sha256). ``scripts/export_pretrained.py`` runs the same fit while packaging.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.common import atomic  # noqa: E402
from foldnet.inference.calibrate import fit_calibration  # noqa: E402
from foldnet.inference.pretrained import checkpoint_home, shipped_name  # noqa: E402
from foldnet.structure.confidence import CALIBRATION_FILE  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--domains", type=int, default=120, help="validation domains to fit on")
    ap.add_argument("--max-length", type=int, default=300)
    ap.add_argument("--out", default=None)
    ap.add_argument("--work-dir", default="calibration_fit", help="evaluation folder (resumable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] %(message)s")
    calib = fit_calibration(args.checkpoint, args.step, args.domains, args.work_dir, max_length=args.max_length)
    text = calib.to_json()
    home = checkpoint_home(args.checkpoint, args.step)[0]
    out = Path(args.out) if args.out else home / CALIBRATION_FILE
    atomic.write_text(out, text)
    if args.out is None and shipped_name(args.checkpoint) is not None:
        manifest_path = home / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest.setdefault("files", {})[CALIBRATION_FILE] = hashlib.sha256(text.encode()).hexdigest()
        atomic.write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    print(f"{out}: residue r={calib.info['fit_residue_pearson']} ECE={calib.info['fit_ece']} "
          f"on {calib.info['num_residues']} residues of {calib.info['num_domains']} validation domains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
