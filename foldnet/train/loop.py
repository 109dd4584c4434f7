"""The training loop: ``train(cfg) -> summary``, a plain function of a typed config.

What it does, in order:

1. (multi-host) ``jax.distributed.initialize`` when ``parallel.distributed``;
   process 0 is the only writer of logs, the config and the summary.
2. Writes the resolved config to ``<run_dir>/config.yaml``.
3. Builds the training loader (this process's shard of every global batch),
   the model, optimiser and ``TrainState`` (``create_train_state``), and the
   parallel step (``parallelize_train_step``: auto resolved to none / shard_map, or pmap).
4. Resumes from the latest checkpoint in ``<run_dir>/checkpoints`` if any:
   TrainState (params, optimiser state, step, RNG, skip counters) and the
   loader position, so the continued run is the uninterrupted one.
5. Fits the baselines (``baselines.fit_priors``) on the training split and
   scores them on the validation chains once (``<run_dir>/prior.npz``).
6. Steps: the non-finite guard of the step skips bad updates; every skip is
   logged with the example ids, and ``optim.max_consecutive_skips`` skips in a
   row stop the run with ``NonFiniteLossError``. Every ``logging.every_steps``
   a "train" line (interval means, crops/s); every ``val.every_steps`` a "val"
   line; every ``checkpoint.every_steps`` a checkpoint (ranked by the latest
   validation of that step).
7. At the end (``steps`` reached or ``max_minutes`` spent): final validation,
   checkpoint, ``curves.png`` and ``summary.json``.
"""

from __future__ import annotations

import json
import logging as pylogging
import math
import time
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from foldnet.common import atomic
from foldnet.common import residue_constants as rc
from foldnet.common.compilation_cache import compilation_cache
from foldnet.data.cache import H5Dataset
from foldnet.data.loader import CropLoader
from foldnet.model.model import build_model, count_params
from foldnet.model.prior import Prior, fit_priors
from foldnet.train.baselines import evaluate_baselines
from foldnet.train.checkpoint import Checkpointer
from foldnet.train.config import TrainConfig, to_train_config, to_yaml
from foldnet.train.run_log import RunLogger, plot_curves
from foldnet.train.parallel import parallelize_train_step, resolve
from foldnet.train.state import create_train_state, warm_start
from foldnet.train.metrics_buffer import MetricsBuffer
from foldnet.train.validate import validation_batches, validation_metrics, withhold_profile

log = pylogging.getLogger(__name__)

class NonFiniteLossError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


def split_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    """The training and validation HDF5 files of ``cfg.data``.

    ``data.train`` / ``data.val`` when set, else ``<data.dir>/train.h5`` and
    ``<data.dir>/val.h5`` (the layout ``foldnet build-dataset`` writes). Relative
    paths are taken from the working directory.
    """
    d = Path(cfg.data.dir)
    train = Path(cfg.data.train) if cfg.data.train else d / "train.h5"
    val = Path(cfg.data.val) if cfg.data.val else d / "val.h5"
    for split, p in (("train", train), ("val", val)):
        if not p.exists():
            raise FileNotFoundError(
                f"{p}: no {split} split (build it with `foldnet build-dataset data={cfg.data.name}`, "
                f"or set data.{split}=<file>)"
            )
    return train, val


