"""Read a training run's checkpoint for inference: step folder, model config, params.

``foldnet.inference.pretrained.load_for_inference`` is the entry point (it also knows the
shipped models); this module knows only what ``foldnet train`` writes and imports nothing
of the inference package.

Accepted locations (what ``foldnet train`` writes, see ``foldnet.train.checkpoint``):

* a run directory: ``<run>/checkpoints/<step>/{state,loader}`` plus the saved
  resolved config (``<run>/config.yaml``, or hydra's ``<run>/.hydra/config.yaml``);
* the checkpoint root ``<run>/checkpoints``;
* one step directory ``<run>/checkpoints/<step>``.

Only the parameters of the saved TrainState are read (``ema_params``, the average,
when the run kept one, else ``params``; Orbax restores them
without the optimiser's structure: no target needed), and the model config is
the ``model`` node of the run's saved config, so a checkpoint is usable without
the training code's config files. The step is the best-by-validation kept
step when the manager has metrics for one, else the latest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

PathLike = Union[str, os.PathLike]

log = logging.getLogger(__name__)

CONFIG_NAMES = ("config.yaml", "resolved_config.yaml", ".hydra/config.yaml")


def _is_step_dir(p: Path) -> bool:
    return p.is_dir() and p.name.isdigit() and (p / "state").is_dir()


def resolve_checkpoint(path: PathLike, step: Optional[int] = None) -> tuple[Path, int, Optional[Path]]:
    """Find the checkpoint root, the step and the run directory of a location.

    Args:
      path: run directory, checkpoint root or step directory.
      step: a specific step (None: best kept step with a metric, else the latest).

    Returns:
      (checkpoint root, step, run directory or None).

    Raises:
      FileNotFoundError: if there is no checkpoint there (lists what was tried).
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if _is_step_dir(p):
        root, chosen = p.parent, int(p.name)
        if step is not None and step != chosen:
            raise ValueError(f"checkpoint {p} is step {chosen}, but step={step} was asked for")
    else:
        root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        steps = sorted(int(d.name) for d in root.iterdir() if _is_step_dir(d))
        if not steps:
            raise FileNotFoundError(
                f"no checkpoint step directories (<step>/state) in {root}; pass a training run "
                "directory, its checkpoints/ folder or one step folder"
            )
        if step is None:
            chosen = _best_step(root, steps)
        elif step in steps:
            chosen = step
        else:
            raise FileNotFoundError(f"step {step} not in {root} (have {steps})")
    run_dir = root.parent if root.name == "checkpoints" else None
    return root, chosen, run_dir


def _best_step(root: Path, steps: list[int]) -> int:
    """Best kept step by the training metric (lower is better) when recorded, else the latest."""
    import json

    from foldnet.train.checkpoint import METRICS_FILE

    sidecar = root / METRICS_FILE
    if sidecar.is_file():
        table = json.loads(sidecar.read_text())
        ranked = [(float(next(iter(table[str(s)].values()))), s) for s in steps if str(s) in table]
        if ranked:
            return min(ranked)[1]
    best = None
    for s in steps:
        meta = root / str(s) / "_CHECKPOINT_METADATA"
        try:
            metrics = json.loads(meta.read_text()).get("metrics") or {}
        except (OSError, ValueError):
            continue
        if len(metrics) == 1:
            value = float(next(iter(metrics.values())))
            if best is None or value < best[0]:
                best = (value, s)
    return best[1] if best is not None else steps[-1]


def find_run_config(run_dir: Optional[Path], root: Path) -> Path:
    """The saved resolved config of a run (first of ``CONFIG_NAMES`` that exists)."""
    tried = []
    for base in [d for d in (run_dir, root, root.parent) if d is not None]:
        for name in CONFIG_NAMES:
            c = base / name
            tried.append(str(c))
            if c.is_file():
                return c
    raise FileNotFoundError(f"no saved run config next to the checkpoint (tried {tried})")


def load_model_config(config_path: PathLike):
    """``ModelConfig`` from the ``model`` node of a saved run config."""
    from omegaconf import OmegaConf

    from foldnet.model import ModelConfig

    node = OmegaConf.load(config_path)
    model = node.get("model") if "model" in node else None
    if model is None:
        raise ValueError(f"{config_path}: no 'model' section")
    d = OmegaConf.to_container(model, resolve=True)
    d = {k: v for k, v in d.items() if not str(k).startswith("_")}
    return ModelConfig.from_dict(d)


