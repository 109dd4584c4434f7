"""``foldnet predict``: FASTA (+ optional alignments) -> distograms -> folded structures.

Per record: features (``features.py``: profile mode with an alignment,
single-sequence mode without) -> the network over overlapping windows
(``tiling.py``) -> distogram and phi/psi distributions -> gradient-descent
folding (``foldnet.structure.fold``) -> ``<id>.pdb`` and/or ``<id>.cif`` (``format``;
per-residue pLDDT in the B-factor column), ``<id>_pde.json`` (predicted distance error),
``<id>.npz``, ``<id>.png`` and one summary line.
Every file is written atomically; a bad record is reported and skipped, the
others still finish.

``<id>.npz`` keys (L residues):

| key | shape | meaning |
|---|---|---|
| ``dist_probs`` | [L, L, 65] float32 | CB-CB distogram, symmetric, rows sum to 1 (``dist_bin_edges``) |
| ``phi_probs``, ``psi_probs`` | [L, 36] float32 | torsion distributions (``torsion_bin_centers_deg``) |
| ``confidence`` | [L] float32 | per-residue pLDDT 0-100: the estimated lDDT-Calpha of the written model (the model folder's ``confidence.json`` calibration, ``foldnet.structure.confidence``; without one the distogram sharpness, with a warning); also the B-factors |
| ``contact_probs`` | [L, L] float32 | P(CB-CB < 8 A) (``foldnet.metrics.contact_probabilities``) |
| ``dist_bin_edges`` | [65] | distogram bin edges in A (last bin: >= 22 A) |
| ``torsion_bin_centers_deg`` | [36] | torsion bin centres in degrees |
| ``sequence`` | str | the FASTA sequence |
| ``has_profile`` | float32 | 1 in profile mode, 0 in single-sequence mode |
| ``fold_energy`` | float32 | final potential of the chosen fold |
| ``pair_coverage`` | [L, L] int16 | windows that scored each pair |
| ``record_id`` | str | the FASTA id (the file stem is ``foldnet.common.paths.safe_stem`` of it) |
| ``settings`` | str | fingerprint of the run's settings; a rerun keeps records whose fingerprint matches |

File stems: an id that is a plain file name is used as is; any other (``/tmp/x``, ``../y``,
control characters, over-long, or a case-only twin of an earlier id) becomes a sanitised
name plus 8 hex digits of its sha256, so nothing is written outside ``out_dir`` and no two
records share a file. ``summary.tsv`` gives each record's ``file``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from foldnet.common import atomic
from foldnet.common import residue_constants as rc
from foldnet.common.compilation_cache import enable_compilation_cache
from foldnet.common.protein import Protein
from foldnet.common.paths import NameAllocator, safe_stem
from foldnet.data.alignment import ProfileConfig
from foldnet.data.errors import InputError, ParseError
from foldnet.inference import features as feats_lib
from foldnet.inference import report
from foldnet.inference.tiling import TilingConfig, predict_tiled
from foldnet.metrics import contact_probabilities
from foldnet.structure.config import FoldConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PredictConfig:
    """Options of ``foldnet predict`` (configs/predict.yaml mirrors this).

    Attributes:
      input: FASTA file (plain or gzip), one or many records.
      checkpoint: training run directory or checkpoint step directory.
      out_dir: where the per-record files and ``summary.tsv`` go.
      msa_dir: folder with ``<id>.a3m`` / ``<id>.aln`` (optionally .gz); None = single-sequence mode.
      profile: how an alignment becomes the profile input (``foldnet.data.alignment.ProfileConfig``;
        the default matches the ProteinNet training profiles, docs/inference.md).
      step: checkpoint step to load (None: the best kept step, else the latest).
      tiling: crop size, stride and windows per call for long chains.
      fold: the ``foldnet.structure.FoldConfig``.
      seed: folding seed (restarts are derived from it per record).
      write_png: also draw ``<id>.png``.
      progress: show a tqdm bar over records.
      compilation_cache_dir: JAX persistent compilation cache folder (None = off);
        folding compiles once per chain length, so repeated runs gain most.
      fold_reference: "prior" folds on ``-log p + log p_prior``, the predicted distogram
        relative to the model's sequence-separation prior (AlphaFold-CASP13's background
        correction; the prior is the checkpoint's ``prior.npz``); "none" on ``-log p``.
      overwrite: predict every record again; by default a record whose ``<id>.npz`` was
        written with the same settings (an interrupted run) is kept and skipped.
      format: structure files: "pdb" (``<id>.pdb``), "cif" (``<id>.cif``, mmCIF with the
        ModelCIF pLDDT categories) or "both".
    """

    input: str = ""
    checkpoint: Optional[str] = None
    out_dir: str = "predictions"
    msa_dir: Optional[str] = None
    profile: ProfileConfig = dataclasses.field(default_factory=ProfileConfig)
    step: Optional[int] = None
    tiling: TilingConfig = dataclasses.field(default_factory=TilingConfig)
    fold: FoldConfig = dataclasses.field(default_factory=FoldConfig)
    seed: int = 0
    write_png: bool = True
    progress: bool = True
    compilation_cache_dir: Optional[str] = None
    fold_reference: str = "prior"
    overwrite: bool = False
    format: str = "pdb"

    def __post_init__(self):
        check_fold_reference(self.fold_reference)
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


FOLD_REFERENCES = ("prior", "none")
FORMATS = ("pdb", "cif", "both")


def check_fold_reference(value: str) -> None:
    if value not in FOLD_REFERENCES:
        raise ValueError(f"fold_reference must be one of {FOLD_REFERENCES}, got {value!r}")


@dataclasses.dataclass
class RecordResult:
    """Outcome of one record: ok with numbers, or failed with the reason."""

    id: str
    ok: bool
    length: int = 0
    mode: str = ""
    mean_confidence: float = float("nan")
    fold_energy: float = float("nan")
    seconds: float = 0.0
    num_windows: int = 0
    error: str = ""
    file: str = ""
    resumed: bool = False

    def line(self) -> str:
        """The human summary line of this record."""
        if not self.ok:
            return f"{self.id}: FAILED: {self.error}"
        where = "" if self.file in ("", self.id) else f" -> {self.file}.pdb"
        kept = " (kept from an earlier run)" if self.resumed else ""
        return (
            f"{self.id}: L={self.length} mode={self.mode} mean_confidence={self.mean_confidence:.3f} "
            f"fold_energy={self.fold_energy:.4g} windows={self.num_windows} time={self.seconds:.1f}s{where}{kept}"
        )


class Predictor:
    """A loaded network plus the jitted probability function, reused across records.

    Args:
      model_cfg: the ModelConfig the parameters belong to.
      params: the network parameters (``variables["params"]``).
      tiling: window options.
    """

    def __init__(self, model_cfg, params, tiling: TilingConfig):
        import jax

        from foldnet.model import build_model

        self.model_cfg = model_cfg
        self.tiling = tiling
        model = build_model(model_cfg)

        def probs(params, batch):
            out = model.apply({"params": params}, batch, train=False)
            res = {}
            # orient_*: a model with the trRosetta orientation head (omega, theta, phi).
            for key in ("dist", "phi", "psi", "orient_omega", "orient_theta", "orient_phi"):
                if f"{key}_logits" in out:
                    res[f"{key}_probs"] = jax.nn.softmax(out[f"{key}_logits"], axis=-1)
            return res

        jitted = jax.jit(probs)
        self._params = params

        def apply_fn(batch: dict) -> dict:
            out = jitted(self._params, batch)
            if "dist_probs" not in out:
                raise ValueError("the model has no distogram head (distogram_weight = 0); cannot predict structures")
            out = {k: np.asarray(v) for k, v in out.items()}
            B, C = batch["aatype"].shape
            for key in ("phi_probs", "psi_probs"):
                # A model trained without the torsion head: uniform angles, so
                # folding is driven by the distogram alone.
                out.setdefault(key, np.full((B, C, rc.NUM_TORSION_BINS), 1.0 / rc.NUM_TORSION_BINS, np.float32))
            return out

        self.apply_fn = apply_fn

    def distributions(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Distogram / torsion distributions of one chain (tiled when longer than the crop).

        Args:
          inputs: unbatched features from ``features.input_features``.

        Returns:
          ``tiling.predict_tiled``'s dict.
        """
        return predict_tiled(self.apply_fn, inputs, self.tiling)


