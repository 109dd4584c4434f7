"""The pretrained weights shipped inside the package, and how they are made.

A shipped model is a folder ``foldnet/pretrained/<name>/`` with

* ``params.msgpack`` — the parameter pytree, ``flax.serialization.msgpack_serialize``
  of host numpy arrays (a few MB; no Orbax needed to read it);
* ``config.yaml``    — the training run's resolved config (its ``model`` node
  rebuilds the network, the rest documents data, split and recipe);
* ``prior.npz``      — the run's sequence-separation / residue-type priors (baselines);
* ``confidence.json`` — the per-residue confidence calibration fitted on the validation
  split (``foldnet.inference.calibrate``; optional: without it the B-factors fall back to
  the uncalibrated distogram sharpness, with a warning);
* ``manifest.json``  — name, step, data split, parameter count, the sha256 of
  ``params.msgpack`` (checked on every load), and the validation metrics the
  checkpoint reached.

``foldnet predict`` / ``foldnet evaluate`` use ``DEFAULT_MODEL`` when no
checkpoint is given. The ``checkpoint`` option of both is resolved here, once:
``shipped_name`` (None / "pretrained:<name>" name a shipped model), ``checkpoint_home``
(the folder holding its prior.npz, and an id of the weights) and ``load_for_inference``
(ModelConfig, params); a training run is read by ``foldnet.inference.checkpoint_io``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

from foldnet.common import atomic
from foldnet.inference.checkpoint_io import find_run_config, load_model_config, load_run, resolve_checkpoint, restore_params

PathLike = Union[str, os.PathLike]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = "foldnet-base-cpu"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def available() -> list[str]:
    """Names of the shipped models."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "manifest.json").is_file())


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    d = PRETRAINED_DIR / name
    if not name or "/" in name or "\\" in name or name.startswith(".") or not (d / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no pretrained model {name!r} in {PRETRAINED_DIR} (available: {available() or 'none'}); "
            "pass a training run with checkpoint=runs/<run>"
        )
    return d


