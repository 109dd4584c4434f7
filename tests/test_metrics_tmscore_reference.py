"""RMSD, TM-score, GDT_TS and GDT_HA agree with the TMscore program on real structures.

The reference is Zhang & Skolnick's ``TMscore`` (Debian package ``tm-align``,
installed by ``.ci/run``). TMscore pairs residues by residue number, so
every pair here is written as two CA-only PDB files whose numbers encode a
known correspondence:

* the 25 HOMSTRAD families of the data bundle: two homologues aligned by the
  bundle's HOMSTRAD reference alignment (model = first chain, only its aligned
  residues, renumbered to the positions of the second chain = native);
* a HOMSTRAD chain against itself plus Gaussian noise (sigma 1, 2, 4, 4, 8 A);
* a chain against itself with the C-terminal half rotated 70 degrees about a hinge;
* two experimental conformations of the same 40 residues (PDB 1c55 / 1c56,
  from the CATH test files).

Coordinates are rounded to the 3 decimals written to PDB before scoring, so
both programs see identical numbers.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from foldnet.metrics import structure_scores

TOL = 5e-4  # the README claim; measured worst over the 32 pairs: RMSD 4.7e-4, TM-score and GDT 5e-5
METRICS = ("rmsd", "tm_score", "gdt_ts", "gdt_ha")


def _tmscore_program() -> str:
    exe = shutil.which("TMscore")
    # skips locally, fails in CI (CI=true), where .ci/run installs it
    require("the TMscore program", exe is not None,
            "install the Debian package tm-align (apt-get install tm-align)")
    return exe


def _read_ca(path: Path) -> np.ndarray:
    """CA coordinates [L, 3] of the first chain of the first model (standard residues)."""
    from Bio.PDB import PDBParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = PDBParser(QUIET=True).get_structure(path.stem, str(path))
    chain = next(structure[0].get_chains())
    xyz = [res["CA"].coord for res in chain if res.id[0] == " " and "CA" in res]
    if not xyz:
        raise AssertionError(f"{path}: no CA atoms")
    return np.round(np.asarray(xyz, np.float64), 3)


def _write_ca_pdb(path: Path, xyz: np.ndarray, numbers: np.ndarray) -> None:
    with open(path, "w") as fh:
        for serial, (p, num) in enumerate(zip(xyz, numbers), start=1):
            fh.write(
                f"ATOM  {serial:5d}  CA  ALA A{int(num):4d}    "
                f"{p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}  1.00  0.00           C\n"
            )
        fh.write("TER\nEND\n")


def _run_tmscore(exe: str, model_pdb: Path, native_pdb: Path) -> dict[str, float]:
    out = subprocess.run([exe, str(model_pdb), str(native_pdb)], capture_output=True, text=True, timeout=60)
    ref: dict[str, float] = {}
    for line in out.stdout.splitlines():
        if line.startswith("RMSD of  the common residues="):
            ref["rmsd"] = float(line.split("=")[1])
        elif line.startswith("TM-score    ="):
            ref["tm_score"] = float(line.split()[2])
        elif line.startswith("GDT-TS-score="):
            ref["gdt_ts"] = float(line.split()[1])
        elif line.startswith("GDT-HA-score="):
            ref["gdt_ha"] = float(line.split()[1])
        elif line.startswith("Number of residues in common="):
            ref["n_common"] = int(line.split("=")[1])
    if set(METRICS) - set(ref):
        raise AssertionError(f"could not parse TMscore output:\n{out.stdout}\n{out.stderr}")
    return ref


def _rotate_about_axis(points: np.ndarray, origin: np.ndarray, axis: np.ndarray, angle_deg: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx
    return (points - origin) @ rot.T + origin


def _homstrad_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, model [Ln,3], native [Ln,3], mask [Ln]) from the HOMSTRAD reference alignments."""
    base = root / "scop_domains_foldseek" / "homstrad_subset"
    pairs = []
    with open(base / "reference_alignments.csv") as fh:
        for family, a, b, aln_a, aln_b in csv.reader(fh, delimiter="\t"):
            xa = _read_ca(base / family / f"{a}.pdb")
            xb = _read_ca(base / family / f"{b}.pdb")
            # HOMSTRAD marks chain breaks with "/": a column, not a residue.
            res_a = [c not in "-/" for c in aln_a]
            res_b = [c not in "-/" for c in aln_b]
            assert sum(res_a) == len(xa), f"{family}/{a}: alignment and structure lengths differ"
            assert sum(res_b) == len(xb), f"{family}/{b}: alignment and structure lengths differ"
            model = np.zeros_like(xb)
            mask = np.zeros(len(xb), bool)
            ia = ib = 0
            for ra, rb in zip(res_a, res_b):
                if ra and rb:
                    model[ib] = xa[ia]
                    mask[ib] = True
                ia += ra
                ib += rb
            pairs.append((f"homstrad-{family}-{a}-on-{b}", model, xb, mask))
    return pairs


