"""``foldnet fetch``: download PDB/mmCIF entries, CATH files/domains and PDNet into the cache.

Thin hydra entry point over :func:`foldnet.data.sources.run_fetch`; keys in
``configs/fetch.yaml``. Exit status 1 when any item failed (the summary names each
failure and its reason), 2 for a bad option or ID.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from foldnet.common.paths import config_dir
from foldnet.cli.common import quiet_logs, user_errors
from foldnet.data.errors import ParseError
from foldnet.data.sources import FetchConfig, run_fetch

_CONFIGS = config_dir()


def run(cfg: DictConfig) -> int:
    """Run a composed ``fetch`` config; print the summary; return the exit status."""
    fields = {f for f in FetchConfig.__dataclass_fields__}
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in fields}
    try:
        report = run_fetch(FetchConfig(**values))
    except (ValueError, ParseError) as e:
        print(f"foldnet fetch: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    for item in report.items:
        if item.status != "failed":
            print(f"  {item.status:<7} {item.key} -> {item.path}")
    return 0 if report.ok else 1


@hydra.main(config_path=_CONFIGS, config_name="fetch", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    quiet_logs()
    with user_errors("fetch"):
        status = run(cfg)
    if status:
        raise SystemExit(status)


def main() -> None:
    """Console entry point (``foldnet fetch key=value ...``)."""
    _app()


if __name__ == "__main__":
    main()
