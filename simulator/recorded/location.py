"""Where the benchmarks and tests find the recorded traffic they evaluate on."""

from __future__ import annotations

import os
from pathlib import Path

# simulator/recorded/location.py -> the repository (the package links resolve to it)
_REPO = Path(__file__).resolve().parents[2]


def recorded_data_dir() -> Path:
    """``$TRAJSTREAM_DATA_DIR``, else ``shared/data`` in the folder that holds the repository.

    It holds the NGSIM positions files (``ngsim-us101.jsonl.gz``, ``ngsim-peachtree.jsonl.gz``:
    see the README's "Recorded traffic"); whoever reads them skips, saying so, when they are
    not there.
    """
    env = os.environ.get("TRAJSTREAM_DATA_DIR")
    return Path(env) if env else _REPO.parent / "shared" / "data"
