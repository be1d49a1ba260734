"""The predict stage's output (``trajstream process --stage predict``): per released tick,
every active vehicle's predicted kinematics to the internal topic, by spatial tile.

The vehicle-keyed engine (admission + vehicle stage, stream/engine.py) runs as in a single
process; instead of assessing risk itself it hands each tick's :class:`PredictedTick` to
:class:`TilePublisher`, which sends one record per risk partition holding a tile within the
halo of the vehicle (stream/tiles.py), and after the records of a release one progress record
per owned input partition to every risk partition (stream/internal.py). Pure: the records
are returned, the loop sends them.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from trajstream.stream import internal
from trajstream.stream.conflicts import PredictedTick
from trajstream.stream.tiles import TileGrid

__all__ = ["TilePublisher"]

Record = tuple[int, bytes, bytes]  # (partition, key, value)


class TilePublisher:
    """Turns ticks and progress into internal-topic records; ``inputs`` is the positions
    topic's partition count."""

    def __init__(self, grid: TileGrid, model: str, inputs: int) -> None:
        self.grid = grid
        self.model = model
        self.inputs = inputs
        self._sent_done: dict[int, int] = {}
        self.stats: dict[str, int] = {"published": 0, "duplicated": 0}

    def publish(self, k: int, tick: PredictedTick) -> list[Record]:
        """Records of tick ``k``: the vehicles of each risk partition (none when empty)."""
        f = tick.fleet
        if not len(f):
            return []
        rows, parts = self.grid.fan_out(f.x, f.y)
        out: list[Record] = []
        if rows.size:
            order = np.argsort(parts, kind="stable")
            rows, parts = rows[order], parts[order]
            cuts = np.flatnonzero(np.diff(parts)) + 1
            tile = (self.grid.tile_m, self.grid.halo_m)
            for r, q in zip(np.split(rows, cuts), parts[np.r_[0, cuts]].tolist(), strict=True):
                out.append((q, str(q).encode(), internal.encode_tick(k, self.model, tick, r, tile)))
        self.stats["published"] += len(f)
        self.stats["duplicated"] += int(rows.size) - len(f)
        return out

    def progress(self, done: int | None, owned: Collection[int]) -> list[Record]:
        """Progress records for the owned input partitions whose released tick moved."""
        if done is None:
            return []  # no record seen yet: nothing to promise
        out: list[Record] = []
        for p in sorted(owned):
            if self._sent_done.get(p) == done:
                continue
            self._sent_done[p] = done
            value = internal.encode_progress(p, done, self.inputs)
            out.extend((q, b"progress", value) for q in range(self.grid.partitions))
        return out

    def forget(self, partitions: Collection[int]) -> None:
        """Revoked input partitions: their next owner reports their progress."""
        for p in partitions:
            self._sent_done.pop(p, None)
