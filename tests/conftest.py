"""Test set-up: 2 simulated CPU devices for JAX, and the real data root.

XLA_FLAGS must be set before jax is first imported, so it happens here at
collection time. The data root comes from FOLDNET_DATA (CI sets it to
../shared/data); failing loudly beats silently skipping real-data tests.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The predict/evaluate configs default to a compilation cache in ~/.cache; tests keep theirs
# out of the home directory (one folder per test session).
os.environ.setdefault("FOLDNET_JAX_CACHE", tempfile.mkdtemp(prefix="foldnet-jit-"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _find_data_root() -> Path:
    env = os.environ.get("FOLDNET_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "proteinnet" / "validation.gz").exists():
            return c
    raise RuntimeError(
        "foldnet tests need the real data bundle: set FOLDNET_DATA to the folder holding "
        f"proteinnet/, promod3_structure_db/, ... (tried {[str(c) for c in candidates]})"
    )


DATA_ROOT = _find_data_root()
os.environ["FOLDNET_DATA"] = str(DATA_ROOT)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return DATA_ROOT
