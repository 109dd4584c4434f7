"""Protein -> PDB and mmCIF text (numpy only; never imports jax).

PDB records follow the wwPDB Atomic Coordinate Entry Format v3.3 fixed columns:
ATOM serial (7-11), atom name (13-16, one-letter elements start in column 14), altLoc
(17), resName (18-20), chainID (22), resSeq (23-26), iCode (27), x/y/z (31-54, 8.3f),
occupancy (55-60, 6.2f), tempFactor (61-66, 6.2f), element (77-78); then TER and END.
Atoms written: N, CA, C, O and CB where ``atom_mask`` is set, never a CB for glycine
(a virtual CB exists for every residue in foldnet, but a Gly CB would be a chemical lie
in a file). mmCIF goes through Biopython's ``MMCIFIO``.
"""

from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np

from foldnet.common import atomic
from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein


def _atom_rows(protein: Protein):
    """Yield (residue k, atom slot a, resname, atom name, element) for every atom to write."""
    for k in range(len(protein)):
        resname = rc.RESTYPE_1TO3[rc.RESTYPES_WITH_X[int(protein.aatype[k])]]
        for a, name in enumerate(rc.ATOM_TYPES):
            if protein.atom_mask[k, a] <= 0:
                continue
            if name == "CB" and resname == "GLY":
                continue
            yield k, a, resname, name, name[0]


def _check(protein: Protein) -> None:
    if len(protein.chain_id) > 1:
        raise ValueError(f"to_pdb: chain id {protein.chain_id!r} of {protein.id!r} is longer than 1 character (use mmCIF)")
    ri = np.asarray(protein.residue_index)
    if len(ri) and (ri.min() < -999 or ri.max() > 9999):
        raise ValueError(f"to_pdb: residue numbers of {protein.id!r} do not fit in 4 columns")
    if protein.b_factors is not None:
        b = np.asarray(protein.b_factors, np.float64)
        if len(b) and (not np.all(np.isfinite(b)) or b.min() <= -100.0 or b.max() >= 1000.0):
            raise ValueError(f"to_pdb: B-factors of {protein.id!r} do not fit in 6.2f")
    xyz = protein.atom_positions[protein.atom_mask > 0]
    if xyz.size and (not np.all(np.isfinite(xyz)) or np.abs(xyz).max() >= 9999.0):
        raise ValueError(f"to_pdb: coordinates of {protein.id!r} are not finite or do not fit in 8.3f")


def to_pdb(protein: Protein) -> str:
    """PDB-format text of one chain (ATOM records, TER, END).

    Args:
      protein: the chain; ``b_factors`` (None -> 0) go to the tempFactor column,
        ``insertion_code`` (None -> blank) to iCode, occupancy is 1.00.
    Returns:
      The file text (80-column records, newline-terminated).
    """
    _check(protein)
    chain = protein.chain_id or " "
    bfac = np.zeros(len(protein)) if protein.b_factors is None else np.asarray(protein.b_factors, np.float64)
    icodes = protein.insertion_code
    lines = [f"REMARK   1 foldnet {protein.id}".ljust(80)]
    serial = 0
    last = None
    for k, a, resname, name, element in _atom_rows(protein):
        serial += 1
        x, y, z = (float(v) for v in protein.atom_positions[k, a])
        icode = (str(icodes[k]) if icodes is not None else "")[:1] or " "
        atom_name = f" {name:<3s}" if len(name) < 4 else name
        lines.append(
            f"ATOM  {serial:5d} {atom_name:4s} {resname:3s} {chain:1s}{int(protein.residue_index[k]):4d}{icode:1s}   "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{float(bfac[k]):6.2f}          {element:>2s}  "
        )
        last = (resname, int(protein.residue_index[k]), icode)
    if last is not None:
        serial += 1
        lines.append(f"TER   {serial:5d}      {last[0]:3s} {chain:1s}{last[1]:4d}{last[2]:1s}".ljust(80))
    lines.append("END".ljust(80))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def to_mmcif(protein: Protein, local_metric: Optional[str] = None) -> str:
    """mmCIF text of one chain (``_atom_site`` loop), written by Biopython's ``MMCIFIO``.

    Args:
      protein: the chain (multi-character chain ids are allowed here).
      local_metric: name of the per-residue score in ``b_factors`` (e.g. "pLDDT"); when
        given, the ModelCIF ``ma_qa_metric`` / ``ma_qa_metric_local`` categories carry it too
        (what ModelArchive, PyMOL and ChimeraX read a per-residue confidence from).
    Returns:
      The file text.
    """
    from Bio.PDB import MMCIFIO
    from Bio.PDB.StructureBuilder import StructureBuilder

    sb = StructureBuilder()
    sb.init_structure(protein.id)
    sb.init_model(0)
    sb.init_chain(protein.chain_id or "A")
    bfac = np.zeros(len(protein)) if protein.b_factors is None else np.asarray(protein.b_factors, np.float64)
    current = None
    for k, a, resname, name, element in _atom_rows(protein):
        icode = (str(protein.insertion_code[k]) if protein.insertion_code is not None else "")[:1] or " "
        key = (int(protein.residue_index[k]), icode)
        if key != current:
            sb.init_seg("    ")
            sb.init_residue(resname, " ", key[0], icode)
            current = key
        coord = np.asarray(protein.atom_positions[k, a], np.float64)
        sb.init_atom(name, coord, float(bfac[k]), 1.0, " ", f" {name:<3s}", element=element)
    out = io.StringIO()
    writer = MMCIFIO()
    writer.set_structure(sb.get_structure())
    writer.save(out)
    text = out.getvalue()
    if local_metric is not None:
        text = text.rstrip("\n") + "\n" + _qa_metric_loops(protein, bfac, local_metric)
    return text


def _qa_metric_loops(protein: Protein, scores: np.ndarray, name: str) -> str:
    """ModelCIF ``ma_qa_metric`` (one local metric) and ``ma_qa_metric_local`` (one row a residue)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"local_metric name must be a plain word, got {name!r}")
    chain = protein.chain_id or "A"
    lines = ["#", "loop_", "_ma_qa_metric.id", "_ma_qa_metric.name", "_ma_qa_metric.type",
             "_ma_qa_metric.mode", "_ma_qa_metric.software_group_id", f"1 {name} pLDDT local .", "#",
             "loop_"] + [f"_ma_qa_metric_local.{k}" for k in (
                 "ordinal_id", "model_id", "label_asym_id", "label_seq_id", "label_comp_id", "metric_id",
                 "metric_value")]
    for k in range(len(protein)):
        resname = rc.RESTYPE_1TO3[rc.RESTYPES_WITH_X[int(protein.aatype[k])]]
        lines.append(f"{k + 1} 1 {chain} {int(protein.residue_index[k])} {resname} 1 {float(scores[k]):.2f}")
    return "\n".join(lines + ["#"]) + "\n"


def write_pdb(protein: Protein, path: str | os.PathLike) -> None:
    """Write ``to_pdb(protein)`` atomically (temp file + rename)."""
    atomic.write_text(path, to_pdb(protein))


def write_mmcif(protein: Protein, path: str | os.PathLike, local_metric: Optional[str] = None) -> None:
    """Write ``to_mmcif(protein, local_metric)`` atomically (temp file + rename)."""
    atomic.write_text(path, to_mmcif(protein, local_metric))
