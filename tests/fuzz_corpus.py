"""A seeded corpus of malformed inputs for every reader, and the harness that judges each case.

Issue 14: every malformed input must end in a clear error that names the file (and, for
line-based formats, the record or line) or in a correct result: never a Python traceback,
a hang or a partial output file. Cases are generated deterministically from real files of
the data bundle (``FOLDNET_DATA``) by mutations that a broken download, a bad disk or a
careless user produce: truncations, bit flips, dropped / duplicated / shuffled lines, wrong
field counts, nan / inf / huge coordinates, empty files, binary garbage, wrong encodings
(UTF-16, latin-1, invalid UTF-8), unknown residues, 1- and 2-residue chains, duplicate IDs,
gzip of all of these and truncated gzip.

``generate(seed)`` gives the cases; ``run_case(case, workdir)`` classifies one:

* ``correct``: the reader returned a result that passes the checks (finite coordinates
  wherever the mask is 1, masks in {0, 1}, profiles finite and normalised, ids usable as
  file names); skipped records in a batch reader count as correct when each is a ParseError
  naming the file;
* ``clean_error``: a ``foldnet`` ParseError / InputError (or ConfigError / StaleCacheError)
  whose message names the file;
* ``traceback``: any other exception (a bug to fix where the mechanism lives);
* ``hang``: longer than the case time limit;
* ``partial_file``: a batch job (build-dataset for structure / ProteinNet cases, the predict
  writer for FASTA cases) left a temporary or half-written file in its output folder.

``scripts/fuzz_inputs.py`` runs the whole corpus and writes docs/bench/fuzz.{json,md};
``tests/test_fuzz_corpus.py`` runs a fixed seeded subset.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pickle
import random
import shutil
import signal
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import numpy as np

FORMATS = ("fasta", "fasta_gz", "pdb", "mmcif", "proteinnet", "a3m", "aln", "cath_list", "cath_boundaries",
           "hdf5", "manifest", "pdnet_npy", "pdnet_pkl")
CASE_SECONDS = 20.0


@dataclasses.dataclass
class Case:
    fmt: str
    name: str
    data: bytes
    suffix: str

    @property
    def id(self) -> str:
        return f"{self.fmt}/{self.name}"


@dataclasses.dataclass
class Outcome:
    case: str
    fmt: str
    category: str  # correct | clean_error | traceback | hang | partial_file
    detail: str
    seconds: float
    # errors (the case's own, or the skipped records of a batch reader) that give a line or record
    located: int = 0
    errors: int = 0


# ----------------------------------------------------------------------------- seed files


def _raw(path: Path) -> bytes:
    blob = path.read_bytes()
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


def _first_records(blob: bytes, marker: bytes, n: int) -> bytes:
    parts = blob.split(b"\n" + marker)
    return (b"\n" + marker).join(parts[:n]).rstrip(b"\n") + b"\n"


def seeds(data_root: Path) -> dict[str, list[bytes]]:
    """Valid inputs of each format, from the bundle (small: the fuzz runs thousands of cases)."""
    pdb_files = sorted((data_root / "promod3_structure_db" / "pdb_single_domain").glob("1*.pdb.gz"))
    small_pdbs = []
    for p in pdb_files:
        blob = _raw(p)
        if blob.count(b"\nATOM") < 400:
            small_pdbs.append(blob)
        if len(small_pdbs) == 2:
            break
    full_atom = _raw(data_root / "pdnet_related" / "disteval_1guuA" / "1guuA.pdb")
    fasta = _first_records(_raw(data_root / "promod3_structure_db" / "all_chains.fasta.gz"), b">", 4)
    pn_val = _first_records(_raw(data_root / "proteinnet" / "validation.gz"), b"[ID]", 2)
    pn_sample = (data_root / "proteinnet_sample" / "text_sample").read_bytes()
    aln = b"\n".join(_raw(data_root / "pdnet_related" / "deepcon_examples" / "5ptpA.aln.gz").splitlines()[:40]) + b"\n"
    a3m = b"".join(b">s%d\n%s\n" % (i, line) for i, line in enumerate(aln.splitlines()))
    clf = b"\n".join((data_root / "cath_classification" / "cath-domain-list-S35-v4_1_0.txt").read_bytes().splitlines()[:25]) + b"\n"
    bounds = b"\n".join((data_root / "cath_classification" / "cath-b-s35-newest-putative.txt").read_bytes().splitlines()[:25]) + b"\n"
    return {
        "fasta": [fasta, (data_root / "pdnet_related" / "disteval_1guuA" / "1guuA.fasta").read_bytes()],
        "pdb": small_pdbs + [full_atom],
        "mmcif": [_to_mmcif(b) for b in small_pdbs[:1] + [full_atom]],
        "proteinnet": [pn_val, pn_sample],
        "a3m": [a3m],
        "aln": [aln],
        "cath_list": [clf],
        "cath_boundaries": [bounds],
    }


def _to_mmcif(pdb_text: bytes) -> bytes:
    from Bio.PDB import MMCIFIO, PDBParser

    s = PDBParser(QUIET=True).get_structure("x", io.StringIO(pdb_text.decode("latin-1")))
    out = io.StringIO()
    w = MMCIFIO()
    w.set_structure(s)
    w.save(out)
    return out.getvalue().encode()


# ----------------------------------------------------------------------------- mutations


def _truncate(rng, b: bytes) -> bytes:
    return b[: rng.randrange(0, max(1, len(b)))]


def _bitflip(rng, b: bytes) -> bytes:
    a = bytearray(b)
    for _ in range(rng.randint(1, 12)):
        if a:
            a[rng.randrange(len(a))] ^= 1 << rng.randrange(8)
    return bytes(a)


def _lines(b: bytes) -> list[bytes]:
    return b.split(b"\n")


def _drop_line(rng, b):
    ls = _lines(b)
    del ls[rng.randrange(len(ls))]
    return b"\n".join(ls)


def _dup_line(rng, b):
    ls = _lines(b)
    i = rng.randrange(len(ls))
    ls.insert(i, ls[i])
    return b"\n".join(ls)


def _shuffle_lines(rng, b):
    ls = _lines(b)
    i = rng.randrange(len(ls))
    j = rng.randrange(len(ls))
    ls[i], ls[j] = ls[j], ls[i]
    return b"\n".join(ls)


def _field_count(rng, b):
    ls = _lines(b)
    i = rng.randrange(len(ls))
    f = ls[i].split()
    if f and rng.random() < 0.5:
        del f[rng.randrange(len(f))]
    else:
        f.insert(rng.randrange(len(f) + 1), rng.choice([b"1", b"x", b"-", b"0.5"]))
    ls[i] = b"\t".join(f) if b"\t" in ls[i] else b" ".join(f)
    return b"\n".join(ls)


_NUM = __import__("re").compile(rb"-?\d+\.\d+|-?\d+")


def _bad_number(rng, b):
    ms = list(_NUM.finditer(b))
    if not ms:
        return b + b" nan"
    m = rng.choice(ms)
    token = rng.choice([b"nan", b"inf", b"-inf", b"1e30", b"NaN", b"99999999", b"1e309", b"-0"])
    return b[: m.start()] + token + b[m.end():]


def _pdb_coord(rng, b):
    """A PDB ATOM line whose x / y / z field (columns 31-54) says nan, inf or a huge value."""
    ls = _lines(b)
    atoms = [i for i, l in enumerate(ls) if l.startswith((b"ATOM", b"HETATM")) and len(l) >= 54]
    if not atoms:
        return _bad_number(rng, b)
    for _ in range(rng.randint(1, 3)):
        i = rng.choice(atoms)
        col = rng.choice([30, 38, 46])
        token = rng.choice([b"     nan", b"     inf", b"    -inf", b"9.99e+30", b"99999999"])
        ls[i] = ls[i][:col] + token + ls[i][col + 8:]
    return b"\n".join(ls)


def _empty(rng, b):
    return rng.choice([b"", b"\n", b"\n\n\n", b"   \n\t\n", b"\x00"])


def _garbage(rng, b):
    return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 17, 300, 4000])))


def _utf16(rng, b):
    return b.decode("latin-1").encode("utf-16")


def _latin1(rng, b):
    ls = _lines(b)
    i = rng.randrange(len(ls))
    ls[i] = ls[i] + rng.choice([b"\xe9\xe8", b"\xff\xfe", b"\xc3\x28", b"\x80"])
    return b"\n".join(ls)


def _unicode_id(rng, b):
    return b.replace(b">", ">héllo_β".encode(), 1) + ">hello_b\nMKV\n>héllo_β\nMKV\n".encode()


def _unknown_residue(rng, b, fmt):
    if fmt in ("pdb", "mmcif"):
        return b.replace(rng.choice([b"ALA", b"GLY", b"LEU", b"SER", b"VAL", b"LYS"]), rng.choice([b"XYZ", b"UNK", b"ZZZ", b"MSE"]), 3)
    ls = _lines(b)
    cand = [i for i, l in enumerate(ls) if l and not l.startswith((b">", b"[", b"#")) and l.isalpha()]
    if not cand:
        return b + b"\n@@@\n"
    i = rng.choice(cand)
    j = rng.randrange(len(ls[i]))
    ls[i] = ls[i][:j] + rng.choice([b"1", b"*", b"\xce\xb2", b"#", b".", b"-", b"J", b"O", b" "]) + ls[i][j + 1:]
    return b"\n".join(ls)


def _short_chain(rng, b, fmt):
    n = rng.choice([1, 2])
    if fmt in ("fasta", "a3m"):
        return b">tiny\n" + b"M" * n + b"\n" + b
    if fmt == "aln":
        return b"\n".join(l[:n] for l in _lines(b) if l)
    if fmt in ("pdb", "mmcif"):
        ls = _lines(b)
        if fmt == "pdb":
            keep, seen = [], []
            for l in ls:
                if l.startswith(b"ATOM"):
                    key = l[22:27]
                    if key not in seen:
                        seen.append(key)
                    if len(seen) > n:
                        continue
                keep.append(l)
            return b"\n".join(keep)
        return b
    if fmt == "proteinnet":
        seq = b"M" * n
        evo = b"\n".join(b"\t".join([b"0.05"] * n) for _ in range(21))
        ter = b"\n".join(b"\t".join([b"%d" % (100 * k) for k in range(3 * n)]) for _ in range(3))
        return b"[ID]\ntiny_1_A\n[PRIMARY]\n" + seq + b"\n[EVOLUTIONARY]\n" + evo + b"\n[TERTIARY]\n" + ter + b"\n[MASK]\n" + b"+" * n + b"\n\n" + b
    return b


def _duplicate_ids(rng, b, fmt):
    if fmt == "proteinnet":
        recs = b.split(b"[ID]")
        return b + b"[ID]" + recs[1] if len(recs) > 1 else b + b
    return b + b


def _gzip_then_truncate(rng, b):
    z = gzip.compress(b)
    return z[: rng.randrange(10, max(11, len(z) - 1))]


TEXT_MUTATIONS: dict[str, Callable] = {
    "truncate": _truncate, "bitflip": _bitflip, "drop_line": _drop_line, "dup_line": _dup_line,
    "swap_lines": _shuffle_lines, "field_count": _field_count, "bad_number": _bad_number, "empty": _empty,
    "garbage": _garbage, "utf16": _utf16, "latin1": _latin1,
}


def _text_cases(fmt: str, seed_blobs: list[bytes], rng: random.Random, per_mutation: int) -> list[tuple[str, bytes]]:
    out = []
    muts = dict(TEXT_MUTATIONS)
    muts["unknown_residue"] = lambda r, b: _unknown_residue(r, b, fmt)
    muts["short_chain"] = lambda r, b: _short_chain(r, b, fmt)
    muts["duplicate_ids"] = lambda r, b: _duplicate_ids(r, b, fmt)
    if fmt == "pdb":
        muts["bad_coordinate"] = _pdb_coord
    if fmt == "fasta":
        muts["unicode_id"] = _unicode_id
    for name, fn in muts.items():
        for k in range(per_mutation):
            blob = seed_blobs[k % len(seed_blobs)]
            out.append((f"{name}-{k}", fn(rng, blob)))
    return out


# ----------------------------------------------------------------------------- binary formats


def _h5_seed(data_root: Path, tmp: Path) -> bytes:
    from foldnet.data.cache import write_h5
    from foldnet.data.featurize import featurize
    from foldnet.data.proteinnet import iter_proteinnet

    it = iter_proteinnet(data_root / "proteinnet" / "validation.gz")
    feats = [featurize(next(it), source_id="fuzz") for _ in range(2)]
    p = write_h5(tmp / "seed.h5", feats, split="val")
    return p.read_bytes()


def _h5_semantic(rng, tmp: Path, blob: bytes, k: int) -> bytes:
    """A valid HDF5 file whose foldnet tables are wrong (shapes, lengths, offsets, nan)."""
    import h5py

    p = tmp / f"sem{k}.h5"
    p.write_bytes(blob)
    with h5py.File(p, "r+") as f:
        choice = k % 6
        if choice == 0:
            del f["chains/offset"]
        elif choice == 1:
            f["chains/length"][0] = 10**6
        elif choice == 2:
            d = f["chains/offset"][()]
            del f["chains/offset"]
            f["chains/offset"] = d[:-1]
        elif choice == 3:
            del f["residues"]
        elif choice == 4:
            f.attrs["format_version"] = 99
        else:
            key = rng.choice(list(f["residues"].keys()))
            arr = f["residues/" + key]
            if arr.dtype.kind == "f":
                arr[0] = np.nan
            else:
                del f["residues/" + key]
    return p.read_bytes()


def _pdnet_npy(seq: str, cb) -> bytes:
    buf = io.BytesIO()
    obj = np.empty(3, dtype=object)
    obj[0], obj[1], obj[2] = len(seq), seq, cb
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


def _pdnet_pkl(seq: str, L: int, rng) -> dict:
    a = np.random.default_rng(rng.randrange(1 << 30))
    return {"seq": seq, "ss": a.random((3, L)), "pssm": a.random((L, 22)), "sa": a.random(L), "entropy": a.random(L),
            "ccmpred": a.random((L, L)), "freecon": a.random((L, L)), "potential": a.random((L, L))}


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _binary_cases(data_root: Path, tmp: Path, rng: random.Random, per_mutation: int, marker: str) -> list[Case]:
    cases: list[Case] = []
    h5 = _h5_seed(data_root, tmp)
    manifest = (Path(__file__).resolve().parents[1] / "foldnet" / "pretrained" / "foldnet-base-cpu" / "manifest.json").read_bytes()
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    L = len(seq)
    good_npy = _pdnet_npy(seq, np.abs(np.random.default_rng(0).normal(8, 3, (L, L))).astype(np.float16))
    good_pkl = pickle.dumps(_pdnet_pkl(seq, L, rng))
    byte_muts = {"truncate": _truncate, "bitflip": _bitflip, "empty": _empty, "garbage": _garbage}
    for name, fn in byte_muts.items():
        for k in range(per_mutation):
            cases.append(Case("hdf5", f"{name}-{k}", fn(rng, h5), ".h5"))
            cases.append(Case("pdnet_npy", f"{name}-{k}", fn(rng, good_npy), "-cb.npy"))
            cases.append(Case("pdnet_pkl", f"{name}-{k}", fn(rng, good_pkl), ".pkl"))
    for k in range(per_mutation * 3):
        cases.append(Case("hdf5", f"semantic-{k}", _h5_semantic(rng, tmp, h5, k), ".h5"))
    # manifest: JSON-level damage
    mtext = manifest.decode()
    m = json.loads(mtext)
    variants = {
        "no_sha": {k: v for k, v in m.items() if k != "params_sha256"},
        "bad_sha": {**m, "params_sha256": "0" * 64},
        "sha_not_hex": {**m, "params_sha256": "zz" * 32},
        "sha_number": {**m, "params_sha256": 12},
        "list": [m],
        "null": None,
    }
    for name, v in variants.items():
        cases.append(Case("manifest", name, json.dumps(v).encode(), ".json"))
    for name, fn in {**byte_muts, "drop_line": _drop_line, "field_count": _field_count, "utf16": _utf16,
                     "latin1": _latin1, "bad_number": _bad_number}.items():
        for k in range(per_mutation):
            cases.append(Case("manifest", f"{name}-{k}", fn(rng, manifest), ".json"))
    # pdnet semantic variants
    sem_npy = {
        "nan_map": _pdnet_npy(seq, np.full((L, L), np.nan, np.float16)),
        "inf_map": _pdnet_npy(seq, np.full((L, L), np.inf, np.float32)),
        "wrong_L": _pdnet_npy(seq + "A", np.ones((L, L), np.float16)),
        "bad_seq": _pdnet_npy("MK1" + seq[3:], np.ones((L, L), np.float16)),
        "one_residue": _pdnet_npy("M", np.zeros((1, 1), np.float16)),
        "two_residue": _pdnet_npy("MK", np.array([[0, 3.8], [3.8, 0]], np.float16)),
        "not_object": (lambda b: (np.save(b, np.ones((3, 3))), b.getvalue())[1])(io.BytesIO()),
        "evil": _pdnet_npy(seq, _Evil(marker)),
    }
    for name, blob in sem_npy.items():
        cases.append(Case("pdnet_npy", name, blob, "-cb.npy"))
    base = _pdnet_pkl(seq, L, rng)
    sem_pkl = {
        "missing_key": {k: v for k, v in base.items() if k != "pssm"},
        "wrong_shape": {**base, "pssm": np.ones((L, 21))},
        "nan_pssm": {**base, "pssm": np.full((L, 22), np.nan)},
        "not_dict": [base],
        "seq_number": {**base, "seq": 5},
        "evil": {**base, "x": _Evil(marker)},
        "evil_top": _Evil(marker),
    }
    for name, obj in sem_pkl.items():
        try:
            blob = pickle.dumps(obj)
        except Exception:  # noqa: BLE001
            continue
        cases.append(Case("pdnet_pkl", name, blob, ".pkl"))
    return cases


# ----------------------------------------------------------------------------- corpus


def generate(data_root: Path, workdir: Path, seed: int = 0, per_mutation: int = 6) -> list[Case]:
    """The corpus: ``per_mutation`` cases per (format, mutation) plus the semantic variants."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    marker = str(workdir / "PAYLOAD_RAN")
    cases: list[Case] = []
    suffix = {"fasta": ".fasta", "pdb": ".pdb", "mmcif": ".cif", "proteinnet": ".txt", "a3m": ".a3m", "aln": ".aln",
              "cath_list": ".txt", "cath_boundaries": ".txt"}
    for fmt, blobs in seeds(data_root).items():
        for name, data in _text_cases(fmt, blobs, rng, per_mutation):
            cases.append(Case(fmt, name, data, suffix[fmt]))
            if fmt == "fasta":
                gz = gzip.compress(data) if not name.startswith("truncate") else _gzip_then_truncate(rng, data)
                cases.append(Case("fasta_gz", name, gz, ".fasta.gz"))
            elif fmt in ("a3m", "proteinnet") and name.startswith(("truncate", "bitflip")):
                cases.append(Case(fmt, name + "-gz", _gzip_then_truncate(rng, data), suffix[fmt] + ".gz"))
    cases += _binary_cases(data_root, workdir, rng, per_mutation, marker)
    return cases


