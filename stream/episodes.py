"""Alert episodes per vehicle pair: one alert per episode, another only on escalation.

A pair's conflict must be seen at ``confirm_ticks`` consecutive assessments before its episode
opens (one noisy assessment never alerts). The opening alert carries the severity of that
moment; a later rise from warning to critical within the episode gives one more alert; a drop
and rise again does not. The episode closes once no conflict has been seen for
``clear_after_s`` of event time, and a conflict after that starts a new episode.

Whole-fleet assessments come every risk interval (0.2 s); between them a *partial* one
assesses only the :meth:`EpisodeTracker.watched` vehicles on their next fix, so confirming a
conflict within ``early_confirm_ttc_s`` of contact costs one tick (0.1 s) of latency instead
of one interval. A partial assessment can open an episode, as a warning, and close one, but
neither opens nor escalates to critical: critical alerts keep the persistence of two
whole-fleet assessments. (Measured on the tuning sets: partial confirmations at their own
severity, or escalations at them, added critical alerts on safe look-alikes and on recorded
roads; as warnings they added none.)

``alert_id`` is a hash of the pair, the episode's start event time (ms) and the severity, so a
replay of the same input gives the same ids and consumers can deduplicate at-least-once
delivery. Everything runs on event time passed in by the caller.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.contracts import ALERT_SCHEMA
from trajstream.errors import ConfigError
from trajstream.model.predictors import PathSpec
from trajstream.stream.risk import SEVERITY_NAMES, WARNING, Conflicts, Fleet

SCHEMA = ALERT_SCHEMA


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    """``clear_after_s``: risk-free event time that closes an episode; ``confirm_ticks``:
    consecutive assessments with a conflict before the first alert; ``early_confirm_ttc_s``:
    a partial assessment confirms only conflicts this close to contact. The longest lead a
    conflict kind needs (2 s) plus the delay to a subscriber (~0.4 s) is about 2.5 s: a
    conflict further off keeps that lead when confirmed a tick later, at the next
    whole-fleet assessment, and waiting filters more noise."""

    clear_after_s: float = 2.0
    confirm_ticks: int = 2
    early_confirm_ttc_s: float = 2.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clear_after_s) and self.clear_after_s >= 0):
            raise ConfigError(f"clear_after_s must be a finite number >= 0, got "
                              f"{self.clear_after_s!r}")
        if self.confirm_ticks < 1:
            raise ConfigError(f"confirm_ticks must be >= 1, got {self.confirm_ticks!r}")
        if not self.early_confirm_ttc_s >= 0:
            raise ConfigError(f"early_confirm_ttc_s must be >= 0, got "
                              f"{self.early_confirm_ttc_s!r}")


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """An alert to publish. ``conflict`` indexes the :class:`Conflicts` passed to ``update``."""

    alert_id: str
    vehicle_a: str
    vehicle_b: str
    severity: int
    ts: float
    episode_start: float
    ttc: float
    min_distance: float
    cpa_t: float
    cpa_x: float
    cpa_y: float
    conflict: int


@dataclass(slots=True)
class _Episode:
    start: float  # event time the episode opened (first alert)
    last: float  # event time of the latest conflict
    severity: int  # highest severity alerted


@dataclass(slots=True)
class _Pending:
    last: float
    count: int


@dataclass(slots=True)
class _State:
    episodes: dict[tuple[str, str], _Episode] = field(default_factory=dict)
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)


def alert_id(vehicle_a: str, vehicle_b: str, episode_start: float, severity: int) -> str:
    """Deterministic id of the alert of an episode at a severity (sha1 hex, 20 chars)."""
    ms = int(round(episode_start * 1000.0))
    raw = f"{vehicle_a}|{vehicle_b}|{ms}|{SEVERITY_NAMES[int(severity)]}".encode()
    return hashlib.sha1(raw).hexdigest()[:20]


def alert_key(vehicle_a: str, vehicle_b: str) -> bytes:
    """Kafka key of a pair's alerts: ``b"a|b"`` with a < b."""
    a, b = (vehicle_a, vehicle_b) if vehicle_a < vehicle_b else (vehicle_b, vehicle_a)
    return f"{a}|{b}".encode()