_warned_no_orientation = False


def orientation_inputs(dist: Mapping[str, np.ndarray], fold_cfg: FoldConfig) -> tuple[Optional[dict], FoldConfig]:
    """The orientation probabilities ``fold`` takes, and the config to fold with.

    With ``fold_cfg.weight_orientation > 0`` and distributions that have no orientations (a
    model without the orientation head, the prior), the term is switched off for this chain
    with a warning (once per process) rather than failing: the other terms still fold it.
    """
    global _warned_no_orientation
    if fold_cfg.weight_orientation <= 0:
        return None, fold_cfg
    keys = {name: f"orient_{name}_probs" for name in rc.ORIENTATION_NUM_BINS}
    if all(k in dist for k in keys.values()):
        return {name: dist[k] for name, k in keys.items()}, fold_cfg
    if not _warned_no_orientation:
        log.warning("fold.weight_orientation=%g but the distributions have no orientations (a model without "
                    "the orientation head?): folding without the orientation term", fold_cfg.weight_orientation)
        _warned_no_orientation = True
    return None, fold_cfg.replace(weight_orientation=0.0)


def fold_distributions(
    protein: Protein, dist: Mapping[str, np.ndarray], fold_cfg: Any, seed: int, prior: Any = None
):
    """Fold a chain from its predicted distributions (``foldnet.structure.fold``).

    Args:
      protein: the chain (sequence, id).
      dist: ``dist_probs`` [L, L, 65], ``phi_probs`` / ``psi_probs`` [L, 36], and optionally
        ``orient_omega_probs`` / ``orient_theta_probs`` [L, L, 25], ``orient_phi_probs``
        [L, L, 13] (used when ``fold_cfg.weight_orientation`` > 0; see ``orientation_inputs``).
      fold_cfg: a ``FoldConfig``.
      seed: folding seed.
      prior: a ``foldnet.model.prior.Prior`` to fold relative to (its separation
        distogram is the background of the distogram term), or None.

    Returns:
      The ``FoldResult`` whose protein carries the query's id and sequence.
    """
    from foldnet.structure import fold

    reference = None if prior is None else prior_distogram(prior, protein)
    orientation, fold_cfg = orientation_inputs(dist, fold_cfg)
    return fold(
        dist["dist_probs"], dist["phi_probs"], dist["psi_probs"], fold_cfg, seed,
        aatype=protein.aatype, id=protein.id, reference=reference, orientation=orientation,
    )


