"""The vehicle stage: per-vehicle state, one batched predictor step per sub-step, paths.

Released records (stream/admission.py) arrive tick by tick in event-time order. Within a
tick a vehicle with several fixes gets one sub-step per fix; each sub-step runs the
kinematic update and one batched predictor call for the vehicles in it (never per message).
Vehicle slots are allocated when a tick applies their first fix and freed by TTL eviction on
tick times, so the same released sequence gives the same slots and the same fleet order.
What leaves the stage per tick is :meth:`VehicleStage.predicted`: plain arrays of predicted
kinematics, the conflict stage's input (stream/conflicts.py). Online prediction error
(stream/online_error.py) is scored on the same sub-steps. No I/O.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from typing import Any

import numpy as np

from trajstream.errors import ConfigError
from trajstream.model.kinematics import Kinematics
from trajstream.model.neighbours import neighbour_features
from trajstream.model.predictors import Predictor, constant_velocity_paths
from trajstream.model.sorting import stable_argsort
from trajstream.stream.codec import encode_json
from trajstream.stream.config import EngineConfig
from trajstream.stream.conflicts import PredictedTick
from trajstream.stream.online_error import OnlineError
from trajstream.stream.risk import Fleet
from trajstream.stream.state import FLAG_REASONS, StateStore

__all__ = ["VehicleStage"]

log = logging.getLogger("trajstream.stream.vehicles")

_HINTS = {
    "speed": "reported speed disagrees with the motion between its fixes (km/h, mph or "
             "speed 0 while moving?); using the speed derived from positions",
    "heading": "reported heading disagrees with its course (degrees, compass heading?); "
               "using the course derived from positions",
    "jump": "moved further between two fixes than any vehicle can (another frame or "
            "origin?); its track restarts there",
    "partition": "records on more than one input partition, so they arrive out of order "
                 "and most are dropped stale: key every record by vehicle_id and publish "
                 "the fleet through one partitioner",
}
# A fleet-wide mistake (km/h everywhere) would log a line per vehicle: per reason, this many
# vehicles are named within _LOG_WINDOW_S of event time, then one line says the rest are
# only counted.
_LOG_PER_WINDOW = 5
_LOG_WINDOW_S = 600.0


class VehicleStage:
    """Vehicle states (:class:`StateStore`), the predictor and the online error."""

    def __init__(self, config: EngineConfig, predictor: Predictor, metrics: Any = None) -> None:
        spec = config.spec
        if predictor.spec.points != spec.points or abs(predictor.spec.step_s - spec.step_s) > 1e-9:
            raise ConfigError(
                f"predictor {predictor.name!r} predicts {predictor.spec.points} points every "
                f"{predictor.spec.step_s} s; the engine is configured for {spec.points} every "
                f"{spec.step_s} s"
            )
        self.config = config
        self.spec = spec
        self.predictor = predictor
        self.model_id = model_id(predictor)
        # A predictor that also estimates its uncertainty (the LSTM) is stepped through
        # step_full: same paths, plus a 1-sigma per point for the predictions and the map.
        self._step_full = getattr(predictor, "step_full", None)
        self.metrics = metrics
        self._offsets = spec.offsets_s
        self.store = StateStore(
            1024,
            state_dim=predictor.state_dim,
            points=spec.points,
            reset_gap_s=config.reset_gap_s,
            gps_sigma_m=config.gps_sigma_m,
        )
        models = [predictor.name] + (["cv"] if predictor.name != "cv" else [])
        self.errors = OnlineError(
            spec, models, capacity=1024, anchor_interval_s=config.error_anchor_interval_s
        )
        self.stats: dict[str, int] = {"evicted": 0, "predictions": 0, "moved_partition": 0,
                                      **{f"corrected_{r}": 0 for _, r in FLAG_REASONS}}
        self._corrections = (None if metrics is None else
                             {r: metrics.positions_corrected.labels(reason=r)
                              for _, r in FLAG_REASONS})
        self._warned: set[tuple[str, str]] = set()  # (vehicle, reason) logged once
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (window start, lines)
        self.newest_applied_ts = -math.inf  # newest event time applied to the state
        self.next_evict = -math.inf

    def __len__(self) -> int:
        return len(self.store)

    def apply(self, recs: dict[str, np.ndarray], ids: np.ndarray,
              predictions: list[tuple[bytes, bytes]]) -> None:
        """Apply one tick's records (sorted by event time): one sub-step per fix rank.

        Prediction messages (when ``emit_predictions``) are appended to ``predictions``."""
        self._apply(recs, ids, predictions)

    def evict(self, t: float) -> list[str]:
        """Forget the vehicles silent for ``ttl_s`` at tick time ``t``; returns their ids."""
        if t < self.next_evict:
            return []
        ids, slots = self.store.evict(t - self.config.ttl_s)
        if ids:
            self.errors.reset(slots)
            self.stats["evicted"] += len(ids)
        self.next_evict = t + min(1.0, self.config.ttl_s / 4)
        return ids

    def predicted(self, t: float, only: Collection[str] | None = None) -> PredictedTick:
        """The vehicles with a fix within ``stale_after_s`` before tick time ``t``, in slot
        order; with ``only``, those of them among these ids.

        A vehicle whose state is past the tick (restored from a partition whose previous
        owner had got further, while this process re-applies an earlier tick) is left out:
        it is assessed at its own ticks, not with a position from the future."""
        store = self.store
        act = store.active(t - self.config.stale_after_s)
        if only is not None:
            act = act[np.isin(act, store.lookup(list(only)))]
        dt = float(self.config.tick_s)
        ahead = np.ceil(store.last_ts[act] / dt) > round(t / dt)
        if ahead.any():
            act = act[~ahead]
        kin = store.kin
        sigma = store.sigma[act]  # one array in both places (a risk process gets it once)
        fleet = Fleet(
            ts=store.last_ts[act], x=kin.x[act], y=kin.y[act], speed=kin.speed_now[act],
            heading=kin.heading[act], yaw_rate=kin.yaw_rate[act], accel=kin.accel[act],
            length=store.length[act], width=store.width[act], paths=store.path[act],
            sigma=sigma, heading_known=kin.heading_known[act] > 0,
            since=store.since_ts[act],
        )
        ids = store.id_of[act]
        return PredictedTick(t, ids, fleet, sigma)

    def restore(self, ids: list[str], want_slots: list[int], rows: np.ndarray,
                rec: np.ndarray) -> np.ndarray:
        """Load vehicle states read back from a changelog; returns their slots."""
        store = self.store
        if rows.shape[1] not in (store.row_width(), store.row_width() - 1):
            raise ConfigError(
                f"the changelog holds state of another layout ({rows.shape[1]} values "
                f"per vehicle, this engine uses {store.row_width()}): a different "
                f"horizon/step? Use a new --changelog-topic or --group")
        if rec.shape[1] != store.state_dim:
            raise ConfigError(
                f"the changelog holds predictor state of size {rec.shape[1]}, the "
                f"{self.predictor.name!r} predictor uses {store.state_dim}: restore "
                f"with the same --predictor and --weights, or use a new "
                f"--changelog-topic/--group")
        slots = store.import_rows(ids, want_slots, rows, rec)
        self.errors.ensure_capacity(store.capacity)
        self.errors.reset(slots)
        self.newest_applied_ts = max(self.newest_applied_ts,
                                     float(np.nanmax(store.last_ts[slots])))
        return slots

    def drop(self, slots: np.ndarray) -> list[str]:
        """Forget the vehicles in ``slots``; returns their ids."""
        ids = self.store.drop(slots)
        if ids:
            self.errors.reset(slots)
        return ids

    def drop_all(self) -> list[str]:
        """Forget every vehicle and the event-time position (keeps the counters)."""
        store = self.store
        ids = self.drop(np.flatnonzero(store.used[:store.high]))
        self.next_evict = -math.inf
        self.newest_applied_ts = -math.inf
        return ids

    def drop_partitions(self, parts: Collection[int]) -> list[str]:
        store = self.store
        h = store.high
        wanted = np.asarray(sorted(parts), dtype=np.int64)
        return self.drop(np.flatnonzero(store.used[:h] & np.isin(store.partition[:h], wanted)))

    def _apply(self, recs: dict[str, np.ndarray], ids: np.ndarray,
               out: list[tuple[bytes, bytes]]) -> None:
        store = self.store
        slots, new = store.slots_for(ids)
        self.errors.ensure_capacity(store.capacity)
        if new.any():
            self.errors.reset(slots[new])
        m = slots.size
        order = stable_argsort(slots)
        s_sorted = slots[order]
        start = np.ones(m, dtype=bool)
        start[1:] = s_sorted[1:] != s_sorted[:-1]
        start_pos = np.maximum.accumulate(np.where(start, np.arange(m), 0))
        rank = np.empty(m, dtype=np.int64)
        rank[order] = np.arange(m) - start_pos
        last = np.empty(m, dtype=bool)
        last[order] = np.r_[start[1:], True]
        top = int(rank.max())
        for r in range(top + 1):
            rows = np.flatnonzero(rank == r) if top else np.arange(m)
            self._substep(slots[rows], {c: v[rows] for c, v in recs.items()}, ids[rows],
                          last[rows], out)

    def _substep(self, slots: np.ndarray, rec: dict[str, np.ndarray], ids: np.ndarray,
                 last: np.ndarray, out: list[tuple[bytes, bytes]]) -> None:
        store, pred = self.store, self.predictor
        ts = rec["ts"]
        kin, started = store.update(slots, ts, rec["x"], rec["y"], rec["speed"], rec["heading"],
                                    rec["length"], rec["width"])
        before = store.partition[slots]
        moved = np.flatnonzero((before >= 0) & (rec["part"] >= 0) & (before != rec["part"]))
        if moved.size:
            self.stats["moved_partition"] += int(moved.size)
            for r in moved.tolist():
                self._warn_once(str(ids[r]), "partition", float(ts[r]))
        store.partition[slots] = rec["part"]
        if store.flags.any():
            self._count_corrections(store.flags, ids, ts)
        self.newest_applied_ts = max(self.newest_applied_ts, float(ts.max()))
        if started.any():
            self.errors.reset(slots[started])
        for model, horizon, errs in self.errors.observe(slots, ts, kin.x, kin.y, kin.dt):
            if self.metrics is not None:
                self.metrics.observe_prediction_errors(model, horizon, errs)
        # Stateless predictors only need the last fix of each vehicle in the tick.
        if pred.state_dim == 0 and not last.all():
            rows = np.flatnonzero(last)
            if rows.size == 0:
                return
            slots, kin, ts, ids = slots[rows], kin.take(rows), ts[rows], ids[rows]
            last = np.ones(rows.size, dtype=bool)
        state = store.rec[slots] if pred.state_dim else np.zeros((slots.size, 0), np.float32)
        t0 = time.perf_counter()
        sigma = None
        # An interaction-aware predictor also sees the vehicles around each one, of the
        # same input partition (so predictions do not depend on the partitions held).
        args: tuple = (kin, state)
        if getattr(pred, "uses_neighbours", False):
            args += (neighbour_features(kin, slots, store.kin, store.partition),)
        if self._step_full is not None:
            paths, new_state, sigma = self._step_full(*args)
        else:
            paths, new_state = pred.step(*args)
        if self.metrics is not None:
            self.metrics.inference_seconds.observe(time.perf_counter() - t0)
        store.set_prediction(slots, ts, paths, new_state, sigma)
        # Anchors for the online error: at most one per vehicle per interval, on last fixes.
        due = self.errors.due(slots, ts) & last & ~kin.first
        if due.any():
            d = np.flatnonzero(due)
            model_paths = [paths[d]]
            if len(self.errors.models) > 1:
                model_paths.append(constant_velocity_paths(kin.take(d), self._offsets))
            self.errors.add(slots[d], ts[d], model_paths)
        if self.config.emit_predictions:
            self._predictions(ids, kin, paths, sigma, last, out)

    def _count_corrections(self, flags: np.ndarray, ids: np.ndarray, ts: np.ndarray) -> None:
        """Count the fixes not taken as reported by reason; log each vehicle once per reason."""
        for bit, reason in FLAG_REASONS:
            rows = np.flatnonzero(flags & bit)
            if not rows.size:
                continue
            self.stats[f"corrected_{reason}"] += int(rows.size)
            if self._corrections is not None:
                self._corrections[reason].inc(int(rows.size))
            for r in rows.tolist():
                self._warn_once(str(ids[r]), reason, float(ts[r]))

    def _warn_once(self, vehicle: str, reason: str, ts: float) -> None:
        """Log a vehicle's ``reason`` once; per reason at most _LOG_PER_WINDOW vehicles per
        _LOG_WINDOW_S of event time, then one line that the rest are only counted."""
        key = (vehicle, reason)
        if key in self._warned:
            return
        if len(self._warned) >= 10_000:  # only log-once bookkeeping
            self._warned.clear()
        self._warned.add(key)
        start, lines = self._logged.get(reason, (-math.inf, 0))
        if ts - start >= _LOG_WINDOW_S:
            start, lines = ts, 0
        self._logged[reason] = (start, lines + 1)
        if lines < _LOG_PER_WINDOW:
            log.warning("vehicle %s at ts %.3f: %s", vehicle, ts, _HINTS[reason])
        elif lines == _LOG_PER_WINDOW:
            log.warning("more vehicles with the same problem (%s) within %.0f s of event "
                        "time: counted in the done: line, not named", reason, _LOG_WINDOW_S)

    def _predictions(self, ids: np.ndarray, kin: Kinematics, paths: np.ndarray,
                     sigma: np.ndarray | None, last: np.ndarray,
                     out: list[tuple[bytes, bytes]]) -> None:
        name, step = self.predictor.name, self.spec.step_s
        pts = np.round(paths, 2)
        sig = None if sigma is None else np.round(sigma.astype(np.float64), 2)
        append = out.append
        for r in np.flatnonzero(last).tolist():
            v = ids[r]
            msg = {"vehicle_id": v, "ts": float(kin.ts[r]), "model": name, "dt": step,
                   "points": pts[r]}
            if sig is not None:
                msg["sigma"] = sig[r]
            append((v.encode(), encode_json(msg)))
        self.stats["predictions"] += int(last.sum())


def model_id(predictor: Predictor) -> str:
    """What a checkpoint's recurrent states belong to: the predictor and, for the LSTM, the
    digest of the weights that compute its state (model/weights_io.py)."""
    weights = getattr(predictor, "weights", None)
    return predictor.name if weights is None else f"{predictor.name}:{weights.state_digest()}"
