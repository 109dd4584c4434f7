"""Build HDF5 dataset splits from a source: parse -> featurise -> label -> split -> write.

Sources (``BuildConfig.source``):

* ``proteinnet``: ProteinNet text files, one per split (the bundled
  training/validation/testing.gz already are a CATH-topology split).
* ``pdb_dir``: a directory (or a TSV list file) of PDB / mmCIF / CATH domain
  files; domains cut by CATH boundaries when the list gives them.
* ``pdnet``: PDNet ``<id>-cb.npy`` distance maps (+ optional ``<id>.pkl``
  features for profiles); distances are stored, there are no coordinates.

Outputs in ``out_dir``: ``<split>.h5`` (``foldnet.data.cache``),
``manifest.json`` (config, inputs, counts, sizes, sha256, timings),
``leakage.json`` (``foldnet.data.split.leakage_report``), ``skipped.tsv``
(``id  file  reason`` for every record left out: parse errors, length
filters, chains absent from a split file). Every file is written atomically.

Idempotence: the build key hashes the output-relevant config, the content of
every input file, the cache format version and the residue-constants
fingerprint. When ``manifest.json`` holds the same key and every split file
still has its recorded sha256, the build is skipped; otherwise (or with
``force``) it is redone, and the HDF5 files come out byte-identical (object
timestamps off; the manifest's timings naturally differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from foldnet.common import atomic
from foldnet.data import split as split_lib
from foldnet.data.cache import FORMAT_VERSION, residue_constants_fingerprint, write_h5
from foldnet.data.config import BuildConfig
from foldnet.common.paths import safe_stem
from foldnet.data.errors import ConfigError, ParseError
from foldnet.data.featurize import featurize, featurize_distances

PathLike = Union[str, os.PathLike]
SPLIT_ORDER = ("train", "val", "test")
# Records per shard when one ProteinNet file is parsed by several processes.
PROTEINNET_SHARD_RECORDS = 500
# Config fields that do not change the output and so stay out of the build key.
_NOT_IN_KEY = ("workers", "force")


@dataclasses.dataclass
class Skipped:
    id: str
    file: str
    reason: str


@dataclasses.dataclass
class BuildResult:
    out_dir: Path
    manifest: dict
    skipped: list[Skipped]
    leakage: Optional[dict]
    up_to_date: bool = False


# --------------------------------------------------------------------------
# Sources: each task is picklable and yields ("ok", split, feats) or ("skip", Skipped)
# --------------------------------------------------------------------------

def check_build_config(cfg: BuildConfig) -> None:
    """Values that cannot work, refused before any file is read (ConfigError names the key)."""
    k = "data.build."
    if cfg.source not in ("proteinnet", "pdb_dir", "pdnet"):
        raise ConfigError(k + "source", f"{cfg.source!r}: expected proteinnet, pdb_dir or pdnet")
    if cfg.workers < 1:
        raise ConfigError(k + "workers", f"must be >= 1, got {cfg.workers}")
    if cfg.min_length < 1:
        raise ConfigError(k + "min_length", f"must be >= 1, got {cfg.min_length}")
    if cfg.max_length is not None and cfg.max_length < cfg.min_length:
        raise ConfigError(k + "max_length", f"must be >= min_length ({cfg.min_length}) or null, got {cfg.max_length}")
    if cfg.max_chains is not None and cfg.max_chains < 1:
        raise ConfigError(k + "max_chains", f"must be >= 1 or null, got {cfg.max_chains}")
    for name in ("val_fraction", "test_fraction"):
        v = getattr(cfg.split, name)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{k}split.{name}", f"must be in [0, 1), got {v}")
    if cfg.split.val_fraction + cfg.split.test_fraction >= 1.0:
        raise ConfigError(k + "split.test_fraction", "val_fraction + test_fraction must be < 1")


def _length_reason(L: int, cfg: BuildConfig) -> Optional[str]:
    if L < cfg.min_length:
        return f"length {L} < min_length {cfg.min_length}"
    if cfg.max_length is not None and L > cfg.max_length:
        return f"length {L} > max_length {cfg.max_length}"
    return None


def _proteinnet_task(args: tuple) -> list[tuple]:
    """Parse + featurise one ProteinNet file or shard (stops after ``limit`` accepted chains).

    ``args`` = (split, original path, config dict, limit, shard) where ``shard``
    is None or (shard path, first line of the shard in the original file): errors
    are then reported against the original file and line.
    """
    from foldnet.data.proteinnet import iter_proteinnet

    split, path, cfg_dict, limit, shard = args
    cfg = _cfg_from_dict(cfg_dict)
    read_path, first_line = (path, 1) if shard is None else shard
    out: list[tuple] = []
    accepted = 0
    name = Path(path).name
    if read_path is None:  # the sharder hit damage: first_line holds the reason
        return [("skip", Skipped(f"<rest of {name}>", path, str(first_line)))]
    records = iter_proteinnet(read_path, errors="skip")
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001 - e.g. a truncated gzip: keep what was read
            out.append(("skip", Skipped(f"<rest of {name}>", path, f"stopped reading: {type(e).__name__}: {e}")))
            break
        if isinstance(rec, ParseError):
            line = None if rec.line is None else rec.line + first_line - 1
            out.append(("skip", Skipped(rec.record or f"line {line}", path,
                                        rec.reason + ("" if line is None else f" (line {line})"))))
            continue
        reason = _length_reason(len(rec), cfg)
        if reason:
            out.append(("skip", Skipped(rec.id, path, reason)))
            continue
        try:
            feats = featurize(rec, source_id=f"{name}:{rec.id}")
        except ValueError as e:
            out.append(("skip", Skipped(rec.id, path, str(e))))
            continue
        out.append(("ok", split, feats))
        accepted += 1
        if limit is not None and accepted >= limit:
            break
    return out


def _proteinnet_shards(path: str, tmp_dir: Path, records_per_shard: int) -> Iterator[tuple]:
    """Cut a ProteinNet file into plain-text shards of whole records, lines verbatim.

    Yields (shard path, original line number of its first line), so one large
    file can be parsed by several processes through the public reader and
    errors still name the original line; after damage (a truncated gzip) a
    final (None, reason).
    """
    import gzip

    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    stem = Path(path).name
    k, count, first, lines = 0, 0, 1, []

    def flush() -> tuple[str, int]:
        shard = tmp_dir / f"{stem}.{k:05d}.txt"
        shard.write_text("".join(lines), encoding="ascii", errors="replace")
        return str(shard), first

    try:
        with opener(path, "rt", encoding="ascii", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip() == "[ID]":
                    if count == records_per_shard:
                        yield flush()
                        k, count, first, lines = k + 1, 0, lineno, []
                    count += 1
                lines.append(line)
    except (OSError, EOFError, zlib.error) as e:
        # A damaged file (e.g. truncated gzip): parse what was read, then report.
        if lines:
            yield flush()
        yield None, f"stopped reading: {type(e).__name__}: {e}"
        return
    if lines:
        yield flush()


def _pdb_task(args: tuple[dict, dict]) -> list[tuple]:
    """Parse + featurise one structure file (optionally one chain / one CATH domain)."""
    from foldnet.data.structure_parser import default_id, read_structure

    row, cfg_dict = args
    cfg = _cfg_from_dict(cfg_dict)
    path = row["path"]
    rid = row.get("domain") or row.get("id") or default_id(path)
    try:
        prot = read_structure(path, chain=row.get("chain") or None, id=rid)
        if row.get("boundaries"):
            from foldnet.data.cath import select_domain

            prot = select_domain(prot, row["boundaries"], id=rid)
        reason = _length_reason(len(prot), cfg)
        if reason:
            return [("skip", Skipped(rid, path, reason))]
        feats = featurize(prot, source_id=str(path), cath=row.get("cath") or None)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the build
        reason = e.reason if isinstance(e, ParseError) else f"{type(e).__name__}: {e}"
        return [("skip", Skipped(rid, str(path), reason))]
    return [("ok", row.get("split") or None, feats)]


def _pdnet_task(args: tuple[str, str, Optional[str], dict]) -> list[tuple]:
    """Read one PDNet distance map (+ features) into distance-only features."""
    from foldnet.data import pdnet

    rid, dist_path, feat_path, cfg_dict = args
    cfg = _cfg_from_dict(cfg_dict)
    if not dist_path:
        return [("skip", Skipped(rid, "", "id is not a plain file name (path separator, '..' or control character)"))]
    try:
        seq, cb_map = pdnet.read_pdnet_distances(dist_path)
        reason = _length_reason(len(seq), cfg)
        if reason:
            return [("skip", Skipped(rid, dist_path, reason))]
        profile = None
        if feat_path is not None:
            feats_in = pdnet.read_pdnet_features(feat_path)
            profile = pdnet.pdnet_to_protein(rid, feats_in, seq=seq).profile
        feats = featurize_distances(rid, seq, cb_map, profile=profile, source_id=dist_path)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the build
        reason = e.reason if isinstance(e, ParseError) else f"{type(e).__name__}: {e}"
        return [("skip", Skipped(rid, dist_path, reason))]
    return [("ok", None, feats)]


def _read_list_file(path: Path) -> list[dict]:
    """Rows of a pdb_dir list file: one path per line, or a TSV with a header."""
    lines = [ln.rstrip("\n") for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return []
    known = {"path", "chain", "domain", "boundaries", "cath", "split", "id"}
    header = lines[0].split("\t")
    rows = []
    if set(header) <= known and "path" in header:
        for lineno, ln in enumerate(lines[1:], 2):
            f = ln.split("\t")
            if len(f) > len(header):
                raise ParseError(path, f"{len(f)} columns, header has {len(header)}", line=lineno)
            rows.append({k: v.strip() for k, v in zip(header, f) if v.strip()})
    else:
        rows = [{"path": ln.strip()} for ln in lines]
    for r in rows:
        p = Path(r["path"])
        r["path"] = str(p if p.is_absolute() else path.parent / p)
        if r.get("split"):
            s = split_lib.SPLIT_ALIASES.get(r["split"].lower())
            if s is None:
                raise ParseError(path, f"unknown split {r['split']!r} for {r['path']}")
            r["split"] = s
    return rows


def _pdb_rows(cfg: BuildConfig) -> list[dict]:
    if not cfg.pdb_dir.path:
        raise ValueError("source pdb_dir needs data.build.pdb_dir.path (a directory or a list file)")
    root = Path(cfg.pdb_dir.path)
    if root.is_dir():
        rows = [{"path": str(p)} for p in sorted(root.glob(cfg.pdb_dir.glob))
                if p.is_file() and not p.name.startswith(".")]
    elif root.is_file():
        rows = _read_list_file(root)
    else:
        raise FileNotFoundError(f"pdb_dir.path {root}: no such directory or list file")
    if cfg.pdb_dir.domain_list:
        from foldnet.data.cath import read_domain_list
        from foldnet.data.structure_parser import default_id

        labels = {d.domain_id: d.cath for d in read_domain_list(cfg.pdb_dir.domain_list)}
        for r in rows:
            did = r.get("domain") or default_id(r["path"])
            if not r.get("cath") and labels.get(did):
                r["cath"] = labels[did]
    return rows


def _pdnet_items(cfg: BuildConfig) -> list[tuple[str, str, Optional[str]]]:
    src = cfg.pdnet
    if not src.distances_dir:
        raise ValueError("source pdnet needs data.build.pdnet.distances_dir")
    ddir = Path(src.distances_dir)
    if not ddir.is_dir():
        raise FileNotFoundError(f"data.build.pdnet.distances_dir {ddir}: no such directory")
    if src.ids:
        text = Path(src.ids).read_text(encoding="utf-8", errors="replace")
        ids = [ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        ids = sorted(p.name[: -len("-cb.npy")] for p in ddir.glob("*-cb.npy"))
    items = []
    for rid in ids:
        if safe_stem(rid) != rid:  # an id such as ../x or /abs names no file in the folders
            items.append((rid, "", None))
            continue
        feat = None
        if src.features_dir:
            fp = Path(src.features_dir) / f"{rid}.pkl"
            feat = str(fp) if fp.exists() else None
        items.append((rid, str(ddir / f"{rid}-cb.npy"), feat))
    return items


def _input_files(cfg: BuildConfig) -> list[str]:
    """Every file the build reads (for the build key)."""
    files: list[str] = []
    if cfg.source == "proteinnet":
        files += [cfg.proteinnet.files[s] for s in sorted(cfg.proteinnet.files)]
    elif cfg.source == "pdb_dir":
        files += [r["path"] for r in _pdb_rows(cfg)]
        if Path(cfg.pdb_dir.path).is_file():
            files.append(cfg.pdb_dir.path)
        if cfg.pdb_dir.domain_list:
            files.append(cfg.pdb_dir.domain_list)
    elif cfg.source == "pdnet":
        for _, d, f in _pdnet_items(cfg):
            files += ([d] if d else []) + ([f] if f else [])
        if cfg.pdnet.ids:
            files.append(cfg.pdnet.ids)
    if cfg.cath_labels:
        files.append(cfg.cath_labels)
    if cfg.split.mode == "file" and cfg.split.file:
        files.append(cfg.split.file)
    return files


def _sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _cfg_dict(cfg: BuildConfig) -> dict:
    return dataclasses.asdict(cfg)


def _cfg_from_dict(d: dict) -> BuildConfig:
    from foldnet.data import config as c

    return BuildConfig(
        **{
            **d,
            "proteinnet": c.ProteinNetSourceConfig(**d["proteinnet"]),
            "pdb_dir": c.PdbDirSourceConfig(**d["pdb_dir"]),
            "pdnet": c.PdnetSourceConfig(**d["pdnet"]),
            "split": c.SplitConfig(**d["split"]),
            "leakage": c.LeakageConfig(**d["leakage"]),
        }
    )


def build_key(cfg: BuildConfig) -> tuple[str, dict]:
    """(key, inputs): sha256 of output-relevant config + input contents + format versions."""
    inputs = {}
    for f in _input_files(cfg):
        try:
            inputs[str(f)] = _sha256(f)
        except OSError as e:
            inputs[str(f)] = f"unreadable: {type(e).__name__}"
    keyed = {k: v for k, v in _cfg_dict(cfg).items() if k not in _NOT_IN_KEY}
    payload = {
        "config": keyed,
        "inputs": inputs,
        "format_version": FORMAT_VERSION,
        "residue_constants": residue_constants_fingerprint(),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), inputs


def _run_tasks(fn, tasks: Iterable, workers: int) -> Iterator[tuple]:
    """Results of ``fn`` over ``tasks`` in task order, in a process pool when workers > 1."""
    if workers <= 1 or (isinstance(tasks, list) and len(tasks) <= 1):
        for t in tasks:
            yield from fn(t)
        return
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    n = workers if not isinstance(tasks, list) else min(workers, len(tasks))
    chunk = 1 if not isinstance(tasks, list) else max(1, min(64, len(tasks) // (workers * 8) or 1))
    with ctx.Pool(n) as pool:
        # imap pulls tasks from the (possibly lazy) iterable in a feeder thread, so
        # sharding a file overlaps with parsing the shards already cut.
        for res in pool.imap(fn, tasks, chunksize=chunk):
            yield from res


def _collect(cfg: BuildConfig) -> tuple[list[tuple[Optional[str], dict]], list[Skipped]]:
    """Parse + featurise the source: ([(given split or None, feats)], skipped)."""
    cd = _cfg_dict(cfg)
    given_limit = cfg.max_chains if cfg.split.mode == "given" else None
    if cfg.source == "proteinnet":
        if not cfg.proteinnet.files:
            raise ValueError("source proteinnet needs data.build.proteinnet.files (split -> file)")
        for s, f in cfg.proteinnet.files.items():
            if not Path(f).is_file():
                raise FileNotFoundError(f"proteinnet file for split {s!r}: {f} does not exist")
        if cfg.workers > 1 and given_limit is None:
            # Parse every file in shards of whole records, in parallel, in file order.
            with tempfile.TemporaryDirectory(prefix="foldnet_pn_") as tmp:
                tasks = (
                    (s, f, cd, None, shard)
                    for s, f in cfg.proteinnet.files.items()
                    for shard in _proteinnet_shards(f, Path(tmp), PROTEINNET_SHARD_RECORDS)
                )
                results = list(_run_tasks(_proteinnet_task, tasks, cfg.workers))
        else:
            tasks = [(s, f, cd, given_limit, None) for s, f in cfg.proteinnet.files.items()]
            results = list(_run_tasks(_proteinnet_task, tasks, cfg.workers))
    elif cfg.source == "pdb_dir":
        tasks = [(r, cd) for r in _pdb_rows(cfg)]
        results = list(_run_tasks(_pdb_task, tasks, cfg.workers))
    elif cfg.source == "pdnet":
        tasks = [(rid, d, f, cd) for rid, d, f in _pdnet_items(cfg)]
        results = list(_run_tasks(_pdnet_task, tasks, cfg.workers))
    else:
        raise ValueError(f"unknown source {cfg.source!r} (proteinnet, pdb_dir, pdnet)")
    chains = [(r[1], r[2]) for r in results if r[0] == "ok"]
    skipped = [r[1] for r in results if r[0] == "skip"]
    return chains, skipped


def _assign(cfg: BuildConfig, chains: list[tuple[Optional[str], dict]], skipped: list[Skipped]
            ) -> dict[str, list[dict]]:
    """Attach CATH labels, assign splits, apply max_chains."""
    if cfg.cath_labels:
        table = split_lib.read_chain_labels(cfg.cath_labels)
        for _, f in chains:
            if not f["cath"]:
                f["cath"] = table.get(split_lib.chain_name(f["id"]), "")
    mode = cfg.split.mode
    if mode == "given":
        assigned = [s or "train" for s, _ in chains]
    elif mode == "cath":
        assigned = split_lib.assign_by_cath(
            [f["cath"] for _, f in chains], level=cfg.split.level, val_fraction=cfg.split.val_fraction,
            test_fraction=cfg.split.test_fraction, seed=cfg.split.seed, unlabeled=cfg.split.unlabeled,
        )
    elif mode == "file":
        if not cfg.split.file:
            raise ValueError("split.mode=file needs split.file")
        table = split_lib.read_split_file(cfg.split.file)
        assigned = [table.get(f["id"], table.get(split_lib.chain_name(f["id"]))) for _, f in chains]
    else:
        raise ValueError(f"unknown split.mode {mode!r} (given, cath, file)")
    out: dict[str, list[dict]] = {}
    for s, (_, f) in zip(assigned, chains):
        if s is None:
            why = "not in split file" if mode == "file" else "no CATH label (split.unlabeled=drop)"
            skipped.append(Skipped(f["id"], f["source_id"], why))
            continue
        out.setdefault(s, []).append(f)
    if cfg.max_chains is not None:
        out = {s: c[: cfg.max_chains] for s, c in out.items()}
    ordered = [s for s in SPLIT_ORDER if s in out] + sorted(s for s in out if s not in SPLIT_ORDER)
    return {s: out[s] for s in ordered}


def _manifest_ok(out_dir: Path, key: str) -> Optional[dict]:
    mpath = out_dir / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("build_key") != key:
        return None
    for s, info in manifest.get("splits", {}).items():
        p = out_dir / info["file"]
        if not p.is_file() or p.stat().st_size != info["bytes"] or _sha256(p) != info["sha256"]:
            return None
    return manifest


def build_dataset(cfg: BuildConfig, out_dir: PathLike, log=print) -> BuildResult:
    """Build (or confirm up to date) the HDF5 splits of ``cfg`` in ``out_dir``.

    Args:
      cfg: the build config.
      out_dir: output folder (created).
      log: where progress lines go (``print``; a no-op to silence).

    Returns:
      BuildResult with the manifest, skipped records and leakage report.

    Raises:
      ValueError / FileNotFoundError: a config that names no usable input.
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    check_build_config(cfg)
    key, inputs = build_key(cfg)
    manifest = None if cfg.force else _manifest_ok(out_dir, key)
    if manifest is not None:
        log(f"build-dataset: {out_dir} is up to date (build key {key[:12]}); use force=true to rebuild")
        leak_path = out_dir / "leakage.json"
        leakage = json.loads(leak_path.read_text()) if leak_path.exists() else None
        return BuildResult(out_dir, manifest, [], leakage, up_to_date=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in atomic.remove_stale_tmp(out_dir):
        log(f"build-dataset: removed {p} (left by a build that was killed)")
    chains, skipped = _collect(cfg)
    t_parse = time.perf_counter() - t0
    splits = _assign(cfg, chains, skipped)
    if not splits:
        _write_skipped(out_dir, skipped)  # the reasons are what the user needs most here
        raise ValueError(f"build-dataset: no chain survived parsing and filtering ({len(skipped)} skipped; "
                         f"reasons in {out_dir / 'skipped.tsv'})")
    # Split files of an earlier build that this one does not produce would be read as current.
    try:
        previous = json.loads((out_dir / "manifest.json").read_text()).get("splits", {})
    except (OSError, ValueError):
        previous = {}
    for s, info in previous.items():
        if s not in splits and (out_dir / info.get("file", "")).is_file():
            (out_dir / info["file"]).unlink()
            log(f"build-dataset: removed {out_dir / info['file']} (split {s!r} no longer produced)")
    config_attr = {k: v for k, v in _cfg_dict(cfg).items() if k not in _NOT_IN_KEY}
    split_info = {}
    for s, feats in splits.items():
        path = write_h5(out_dir / f"{s}.h5", feats, split=s, source=cfg.source, config=config_attr, build_key=key)
        lengths = [len(f["aatype"]) for f in feats]
        split_info[s] = {
            "file": path.name, "chains": len(feats), "residues": int(sum(lengths)),
            "max_length": int(max(lengths)), "with_profile": int(sum("profile" in f for f in feats)),
            "labelled": int(sum(bool(f["cath"]) for f in feats)),
            "bytes": path.stat().st_size, "sha256": _sha256(path),
        }
        log(f"build-dataset: wrote {path} ({len(feats)} chains, {split_info[s]['bytes'] / 1e6:.1f} MB)")
    t_write = time.perf_counter() - t0 - t_parse

    leakage = None
    t_leak0 = time.perf_counter()
    if cfg.leakage.enabled:
        from foldnet.common import residue_constants as rc

        inputs_by_split = {
            s: split_lib.LeakageInput(
                ids=[f["id"] for f in fs],
                sequences=[rc.aatype_to_sequence(f["aatype"]) for f in fs],
                cath=[f["cath"] for f in fs],
            )
            for s, fs in splits.items()
        }
        leakage = split_lib.leakage_report(inputs_by_split, k=cfg.leakage.k, threshold=cfg.leakage.threshold)
        atomic.write_text(out_dir / "leakage.json", json.dumps(leakage, indent=1) + "\n")
        log(split_lib.format_leakage(leakage))
    t_leak = time.perf_counter() - t_leak0

    _write_skipped(out_dir, skipped)
    if skipped:
        log(f"build-dataset: skipped {len(skipped)} records (see {out_dir / 'skipped.tsv'})")
    n_chains = sum(v["chains"] for v in split_info.values())
    total = time.perf_counter() - t0
    manifest = {
        "build_key": key,
        "format_version": FORMAT_VERSION,
        "residue_constants_fingerprint": residue_constants_fingerprint(),
        "source": cfg.source,
        "config": _cfg_dict(cfg),
        "inputs": inputs,
        "splits": split_info,
        "skipped": len(skipped),
        "timing_s": {"parse_featurize": round(t_parse, 3), "write": round(t_write, 3),
                     "leakage": round(t_leak, 3), "total": round(total, 3)},
        "chains_per_s": round(n_chains / max(total, 1e-9), 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    log(f"build-dataset: {n_chains} chains in {total:.1f} s ({manifest['chains_per_s']} chains/s)")
    return BuildResult(out_dir, manifest, skipped, leakage)


def _write_skipped(out_dir: Path, skipped: list[Skipped]) -> None:
    rows = ["id\tfile\treason"] + [
        "\t".join(str(x).replace("\t", " ").replace("\n", " ") for x in (k.id, k.file, k.reason)) for k in skipped
    ]
    atomic.write_text(out_dir / "skipped.tsv", "\n".join(rows) + "\n")


def load_manifest(out_dir: PathLike) -> dict[str, Any]:
    """The manifest.json of a built dataset."""
    return json.loads((Path(out_dir) / "manifest.json").read_text())