def prior_distogram(prior: Any, protein: Protein) -> np.ndarray:
    """The prior's distogram [L, L, 65] for a chain (sequence separation, residue types)."""
    return prior.predict_chain(protein.aatype)["dist_probs"]


def load_checkpoint_prior(checkpoint: Optional[str], step: Optional[int] = None) -> Any:
    """The ``prior.npz`` that travels with a checkpoint (training run or shipped model).

    Training runs write it when they fit their baselines (``val.baselines``, on by default).
    A run without one folds on the predicted distogram alone, with a warning that says so.
    """
    from foldnet.inference.pretrained import checkpoint_home
    from foldnet.model.prior import Prior

    path = checkpoint_home(checkpoint, step)[0] / "prior.npz"
    if not path.is_file():
        log.warning("fold_reference=prior: %s does not exist; folding on the predicted distogram alone", path)
        return None
    return Prior.load(path)


def make_fold_config(options: FoldConfig | Mapping[str, Any] | None) -> FoldConfig:
    """``FoldConfig`` from a FoldConfig, a plain mapping (validated keys) or None (defaults)."""
    if isinstance(options, FoldConfig):
        return options
    return FoldConfig.from_dict(dict(options or {}))


def write_outputs(
    out_dir: Path,
    protein: Protein,
    dist: Mapping[str, np.ndarray],
    fold_result,
    has_profile: bool,
    write_png: bool,
    stem: Optional[str] = None,
    settings: str = "",
    calibration: Any = None,
    fmt: str = "pdb",
) -> np.ndarray:
    """Write ``<stem>.pdb``, ``<stem>.npz`` and (optionally) ``<stem>.png`` atomically.

    Args:
      stem: file stem (default ``safe_stem(protein.id)``: an ID never names a path outside
        ``out_dir``).
      settings: fingerprint stored in the npz, so a rerun knows which records it may keep.
      calibration: ``foldnet.structure.confidence.Calibration`` of the model (the B-factors are
        its pLDDT); None: the uncalibrated distogram sharpness.
      fmt: "pdb", "cif" or "both".

    Also writes ``<stem>_pde.json``: the predicted distance error matrix
    (``foldnet.structure.confidence.distance_error_matrix``) in AlphaFold's PAE JSON layout.

    Returns:
      The per-residue confidence [L] written to the B-factor column.
    """
    from foldnet.common import geometry_np
    from foldnet.common.pdb_io import write_mmcif, write_pdb
    from foldnet.structure.confidence import distance_error_matrix, model_confidence

    rid = protein.id
    stem = stem or safe_stem(rid, "record id")
    if np.shape(dist["dist_probs"])[:2] != (len(protein), len(protein)):
        raise ValueError(f"{rid}: distogram is {np.shape(dist['dist_probs'])[:2]} for a chain of {len(protein)} residues")
    # The confidence of the structure as written: the calibration compares its distances with
    # the distogram (fold_result.confidence is the distogram's sharpness alone).
    model_dist, _ = geometry_np.cb_distance_map(fold_result.protein)
    confidence = model_confidence(calibration, dist["dist_probs"], model_dist, has_profile).astype(np.float32)
    model = fold_result.protein.replace(id=rid, aatype=protein.aatype, b_factors=confidence)
    pde = distance_error_matrix(dist["dist_probs"])
    report.write_distance_error_json(pde, out_dir / f"{stem}_pde.json")
    if write_png:
        mode = "profile" if has_profile else "single-sequence"
        report.plot_prediction(dist["dist_probs"], confidence, out_dir / f"{stem}.png",
                               title=f"{rid} ({mode}, L={len(protein)})", distance_error=pde)
    if fmt in ("pdb", "both"):
        write_pdb(model, out_dir / f"{stem}.pdb")
    if fmt in ("cif", "both"):
        write_mmcif(model, out_dir / f"{stem}.cif", local_metric="pLDDT" if calibration is not None else None)
    # The npz goes last: its presence (with the same settings) marks the record finished.
    with atomic.atomic_path(out_dir / f"{stem}.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                dist_probs=np.asarray(dist["dist_probs"], np.float32),
                phi_probs=np.asarray(dist["phi_probs"], np.float32),
                psi_probs=np.asarray(dist["psi_probs"], np.float32),
                confidence=confidence,
                contact_probs=contact_probabilities(dist["dist_probs"]).astype(np.float32),
                dist_bin_edges=rc.DISTOGRAM_EDGES.astype(np.float32),
                torsion_bin_centers_deg=rc.TORSION_CENTERS_DEG,
                sequence=np.array(protein.sequence),
                has_profile=np.float32(has_profile),
                fold_energy=np.float32(fold_result.energy),
                pair_coverage=np.asarray(dist["pair_coverage"], np.int16),
                record_id=np.array(rid),
                settings=np.array(settings),
            )
    return confidence


