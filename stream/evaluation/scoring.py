"""Scores of an alert stream against what happened: live lead, recall, precision, alert rate.

- **Live lead**: the processor releases tick ``ts`` once every vehicle due in it by its
  reporting cadence has reported, or at the latest once the input has delivered a record
  later than ``ts + tick_lateness_s`` (stream/admission.py); a subscriber has the alert
  when the record that completes the tick has arrived (:class:`ReleaseClock`, the
  processor's admission run over the positions in their input order, as a live feed
  delivers them) and the micro-batch is processed and flushed (``processing_s``). The
  alert's ``ts`` already includes the confirmation ticks (an episode opens at the tick
  that confirms it). So the live lead of a collision is ``contact - (release of the first
  alert's tick + processing_s)``.
- **Recall**: collisions whose vehicles were both observed ``min_history_s`` before contact
  (nothing can foresee a vehicle that just appeared), alerted with at least a live lead
  (``min_lead_s``, or the lead the truth requires for that collision). An alert more than
  ``max_lead_s`` before contact belongs to an earlier episode of the pair.
- **Precision**: an alert is justified when the pair's true footprints come within
  ``justified_gap_m`` of each other within ``horizon_s`` after it (or the pair collides).
- **Alert rate**: warning and critical alerts per vehicle-hour of observed traffic.
- **Safe scenarios**: scenarios of a library that must stay quiet, and whether any critical
  (or any) alert touched them.
- **By feed**: a library's recall and safe scenarios split by what its vehicles report:
  speed and heading beside each fix, or positions only (the processor then derives both
  from the fixes, later and noisier).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajstream.errors import ConfigError
from trajstream.stream.admission import Admission
from trajstream.stream.codec import PositionBatch
from trajstream.stream.config import ENGINE_DEFAULTS, EngineConfig
from trajstream.stream.evaluation.kinds import KINDS, classify
from trajstream.stream.evaluation.tracks import Tracks, footprint_gap, sample_times

__all__ = ["FEEDS", "CollisionOutcome", "ReleaseClock", "ScoreConfig", "score"]

#: A library scenario's feed, by its truth line's ``reported`` flag (True first).
FEEDS = ("speed+heading", "positions only")

_SAMPLE_S = 0.1


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    """How alerts are judged; see the module docstring."""

    tick_lateness_s: float = ENGINE_DEFAULTS.tick_lateness_s
    processing_s: float = 0.15
    min_lead_s: float = 1.0
    min_history_s: float = 3.0
    max_lead_s: float = 10.0
    horizon_s: float = 4.0
    justified_gap_m: float = 1.0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")



class ReleaseClock:
    """Event time at which the processor releases each tick, for positions read in the
    order given, as one input partition delivers them live: the processor's own admission
    (stream/admission.py, default rules unless ``config``) run over them in micro-batches
    of ``batch_s`` of event time (a live processor polling that often; the records of one
    event time always together). A tick goes out with the batch that completes it, by its
    vehicles' cadence or on evidence (at the end of the input when none does), at that
    batch's newest event time."""

    def __init__(self, positions: PositionBatch, config: EngineConfig = ENGINE_DEFAULTS,
                 batch_s: float = 0.005) -> None:
        adm = Admission(config, wall_clock=lambda: math.inf)
        ts = positions.ts
        self._dt = float(config.tick_s)
        newest = np.maximum.accumulate(ts) if ts.size else ts
        slot = np.floor(newest / batch_s)
        bounds = np.r_[0, np.flatnonzero(slot[1:] != slot[:-1]) + 1, ts.shape[0]].tolist()
        done: list[int] = []
        at: list[float] = []
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            k = adm.admit(positions.take(slice(s, e)), s, None, None)
            if adm.release(k) is not None:
                done.append(k)
                at.append(float(newest[e - 1]))
        self._done = np.asarray(done, dtype=np.int64)
        self._at = np.asarray(at, dtype=np.float64)
        self._end = float(newest[-1]) if ts.size else -math.inf

    def release(self, t: float) -> float:
        """When the tick at event time ``t`` (a tick's end, as alerts carry) is out."""
        i = int(np.searchsorted(self._done, round(t / self._dt), side="left"))
        return float(self._at[i]) if i < self._at.size else self._end


def live_delay(ts: float, cfg: ScoreConfig, clock: ReleaseClock | None) -> float:
    """Event time from an alert's ``ts`` to when a subscriber has it (without a clock: a
    feed with a record right at ``ts + tick_lateness_s``)."""
    released = clock.release(ts) if clock is not None else ts + cfg.tick_lateness_s
    return max(released - ts, 0.0) + cfg.processing_s


