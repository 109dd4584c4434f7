"""CATH labels for chains, train/val/test splits, and the leakage report.

Labels: ProteinNet records carry no CATH label; the ProMod3 chain table
(``promod3_structure_db/chains.tsv.gz``) gives each chain name (``16pkA``) its
CATH domains, and ``16pk_1_A`` (ProteinNet) maps to that name.

Splits by CATH group (``level`` = ``topology`` C.A.T or ``superfamily``
C.A.T.H), deterministic by seed, with no group in two splits: groups that
share a multi-domain chain form one component and components are assigned
whole (``assign_by_cath``), so a chain goes to the held-out split if any of its
domains' groups is held out, and takes its other domains' groups with it.
Chains without a label go to ``unlabeled`` ("train" or "drop"). Or from a split
file (``name<TAB>split``, e.g. ``splits_recommended.tsv``).

Leakage report (Steinegger & Soeding-style k-mer prefilter, no alignment):
exact sequence duplicates across splits, and near-duplicates whose k-mer
containment |K(a) & K(b)| / min(|K(a)|, |K(b)|) >= threshold (k = 5 by
default, so 0.9 means nearly all 5-mers of the shorter chain occur in the
other); plus CATH topologies / superfamilies present in more than one split.
"""

from __future__ import annotations

import gzip
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from foldnet.common import residue_constants as rc

PathLike = Union[str, os.PathLike]
_PROTEINNET_ID = re.compile(r"^(?P<pdb>[0-9][A-Za-z0-9]{3})_(?P<model>\d+)_(?P<chain>[A-Za-z0-9]+)$")
# Split-file values meaning "use for training / validation / test"; anything else is excluded.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


def chain_name(record_id: str) -> str:
    """ProMod3 / CATH chain name of a record id: ``16pk_1_A`` -> ``16pkA``; others unchanged.

    CATH domain ids (``1c0pA01``) map to their chain (``1c0pA``).
    """
    m = _PROTEINNET_ID.match(record_id)
    if m:
        return m["pdb"] + m["chain"]
    if re.match(r"^[0-9][A-Za-z0-9]{3}[A-Za-z0-9]\d\d$", record_id):
        return record_id[:5]
    return record_id


def topology(cath: str) -> str:
    """C.A.T of a C.A.T.H label."""
    return ".".join(cath.split(".")[:3])


def labels_of(cath: str) -> list[str]:
    """The C.A.T.H labels of a stored comma-separated label string."""
    return [c for c in cath.split(",") if c]


def groups_of(cath: str, level: str) -> set[str]:
    """The CATH groups (``topology`` or ``superfamily``) of a label string."""
    if level not in ("topology", "superfamily"):
        raise ValueError(f"split level must be 'topology' or 'superfamily', got {level!r}")
    labels = labels_of(cath)
    return {topology(c) for c in labels} if level == "topology" else set(labels)


