"""Test set-up: 2 simulated CPU devices for JAX, and the real data root.

XLA_FLAGS must be set before jax is first imported, so it happens here at
collection time. The data root comes from FOLDNET_DATA (CI sets it to
../shared/data). Tests that need the bundle take the ``data_root`` fixture and skip
with a message when it is missing; with CI=true they fail instead, so CI never
silently skips real-data tests. ``testdata`` is the small fixture folder in the
repository.
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


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TESTDATA = Path(__file__).resolve().parent / "testdata"


def _find_data_root() -> Path | None:
    env = os.environ.get("FOLDNET_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "proteinnet" / "validation.gz").exists():
            return c
    return None


DATA_ROOT = _find_data_root()
if DATA_ROOT is not None:
    os.environ["FOLDNET_DATA"] = str(DATA_ROOT)


def require(what: str, present: bool, hint: str) -> None:
    """Skip the calling test when ``what`` is missing; in CI (CI=true) fail instead."""
    if present:
        return
    message = f"{what} not found: {hint}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: nothing may skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data bundle; tests that take it skip without it (fail in CI)."""
    require("the foldnet data bundle", DATA_ROOT is not None,
            "set FOLDNET_DATA to the folder holding proteinnet/, promod3_structure_db/, ... "
            "(tests/testdata/ carries the small fixtures the unit tests use)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Small real records shipped with the repository (tests/testdata/README.md)."""
    return TESTDATA
