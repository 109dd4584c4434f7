"""Typed config schemas of the data pipeline, registered with hydra's ConfigStore.

``configs/data/*.yaml`` (the hydra ``data`` group, shared by ``build-dataset``
and ``train``) fill ``DataConfig``; ``configs/build_dataset.yaml`` fills
``BuildDatasetConfig``. Code that receives an untyped ``cfg.data`` validates it
with ``data_config(cfg.data)``.

Registered names: ``build_dataset_schema`` (root) and ``data/data_schema``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf


@dataclass
class SplitConfig:
    """How chains are assigned to train/val/test (foldnet.data.split)."""

    # "given": the source's own split (ProteinNet files; a `split` column of a
    # pdb_dir list file; else everything -> train). "cath": by CATH group.
    # "file": a `name<TAB>split` file such as splits_recommended.tsv.
    mode: str = "given"
    # "topology" (C.A.T) or "superfamily" (C.A.T.H), for mode "cath".
    level: str = "topology"
    val_fraction: float = 0.05
    test_fraction: float = 0.10
    seed: int = 0
    # Chains without a CATH label in mode "cath": "train" or "drop".
    unlabeled: str = "train"
    # Split file for mode "file".
    file: Optional[str] = None


@dataclass
class ProteinNetSourceConfig:
    # split name -> ProteinNet text file (plain or .gz).
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class PdbDirSourceConfig:
    # A directory of PDB/mmCIF/CATH domain files, or a list file (TSV with a
    # header naming columns among path, chain, domain, boundaries, cath, split).
    path: Optional[str] = None
    # Glob of the files taken from a directory.
    glob: str = "*"
    # Optional CATH domain list (CLF 2.0) labelling files named by domain id.
    domain_list: Optional[str] = None


@dataclass
class PdnetSourceConfig:
    # Directory of `<id>-cb.npy` distance files (required) and of `<id>.pkl`
    # feature files (optional: profiles).
    distances_dir: Optional[str] = None
    features_dir: Optional[str] = None
    # Optional file listing the ids to take (one per line); default all maps.
    ids: Optional[str] = None


@dataclass
class LeakageConfig:
    enabled: bool = True
    # k-mer length and containment threshold of near-duplicate detection.
    k: int = 5
    threshold: float = 0.9


@dataclass
class BuildConfig:
    """What `foldnet build-dataset` reads and how it filters and splits it."""

    # "proteinnet", "pdb_dir" or "pdnet".
    source: str = "proteinnet"
    proteinnet: ProteinNetSourceConfig = field(default_factory=ProteinNetSourceConfig)
    pdb_dir: PdbDirSourceConfig = field(default_factory=PdbDirSourceConfig)
    pdnet: PdnetSourceConfig = field(default_factory=PdnetSourceConfig)
    # ProMod3 chain table attaching CATH labels to chains without one (null = none).
    cath_labels: Optional[str] = None
    split: SplitConfig = field(default_factory=SplitConfig)
    # At most this many chains per split, first in input order (demo / CI sets).
    max_chains: Optional[int] = None
    min_length: int = 1
    max_length: Optional[int] = None
    # Parallel parser processes (1 = in process).
    workers: int = 1
    # Rebuild even when manifest.json says the output is up to date.
    force: bool = False
    leakage: LeakageConfig = field(default_factory=LeakageConfig)


@dataclass
class DataConfig:
    """One dataset: where its HDF5 splits live, how to load them, how to build them."""

    name: str = MISSING
    # Output folder of build-dataset: <dir>/{train,val,test}.h5, manifest.json, ...
    dir: str = MISSING
    train: Optional[str] = None
    val: Optional[str] = None
    crop_size: int = 64
    # Global batch size (foldnet train gives each process batch_size / process_count).
    batch_size: int = 8
    eval_batch_size: int = 4
    # Longest chain of full-length evaluation batches (loader.full_length_batches).
    eval_max_length: int = 400
    profile_dropout: float = 0.0
    # Probability of a two-window crop of a chain longer than crop_size (loader.CropLoader):
    # long-range pairs inside a small crop.
    discontiguous_prob: float = 0.0
    min_length: int = 1
    prefetch: int = 2
    build: BuildConfig = field(default_factory=BuildConfig)


@dataclass
class BuildDatasetConfig:
    """Root config of `foldnet build-dataset`."""

    data_root: str = "data"
    data: DataConfig = field(default_factory=DataConfig)
    # Print the leakage summary and per-split counts.
    verbose: bool = True


def data_config(cfg: Any) -> DataConfig:
    """Validate an untyped ``data`` config (DictConfig / dict) against ``DataConfig``.

    Args:
      cfg: the ``data`` node (interpolations such as ``${data_root}`` are
        resolved against its root config first).

    Returns:
      A ``DataConfig`` object.
    """
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def register_configs() -> None:
    """Register the schemas with hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="build_dataset_schema", node=BuildDatasetConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