# ----------------------------------------------------------------------------- judging


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _names_file(e: BaseException, path: Path) -> bool:
    return str(path) in str(e) or path.name in str(e)


def _check_protein(p, where: str) -> None:
    pos, mask = np.asarray(p.atom_positions), np.asarray(p.atom_mask)
    if not set(np.unique(mask)) <= {0.0, 1.0}:
        raise AssertionError(f"{where}: mask not 0/1")
    if not np.isfinite(pos[mask > 0]).all():
        raise AssertionError(f"{where}: non-finite coordinates with mask 1")
    if p.profile is not None and not np.isfinite(p.profile).all():
        raise AssertionError(f"{where}: non-finite profile")
    from foldnet.common.paths import safe_stem

    safe_stem(p.id)


_LOCATED = {"n": 0, "errors": 0}


def _batch_items(items, path: Path) -> None:
    from foldnet.data.errors import ParseError

    for it in items:
        if isinstance(it, ParseError):
            if not _names_file(it, path):
                raise AssertionError(f"skipped record error does not name the file: {it}")
            _LOCATED["errors"] += 1
            _LOCATED["n"] += int(it.line is not None or it.record is not None)
        elif hasattr(it, "atom_positions"):
            _check_protein(it, it.id)


def _read(case: Case, path: Path, work: Path):
    """Run the reader (and, for batch formats, the batch job) of a case. Returns a detail string."""
    fmt = case.fmt
    if fmt in ("fasta", "fasta_gz"):
        from foldnet.data.fasta import iter_fasta, record_to_protein

        items = list(iter_fasta(path, errors="skip"))
        _batch_items(items, path)
        for it in items:
            if hasattr(it, "sequence"):
                _check_protein(record_to_protein(it), it.id)
        _fasta_batch(items, work)
        return f"{len(items)} items"
    if fmt in ("pdb", "mmcif"):
        from foldnet.data.structure_parser import read_chains

        chains = read_chains(path)
        for c in chains.values():
            _check_protein(c, c.id)
        _build_batch("pdb_dir", path, work)
        return f"{len(chains)} chains"
    if fmt == "proteinnet":
        from foldnet.data.proteinnet import iter_proteinnet

        items = list(iter_proteinnet(path, errors="skip"))
        _batch_items(items, path)
        _build_batch("proteinnet", path, work)
        return f"{len(items)} items"
    if fmt in ("a3m", "aln"):
        from foldnet.data.alignment import msa_to_profile, read_a3m, read_aln

        msa = (read_a3m if fmt == "a3m" else read_aln)(path)
        prof = msa_to_profile(msa)
        if not np.isfinite(prof).all():
            raise AssertionError("non-finite profile")
        return f"{len(msa)} sequences"
    if fmt == "cath_list":
        from foldnet.data.cath import read_domain_list

        return f"{len(read_domain_list(path))} domains"
    if fmt == "cath_boundaries":
        from foldnet.data.cath import read_putative_boundaries

        return f"{len(read_putative_boundaries(path))} domains"
    if fmt == "hdf5":
        from foldnet.data.cache import H5Dataset

        ds = H5Dataset(path)
        for i in range(len(ds)):
            _check_protein(ds.protein(i), ds.ids[i])
        return f"{len(ds)} chains"
    if fmt == "manifest":
        from foldnet.inference import pretrained

        src = pretrained.PRETRAINED_DIR / pretrained.DEFAULT_MODEL
        model = work / "pretrained" / pretrained.DEFAULT_MODEL
        model.mkdir(parents=True, exist_ok=True)
        for f in ("config.yaml", "params.msgpack", "prior.npz"):
            if not (model / f).exists():
                os.symlink(src / f, model / f)
        shutil.copyfile(path, model / "manifest.json")
        old = pretrained.PRETRAINED_DIR
        pretrained.PRETRAINED_DIR = work / "pretrained"
        try:
            pretrained.load_pretrained(pretrained.DEFAULT_MODEL)
        finally:
            pretrained.PRETRAINED_DIR = old
        return "loaded"
    if fmt == "pdnet_npy":
        from foldnet.data import pdnet
        from foldnet.data.featurize import featurize_distances

        seq, cb = pdnet.read_pdnet_distances(path)
        featurize_distances("x", seq, cb, source_id=str(path))
        return f"L={len(seq)}"
    if fmt == "pdnet_pkl":
        from foldnet.data import pdnet

        feats = pdnet.read_pdnet_features(path)
        prof = pdnet.pdnet_to_protein("x", feats).profile
        if not np.isfinite(prof).all():
            raise AssertionError("non-finite profile")
        return f"L={len(feats['seq'])}"
    raise ValueError(fmt)