@dataclass(frozen=True, slots=True)
class CollisionOutcome:
    """One true collision and how early it was alerted (``live_lead_s`` None: not before
    contact)."""

    vehicle_a: str
    vehicle_b: str
    ts: float
    kind: str
    required_lead_s: float | None
    eligible: bool
    alert_ts: float | None
    live_lead_s: float | None


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def collision_outcomes(
    alerts: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]], tracks: Tracks,
    cfg: ScoreConfig, clock: ReleaseClock | None = None,
) -> list[CollisionOutcome]:
    """Every collision of ``truth`` with its first alert before contact and its live lead."""
    by_pair: dict[tuple[str, str], list[float]] = {}
    for a in alerts:
        by_pair.setdefault(_pair(str(a["vehicle_a"]), str(a["vehicle_b"])), []).append(
            float(a["ts"]))
    out = []
    for e in truth:
        if e.get("type") != "collision":
            continue
        va, vb, ts = str(e["vehicle_a"]), str(e["vehicle_b"]), float(e["ts"])
        ia, ib = tracks.index.get(va), tracks.index.get(vb)
        seen = max(tracks.first_seen(ia) if ia is not None else ts,
                   tracks.first_seen(ib) if ib is not None else ts)
        eligible = ts - seen >= cfg.min_history_s
        kind = str(e["kind"]) if e.get("kind") else classify(tracks, va, vb, ts)
        req = e.get("required_lead_s")
        before = [x for x in by_pair.get(_pair(va, vb), []) if 0.0 < ts - x <= cfg.max_lead_s]
        first = min(before) if before else None
        lead = ts - (first + live_delay(first, cfg, clock)) if first is not None else None
        out.append(CollisionOutcome(va, vb, ts, kind, None if req is None else float(req),
                                    eligible, first, lead))
    return out


def justified(
    alerts: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]], tracks: Tracks,
    cfg: ScoreConfig,
) -> np.ndarray:
    """Per alert: do the pair's true footprints come within ``justified_gap_m`` within
    ``horizon_s`` (or collide by the truth)?"""
    contacts: dict[tuple[str, str], list[float]] = {}
    for e in truth:
        if e.get("type") == "collision":
            contacts.setdefault(_pair(str(e["vehicle_a"]), str(e["vehicle_b"])), []).append(
                float(e["ts"]))
    out = np.zeros(len(alerts), dtype=bool)
    for k, a in enumerate(alerts):
        va, vb, ts = str(a["vehicle_a"]), str(a["vehicle_b"]), float(a["ts"])
        if any(ts - 1e-6 <= c <= ts + cfg.horizon_s for c in contacts.get(_pair(va, vb), [])):
            out[k] = True
            continue
        ia, ib = tracks.index.get(va), tracks.index.get(vb)
        if ia is None or ib is None:
            continue
        t = sample_times(ts, ts + cfg.horizon_s, _SAMPLE_S)
        xa, ya, ha, pa = tracks.state(ia, t)
        xb, yb, hb, pb = tracks.state(ib, t)
        both = pa & pb
        if not both.any():
            continue
        gap = footprint_gap(xa[both], ya[both], ha[both], float(tracks.length[ia]),
                            float(tracks.width[ia]), xb[both], yb[both], hb[both],
                            float(tracks.length[ib]), float(tracks.width[ib]))
        out[k] = bool(gap.min() <= cfg.justified_gap_m)
    return out


def _quantiles(x: Sequence[float]) -> dict[str, float | None]:
    if not x:
        return {"p10": None, "p50": None, "p90": None}
    q = np.quantile(np.asarray(x, dtype=float), [0.1, 0.5, 0.9])
    return {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


def _recall(hits: int, n: int) -> float | None:
    return hits / n if n else None


def score(
    alerts: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]], tracks: Tracks,
    cfg: ScoreConfig, clock: ReleaseClock | None = None,
) -> dict[str, Any]:
    """Every figure of one warner (plain dict, JSON-ready); see the module docstring.
    ``clock``: when ticks are released (None: at ``ts + tick_lateness_s``)."""
    outcomes = collision_outcomes(alerts, truth, tracks, cfg, clock)
    eligible = [o for o in outcomes if o.eligible]

    def ok_min(o: CollisionOutcome) -> bool:
        return o.live_lead_s is not None and o.live_lead_s >= cfg.min_lead_s

    def ok_req(o: CollisionOutcome) -> bool:
        need = o.required_lead_s if o.required_lead_s is not None else cfg.min_lead_s
        return o.live_lead_s is not None and o.live_lead_s >= need

    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [o for o in eligible if o.kind == kind]
        if not mine:
            continue
        leads = [o.live_lead_s for o in mine if o.live_lead_s is not None]
        per_kind[kind] = {
            "collisions": len(mine),
            "recall_min_lead": _recall(sum(map(ok_min, mine)), len(mine)),
            "recall_required_lead": _recall(sum(map(ok_req, mine)), len(mine)),
            "live_lead_s": _quantiles(leads),
        }
    leads = [o.live_lead_s for o in eligible if o.live_lead_s is not None]
    ok = justified(alerts, truth, tracks, cfg)
    sev = np.array([str(a.get("severity")) for a in alerts], dtype=object)
    crit = sev == "critical"
    hours = tracks.vehicle_hours()
    safe = _safe_scenarios(alerts, truth)
    return {
        "collisions": len(outcomes),
        "eligible": len(eligible),
        "too_little_history": len(outcomes) - len(eligible),
        "recall_min_lead": _recall(sum(map(ok_min, eligible)), len(eligible)),
        "recall_required_lead": _recall(sum(map(ok_req, eligible)), len(eligible)),
        "alerted_before_contact": _recall(sum(o.alert_ts is not None for o in eligible),
                                          len(eligible)),
        "live_lead_s": _quantiles(leads),
        "live_leads_s": [round(x, 3) for x in sorted(leads)],
        "per_kind": per_kind,
        "alerts": len(alerts),
        "critical": int(crit.sum()),
        "warning": int((sev == "warning").sum()),
        "precision": float(ok.mean()) if len(alerts) else None,
        "precision_critical": float(ok[crit].mean()) if crit.any() else None,
        "vehicle_hours": hours,
        "critical_per_vehicle_hour": float(crit.sum()) / hours if hours > 0 else None,
        "warning_per_vehicle_hour": float((sev == "warning").sum()) / hours if hours > 0 else None,
        "unjustified_critical_per_vehicle_hour": (float((crit & ~ok).sum()) / hours
                                                  if hours > 0 else None),
        "safe_scenarios": safe,
        "per_feed": _per_feed(eligible, ok_req, alerts, truth),
        "missed": [
            {"vehicle_a": o.vehicle_a, "vehicle_b": o.vehicle_b, "ts": o.ts, "kind": o.kind,
             "live_lead_s": None if o.live_lead_s is None else round(o.live_lead_s, 3),
             "required_lead_s": o.required_lead_s}
            for o in eligible if not ok_req(o)
        ],
    }


