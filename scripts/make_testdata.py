"""Cut the small real fixtures of tests/testdata/ from the data bundle (reproducible).

tests/testdata/ mirrors the bundle's layout for the few files the unit tests read, so a
test can take either root: the first records of each ProteinNet split (in order, so a test
that reads "the first N chains" sees the same chains as on the full bundle), the original
ProteinNet sample record, CATH domain PDB files (1c0pA01 is used by the featurizer test),
one promod3 backbone PDB and a two-record FASTA. Well under 1 MB in total.

Usage: python scripts/make_testdata.py [--data-root DIR] [--out tests/testdata]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from foldnet.common import paths  # noqa: E402

RECORDS = {"validation.gz": 12, "testing.gz": 12, "training.gz": 24}
COPIES = ["proteinnet_sample/text_sample", "cath_tools_testdata/1c0pA01", "cath_tools_testdata/2j7jA03",
          "promod3_structure_db/pdb_single_domain/16vpA.pdb.gz"]


def first_records(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` ProteinNet records of ``src`` (blank-line separated), gzipped, byte for byte."""
    out, k = [], 0
    with gzip.open(src, "rt") as fh:
        for line in fh:
            out.append(line)
            if line.strip() == "" and len(out) > 1:
                k += 1
                if k == n:
                    break
    with gzip.GzipFile(dst, "wb", mtime=0) as fh:
        fh.write("".join(out).encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(REPO / "tests" / "testdata"))
    args = ap.parse_args()
    root, out = paths.data_root(args.data_root), Path(args.out)
    (out / "proteinnet").mkdir(parents=True, exist_ok=True)
    for name, n in RECORDS.items():
        first_records(root / "proteinnet" / name, out / "proteinnet" / name, n)
    for rel in COPIES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, out / rel)
    (out / "two.fasta").write_text(">one\nMKTAYIAKQRQISFVKSHFSRQ\n>two\nGSHMLEDPVAGKTVEVTLNGQT\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