def _finished(out: Path, stem: str, rec: Any, settings: str, write_png: bool,
              fmt: str = "pdb") -> Optional[RecordResult]:
    """The result of a record an earlier run with the same settings finished, else None."""
    npz = out / f"{stem}.npz"
    needed = [out / f"{stem}_pde.json"] + [out / f"{stem}.{ext}" for ext in ("pdb", "cif") if fmt in (ext, "both")]
    if not (npz.is_file() and all(p.is_file() for p in needed)) or (write_png and not (out / f"{stem}.png").is_file()):
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            if str(z["settings"]) != settings or str(z["sequence"]) != rec.sequence:
                return None
            conf = np.asarray(z["confidence"], np.float64)
            return RecordResult(id=rec.id, ok=True, length=len(rec.sequence),
                                mode="profile" if float(z["has_profile"]) else "single",
                                mean_confidence=float(np.mean(conf)), fold_energy=float(z["fold_energy"]),
                                file=stem, resumed=True)
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable (e.g. written by another version): predict it again


def predict_records(
    records: Sequence[Any],
    predictor: Predictor,
    out_dir: str | Path,
    msa_dir: Optional[str] = None,
    fold_options: FoldConfig | Mapping[str, Any] | None = None,
    seed: int = 0,
    write_png: bool = True,
    progress: bool = False,
    on_result: Optional[Callable[[RecordResult], None]] = None,
    prior: Any = None,
    settings: Optional[str] = None,
    calibration: Any = None,
    fmt: str = "pdb",
    profile_options: Optional[ProfileConfig] = None,
) -> list[RecordResult]:
    """Predict every record; bad ones are reported (``ok=False``) and skipped.

    Args:
      records: ``FastaRecord`` or ``ParseError`` items (``iter_fasta(errors="skip")``).
      predictor: the loaded network.
      out_dir: output folder.
      msa_dir: alignment folder (None = single-sequence mode for all records).
      fold_options: the ``FoldConfig`` (or its options as a mapping).
      seed: folding seed.
      write_png: draw ``<id>.png``.
      progress: tqdm bar.
      on_result: called with each result as soon as it is known.
      prior: fold relative to this prior's distogram (``fold_distributions``); None: no background.
      settings: fingerprint of the run's settings; when given, a record whose outputs carry the
        same fingerprint (an interrupted run) is kept and not predicted again.
      calibration: the model's confidence calibration (``write_outputs``), or None.
      fmt: structure file format ("pdb", "cif", "both").
      profile_options: alignment -> profile settings (None: the training-matching default).

    Returns:
      One RecordResult per input item, in order.
    """
    from tqdm import tqdm

    from foldnet.data.fasta import record_to_protein

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_tmp(out)
    fold_cfg = make_fold_config(fold_options)
    names = NameAllocator("record id")
    results = []
    for k, rec in enumerate(tqdm(records, desc="predict", unit="record", disable=not progress)):
        if isinstance(rec, ParseError):
            res = RecordResult(id=rec.record or f"<record at line {rec.line}>", ok=False, error=str(rec))
        elif (done := settings is not None and _finished(out, names.stem(rec.id), rec,
                                                         f"{settings}:{k}", write_png, fmt)):
            res = done
        else:
            t0 = time.perf_counter()
            stem = names.stem(rec.id)
            try:
                protein = record_to_protein(rec)
                aln = feats_lib.find_alignment(msa_dir, rec.id)
                profile = (None if aln is None
                           else feats_lib.alignment_profile(aln, rec.sequence, rec.id, profile_options))
                inputs = feats_lib.input_features(protein, profile)
                dist = predictor.distributions(inputs)
                fold_result = fold_distributions(protein, dist, fold_cfg, seed + k, prior)
                conf = write_outputs(out, protein, dist, fold_result, profile is not None, write_png,
                                     stem=stem, settings="" if settings is None else f"{settings}:{k}",
                                     calibration=calibration, fmt=fmt)
                res = RecordResult(
                    id=rec.id,
                    ok=True,
                    length=len(protein),
                    mode="profile" if profile is not None else "single",
                    mean_confidence=float(np.mean(conf)),
                    fold_energy=float(fold_result.energy),
                    seconds=time.perf_counter() - t0,
                    num_windows=int(dist["num_windows"]),
                    file=stem,
                )
            except ParseError as e:
                res = RecordResult(id=rec.id, ok=False, error=str(e))
            except Exception as e:  # noqa: BLE001 - one bad record must not stop the batch
                log.warning("record %s failed: %s", rec.id, e)
                res = RecordResult(id=rec.id, ok=False, error=f"{type(e).__name__}: {e}")
        if on_result is not None:
            on_result(res)
        results.append(res)
    return results