def conflict_pairs(
    conflicts: Conflicts, vehicle_ids: Sequence[str] | np.ndarray
) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Pair ids ordered by id (a < b) and the fleet indices of ``vehicle_a`` / ``vehicle_b``.

    :class:`Conflicts` orders a pair by fleet index; alerts order it by vehicle id.
    """
    ids = np.asarray(vehicle_ids, dtype=object)
    ia, ib = ids[conflicts.a], ids[conflicts.b]
    swap = np.array([x > y for x, y in zip(ia, ib, strict=True)], dtype=bool)
    index_a = np.where(swap, conflicts.b, conflicts.a)
    index_b = np.where(swap, conflicts.a, conflicts.b)
    pairs = [(str(ids[i]), str(ids[j])) for i, j in zip(index_a, index_b, strict=True)]
    return pairs, index_a, index_b


class EpisodeTracker:
    """Open episodes and unconfirmed conflicts per pair, keyed by (vehicle_a, vehicle_b)."""

    def __init__(self, config: EpisodeConfig | None = None) -> None:
        self.config = config or EpisodeConfig()
        self._s = _State()
        self._by_vehicle: dict[str, set[tuple[str, str]]] = {}
        self._prev_t: float | None = None
        self._changed: set[str] = set()

    def __len__(self) -> int:
        """Open episodes."""
        return len(self._s.episodes)

    @property
    def idle(self) -> bool:
        """No open episode and no unconfirmed conflict: an empty assessment changes nothing
        but :attr:`prev_t`."""
        return not self._s.episodes and not self._s.pending

    def watched(self) -> set[str]:
        """What a partial assessment needs: the vehicles of the unconfirmed conflicts, and
        the other vehicle of every open episode of theirs (a wreck ahead of a follower is
        an episode of the car it hits)."""
        by_vehicle = self._by_vehicle
        # Expanded from the set of the pending pairs' vehicles, not pair by pair: the
        # result must not depend on the order of ``pending``, which a restore rebuilds.
        core = {v for pair in self._s.pending for v in pair}
        out = set(core)
        for v in core:
            for pair in by_vehicle.get(v, ()):
                out.update(pair)
        return out

    def update(
        self, t: float, pairs: Sequence[tuple[str, str]], conflicts: Conflicts, *,
        partial: bool = False,
    ) -> list[AlertDecision]:
        """Feed one assessment at event time ``t`` (increasing); returns the alerts to publish.

        ``pairs[i]`` are the ids (a < b) of conflict i. Every assessment must be passed, also
        those without conflicts, so episodes close and confirmation streaks break.
        ``partial``: an assessment of the :meth:`watched` vehicles only; it confirms
        episodes as warnings and escalates none.
        """
        if len(pairs) != len(conflicts):
            raise ValueError(f"pairs ({len(pairs)}) and conflicts ({len(conflicts)}) differ")
        cfg = self.config
        episodes, pending = self._s.episodes, self._s.pending
        prev_t = self._prev_t
        out: list[AlertDecision] = []
        seen: set[tuple[str, str]] = set()
        sev_all = conflicts.severity
        for i, pair in enumerate(pairs):
            a, b = pair
            if not a < b:
                raise ValueError(f"pair ids must be ordered a < b, got {pair!r}")
            if pair in seen:
                continue
            seen.add(pair)
            sev = min(int(sev_all[i]), WARNING) if partial else int(sev_all[i])
            ep = episodes.get(pair)
            if ep is not None:
                ep.last = t
                if sev > ep.severity:
                    ep.severity = sev
                    out.append(self._decision(pair, ep.start, t, sev, conflicts, i))
                self._changed.add(a)
                continue
            pend = pending.get(pair)
            count = pend.count + 1 if pend is not None and pend.last == prev_t else 1
            if count >= cfg.confirm_ticks and not (
                    partial and conflicts.ttc[i] > cfg.early_confirm_ttc_s):
                pending.pop(pair, None)
                episodes[pair] = _Episode(start=t, last=t, severity=sev)
                self._index(pair)
                self._changed.add(a)
                out.append(self._decision(pair, t, t, sev, conflicts, i))
            else:
                pending[pair] = _Pending(last=t, count=count)
                self._index(pair)
                self._changed.add(a)

        for pair in [p for p in pending if p not in seen]:
            del pending[pair]
            self._unindex(pair)
            self._changed.add(pair[0])
        closed = [p for p, e in episodes.items() if e.last < t and t - e.last >= cfg.clear_after_s]
        for pair in closed:
            del episodes[pair]
            self._unindex(pair)
            self._changed.add(pair[0])
        self._prev_t = t
        return out

    def _decision(
        self, pair: tuple[str, str], start: float, t: float, sev: int, c: Conflicts, i: int
    ) -> AlertDecision:
        return AlertDecision(
            alert_id=alert_id(pair[0], pair[1], start, sev), vehicle_a=pair[0],
            vehicle_b=pair[1], severity=sev, ts=t, episode_start=start,
            ttc=float(c.ttc[i]), min_distance=float(c.min_distance[i]), cpa_t=float(c.cpa_t[i]),
            cpa_x=float(c.cpa_x[i]), cpa_y=float(c.cpa_y[i]), conflict=i,
        )

    def _index(self, pair: tuple[str, str]) -> None:
        for v in pair:
            self._by_vehicle.setdefault(v, set()).add(pair)

    def _unindex(self, pair: tuple[str, str]) -> None:
        if pair in self._s.episodes or pair in self._s.pending:
            return
        for v in pair:
            s = self._by_vehicle.get(v)
            if s is not None:
                s.discard(pair)
                if not s:
                    del self._by_vehicle[v]

    def forget(self, vehicle_ids: Iterable[str]) -> None:
        """Drop every episode involving these vehicles (evicted, or partition revoked).

        They leave :meth:`changed_vehicles` too: a vehicle that is gone has no state left to
        write (its changelog entry gets a tombstone), and without a changelog to collect
        the changes nothing else would ever take them out (one id per vehicle ever seen)."""
        gone = list(vehicle_ids)
        for v in gone:
            for pair in list(self._by_vehicle.get(v, ())):
                if self._s.episodes.pop(pair, None) is not None:
                    self._changed.add(pair[0])
                if self._s.pending.pop(pair, None) is not None:
                    self._changed.add(pair[0])
                self._unindex(pair)
        self._changed.difference_update(gone)

    def snapshot(self, vehicle_ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Open episodes as plain dicts per vehicle (the pair's lower id owns it).

        ``{vehicle_a: {"episodes": {vehicle_b: {"start", "last", "severity"}}, "pending":
        {vehicle_b: {"last", "count"}}}}``; a vehicle without open episodes or unconfirmed
        conflicts is absent. Unconfirmed conflicts are kept too (with :attr:`prev_t`), so a
        restored tracker confirms at the same tick, hence with the same ``alert_id``, as an
        uninterrupted one (checkpoints, stream/checkpoint.py).
        """
        wanted = None if vehicle_ids is None else set(vehicle_ids)
        out: dict[str, dict[str, Any]] = {}
        for (a, b), e in self._s.episodes.items():
            if wanted is not None and a not in wanted:
                continue
            out.setdefault(a, {"episodes": {}})["episodes"][b] = {
                "start": e.start, "last": e.last, "severity": e.severity,
            }
        for (a, b), p in self._s.pending.items():
            if wanted is not None and a not in wanted:
                continue
            out.setdefault(a, {"episodes": {}}).setdefault("pending", {})[b] = {
                "last": p.last, "count": p.count,
            }
        return out

    @property
    def prev_t(self) -> float | None:
        """Event time of the latest assessment (confirmation streaks continue from it)."""
        return self._prev_t

    def restore(self, states: Mapping[str, Mapping[str, Any]],
                prev_t: float | None = None) -> None:
        """Load per-vehicle dicts from :meth:`snapshot`, replacing those vehicles' episodes
        and unconfirmed conflicts; ``prev_t`` (when given) is the latest assessment's time."""
        if prev_t is not None:
            self._prev_t = prev_t
        for a, st in states.items():
            for pair in [p for p in self._s.episodes if p[0] == a]:
                del self._s.episodes[pair]
                self._unindex(pair)
            for pair in [p for p in self._s.pending if p[0] == a]:
                del self._s.pending[pair]
                self._unindex(pair)
            for b, e in (st or {}).get("pending", {}).items():
                pair = (str(a), str(b))
                if not pair[0] < pair[1]:
                    raise ValueError(f"pending pair must be ordered a < b, got {pair!r}")
                self._s.pending[pair] = _Pending(last=float(e["last"]), count=int(e["count"]))
                self._index(pair)
            for b, e in (st or {}).get("episodes", {}).items():
                pair = (str(a), str(b))
                if not pair[0] < pair[1]:
                    raise ValueError(f"episode pair must be ordered a < b, got {pair!r}")
                self._s.episodes[pair] = _Episode(
                    start=float(e["start"]), last=float(e["last"]), severity=int(e["severity"])
                )
                self._index(pair)

    def set_pairs(self, states: Mapping[tuple[str, str], Mapping[str, Any] | None]) -> None:
        """Replace single pairs' states: ``{"episode": {...}}`` or ``{"pending": {...}}`` as
        in :meth:`snapshot`, None to drop the pair (a partition restored at a later
        position than the rest, stream/risk_stage.py)."""
        for pair, st in states.items():
            self._s.episodes.pop(pair, None)
            self._s.pending.pop(pair, None)
            self._changed.add(pair[0])
            if st is not None and "episode" in st:
                e = st["episode"]
                self._s.episodes[pair] = _Episode(start=float(e["start"]), last=float(e["last"]),
                                                  severity=int(e["severity"]))
                self._index(pair)
            elif st is not None and "pending" in st:
                p = st["pending"]
                self._s.pending[pair] = _Pending(last=float(p["last"]), count=int(p["count"]))
                self._index(pair)
            else:
                self._unindex(pair)

    def changed_vehicles(self) -> set[str]:
        """Vehicles whose :meth:`snapshot` entry changed since the last call (then cleared)."""
        out, self._changed = self._changed, set()
        return out