def read_chain_labels(path: PathLike) -> dict[str, str]:
    """Chain name -> comma-separated C.A.T.H of its domains (in domain-id order).

    Reads the ProMod3 chain table (``chains.tsv.gz``, column
    ``cath_domains(domain:superfamily:source_list)``); chains without domains
    are left out.

    Args:
      path: the table (plain or gzip).

    Returns:
      dict name -> labels.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    out: dict[str, str] = {}
    with opener(path, "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        try:
            i_name = header.index("name")
            i_dom = next(i for i, h in enumerate(header) if h.startswith("cath_domains"))
        except (ValueError, StopIteration):
            raise ValueError(f"{path}: header lacks 'name' / 'cath_domains' columns: {header}") from None
        for line in fh:
            f = line.rstrip("\n").split("\t")
            if len(f) <= i_dom or not f[i_dom]:
                continue
            doms = sorted(d.split(":") for d in f[i_dom].split(";") if d)
            out[f[i_name]] = ",".join(d[1] for d in doms if len(d) >= 2)
    return out


def read_split_file(path: PathLike) -> dict[str, str]:
    """Name -> split (``train`` / ``val`` / ``test``) from a ``name<TAB>split[...]`` file.

    Rows whose split is not a train/val/test alias (e.g. ``excluded_mixed_topologies``)
    are left out. Lines starting with ``#`` are comments.
    """
    out: dict[str, str] = {}
    with open(path, "rt") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            f = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if len(f) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'name<TAB>split', got {line.strip()!r}")
            s = SPLIT_ALIASES.get(f[1].strip().lower())
            if s is not None:
                out[f[0].strip()] = s
    return out


def _components(chain_groups: Sequence[set[str]]) -> dict[str, str]:
    """Union-find over groups that co-occur in a chain: group -> component root (min name)."""
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for gs in chain_groups:
        for g in gs:
            parent.setdefault(g, g)
        gs = sorted(gs)
        for g in gs[1:]:
            a, b = find(gs[0]), find(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {g: find(g) for g in parent}


def assign_by_cath(cath: Sequence[str], level: str = "topology", val_fraction: float = 0.05,
                   test_fraction: float = 0.10, seed: int = 0, unlabeled: str = "train") -> list[Optional[str]]:
    """Split chains by CATH group so that no group occurs in two splits.

    Groups that co-occur in a multi-domain chain are joined into one component
    (union-find), and whole components are assigned. A chain therefore goes
    to a held-out split exactly when any of its domains' groups is held out,
    and, unlike a per-group rule, its other domains' groups go with it, so
    train shares no group with val/test in either direction. Components, in
    an order permuted by ``seed``, fill test then val up to their target
    number of chains; a component that would overshoot a target by more than
    half of it is passed over (so the one giant component that multi-domain
    chains make of e.g. the Rossmann folds stays in train).

    Args:
      cath: per-chain comma-separated C.A.T.H labels ("" = unlabeled).
      level: "topology" or "superfamily".
      val_fraction, test_fraction: target fractions of labelled chains.
      seed: permutation seed of the components.
      unlabeled: "train" or "drop" (-> None).

    Returns:
      per-chain split name ("train", "val", "test") or None (dropped).
    """
    if unlabeled not in ("train", "drop"):
        raise ValueError(f"unlabeled must be 'train' or 'drop', got {unlabeled!r}")
    chain_groups = [groups_of(c, level) for c in cath]
    comp_of = _components(chain_groups)
    size: dict[str, int] = defaultdict(int)
    for gs in chain_groups:
        if gs:
            size[comp_of[next(iter(gs))]] += 1
    n_labelled = sum(size.values())
    comps = sorted(size)
    perm = np.random.default_rng(seed).permutation(len(comps))
    held: dict[str, str] = {}
    for split_name, frac in (("test", test_fraction), ("val", val_fraction)):
        target, covered = frac * n_labelled, 0
        for ci in perm:
            c = comps[ci]
            if c in held or covered >= target:
                continue
            if covered + size[c] <= target * 1.5:
                held[c] = split_name
                covered += size[c]
    out: list[Optional[str]] = []
    for gs in chain_groups:
        if not gs:
            out.append("train" if unlabeled == "train" else None)
        else:
            out.append(held.get(comp_of[next(iter(gs))], "train"))
    return out


# --------------------------------------------------------------------------
# Leakage report
# --------------------------------------------------------------------------

def _kmer_codes(seq: str, k: int) -> np.ndarray:
    """Distinct k-mers of a sequence as int64 codes (base 21)."""
    a = rc.sequence_to_aatype(seq).astype(np.int64)
    if len(a) < k:
        return np.zeros((0,), np.int64)
    codes = np.zeros(len(a) - k + 1, np.int64)
    for j in range(k):
        codes = codes * rc.NUM_RESTYPES + a[j : len(a) - k + 1 + j]
    return np.unique(codes)


def near_duplicates(queries: Sequence[str], targets: Sequence[str], k: int = 5, threshold: float = 0.9
                    ) -> list[tuple[int, int, float]]:
    """Pairs (query, target) whose k-mer containment is >= threshold.

    Vectorised inverted-index join: all (k-mer, chain) pairs of both sets are
    sorted by k-mer, matched with ``searchsorted``, and counted per chain pair.

    Args:
      queries, targets: sequences.
      k: k-mer length.
      threshold: containment threshold in [0, 1].

    Returns:
      sorted list of (query index, target index, containment).
    """
    def table(seqs):
        codes = [_kmer_codes(s, k) for s in seqs]
        sizes = np.array([len(c) for c in codes], np.int64)
        km = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(seqs), dtype=np.int64), sizes)
        order = np.argsort(km, kind="stable")
        return km[order], owner[order], sizes

    qk, qo, qs = table(queries)
    tk, to, ts = table(targets)
    if len(qk) == 0 or len(tk) == 0:
        return []
    lo = np.searchsorted(tk, qk, side="left")
    hi = np.searchsorted(tk, qk, side="right")
    counts = hi - lo
    hit = counts > 0
    qo, lo, counts = qo[hit], lo[hit], counts[hit]
    # Expand each query k-mer over its matching target rows.
    rep_q = np.repeat(qo, counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    rows = starts + np.arange(len(rep_q))
    rep_t = to[rows]
    pair = rep_q * len(targets) + rep_t
    uniq, shared = np.unique(pair, return_counts=True)
    qi, ti = uniq // len(targets), uniq % len(targets)
    denom = np.maximum(np.minimum(qs[qi], ts[ti]), 1)
    cont = shared / denom
    keep = cont >= threshold
    return [(int(a), int(b), float(c)) for a, b, c in zip(qi[keep], ti[keep], cont[keep])]


@dataclass
class LeakageInput:
    """What the leakage report needs of one split."""

    ids: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    cath: list[str] = field(default_factory=list)


def leakage_report(splits: Mapping[str, LeakageInput], k: int = 5, threshold: float = 0.9,
                   max_pairs: int = 1000) -> dict:
    """Sequence and CATH overlap between every pair of splits.

    Args:
      splits: split name -> ids, sequences, CATH label strings.
      k, threshold: near-duplicate k-mer size and containment threshold.
      max_pairs: at most this many example pairs listed per split pair (counts are exact).

    Returns:
      JSON-serialisable dict: per split pair the number of exact duplicates,
      near-duplicates (with examples), shared topologies and superfamilies.
    """
    names = list(splits)
    report: dict = {"k": k, "threshold": threshold, "splits": {}, "pairs": {}}
    for s in names:
        d = splits[s]
        report["splits"][s] = {
            "chains": len(d.ids),
            "labelled": sum(1 for c in d.cath if c),
            "topologies": len({t for c in d.cath for t in groups_of(c, "topology")}),
            "superfamilies": len({t for c in d.cath for t in groups_of(c, "superfamily")}),
        }
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            A, B = splits[a], splits[b]
            by_seq = defaultdict(list)
            for j, s in enumerate(B.sequences):
                by_seq[s].append(j)
            exact = [(A.ids[x], B.ids[y]) for x, s in enumerate(A.sequences) for y in by_seq.get(s, [])]
            near = near_duplicates(A.sequences, B.sequences, k=k, threshold=threshold)
            entry = {}
            for level in ("topology", "superfamily"):
                ga = {g for c in A.cath for g in groups_of(c, level)}
                gb = {g for c in B.cath for g in groups_of(c, level)}
                shared = sorted(ga & gb)
                entry[f"shared_{level}"] = {"count": len(shared), "groups": shared[:max_pairs]}
            entry["exact_duplicates"] = {"count": len(exact), "pairs": [list(p) for p in exact[:max_pairs]]}
            entry["near_duplicates"] = {
                "count": len(near),
                "pairs": [[A.ids[x], B.ids[y], round(c, 4)] for x, y, c in near[:max_pairs]],
            }
            report["pairs"][f"{a}~{b}"] = entry
    return report


def format_leakage(report: dict) -> str:
    """A short human-readable summary of ``leakage_report``."""
    lines = [f"leakage report (k={report['k']}, containment >= {report['threshold']}):"]
    for s, d in report["splits"].items():
        lines.append(f"  {s:<6} {d['chains']:>6} chains, {d['labelled']} labelled, "
                     f"{d['topologies']} topologies, {d['superfamilies']} superfamilies")
    for pair, e in report["pairs"].items():
        lines.append(
            f"  {pair:<12} exact dup {e['exact_duplicates']['count']:>4}  near dup {e['near_duplicates']['count']:>4}"
            f"  shared topologies {e['shared_topology']['count']:>4}  shared superfamilies "
            f"{e['shared_superfamily']['count']:>4}"
        )
    return "\n".join(lines)
