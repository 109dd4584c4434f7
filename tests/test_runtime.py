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


# What XLA:CPU does each step: a worker thread mallocs a block of hundreds of MB, writes it,
# frees it. Minor page faults of the last of three rounds, with and without the settings.
FAULTS = r"""
import ctypes, resource, sys, threading
from foldnet.cli.runtime import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "1" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_size_t,), (ctypes.c_void_p,)
size, faults = 256 << 20, []

def step():
    for _ in range(3):
        p = libc.malloc(size)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ctypes.memset(p, 1, size)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        libc.free(p)

t = threading.Thread(target=step)
t.start()
t.join()
print(int(applied), faults[-1])
"""


@pytest.mark.skipif(sys.platform != "linux" or __import__("platform").libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_not_faulted_in_again():
    def faults(on: str, **env_changes) -> tuple[int, int]:
        env = dict(os.environ, PYTHONPATH=str(REPO), **env_changes)
        out = subprocess.run([sys.executable, "-c", FAULTS, on], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        applied, count = out.stdout.split()
        return int(applied), int(count)

    pages = (256 << 20) // 4096
    applied, count = faults("0")
    assert applied == 0 and count >= pages // 2  # glibc unmapped the block: every page faulted in again
    applied, count = faults("1")
    assert applied == 1 and count < 100  # the same block, reused
    assert faults("1", FOLDNET_RETAIN_MEMORY="0")[0] == 0
