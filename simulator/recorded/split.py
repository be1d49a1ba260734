"""One held-out rule for recorded traffic, shared by model training and warner tuning.

NGSIM scenarios are overlapping windows of a few long recordings, so a split by scenario
puts the same vehicles on both sides. The split is by recording instead: the recording is
the location plus the first number of the scenario name (``USA_US101-10_1_T-1/484`` belongs
to recording ``US101-10``). Held out, never trained or tuned on:

- every US-101 recording whose number is a multiple of 3 (about a third of the records);
- Peachtree recordings 1 to 3 (about a quarter of its records): recording 4 (urban
  arterial, signals) is trained on, since no simulated city drives like it, so a Peachtree
  figure is for a location the training has seen, at other times;
- all of any other location (e.g. I-80, Lankershim): a place the training never sees.

Anything that is not an NGSIM-style id (simulated, SUMO) is not recorded traffic and is
neither side of this rule; those sources are held out by seed and network instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SCENARIO = re.compile(r"^[A-Z]{3}_([A-Za-z0-9]+?)-(\d+)_")
# location -> its recordings on the training side (every other recording is held out)
_TRAINED: dict[str, Callable[[int], bool]] = {
    "US101": lambda n: n % 3 != 0,
    "Peach": lambda n: n == 4,
}


def recording_of(vehicle_id: str) -> str | None:
    """``US101-10`` for ``USA_US101-10_1_T-1/484``; None when the id names no recording."""
    m = _SCENARIO.match(vehicle_id)
    return f"{m.group(1)}-{m.group(2)}" if m else None


def is_held_out(vehicle_id: str) -> bool:
    """True for records of a held-out recording (see the module docstring)."""
    m = _SCENARIO.match(vehicle_id)
    if m is None:
        return False
    trained = _TRAINED.get(m.group(1))
    return trained is None or not trained(int(m.group(2)))
