"""Spatial tiles for the two-stage deployment: which risk partitions see a vehicle, and which
one owns a pair.

The plane is cut into square tiles of ``tile_m``; tile (i, j) belongs to partition
``tile_partition(i, j) % partitions`` of the internal topic (a fixed integer hash, the same
in every process and release). A vehicle is published to every partition holding a tile
within ``halo_m`` of its position, so a risk process sees every vehicle that can reach its
tiles within the prediction horizon (``halo_m`` = maximum speed x horizon + margin). A pair
is owned by the partition of the tile holding the midpoint of the two vehicles' current
positions: both vehicles of a pair that can meet within the horizon are at most
``halo_m`` from that midpoint, so the owner sees both, and exactly one partition alerts it.
Pure, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trajstream.errors import ConfigError

__all__ = ["TileGrid"]

_MIX_I = np.int64(73856093)
_MIX_J = np.int64(19349663)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile_m`` metres, ``halo_m`` of overlap, hashed onto ``partitions``."""

    tile_m: float
    halo_m: float
    partitions: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tile_m) and self.tile_m > 0):
            raise ConfigError(f"tile size must be a finite number > 0, got {self.tile_m!r}")
        if not (math.isfinite(self.halo_m) and self.halo_m >= 0):
            raise ConfigError(f"halo must be a finite number >= 0, got {self.halo_m!r}")
        if self.partitions < 1:
            raise ConfigError(f"the internal topic needs >= 1 partition, got {self.partitions}")

    def partition_of(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Partition of tiles (i, j) (int64 arrays)."""
        h = (i.astype(np.int64) * _MIX_I) ^ (j.astype(np.int64) * _MIX_J)
        return np.mod(h, self.partitions)

    def tile_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.tile_m
        return np.floor(x / s).astype(np.int64), np.floor(y / s).astype(np.int64)

    def owner(self, xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray
              ) -> np.ndarray:
        """Partition owning each pair: the one of the tile holding the pair's midpoint."""
        i, j = self.tile_of(0.5 * (xa + xb), 0.5 * (ya + yb))
        return self.partition_of(i, j)

    def fan_out(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, partition) pairs: every partition with a tile within ``halo_m`` of each
        position (a vehicle whose tiles share a partition is listed once for it).

        Rows with a non-finite position go to no partition."""
        ok = np.isfinite(x) & np.isfinite(y)
        rows = np.flatnonzero(ok)
        s, h = self.tile_m, self.halo_m
        x, y = x[rows], y[rows]
        i0, i1 = np.floor((x - h) / s).astype(np.int64), np.floor((x + h) / s).astype(np.int64)
        j0, j1 = np.floor((y - h) / s).astype(np.int64), np.floor((y + h) / s).astype(np.int64)
        span = int(max((i1 - i0).max(initial=0), (j1 - j0).max(initial=0))) + 1
        out_rows, out_parts = [], []
        for di in range(span):
            for dj in range(span):
                i, j = i0 + di, j0 + dj
                inside = (i <= i1) & (j <= j1)
                if not inside.any():
                    continue
                # distance from the position to the tile's rectangle
                dx = np.maximum(np.maximum(i * s - x, x - (i + 1) * s), 0.0)
                dy = np.maximum(np.maximum(j * s - y, y - (j + 1) * s), 0.0)
                near = inside & (dx * dx + dy * dy <= h * h)
                out_rows.append(rows[near])
                out_parts.append(self.partition_of(i[near], j[near]))
        if not out_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        r, p = np.concatenate(out_rows), np.concatenate(out_parts)
        key = np.unique(r * self.partitions + p)
        return key // self.partitions, key % self.partitions