def _constructed_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    base = root / "scop_domains_foldseek" / "homstrad_subset"
    rng = np.random.default_rng(20040702)
    pairs = []
    noisy = (
        ("igV", "1qfpa", 1.0),
        ("igV", "1qfpa", 2.0),
        ("rrm", "1jmta", 4.0),
        ("fer2", "1awd", 4.0),
        ("tRNA_bind", "1b7yb", 8.0),
    )
    for family, chain, sigma in noisy:
        native = _read_ca(base / family / f"{chain}.pdb")
        model = np.round(native + rng.normal(0.0, sigma, native.shape), 3)
        pairs.append((f"noise{sigma:g}-{chain}", model, native, np.ones(len(native), bool)))
    native = _read_ca(base / "MutS_N" / "1ewqa.pdb")
    hinge = len(native) // 2
    model = native.copy()
    axis = native[hinge + 1] - native[hinge - 1]
    model[hinge:] = _rotate_about_axis(native[hinge:], native[hinge], axis + np.array([0.0, 0.0, 5.0]), 70.0)
    pairs.append(("hinge70-1ewqa", np.round(model, 3), native, np.ones(len(native), bool)))
    cath = root / "cath_tools_testdata"
    c55, c56 = _read_ca(cath / "1c55A"), _read_ca(cath / "1c56A")
    pairs.append(("conformers-1c55A-on-1c56A", c55, c56, np.ones(len(c56), bool)))
    return pairs


@pytest.fixture(scope="module")
def reference_results(data_root, tmp_path_factory):
    """Ours and TMscore's scores for every pair: {name: (ours, reference)}."""
    exe = _tmscore_program()
    work = tmp_path_factory.mktemp("tmscore")
    results = {}
    for name, model, native, mask in _homstrad_pairs(data_root) + _constructed_pairs(data_root):
        numbers = np.arange(1, len(native) + 1)
        _write_ca_pdb(work / f"{name}.native.pdb", native, numbers)
        _write_ca_pdb(work / f"{name}.model.pdb", model[mask], numbers[mask])
        ref = _run_tmscore(exe, work / f"{name}.model.pdb", work / f"{name}.native.pdb")
        assert ref["n_common"] == mask.sum()
        s = structure_scores(model, native, mask, native_length=len(native))
        ours = {m: getattr(s, m) for m in METRICS}
        results[name] = (ours, ref)
    return results


def test_pairs_cover_the_score_range(reference_results):
    tms = np.array([ref["tm_score"] for _, ref in reference_results.values()])
    assert len(tms) >= 5
    assert tms.min() < 0.25 and tms.max() > 0.9, tms


@pytest.mark.parametrize("metric", METRICS)
def test_agrees_with_tmscore_program(reference_results, metric):
    deltas = {name: abs(ours[metric] - ref[metric]) for name, (ours, ref) in reference_results.items()}
    worst = max(deltas, key=deltas.get)
    print(f"{metric}: max |ours - TMscore| = {deltas[worst]:.5f} ({worst}) over {len(deltas)} pairs")
    assert deltas[worst] <= TOL, (worst, reference_results[worst])


def test_short_chain_d0_and_search_on_conformers(reference_results):
    # 40 residues: d0 = 1.24 * 25^(1/3) - 1.8 = 1.826 A, the regime where the
    # 4.5 A floor on the search cut-off (not d0) drives the iterations.
    ours, ref = reference_results["conformers-1c55A-on-1c56A"]
    assert abs(ours["tm_score"] - ref["tm_score"]) <= 0.002
    assert abs(ours["gdt_ha"] - ref["gdt_ha"]) <= 0.002