def load_manifest(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The shipped model's ``manifest.json``, checked: a JSON object with a sha256 of the weights.

    Raises:
      ParseError: the manifest is not valid UTF-8 JSON or lacks a 64-hex ``params_sha256``.
    """
    from foldnet.data.errors import ParseError

    path = model_dir(name) / "manifest.json"
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ParseError(path, f"not a valid JSON manifest ({type(e).__name__}: {e})") from None
    digest = manifest.get("params_sha256") if isinstance(manifest, dict) else None
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ParseError(path, "manifest has no 64-hex-digit 'params_sha256' (the weights cannot be verified)")
    return manifest


def load_pretrained(name: str = DEFAULT_MODEL):
    """(ModelConfig, params) of a shipped model; the weights' checksum is verified.

    Raises:
      FileNotFoundError: if the model is not shipped.
      ValueError: if params.msgpack does not match the manifest's sha256.
    """
    from flax import serialization

    d = model_dir(name)
    manifest = load_manifest(name)
    weights = d / "params.msgpack"
    digest = _sha256(weights)
    if digest != manifest["params_sha256"]:
        from foldnet.data.errors import ParseError

        raise ParseError(
            weights, f"sha256 {digest} does not match the manifest ({manifest['params_sha256']}); "
            "the file is damaged or was replaced"
        )
    params = serialization.msgpack_restore(weights.read_bytes())
    return load_model_config(d / "config.yaml"), params


def export_pretrained(
    run: PathLike,
    name: str,
    step: Optional[int] = None,
    out_root: PathLike = PRETRAINED_DIR,
    extra: Optional[dict[str, Any]] = None,
    extra_files: Optional[dict[str, bytes]] = None,
) -> Path:
    """Package a training run's checkpoint as a shipped model folder.

    Args:
      run: training run directory (``<run>/checkpoints/<step>``, ``<run>/config.yaml``).
      name: folder name under ``out_root``.
      step: checkpoint step (None: best by validation if recorded, else latest).
      out_root: where model folders live (default: the package's ``pretrained/``).
      extra: additional manifest entries (e.g. the recipe's experiment name).
      extra_files: more files of the folder (e.g. ``confidence.json``), listed with their
        sha256 under the manifest's ``files``.

    Returns:
      The model folder. It is written beside the target and renamed into place,
      so a failed export never leaves a half-written model.
    """
    import numpy as np
    from flax import serialization
    import jax


    root, chosen, run_dir = resolve_checkpoint(run, step)
    params = jax.tree.map(np.asarray, restore_params(root, chosen))
    config_path = find_run_config(run_dir, root)
    val = None
    metrics_file = (run_dir or root.parent) / "metrics.jsonl"
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "val" and rec.get("step") == chosen:
                val = {k: v for k, v in rec.items() if k not in ("kind", "step")}
    out_root = Path(out_root)
    final = out_root / name
    tmp = out_root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    blob = serialization.msgpack_serialize(params)
    (tmp / "params.msgpack").write_bytes(blob)
    shutil.copyfile(config_path, tmp / "config.yaml")
    # The run's baselines (separation / residue-type priors fitted on its training split)
    # travel with the weights, so `foldnet evaluate` compares against the same prior.
    prior = (run_dir or root.parent) / "prior.npz"
    if prior.is_file():
        shutil.copyfile(prior, tmp / "prior.npz")
    files = {}
    for fname, data in (extra_files or {}).items():
        (tmp / fname).write_bytes(data)
        files[fname] = hashlib.sha256(data).hexdigest()
    manifest = {
        "name": name,
        "step": int(chosen),
        "source_run": str(Path(run).name),
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "params_sha256": hashlib.sha256(blob).hexdigest(),
        "params_bytes": len(blob),
        "validation_at_step": val,
        **({"files": files} if files else {}),
        **(extra or {}),
    }
    atomic.write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        old = out_root / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def shipped_name(checkpoint: Optional[PathLike]) -> Optional[str]:
    """The shipped model a ``checkpoint`` option names, or None for a training run.

    None, "" and "null" name ``DEFAULT_MODEL``; ``pretrained:<name>`` names ``<name>``.
    """
    if checkpoint in (None, "", "null"):
        return DEFAULT_MODEL
    if str(checkpoint).startswith("pretrained:"):
        return str(checkpoint).partition("pretrained:")[2] or DEFAULT_MODEL
    return None


def checkpoint_home(checkpoint: Optional[PathLike], step: Optional[int] = None) -> tuple[Path, str]:
    """(folder that holds the checkpoint's ``prior.npz``, an id of its weights).

    A shipped model: its folder and ``pretrained:<name>:<sha256[:16]>``; a training run: the
    run directory (the checkpoint root's parent when there is none) and ``<root>:<step>``.
    """
    name = shipped_name(checkpoint)
    if name is not None:
        return model_dir(name), f"pretrained:{name}:{load_manifest(name)['params_sha256'][:16]}"
    root, chosen, run_dir = resolve_checkpoint(checkpoint, step)
    return (run_dir or root.parent), f"{root}:{chosen}"


# A saved config without data.crop_size (`foldnet train` saves the whole resolved config, so one
# written by hand): the window predict / evaluate used before they read the training crop, and
# the shipped models' crop.
TRAINING_CROP_FALLBACK = 128


def training_crop(checkpoint: Optional[PathLike], step: Optional[int] = None) -> int:
    """The crop length a network was trained on: ``data.crop_size`` of its saved config.

    ``tiling.crop_size: null`` (predict, evaluate) tiles long chains with windows of this
    length. Takes the same ``checkpoint`` / ``step`` forms as ``load_for_inference``.
    """
    from omegaconf import OmegaConf

    name = shipped_name(checkpoint)
    if name is not None:
        config = model_dir(name) / "config.yaml"
    else:
        root, _, run_dir = resolve_checkpoint(checkpoint, step)
        config = find_run_config(run_dir, root)
    crop = OmegaConf.select(OmegaConf.load(config), "data.crop_size", default=None)
    return int(crop) if crop else TRAINING_CROP_FALLBACK


def load_for_inference(checkpoint: Optional[PathLike], step: Optional[int] = None):
    """(ModelConfig, params) of a trained network.

    Args:
      checkpoint: run directory, checkpoint root or step directory; None for the
        bundled default model, ``pretrained:<name>`` for another shipped one.
      step: a specific step (None: best kept by validation metric, else latest).

    Returns:
      (ModelConfig, params pytree).

    Raises:
      ValueError: if no checkpoint was given and the bundled model is missing.
      FileNotFoundError: if the location holds no checkpoint or config.
      ValueError: also when no step of a run can be restored (``checkpoint_io.load_run``).
    """
    name = shipped_name(checkpoint)
    if name is not None:
        if checkpoint in (None, "", "null") and name not in available():
            raise ValueError(
                "no checkpoint given and no bundled pretrained model found: pass the run "
                "directory of a `foldnet train` run, e.g. `checkpoint=runs/my_run`"
            )
        return load_pretrained(name)
    return load_run(checkpoint, step)
