"""The hand-over point between whatever feeds the map and the server that shows it.

Feeders (the processor's thread in the demo, the Kafka consumer of ``trajstream map``) call
``publish_*``; each call takes a lock for a few assignments and never waits for a viewer:
the newest fleet snapshot replaces the previous one, so a slow or stalled browser can never
hold a feeder back. The server reads a consistent :class:`HubState` and is told of changes
through a listener (called on the feeder's thread; it must only schedule work).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from trajstream.stream.livemap.alertbook import AlertBook, slim_alert
from trajstream.stream.livemap.frames import FleetSnapshot

__all__ = ["HubState", "MapHub"]

ORIGIN_GRID_M = 1000.0  # frame origins are rounded to this (stable across snapshots)


@dataclass(frozen=True)
class HubState:
    version: int
    fleet: FleetSnapshot
    open_alerts: list[dict[str, Any]]
    recent_alerts: list[dict[str, Any]]
    alert_vehicles: frozenset[str]
    stats: dict[str, Any]
    origin: tuple[float, float]
    fleet_wall: float  # wall time of the latest fleet snapshot (NaN: none yet)
    counters: dict[str, int] = field(default_factory=dict)


class MapHub:
    """Latest fleet, alert book and statistics, shared between threads."""

    def __init__(self, *, hold_s: float = 3.0, recent: int = 50) -> None:
        self._lock = threading.Lock()
        self._fleet = FleetSnapshot.empty()
        self._fleet_wall = math.nan
        self._alerts = AlertBook(hold_s=hold_s, recent=recent)
        self._stats: dict[str, Any] = {}
        self._origin: tuple[float, float] | None = None
        self._version = 0
        self._listeners: list[Callable[[], None]] = []
        self.counters = {"snapshots": 0, "alerts": 0, "bad_alerts": 0}
        # Viewers ready for a frame (connected, not waiting on their own acknowledgements),
        # set by the server: with none (nobody watching, or only stalled browsers) a feeder
        # may skip its snapshots.
        self.viewers = 0

    def add_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _changed(self) -> None:  # called with the lock held
        self._version += 1
        for fn in self._listeners:
            fn()

    def publish_fleet(self, snap: FleetSnapshot, stats: dict[str, Any] | None = None) -> None:
        """Replace the fleet (and merge ``stats`` into the corner figures)."""
        with self._lock:
            self._fleet = snap
            self._fleet_wall = time.time()
            if self._origin is None and len(snap):
                rows = snap.rows()
                self._origin = (_round(float(np.median(snap.x[rows]))),
                                _round(float(np.median(snap.y[rows]))))
            self._alerts.expire(snap.ts)
            if stats:
                self._stats.update(stats)
            self.counters["snapshots"] += 1
            self._changed()

    def publish_stats(self, stats: dict[str, Any]) -> None:
        with self._lock:
            self._stats.update(stats)

    def publish_alert(self, value: bytes | dict[str, Any]) -> bool:
        """Add one alert message (raw JSON bytes or decoded); False when it is not an alert."""
        now = time.time()
        try:
            msg = orjson.loads(value) if isinstance(value, bytes | bytearray) else value
        except orjson.JSONDecodeError:
            msg = None
        alert = slim_alert(msg, now)
        with self._lock:
            if alert is None:
                self.counters["bad_alerts"] += 1
                return False
            self._alerts.add(alert)
            self.counters["alerts"] += 1
            self._changed()
        return True

    def state(self) -> HubState:
        with self._lock:
            return HubState(
                version=self._version,
                fleet=self._fleet,
                open_alerts=self._alerts.open(),
                recent_alerts=self._alerts.recent(),
                alert_vehicles=self._alerts.vehicles(),
                stats=dict(self._stats),
                origin=self._origin or (0.0, 0.0),
                fleet_wall=self._fleet_wall,
                counters=dict(self.counters),
            )


def _round(v: float) -> float:
    return round(v / ORIGIN_GRID_M) * ORIGIN_GRID_M if math.isfinite(v) else 0.0
