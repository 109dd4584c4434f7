"""``foldnet train [key=value ...]``: thin hydra entry point over :func:`foldnet.train.loop.train`.

Config: ``configs/train.yaml`` (groups data/, model/, optim/, parallel/, experiment/,
debug/), typed by ``foldnet.train.config.TrainConfig``. Exit status 1 when the run
stops on non-finite losses, 2 when a data split is missing.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from foldnet.common.paths import config_dir
from foldnet.cli.common import quiet_logs, user_errors
from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores
from foldnet.train.config import register_configs

_CONFIGS = config_dir()

register_configs()


@hydra.main(config_path=_CONFIGS, config_name="train", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from foldnet.train.loop import NonFiniteLossError, train

    quiet_logs()  # XLA backend probing, orbax's per-save INFO lines
    retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
    use_all_cpu_cores()  # parallel=auto then splits each batch over the cores
    try:
        with user_errors("train"):
            summary = train(cfg)
    except NonFiniteLossError as e:
        print(f"foldnet train: {e}", file=sys.stderr)
        raise SystemExit(1) from e
    keys = ("run_dir", "steps_done", "seconds", "crops_per_s", "final_train_loss", "val", "baseline", "beats_baseline")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str))


def main() -> None:
    """Console entry point (``foldnet train key=value ...``)."""
    _app()


if __name__ == "__main__":
    main()
