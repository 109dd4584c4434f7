"""What every CLI does the same way: quiet third-party logs, and one line for a user mistake.

* Logs: hydra sets the root logger to INFO, so XLA's backend probing (``Unable to initialize
  backend 'tpu'``), absl and orbax's per-save lines would reach a user running ``foldnet
  predict`` on a CPU. They are set to WARNING unless ``hydra.verbose=true`` (or
  ``FOLDNET_LOG_LEVEL=DEBUG|INFO``) asks for them.
* Errors: a bad input file, a missing path or an impossible config value is the user's to
  fix; it ends in ``foldnet <command>: <file/key>: <reason>`` on stderr and exit status 2,
  not a Python traceback (``FOLDNET_TRACEBACK=1`` shows the traceback as well).

Imports nothing heavy (no JAX), so ``build-dataset`` and ``fetch`` stay quick to start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

# Loggers that speak for libraries, not for foldnet.
NOISY_LOGGERS = ("absl", "jax._src.xla_bridge", "jax._src.compiler", "jax._src.dispatch", "jax",
                 "orbax", "orbax.checkpoint", "h5py", "matplotlib", "PIL")


def quiet_logs(verbose: bool | None = None) -> None:
    """Silence library loggers below WARNING unless verbose (see module docstring)."""
    level_name = os.environ.get("FOLDNET_LOG_LEVEL", "").upper()
    if verbose is None:
        verbose = _hydra_verbose()
    if verbose or level_name in ("DEBUG", "INFO"):
        level = getattr(logging, level_name, logging.DEBUG) if level_name else logging.DEBUG
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(level)
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # absl, once imported, also writes to stderr through its own handler.
    with contextlib.suppress(Exception):
        from absl import logging as absl_logging  # type: ignore[import-not-found]

        absl_logging.set_verbosity(absl_logging.WARNING)


def _hydra_verbose() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return bool(HydraConfig.get().verbose)
    except Exception:  # noqa: BLE001 - no hydra app running
        return False


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "fix your input or config", printed as one line."""
    from foldnet.data.cache import StaleCacheError
    from foldnet.data.fetch import DownloadError

    return (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            StaleCacheError, DownloadError)


@contextlib.contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Turn a user mistake raised inside the block into one stderr line and exit status 2."""
    try:
        yield
    except user_error_types() as e:
        if os.environ.get("FOLDNET_TRACEBACK"):
            raise
        msg = " ".join(str(e).split())  # one line, whatever the message held
        if not msg.startswith(f"{command}:"):
            msg = f"foldnet {command}: {msg}"
        else:
            msg = f"foldnet {msg}"
        print(msg, file=sys.stderr, flush=True)
        raise SystemExit(2) from None
