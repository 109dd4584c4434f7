"""PDB and mmCIF coordinate files -> Protein (backbone N, CA, C, O and CB).

Parsing is Biopython's ``PDBParser`` / ``MMCIFParser`` (Hamelryck & Manderick
2003, Bioinformatics 19:2308) in QUIET, permissive mode; this module only
decides which atoms and residues become the Protein. Policies:

* Format: mmCIF when the first line that is neither blank nor a ``#`` comment
  starts with ``data_``, otherwise PDB -- decided by content, so extension-less
  CATH domain files and ``.ent.gz`` files work; gzip is detected by magic bytes.
* Model: index ``model`` (0 = the first MODEL, or the only one).
* Chain: ``chain=None`` picks the first chain with at least one amino-acid
  residue; a blank chain ID is ``""`` (``" "`` is accepted as an alias; mmCIF's
  unassigned ``.`` / ``?`` read as blank too).
* Residues: a residue is kept when it has a CA atom. ATOM residues with an
  unknown name become X (aatype 20). HETATM residues are kept only when their
  name is a standard or known modified amino acid (``rc.MODIFIED_RESIDUES``:
  MSE->MET, SEP->SER, ...) and they carry N, CA and C; waters and all other
  HETATM groups (ligands, ions, unknown het groups) are dropped.
* Atoms: N, CA, C, O, CB by name; absent atoms get mask 0 and zero
  coordinates. CB is never read for glycine. Extra atoms (side chains,
  hydrogens, OXT) are ignored.
* Altlocs: per atom, the location with the highest occupancy (ties: the first
  in the file). Point mutations (one residue number, two residue names) keep
  the residue whose CA has the highest occupancy.
* Numbering: ``residue_index`` = author residue number, ``insertion_code`` = the
  insertion code ("" where none), order = file order.
* CATH label: ``REMARK 901 CATH <domain> <C.A.T.H> ...`` (ProMod3 bundle files)
  sets ``Protein.cath`` from the first such line.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.PDBExceptions import PDBConstructionWarning

from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein, mask_unobserved
from foldnet.data.errors import ParseError
from foldnet.data.fasta import open_text

PathLike = Union[str, os.PathLike]

_SUFFIXES = (".gz", ".pdb", ".ent", ".cif", ".mmcif", ".pdb1")
_CATH_REMARK = re.compile(r"^REMARK 901 CATH\s+(\S+)\s+(\d+\.\d+\.\d+\.\d+)")
_KNOWN_AMINO_ACIDS = frozenset(rc.MODIFIED_RESIDUES) | (frozenset(rc.RESTYPE_3TO1) - {"UNK"})


def default_id(path: PathLike) -> str:
    """File name without compression and coordinate suffixes ("16vpA.pdb.gz" -> "16vpA")."""
    name = Path(path).name
    changed = True
    while changed:
        changed = False
        for suf in _SUFFIXES:
            if name.lower().endswith(suf) and len(name) > len(suf):
                name, changed = name[: -len(suf)], True
    return name


def _read_text(path: PathLike) -> str:
    try:
        with open_text(path, encoding="latin-1") as fh:
            return fh.read()
    except (OSError, EOFError) as e:
        raise ParseError(path, f"cannot read file: {e}") from None


def _is_mmcif(text: str) -> bool:
    for line in io.StringIO(text):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        return s.startswith("data_")
    return False


def _cath_label(text: str) -> Optional[str]:
    for line in io.StringIO(text):
        if not line.startswith("REMARK"):
            if line.startswith(("ATOM", "HETATM", "MODEL")):
                break  # REMARKs precede the coordinates
            continue
        m = _CATH_REMARK.match(line)
        if m:
            return m.group(2)
    return None


def _error_line(text: str, e: BaseException) -> Optional[int]:
    """The line a Biopython error is about: its "at line N", else the first line holding the
    token it quotes (``could not convert string to float: '1.2x'``); None when neither."""
    msg = str(e)
    m = re.search(r"at line (\d+)", msg)
    if m:
        return int(m.group(1))
    m = re.search(r"'([^']{2,})'", msg) or re.search(r"quote open: (.+)$", msg)
    if m:
        token = m.group(1)
        for n, line in enumerate(text.splitlines(), 1):
            if token in line:
                return n
    return None


def _parse(path: PathLike, text: str):
    """Biopython structure of ``text``; ParseError for empty or unparseable input."""
    if not text.strip():
        raise ParseError(path, "empty file")
    mmcif = _is_mmcif(text)
    parser = MMCIFParser(QUIET=True) if mmcif else PDBParser(QUIET=True, PERMISSIVE=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PDBConstructionWarning)
            structure = parser.get_structure(default_id(path), io.StringIO(text))
    except Exception as e:  # Biopython raises ValueError, KeyError, PDBConstructionException...
        kind = "mmCIF" if mmcif else "PDB"
        raise ParseError(path, f"cannot parse as {kind}: {type(e).__name__}: {e}", line=_error_line(text, e)) from None
    models = list(structure)
    if not models or not any(True for _ in structure.get_atoms()):
        raise ParseError(path, "no atoms found (not a PDB/mmCIF coordinate file?)")
    return structure


def _chain_name(chain) -> str:
    """Chain ID with blanks as "": PDB writes " ", mmCIF "." or "?" (unassigned)."""
    cid = chain.id.strip()
    return "" if cid in (".", "?") else cid


def _best_altloc(atom):
    """The location of a (possibly disordered) atom with the highest occupancy."""
    if not atom.is_disordered():
        return atom
    best, best_occ = None, -np.inf
    for a in atom.disordered_get_list():
        occ = a.get_occupancy()
        occ = -1.0 if occ is None else occ
        if occ > best_occ:  # strict: ties keep the first location in the file
            best, best_occ = a, occ
    return best


def _pick_residue(res):
    """For point mutations (DisorderedResidue) the variant whose CA is most occupied."""
    if res.is_disordered() != 2:
        return res
    best, best_occ = None, -np.inf
    for r in res.disordered_get_list():
        ca = r["CA"] if "CA" in r else None
        occ = -1.0
        if ca is not None:
            occ = _best_altloc(ca).get_occupancy() or 0.0
        if occ > best_occ:
            best, best_occ = r, occ
    return best


def _chain_to_protein(chain, pid: str, cath: Optional[str]) -> Optional[Protein]:
    aatype, pos, mask, resnum, icode, bfac = [], [], [], [], [], []
    for res in chain:
        res = _pick_residue(res)
        hetflag, seqnum, ins = res.id
        if hetflag == "W":
            continue
        name = res.get_resname().strip().upper()
        atoms = {}
        for atom in res:
            a = _best_altloc(atom)
            atoms[a.get_name().strip()] = a
        if "CA" not in atoms:
            continue
        if hetflag.strip():
            # HETATM: only amino acids (modified or standard) that sit in the chain.
            if name not in _KNOWN_AMINO_ACIDS or not all(k in atoms for k in ("N", "CA", "C")):
                continue
        letter = rc.three_to_one(name)
        p = np.zeros((rc.NUM_ATOMS, 3), np.float32)
        m = np.zeros((rc.NUM_ATOMS,), np.float32)
        for slot, atom_name in enumerate(rc.ATOM_TYPES):
            if atom_name == "CB" and letter == "G":
                continue
            if atom_name in atoms:
                p[slot] = atoms[atom_name].get_coord()
                m[slot] = 1.0
        aatype.append(rc.UNK_INDEX if letter == "X" else rc.RESTYPE_ORDER[letter])
        pos.append(p)
        mask.append(m)
        resnum.append(seqnum)
        icode.append(ins.strip())
        bfac.append(atoms["CA"].get_bfactor())
    if not aatype:
        return None
    return mask_unobserved(Protein(
        id=pid,
        aatype=np.array(aatype, np.int32),
        atom_positions=np.stack(pos),
        atom_mask=np.stack(mask),
        residue_index=np.array(resnum, np.int32),
        chain_id=_chain_name(chain),
        insertion_code=np.array(icode, dtype="<U1"),
        cath=cath,
        b_factors=np.array(bfac, np.float32),
    ))


def _get_model(path: PathLike, structure, model: int):
    models = list(structure)
    if not -len(models) <= model < len(models):
        raise ParseError(path, f"model index {model} out of range ({len(models)} model(s) in file)")
    return models[model]


def read_chains(path: PathLike, model: int = 0) -> dict[str, Protein]:
    """All protein chains of one model of a PDB/mmCIF file.

    Args:
      path: PDB or mmCIF file, plain or gzip, any extension.
      model: 0-based model index.

    Returns:
      {chain_id: Protein} in file order, for chains with at least one amino-acid
      residue; Protein ids are ``<file stem>_<chain>`` (just the stem for a blank
      chain ID).

    Raises:
      ParseError: empty/unparseable file, bad model index, or no protein chain.
    """
    text = _read_text(path)
    structure = _parse(path, text)
    cath = _cath_label(text)
    stem = default_id(path)
    out: dict[str, Protein] = {}
    for ch in _get_model(path, structure, model):
        cid = _chain_name(ch)
        prot = _chain_to_protein(ch, f"{stem}_{cid}" if cid else stem, cath)
        if prot is not None:
            out[cid] = prot
    if not out:
        raise ParseError(path, f"no amino-acid residues with a CA atom in model {model}")
    return out


def read_structure(
    path: PathLike, chain: Optional[str] = None, model: int = 0, id: Optional[str] = None
) -> Protein:
    """One chain of a PDB/mmCIF file as a Protein (policies in the module docstring).

    Args:
      path: PDB or mmCIF file, plain or gzip, any extension (format by content).
      chain: chain ID; None = the first chain with amino-acid residues; "" or " "
        = the blank chain ID.
      model: 0-based model index (default: the first model).
      id: Protein id; default the file name without suffixes (e.g. "1c0pA01").

    Returns:
      Protein with author numbering, insertion codes, CA B-factors and, for
      ProMod3 bundle files, the CATH label.

    Raises:
      ParseError: empty/unparseable file, bad model index, no protein chain, or a
        requested chain that is absent (the message lists the chains present).
    """
    text = _read_text(path)
    structure = _parse(path, text)
    cath = _cath_label(text)
    pid = default_id(path) if id is None else id
    mdl = _get_model(path, structure, model)
    present = []
    want = None if chain is None else chain.strip()
    for ch in mdl:
        cid = _chain_name(ch)
        present.append(cid)
        if want is not None and cid != want:
            continue
        prot = _chain_to_protein(ch, pid, cath)
        if prot is not None:
            return prot
        if want is not None:
            raise ParseError(path, f"chain {chain!r} has no amino-acid residues with a CA atom")
    if want is None:
        raise ParseError(path, f"no amino-acid residues with a CA atom in model {model}")
    listed = ", ".join(repr(c) for c in present) or "none"
    raise ParseError(path, f"chain {chain!r} not found; chains present: {listed}")