def stub_predict_records(items, out: Path, settings: str = "fuzz"):
    """``predict_records`` with a stub network (uniform distributions) and a stub fold (a line of
    atoms): the real record handling, naming and file writing, at no model cost."""
    from foldnet.common import residue_constants as rc
    from foldnet.inference import predict as pred

    class Stub:
        def distributions(self, inputs):
            L = len(inputs["aatype"])
            d = np.full((L, L, rc.NUM_DIST_BINS), 1.0 / rc.NUM_DIST_BINS, np.float32)
            t = np.full((L, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS, np.float32)
            return {"dist_probs": d, "phi_probs": t, "psi_probs": t, "num_windows": 1,
                    "pair_coverage": np.ones((L, L), np.int16)}

    class Fold:
        def __init__(self, protein):
            L = len(protein)
            pos = np.cumsum(np.full((L, rc.NUM_ATOMS, 3), 1.5, np.float32), axis=0)
            self.protein = protein.replace(atom_positions=pos, atom_mask=np.ones((L, rc.NUM_ATOMS), np.float32))
            self.confidence = np.full(L, 50.0, np.float32)
            self.energy = 1.0

    real = pred.fold_distributions
    pred.fold_distributions = lambda protein, dist, cfg, seed, prior=None: Fold(protein)
    try:
        return pred.predict_records(items, Stub(), out, write_png=False, settings=settings)
    finally:
        pred.fold_distributions = real


def _fasta_batch(items, work: Path) -> None:
    """The predict writer over the records: files for the good records only, no partial files."""
    # Long records would make the stub's L x L arrays the cost of the corpus: cap them.
    short = [it for it in items if not hasattr(it, "sequence") or len(it.sequence) <= 400]
    results = stub_predict_records(short, work / "pred")
    ok = {r.file for r in results if r.ok}
    written = {p.name[: -len(".npz")] for p in (work / "pred").glob("*.npz")}
    leftovers = [p.name for p in (work / "pred").iterdir() if p.name.endswith(".tmp")]
    if ok != written or leftovers:
        raise _Partial(f"predict outputs {sorted(written)} != finished records {sorted(ok)}; left {leftovers}")


class _Partial(Exception):
    pass


def _build_batch(source: str, path: Path, work: Path) -> None:
    """build-dataset over the file: a manifest and splits, or an error with skipped.tsv."""
    from foldnet.data.build import build_dataset
    from foldnet.data.config import BuildConfig, LeakageConfig, PdbDirSourceConfig, ProteinNetSourceConfig

    out = work / "built"
    if source == "pdb_dir":
        cfg = BuildConfig(source="pdb_dir", pdb_dir=PdbDirSourceConfig(path=str(path.parent), glob=path.name),
                          leakage=LeakageConfig(enabled=False))
    else:
        cfg = BuildConfig(proteinnet=ProteinNetSourceConfig(files={"train": str(path)}),
                          leakage=LeakageConfig(enabled=False))
    try:
        build_dataset(cfg, out, log=lambda *a: None)
        ok = (out / "manifest.json").is_file()
    except ValueError as e:
        if "no chain survived" not in str(e):
            raise
        ok = (out / "skipped.tsv").is_file() and not (out / "manifest.json").exists()
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")] if out.exists() else []
    if not ok or leftovers:
        raise _Partial(f"build-dataset left {leftovers or 'no manifest / skipped.tsv'}")


def run_case(case: Case, workdir: Path, seconds: float = CASE_SECONDS) -> Outcome:
    """Classify one case (see the module docstring)."""
    from foldnet.data.cache import StaleCacheError
    from foldnet.data.errors import ConfigError, ParseError

    work = workdir / "case"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / f"input{case.suffix}"
    path.write_bytes(case.data)
    t0 = time.perf_counter()
    _LOCATED.update(n=0, errors=0)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        detail = _read(case, path, work)
        category = "correct"
    except _Hang:
        category, detail = "hang", f"over {seconds:g} s"
    except _Partial as e:
        category, detail = "partial_file", str(e)
    except (ParseError, ConfigError, StaleCacheError) as e:
        # The manifest case reads its copy inside the model folder (work/pretrained/...).
        if _names_file(e, path) or (case.fmt == "manifest" and str(work) in str(e)):
            category, detail = "clean_error", " ".join(str(e).split())[:300]
            _LOCATED["errors"] += 1
            _LOCATED["n"] += int(getattr(e, "line", None) is not None or getattr(e, "record", None) is not None)
        else:
            category, detail = "traceback", "error does not name the file: " + " ".join(str(e).split())[:300]
    except Exception:  # noqa: BLE001 - this is what the corpus looks for
        category, detail = "traceback", traceback.format_exc(limit=6)[-1500:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if Path(workdir / "PAYLOAD_RAN").exists():
        category, detail = "traceback", "a pickle payload ran: " + detail
        Path(workdir / "PAYLOAD_RAN").unlink()
    return Outcome(case.id, case.fmt, category, detail, time.perf_counter() - t0, _LOCATED["n"], _LOCATED["errors"])


def summarize(outcomes: list[Outcome]) -> dict:
    cats = ("correct", "clean_error", "traceback", "hang", "partial_file")
    by_fmt: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = by_fmt.setdefault(o.fmt, {c: 0 for c in ("cases",) + cats})
        row["cases"] += 1
        row[o.category] += 1
    for o in outcomes:
        row = by_fmt[o.fmt]
        row["errors_reported"] = row.get("errors_reported", 0) + o.errors
        row["with_line_or_record"] = row.get("with_line_or_record", 0) + o.located
    keys = ("cases",) + cats + ("errors_reported", "with_line_or_record")
    total = {c: sum(r[c] for r in by_fmt.values()) for c in keys}
    return {"total": total, "by_format": by_fmt}
