"""Process-wide JAX settings the inference CLIs apply before JAX's backend starts.

* One CPU device per core (``jax_num_cpu_devices``): XLA runs the small folding kernels
  single-threaded, so ``foldnet.structure.fold`` splits its restarts across devices
  (8 restarts on 2 cores: about half the wall time).
* A persistent compilation cache (``$FOLDNET_JAX_CACHE``, default
  ``~/.cache/foldnet/jax``; ``off`` disables it): each new folding length bucket costs
  tens of seconds of XLA compilation the first time, a few seconds afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def use_all_cpu_cores() -> None:
    """Expose one JAX CPU device per core (before the CPU backend is first used).

    Leaves an explicit ``--xla_force_host_platform_device_count`` or an already
    initialised backend alone.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", max(1, os.cpu_count() or 1))
    except RuntimeError:  # backend already initialised: keep its device count
        pass


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept between runs (None: caching off)."""
    value = os.environ.get("FOLDNET_JAX_CACHE", "")
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "foldnet" / "jax"


def configure_jax() -> None:
    """All settings of this module; call first thing in a CLI's ``main``."""
    use_all_cpu_cores()
    cache = compilation_cache_dir()
    if cache is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache))
        # Only programs that took a while to compile are worth a file.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