def _library_scenarios(
    truth: Sequence[Mapping[str, Any]], conflict: bool | None = None
) -> list[Mapping[str, Any]]:
    """The truth's scenario lines (a library's), all or those with the given ``conflict``."""
    return [e for e in truth if e.get("type") == "scenario"
            and (conflict is None or bool(e.get("conflict")) == conflict)]


def _worst_by_scenario(
    alerts: Sequence[Mapping[str, Any]], scenarios: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Per scenario touched by an alert between two of its own vehicles: the worst severity
    (1 warning, 2 critical)."""
    worst: dict[str, int] = {}
    rank = {"warning": 1, "critical": 2}
    owner = {str(v): str(s["scenario"]) for s in scenarios for v in s.get("vehicles", [])}
    for a in alerts:
        sa, sb = owner.get(str(a["vehicle_a"])), owner.get(str(a["vehicle_b"]))
        if sa is not None and sa == sb:
            worst[sa] = max(worst.get(sa, 0), rank.get(str(a.get("severity")), 0))
    return worst


def _safe_scenarios(
    alerts: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """Safe library scenarios (truth lines ``{"type": "scenario", "conflict": false, ...}``)
    touched by a critical alert or by any alert, overall and per scenario kind."""
    scenarios = _library_scenarios(truth, conflict=False)
    if not scenarios:
        return None
    worst = _worst_by_scenario(alerts, scenarios)
    per_kind: dict[str, dict[str, int]] = {}
    for s in scenarios:
        k = per_kind.setdefault(str(s.get("kind", "?")), {"n": 0, "critical": 0, "any": 0})
        w = worst.get(str(s["scenario"]), 0)
        k["n"] += 1
        k["critical"] += w >= 2
        k["any"] += w >= 1
    n = len(scenarios)
    n_crit = sum(w >= 2 for w in worst.values())
    return {"n": n, "with_critical": n_crit, "with_any": len(worst),
            "critical_fraction": n_crit / n, "per_kind": per_kind}


def _per_feed(
    eligible: Sequence[CollisionOutcome], ok_req: Callable[[CollisionOutcome], bool],
    alerts: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]],
) -> dict[str, Any] | None:
    """A library's recall at the required lead and its safe scenarios with a critical alert,
    per feed (:data:`FEEDS`); None for traffic that is not a library."""
    scenarios = _library_scenarios(truth)
    if not scenarios:
        return None
    feed = {str(s["scenario"]): FEEDS[0] if s.get("reported") else FEEDS[1] for s in scenarios}
    of_pair = {(str(e["vehicle_a"]), str(e["vehicle_b"]), float(e["ts"])): feed.get(
        str(e.get("scenario"))) for e in truth if e.get("type") == "collision"}
    safe = [s for s in scenarios if not s.get("conflict")]
    worst = _worst_by_scenario(alerts, safe)
    out: dict[str, Any] = {}
    for name in FEEDS:
        mine = [o for o in eligible if of_pair.get((o.vehicle_a, o.vehicle_b, o.ts)) == name]
        quiet = [s for s in safe if feed[str(s["scenario"])] == name]
        out[name] = {
            "collisions": len(mine),
            "recall_required_lead": _recall(sum(map(ok_req, mine)), len(mine)),
            "safe": len(quiet),
            "safe_with_critical": sum(worst.get(str(s["scenario"]), 0) >= 2 for s in quiet),
        }
    return out
