"""``foldnet evaluate``: predict + fold held-out CATH domains and score them against the natives.

Domains (one source per run):

* default: the held-out test domains of the bundled ProMod3 set -- the rows of
  ``promod3_structure_db/splits_recommended.tsv`` with ``split == test`` and
  ``single_domain_chain == 1``, read from ``pdb_single_domain/<name>.pdb.gz``
  with the project's PDB reader (CATH label from ``REMARK 901``);
* ``split_file`` = that table (any split via ``split``) or a plain list of ids
  (CATH domain ids like ``1c0pA01``, or file names), with ``pdb_dir``;
* ``h5`` = a split built by ``foldnet build-dataset``.

Methods scored on the same domains (one row per domain and method):

* ``single``: the network without a profile (has_profile = 0);
* ``profile``: the network with the chain's ProteinNet profile, where
  ``proteinnet/testing.gz`` has one (promod3 ``16pkA`` <-> ProteinNet
  ``16pk_1_A``; the sequences must match) or the HDF5 chain carries one;
* ``prior``: the sequence-separation prior distogram and the residue-type mean
  torsions of ``foldnet.model.prior`` (a baseline the network must beat);
* ``true_distogram``: the native distogram and torsions smoothed into the
  model's bins (``foldnet.structure.oracle``) -- the ceiling folding can reach.

Each is folded with the same ``FoldConfig`` and seed. Metrics (``foldnet.metrics``):
top-L/5, L/2, L contact precision per separation range, expected-distance MAE
of pairs truly < 8 and < 12 A, distogram NLL, contact ECE, phi/psi circular MAE
and correlation, and of the folded model RMSD, TM-score, GDT_TS, GDT_HA and
lDDT-Calpha. Each domain's results go to ``<out_dir>/domains/<id>.json``
(atomically) as soon as it is done; a re-run skips domains whose file exists
with the same settings fingerprint, so an interrupted evaluation resumes.
Aggregation (``results.csv``, ``summary.json``, ``report.md``, plots) reads
those files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from foldnet.common import atomic, geometry_np
from foldnet.common import residue_constants as rc
from foldnet.common.compilation_cache import enable_compilation_cache
from foldnet.common.paths import data_root as resolve_data_root
from foldnet.common.paths import safe_stem
from foldnet.common.protein import Protein
from foldnet.data.errors import ParseError
from foldnet.inference import report
from foldnet.inference.predict import (
    check_fold_reference,
    fold_distributions,
    make_fold_config,
    run_log,
)
from foldnet.inference.tiling import TilingConfig
from foldnet.structure.config import FoldConfig

log = logging.getLogger(__name__)

METHODS = ("single", "profile", "prior", "true_distogram")
PDB_SUFFIXES = ("", ".pdb", ".pdb.gz", ".ent", ".ent.gz", ".cif", ".cif.gz")
RESULT_VERSION = 2  # 2: per-residue confidence, its features and true lDDT; distance-error scores

# Per-domain metric columns of results.csv, in order (all per method row).
CONTACT_COLUMNS = [
    f"prec_{r}_{k}" for r in ("short", "medium", "long") for k in ("L5", "L2", "L")
]
DISTANCE_COLUMNS = [f"mae_{r}_d{c}" for r in ("short", "medium", "long") for c in (8, 12)]
DISTOGRAM_COLUMNS = CONTACT_COLUMNS + DISTANCE_COLUMNS + ["dist_nll", "contact_ece"]
TORSION_COLUMNS = ["phi_mae_deg", "psi_mae_deg", "phi_circ_corr", "psi_circ_corr"]
STRUCTURE_COLUMNS = ["rmsd", "tm_score", "gdt_ts", "gdt_ha", "lddt_ca", "fold_energy", "mean_confidence",
                     "plddt_pearson", "pde_pearson", "pde_spearman"]
METRIC_COLUMNS = DISTOGRAM_COLUMNS + TORSION_COLUMNS + STRUCTURE_COLUMNS
ID_COLUMNS = ["id", "method", "length", "cath", "cath_class", "cath_topology", "length_bin", "source"]
CSV_COLUMNS = ID_COLUMNS + METRIC_COLUMNS + ["seconds_predict", "seconds_fold"]
# Metrics shown in the markdown tables (the CSV has all of them).
TABLE_COLUMNS = ["prec_long_L5", "prec_medium_L5", "mae_long_d8", "dist_nll", "phi_mae_deg", "psi_mae_deg",
                 "rmsd", "tm_score", "gdt_ts", "lddt_ca"]
CALIBRATION_BINS = 10


@dataclasses.dataclass
class EvaluateConfig:
    """Options of ``foldnet evaluate`` (configs/evaluate.yaml mirrors this).

    Attributes:
      checkpoint: training run directory or checkpoint (needed for "single"/"profile").
      step: checkpoint step (None: best kept, else latest).
      out_dir: results folder.
      data_root: data bundle root (None: $FOLDNET_DATA, else ./data).
      split_file: splits table or id list (None: the bundled splits_recommended.tsv).
      split: which split of a splits table to evaluate.
      pdb_dir: folder of the structure files (None: the bundled pdb_single_domain/).
      h5: a built HDF5 split instead of PDB files.
      proteinnet: ProteinNet file with profiles for "profile" mode (None: the
        bundled proteinnet/testing.gz; "" = no profile mode for PDB domains).
      max_domains: evaluate at most this many domains (0 = all), in list order.
      max_length: skip longer domains (0 = no limit).
      methods: subset of METHODS.
      prior: prior .npz (``Prior.save``) or a training .h5 to fit one on; None:
        ``<run>/prior.npz`` if the run has one, else fitted on ``prior_max_chains``
        chains of proteinnet/training.gz.
      prior_max_chains: chains used when the prior is fitted here.
      tiling: window options of the network (short chains padded to multiples of 16 by
        default: one compilation per bucket across the many domain lengths).
      fold: the folding configuration.
      seed: folding seed (the same for every method of a domain).
      num_example_maps: domains whose distance maps are drawn in the report.
      progress: tqdm bar over domains.
      overwrite: re-evaluate domains that already have a result file.
      compilation_cache_dir: JAX persistent compilation cache folder (None = off).
      workers: domains evaluated in parallel processes (1 = sequential in this
        process; each worker loads the network and compiles its own functions).
      fold_reference: "prior": the network's distograms (single, profile) are folded
        relative to the separation prior (``PredictConfig.fold_reference``); "none": not.
        The baselines always fold on their own distogram alone.
    """

    checkpoint: Optional[str] = None
    step: Optional[int] = None
    out_dir: str = "evaluation"
    data_root: Optional[str] = None
    split_file: Optional[str] = None
    split: str = "test"
    pdb_dir: Optional[str] = None
    h5: Optional[str] = None
    proteinnet: Optional[str] = None
    max_domains: int = 0
    max_length: int = 0
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    prior: Optional[str] = None
    prior_max_chains: int = 1000
    tiling: TilingConfig = dataclasses.field(default_factory=lambda: TilingConfig(pad_multiple=16))
    fold: FoldConfig = dataclasses.field(default_factory=FoldConfig)
    seed: int = 0
    num_example_maps: int = 3
    progress: bool = True
    overwrite: bool = False
    compilation_cache_dir: Optional[str] = None
    workers: int = 1
    fold_reference: str = "prior"

    def __post_init__(self):
        from foldnet.data.errors import ConfigError

        check_fold_reference(self.fold_reference)
        for key in ("max_domains", "max_length", "num_example_maps"):
            if getattr(self, key) < 0:
                raise ConfigError(key, f"must be >= 0 (0 = {'no limit' if key != 'num_example_maps' else 'none'}), "
                                       f"got {getattr(self, key)}")
        for key in ("workers", "prior_max_chains"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError("methods", f"{list(self.methods)}: expected a non-empty subset of {list(METHODS)}")
        if self.data_root not in (None, "", "null") and not Path(self.data_root).expanduser().is_dir():
            raise ConfigError("data_root", f"{self.data_root} is not a directory (set FOLDNET_DATA or data_root=...)")


@dataclasses.dataclass
class Domain:
    """One domain to evaluate: the native structure and, if known, its profile."""

    id: str
    protein: Protein
    profile: Optional[np.ndarray]
    source: str


# ----------------------------------------------------------------------------
# Domain sources
# ----------------------------------------------------------------------------


def read_split_table(path: Path, split: str) -> list[str]:
    """Names of the single-domain chains of one split in a ``splits_recommended.tsv`` table."""
    names = []
    with open(path) as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        try:
            i_name, i_split, i_single = header.index("name"), header.index("split"), header.index("single_domain_chain")
        except ValueError:
            raise ParseError(path, f"not a splits table (header {header})", line=1) from None
        for lineno, line in enumerate(fh, start=2):
            f = line.rstrip("\n").split("\t")
            if len(f) <= max(i_name, i_split, i_single):
                raise ParseError(path, f"expected {len(header)} tab-separated columns, got {len(f)}", line=lineno)
            if f[i_split] == split and f[i_single] == "1":
                names.append(f[i_name])
    return names


def read_id_list(path: Path, split: str) -> list[str]:
    """Ids of a splits table (filtered to ``split``) or of a plain list (first word per line, '#' comments)."""
    with open(path) as fh:
        first = fh.readline()
    if first.startswith("#name\t") or first.startswith("name\t"):
        return read_split_table(path, split)
    ids = []
    with open(path) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line.split()[0])
    return ids


def find_structure_file(pdb_dir: Path, domain_id: str) -> Optional[Path]:
    """The file of an id in ``pdb_dir``: ``<id><suffix>``, or for a whole-chain CATH
    domain id (``16pkA00``) the chain file ``16pkA<suffix>``."""
    names = [domain_id]
    if len(domain_id) == 7 and domain_id.endswith("00"):
        names.append(domain_id[:5])
    for name in names:
        if safe_stem(name) != name:  # an id such as ../x or /abs names no file in pdb_dir
            continue
        for suffix in PDB_SUFFIXES:
            p = pdb_dir / f"{name}{suffix}"
            if p.is_file():
                return p
    return None


def proteinnet_id(name: str) -> str:
    """ProteinNet id of a promod3 chain name: ``16pkA`` -> ``16pk_1_A``."""
    return f"{name[:4]}_1_{name[4:]}"


def load_profiles(path: Optional[Path], names: Sequence[str]) -> dict[str, tuple[str, np.ndarray]]:
    """{promod3 name: (ProteinNet sequence, profile [L, 20])} for the names found in a ProteinNet file."""
    if path is None or not path.is_file():
        return {}
    from foldnet.data.proteinnet import read_proteinnet

    wanted = {proteinnet_id(n): n for n in names}
    out = {}
    for p in read_proteinnet(path, ids=set(wanted)):
        if p.profile is not None:
            out[wanted[p.id]] = (p.sequence, np.asarray(p.profile, np.float32))
    return out


def iter_domains(cfg: EvaluateConfig) -> Iterator[Domain | tuple[str, str]]:
    """The domains of the configured source, in order; unreadable ones as (id, reason).

    Yields:
      Domain, or (id, error message) for a domain that cannot be read.
    """
    limit = cfg.max_domains if cfg.max_domains > 0 else None
    if cfg.h5:
        yield from _h5_domains(cfg, limit)
    else:
        yield from _pdb_domains(cfg, resolve_data_root(cfg.data_root), limit)


def _h5_domains(cfg: EvaluateConfig, limit: Optional[int]) -> Iterator[Domain]:
    """The chains of an HDF5 cache (``cfg.h5``), with their stored profiles."""
    from foldnet.data.cache import H5Dataset

    ds = H5Dataset(cfg.h5)
    n = 0
    for i in range(len(ds)):
        if limit is not None and n >= limit:
            return
        if cfg.max_length > 0 and ds.lengths[i] > cfg.max_length:
            continue
        prot = ds.protein(i)
        n += 1
        yield Domain(prot.id, prot.replace(profile=None), prot.profile, f"{cfg.h5}:{prot.id}")


def _pdb_domains(cfg: EvaluateConfig, root: Path, limit: Optional[int]) -> Iterator[Domain | tuple[str, str]]:
    """The domains of a split file read from their PDB files, profiles from ProteinNet."""
    split_file = Path(cfg.split_file) if cfg.split_file else root / "promod3_structure_db" / "splits_recommended.tsv"
    pdb_dir = Path(cfg.pdb_dir) if cfg.pdb_dir else root / "promod3_structure_db" / "pdb_single_domain"
    if not split_file.is_file():
        raise FileNotFoundError(f"evaluate: domain list {split_file} does not exist (set split_file= or data_root=)")
    if not pdb_dir.is_dir():
        raise FileNotFoundError(f"evaluate: structure folder {pdb_dir} does not exist (set pdb_dir=)")
    ids = read_id_list(split_file, cfg.split)
    from foldnet.data.structure_parser import read_structure

    pn = root / "proteinnet" / "testing.gz" if cfg.proteinnet is None else (Path(cfg.proteinnet) if cfg.proteinnet else None)
    selected: list[tuple[str, Path]] = []
    proteins: dict[str, Protein] = {}
    for did in ids:
        if limit is not None and len(selected) >= limit:
            break
        path = find_structure_file(pdb_dir, did)
        if path is None:
            yield did, f"no structure file for {did} in {pdb_dir}"
            continue
        if cfg.max_length > 0:
            try:
                prot = read_structure(path)
            except (ParseError, ValueError) as e:
                yield did, str(e)
                continue
            if len(prot) > cfg.max_length:
                continue
            proteins[did] = prot
        selected.append((did, path))
    names = [(did[:5] if len(did) == 7 and did.endswith("00") else did) for did, _ in selected]
    profiles = load_profiles(pn, names) if "profile" in cfg.methods else {}
    for (did, path), name in zip(selected, names):
        try:
            prot = proteins.pop(did) if did in proteins else read_structure(path)
        except (ParseError, ValueError) as e:
            yield did, str(e)
            continue
        prof = None
        if name in profiles:
            seq, p = profiles[name]
            if seq == prot.sequence:
                prof = p
            else:
                log.warning("%s: ProteinNet sequence differs from the PDB file; no profile mode", did)
        yield Domain(did, prot.replace(id=did), prof, str(path))


# ----------------------------------------------------------------------------
# Prior baseline
# ----------------------------------------------------------------------------


def load_prior(cfg: EvaluateConfig, run_dir: Optional[Path]):
    """The sequence-separation / residue-type prior (see ``EvaluateConfig.prior``)."""
    from foldnet.model.prior import Prior, PriorBuilder, fit_priors

    if cfg.prior:
        p = Path(cfg.prior)
        if p.suffix == ".npz":
            return Prior.load(p)
        return fit_priors(p, max_chains=cfg.prior_max_chains)
    if run_dir is not None and (run_dir / "prior.npz").is_file():
        return Prior.load(run_dir / "prior.npz")
    from foldnet.data.proteinnet import iter_proteinnet

    train = resolve_data_root(cfg.data_root) / "proteinnet" / "training.gz"
    if not train.is_file():
        raise FileNotFoundError(f"no prior: give prior=<prior.npz or train.h5>; {train} does not exist to fit one")
    builder = PriorBuilder()
    for n, prot in enumerate(iter_proteinnet(train, errors="skip")):
        if n >= cfg.prior_max_chains:
            break
        if isinstance(prot, ParseError):
            continue
        dist, pmask = geometry_np.cb_distance_map(prot)
        tors, tmask = geometry_np.backbone_torsions(prot)
        builder.add_chain(prot.aatype, dist, pmask, np.nan_to_num(tors), tmask)
    return builder.build()


def prior_distributions(prior, protein: Protein, torsion_sigma_deg: float = 20.0) -> dict[str, np.ndarray]:
    """Prior distogram [L, L, 65] and phi/psi bins centred on the residue-type circular means."""
    from foldnet.structure import torsion_bins_from_angles

    out = prior.predict_chain(protein.aatype)
    ones = np.ones(len(protein), np.float32)
    return {
        "dist_probs": out["dist_probs"],
        "phi_probs": torsion_bins_from_angles(out["phi"], ones, torsion_sigma_deg),
        "psi_probs": torsion_bins_from_angles(out["psi"], ones, torsion_sigma_deg),
    }


# ----------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Native:
    """Targets of one domain, computed once and shared by all methods."""

    dist: np.ndarray  # [L, L] CB-CB (virtual CB) distances, NaN where unknown
    mask: np.ndarray  # [L] residues with N, CA, C
    torsions: np.ndarray  # [L, 3] radians
    torsion_mask: np.ndarray  # [L, 3]
    ca: np.ndarray  # [L, 3]

    @classmethod
    def of(cls, protein: Protein) -> "Native":
        dist, pmask = geometry_np.cb_distance_map(protein)
        tors, tmask = geometry_np.backbone_torsions(protein)
        return cls(
            dist=np.where(pmask > 0, dist, np.nan).astype(np.float64),
            mask=protein.backbone_mask,
            torsions=np.nan_to_num(tors),
            torsion_mask=tmask,
            ca=protein.atom_positions[:, rc.CA_IDX].astype(np.float64),
        )


def distogram_scores(dist_probs: np.ndarray, phi_probs, psi_probs, native: Native) -> tuple[dict, list]:
    """Distogram and torsion metrics of one prediction, and its contact calibration table.

    Returns:
      (metrics {column: value}, [count, sum of confidences, sum of positives] per calibration bin).
    """
    from foldnet import metrics as M

    cp = M.contact_probabilities(dist_probs)
    out: dict[str, float] = {}
    prec = M.contact_precision(cp, native.dist, native.mask)
    for r in ("short", "medium", "long"):
        for k, tag in (("L/5", "L5"), ("L/2", "L2"), ("L", "L")):
            out[f"prec_{r}_{tag}"] = prec[f"{r}/top_{k}"]
    mae = M.distance_mae(M.expected_distance(dist_probs), native.dist, native.mask)
    for r in ("short", "medium", "long"):
        for c in (8, 12):
            out[f"mae_{r}_d{c}"] = mae[f"{r}/d{c}"]
    out["dist_nll"] = M.distogram_nll(dist_probs, native.dist, native.mask)
    probs, labels = M.contact_pairs(cp, native.dist, native.mask)
    out["contact_ece"] = M.expected_calibration_error(probs, labels, CALIBRATION_BINS) if len(probs) else math.nan
    count, conf, freq = M.calibration_table(np.clip(probs, 0.0, 1.0), labels, CALIBRATION_BINS)
    table = [count.tolist(), np.nan_to_num(conf * count).tolist(), np.nan_to_num(freq * count).tolist()]
    pred = np.zeros_like(native.torsions)
    pred[:, 0] = M.expected_angle(phi_probs)
    pred[:, 1] = M.expected_angle(psi_probs)
    tm = M.torsion_metrics(pred, native.torsions, native.torsion_mask)
    out["phi_mae_deg"], out["psi_mae_deg"] = tm["phi/mae_deg"], tm["psi/mae_deg"]
    out["phi_circ_corr"], out["psi_circ_corr"] = tm["phi/circ_corr"], tm["psi/circ_corr"]
    return out, table


def folded_scores(model: Protein, native: Native) -> dict[str, float]:
    """RMSD, TM-score, GDT_TS, GDT_HA, lDDT-Calpha of a folded model (CA atoms)."""
    from foldnet import metrics as M

    model_ca = model.atom_positions[:, rc.CA_IDX].astype(np.float64)
    s = M.structure_scores(model_ca, native.ca, native.mask, native_length=len(native.mask))
    return {
        "rmsd": s.rmsd,
        "tm_score": s.tm_score,
        "gdt_ts": s.gdt_ts,
        "gdt_ha": s.gdt_ha,
        "lddt_ca": M.lddt(model_ca, native.ca, native.mask),
    }


def confidence_scores(dist_probs: np.ndarray, model: Protein, native: Native, has_profile: bool,
                      calibration) -> tuple[dict, dict]:
    """Per-residue confidence, its features and the truth; and the distance-error scores.

    Returns:
      (residues: ``plddt`` [L] (the written B-factors), ``lddt`` [L] true per-residue
      lDDT-Calpha x 100 (None where undefined), ``features`` [L, F] (``confidence.FEATURES``,
      what ``foldnet.inference.calibrate`` fits on); pair scores: Pearson / Spearman of the
      predicted distance error vs the actual |E[d] - min(d_true, 22.31 A)| over pairs |i-j| >= 3.)
    """
    from foldnet import metrics as M
    from foldnet.structure import confidence as C

    model_dist, _ = geometry_np.cb_distance_map(model)
    feats = C.residue_features(dist_probs, model_dist, has_profile)
    plddt = C.model_confidence(calibration, dist_probs, model_dist, has_profile)
    model_ca = model.atom_positions[:, rc.CA_IDX].astype(np.float64)
    true = 100.0 * M.lddt_per_residue(model_ca, native.ca, native.mask)
    pde = C.distance_error_matrix(dist_probs)
    # The distogram cannot tell 25 A from 40 A (its last bin is open), so the actual error is
    # taken against the true distance capped at the last bin's centre: the error it can express.
    actual = np.abs(M.expected_distance(dist_probs) - np.minimum(native.dist, rc.DISTOGRAM_CENTERS[-1]))
    idx = np.arange(len(pde))
    far = np.abs(idx[:, None] - idx[None, :]) >= 3
    pairs = far & np.isfinite(actual)
    residues = {
        "plddt": np.round(plddt.astype(np.float64), 2).tolist(),
        "lddt": [None if not np.isfinite(v) else round(float(v), 2) for v in true],
        "features": np.round(feats, 5).tolist(),
    }
    return residues, {"pde_pearson": M.pearson(pde[pairs], actual[pairs]),
                      "pde_spearman": M.spearman(pde[pairs], actual[pairs]),
                      "plddt_pearson": M.pearson(plddt, true)}


def settings_fingerprint(cfg: EvaluateConfig, checkpoint_id: str, calibration_id: str = "") -> str:
    """Hash of everything that changes a domain's results (resume only reuses matching files)."""
    key = {
        "version": RESULT_VERSION,
        "checkpoint": checkpoint_id,
        "methods": sorted(cfg.methods),
        "tiling": dataclasses.asdict(cfg.tiling),
        "fold": dataclasses.asdict(make_fold_config(cfg.fold)),
        "seed": cfg.seed,
        "prior": cfg.prior,
        "fold_reference": cfg.fold_reference,
        "calibration": calibration_id,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DomainEvaluator:
    """Scores domains with a loaded network, prior and fold config (reused across domains).

    Args:
      predictor: ``predict.Predictor`` or None when no network method is asked for.
      prior: ``baselines.Prior`` or None when "prior" is not asked for.
      fold_cfg: the FoldConfig.
      methods: which METHODS to run.
      seed: folding seed.
    """

    def __init__(self, predictor, prior, fold_cfg, methods: Sequence[str], seed: int, fold_reference: str = "none",
                 calibration=None):
        self.predictor, self.prior, self.fold_cfg = predictor, prior, fold_cfg
        self.methods, self.seed = tuple(methods), seed
        self.fold_reference = fold_reference
        self.calibration = calibration

    def distributions(self, method: str, domain: Domain) -> Optional[dict]:
        from foldnet.inference.features import input_features
        from foldnet.structure import true_distributions

        prot = domain.protein
        if method == "single":
            return self.predictor.distributions(input_features(prot, None))
        if method == "profile":
            if domain.profile is None:
                return None
            return self.predictor.distributions(input_features(prot, domain.profile))
        if method == "prior":
            return prior_distributions(self.prior, prot)
        if method == "true_distogram":
            d, phi, psi = true_distributions(prot)
            out = {"dist_probs": d, "phi_probs": phi, "psi_probs": psi}
            if self.fold_cfg.weight_orientation > 0:  # the oracle knows the orientations too
                from foldnet.structure import true_orientations

                out.update({f"orient_{k}_probs": v for k, v in true_orientations(prot).items()})
            return out
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")

    def evaluate(self, domain: Domain, keep_maps: bool = False) -> dict:
        """All methods on one domain.

        Returns:
          The JSON-able result: domain info, per-method metrics and calibration
          tables, timings, and (``keep_maps``) float16 maps for the report figure.
        """

        prot = domain.protein
        native = Native.of(prot)
        cath = prot.cath or ""
        result: dict[str, Any] = {
            "id": domain.id, "length": len(prot), "cath": cath, "source": domain.source,
            "has_profile": domain.profile is not None, "methods": {}, "calibration": {},
        }
        maps = {}
        for method in self.methods:
            t0 = time.perf_counter()
            dist = self.distributions(method, domain)
            if dist is None:
                continue
            t1 = time.perf_counter()
            scores, table = distogram_scores(dist["dist_probs"], dist["phi_probs"], dist["psi_probs"], native)
            network = method in ("single", "profile")
            background = self.prior if network and self.fold_reference == "prior" else None
            folded = fold_distributions(prot.replace(id=domain.id), dist, self.fold_cfg, self.seed, background)
            t2 = time.perf_counter()
            scores.update(folded_scores(folded.protein, native))
            scores["fold_energy"] = folded.energy
            residues, pair_scores = confidence_scores(dist["dist_probs"], folded.protein, native,
                                                      method == "profile", self.calibration)
            scores.update(pair_scores)
            scores["mean_confidence"] = float(np.mean(residues["plddt"])) if len(prot) else math.nan
            result.setdefault("residues", {})[method] = residues
            scores["seconds_predict"] = t1 - t0
            scores["seconds_fold"] = t2 - t1
            result["methods"][method] = scores
            result["calibration"][method] = table
            if keep_maps and method in ("single", "profile"):
                maps[method] = report.expected_distance(dist["dist_probs"]).astype(np.float16)
        if keep_maps:
            maps["true"] = np.nan_to_num(native.dist, nan=0.0).astype(np.float16)
            result["_maps"] = maps
        return result


# ----------------------------------------------------------------------------
# Driver and aggregation
# ----------------------------------------------------------------------------


def _safe_name(domain_id: str) -> str:
    """File stem of a domain's results (``foldnet.common.paths.safe_stem``: confined, collision-free)."""
    return safe_stem(domain_id, "domain id")


def evaluate(cfg: EvaluateConfig) -> dict:
    """Run ``foldnet evaluate``; returns the summary (also in ``<out_dir>/summary.json``).

    Args:
      cfg: the options.

    Returns:
      The summary dict: overall / by-class / by-length tables per method,
      pooled contact ECE, counts of evaluated, skipped (resumed) and failed domains.

    Raises:
      ValueError: unknown methods, or a network method without a checkpoint.
    """
    Path(cfg.out_dir, "domains").mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_tmp(Path(cfg.out_dir))
    atomic.remove_stale_tmp(Path(cfg.out_dir, "domains"))
    with run_log(Path(cfg.out_dir) / "evaluate.log"):
        return _evaluate(cfg)


def _evaluate(cfg: EvaluateConfig) -> dict:
    from tqdm import tqdm

    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"evaluate: unknown methods {sorted(unknown)}; known: {list(METHODS)}")
    out = Path(cfg.out_dir)
    dom_dir = out / "domains"
    dom_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    enable_compilation_cache(cfg.compilation_cache_dir)

    model, run_dir, ckpt_id = None, None, ""
    if {"single", "profile"} & set(cfg.methods):
        from foldnet.inference import pretrained

        name = pretrained.shipped_name(cfg.checkpoint)
        if name is not None and name not in pretrained.available():
            raise ValueError(
                f"evaluate: methods single/profile need a network: no bundled model {name!r} found; "
                "pass checkpoint=<training run dir>, or run only the baselines with "
                "methods=[prior,true_distogram]"
            )
        # run_dir holds the run's prior.npz; a shipped model is identified by its weights' checksum
        run_dir, ckpt_id = pretrained.checkpoint_home(cfg.checkpoint, cfg.step)
        model = pretrained.load_for_inference(cfg.checkpoint, cfg.step)
        # tiling.crop_size null: the network's own training crop (recorded resolved below)
        cfg = dataclasses.replace(cfg, tiling=cfg.tiling.for_model(pretrained.training_crop(cfg.checkpoint, cfg.step)))
    from foldnet.structure.confidence import load_calibration

    calibration = None if run_dir is None else load_calibration(run_dir)
    calibration_id = "" if calibration is None else hashlib.sha256(calibration.to_json().encode()).hexdigest()[:16]
    needs_prior = "prior" in cfg.methods or (model is not None and cfg.fold_reference == "prior")
    prior = load_prior(cfg, run_dir) if needs_prior else None
    setup = (model, cfg.tiling, prior, make_fold_config(cfg.fold), tuple(cfg.methods), cfg.seed,
             cfg.compilation_cache_dir, cfg.fold_reference, calibration)
    fingerprint = settings_fingerprint(cfg, ckpt_id, calibration_id)

    skipped, failures, order, todo, evaluated = 0, [], [], [], []
    for k, dom in enumerate(iter_domains(cfg)):
        if isinstance(dom, tuple):
            failures.append({"id": dom[0], "error": dom[1]})
            continue
        order.append(dom.id)
        if not cfg.overwrite and _matching_result(dom_dir / f"{_safe_name(dom.id)}.json", fingerprint):
            skipped += 1
        else:
            todo.append((dom, k < cfg.num_example_maps))

    def finish(dom: Domain, outcome: tuple[str, Any]) -> None:
        status, res = outcome
        if status == "error":
            log.warning("domain %s failed: %s", dom.id, res)
            failures.append({"id": dom.id, "error": res})
            return
        maps = res.pop("_maps", None)
        if maps is not None:
            with atomic.atomic_path(dom_dir / f"{_safe_name(dom.id)}.maps.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **maps)
        res["fingerprint"] = fingerprint
        report.write_json(res, dom_dir / f"{_safe_name(dom.id)}.json")
        evaluated.append(dom.id)

    bar = tqdm(total=len(todo), desc="evaluate", unit="domain", disable=not cfg.progress)
    if cfg.workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: the parent has initialised JAX's thread pools.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=setup) as pool:
            futures = {pool.submit(_run_in_worker, dom, keep): dom for dom, keep in todo}
            for fut in as_completed(futures):
                finish(futures[fut], fut.result())
                bar.update()
    else:
        evaluator = _make_evaluator(*setup)
        for dom, keep in todo:
            finish(dom, _evaluate_one(evaluator, dom, keep))
            bar.update()
    bar.close()
    summary = aggregate(out, order, fingerprint, cfg.num_example_maps)
    summary["counts"] = {"evaluated": len(evaluated), "resumed": skipped, "failed": len(failures)}
    summary["failures"] = failures
    summary["seconds_total"] = time.perf_counter() - t_start
    summary["settings"] = {
        "checkpoint": ckpt_id, "fingerprint": fingerprint, "methods": list(cfg.methods),
        "tiling": dataclasses.asdict(cfg.tiling), "fold": dataclasses.asdict(make_fold_config(cfg.fold)),
        "seed": cfg.seed, "fold_reference": cfg.fold_reference,
        "confidence": "calibrated pLDDT (confidence.json)" if calibration is not None
        else "uncalibrated distogram sharpness (no confidence.json)",
    }
    write_markdown(out, summary)  # pops the tuple-keyed tables first
    report.write_json(summary, out / "summary.json")
    report.write_csv(failures, out / "failures.csv", ["id", "error"])
    return summary


def _make_evaluator(model, tiling, prior, fold_cfg, methods, seed, cache_dir, fold_reference,
                    calibration=None) -> "DomainEvaluator":
    """A DomainEvaluator from picklable parts (so process-pool workers can build their own)."""
    from foldnet.inference.predict import Predictor

    enable_compilation_cache(cache_dir)
    predictor = None if model is None else Predictor(model[0], model[1], tiling)
    return DomainEvaluator(predictor, prior, fold_cfg, methods, seed, fold_reference, calibration)


def _evaluate_one(evaluator: "DomainEvaluator", dom: Domain, keep_maps: bool) -> tuple[str, Any]:
    """("ok", result) or ("error", message): a bad domain is reported, not fatal."""
    try:
        return "ok", evaluator.evaluate(dom, keep_maps=keep_maps)
    except (ValueError, FloatingPointError, ParseError) as e:
        return "error", f"{type(e).__name__}: {e}"


_WORKER_EVALUATOR: Optional["DomainEvaluator"] = None


def _init_worker(*setup) -> None:
    global _WORKER_EVALUATOR
    _WORKER_EVALUATOR = _make_evaluator(*setup)


def _run_in_worker(dom: Domain, keep_maps: bool) -> tuple[str, Any]:
    assert _WORKER_EVALUATOR is not None
    return _evaluate_one(_WORKER_EVALUATOR, dom, keep_maps)


def _matching_result(path: Path, fingerprint: str) -> bool:
    try:
        return json.loads(path.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def result_rows(res: Mapping[str, Any]) -> list[dict]:
    """CSV rows (one per method) of one domain result."""
    cath = res.get("cath") or ""
    parts = cath.split(".")
    rows = []
    for method, scores in res["methods"].items():
        row = {
            "id": res["id"], "method": method, "length": res["length"], "cath": cath,
            "cath_class": parts[0] if cath else "", "cath_topology": ".".join(parts[:3]) if cath else "",
            "length_bin": report.length_bin(int(res["length"])), "source": res.get("source", ""),
        }
        row.update({k: (math.nan if v is None else v) for k, v in scores.items()})
        rows.append(row)
    return rows


def aggregate(out: Path, order: Sequence[str], fingerprint: str, num_example_maps: int = 3) -> dict:
    """Collect the per-domain files of this run into results.csv, plots and the summary dict."""
    dom_dir = out / "domains"
    results = []
    for did in order:
        p = dom_dir / f"{_safe_name(did)}.json"
        try:
            res = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if res.get("fingerprint") == fingerprint:
            results.append(res)
    rows = [r for res in results for r in result_rows(res)]
    report.write_csv(rows, out / "results.csv", CSV_COLUMNS)
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    overall = report.summarize(rows, METRIC_COLUMNS, ("method",))
    by_class = report.summarize(rows, TABLE_COLUMNS, ("method", "cath_class"))
    by_length = report.summarize(rows, TABLE_COLUMNS, ("method", "length_bin"))
    ece = {}
    for m in methods:
        tables = [np.asarray(res["calibration"][m], np.float64) for res in results if m in res["calibration"]]
        tot = np.sum(tables, axis=0)
        n = tot[0].sum()
        ece[m] = float(np.sum(np.abs(tot[1] - tot[2])) / n) if n > 0 else None
    # Paired comparison on the domains every method has (profile mode covers a subset).
    common = {res["id"] for res in results if all(m in res["methods"] for m in methods)}
    paired = report.summarize([r for r in rows if r["id"] in common], TABLE_COLUMNS, ("method",))
    summary = {
        "num_domains": len(results),
        "methods": methods,
        "overall": {k[0]: v for k, v in overall.items()},
        "paired_domains": len(common),
        "paired": {k[0]: v for k, v in paired.items()},
        "by_cath_class": {f"{k[0]}|{k[1]}": v for k, v in by_class.items()},
        "by_length": {f"{k[0]}|{k[1]}": v for k, v in by_length.items()},
        "pooled_contact_ece": ece,
        "confidence_calibration": {m: confidence_calibration(results, m) for m in methods},
    }
    _plots(out, rows, results, methods, num_example_maps)
    rel = {m: tuple(c["reliability"][k] for k in ("count", "mean_plddt", "mean_lddt"))
           for m, c in summary["confidence_calibration"].items() if c.get("num_domains")}
    if rel:
        report.plot_reliability(rel, out / "plddt_reliability.png")
    summary["_tables"] = {"by_class": by_class, "by_length": by_length, "paired": paired, "overall": overall}
    return summary


def confidence_calibration(results: Sequence[Mapping[str, Any]], method: str) -> dict:
    """How well one method's per-residue confidence estimates lDDT-Calpha x 100 (summary.json).

    Pooled over residues and per domain (the domain's mean pLDDT against its global
    lDDT-Calpha x 100 and its TM-score), the ECE over 10 bins of 0-100, the reliability table,
    and the mean over domains of the predicted-distance-error correlation.
    """
    from foldnet import metrics as M

    pred, true, dom_pred, dom_lddt, dom_tm, r_dom, pde = [], [], [], [], [], [], []
    for res in results:
        r = res.get("residues", {}).get(method)
        if r is None:
            continue
        p = np.asarray(r["plddt"], np.float64)
        t = np.asarray([math.nan if v is None else v for v in r["lddt"]], np.float64)
        pred.append(p)
        true.append(t)
        scores = res["methods"][method]
        dom_pred.append(float(np.mean(p)))
        dom_lddt.append(100.0 * _num(scores.get("lddt_ca")))
        dom_tm.append(_num(scores.get("tm_score")))
        r_dom.append(_num(scores.get("plddt_pearson")))
        pde.append(_num(scores.get("pde_pearson")))
    if not pred:
        return {"num_domains": 0}
    p, t = np.concatenate(pred), np.concatenate(true)
    count, mp, mt = M.reliability_table(p, t, CALIBRATION_BINS)
    ok = np.isfinite(t)
    return {
        "num_domains": len(pred),
        "num_residues": int(ok.sum()),
        "residue_pearson": M.pearson(p, t),
        "residue_spearman": M.spearman(p, t),
        "residue_pearson_mean_over_domains": _nanmean(r_dom),
        "domain_pearson_vs_lddt": M.pearson(dom_pred, dom_lddt),
        "domain_spearman_vs_lddt": M.spearman(dom_pred, dom_lddt),
        "domain_pearson_vs_tm": M.pearson(dom_pred, dom_tm),
        "domain_spearman_vs_tm": M.spearman(dom_pred, dom_tm),
        "ece": M.regression_ece(p, t, CALIBRATION_BINS),
        "mean_plddt": float(np.mean(p[ok])) if ok.any() else math.nan,
        "mean_true_lddt": float(np.mean(t[ok])) if ok.any() else math.nan,
        "pde_pearson_mean_over_domains": _nanmean(pde),
        "reliability": {"count": count.tolist(), "mean_plddt": mp.tolist(), "mean_lddt": mt.tolist()},
    }


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _nanmean(v: Sequence[float]) -> float:
    a = np.asarray(v, np.float64)
    return float(np.mean(a[np.isfinite(a)])) if np.isfinite(a).any() else math.nan


def _plots(out: Path, rows: list[dict], results: list[dict], methods: Sequence[str], num_examples: int) -> None:
    tm = {m: [r.get("tm_score") for r in rows if r["method"] == m] for m in methods}
    report.plot_histograms(tm, out / "tm_score_distribution.png", "TM-score")
    xy = {
        m: ([r["length"] for r in rows if r["method"] == m], [r.get("prec_long_L5") for r in rows if r["method"] == m])
        for m in methods
        if m != "true_distogram"
    }
    report.plot_scatter(xy, out / "contact_precision_vs_length.png", "length", "long-range top-L/5 precision")
    examples = []
    for res in results:
        p = out / "domains" / f"{_safe_name(res['id'])}.maps.npz"
        if len(examples) >= num_examples or not p.is_file():
            continue
        with np.load(p) as z:
            key = "profile" if "profile" in z.files else ("single" if "single" in z.files else None)
            if key is not None:
                examples.append((f"{res['id']} ({key})", z["true"].astype(np.float32), z[key].astype(np.float32)))
    if examples:
        report.plot_distance_maps(examples, out / "example_distance_maps.png")


CALIBRATION_TABLE = (("residue_pearson", "residue r"), ("residue_spearman", "residue rho"),
                     ("residue_pearson_mean_over_domains", "per-domain residue r"),
                     ("domain_pearson_vs_lddt", "domain r (lDDT)"), ("domain_pearson_vs_tm", "domain r (TM)"),
                     ("ece", "ECE"), ("mean_plddt", "mean pLDDT"), ("mean_true_lddt", "mean lDDT x100"),
                     ("pde_pearson_mean_over_domains", "PDE r"))


def calibration_table(calib: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of ``summary["confidence_calibration"]``, one row per method."""
    head = "| method | domains | " + " | ".join(t for _, t in CALIBRATION_TABLE) + " |"
    lines = [head, "|" + "---|" * (len(CALIBRATION_TABLE) + 2)]
    for m, c in calib.items():
        if not c.get("num_domains"):
            continue
        # ECE and means are on the 0-100 scale, correlations in [-1, 1].
        cells = [f"{_num(c.get(k)):.{1 if k in ('ece', 'mean_plddt', 'mean_true_lddt') else 3}f}"
                 for k, _ in CALIBRATION_TABLE]
        lines.append(f"| {m} | {c['num_domains']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(out: Path, summary: dict) -> None:
    """``report.md``: settings, overall / paired / by-class / by-length tables and the plots."""
    tables = summary.pop("_tables")
    s = summary
    lines = [
        "# foldnet evaluation",
        "",
        f"Domains evaluated: {s['num_domains']} (this run: {s['counts']['evaluated']}, resumed: "
        f"{s['counts']['resumed']}, failed: {s['counts']['failed']}). Checkpoint: "
        f"`{s['settings']['checkpoint'] or '-'}`. Wall time: {s['seconds_total']:.1f} s.",
        "",
        "Methods: `single` = network without profile; `profile` = network with the ProteinNet profile "
        "(subset of domains); `prior` = sequence-separation prior distogram + residue-type torsions; "
        "`true_distogram` = folding the smoothed native distogram (the ceiling of the folding step). "
        + ("The network's distograms are folded relative to the separation prior (`fold_reference=prior`)."
           if s["settings"].get("fold_reference") == "prior" else "All distograms are folded on `-log p` alone."),
        "",
        "## Overall (mean over domains)",
        "",
        report.markdown_table(tables["overall"], ("method",), TABLE_COLUMNS),
        f"Pooled contact ECE (pairs |i-j| >= 6, {CALIBRATION_BINS} bins): "
        + ", ".join(f"{m} {v:.3f}" for m, v in s["pooled_contact_ece"].items() if v is not None),
        "",
        "## Confidence calibration (pLDDT vs true lDDT-Ca x 100)",
        "",
        f"Confidence: {s['settings'].get('confidence', '-')}. Residue r: pooled over residues (and the mean of "
        "per-domain r); domain r: per-domain mean pLDDT vs lDDT-Ca and vs TM-score; ECE over "
        f"{CALIBRATION_BINS} bins of 0-100; PDE r: predicted distance error vs |E[d] - min(d_true, 22.3 A)|, pairs |i-j| >= 3, "
        "mean over domains.",
        "",
        calibration_table(s["confidence_calibration"]),
        "![pLDDT reliability](plddt_reliability.png)",
        "",
        f"## Paired: the {s['paired_domains']} domains every method scored",
        "",
        report.markdown_table(tables["paired"], ("method",), TABLE_COLUMNS),
        "## By CATH class",
        "",
        report.markdown_table(tables["by_class"], ("method", "cath_class"), TABLE_COLUMNS),
        "## By length",
        "",
        report.markdown_table(tables["by_length"], ("method", "length_bin"), TABLE_COLUMNS),
        "## Plots",
        "",
        "![TM-score distribution](tm_score_distribution.png)",
        "",
        "![contact precision vs length](contact_precision_vs_length.png)",
        "",
        "![example distance maps](example_distance_maps.png)",
        "",
        "All per-domain metrics: `results.csv`; failures: `failures.csv`.",
    ]
    if s["failures"]:
        lines += ["", "## Failed domains", ""] + [f"- `{f['id']}`: {f['error']}" for f in s["failures"]]
    atomic.write_text(out / "report.md", "\n".join(lines) + "\n")
