"""Feeding the map from a processor in the same process (``trajstream demo``).

The tap is a best-effort output: as a sink it takes the alert messages (a dictionary update
each), and as the processor's observer it copies the engine's vehicle arrays into a
:class:`FleetSnapshot` at most ``fps`` times a second while a browser is connected, on the
processor's thread, and hands it to the hub. The copy is a few contiguous array copies
(about a millisecond for 5,000 vehicles on a quiet machine); everything else (thinning,
packing, sending) happens on the server's thread.
Nothing here waits for a viewer, and an error in the map is logged and swallowed: the map
must never stop the processor.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from trajstream.stream.livemap.frames import FleetSnapshot
from trajstream.stream.livemap.hub import MapHub

__all__ = ["ProcessorTap", "engine_snapshot"]

log = logging.getLogger("trajstream.stream.livemap")

ERROR_LOG_INTERVAL_S = 60.0


def engine_snapshot(engine: Any, show_s: float) -> FleetSnapshot:
    """The engine's vehicles, those with a fix in the last ``show_s`` of event time shown.

    Copies the used prefix of the slot arrays as they are (contiguous copies: a gather of
    5,000 rows with paths costs several times more, and this runs on the processor's thread).
    """
    store = engine.store
    t = float(engine.newest_applied_ts)
    if not math.isfinite(t):
        return FleetSnapshot.empty(store.points)
    h = store.high
    kin = store.kin
    ids = store.ids[:h]  # a list slice is a copy; an array slice is a view
    return FleetSnapshot(
        ts=t, ids=ids.copy() if isinstance(ids, np.ndarray) else ids,
        x=kin.x[:h].copy(), y=kin.y[:h].copy(),
        heading=kin.heading[:h].copy(), length=store.length[:h].copy(),
        width=store.width[:h].copy(), paths=store.path[:h].copy(),
        sigma=store.sigma[:h].copy(), shown=store.active(t - show_s),
    )


class ProcessorTap:
    """Alerts sink and engine observer of one processor, feeding ``hub``."""

    def __init__(self, hub: MapHub, *, fps: float = 4.0, show_s: float | None = None) -> None:
        self.hub = hub
        self.interval_s = 1.0 / fps
        self.show_s = show_s
        self._next = -math.inf
        self._rate_t = math.nan
        self._rate_records = 0
        self._rate = math.nan
        self._next_error_log = -math.inf
        self.errors = 0

    # -- best-effort sink (alerts) -----------------------------------------------------------

    def send(self, key: bytes | None, value: bytes) -> None:
        try:
            self.hub.publish_alert(value)
        except Exception as exc:  # the map must not stop the processor
            self._failed(exc)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    # -- observer (fleet) --------------------------------------------------------------------

    def __call__(self, engine: Any) -> None:
        now = time.monotonic()
        if now < self._next or not self.hub.viewers:  # nobody watching: no copies
            return
        self._next = now + self.interval_s
        try:
            show = self.show_s if self.show_s is not None else max(
                2.0, 2.0 * float(engine.config.stale_after_s))
            snap = engine_snapshot(engine, show)
            self.hub.publish_fleet(snap, self._stats(engine, now))
        except Exception as exc:
            self._failed(exc)

    def _stats(self, engine: Any, now: float) -> dict[str, Any]:
        records = int(engine.stats["records"])
        if not math.isfinite(self._rate_t):
            self._rate_t, self._rate_records = now, records
        elif now - self._rate_t >= 1.0:
            self._rate = (records - self._rate_records) / (now - self._rate_t)
            self._rate_t, self._rate_records = now, records
        newest = float(engine.newest_applied_ts)
        errors: dict[str, dict[str, float]] = {}
        for (model, horizon), value in engine.errors.mean_m().items():
            if math.isfinite(value):
                errors.setdefault(model, {})[horizon] = round(value, 3)
        return {
            "source": "in-process",
            "positions_per_s": round(self._rate, 1) if math.isfinite(self._rate) else None,
            "lag_s": round(time.time() - newest, 3) if math.isfinite(newest) else None,
            "vehicles_tracked": len(engine.store),
            "model": engine.predictor.name,
            "error_m": errors,
        }

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        now = time.monotonic()
        if now >= self._next_error_log:
            self._next_error_log = now + ERROR_LOG_INTERVAL_S
            log.warning("live map feed failed (%d so far; the processor goes on): %s: %s",
                        self.errors, type(exc).__name__, exc)
