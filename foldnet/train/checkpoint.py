"""Checkpoints with Orbax: train state + loader position, last K and best by validation.

Each checkpoint step directory holds two items (``ocp.args.Composite``):

* ``state``  - the whole :class:`TrainState` pytree (step, params, opt_state, rng,
  skip counters) through ``StandardSave``; restoring against the abstract
  state of a freshly built TrainState gives the same tree, dtypes and shardings.
* ``loader`` - the data loader's ``state_dict()`` as JSON (``JsonSave``), so a
  resumed run draws exactly the batches the interrupted one would have drawn.

Retention (``preservation_policy``): the union of the latest ``keep_last``
checkpoints and the ``keep_best`` checkpoints with the lowest validation metric
(``best_metric``, saved as the step's ``metrics``). Checkpoints saved without
metrics are kept only while they are among the latest.

Atomicity: Orbax writes a step into ``<dir>/<step>.orbax-checkpoint-tmp`` (see
``orbax/checkpoint/_src/path/atomicity.py``, ``TMP_DIR_SUFFIX``) and renames it
to ``<dir>/<step>`` only after every item is written and committed, so a crash
mid-save leaves no directory that ``latest_step()`` would pick up; leftover temp
directories are removed in the background when the manager opens
(``cleanup_tmp_directories``; Orbax finishes that before the next save).
Multi-host: every process calls ``save``/``restore``; Orbax coordinates who
writes (the primary host writes metadata, each host its array shards).

Damage: a finished step whose files were later deleted or garbled (a disk problem, a user
tidying up) cannot be restored. ``restore(None, ...)`` then warns, moves that step out of
the way into ``<dir>.broken/`` (so the run can save that step number again) and resumes
from the next older step; only when no step restores does it fail, naming the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

_LOADER_EMPTY = {"__empty__": True}
# Sidecar of validation metrics per saved step (see Checkpointer._record_metric).
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class CheckpointConfig:
    """When and what to checkpoint.

    Attributes:
      every_steps: save every this many steps (and always at the end of training).
      keep_last: keep the latest this many checkpoints.
      keep_best: also keep this many checkpoints with the best validation metric.
      best_metric: validation metric that ranks checkpoints (lower is better).
      resume: restore the latest checkpoint of the run directory if there is one.
      async_save: write in a background thread (Orbax async checkpointing).
    """

    every_steps: int = 200
    keep_last: int = 2
    keep_best: int = 1
    best_metric: str = "dist_nll"
    resume: bool = True
    async_save: bool = False


@contextlib.contextmanager
def quiet_failed_restore() -> Iterator[None]:
    """Hide the asyncio noise a failed Orbax restore leaves behind ("Task exception was never
    retrieved", "Event loop is closed"): the caller reports the failure in one warning."""
    logger = logging.getLogger("asyncio")
    level, hook = logger.level, sys.unraisablehook
    logger.setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()  # abandoned tasks report when collected: collect them while muted
        logger.setLevel(level)
        sys.unraisablehook = hook


def _key_to_data(tree: Any) -> tuple[Any, Any]:
    """Typed PRNG keys cannot be written as plain arrays: store their uint32 data.

    Returns the converted tree and a same-structure tree of booleans saying which
    leaves were typed keys (to re-wrap them on restore).
    """
    is_key = jax.tree.map(
        lambda x: isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key), tree
    )
    data = jax.tree.map(lambda x, k: jax.random.key_data(x) if k else x, tree, is_key)
    return data, is_key


