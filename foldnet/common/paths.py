"""Where data lives. The data root is configuration, never a path in the code.

Resolution order: an explicit argument (the hydra key ``data_root``), then the
``FOLDNET_DATA`` environment variable, then ``./data`` under the working
directory (where ``foldnet fetch`` downloads by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

ENV_VAR = "FOLDNET_DATA"


def data_root(explicit: Optional[str | os.PathLike] = None) -> Path:
    if explicit not in (None, "", "null"):
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.cwd() / "data"


def config_dir() -> str:
    """Absolute path of the hydra config tree (``configs/``).

    An installed wheel carries it inside the package as ``foldnet/configs``
    (pyproject maps the top-level ``configs/`` there); a source checkout or an
    editable install reads the top-level ``configs/`` next to ``foldnet/``.
    Absolute, because hydra resolves a relative ``config_path`` against the
    calling module.
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    if (installed / "train.yaml").is_file():
        return str(installed)
    return str(package.parent / "configs")


# ----------------------------------------------------------------------------- output names
#
# Record IDs (FASTA headers, ProteinNet [ID]s, a3m names, CATH list entries), archive member
# names and names sent by servers become file names. They are untrusted: ``>/tmp/x/name`` or
# ``>../../name`` must not write outside the output folder. One rule, used by every writer:
# an ID that is already a plain, portable file name is used as is; anything else is replaced
# by a readable sanitised form plus 8 hex digits of the ID's sha256, so two IDs that sanitise
# to the same text still get different files.

import hashlib  # noqa: E402
import unicodedata  # noqa: E402

# Longest stem in UTF-8 bytes; leaves room for suffixes (".npz", ".a3m.gz", ".part") under
# the 255-byte NAME_MAX of common file systems.
MAX_STEM_BYTES = 120
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_UNSAFE_CHARS = frozenset('/\\:*?"<>|')


class UnsafeNameError(ValueError):
    """A name that cannot be made into a file name (empty, only dots...)."""


def _char_ok(c: str) -> bool:
    if c in _UNSAFE_CHARS or c.isspace():
        return False
    # Cc control, Cf format (bidi overrides, zero-width), Cs surrogates, Co private, Cn unassigned.
    return not unicodedata.category(c).startswith("C")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_stem(name: str, what: str = "id") -> str:
    """A file-name stem for an untrusted ``name`` that can only name a file in its folder.

    Unicode letters are kept (NFC-normalised), so ``héllo_β`` stays ``héllo_β``; path
    separators, NUL, control and format characters, whitespace, a leading dot, Windows device
    names and over-long names are replaced, and then an ``-<8 hex of sha256(name)>`` suffix
    keeps two IDs that sanitise alike apart.

    Args:
      name: the ID or member name.
      what: what the name is, for the error message.

    Returns:
      The stem (no separators, not starting with '.', at most ``MAX_STEM_BYTES`` bytes).

    Raises:
      UnsafeNameError: ``name`` is empty.
    """
    name = str(name)
    if not name:
        raise UnsafeNameError(f"empty {what}: cannot be a file name")
    norm = unicodedata.normalize("NFC", name)
    cleaned = "".join(c if _char_ok(c) else "_" for c in norm)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if cleaned.split(".")[0].upper() in _WINDOWS_RESERVED:
        cleaned = "_" + cleaned
    if cleaned == name and len(cleaned.encode("utf-8")) <= MAX_STEM_BYTES:
        return cleaned
    return _hashed(cleaned, name)


def _hashed(cleaned: str, name: str) -> str:
    suffix = "-" + _digest(name)
    head = cleaned.encode("utf-8")[: MAX_STEM_BYTES - len(suffix)].decode("utf-8", "ignore")
    return head + suffix


class NameAllocator:
    """File stems for a batch of IDs: ``safe_stem`` plus case-insensitive uniqueness.

    Two IDs that differ only in case (``1abcA`` / ``1abca``) are different records but the same
    file on macOS / Windows file systems; the second one seen gets a hash suffix. The same ID
    always gets the same stem, so a rerun finds its own files.
    """

    def __init__(self, what: str = "id"):
        self.what = what
        self._by_id: dict[str, str] = {}
        self._used: dict[str, str] = {}  # casefolded stem -> id

    def stem(self, name: str) -> str:
        if name in self._by_id:
            return self._by_id[name]
        stem = safe_stem(name, self.what)
        if self._used.get(stem.casefold(), name) != name:
            stem = _hashed(stem, name)
        self._used[stem.casefold()] = name
        self._by_id[name] = stem
        return stem


def confined(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...`` after checking that the result stays inside ``root``.

    Raises:
      UnsafeNameError: the joined path (after resolving ``..`` and symlinks) leaves ``root``.
    """
    base = Path(root).absolute().resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise UnsafeNameError(f"{'/'.join(parts)!r} would be written outside {base}")
    return base.joinpath(*parts)
