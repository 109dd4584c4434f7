"""Parse every PDB file of the data bundle with foldnet.data.structure_parser and report failures.

Checks, per ProMod3 file (promod3_structure_db/pdb_single_domain/*.pdb.gz): it
parses, its sequence equals the chain's sequence in chains.tsv.gz, its residue
numbers are consecutive, N/CA/C/O are all present, and the REMARK 901 CATH
label equals the chain's superfamily. The small sets (cath_tools_testdata,
SCOPe pdb-style, HOMSTRAD, pdnet_related) are only parsed.

Usage:
  python scripts/check_parse_all.py [--data-root DIR] [--limit N]

Exit status 1 if any file fails; failures are printed as ``path<TAB>reason``.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.common.paths import data_root as resolve_data_root  # noqa: E402
from foldnet.data.errors import ParseError  # noqa: E402
from foldnet.data.structure_parser import read_structure  # noqa: E402


def _chains_table(db: Path) -> dict[str, dict[str, str]]:
    with gzip.open(db / "chains.tsv.gz", "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        return {r[0]: dict(zip(header, r)) for r in (line.rstrip("\n").split("\t") for line in fh)}


def _check_promod3(path: Path, table: dict[str, dict[str, str]]) -> str | None:
    p = read_structure(path)
    row = table.get(p.id)
    if row is None:
        return "not in chains.tsv.gz"
    if p.sequence != row["sequence"]:
        return f"sequence differs from chains.tsv.gz (len {len(p)} vs {row['length']})"
    if len(p) > 1 and not np.all(np.diff(p.residue_index) == 1):
        return "residue numbers not consecutive"
    if not p.atom_mask[:, :4].all():
        return f"{int((p.atom_mask[:, :4] == 0).sum())} missing backbone atoms"
    if p.cath != (row["cath_superfamilies"] or None):
        return f"CATH label {p.cath!r} != {row['cath_superfamilies']!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None, help="data bundle (default: $FOLDNET_DATA or ./data)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N ProMod3 files")
    args = ap.parse_args(argv)
    root = resolve_data_root(args.data_root)
    db = root / "promod3_structure_db"
    table = _chains_table(db)

    small = sorted((root / "cath_tools_testdata").iterdir())
    small += sorted((root / "scop_domains_foldseek/pdbstyle").glob("*.ent.gz"))
    small += sorted((root / "scop_domains_foldseek/homstrad_subset").glob("*/*.pdb"))
    small += sorted((root / "pdnet_related").glob("**/*.pdb"))
    promod3 = sorted((db / "pdb_single_domain").glob("*.pdb.gz"))[: args.limit]

    failures: list[tuple[Path, str]] = []
    t0 = time.perf_counter()
    for f in small:
        try:
            read_structure(f)
        except ParseError as e:
            failures.append((f, str(e)))
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_res = 0
    for k, f in enumerate(promod3, 1):
        try:
            reason = _check_promod3(f, table)
        except ParseError as e:
            reason = str(e)
        if reason:
            failures.append((f, reason))
        if k % 1000 == 0:
            print(f"  {k}/{len(promod3)} ProMod3 files, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    t_promod3 = time.perf_counter() - t0

    for f, reason in failures:
        print(f"{f}\t{reason}")
    print(
        f"small sets: {len(small)} files in {t_small:.1f} s; "
        f"ProMod3: {len(promod3)} files in {t_promod3:.1f} s "
        f"({1000 * t_promod3 / max(len(promod3), 1):.1f} ms/file); failures: {len(failures)}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
