"""Imported positions as columns, and their lines in the ``vehicle-positions`` contract.

Recorded traffic is small next to a live fleet (millions of rows, not millions a second), so
every importer builds whole columns in memory, and one function orders and writes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from trajstream.errors import TrajstreamError

# Written precision: millimetres and millisecond event times, well below what any recording
# resolves; the same input always gives the same bytes.
_DECIMALS = {"ts": 3, "x": 3, "y": 3, "speed": 3, "heading": 5, "length": 2, "width": 2}
_SLICE_ROWS = 100_000  # rows turned into Python objects at a time


class ImportFailed(TrajstreamError):
    """A recorded file cannot be imported; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Positions:
    """One row per fix. ``speed``, ``heading``, ``length`` and ``width`` are NaN where the
    source does not give them (the field is then left out of the message)."""

    vehicle_id: np.ndarray  # str
    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def vehicles(self) -> int:
        return len(set(self.vehicle_id.tolist()))

    @staticmethod
    def concat(parts: list[Positions]) -> Positions:
        names = Positions.__dataclass_fields__
        if not parts:
            empty = {n: np.empty(0, dtype=object if n == "vehicle_id" else np.float64)
                     for n in names}
            return Positions(**empty)
        return Positions(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def message_lines(positions: Positions) -> Iterator[bytes]:
    """JSON lines in event-time order (ties by vehicle id), as the positions contract wants
    a recorded file: replaying it is then the same as receiving it live."""
    ids = positions.vehicle_id.tolist()
    rank_of = {name: r for r, name in enumerate(sorted(set(ids)))}
    rank = np.fromiter((rank_of[v] for v in ids), dtype=np.int64, count=len(ids))
    order = np.lexsort((rank, positions.ts))
    for start in range(0, len(order), _SLICE_ROWS):
        yield from _lines(positions, order[start:start + _SLICE_ROWS])


def _lines(positions: Positions, rows: np.ndarray) -> Iterator[bytes]:
    ids = positions.vehicle_id[rows].tolist()
    columns = {name: rounded(getattr(positions, name)[rows], decimals)
               for name, decimals in _DECIMALS.items()}
    optional = ("speed", "heading", "length", "width")
    dumps = orjson.dumps
    if not any(np.isnan(columns[name]).any() for name in optional):  # the usual case
        for vid, ts, x, y, sp, hd, ln, wd in zip(
                ids, *(columns[name].tolist() for name in _DECIMALS), strict=True):
            yield dumps({"vehicle_id": vid, "ts": ts, "x": x, "y": y, "speed": sp,
                         "heading": hd, "length": ln, "width": wd})
        return
    lists = {name: columns[name].tolist() for name in _DECIMALS}
    isnan = math.isnan
    for i, vid in enumerate(ids):
        rec: dict[str, object] = {"vehicle_id": vid}
        for name in _DECIMALS:
            value = lists[name][i]
            if not (name in optional and isnan(value)):
                rec[name] = value
        yield dumps(rec)


def rounded(values: np.ndarray, decimals: int) -> np.ndarray:
    """``round(v, decimals)`` of every value, the way Python rounds: the value as stored
    (-30.2015 is -30.20149999... and becomes -30.201, where numpy's scale-and-rint rounds the
    scaled -30201.5 to -30202). Numpy does the bulk; Python only the near-ties. No -0.0."""
    out = np.round(values, decimals)
    scaled = values * 10.0 ** decimals
    tie = np.abs(scaled - np.floor(scaled) - 0.5) <= 4 * np.spacing(np.abs(scaled)) + 1e-9
    out[tie] = [round(v, decimals) for v in values[tie].tolist()]
    return out + 0.0
