"""The fleet as ``trajstream map`` rebuilds it from the topics: the latest position of each
vehicle (positions topic) and its latest predicted path (predictions topic).

Slot-indexed arrays like the processor's state store, but only what a picture needs; a
vehicle silent for ``ttl_s`` of event time is forgotten, so memory follows the live fleet,
not every id ever seen. Updates are vectorised per polled batch; an update older than what
a vehicle already has is ignored (replays, reordering across partitions).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import orjson

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.stream.codec import PositionBatch
from trajstream.stream.livemap.frames import FleetSnapshot
from trajstream.stream.slots import SlotAllocator, SlotOwner

__all__ = ["FleetTable"]

MOVED_M = 0.5  # heading is derived from successive fixes only over at least this distance
MAX_POINTS = 200


class FleetTable(SlotOwner):
    """Latest position and predicted path per vehicle."""

    ts: np.ndarray  # (capacity,) event time of the newest fix (NaN: free slot)
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    path_ts: np.ndarray  # event time the path was predicted at
    path: np.ndarray  # (capacity, points, 2)
    sigma: np.ndarray  # (capacity, points) float32

    def __init__(self, *, ttl_s: float = 10.0, capacity: int = 1024) -> None:
        self.ttl_s = float(ttl_s)
        self.points = 0  # path length, fixed by the first prediction seen
        self.newest_ts = -math.inf
        self.ignored_predictions = 0
        self._allocator = SlotAllocator(max(capacity, 1), self._alloc)

    def _alloc(self, capacity: int) -> None:
        def grow(name: str, shape: tuple[int, ...], fill: float, dtype: Any = np.float64) -> None:
            new = np.full(shape, fill, dtype=dtype)
            old = self.__dict__.get(name)
            if old is not None and old.shape[1:] == shape[1:]:
                new[: old.shape[0]] = old
            setattr(self, name, new)

        grow("ts", (capacity,), np.nan)
        grow("x", (capacity,), 0.0)
        grow("y", (capacity,), 0.0)
        grow("heading", (capacity,), 0.0)
        grow("length", (capacity,), DEFAULT_LENGTH_M)
        grow("width", (capacity,), DEFAULT_WIDTH_M)
        grow("path_ts", (capacity,), np.nan)
        grow("path", (capacity, self.points, 2), np.nan)
        grow("sigma", (capacity, self.points), np.nan, np.float32)

    def _slots(self, ids: list[str]) -> np.ndarray:
        get = self._allocator.slot_of.get
        out = np.empty(len(ids), dtype=np.int64)
        for i, v in enumerate(ids):
            s = get(v)
            if s is None:
                s = self._new(v)
            out[i] = s
        return out

    def _new(self, vehicle_id: str) -> int:
        s = self._allocator.take(vehicle_id)
        self.ts[s] = np.nan
        self.path_ts[s] = np.nan
        self.path[s] = np.nan
        self.sigma[s] = np.nan
        self.heading[s] = 0.0
        return s

    def update_positions(self, batch: PositionBatch) -> None:
        """Apply decoded positions (oldest first within each vehicle)."""
        if not len(batch):
            return
        order = np.argsort(batch.ts, kind="stable")
        ts = batch.ts[order]
        slots = self._slots(batch.vehicle_id[order].tolist())
        # One row per vehicle: its newest fix of the batch (a picture needs no more).
        _, first_rev = np.unique(slots[::-1], return_index=True)
        rows = np.sort(slots.size - 1 - first_rev)
        s, t = slots[rows], ts[rows]
        with np.errstate(invalid="ignore"):
            newer = ~(t <= self.ts[s])  # NaN (new vehicle) counts as older
        rows, s, t = rows[newer], s[newer], t[newer]
        if not rows.size:
            return
        src = order[rows]
        x, y = batch.x[src], batch.y[src]
        heading = batch.heading[src]
        missing = np.isnan(heading)
        if missing.any():
            dx, dy = x - self.x[s], y - self.y[s]
            moved = missing & ~np.isnan(self.ts[s]) & (np.hypot(dx, dy) >= MOVED_M)
            derived = np.where(moved, np.arctan2(dy, dx), self.heading[s])
            heading = np.where(missing, derived, heading)
        self.ts[s], self.x[s], self.y[s], self.heading[s] = t, x, y, heading
        self.length[s], self.width[s] = batch.length[src], batch.width[src]
        self.newest_ts = max(self.newest_ts, float(t.max()))

    def update_predictions(self, values: list[bytes]) -> None:
        """Apply prediction messages (``points`` and the optional ``sigma``); malformed ones
        and ones of another path length than the first seen are counted and skipped."""
        ids: list[str] = []
        ts: list[float] = []
        pts: list[Any] = []
        sig: list[Any] = []
        for raw in values:
            try:
                m = orjson.loads(raw)
                v, t, p = m["vehicle_id"], float(m["ts"]), m["points"]
                if not isinstance(v, str) or not isinstance(p, list) or not 0 < len(p) <= \
                        MAX_POINTS:
                    raise ValueError
                if not self.points:
                    self._set_points(len(p))
                if len(p) != self.points:
                    raise ValueError
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.ignored_predictions += 1
                continue
            s = m.get("sigma")
            ids.append(v)
            ts.append(t)
            pts.append(p)
            sig.append(s if isinstance(s, list) and len(s) == self.points else None)
        if not ids:
            return
        try:
            path = np.asarray(pts, dtype=np.float64).reshape(len(ids), self.points, 2)
        except (TypeError, ValueError):  # a ragged or non-numeric one: go one by one
            self._one_by_one(ids, ts, pts, sig)
            return
        nan_row = [math.nan] * self.points
        try:  # one conversion for the batch; a null or a string inside: row by row
            sigma = np.asarray([nan_row if s is None else s for s in sig], dtype=np.float32)
        except (TypeError, ValueError):
            sigma = np.full((len(ids), self.points), np.nan, dtype=np.float32)
            for i, s in enumerate(sig):
                if s is not None:
                    with contextlib.suppress(TypeError, ValueError):
                        sigma[i] = np.asarray(s, dtype=np.float32)
        self._apply_predictions(ids, np.asarray(ts, dtype=np.float64), path, sigma)

    def _one_by_one(self, ids: list[str], ts: list[float], pts: list[Any],
                    sig: list[Any]) -> None:
        for v, t, p, s in zip(ids, ts, pts, sig, strict=True):
            try:
                path = np.asarray(p, dtype=np.float64).reshape(1, self.points, 2)
            except (TypeError, ValueError):
                self.ignored_predictions += 1
                continue
            sigma = np.full((1, self.points), np.nan, dtype=np.float32)
            if s is not None:
                with contextlib.suppress(TypeError, ValueError):
                    sigma[0] = np.asarray(s, dtype=np.float32)
            self._apply_predictions([v], np.array([t]), path, sigma)

    def _apply_predictions(self, ids: list[str], ts: np.ndarray, path: np.ndarray,
                           sigma: np.ndarray) -> None:
        held = self._allocator.slot_of
        known = [i for i, v in enumerate(ids) if v in held]  # no position yet: wait
        if not known:
            return
        idx = np.asarray(known)
        order = idx[np.argsort(ts[idx], kind="stable")]
        slots = self._slots([ids[i] for i in order.tolist()])
        t = ts[order]
        with np.errstate(invalid="ignore"):
            newer = ~(t < self.path_ts[slots])
        order, slots, t = order[newer], slots[newer], t[newer]
        self.path_ts[slots] = t
        self.path[slots] = path[order]
        self.sigma[slots] = sigma[order]

    def _set_points(self, points: int) -> None:
        self.points = int(points)
        self.path = np.full((self.capacity, self.points, 2), np.nan)
        self.sigma = np.full((self.capacity, self.points), np.nan, dtype=np.float32)

    def evict(self, before_ts: float) -> int:
        """Forget vehicles whose newest fix is at or before ``before_ts``."""
        h = self.high
        with np.errstate(invalid="ignore"):
            gone = np.flatnonzero(self.ts[:h] <= before_ts)
        ids = self.ids
        for s in gone.tolist():
            if ids[s] is not None:
                self._allocator.release(s)
                self.ts[s] = np.nan
        return int(gone.size)

    def snapshot(self, show_s: float) -> FleetSnapshot:
        """Vehicles with a fix in the last ``show_s`` before the newest event time seen;
        evicts those silent for ``ttl_s``."""
        t = self.newest_ts
        if not math.isfinite(t):
            return FleetSnapshot.empty(self.points)
        self.evict(t - self.ttl_s)
        h = self.high
        with np.errstate(invalid="ignore"):
            act = np.flatnonzero(self.ts[:h] > t - show_s)
        names = self.ids
        ids = [names[s] for s in act.tolist()]
        # A path predicted before the current fix still shows where the vehicle was going.
        return FleetSnapshot(
            ts=t, ids=ids, x=self.x[act], y=self.y[act], heading=self.heading[act],
            length=self.length[act], width=self.width[act], paths=self.path[act],
            sigma=self.sigma[act],
        )
