"""Record mkdssp's 8-state assignment of a few real chains as tests/testdata/dssp/ (reproducible).

tests/test_dssp.py checks foldnet.data.dssp residue by residue against these records, so the
tests never need mkdssp itself. Needs ``mkdssp`` on PATH (Debian/Ubuntu: ``apt-get install
dssp``; recorded with 4.2.2) and the data bundle.

What mkdssp is given: the chain's ATOM/HETATM records of the first model (waters dropped),
one location per atom -- the highest occupancy, ties to the first, which is what
foldnet.data.structure_parser keeps (mkdssp itself lets the last altloc win) -- behind a
HEADER line (mkdssp 4.x needs one to read PDB format). Command: ``mkdssp --output-format dssp
in.pdb out.dssp``. Recorded per residue: author number + insertion code and the DSSP column
(' ' -> '-'; 'P', 4.x's polyproline II, is written on coil residues only -> '-').

Usage: python scripts/make_dssp_reference.py [--data-root DIR] [--out tests/testdata/dssp/mkdssp_reference.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from foldnet.common import atomic, paths  # noqa: E402
from foldnet.data.fasta import open_text  # noqa: E402

# (bundle path, chain): alpha/beta with breaks, altlocs, pi helices, beta sandwiches, a backbone-only file.
CHAINS = [
    ("cath_tools_testdata/1c0pA01", "A"),
    ("cath_tools_testdata/1hdoA00", "A"),
    ("scop_domains_foldseek/homstrad_subset/dNK/1jaga.pdb", "A"),
    ("scop_domains_foldseek/homstrad_subset/eIF-5a/1bkb.pdb", "B"),
    ("scop_domains_foldseek/homstrad_subset/MHC_II_beta_NC/1fngb.pdb", "A"),
    ("scop_domains_foldseek/homstrad_subset/PEP-utilizers/1zyma.pdb", "C"),
    ("scop_domains_foldseek/homstrad_subset/hormone/1axia.pdb", "A"),
    ("promod3_structure_db/pdb_single_domain/1k5cA.pdb.gz", "A"),
]
HEADER = "HEADER    PROTEIN" + " " * 33 + "01-JAN-00   XXXX\n"


def chain_records(path: Path, chain: str) -> list[str]:
    """The chain's atom records of model 1, one altloc per atom (highest occupancy, first on ties)."""
    best: dict[tuple, tuple[float, int, str]] = {}
    with open_text(path) as fh:  # plain or gzip-compressed, detected by content
        lines = fh.read().splitlines()
    for k, line in enumerate(lines):
        if line.startswith("ENDMDL"):
            break
        if not line.startswith(("ATOM", "HETATM")) or line[21] != chain or line[17:20] == "HOH":
            continue
        key = (line[22:27], line[12:16])  # residue number + icode, atom name
        occ = float(line[54:60] or 0.0)
        if key not in best or occ > best[key][0]:
            best[key] = (occ, k, line[:16] + " " + line[17:])
    return [rec for _, _, rec in sorted(best.values(), key=lambda t: t[1])]


def mkdssp(records: list[str]) -> tuple[str, str]:
    """(residue ids "12 13 13A ...", 8-state string) of mkdssp's classic output."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pdb", Path(tmp) / "out.dssp"
        src.write_text(HEADER + "\n".join(records) + "\nEND\n")
        subprocess.run(["mkdssp", "--output-format", "dssp", str(src), str(dst)], check=True, capture_output=True)
        out = dst.read_text().splitlines()
    start = next(k for k, line in enumerate(out) if line.startswith("  #  RESIDUE")) + 1
    ids, ss = [], []
    for line in out[start:]:
        if line[13] == "!":  # chain-break marker line
            continue
        ids.append(line[5:11].strip())
        ss.append("-" if line[16] in " P" else line[16])
    return " ".join(ids), "".join(ss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "testdata" / "dssp" / "mkdssp_reference.json")
    args = ap.parse_args()
    root = args.data_root or paths.data_root()
    version = subprocess.run(["mkdssp", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[0]
    chains = []
    for rel, chain in CHAINS:
        ids, ss = mkdssp(chain_records(root / rel, chain))
        chains.append({"file": rel, "chain": chain, "residues": ids, "ss8": ss})
        print(f"{rel} {chain}: {len(ss)} residues")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"reference": version, "command": "mkdssp --output-format dssp in.pdb out.dssp",
               "input": "chain records of model 1, one altloc per atom (highest occupancy), HEADER line added",
               "made_by": "scripts/make_dssp_reference.py", "chains": chains}
    atomic.write_text(args.out, json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
