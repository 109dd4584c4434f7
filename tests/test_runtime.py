"""CLI JAX settings: one CPU device per core; the compilation-cache switch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The CLI modules are imported first, as the console entry point does: importing them must not
# start JAX's backend (a module-level jnp array did, silently leaving one device).
PROBE = (
    "import foldnet.cli.main, foldnet.cli.predict, foldnet.cli.evaluate, foldnet.cli.demo; "
    "from foldnet.cli.runtime import use_all_cpu_cores; use_all_cpu_cores(); import jax; print(jax.local_device_count())"
)


def _device_count(**env_changes) -> int:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # conftest's 2 devices
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **env_changes)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_one_cpu_device_per_core_unless_set():
    assert _device_count() == os.cpu_count()
    assert _device_count(XLA_FLAGS="--xla_force_host_platform_device_count=3") == 3


@pytest.mark.parametrize("value", [None, "", "off", "null"])
def test_compilation_cache_off_values(value, monkeypatch):
    import jax

    from foldnet.common.compilation_cache import enable_compilation_cache

    calls = []
    monkeypatch.setattr(jax.config, "update", lambda *a: calls.append(a))
    enable_compilation_cache(value)
    assert calls == []


def test_compilation_cache_expands_home(tmp_path, monkeypatch):
    import jax

    from foldnet.common.compilation_cache import enable_compilation_cache

    calls = []
    monkeypatch.setattr(jax.config, "update", lambda *a: calls.append(a))
    monkeypatch.setenv("HOME", str(tmp_path))
    enable_compilation_cache("~/jit")
    assert ("jax_compilation_cache_dir", str(tmp_path / "jit")) in calls and (tmp_path / "jit").is_dir()
