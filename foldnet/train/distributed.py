"""Multi-host start-up: ``jax.distributed.initialize`` from the config or the environment.

Every process runs the same program; after initialisation ``jax.devices()``
lists the devices of all processes, the ``data`` mesh spans them, and each
process feeds its own slice of the global batch (the loader takes
``process_index`` / ``process_count``). On CPU the cross-process collectives
go through gloo (``jax_cpu_collectives_implementation``), which this module
selects before initialising.

Settings are taken, in order, from the ParallelConfig, then JAX's own
environment conventions (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``; ``JAX_LOCAL_DEVICE_IDS`` / ``JAX_COORDINATOR_PORT`` are read by
JAX itself), then JAX's cluster auto-detection (SLURM, Open MPI, Kubernetes,
Cloud TPU) for whatever is still unset.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import jax

from foldnet.train.parallel import ParallelConfig

log = logging.getLogger(__name__)


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def resolve_settings(cfg: ParallelConfig) -> tuple[Optional[str], Optional[int], Optional[int]]:
    """(coordinator_address, num_processes, process_id): config first, then JAX_* env vars.

    Missing values stay None (JAX's cluster auto-detection may fill them).
    """
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    nproc = cfg.num_processes if cfg.num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    pid = cfg.process_id if cfg.process_id is not None else _env_int("JAX_PROCESS_ID")
    if nproc is not None and nproc < 1:
        raise ValueError(f"num_processes must be >= 1, got {nproc}")
    if pid is not None and nproc is not None and not 0 <= pid < nproc:
        raise ValueError(f"process_id {pid} is not in [0, {nproc})")
    return address, nproc, pid


def initialize(cfg: ParallelConfig) -> tuple[int, int]:
    """Join the multi-process run described by ``cfg`` (no-op unless ``cfg.distributed``).

    Must run before anything else touches JAX devices. Safe to call twice.

    Args:
      cfg: the ParallelConfig (distributed, coordinator_address, num_processes, process_id).
    Returns:
      (process_index, process_count) for the data loader.
    """
    if not cfg.distributed:
        return jax.process_index(), jax.process_count()
    if not jax.distributed.is_initialized():
        address, nproc, pid = resolve_settings(cfg)
        platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
        if platforms in ("", "cpu") or "cpu" in platforms.split(","):
            # Cross-process collectives on CPU need an implementation; gloo ships with jaxlib.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        log.info("jax.distributed.initialize(%s, num_processes=%s, process_id=%s)", address, nproc, pid)
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=nproc,
            process_id=pid,
            initialization_timeout=cfg.initialization_timeout,
        )
    return jax.process_index(), jax.process_count()


def shutdown() -> None:
    """Leave the multi-process run (no-op when not initialised)."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()
