"""``foldnet build-dataset``: parse + featurise a source into HDF5 splits (thin hydra app).

Examples::

    foldnet build-dataset                          # the bundled ProteinNet set
    foldnet build-dataset data=proteinnet_small    # the demo / CI subset
    foldnet build-dataset data=promod3_pdb data.build.workers=2
    foldnet build-dataset data.build.force=true    # rebuild even if up to date
"""

from __future__ import annotations


import hydra
from omegaconf import DictConfig, open_dict

from foldnet.common.paths import config_dir
from foldnet.cli.common import quiet_logs, user_errors
from foldnet.common.paths import data_root

from foldnet.data.config import data_config, register_configs

register_configs()
CONFIG_DIR = config_dir()


def run(cfg: DictConfig) -> dict:
    """Build the dataset of ``cfg.data`` into ``cfg.data.dir``; returns the manifest."""
    from foldnet.data.build import build_dataset

    with open_dict(cfg):
        cfg.data_root = str(data_root(cfg.get("data_root")))
    data = data_config(cfg.data)
    log = print if cfg.get("verbose", True) else (lambda *a, **k: None)
    return build_dataset(data.build, data.dir, log=log).manifest


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="build_dataset")
def _main(cfg: DictConfig) -> None:
    quiet_logs()
    with user_errors("build-dataset"):
        run(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
