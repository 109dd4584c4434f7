"""Where public structure data lives, and batch fetches of it through ``fetch.download``.

Sources and their public URL layouts (every base URL is an argument, so a
mirror or a local copy can stand in; ``file:///path`` works as a base URL):

* PDB entries. RCSB (default): ``https://files.rcsb.org/download/{ID}.pdb.gz`` and
  ``.../{ID}.cif.gz``. The wwPDB archive layout, served by wwPDB, PDBe and PDBj
  (``mirror=wwpdb|pdbe|pdbj``): ``<base>/pdb/{mid}/pdb{id}.ent.gz`` and
  ``<base>/mmCIF/{mid}/{id}.cif.gz`` where ``mid`` is the middle two characters of the
  ID. RCSB has no PDB-format file for very large entries; use mmCIF for those.
* CATH (Sillitoe et al. 2021, NAR 49:D266). Release files from
  ``https://download.cathdb.info/cath/releases``: ``latest-release/...`` or
  ``all-releases/v4_3_0/...``, with classification lists (CLF / boundaries / names)
  under ``cath-classification-data/`` and the non-redundant sets (``.list``,
  ``.atom.fa``, ``.pdb.tgz``) under ``non-redundant-data-sets/``; versioned files carry a
  ``-v4_3_0`` suffix. Single domains from the CATH REST API:
  ``https://www.cathdb.info/version/v4_3_0/api/rest/id/{domain}.pdb``.
* PDNet (Adhikari 2020, Sci. Rep., doi:10.1038/s41598-020-70181-0): the dataset tarball
  documented in the ba-lab/pdnet README, ``http://deep.cs.umsl.edu/pdnet/train-data.tar.gz``.
  PDNet's own ``train.py`` reads it (unpacked) as ``data/{deepcov,psicov,cameo}/features/<id>.pkl``,
  ``.../distance/<id>-cb.npy`` and ``data/deepcov.lst`` -- the layout ``foldnet.data.pdnet`` parses.

Cache layout under ``cache_dir`` (default ``<data_root>/downloads``)::

  pdb/<id>.pdb.gz   mmcif/<id>.cif.gz            (lowercase entry ID, mirror-independent)
  cath/<version>/<original file name>            (lists, .list, .atom.fa, .pdb.tgz)
  cath/<version>/domains/<domain>.pdb   (a case-only twin of an earlier ID in the batch: <domain>-<hash>.pdb)
  cath/<version>/nonredundant-S40/...            (extracted archive)
  pdnet/train-data.tar.gz, pdnet/train-data/...  (extracted archive)

Batch fetches never stop at the first bad ID: each item ends up fetched, cached or
failed-with-reason in a :class:`FetchReport`. The exception is a machine that is
offline, where every remaining item would fail the same way; the rest are then
reported as not attempted.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import os
import re
import shutil
import tarfile
import tempfile
import logging
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from foldnet.common import atomic
from foldnet.common.paths import NameAllocator, confined, data_root, safe_stem
from foldnet.data.errors import ParseError
from foldnet.data.fetch import DownloadError, NetworkPolicy, OfflineError, download_with_info

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

RCSB_BASE = "https://files.rcsb.org/download"
# wwPDB archive ("divided") layout roots; the same tree is mirrored by the three wwPDB sites.
PDB_MIRRORS = {
    "rcsb": RCSB_BASE,
    "wwpdb": "https://files.wwpdb.org/pub/pdb/data/structures/divided",
    "pdbe": "https://ftp.ebi.ac.uk/pub/databases/pdb/data/structures/divided",
    "pdbj": "https://ftp.pdbj.org/pub/pdb/data/structures/divided",
}
CATH_RELEASES_BASE = "https://download.cathdb.info/cath/releases"
CATH_API_BASE = "https://www.cathdb.info"
CATH_DEFAULT_VERSION = "v4_3_0"
PDNET_BASE = "http://deep.cs.umsl.edu/pdnet"
PDNET_FILES = ("train-data.tar.gz",)

# Short names of the files in cath-classification-data/ (file = cath-<name>[-<version>].txt).
CATH_LISTS = (
    "domain-list",
    "domain-boundaries",
    "domain-boundaries-seqreschopping",
    "names",
    "chain-list",
    "domain-description-file",
)
_CATH_NR = re.compile(r"^nonredundant-(S\d+)\.(list|atom\.fa|pdb\.tgz)$")
_PDB_ID = re.compile(r"^([0-9][A-Za-z0-9]{3})(?:[-_.:]?[A-Za-z0-9]{1,4})?$")
_CATH_DOMAIN = re.compile(r"^[0-9][A-Za-z0-9]{3}[A-Za-z0-9][0-9]{2}$")
_VERSION = re.compile(r"^v?(\d+)[._](\d+)[._](\d+)$")
_PDB_FORMATS = {"pdb": ("pdb", ".pdb"), "cif": ("mmcif", ".cif"), "mmcif": ("mmcif", ".cif")}


# ----------------------------------------------------------------------------- reports


@dataclasses.dataclass
class FetchItem:
    """One requested file and what became of it.

    Attributes:
      key: the ID or file name the user asked for.
      url: where it was fetched from.
      path: the local file (None when failed).
      status: "fetched", "cached" or "failed".
      reason: why it failed ("" otherwise).
      nbytes: payload size in bytes.
    """

    key: str
    url: str
    path: Optional[Path]
    status: str
    reason: str = ""
    nbytes: int = 0


@dataclasses.dataclass
class FetchReport:
    """The outcome of a batch fetch: every item fetched, cached or failed with a reason."""

    source: str
    items: list[FetchItem] = dataclasses.field(default_factory=list)

    def _with(self, status: str) -> list[FetchItem]:
        return [i for i in self.items if i.status == status]

    @property
    def fetched(self) -> list[FetchItem]:
        return self._with("fetched")

    @property
    def cached(self) -> list[FetchItem]:
        return self._with("cached")

    @property
    def failed(self) -> list[FetchItem]:
        return self._with("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def paths(self) -> list[Path]:
        """Local paths of the items that are available (fetched or cached), in request order."""
        return [i.path for i in self.items if i.path is not None and i.status != "failed"]

    def summary(self) -> str:
        """Human-readable summary: counts, then one line per failure with its reason."""
        nbytes = sum(i.nbytes for i in self.fetched)
        lines = [f"{self.source}: {len(self.fetched)} fetched ({nbytes / 1e6:.2f} MB), "
                 f"{len(self.cached)} cached, {len(self.failed)} failed"]
        lines += [f"  FAILED {i.key}: {i.reason}" for i in self.failed]
        return "\n".join(lines)

    def write_tsv(self, path: PathLike) -> None:
        """Write ``key, status, path, url, reason`` per item (atomically)."""
        rows = ["key\tstatus\tpath\turl\treason"]
        for i in self.items:
            reason = i.reason.replace("\t", " ").replace("\n", " ")
            rows.append(f"{i.key}\t{i.status}\t{i.path or ''}\t{i.url}\t{reason}")
        atomic.write_text(path, "\n".join(rows) + "\n")


# ----------------------------------------------------------------------------- content checks


def _head_lines(path: Path, max_lines: int) -> Iterable[str]:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="latin-1") as fh:
        for n, line in enumerate(fh):
            if n >= max_lines:
                return
            yield line


def _reject_html(first: str, what: str) -> None:
    if first.lstrip().lower().startswith(("<!doctype", "<html", "<?xml", "{")):
        raise ValueError(f"expected {what} but got {first.strip()[:60]!r} (an error page?)")


def check_pdb_file(path: Path) -> None:
    """Raise ValueError unless ``path`` (plain or gzip) holds PDB-format ATOM/HETATM records."""
    first = None
    for line in _head_lines(path, 2_000_000):
        if first is None and line.strip():
            first = line
            _reject_html(first, "a PDB file")
        if line.startswith(("ATOM  ", "HETATM")):
            return
    raise ValueError("no ATOM/HETATM record: not a PDB coordinate file")


def check_mmcif_file(path: Path) -> None:
    """Raise ValueError unless the first data line of ``path`` (plain or gzip) is ``data_...``."""
    for line in _head_lines(path, 10_000):
        text = line.strip()
        if text and not text.startswith("#"):
            _reject_html(text, "an mmCIF file")
            if text.startswith("data_"):
                return
            raise ValueError(f"first line {text[:60]!r} is not an mmCIF data block header")
    raise ValueError("no mmCIF data block: empty file")


def check_text_list(path: Path) -> None:
    """Raise ValueError if a text list is empty or is an HTML/JSON error page."""
    for line in _head_lines(path, 10_000):
        if line.strip():
            _reject_html(line, "a text list")
            return
    raise ValueError("empty file")


# ----------------------------------------------------------------------------- IDs


def normalize_pdb_id(token: str) -> str:
    """``"1ABC"``, ``"1abcA"``, ``"1abc_A"``, ``"1ABC-A"`` -> entry ID ``"1abc"``.

    Args:
      token: a PDB entry ID, optionally followed by a chain ID (chain lists such as
        DeepCov's name chains like ``1a3aA``; the whole entry is fetched).
    Returns:
      The 4-character entry ID in lowercase.
    Raises:
      ValueError: the token is not a PDB ID.
    """
    m = _PDB_ID.match(token.strip())
    if m is None:
        raise ValueError(f"{token!r} is not a PDB ID (4 characters, first a digit, e.g. 1crn or 1crnA)")
    return m.group(1).lower()


def normalize_cath_domain(token: str) -> str:
    """Validate a CATH domain ID (``1c0pA01``: PDB ID, chain, 2-digit domain number).

    Returns:
      The ID with the PDB part lowercased and the chain kept as given (chains are case sensitive).
    Raises:
      ValueError: the token is not a CATH domain ID.
    """
    token = token.strip()
    if _CATH_DOMAIN.match(token) is None:
        raise ValueError(f"{token!r} is not a CATH domain ID (7 characters, e.g. 1c0pA01)")
    return token[:4].lower() + token[4:]


def normalize_cath_version(version: str) -> str:
    """``"latest"`` stays; ``"4.3.0"``, ``"4_3_0"``, ``"v4_3_0"`` -> ``"v4_3_0"``."""
    version = str(version).strip()
    if version == "latest":
        return version
    m = _VERSION.match(version)
    if m is None:
        raise ValueError(f"CATH version {version!r}: expected 'latest' or like 'v4_3_0'")
    return "v" + "_".join(m.groups())


def read_ids(path: PathLike) -> list[tuple[int, str]]:
    """Read an ID list: the first whitespace-separated field of each line.

    Blank lines and lines starting with ``#`` are skipped, so CATH list files (CLF, whose
    first column is the domain ID) and chain lists (``1a3aA 150``) can be given directly.

    Returns:
      (1-based line number, token) pairs in file order.
    """
    out = []
    with open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                out.append((lineno, text.split()[0]))
    return out


def collect_ids(ids: Sequence[str], ids_file: Optional[PathLike], normalize) -> list[str]:
    """Normalise command-line IDs and the IDs of a file; drop duplicates, keep order.

    Raises:
      ValueError: a command-line ID is malformed.
      ParseError: an ID in ``ids_file`` is malformed (names the file and line).
    """
    out: dict[str, None] = {}
    for token in ids:
        if isinstance(token, float):
            # The hydra override parser reads IDs such as 1e10 as the number 1e10.
            raise ValueError(f"ID {token!r} was read as a number; quote it, e.g. \"ids=['1e10']\"")
        out[normalize(str(token))] = None
    if ids_file:
        for lineno, token in read_ids(ids_file):
            try:
                out[normalize(token)] = None
            except ValueError as e:
                raise ParseError(ids_file, str(e), line=lineno) from None
    return list(out)


# ----------------------------------------------------------------------------- batch core


def default_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """``cache_dir`` if given, else ``<data_root>/downloads`` (data root from FOLDNET_DATA)."""
    return Path(cache_dir) if cache_dir not in (None, "", "null") else data_root() / "downloads"


@dataclasses.dataclass(frozen=True)
class _Job:
    key: str
    url: str
    dest: Path
    validate: object = None
    gunzip: bool = False
    sha256: Optional[str] = None
    md5: Optional[str] = None


def _run_jobs(source: str, jobs: Sequence[_Job], *, policy: NetworkPolicy, workers: int) -> FetchReport:
    """Fetch every job with a thread pool (downloads wait on the network, not the CPU)."""
    offline = threading.Event()

    def one(job: _Job) -> FetchItem:
        if offline.is_set():
            return FetchItem(job.key, job.url, None, "failed", "not attempted: the machine is offline")
        try:
            info = download_with_info(job.url, job.dest, sha256=job.sha256, md5=job.md5, gunzip=job.gunzip,
                                      validate=job.validate, policy=policy)
        except OfflineError as e:
            offline.set()
            return FetchItem(job.key, job.url, None, "failed", str(e))
        except DownloadError as e:
            return FetchItem(job.key, job.url, None, "failed", str(e))
        except OSError as e:  # disk full, permissions: this item fails, the batch goes on
            return FetchItem(job.key, job.url, None, "failed", f"{job.dest}: {e}")
        return FetchItem(job.key, job.url, info.path, "cached" if info.cached else "fetched", "", info.nbytes)

    report = FetchReport(source)
    if workers <= 1 or len(jobs) <= 1:
        report.items = [one(j) for j in jobs]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            report.items = list(pool.map(one, jobs))
    return report


def _format_template(template: str, what: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as e:
        raise ValueError(f"url_template {template!r} for {what}: unknown placeholder {e}; "
                         f"available: {', '.join('{' + k + '}' for k in fields)}") from None


# ----------------------------------------------------------------------------- PDB


def pdb_url(pdb_id: str, fmt: str = "pdb", *, mirror: str = "rcsb", base_url: Optional[str] = None,
            url_template: Optional[str] = None) -> str:
    """URL of a gzipped PDB-format or mmCIF entry.

    Args:
      pdb_id: entry ID (normalised with :func:`normalize_pdb_id`).
      fmt: ``"pdb"`` or ``"cif"``.
      mirror: ``"rcsb"`` (files.rcsb.org layout) or ``"wwpdb"`` / ``"pdbe"`` / ``"pdbj"``
        (wwPDB archive layout).
      base_url: replaces the mirror's base URL, keeping its layout.
      url_template: a full template instead, with ``{id}`` (lowercase), ``{ID}`` (uppercase),
        ``{mid}`` (middle two characters) and ``{fmt}``.
    Returns:
      The URL.
    """
    pid = normalize_pdb_id(pdb_id)
    if fmt not in _PDB_FORMATS:
        raise ValueError(f"format {fmt!r}: expected 'pdb' or 'cif'")
    fields = dict(id=pid, ID=pid.upper(), mid=pid[1:3], fmt=_PDB_FORMATS[fmt][1][1:])
    if url_template:
        return _format_template(url_template, "PDB entries", **fields)
    if mirror not in PDB_MIRRORS:
        raise ValueError(f"PDB mirror {mirror!r}: expected one of {sorted(PDB_MIRRORS)}")
    base = (base_url or PDB_MIRRORS[mirror]).rstrip("/")
    if mirror == "rcsb":
        return f"{base}/{pid.upper()}{_PDB_FORMATS[fmt][1]}.gz"
    if _PDB_FORMATS[fmt][0] == "pdb":
        return f"{base}/pdb/{pid[1:3]}/pdb{pid}.ent.gz"
    return f"{base}/mmCIF/{pid[1:3]}/{pid}.cif.gz"


def fetch_pdb(
    ids: Sequence[str],
    fmt: str = "pdb",
    *,
    mirror: str = "rcsb",
    base_url: Optional[str] = None,
    url_template: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    gunzip: bool = False,
    workers: int = 4,
    policy: Optional[NetworkPolicy] = None,
    **policy_fields: Any,
) -> FetchReport:
    """Fetch PDB entries as ``<cache>/pdb/<id>.pdb.gz`` or ``<cache>/mmcif/<id>.cif.gz``.

    Args:
      ids: entry IDs (``1crn``; chain suffixes like ``1crnA`` are accepted and dropped).
      fmt: ``"pdb"`` or ``"cif"``.
      mirror, base_url, url_template: where from (see :func:`pdb_url`).
      cache_dir: cache root (default ``<data_root>/downloads``).
      gunzip: store decompressed ``<id>.pdb`` / ``<id>.cif`` instead.
      policy, policy_fields: retries / backoff / timeout (``fetch.NetworkPolicy``; single fields
        as keywords, e.g. ``retries=0``), passed to ``fetch.download``.
      workers: parallel downloads.
    Returns:
      FetchReport keyed by lowercase entry ID.

    Example:
      >>> fetch_pdb(["1crn", "4hhb"], "cif").summary()
    """
    if fmt not in _PDB_FORMATS:
        raise ValueError(f"format {fmt!r}: expected 'pdb' or 'cif'")
    folder, ext = _PDB_FORMATS[fmt]
    root = default_cache_dir(cache_dir) / folder
    check = check_pdb_file if folder == "pdb" else check_mmcif_file
    jobs = []
    for pid in dict.fromkeys(normalize_pdb_id(i) for i in ids):
        url = pdb_url(pid, fmt, mirror=mirror, base_url=base_url, url_template=url_template)
        dest = root / (f"{pid}{ext}" if gunzip else f"{pid}{ext}.gz")
        jobs.append(_Job(pid, url, dest, check, gunzip))
    return _run_jobs(f"pdb ({fmt})", jobs, policy=NetworkPolicy.of(policy, **policy_fields), workers=workers)


# ----------------------------------------------------------------------------- CATH


def cath_domain_url(domain_id: str, *, version: str = CATH_DEFAULT_VERSION, base_url: Optional[str] = None,
                    url_template: Optional[str] = None) -> str:
    """URL of one CATH domain in PDB format from the CATH REST API.

    Args:
      domain_id: e.g. ``1c0pA01``.
      version: CATH release such as ``v4_3_0`` (or ``latest``, mapped to ``current``).
      base_url: API host, default ``https://www.cathdb.info``.
      url_template: a full template instead, with ``{domain}``, ``{pdb}`` and ``{version}``.
    """
    dom = normalize_cath_domain(domain_id)
    version = normalize_cath_version(version)
    if url_template:
        return _format_template(url_template, "CATH domains", domain=dom, pdb=dom[:4], version=version)
    api_version = "current" if version == "latest" else version
    return f"{(base_url or CATH_API_BASE).rstrip('/')}/version/{api_version}/api/rest/id/{dom}.pdb"


def fetch_cath_domain(
    domain_ids: Sequence[str],
    *,
    version: str = CATH_DEFAULT_VERSION,
    base_url: Optional[str] = None,
    url_template: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    workers: int = 4,
    policy: Optional[NetworkPolicy] = None,
    **policy_fields: Any,
) -> FetchReport:
    """Fetch CATH domain PDB files as ``<cache>/cath/<version>/domains/<domain>.pdb``.

    Args:
      domain_ids: CATH domain IDs (e.g. the first column of a CLF list).
      version, base_url, url_template: where from (see :func:`cath_domain_url`).
      cache_dir, workers, policy, policy_fields: as in :func:`fetch_pdb`.
    Returns:
      FetchReport keyed by domain ID.
    """
    version = normalize_cath_version(version)
    root = default_cache_dir(cache_dir) / "cath" / version / "domains"
    jobs = []
    names = NameAllocator("CATH domain id")  # 1abcA01 / 1abca01 are one file on case-insensitive disks
    for dom in dict.fromkeys(normalize_cath_domain(d) for d in domain_ids):
        url = cath_domain_url(dom, version=version, base_url=base_url, url_template=url_template)
        jobs.append(_Job(dom, url, root / f"{names.stem(dom)}.pdb", check_pdb_file))
    return _run_jobs("cath domains", jobs, policy=NetworkPolicy.of(policy, **policy_fields), workers=workers)


def cath_file_url(name: str, *, version: str = CATH_DEFAULT_VERSION, base_url: Optional[str] = None) -> str:
    """URL of a CATH release file.

    Args:
      name: a classification list (:data:`CATH_LISTS`, e.g. ``"domain-list"``; a ``cath-``
        prefix and ``.txt`` suffix are accepted) or a non-redundant set file
        ``"nonredundant-S40.list"`` / ``".atom.fa"`` / ``".pdb.tgz"`` (any S level).
      version: ``"latest"`` or a release such as ``"v4_3_0"``.
      base_url: releases root, default ``https://download.cathdb.info/cath/releases``.
    Returns:
      The URL (``.../all-releases/v4_3_0/cath-classification-data/cath-domain-list-v4_3_0.txt``).
    """
    version = normalize_cath_version(version)
    short = name.strip()
    short = short[len("cath-"):] if short.startswith("cath-") else short
    short = short[:-len(".txt")] if short.endswith(".txt") else short
    if short.startswith("dataset-"):
        short = short[len("dataset-"):]
    suffix = "" if version == "latest" else f"-{version}"
    release = "latest-release" if version == "latest" else f"all-releases/{version}"
    base = (base_url or CATH_RELEASES_BASE).rstrip("/")
    m = _CATH_NR.match(short)
    if m is not None:
        level, ext = m.groups()
        return f"{base}/{release}/non-redundant-data-sets/cath-dataset-nonredundant-{level}{suffix}.{ext}"
    if short in CATH_LISTS:
        return f"{base}/{release}/cath-classification-data/cath-{short}{suffix}.txt"
    raise ValueError(f"CATH file {name!r}: expected one of {', '.join(CATH_LISTS)} or "
                     "nonredundant-S<NN>.list / .atom.fa / .pdb.tgz")


def fetch_cath_list(
    name: str,
    *,
    version: str = CATH_DEFAULT_VERSION,
    base_url: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    policy: Optional[NetworkPolicy] = None,
    **policy_fields: Any,
) -> FetchReport:
    """Fetch one CATH release file into ``<cache>/cath/<version>/<file name>``.

    Args:
      name, version, base_url: which file (see :func:`cath_file_url`).
      cache_dir: cache root (default ``<data_root>/downloads``).
      md5, sha256: expected checksum, if known.
      policy, policy_fields: retries / backoff / timeout / progress (``fetch.NetworkPolicy``;
        single fields as keywords, e.g. ``retries=0``), passed to ``fetch.download``.
    Returns:
      FetchReport with one item keyed by ``name``.
    """
    url = cath_file_url(name, version=version, base_url=base_url)
    dest = default_cache_dir(cache_dir) / "cath" / normalize_cath_version(version) / url.rsplit("/", 1)[-1]
    check = None if dest.name.endswith(".tgz") else check_text_list
    job = _Job(name, url, dest, check, False, sha256, md5)
    return _run_jobs("cath list", [job], policy=NetworkPolicy.of(policy, **policy_fields), workers=1)


def fetch_cath_nonredundant(
    subset: str = "S40",
    *,
    version: str = CATH_DEFAULT_VERSION,
    base_url: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    extract: bool = True,
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    policy: Optional[NetworkPolicy] = None,
    **policy_fields: Any,
) -> FetchReport:
    """Fetch (and extract) a CATH non-redundant domain archive, e.g. ``cath-dataset-nonredundant-S40.pdb.tgz``.

    Args:
      subset: non-redundancy level, ``"S20"``, ``"S40"``, ...
      extract: unpack into ``<cache>/cath/<version>/nonredundant-<subset>/`` (it holds ``dompdb/``,
        one extension-less PDB file per domain).
      others: as in :func:`fetch_cath_list`.
    Returns:
      FetchReport with the archive item and, when extracted, an item for the folder.
    """
    report = fetch_cath_list(f"nonredundant-{subset}.pdb.tgz", version=version, base_url=base_url,
                             cache_dir=cache_dir, md5=md5, sha256=sha256, policy=policy, **policy_fields)
    report.source = f"cath nonredundant {subset}"
    if extract:
        _extract_items(report, lambda archive: archive.parent / f"nonredundant-{subset}")
    return report


# ----------------------------------------------------------------------------- PDNet


def fetch_pdnet(
    *,
    files: Sequence[str] = PDNET_FILES,
    base_url: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    extract: bool = True,
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    policy: Optional[NetworkPolicy] = None,
    **policy_fields: Any,
) -> FetchReport:
    """Fetch the PDNet dataset archive(s) into ``<cache>/pdnet/`` and optionally unpack them.

    Args:
      files: archive names under ``base_url`` (default ``train-data.tar.gz``, the dataset:
        input features and distance maps; ``train-src.tar.gz`` is PDNet's code).
      base_url: default ``http://deep.cs.umsl.edu/pdnet`` (from the ba-lab/pdnet README).
      extract: unpack ``<name>.tar.gz`` into ``<cache>/pdnet/<name>/``.
      md5, sha256: expected checksum (applies when a single file is fetched).
      others: as in :func:`fetch_cath_list`.
    Returns:
      FetchReport with one item per archive and, when extracted, one per folder.
    """
    if (md5 or sha256) and len(files) != 1:
        raise ValueError("a checksum can only be given when fetching a single PDNet file")
    root = default_cache_dir(cache_dir) / "pdnet"
    base = (base_url or PDNET_BASE).rstrip("/")
    for f in files:
        if not isinstance(f, str) or safe_stem(f, "PDNet file name") != f:
            raise ValueError(f"PDNet file name {f!r}: expected a plain file name such as {PDNET_FILES[0]}")
    if base.startswith("http://") and not (md5 or sha256):
        log.warning("pdnet: %s is plain http and publishes no checksum; the archive's pickles are read "
                    "with a data-only unpickler, but pass sha256=... if you know the archive's digest", base)
    jobs = [_Job(f, f"{base}/{f}", confined(root, f), None, False, sha256, md5) for f in files]
    report = _run_jobs("pdnet", jobs, policy=NetworkPolicy.of(policy, **policy_fields), workers=1)
    if extract:
        _extract_items(report, lambda archive: archive.parent / _archive_stem(archive.name))
    return report


# ----------------------------------------------------------------------------- archives


def _archive_stem(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name + ".d"


def extract_archive(archive: PathLike, dest_dir: PathLike) -> tuple[Path, bool]:
    """Unpack a tar archive (any compression) into ``dest_dir``, all or nothing.

    Members are extracted with tarfile's ``"data"`` filter (PEP 706), which refuses absolute
    paths, ``..`` components, links leaving the folder and device files. Extraction goes to a
    temporary folder beside ``dest_dir`` that is renamed into place at the end, so an interrupted
    run never leaves a half-filled ``dest_dir``.

    Args:
      archive: the ``.tar.gz`` / ``.tgz`` / ``.tar`` file.
      dest_dir: target folder; if it already exists the archive counts as extracted.
    Returns:
      (dest_dir, True if it already existed).
    Raises:
      DownloadError: the archive is not a readable tar file or has an unsafe member.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if dest_dir.is_dir():
        return dest_dir, True
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".extract", dir=dest_dir.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp, dest_dir)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(str(archive), f"cannot extract into {dest_dir}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir, False


def _extract_items(report: FetchReport, target) -> None:
    for item in list(report.items):
        if item.status == "failed" or item.path is None:
            continue
        dest = target(item.path)
        try:
            _, existed = extract_archive(item.path, dest)
        except DownloadError as e:
            report.items.append(FetchItem(f"{item.key} (extract)", str(item.path), None, "failed", str(e)))
            continue
        report.items.append(FetchItem(f"{item.key} (extract)", str(item.path), dest,
                                      "cached" if existed else "fetched"))


# ----------------------------------------------------------------------------- one generic URL


def fetch_url(url: str, *, dest: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
              md5: Optional[str] = None, sha256: Optional[str] = None,
              policy: Optional[NetworkPolicy] = None, **policy_fields: Any) -> FetchReport:
    """Fetch any URL into ``dest`` (default ``<cache>/url/<file name>``), with the same guarantees."""
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]) or "download"
    # The server names the file: ``..``, ``%2F`` or a control character must not pick the path.
    dest = Path(dest) if dest else confined(default_cache_dir(cache_dir) / "url", safe_stem(name, "file name"))
    job = _Job(name, url, dest, None, False, sha256, md5)
    return _run_jobs("url", [job], policy=NetworkPolicy.of(policy, **policy_fields), workers=1)


