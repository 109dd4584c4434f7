"""Process-wide JAX settings the CLIs apply before JAX's backend starts.

One CPU device per core (``jax_num_cpu_devices``), so ``foldnet train`` (``parallel=auto``)
splits each batch over the cores -- 1.15-1.56x faster steps than one device running XLA's
multi-threaded kernels (docs/model.md) -- and ``foldnet.structure.fold`` splits
its restarts across devices. Measured on the idle 2-core machine it neither helps nor hurts
(300 residues, 8 restarts: 9.99 s vs 10.06 s on one device); under load it was 16.5 vs 20.6 s.
The persistent compilation cache is a config key of each command (``compilation_cache_dir``).

``retain_freed_memory`` keeps glibc from returning XLA's per-execution buffers to the kernel
(see there).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import jax

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it; call before JAX starts.

    XLA:CPU allocates each execution's temporary buffer anew (308 MB for the base network's
    training step at batch 4, crop 128) from a worker thread. glibc serves a block that large
    with a fresh ``mmap`` and unmaps it on free, so every step page-faulted all of it back in
    and the kernel zeroed it: 75,000 minor faults and ~0.18 s of system time per step,
    ~18 % of the step's CPU time on the 2-core machine. With one malloc arena, ``mmap`` off
    (the heap grows with ``brk``) and a 2 GB trim threshold, the freed block stays in the heap
    and the next step reuses it: 0 faults per step. The cost: the process keeps its peak heap
    (what the next step needs anyway). Threads that have not allocated yet follow the
    setting, so it must run before the backend starts its threads. Linux with glibc only; a
    no-op elsewhere and when ``FOLDNET_RETAIN_MEMORY=0``.

    Returns:
      whether the settings were applied.
    """
    if (sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
            or os.environ.get("FOLDNET_RETAIN_MEMORY", "1").strip().lower() in ("0", "false", "no", "off")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(k, v) == 1 for k, v in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                                               (_M_TRIM_THRESHOLD, 2**31 - 1)))


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
