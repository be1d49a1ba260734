"""Feed-level plausibility: mistakes no single record shows, caught before they make alerts.

Latitude/longitude degrees sent as ``x``/``y`` (metres) put a whole city inside one square
metre: every vehicle overlaps every other and the processor raised hundreds of critical
alerts, none real. Vehicles are at least a metre wide, so several distinct vehicles whose
positions all fit in a metre are not a metre frame. Pure: no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from trajstream.errors import ConfigError
from trajstream.stream.codec import PositionBatch

__all__ = ["FrameCheck"]


class FrameCheck:
    """Watches the start of a feed; raises ConfigError when its x/y look like degrees.

    Decides once ``min_records`` fixes of ``min_vehicles`` distinct vehicles are seen: if
    they all lie within ``box_m`` of each other and within latitude/longitude range, the feed
    is refused with one line; otherwise the check retires (it costs nothing afterwards).
    """

    def __init__(self, *, min_vehicles: int = 3, min_records: int = 30,
                 box_m: float = 1.0) -> None:
        self.done = False
        self._min_vehicles, self._min_records, self._box_m = min_vehicles, min_records, box_m
        self._ids: set[str] = set()
        self._n = 0
        self._lo = [math.inf, math.inf]
        self._hi = [-math.inf, -math.inf]

    def __call__(self, batch: PositionBatch) -> None:
        if self.done or not len(batch):
            return
        for axis, col in enumerate((batch.x, batch.y)):
            self._lo[axis] = min(self._lo[axis], float(np.min(col)))
            self._hi[axis] = max(self._hi[axis], float(np.max(col)))
        if max(self._hi[0] - self._lo[0], self._hi[1] - self._lo[1]) > self._box_m:
            self.done = True  # spread like real positions in metres
            return
        self._n += len(batch)
        if len(self._ids) < self._min_vehicles:
            self._ids.update(batch.vehicle_id[: 10 * self._min_vehicles].tolist())
        if self._n < self._min_records or len(self._ids) < self._min_vehicles:
            return
        self.done = True
        if max(abs(self._lo[0]), abs(self._hi[0])) <= 90.0 and \
                max(abs(self._lo[1]), abs(self._hi[1])) <= 180.0:
            raise ConfigError(
                f"x/y look like latitude/longitude degrees, not metres: {self._n} fixes of "
                f"{len(self._ids)}+ vehicles all lie within {self._box_m:g} m of "
                f"({self._lo[0]:.5f}, {self._lo[1]:.5f}); send them as lat/lon and give "
                f"--origin-lat/--origin-lon")
