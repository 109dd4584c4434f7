"""``foldnet predict``: FASTA (+ optional alignments) -> distograms -> folded structures.

Per record: features (``features.py``: profile mode with an alignment,
single-sequence mode without) -> the network over overlapping windows
(``tiling.py``) -> distogram and phi/psi distributions -> gradient-descent
folding (``foldnet.structure.fold``) -> ``<id>.pdb`` (per-residue confidence
in the B-factor column), ``<id>.npz``, ``<id>.png`` and one summary line.
Every file is written atomically; a bad record is reported and skipped, the
others still finish.

``<id>.npz`` keys (L residues):

| key | shape | meaning |
|---|---|---|
| ``dist_probs`` | [L, L, 65] float32 | CB-CB distogram, symmetric, rows sum to 1 (``dist_bin_edges``) |
| ``phi_probs``, ``psi_probs`` | [L, 36] float32 | torsion distributions (``torsion_bin_centers_deg``) |
| ``confidence`` | [L] float32 | per-residue confidence 0-100 (distogram sharpness near the residue, ``foldnet.structure.confidence``; also the PDB B-factors) |
| ``contact_probs`` | [L, L] float32 | P(CB-CB < 8 A) (``foldnet.metrics.contact_probabilities``) |
| ``dist_bin_edges`` | [65] | distogram bin edges in A (last bin: >= 22 A) |
| ``torsion_bin_centers_deg`` | [36] | torsion bin centres in degrees |
| ``sequence`` | str | the FASTA sequence |
| ``has_profile`` | float32 | 1 in profile mode, 0 in single-sequence mode |
| ``fold_energy`` | float32 | final potential of the chosen fold |
| ``pair_coverage`` | [L, L] int16 | windows that scored each pair |
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from foldnet.common import atomic
from foldnet.common import residue_constants as rc
from foldnet.common.protein import Protein
from foldnet.data.errors import ParseError
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
    """

    input: str = ""
    checkpoint: Optional[str] = None
    out_dir: str = "predictions"
    msa_dir: Optional[str] = None
    step: Optional[int] = None
    tiling: TilingConfig = dataclasses.field(default_factory=TilingConfig)
    fold: FoldConfig = dataclasses.field(default_factory=FoldConfig)
    seed: int = 0
    write_png: bool = True
    progress: bool = True
    compilation_cache_dir: Optional[str] = None
    fold_reference: str = "prior"

    def __post_init__(self):
        check_fold_reference(self.fold_reference)