def write_summary(results: Sequence[RecordResult], path: Path) -> None:
    """``summary.tsv``: one row per record (id, ok, length, mode, confidence, energy, time, error)."""
    cols = ["id", "ok", "length", "mode", "mean_confidence", "fold_energy", "num_windows", "seconds", "error",
            "file", "resumed"]
    lines = ["\t".join(cols)]
    for r in results:
        d = dataclasses.asdict(r)
        d["ok"] = int(r.ok)
        d["resumed"] = int(r.resumed)
        cells = [str(report._fmt(d[c])).replace("\t", " ").replace("\n", " ") for c in cols]
        lines.append("\t".join(cells))
    atomic.write_text(path, "\n".join(lines) + "\n")


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Copy foldnet's log lines into ``path`` (``predict.log`` / ``evaluate.log`` in the output folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    root = logging.getLogger("foldnet")
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def predict_settings(cfg: PredictConfig) -> str:
    """Fingerprint of everything but the input that changes a record's outputs."""
    import hashlib
    import json

    keys = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("input", "out_dir", "progress", "compilation_cache_dir", "overwrite")}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def predict(cfg: PredictConfig) -> list[RecordResult]:
    """Run ``foldnet predict``: every record of ``cfg.input`` -> files in ``cfg.out_dir``.

    Args:
      cfg: the options.

    Returns:
      One RecordResult per FASTA record (failed ones with ``ok=False``); also
      written to ``<out_dir>/summary.tsv``.

    Raises:
      FileNotFoundError: if the FASTA file or the checkpoint does not exist.
      ValueError: if no checkpoint was given.
    """
    from foldnet.data.fasta import iter_fasta

    if not cfg.input:
        raise ValueError("predict: give the FASTA file, e.g. `foldnet predict input=seqs.fasta checkpoint=runs/x`")
    if Path(cfg.input).is_dir():
        raise InputError(cfg.input, "is a directory; input= takes one FASTA file (plain or gzip)")
    if not Path(cfg.input).is_file():
        raise FileNotFoundError(f"predict: FASTA file {cfg.input} does not exist")
    if cfg.msa_dir not in (None, "", "null") and not Path(cfg.msa_dir).is_dir():
        raise FileNotFoundError(f"predict: msa_dir {cfg.msa_dir} is not a directory")
    records = list(iter_fasta(cfg.input, errors="skip"))
    if not records:
        raise InputError(cfg.input, "no FASTA records (empty file, or no line starting with '>')")
    with run_log(Path(cfg.out_dir) / "predict.log"):
        return _predict(cfg, records)