def _poison(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Debug aid: NaN profile for the first example (its loss, and the batch's, become NaN)."""
    batch = dict(batch)
    prof = batch["profile"].copy()
    prof[0] = np.nan
    batch["profile"] = prof
    has = batch["has_profile"].copy()
    has[0] = 1.0
    batch["has_profile"] = has
    return batch


def _load_or_fit_prior(cfg: TrainConfig, run_dir: Path, train_path: Path, writer: bool) -> Prior:
    path = run_dir / "prior.npz"
    if path.exists():
        prior = Prior.load(path)
        if prior.max_separation == cfg.val.prior_max_separation:
            return prior
    t0 = time.perf_counter()
    prior = fit_priors(train_path, cfg.val.prior_max_separation, cfg.val.prior_max_chains)
    log.info("fitted priors on %d training chains in %.1f s", prior.num_chains, time.perf_counter() - t0)
    if writer:
        prior.save(path)
    return prior


def train(config: Any) -> dict[str, Any]:
    """Train a FoldNet as configured; resume from ``<run_dir>/checkpoints`` if possible.

    Args:
      config: a ``TrainConfig`` or the composed hydra config of ``configs/train.yaml``.

    Returns:
      Summary dict: run_dir, steps_done, start_step, seconds, crops_per_s,
      final_train_loss, first_train_loss, total_skips, val (final validation
      metrics), baseline (prior metrics), beats_baseline (per metric), halted.

    Raises:
      NonFiniteLossError: after ``optim.max_consecutive_skips`` skipped steps in a row.
      FileNotFoundError: when a data split is missing.
    """
    cfg = to_train_config(config)
    with compilation_cache(cfg.compilation_cache_dir):
        return _train(cfg, config)


def train_loader(cfg: TrainConfig, train_path, pidx: int, pcount: int) -> tuple[H5Dataset, CropLoader]:
    """The training split and this process's share of its random-crop batches."""
    if cfg.data.batch_size % pcount:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} (global) must divide by {pcount} processes")
    per_process = cfg.data.batch_size // pcount
    train_ds = H5Dataset(train_path)
    loader = CropLoader(
        train_ds, cfg.data.crop_size, per_process, cfg.seed, shuffle=True, random_crop=True, repeat=True,
        drop_remainder=True, profile_dropout=cfg.data.profile_dropout, min_length=cfg.data.min_length,
        process_index=pidx, process_count=pcount, prefetch=cfg.data.prefetch,
        discontiguous_prob=cfg.data.discontiguous_prob, secondary_structure=cfg.model.ss_weight > 0,
        teacher_profile=cfg.distill_from is not None,
    )
    return train_ds, loader


def _resumed(cfg: TrainConfig, ckpt: Checkpointer, state: Any, loader: CropLoader) -> tuple[Any, int]:
    """(state, start step): the latest checkpoint's when resuming (the loader moved to its
    position), else the fresh state at step 0."""
    if not (cfg.checkpoint.resume and ckpt.latest_step() is not None):
        return state, 0
    state, loader_state = ckpt.restore(None, state)
    if loader_state is not None:
        # Every process is at the same (epoch, index); process 0 saved its own copy.
        loader_state = {k: v for k, v in loader_state.items() if k != "process_index"}
        loader.load_state_dict(loader_state)
    start_step = int(np.asarray(state.step))
    log.info("resumed from %s at step %d", ckpt.directory, start_step)
    return state, start_step


def _warm_started(source: str, state: Any, optimizer: Any, grow: bool) -> Any:
    """The fresh state with the parameters of ``source`` (``TrainConfig.init_from``)."""
    from foldnet.inference.pretrained import load_for_inference  # inference I/O, only when asked

    _, params = load_for_inference(source)
    state = warm_start(state, optimizer, params, source, grow=grow)
    log.info("initialised the parameters from %s", source)
    return state


def _teacher(cfg: TrainConfig) -> Any:
    """The training step's relabelling by ``cfg.distill_from`` (None without a teacher)."""
    if cfg.distill_from is None:
        return None
    from foldnet.inference.pretrained import load_for_inference  # inference I/O, only when asked
    from foldnet.train.distill import make_relabel

    teacher_cfg, params = load_for_inference(cfg.distill_from)
    log.info("distilling from %s (weight %g)", cfg.distill_from, cfg.distill_weight)
    return make_relabel(build_model(teacher_cfg), params, cfg.distill_weight)


def _predict_padded(pstep: Any, params: Any, batch: dict[str, np.ndarray]) -> dict:
    """The parallel eval step on a host batch of any size.

    The eval batch must split evenly over the local devices: pad with empty examples
    (example_id -1, masks 0) and drop their outputs again.
    """
    b = batch["aatype"].shape[0]
    pad = -b % pstep.num_local_devices
    if pad:
        fill = {"example_id": -1, "aatype": rc.UNK_INDEX}
        batch = {k: np.concatenate([v, np.full((pad,) + v.shape[1:], fill.get(k, 0), v.dtype)])
                 for k, v in batch.items()}
    out = pstep.eval(params, pstep.shard_batch(batch))
    return {k: (v[:b] if np.ndim(v) and np.shape(v)[0] == b + pad else v) for k, v in out.items()}


def _beats_baseline(val: dict, baseline: dict) -> dict[str, bool]:
    """Per headline metric: is the model's last validation better than the priors'?"""
    return {
        "dist_nll": val["dist_nll"] < baseline["dist_nll"],
        "lr_top_l5_precision": val["lr_top_l5_precision"] > baseline["lr_top_l5_precision"],
        "phi_mae_deg": val["phi_mae_deg"] < baseline["phi_mae_deg"],
        "psi_mae_deg": val["psi_mae_deg"] < baseline["psi_mae_deg"],
    }


def _train(cfg: TrainConfig, config: Any) -> dict[str, Any]:
    if cfg.parallel.distributed:
        from foldnet.train import distributed

        distributed.initialize(cfg.parallel)
    pidx, pcount = jax.process_index(), jax.process_count()
    writer = pidx == 0
    run_dir = Path(cfg.run_dir).absolute()
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir / "config.yaml", to_yaml(config))
    train_path, val_path = split_paths(cfg)

    train_ds, loader = train_loader(cfg, train_path, pidx, pcount)
    val_ds = H5Dataset(val_path)

    # -- model, state, parallel step --------------------------------------------------------------
    example = loader.make_batch(0, 0)  # pure function of (epoch, index): does not move the loader
    model, optimizer, state = create_train_state(cfg.model, cfg.optim, cfg.seed, example)
    n_params = count_params(state.params)
    pcfg = resolve(cfg.parallel, cfg.data.batch_size // pcount, crop_size=cfg.data.crop_size)
    pstep = parallelize_train_step(model, optimizer, pcfg, ema_decay=cfg.optim.ema_decay, relabel=_teacher(cfg))

    ckpt = Checkpointer(run_dir / "checkpoints", cfg.checkpoint)
    state, start_step = _resumed(cfg, ckpt, state, loader)
    if start_step == 0 and cfg.init_from:
        state = _warm_started(cfg.init_from, state, optimizer, cfg.init_grow)
    state = pstep.replicate(state)

    logger = RunLogger(run_dir, enabled=writer, tensorboard=cfg.logging.tensorboard)
    logger.log("run", start_step, {"num_params": n_params, "processes": pcount,
                                   "devices": pstep.num_devices, "parallel": pcfg.mode,
                                   "model": cfg.model.name, "global_batch": cfg.data.batch_size,
                                   "crop_size": cfg.data.crop_size,
                                   "init_from": cfg.init_from if start_step == 0 else None,
                                   "distill_from": cfg.distill_from})

    # -- baselines ------------------------------------------------------------------------------
    baseline: Optional[dict] = None
    if cfg.val.baselines:
        prior = _load_or_fit_prior(cfg, run_dir, train_path, writer)
        baseline = evaluate_baselines(val_ds, prior, cfg.val)
        logger.log("baseline", start_step, baseline)

    with_ss = cfg.model.ss_weight > 0

    def score(params: Any, dataset: H5Dataset, num_chains: Optional[int] = None, single: bool = False) -> dict:
        batches = validation_batches(dataset, cfg.val, num_chains=num_chains, secondary_structure=with_ss)
        return validation_metrics(
            lambda b: _predict_padded(pstep, params, b),
            withhold_profile(batches) if single else batches,
            min_separation=cfg.model.distogram_min_separation,
        )

    def validate(step: int) -> dict:
        elapsed = time.perf_counter() - t_start  # training wall time so far
        metrics = score(state.eval_params, val_ds)
        metrics["elapsed_s"] = elapsed
        logger.log("val", step, metrics)
        if state.ema_params is not None and cfg.val.raw_params:
            logger.log("val_raw", step, {**score(state.params, val_ds), "elapsed_s": elapsed})
        if cfg.val.single_sequence:
            logger.log("val_single", step, {**score(state.eval_params, val_ds, single=True), "elapsed_s": elapsed})
        if cfg.val.train_chains > 0:
            logger.log("val_train", step, {**score(state.eval_params, train_ds, cfg.val.train_chains),
                                           "elapsed_s": elapsed})
        return metrics

    # -- the loop ----------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    step = start_step
    t_start = time.perf_counter()
    t_interval, steps_interval = t_start, 0
    last_val: Optional[dict] = None
    last_val_step = -1
    halted = False
    timed_out = False
    nan_steps = set(int(s) for s in cfg.nan_steps)
    max_skips = cfg.optim.max_consecutive_skips

    def on_skip(at_step: int, m: dict) -> None:
        bad = np.asarray(m["nonfinite_example_ids"])
        bad = sorted(int(i) for i in bad[bad >= 0])
        ids = [train_ds.ids[i] for i in bad if 0 <= i < len(train_ds)]
        logger.log("skip", at_step, {"consecutive_skips": m["consecutive_skips"],
                                     "total_skips": m["total_skips"], "example_ids": bad, "chain_ids": ids})
        log.warning("step %d: non-finite loss/gradient, update skipped (examples %s)", at_step, ids or bad)
        if m["consecutive_skips"] >= max_skips:
            raise NonFiniteLossError(
                f"{m['consecutive_skips']} consecutive non-finite steps (last at step {at_step}, "
                f"examples {ids or bad}); see {run_dir / 'metrics.jsonl'}"
            )

    metrics = MetricsBuffer(on_skip)
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not (writer and cfg.logging.progress),
               dynamic_ncols=True, desc="train")
    batches = iter(loader)
    try:
        while step < cfg.steps:
            host_batch = next(batches)
            if step + 1 in nan_steps:
                host_batch = _poison(host_batch)
            state, m = pstep.step(state, pstep.shard_batch(host_batch))
            step += 1
            steps_interval += 1
            bar.update(1)
            metrics.append(step, m)  # stays on the device until the next log point
            # A run of max_skips skipped steps must stop within max_skips steps.
            if step % max(1, min(cfg.logging.every_steps, max_skips)) == 0:
                metrics.flush()
            if step % cfg.logging.every_steps == 0 or step == cfg.steps:
                entry = metrics.interval_means()
                now = time.perf_counter()
                entry["crops_per_s"] = steps_interval * cfg.data.batch_size / max(now - t_interval, 1e-9)
                entry["elapsed_s"] = now - t_start
                logger.log("train", step, entry)
                bar.set_postfix(loss=f"{entry.get('loss', math.nan):.3f}", crops_s=f"{entry['crops_per_s']:.1f}")
                t_interval, steps_interval = now, 0
            if cfg.halt_at_step is not None and step >= cfg.halt_at_step:
                metrics.flush()
                halted = True  # as if killed: no final validation or checkpoint
                break
            timed_out = cfg.max_minutes > 0 and (time.perf_counter() - t_start) > 60.0 * cfg.max_minutes
            if step == cfg.steps or timed_out:
                break
            if cfg.val.every_steps > 0 and step % cfg.val.every_steps == 0:
                last_val, last_val_step = validate(step), step
            if cfg.checkpoint.every_steps > 0 and step % cfg.checkpoint.every_steps == 0:
                metrics.flush()
                ckpt.save(step, pstep.unreplicate(state), loader.state_dict(),
                          last_val if last_val_step == step else None)
        metrics.flush()
        seconds = time.perf_counter() - t_start
        if not halted:
            if last_val_step != step:
                last_val, last_val_step = validate(step), step
            ckpt.save(step, pstep.unreplicate(state), loader.state_dict(), last_val)
    finally:
        bar.close()
        batches.close()  # stops the prefetch thread
        ckpt.close()

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "start_step": start_step,
        "steps_done": step,
        "halted": halted,
        "timed_out": timed_out,
        "seconds": seconds,
        "crops_per_s": (step - start_step) * cfg.data.batch_size / max(seconds, 1e-9),
        "num_params": n_params,
        "first_train_loss": metrics.first_loss,
        "final_train_loss": metrics.last_loss,
        "total_skips": int(np.asarray(pstep.unreplicate(state.total_skips))),
        "val": last_val,
        "baseline": baseline,
        "best_checkpoint_step": ckpt.best_step(),
        "device": str(jax.devices()[0].device_kind),
    }
    if last_val is not None and baseline is not None:
        summary["beats_baseline"] = _beats_baseline(last_val, baseline)
    if writer:
        if cfg.logging.curves:
            plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", baseline)
        atomic.write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    logger.close()
    return summary


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
