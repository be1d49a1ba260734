"""The conflict stage: predicted kinematics of one tick in, alerts out.

Its input is :class:`PredictedTick`, plain arrays of the vehicles to assess at one event
time (ids, state, footprint, predicted path and its uncertainty), whoever produced them: the
vehicle stage in the same process (stream/vehicles.py), or, in a split deployment, records
read back from a topic. Risk (stream/risk.py) finds the conflicting pairs, the episode
tracker (stream/episodes.py) turns them into alerts: one per episode, another on escalation,
with deterministic ids. No I/O; the caller's clock is the tick's event time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.model.predictors import PathSpec
from trajstream.stream import episodes
from trajstream.stream.codec import encode_json
from trajstream.stream.risk import Conflicts, Fleet, RiskConfig, assess

__all__ = ["ConflictStage", "PredictedTick", "TickResult", "count_alerts"]


@dataclass(frozen=True)
class PredictedTick:
    """The vehicles to assess at event time ``t``; row i of every array is vehicle ``ids[i]``.

    ``fleet`` holds each vehicle's latest state, its footprint (``length``/``width``) and its
    predicted path (n, P, 2); ``sigma`` (n, P) the path's 1-sigma uncertainty in metres (NaN
    where the predictor gives none).
    """

    t: float
    ids: np.ndarray  # (n,) object: vehicle ids
    fleet: Fleet
    sigma: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.fleet)

    def take(self, index: np.ndarray) -> PredictedTick:
        """The rows ``index`` of this tick."""
        return PredictedTick(self.t, self.ids[index], self.fleet.take(index),
                             None if self.sigma is None else self.sigma[index])


@dataclass
class TickResult:
    """What one assessment found: the raw conflicts, their pairs (ids a < b, and the tick's
    rows of a and b), the alert decisions and the messages of the alerts emitted."""

    conflicts: Conflicts
    pairs: list[tuple[str, str]] = field(default_factory=list)
    index_a: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    index_b: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    decisions: list[episodes.AlertDecision] = field(default_factory=list)
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)  # of each alert
    seconds: float = 0.0  # the risk assessment's wall time


class ConflictStage:
    """Risk assessment and alert episodes over :class:`PredictedTick` s in event-time order.

    ``model`` names the predictor in the alert messages.
    """

    def __init__(self, spec: PathSpec, model: str, risk: RiskConfig | None = None,
                 episode_config: episodes.EpisodeConfig | None = None, metrics: Any = None
                 ) -> None:
        self.spec = spec
        self.model = model
        self.risk = risk if risk is not None else RiskConfig()
        self.tracker = episodes.EpisodeTracker(episode_config or episodes.EpisodeConfig())
        self.metrics = metrics
        self.stats: dict[str, int] = {"warning": 0, "critical": 0}

    def assess(self, tick: PredictedTick,
               owns: Callable[[TickResult], np.ndarray] | None = None, *,
               partial: bool = False) -> TickResult:
        """Assess one tick; ticks must come in increasing event time.

        Every pair's episode is tracked; with ``owns`` (a mask over the result's conflicts)
        only the alerts of the pairs it owns are emitted (the risk stage, where several
        processes see a pair and one alerts it). ``partial``: the tick holds only the
        :meth:`watched` vehicles (between two whole-fleet assessments)."""
        t, fleet = tick.t, tick.fleet
        t0 = time.perf_counter()
        conflicts = assess(t, fleet, self.spec, self.risk)
        seconds = time.perf_counter() - t0
        pairs, index_a, index_b = episodes.conflict_pairs(conflicts, tick.ids)
        decisions = self.tracker.update(t, pairs, conflicts, partial=partial)
        result = TickResult(conflicts, pairs, index_a, index_b, decisions, seconds=seconds)
        mine = owns(result) if owns is not None else None
        for d in decisions:
            if mine is not None and not mine[d.conflict]:
                continue
            msg = episodes.alert_message(d, fleet, int(index_a[d.conflict]),
                                         int(index_b[d.conflict]), self.spec, self.model)
            result.severities.append(msg["severity"])
            result.alerts.append((episodes.alert_key(d.vehicle_a, d.vehicle_b),
                                  encode_json(msg)))
        count_alerts(result.severities, None if partial else seconds, self.stats, self.metrics)
        return result

    def assess_watched(self, tick: PredictedTick) -> TickResult | None:
        """A partial assessment of the :meth:`watched` vehicles among ``tick``'s (which may
        hold the whole fleet: a caller in another process cannot know who is watched until
        the assessments before have run); None when nobody is watched."""
        watched = self.watched()
        if not watched:
            return None
        ids = tick.ids.tolist()
        index = np.flatnonzero(np.fromiter((i in watched for i in ids), bool, len(ids)))
        return self.assess(tick.take(index), partial=True)

    def watched(self) -> Collection[str]:
        """What a partial assessment between two whole-fleet ones needs: the vehicles of
        the conflicts awaiting confirmation and the other vehicles of their open episodes."""
        return self.tracker.watched()

    def forget(self, vehicle_ids: Iterable[str]) -> None:
        """Drop the episodes of vehicles that are gone (evicted, partition revoked)."""
        self.tracker.forget(vehicle_ids)

    def reset(self) -> None:
        """Forget every episode (keeps the counters)."""
        self.tracker = episodes.EpisodeTracker(self.tracker.config)

    # The tracker's checkpoint calls, as methods of the stage so that a caller in another
    # process reaches them by name (stream/risk_process.py).

    def changed_vehicles(self) -> set[str]:
        return self.tracker.changed_vehicles()

    def cut(self) -> tuple[set[str], dict[str, dict[str, Any]], float | None]:
        """What a commit point needs of the episodes: the vehicles changed since the last
        one, every open episode and :attr:`prev_t` (:meth:`Engine.cut`)."""
        return self.tracker.changed_vehicles(), self.tracker.snapshot(), self.tracker.prev_t

    def restore(self, states: dict[str, Any], prev_t: float | None = None) -> None:
        self.tracker.restore(states, prev_t=prev_t)


def count_alerts(severities: list[str], seconds: float | None, stats: dict[str, int],
                 metrics: Any) -> None:
    """Add one assessment's alerts (their severities) to ``stats`` and the metrics, and its
    time (given for whole-fleet assessments) to the risk histogram."""
    for sev in severities:
        stats[sev] += 1
        if metrics is not None:
            metrics.alerts.labels(severity=sev).inc()
    if metrics is not None and seconds is not None:
        metrics.risk_seconds.observe(seconds)
