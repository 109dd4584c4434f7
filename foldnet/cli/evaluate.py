"""``foldnet evaluate [key=value ...]``: thin hydra entry point over :func:`foldnet.inference.evaluate.evaluate`.

Config: ``configs/evaluate.yaml`` (schema ``EvaluateConfig``). Prints the overall
table; exit status 0 when at least one domain was scored and none failed, 1 when
some failed (listed in ``<out_dir>/failures.csv``), 2 for a missing input,
checkpoint or option.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from foldnet.common.paths import config_dir
from foldnet.cli.common import quiet_logs, user_errors
from foldnet.cli.runtime import retain_freed_memory, use_all_cpu_cores
from foldnet.inference.config import register_configs, to_config
from foldnet.inference.evaluate import EvaluateConfig, evaluate

_CONFIGS = config_dir()

register_configs()


@hydra.main(config_path=_CONFIGS, config_name="evaluate", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    quiet_logs()
    with user_errors("evaluate"):
        summary = evaluate(to_config(cfg, EvaluateConfig))
    c = summary["counts"]
    print(f"foldnet evaluate: {summary['num_domains']} domains in the report ({c['evaluated']} new, "
          f"{c['resumed']} resumed, {c['failed']} failed) -> {Path(to_config(cfg, EvaluateConfig).out_dir) / 'report.md'}")
    for method, row in summary["overall"].items():
        print(f"  {method:<15} n={row['n']:<4} TM={_f(row.get('tm_score'))} lDDT={_f(row.get('lddt_ca'))} "
              f"long-L/5={_f(row.get('prec_long_L5'))} NLL={_f(row.get('dist_nll'))}")
    if c["failed"] or summary["num_domains"] == 0:
        raise SystemExit(1)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    """Console entry point (``foldnet evaluate key=value ...``)."""
    retain_freed_memory()  # XLA's per-step buffers reused, not page-faulted in again
    use_all_cpu_cores()  # folding restarts split across the cores
    _app()


if __name__ == "__main__":
    main()
