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