def _r(v: float, nd: int = 2) -> float:
    return round(float(v), nd)


def _vehicle(fleet: Fleet, i: int) -> dict[str, Any]:
    return {
        "state": {
            "ts": round(float(fleet.ts[i]), 3), "x": _r(fleet.x[i]), "y": _r(fleet.y[i]),
            "speed": _r(fleet.speed[i]), "heading": _r(fleet.heading[i], 4),
        },
        "path": np.round(fleet.paths[i], 2).tolist(),
    }


def alert_message(
    decision: AlertDecision, fleet: Fleet, index_a: int, index_b: int, spec: PathSpec,
    model: str,
) -> dict[str, Any]:
    """The ``collision-alerts`` value (schema ``trajstream.alert/v1``, docs/architecture.md).

    ``index_a``/``index_b`` are the fleet rows of ``decision.vehicle_a``/``vehicle_b``.
    """
    d = decision
    return {
        "schema": SCHEMA,
        "alert_id": d.alert_id,
        "vehicle_a": d.vehicle_a,
        "vehicle_b": d.vehicle_b,
        "severity": SEVERITY_NAMES[d.severity],
        "ts": round(d.ts, 3),
        "ttc": _r(d.ttc),
        "min_distance": _r(d.min_distance),
        "closest_approach": {"ts": round(d.cpa_t, 3), "x": _r(d.cpa_x), "y": _r(d.cpa_y)},
        "vehicles": {"a": _vehicle(fleet, index_a), "b": _vehicle(fleet, index_b)},
        "model": model,
        "dt": spec.step_s,
    }