FOLD_REFERENCES = ("prior", "none")


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

    def line(self) -> str:
        """The human summary line of this record."""
        if not self.ok:
            return f"{self.id}: FAILED: {self.error}"
        return (
            f"{self.id}: L={self.length} mode={self.mode} mean_confidence={self.mean_confidence:.3f} "
            f"fold_energy={self.fold_energy:.4g} windows={self.num_windows} time={self.seconds:.1f}s"
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
            for key in ("dist", "phi", "psi"):
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


def fold_distributions(
    protein: Protein, dist: Mapping[str, np.ndarray], fold_cfg: Any, seed: int, prior: Any = None
):
    """Fold a chain from its predicted distributions (``foldnet.structure.fold``).

    Args:
      protein: the chain (sequence, id).
      dist: ``dist_probs`` [L, L, 65], ``phi_probs`` / ``psi_probs`` [L, 36].
      fold_cfg: a ``FoldConfig``.
      seed: folding seed.
      prior: a ``foldnet.train.baselines.Prior`` to fold relative to (its separation
        distogram is the background of the distogram term), or None.

    Returns:
      The ``FoldResult`` whose protein carries the query's id and sequence.
    """
    from foldnet.structure import fold

    reference = None if prior is None else prior_distogram(prior, protein)
    return fold(
        dist["dist_probs"], dist["phi_probs"], dist["psi_probs"], fold_cfg, seed,
        aatype=protein.aatype, id=protein.id, reference=reference,
    )


def prior_distogram(prior: Any, protein: Protein) -> np.ndarray:
    """The prior's distogram [L, L, 65] for a chain (sequence separation, residue types)."""
    L = len(protein)
    batch = {"residue_index": np.arange(L)[None], "aatype": np.asarray(protein.aatype)[None]}
    return prior.predict(batch)["dist_probs"][0]


def load_checkpoint_prior(checkpoint: Optional[str], step: Optional[int] = None) -> Any:
    """The ``prior.npz`` that travels with a checkpoint (training run or shipped model).

    Training runs write it when they fit their baselines (``val.baselines``, on by default).
    A run without one folds on the predicted distogram alone, with a warning that says so.
    """
    from foldnet.inference import pretrained
    from foldnet.inference.checkpoint_io import resolve_checkpoint
    from foldnet.train.baselines import Prior

    if checkpoint in (None, "", "null") or str(checkpoint).startswith("pretrained:"):
        name = str(checkpoint or "").partition("pretrained:")[2] or pretrained.DEFAULT_MODEL
        path = pretrained.model_dir(name) / "prior.npz"
    else:
        root, _, run_dir = resolve_checkpoint(checkpoint, step)
        path = (run_dir or root.parent) / "prior.npz"
    if not path.is_file():
        log.warning("fold_reference=prior: %s does not exist; folding on the predicted distogram alone", path)
        return None
    return Prior.load(path)


def enable_compilation_cache(path: Optional[str]) -> None:
    """Turn on JAX's persistent compilation cache in ``path`` (no-op for None, "" or "off").

    Folding is compiled per chain length (tens of seconds on CPU), so a second
    run over the same lengths (a resumed evaluation, a re-prediction) reuses it.
    """
    if path is None or str(path).lower() in ("", "null", "none", "off"):
        return
    import jax

    folder = Path(path).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


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
) -> np.ndarray:
    """Write ``<id>.pdb``, ``<id>.npz`` and (optionally) ``<id>.png`` atomically.

    Returns:
      The per-residue confidence [L] written to the B-factor column.
    """
    from foldnet.common.pdb_io import write_pdb

    rid = protein.id
    confidence = np.asarray(fold_result.confidence, np.float32).reshape(len(protein))
    # The structure module already puts the confidence (0-100) in the B-factors.
    model = fold_result.protein.replace(id=rid, aatype=protein.aatype, b_factors=confidence)
    with atomic.atomic_path(out_dir / f"{rid}.pdb", suffix=".pdb") as tmp:
        write_pdb(model, tmp)
    with atomic.atomic_path(out_dir / f"{rid}.npz", suffix=".npz") as tmp:
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
            )
    if write_png:
        mode = "profile" if has_profile else "single-sequence"
        report.plot_prediction(dist["dist_probs"], confidence, out_dir / f"{rid}.png", title=f"{rid} ({mode}, L={len(protein)})")
    return confidence


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

    Returns:
      One RecordResult per input item, in order.
    """
    from tqdm import tqdm

    from foldnet.data.fasta import record_to_protein

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold_cfg = make_fold_config(fold_options)
    results = []
    for k, rec in enumerate(tqdm(records, desc="predict", unit="record", disable=not progress)):
        if isinstance(rec, ParseError):
            res = RecordResult(id=rec.record or f"<record at line {rec.line}>", ok=False, error=str(rec))
        else:
            t0 = time.perf_counter()
            try:
                protein = record_to_protein(rec)
                aln = feats_lib.find_alignment(msa_dir, rec.id)
                profile = None if aln is None else feats_lib.alignment_profile(aln, rec.sequence, rec.id)
                inputs = feats_lib.input_features(protein, profile)
                dist = predictor.distributions(inputs)
                fold_result = fold_distributions(protein, dist, fold_cfg, seed + k, prior)
                conf = write_outputs(out, protein, dist, fold_result, profile is not None, write_png)
                res = RecordResult(
                    id=rec.id,
                    ok=True,
                    length=len(protein),
                    mode="profile" if profile is not None else "single",
                    mean_confidence=float(np.mean(conf)),
                    fold_energy=float(fold_result.energy),
                    seconds=time.perf_counter() - t0,
                    num_windows=int(dist["num_windows"]),
                )
            except (ParseError, ValueError, KeyError, FloatingPointError) as e:
                log.warning("record %s failed: %s", rec.id, e)
                res = RecordResult(id=rec.id, ok=False, error=f"{type(e).__name__}: {e}")
        if on_result is not None:
            on_result(res)
        results.append(res)
    return results


def write_summary(results: Sequence[RecordResult], path: Path) -> None:
    """``summary.tsv``: one row per record (id, ok, length, mode, confidence, energy, time, error)."""
    cols = ["id", "ok", "length", "mode", "mean_confidence", "fold_energy", "num_windows", "seconds", "error"]
    lines = ["\t".join(cols)]
    for r in results:
        d = dataclasses.asdict(r)
        d["ok"] = int(r.ok)
        cells = [str(report._fmt(d[c])).replace("\t", " ").replace("\n", " ") for c in cols]
        lines.append("\t".join(cells))
    atomic.write_text(path, "\n".join(lines) + "\n")


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
    from foldnet.inference.checkpoint_io import load_for_inference

    if not cfg.input:
        raise ValueError("predict: give the FASTA file, e.g. `foldnet predict input=seqs.fasta checkpoint=runs/x`")
    if not Path(cfg.input).is_file():
        raise FileNotFoundError(f"predict: FASTA file {cfg.input} does not exist")
    enable_compilation_cache(cfg.compilation_cache_dir)
    model_cfg, params = load_for_inference(cfg.checkpoint, step=cfg.step)
    prior = load_checkpoint_prior(cfg.checkpoint, cfg.step) if cfg.fold_reference == "prior" else None
    predictor = Predictor(model_cfg, params, cfg.tiling)
    out = Path(cfg.out_dir)
    results = predict_records(
        list(iter_fasta(cfg.input, errors="skip")),
        predictor,
        out,
        msa_dir=cfg.msa_dir,
        fold_options=cfg.fold,
        seed=cfg.seed,
        write_png=cfg.write_png,
        progress=cfg.progress,
        on_result=lambda r: print(r.line(), flush=True),
        prior=prior,
    )
    write_summary(results, out / "summary.tsv")
    return results