# ----------------------------------------------------------------------------- config-driven entry


SOURCES = ("pdb", "cath_domains", "cath_list", "cath_nonredundant", "pdnet", "url")


@dataclasses.dataclass
class FetchConfig:
    """Typed view of ``configs/fetch.yaml`` (the keys of ``foldnet fetch``).

    Attributes:
      source: one of :data:`SOURCES`.
      ids: PDB IDs (``pdb``) or CATH domain IDs (``cath_domains``).
      ids_file: a file with one ID per line (first column; ``#`` comments), added to ``ids``.
      format: ``pdb`` or ``cif`` (source ``pdb``).
      mirror: ``rcsb``, ``wwpdb``, ``pdbe`` or ``pdbj`` (source ``pdb``).
      name: CATH file for ``cath_list`` (see :func:`cath_file_url`).
      subset: non-redundancy level for ``cath_nonredundant`` (``S40``).
      version: CATH release (``v4_3_0`` or ``latest``).
      files: PDNet archive names.
      url: the URL for source ``url``.
      base_url: replaces the source's default base URL (mirror or ``file:///local/copy``).
      url_template: full URL template for ``pdb`` / ``cath_domains``.
      data_root: data root (``FOLDNET_DATA``); the cache defaults to ``<data_root>/downloads``.
      cache_dir: cache root, overrides the default.
      gunzip: store PDB/mmCIF entries decompressed.
      extract: unpack archives (``cath_nonredundant``, ``pdnet``).
      md5, sha256: expected checksum for single-file sources.
      retries, backoff, timeout, workers: download policy.
      progress: progress bars for single large files.
      report: optional TSV path for the per-item report.
    """

    source: str = "pdb"
    ids: list = dataclasses.field(default_factory=list)
    ids_file: Optional[str] = None
    format: str = "pdb"
    mirror: str = "rcsb"
    name: str = "domain-list"
    subset: str = "S40"
    version: str = CATH_DEFAULT_VERSION
    files: list = dataclasses.field(default_factory=lambda: list(PDNET_FILES))
    url: Optional[str] = None
    base_url: Optional[str] = None
    url_template: Optional[str] = None
    data_root: Optional[str] = None
    cache_dir: Optional[str] = None
    gunzip: bool = False
    extract: bool = True
    md5: Optional[str] = None
    sha256: Optional[str] = None
    retries: int = 3
    backoff: float = 0.5
    timeout: float = 30.0
    workers: int = 4
    progress: bool = True
    report: Optional[str] = None

    def __post_init__(self):
        from foldnet.data.errors import ConfigError

        for key, kind, low in (("retries", int, 0), ("workers", int, 1), ("backoff", (int, float), 0),
                               ("timeout", (int, float), 1e-3)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                raise ConfigError(key, f"must be a number >= {low}, got {value!r}")
        if not isinstance(self.ids, (list, tuple)):
            raise ConfigError("ids", f"must be a list such as ids=[1crn,4hhb], got {self.ids!r}")


def run_fetch(cfg: FetchConfig) -> FetchReport:
    """Dispatch a :class:`FetchConfig` to the source helper; write the TSV report if asked.

    Returns:
      The FetchReport (the caller decides the exit status from ``report.ok``).
    Raises:
      ValueError: unknown source or malformed option / command-line ID.
      ParseError: malformed ID in ``ids_file``.
    """
    cache = Path(cfg.cache_dir) if cfg.cache_dir else data_root(cfg.data_root) / "downloads"
    policy = NetworkPolicy(retries=cfg.retries, backoff=cfg.backoff, timeout=cfg.timeout)
    net = dict(policy=policy)
    single = dict(md5=cfg.md5, sha256=cfg.sha256, policy=NetworkPolicy.of(policy, progress=cfg.progress))
    if cfg.source == "pdb":
        ids = collect_ids(cfg.ids, cfg.ids_file, normalize_pdb_id)
        report = fetch_pdb(ids, cfg.format, mirror=cfg.mirror, base_url=cfg.base_url,
                           url_template=cfg.url_template, cache_dir=cache, gunzip=cfg.gunzip,
                           workers=cfg.workers, **net)
    elif cfg.source == "cath_domains":
        ids = collect_ids(cfg.ids, cfg.ids_file, normalize_cath_domain)
        report = fetch_cath_domain(ids, version=cfg.version, base_url=cfg.base_url,
                                   url_template=cfg.url_template, cache_dir=cache, workers=cfg.workers, **net)
    elif cfg.source == "cath_list":
        report = fetch_cath_list(cfg.name, version=cfg.version, base_url=cfg.base_url, cache_dir=cache, **single)
    elif cfg.source == "cath_nonredundant":
        report = fetch_cath_nonredundant(cfg.subset, version=cfg.version, base_url=cfg.base_url,
                                         cache_dir=cache, extract=cfg.extract, **single)
    elif cfg.source == "pdnet":
        report = fetch_pdnet(files=list(cfg.files), base_url=cfg.base_url, cache_dir=cache,
                             extract=cfg.extract, **single)
    elif cfg.source == "url":
        if not cfg.url:
            raise ValueError("source=url needs url=...")
        report = fetch_url(cfg.url, cache_dir=cache, **single)
    else:
        raise ValueError(f"source {cfg.source!r}: expected one of {', '.join(SOURCES)}")
    if cfg.source in ("pdb", "cath_domains") and not report.items:
        raise ValueError(f"source={cfg.source} needs ids=[...] or ids_file=...")
    if cfg.report:
        report.write_tsv(cfg.report)
    return report
