"""Shared fixtures of the dataset tests: small real HDF5 splits built once per session.

Imported by tests/test_{cache,loader,build}.py (``small_dataset``, on the bundle) and
tests/test_{baselines,checkpoint_resume,train_config}.py (``train_val_h5``, on
tests/testdata). The builder is idempotent (the
manifest's build key), so a second test module asking for the same dataset in
the same session gets the already-built files in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import itertools

import pytest

from foldnet.data.build import build_dataset
from foldnet.data.config import BuildConfig, ProteinNetSourceConfig

SMALL_MAX_CHAINS = 40


def small_config(data_root: Path, max_chains: int = SMALL_MAX_CHAINS, **kw) -> BuildConfig:
    """Build config of the first ``max_chains`` chains of the bundled validation and test files."""
    return BuildConfig(
        source="proteinnet",
        proteinnet=ProteinNetSourceConfig(files={
            "val": str(data_root / "proteinnet" / "validation.gz"),
            "test": str(data_root / "proteinnet" / "testing.gz"),
        }),
        cath_labels=str(data_root / "promod3_structure_db" / "chains.tsv.gz"),
        max_chains=max_chains,
        **kw,
    )


@pytest.fixture(scope="session")
def small_dataset(data_root, tmp_path_factory) -> Path:
    """Folder with val.h5 / test.h5 (40 real chains each) + manifest, leakage, skipped."""
    out = tmp_path_factory.getbasetemp() / "small_proteinnet"
    build_dataset(small_config(data_root), out, log=lambda *a, **k: None)
    return out


def train_val_h5(root: Path, out: Path, n_train: int, n_val: int) -> tuple[Path, Path]:
    """``out/train.h5`` and ``out/val.h5``: the first ``n_train`` / ``n_val`` ProteinNet chains of
    ``root``'s training.gz / validation.gz, featurised as is (no build filters)."""
    from foldnet.data.cache import write_h5
    from foldnet.data.featurize import featurize
    from foldnet.data.proteinnet import iter_proteinnet

    written = []
    for split, src, n in (("train", "training.gz", n_train), ("val", "validation.gz", n_val)):
        path = root / "proteinnet" / src
        chains = [featurize(p, source_id=f"{src}:{i}") for i, p in enumerate(itertools.islice(iter_proteinnet(path), n))]
        written.append(write_h5(out / f"{split}.h5", chains, split=split, source=str(path)))
    return written[0], written[1]
