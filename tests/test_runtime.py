"""CLI JAX settings: one CPU device per core and the persistent compilation cache."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "from foldnet.cli.runtime import configure_jax; configure_jax(); import jax; "
    "print(jax.local_device_count(), jax.config.jax_compilation_cache_dir)"
)


def _probe(**env_changes):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # conftest's 2 devices
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **env_changes)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, cache = out.stdout.split()
    return int(count), cache


def test_one_cpu_device_per_core_and_cache_dir(tmp_path):
    count, cache = _probe(FOLDNET_JAX_CACHE=str(tmp_path / "jit"))
    assert count == os.cpu_count()
    assert cache == str(tmp_path / "jit")
    _, cache = _probe(FOLDNET_JAX_CACHE="off")
    assert cache == "None"
    _, cache = _probe(FOLDNET_JAX_CACHE="", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert cache == str(tmp_path / "xdg" / "foldnet" / "jax")
    # An explicit device count is left alone.
    count, _ = _probe(XLA_FLAGS="--xla_force_host_platform_device_count=3")
    assert count == 3