def _predict(cfg: PredictConfig, records: list) -> list[RecordResult]:
    from foldnet.inference.pretrained import load_for_inference, training_crop

    log.info("predict: %d records of %s -> %s", len(records), cfg.input, cfg.out_dir)
    enable_compilation_cache(cfg.compilation_cache_dir)
    model_cfg, params = load_for_inference(cfg.checkpoint, step=cfg.step)
    prior = load_checkpoint_prior(cfg.checkpoint, cfg.step) if cfg.fold_reference == "prior" else None
    tiling = cfg.tiling.for_model(training_crop(cfg.checkpoint, cfg.step))
    log.info("predict: windows of %d residues (stride %d) for chains longer than that",
             tiling.crop_size, tiling.stride)
    predictor = Predictor(model_cfg, params, tiling)
    from foldnet.inference.pretrained import checkpoint_home
    from foldnet.structure.confidence import load_calibration

    calibration = load_calibration(checkpoint_home(cfg.checkpoint, cfg.step)[0])
    out = Path(cfg.out_dir)
    results = predict_records(
        records,
        predictor,
        out,
        msa_dir=cfg.msa_dir,
        fold_options=cfg.fold,
        seed=cfg.seed,
        write_png=cfg.write_png,
        progress=cfg.progress,
        on_result=lambda r: print(r.line(), flush=True),
        prior=prior,
        settings=None if cfg.overwrite else predict_settings(cfg),
        calibration=calibration,
        fmt=cfg.format,
        profile_options=cfg.profile,
    )
    write_summary(results, out / "summary.tsv")
    return results
