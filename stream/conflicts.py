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

__all__ = ["ConflictStage", "PredictedTick", "TickResult"]


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
        if self.metrics is not None and not partial:
            self.metrics.risk_seconds.observe(time.perf_counter() - t0)
        pairs, index_a, index_b = episodes.conflict_pairs(conflicts, tick.ids)
        decisions = self.tracker.update(t, pairs, conflicts, partial=partial)
        result = TickResult(conflicts, pairs, index_a, index_b, decisions)
        mine = owns(result) if owns is not None else None
        for d in decisions:
            if mine is not None and not mine[d.conflict]:
                continue
            msg = episodes.alert_message(d, fleet, int(index_a[d.conflict]),
                                         int(index_b[d.conflict]), self.spec, self.model)
            sev = msg["severity"]
            self.stats[sev] += 1
            if self.metrics is not None:
                self.metrics.alerts.labels(severity=sev).inc()
            result.alerts.append((episodes.alert_key(d.vehicle_a, d.vehicle_b),
                                  encode_json(msg)))
        return result

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
