"""The alerts a map shows: pairs with an open alert, and a short list of recent ones.

The alert topic carries one message when an episode opens and one more if it escalates; it
says nothing when the episode clears. The map therefore keeps an alert open until its
predicted contact (``ts + ttc``) is ``hold_s`` in the past, on event time, the latest alert
of a pair replacing the earlier one. Only what the page draws is kept (not the paths the
alert message carries), so memory is bounded by ``recent`` plus the open pairs, and those
expire.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["AlertBook", "slim_alert"]


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def slim_alert(msg: Any, published_wall: float) -> dict[str, Any] | None:
    """What the page needs of an alert message, or None when it is not one.

    ``pub`` is the wall time the map received it (the page measures its own delay by it).
    """
    if not isinstance(msg, dict):
        return None
    a, b, ts = msg.get("vehicle_a"), msg.get("vehicle_b"), _num(msg.get("ts"))
    if not isinstance(a, str) or not isinstance(b, str) or ts is None:
        return None
    cpa = msg.get("closest_approach")
    cpa = cpa if isinstance(cpa, dict) else {}
    vehicles = msg.get("vehicles")
    vehicles = vehicles if isinstance(vehicles, dict) else {}
    where: dict[str, list[float]] = {}
    for side, vid in (("a", a), ("b", b)):
        entry = vehicles.get(side)
        state = entry.get("state") if isinstance(entry, dict) else None
        if isinstance(state, dict):
            x, y = _num(state.get("x")), _num(state.get("y"))
            if x is not None and y is not None:
                where[vid] = [x, y]
    return {
        "id": str(msg.get("alert_id", f"{a}|{b}@{ts}")),
        "a": a,
        "b": b,
        "severity": "critical" if msg.get("severity") == "critical" else "warning",
        "ts": ts,
        "ttc": _num(msg.get("ttc")),
        "min_distance": _num(msg.get("min_distance")),
        "cpa": [_num(cpa.get("x")), _num(cpa.get("y")), _num(cpa.get("ts"))],
        "at": where,
        "pub": published_wall,
    }


class AlertBook:
    """Open alerts by pair and the ``recent`` newest, on event time. Not thread-safe (the
    hub holds a lock around it)."""

    def __init__(self, *, hold_s: float = 3.0, recent: int = 50) -> None:
        self.hold_s = float(hold_s)
        self._open: dict[tuple[str, str], dict[str, Any]] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)

    def add(self, alert: dict[str, Any]) -> None:
        pair = (alert["a"], alert["b"]) if alert["a"] < alert["b"] else (alert["b"], alert["a"])
        self._open[pair] = alert
        self._recent.appendleft(alert)

    def expire(self, now_ts: float) -> None:
        """Close the alerts whose predicted contact is more than ``hold_s`` before ``now_ts``."""
        if not math.isfinite(now_ts):
            return
        gone = [k for k, a in self._open.items() if _closes_at(a, self.hold_s) < now_ts]
        for k in gone:
            del self._open[k]

    def open(self) -> list[dict[str, Any]]:
        return list(self._open.values())

    def recent(self) -> list[dict[str, Any]]:
        return list(self._recent)

    def vehicles(self) -> frozenset[str]:
        """Ids of the vehicles in an open alert (always sent, whatever the viewport)."""
        return frozenset(v for a, b in self._open for v in (a, b))


def _closes_at(alert: dict[str, Any], hold_s: float) -> float:
    ttc = alert["ttc"] if alert["ttc"] is not None else 0.0
    return float(alert["ts"]) + max(ttc, 0.0) + hold_s
