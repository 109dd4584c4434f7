"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or a bad record never leaves a half-written output: readers see either
the old file or the complete new one (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+.*\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (kill -9) left in ``folder``.

    Only ``atomic_path`` temp files (``.<name>.<pid>.<random><suffix>.tmp``) whose writer
    process no longer exists are removed; a live writer's file is left alone.

    Returns:
      The removed paths.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_NAME.match(p.name)
        if m is None or not p.is_file() or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename onto target on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name lets a later run tell a dead writer's leftovers from a live one's.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix + TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; outputs are ordinary files, so honour the umask instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
