"""Alerts against simulator ground truth: which collisions were alerted, how early.

Used by the demo's summary, the end-to-end tests and the benchmarks. A collision counts
("eligible") when both vehicles had been observed for at least ``min_history_s`` before
contact: nothing can predict a collision of a vehicle that appeared a moment ago. It is
alerted when an alert for the pair has an event time before the contact; the lead time is
contact time minus the first such alert's time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CollisionReport", "match_collisions"]


@dataclass
class CollisionReport:
    eligible: list[dict[str, Any]] = field(default_factory=list)
    alerted: list[tuple[dict[str, Any], float]] = field(default_factory=list)  # (truth, lead s)
    missed: list[dict[str, Any]] = field(default_factory=list)
    too_short: list[dict[str, Any]] = field(default_factory=list)  # < min_history_s observed

    @property
    def leads_s(self) -> list[float]:
        return [lead for _, lead in self.alerted]

    def describe(self) -> str:
        leads = sorted(self.leads_s)
        text = (f"{len(self.alerted)}/{len(self.eligible)} collisions with enough history "
                f"alerted before contact")
        if leads:
            text += (f"; lead time min {leads[0]:.1f} s, median {leads[len(leads) // 2]:.1f} s, "
                     f"max {leads[-1]:.1f} s")
        if self.too_short:
            text += f"; {len(self.too_short)} more with too little history"
        return text


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def match_collisions(
    alerts: Iterable[Mapping[str, Any]],
    truth: Iterable[Mapping[str, Any]],
    first_seen: Mapping[str, float] | None = None,
    min_history_s: float = 3.0,
    max_lead_s: float = 10.0,
) -> CollisionReport:
    """Match ``alerts`` (decoded alert messages) to the ``truth`` lines of type collision.

    ``first_seen`` maps vehicle id to the event time of its first position; without it every
    collision is eligible. Alerts more than ``max_lead_s`` before the contact belong to some
    earlier episode of the pair and do not count.
    """
    first_alert: dict[tuple[str, str], list[float]] = {}
    for a in alerts:
        first_alert.setdefault(_pair(a["vehicle_a"], a["vehicle_b"]), []).append(float(a["ts"]))
    report = CollisionReport()
    for event in truth:
        if event.get("type") != "collision":
            continue
        va, vb, ts = str(event["vehicle_a"]), str(event["vehicle_b"]), float(event["ts"])
        if first_seen is not None:
            seen = max(first_seen.get(va, ts), first_seen.get(vb, ts))
            if ts - seen < min_history_s:
                report.too_short.append(dict(event))
                continue
        report.eligible.append(dict(event))
        before = [x for x in first_alert.get(_pair(va, vb), []) if 0.0 < ts - x <= max_lead_s]
        if before:
            report.alerted.append((dict(event), ts - min(before)))
        else:
            report.missed.append(dict(event))
    return report