class Checkpointer:
    """Save / restore TrainState + loader position in ``directory`` with Orbax.

    Args:
      directory: checkpoint root (``<run_dir>/checkpoints``).
      cfg: retention and timing options.
    """

    def __init__(self, directory: str | os.PathLike, cfg: CheckpointConfig):
        self.directory = Path(directory).absolute()
        self.cfg = cfg
        if cfg.keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {cfg.keep_last}")
        metric = cfg.best_metric
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=cfg.keep_last)]
        if cfg.keep_best > 0:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: float(m[metric]),
                    # BestN sorts ascending and keeps the tail; reverse=True keeps the lowest.
                    reverse=True,
                    n=cfg.keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # The loop decides when to save (every_steps, end of run); Orbax must not skip.
            save_interval_steps=1,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=cfg.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._options = options
        self._mngr = self._open()

    def _open(self):
        return ocp.CheckpointManager(self.directory, options=self._options, item_names=("state", "loader"))

    def latest_step(self) -> Optional[int]:
        """The newest finished checkpoint step, or None."""
        return self._mngr.latest_step()

    def best_step(self) -> Optional[int]:
        """The kept checkpoint with the lowest ``best_metric``, or None if none has metrics."""
        steps = [i for i in self._mngr._checkpoints if i.metrics is not None]  # noqa: SLF001
        if not steps:
            return None
        return min(steps, key=lambda i: float(i.metrics[self.cfg.best_metric])).step

    def all_steps(self) -> list[int]:
        """All kept checkpoint steps, ascending."""
        return sorted(self._mngr.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        loader_state: Optional[Mapping[str, Any]],
        metrics: Optional[Mapping[str, float]] = None,
    ) -> bool:
        """Write one checkpoint (all processes call this).

        Args:
          step: training step the state has reached.
          state: TrainState (unreplicated or globally sharded arrays).
          loader_state: ``loader.state_dict()`` (JSON-serialisable), or None.
          metrics: validation metrics of this step (ranks it for ``keep_best``), or None.

        Returns:
          True if a checkpoint was written (False if this step already exists).
        """
        if step in self._mngr.all_steps():
            return False
        data, _ = _key_to_data(state)
        m = None
        if metrics is not None and self.cfg.best_metric in metrics:
            m = {self.cfg.best_metric: float(metrics[self.cfg.best_metric])}
        saved = self._mngr.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(data),
                loader=ocp.args.JsonSave(dict(loader_state) if loader_state is not None else _LOADER_EMPTY),
            ),
            metrics=m,
            force=True,
        )
        if saved and m is not None and jax.process_index() == 0:
            self._record_metric(int(step), m[self.cfg.best_metric])
        return saved

    def _record_metric(self, step: int, value: float) -> None:
        """Keep ``<checkpoints>/metrics.json`` ({step: best_metric}) beside the steps.

        Orbax 0.12 keeps the ranking metrics in memory only (the step's
        ``_CHECKPOINT_METADATA`` holds ``"metrics": {}``), so inference and a resumed
        run could not tell which kept step was best; this sidecar can.
        """
        import json

        from foldnet.common import atomic

        path = Path(self.directory) / METRICS_FILE
        table = json.loads(path.read_text()) if path.is_file() else {}
        table[str(step)] = {self.cfg.best_metric: value}
        atomic.write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")

    def restore(self, step: Optional[int], abstract_state: Any) -> tuple[Any, Optional[dict]]:
        """Read a checkpoint back into the structure of ``abstract_state``.

        Args:
          step: which step (None = latest).
          abstract_state: a TrainState of the same structure (concrete arrays or
            ``jax.ShapeDtypeStruct``s); its shardings place the restored arrays.

        Returns:
          (restored state, loader state dict or None).
        """
        if step is None:
            return self._restore_newest_good(abstract_state)
        return self._restore(step, abstract_state)

    def _restore_newest_good(self, abstract_state: Any) -> tuple[Any, Optional[dict]]:
        if self.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        problems = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                with quiet_failed_restore():
                    return self._restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for damaged files
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                problems.append(f"step {step}: {reason}")
                moved = self._set_aside(step)
                log.warning("checkpoint step %d in %s cannot be restored (%s); moved to %s, trying the "
                            "previous step", step, self.directory, reason, moved)
        raise ValueError(f"no checkpoint in {self.directory} can be restored (all moved to "
                         f"{self.directory.name}.broken/; the same command now starts from step 0): "
                         + "; ".join(problems))

    def _set_aside(self, step: int) -> Optional[Path]:
        """Move a damaged step out of the checkpoint root and reopen the manager without it."""
        src = self.directory / str(step)
        dest = None
        if jax.process_index() == 0 and src.exists():
            dest = self.directory.with_name(self.directory.name + ".broken") / f"{step}-{int(time.time())}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest))
        try:
            self._mngr.close()
        except Exception:  # noqa: BLE001 - a manager that failed a restore may not close cleanly
            pass
        self._mngr = self._open()
        return dest

    def _restore(self, step: int, abstract_state: Any) -> tuple[Any, Optional[dict]]:
        data_template, is_key = _key_to_data(abstract_state)
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, data_template)
        restored = self._mngr.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), loader=ocp.args.JsonRestore()),
        )
        state = jax.tree.map(lambda x, k: jax.random.wrap_key_data(x) if k else x, restored.state, is_key)
        loader_state = dict(restored.loader) if restored.loader is not None else None
        if loader_state == _LOADER_EMPTY:
            loader_state = None
        return state, loader_state

    def wait(self) -> None:
        """Block until an async save has finished."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tree_equal(a: Any, b: Any) -> bool:
    """True when two pytrees have the same structure and bit-identical leaves."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    if ta != tb:
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