def restore_params(root: Path, step: int) -> Any:
    """The parameters of the TrainState saved at ``step`` (host numpy arrays): its
    ``ema_params`` (the parameter average) when the run kept one, else ``params``."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    state = ckptr.restore((root / str(step) / "state").absolute())
    ckptr.close()
    if not isinstance(state, dict) or "params" not in state:
        raise ValueError(f"{root / str(step)}: saved state has no 'params' entry")
    chosen = state.get("ema_params") or state["params"]
    return jax.tree.map(np.asarray, chosen)


def mean_params(named: Iterable[tuple[str, Any]], where: str = "mean_params") -> Any:
    """The leaf-wise mean of parameter trees of one architecture (float64 sums, float32 host arrays).

    ``named`` yields (name, tree) pairs, read one at a time (so a long checkpoint average holds
    one tree and the running sum). Used for checkpoint averages and for "soups" of two networks.
    ``where`` begins the error messages.

    Raises:
      ValueError: if ``named`` is empty, or a tree differs from the first (naming both).
    """
    import jax
    import numpy as np

    total, tree, first, n = None, None, None, 0
    for name, params in named:
        leaves, t = jax.tree_util.tree_flatten(params)
        if tree is None:
            total, tree, first = [np.asarray(x, np.float64) for x in leaves], t, name
        elif t != tree:
            raise ValueError(f"{where}: {name} has other parameters than {first}")
        else:
            total = [a + x for a, x in zip(total, leaves)]
        n += 1
    if tree is None:
        raise ValueError(f"{where}: no parameters to average")
    return jax.tree_util.tree_unflatten(tree, [(a / n).astype(np.float32) for a in total])


def average_params(root: Path, steps: list[int]) -> Any:
    """The leaf-wise mean of ``restore_params`` over several saved steps (``mean_params``).

    A checkpoint average (as in the Transformer's "average the last checkpoints"): with a
    parameter EMA each term is already an average, so this widens the window further.

    Raises:
      ValueError: if ``steps`` is empty or the steps' parameter trees differ.
    """
    if not steps:
        raise ValueError(f"checkpoint {root}: no steps to average")
    return mean_params(((f"step {s}", _restore_or_explain(root, s)) for s in steps), f"checkpoint {root}")


def load_run(checkpoint: PathLike, step: Optional[int] = None):
    """(ModelConfig, params) of a ``foldnet train`` run (``pretrained.load_for_inference`` is the
    entry point that also knows the shipped models).

    Args:
      checkpoint: run directory, checkpoint root or step directory.
      step: a specific step (None: best kept by validation metric, else latest; a damaged
        step is then skipped with a warning).

    Raises:
      FileNotFoundError: if the location holds no checkpoint or config.
      ValueError: if no step (or the one asked for) can be restored.
    """
    root, chosen, run_dir = resolve_checkpoint(checkpoint, step)
    model_cfg = load_model_config(find_run_config(run_dir, root))
    if step is not None or _is_step_dir(Path(checkpoint).expanduser().absolute()):
        return model_cfg, _restore_or_explain(root, chosen)
    # No step asked for: a damaged best/latest step is skipped with a warning, not fatal.
    others = sorted((int(d.name) for d in root.iterdir() if _is_step_dir(d) and int(d.name) != chosen), reverse=True)
    from foldnet.train.checkpoint import quiet_failed_restore

    problems = []
    for s in [chosen] + others:
        try:
            with quiet_failed_restore():
                return model_cfg, restore_params(root, s)
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for damaged files
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            problems.append(f"step {s}: {reason}")
            log.warning("checkpoint step %d in %s cannot be restored (%s); trying another step", s, root, reason)
    raise ValueError(f"checkpoint {root}: no step can be restored ({'; '.join(problems)})")


def _restore_or_explain(root: Path, step: int) -> Any:
    from foldnet.train.checkpoint import quiet_failed_restore

    try:
        with quiet_failed_restore():
            return restore_params(root, step)
    except Exception as e:  # noqa: BLE001
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise ValueError(f"checkpoint {root / str(step)} cannot be restored ({reason}); "
                         "pass another step=... or retrain") from None
