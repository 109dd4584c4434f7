"""JAX's persistent compilation cache: the one switch every entry point uses.

Lives in ``common`` because train, predict and evaluate all use it; jax is imported inside
the functions, so importing this module keeps the numpy-only promise of ``common``.

``enable_compilation_cache`` turns the cache on for the rest of the process (predict,
evaluate: folding is compiled per chain length, tens of seconds on CPU, so a resumed
evaluation or a re-prediction reuses it); ``compilation_cache`` is the same switch scoped to a
``with`` block and restores the previous settings on exit (a training run inside a test
session). Both re-initialise JAX's cache, so the folder takes effect even when this process
compiled something before.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

_KEYS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
         "jax_persistent_cache_min_entry_size_bytes")


def cache_off(path: Optional[str]) -> bool:
    """True for the spellings of "no cache": None, "", "null", "none", "off"."""
    return path is None or str(path).lower() in ("", "null", "none", "off")


def enable_compilation_cache(path: Optional[str], min_compile_time_secs: float = 1.0,
                             min_entry_size_bytes: int = 0) -> None:
    """Turn on JAX's persistent compilation cache in ``path`` (no-op when ``cache_off(path)``).

    Args:
      path: the cache folder (created; ``~`` expanded).
      min_compile_time_secs: programs compiling faster than this are not stored.
      min_entry_size_bytes: smaller compiled programs are not stored.
    """
    if cache_off(path):
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    folder = Path(path).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    cc.reset_cache()


@contextlib.contextmanager
def compilation_cache(path: Optional[str], min_compile_time_secs: float = 0.0) -> Iterator[None]:
    """``enable_compilation_cache`` for the duration of the block; previous settings restored."""
    if cache_off(path):
        yield
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    old = {k: getattr(jax.config, k) for k in _KEYS}
    enable_compilation_cache(path, min_compile_time_secs)
    try:
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)
        cc.reset_cache()
