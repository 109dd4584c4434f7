#!/usr/bin/env python
"""Download data without installing foldnet: same keys as ``foldnet fetch``.

    python scripts/fetch_data.py source=pdb ids=[1crn,4hhb] format=cif
    python scripts/fetch_data.py source=pdnet cache_dir=/big/disk/downloads
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foldnet.cli.fetch import main  # noqa: E402

if __name__ == "__main__":
    main()
