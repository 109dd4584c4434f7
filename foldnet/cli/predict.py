"""``foldnet predict [key=value ...]``: thin hydra entry point over :func:`foldnet.inference.predict.predict`.

Config: ``configs/predict.yaml`` (schema ``PredictConfig``). Prints one line per
record and a total; exit status 0 when every record succeeded, 1 when some
failed (they are listed in ``<out_dir>/summary.tsv``), 2 for a missing input,
checkpoint or option.
"""

from __future__ import annotations


import hydra
from omegaconf import DictConfig

from foldnet.common.paths import config_dir
from foldnet.cli.common import quiet_logs, user_errors
from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores
from foldnet.inference.config import register_configs, to_config
from foldnet.inference.predict import PredictConfig, predict

_CONFIGS = config_dir()

register_configs()


@hydra.main(config_path=_CONFIGS, config_name="predict", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    quiet_logs()
    with user_errors("predict"):
        results = predict(to_config(cfg, PredictConfig))
    failed = sum(not r.ok for r in results)
    print(f"foldnet predict: {len(results) - failed} of {len(results)} records predicted, {failed} failed")
    if failed:
        raise SystemExit(1)


def main() -> None:
    """Console entry point (``foldnet predict key=value ...``)."""
    retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
    use_all_cpu_cores()  # folding restarts split across the cores
    _app()


if __name__ == "__main__":
    main()
