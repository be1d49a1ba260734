"""The processor's pure core: positions in, alerts and predictions out, no I/O.

Results depend only on the records and their arrival order, never on how the records were
cut into micro-batches or how fast they came. That is what makes a file replay, a Kafka
replay and a live run agree, and it rests on four rules, all on event time:

1. **Arrival checks, per record in arrival order.** A record is dropped ``future`` when it is
   more than ``max_future_s`` ahead of both the newest event time accepted so far and the
   wall clock, so one wrong clock cannot stall everyone (the wall clock only matters for
   data stamped in the future; replays of recorded data never depend on it); ``late`` when
   its tick was already released (see 2) by the watermark as it stood at that record;
   ``stale`` when it is at or before an earlier record of the same vehicle (duplicates,
   out-of-order fixes, replays after a restart); ``dense`` when the vehicle already has a
   fix in the same ``min_fix_interval_s`` bucket of event time (a flooding sender cannot
   cost more than a bounded number of sub-steps).
2. **Watermark.** ``M - allowed_lateness_s``, M the newest event time seen. Accepted records
   wait in a buffer; tick k (the event-time interval ``((k-1)*dt, k*dt]``, dt =
   ``risk_interval_s``) is released once the watermark has passed its end, after which
   nothing can be accepted for it any more.
3. **Ticks.** Released records are applied tick by tick in event-time order. Within a tick a
   vehicle with several fixes gets one sub-step per fix; each sub-step runs the kinematic
   update and one batched predictor call for the vehicles in it (never per message). Then
   risk is assessed at ``t = k*dt`` over every vehicle updated within ``stale_after_s``, and
   the episode tracker turns conflicts into alerts.
4. **Deterministic state layout.** Vehicle slots are allocated when a tick applies their
   first fix and freed by TTL eviction on tick times, so the same released sequence gives
   the same slots and the same fleet order.

Online prediction error (stream/online_error.py) is scored on the same sub-steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.errors import ConfigError
from trajstream.model.kinematics import Kinematics
from trajstream.model.predictors import Predictor, constant_velocity_paths
from trajstream.stream.checkpoint import Checkpoint, VehicleState
from trajstream.stream.codec import PositionBatch, encode_json
from trajstream.stream.config import EngineConfig
from trajstream.stream.metrics import DROP_REASONS
from trajstream.stream.online_error import OnlineError
from trajstream.stream.state import StateStore

__all__ = ["Engine", "Outputs"]

_COLS = ("ts", "x", "y", "speed", "heading", "length", "width")


@dataclass
class Outputs:
    """Messages produced by one call: (key, value) pairs ready for the sinks, in order."""

    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        self.alerts.extend(other.alerts)
        self.predictions.extend(other.predictions)


class _Pending:
    """Accepted records waiting for their tick, columnar, as a list of per-batch chunks.

    Appending is O(batch) (no concatenation with what already waits: while a slow partition
    holds the watermark, many batches can pile up); chunks are merged only on release.
    """

    _FIELDS = (*_COLS, "ids", "tick", "seq", "part")

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []
        self.size = 0
        self.min_tick: int | None = None

    def __len__(self) -> int:
        return self.size

    def append(self, batch: PositionBatch, rows: np.ndarray, tick: np.ndarray, seq: np.ndarray,
               part: np.ndarray) -> None:
        chunk = {c: getattr(batch, c)[rows] for c in _COLS}
        chunk["ids"] = batch.vehicle_id[rows]
        chunk["tick"] = tick
        chunk["seq"] = seq
        chunk["part"] = part
        self.chunks.append(chunk)
        self.size += int(tick.shape[0])
        low = int(tick.min())
        self.min_tick = low if self.min_tick is None else min(self.min_tick, low)

    def min_seq(self) -> int | None:
        return min(int(c["seq"].min()) for c in self.chunks) if self.size else None

    def max_tick(self) -> int:
        return max(int(c["tick"].max()) for c in self.chunks)

    def drop_partitions(self, parts: Collection[int]) -> None:
        """Forget the records that came from ``parts`` (revoked: the new owner re-reads)."""
        if not self.size:
            return
        wanted = np.asarray(sorted(parts), dtype=np.int64)
        chunks = []
        for c in self.chunks:
            keep = ~np.isin(c["part"], wanted)
            if keep.any():
                chunks.append({f: v[keep] for f, v in c.items()})
        self.chunks = chunks
        self.size = sum(int(c["tick"].shape[0]) for c in chunks)
        self.min_tick = min(int(c["tick"].min()) for c in chunks) if chunks else None

    def pop_until(self, k: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Remove the records of ticks <= k; returned sorted by (event time, arrival).

        The returned columns include ``part`` (the input partition, -1 when none)."""
        if self.min_tick is None or self.min_tick > k:
            out = {c: np.empty(0) for c in _COLS}
            out["part"] = np.empty(0, dtype=np.int64)
            return out, np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        if len(self.chunks) == 1:
            merged = self.chunks[0]
        else:
            merged = {f: np.concatenate([c[f] for c in self.chunks]) for f in self._FIELDS}
        sel = merged["tick"] <= k
        keep = ~sel
        rest = {f: v[keep] for f, v in merged.items()}
        self.size = int(rest["tick"].shape[0])
        self.chunks = [rest] if self.size else []
        self.min_tick = int(rest["tick"].min()) if self.size else None
        order = np.argsort(merged["ts"][sel], kind="stable")
        out = {c: merged[c][sel][order] for c in (*_COLS, "part")}
        return out, merged["ids"][sel][order], merged["tick"][sel][order]


class Engine:
    """Event-time stream core (see the module docstring for the rules).

    ``process`` takes one decoded micro-batch and returns what became final because of it;
    ``flush`` releases everything still buffered (end of input). ``seq0`` numbers the records
    of a batch (``seq0 + batch.index``) so the caller can tell, via :attr:`min_pending_seq`,
    which input records still wait in the buffer and must not be committed yet.
    """

    def __init__(
        self,
        config: EngineConfig,
        predictor: Predictor,
        metrics: Any = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        from trajstream.stream import episodes, risk

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
        # A predictor that also estimates its uncertainty (the LSTM) is stepped through
        # step_full: same paths, plus a 1-sigma per point for the predictions and the map.
        self._step_full = getattr(predictor, "step_full", None)
        self.metrics = metrics
        self._wall = wall_clock
        self._risk = risk
        self._risk_cfg = config.risk if config.risk is not None else risk.RiskConfig()
        ep_cfg = config.episodes if config.episodes is not None else episodes.EpisodeConfig()
        self._episodes = episodes
        self.tracker = episodes.EpisodeTracker(ep_cfg)
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
        self._offsets = spec.offsets_s
        self._dt = float(config.risk_interval_s)
        self._pending = _Pending()
        self._seen: dict[str, float] = {}  # newest accepted event time per vehicle
        self._next_prune = -math.inf
        self._max_ts = -math.inf  # newest event time accepted (M)
        self._part_max: dict[int, float] = {}  # the same per input partition
        self._watermark_s = -math.inf  # where the watermark stands, before lateness
        self._done: int | None = None  # last released tick
        self._next_evict = -math.inf
        self.newest_applied_ts = -math.inf  # newest event time applied to the state
        self._ticks_at_reset = 0  # stats["ticks"] when the position was last reset
        self.stats: dict[str, int] = {
            "records": 0, "accepted": 0, "stale": 0, "late": 0, "future": 0, "dense": 0,
            "ticks": 0,
            "warning": 0, "critical": 0, "evicted": 0, "predictions": 0,
        }  # fmt: skip
        self._drop_counters = None
        if metrics is not None:
            self._drop_counters = {
                r: metrics.positions_dropped.labels(reason=r) for r in DROP_REASONS
            }

    # -- public ----------------------------------------------------------------------------

    @property
    def min_pending_seq(self) -> int | None:
        """Smallest ``seq`` of a record still buffered (None when nothing waits)."""
        return self._pending.min_seq()

    @property
    def watermark_tick(self) -> int | None:
        return self._done

    def process(
        self,
        batch: PositionBatch,
        seq0: int = 0,
        *,
        partitions: np.ndarray | None = None,
        blocking: Collection[int] | None = None,
    ) -> Outputs:
        """Admit one micro-batch and release every tick the watermark now allows.

        ``partitions`` (per row of ``batch``) and ``blocking`` (partitions that still have
        records to deliver, e.g. Kafka partitions with consumer lag) let a consumer catching
        up on several partitions at once hold the watermark at the slowest of them instead
        of dropping everything the others have overtaken. Without them the input is one
        ordered stream.
        """
        n = len(batch)
        self.stats["records"] += n
        held = set(blocking) if blocking and partitions is not None else set()
        accepted = self._admit(batch, partitions, held)
        if accepted.size:
            part = (partitions[accepted] if partitions is not None
                    else np.full(accepted.size, -1, dtype=np.int64))
            self._pending.append(
                batch, accepted, self._tick_of(batch.ts[accepted]), seq0 + batch.index[accepted],
                part,
            )
        self._prune_seen()
        upto = self._tick_of_scalar(self._watermark_s - self.config.allowed_lateness_s) - 1
        return self._release(upto)

    def flush(self) -> Outputs:
        """Release every buffered record (end of input)."""
        if not len(self._pending):
            return Outputs()
        return self._release(self._pending.max_tick())

    # -- arrival ---------------------------------------------------------------------------

    def _tick_of(self, ts: np.ndarray) -> np.ndarray:
        # -inf (nothing seen yet) maps to a very early tick instead of an invalid cast
        return np.ceil(np.maximum(ts, -1e17) / self._dt).astype(np.int64)

    def _tick_of_scalar(self, ts: float) -> int:
        if not math.isfinite(ts):
            return -(2**62)
        return int(math.ceil(ts / self._dt))

    def _admit(
        self, batch: PositionBatch, partitions: np.ndarray | None, blocking: set[int]
    ) -> np.ndarray:
        """Arrival checks (future, late, stale); returns the accepted row indices."""
        cfg = self.config
        ts = batch.ts
        n = ts.shape[0]
        # future: far ahead of both the stream so far and the wall clock
        future = ts > max(self._max_ts, self._wall()) + cfg.max_future_s
        good_ts = np.where(future, -np.inf, ts)
        running = np.maximum.accumulate(good_ts) if n else good_ts
        np.maximum(running, self._max_ts, out=running)
        watermark = self._partition_watermarks(good_ts, running, partitions, blocking)
        # late: the record's tick was already released by the watermark at its arrival
        wm_tick = self._tick_of(watermark - cfg.allowed_lateness_s) - 1
        if self._done is not None:
            np.maximum(wm_tick, self._done, out=wm_tick)
        late = ~future & (self._tick_of(ts) <= wm_tick)
        if n:
            self._max_ts = max(self._max_ts, float(running[-1]))
        cand = np.flatnonzero(~future & ~late)
        stale_rows, dense_rows = self._stale(batch, cand)
        n_stale, n_dense = int(stale_rows.sum()), int(dense_rows.sum())
        accepted = cand[~(stale_rows | dense_rows)] if n_stale or n_dense else cand
        n_future, n_late = int(future.sum()), int(late.sum())
        self._count_drops(n_stale, n_late, n_future, n_dense)
        self.stats["accepted"] += int(accepted.size)
        return accepted

    def _partition_watermarks(
        self, good_ts: np.ndarray, running: np.ndarray, partitions: np.ndarray | None,
        blocking: set[int],
    ) -> np.ndarray:
        """Event time the watermark stands at for each record (before lateness).

        The newest event time seen, held back to the newest of each blocking partition (-inf
        for one not seen yet) unless that partition trails by more than
        ``max_partition_skew_s``, which bounds the records held in memory. Also sets
        ``self._watermark_s``, where it stands after the batch.
        """
        part_max = self._part_max
        n = good_ts.shape[0]
        present = np.unique(partitions).tolist() if partitions is not None and n else []
        # A partition delivering records in this batch holds them to its own order even if
        # this poll drained it (it no longer shows lag).
        holding = blocking.union(present)
        carry = {p: part_max.get(p, -math.inf) for p in holding}
        for p in present:
            top = float(good_ts[partitions == p].max())  # type: ignore[index]
            if top > part_max.get(p, -math.inf):
                part_max[p] = top
        end = max(self._max_ts, float(running[-1])) if n else self._max_ts
        w_end = end
        skew = self.config.max_partition_skew_s
        for p in blocking:
            m = part_max.get(p, -math.inf)
            if m == -math.inf or m >= end - skew:
                w_end = min(w_end, m)
        self._watermark_s = w_end
        if not holding or not n:
            return running
        wm = running.copy()
        for p in sorted(holding):
            mine = partitions == p if partitions is not None else None
            if mine is not None and mine.any():
                run_p = np.maximum.accumulate(np.where(mine, good_ts, -np.inf))
                np.maximum(run_p, carry[p], out=run_p)
            else:
                run_p = np.full(n, carry[p])
            holds = (run_p == -np.inf) | (run_p >= running - skew)
            np.minimum(wm, np.where(holds, run_p, np.inf), out=wm)
        return wm

    def _stale(self, batch: PositionBatch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``rows`` (arrival order): ``stale``, at or before an earlier fix of the same
        vehicle, and ``dense``, a second fix of the vehicle within one
        ``min_fix_interval_s`` bucket of event time (caps the sub-steps a flooding sender
        can cost)."""
        m = rows.size
        if m == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
        ids = batch.vehicle_id[rows]
        ts = batch.ts[rows]
        groups: dict[str, int] = {}
        setdefault = groups.setdefault
        gid = np.fromiter((setdefault(v, len(groups)) for v in ids), dtype=np.int64, count=m)
        names = list(groups)
        seen = self._seen.get
        carry = np.fromiter((seen(v, -math.inf) for v in names), dtype=np.float64,
                            count=len(names))
        # Exact per-vehicle running maximum via ranks: key = group * (U + 1) + rank(ts).
        uniq, inv = np.unique(np.concatenate([ts, carry]), return_inverse=True)
        width = uniq.size + 1
        r_ts, r_carry = inv[:m] + 1, inv[m:] + 1
        order = np.argsort(gid, kind="stable")
        g = gid[order]
        base = g * width
        key = base + r_ts[order]
        start = np.ones(m, dtype=bool)
        start[1:] = g[1:] != g[:-1]
        prev = np.empty(m, dtype=np.int64)
        prev[1:] = key[:-1]
        prev[start] = base[start] + r_carry[g[start]]
        prev_max = np.maximum.accumulate(prev)
        stale_sorted = key <= prev_max
        stale = np.empty(m, dtype=bool)
        stale[order] = stale_sorted
        # dense: same event-time bucket as the vehicle's previous newer-than-all fix
        step = self.config.min_fix_interval_s
        ts_sorted = ts[order]
        bucket = np.floor(ts_sorted / step)
        fresh = np.flatnonzero(~stale_sorted)
        prev_bucket = np.empty(fresh.size)
        if fresh.size:
            prev_bucket[1:] = bucket[fresh[:-1]]
            first = np.ones(fresh.size, dtype=bool)
            first[1:] = g[fresh[1:]] != g[fresh[:-1]]
            prev_bucket[first] = np.floor(carry[g[fresh[first]]] / step)
        dense_sorted = np.zeros(m, dtype=bool)
        dense_sorted[fresh] = bucket[fresh] == prev_bucket
        dense = np.empty(m, dtype=bool)
        dense[order] = dense_sorted
        # newest event time per vehicle after this batch (ranks start at 1)
        ends = np.flatnonzero(np.r_[start[1:], True])
        newest = uniq[np.maximum(key, prev_max)[ends] - base[ends] - 1]
        self._seen.update(zip([names[i] for i in g[ends].tolist()], newest.tolist(),
                              strict=True))
        return stale, dense

    def _prune_seen(self) -> None:
        if self._max_ts < self._next_prune:
            return
        horizon = self._max_ts - self.config.ttl_s
        if self._seen:
            self._seen = {v: t for v, t in self._seen.items() if t > horizon}
        self._next_prune = self._max_ts + self.config.ttl_s / 4

    def _count_drops(self, stale: int, late: int, future: int, dense: int) -> None:
        self.stats["stale"] += stale
        self.stats["late"] += late
        self.stats["future"] += future
        self.stats["dense"] += dense
        if self._drop_counters is not None:
            for reason, k in (("stale", stale), ("late", late), ("future", future),
                              ("dense", dense)):
                if k:
                    self._drop_counters[reason].inc(k)

    # -- ticks -----------------------------------------------------------------------------

    def _release(self, upto: int) -> Outputs:
        out = Outputs()
        if self._done is not None and upto <= self._done:
            return out
        recs, ids, ticks = self._pending.pop_until(upto)
        k = self._done + 1 if self._done is not None else None
        bounds_k = ticks
        i, m = 0, ticks.shape[0]
        dt = self._dt
        stale_after = self.config.stale_after_s
        while True:
            next_rec_tick = int(bounds_k[i]) if i < m else None
            if k is None:
                if next_rec_tick is None:
                    break
                k = next_rec_tick
            if k > upto:
                break
            t = k * dt
            # Skip ticks with nothing to do: no records and nobody recent enough for risk.
            if (next_rec_tick is None or next_rec_tick > k) and not (
                self.newest_applied_ts > t - stale_after
            ):
                if next_rec_tick is None:
                    k = upto + 1
                    break
                k = next_rec_tick
                continue
            j = i
            if next_rec_tick == k:
                j = int(np.searchsorted(bounds_k, k, side="right"))
                self._apply({c: v[i:j] for c, v in recs.items()}, ids[i:j], out)
            i = j
            self._evict(t)
            self._assess(t, stale_after, out)
            self.stats["ticks"] += 1
            k += 1
        self._done = upto
        if self.metrics is not None:
            self.metrics.active_vehicles.set(len(self.store))
        return out

    def _apply(self, recs: dict[str, np.ndarray], ids: np.ndarray, out: Outputs) -> None:
        """Apply one tick's records (sorted by event time): one sub-step per fix rank."""
        store = self.store
        slots, new = store.slots_for(ids)
        self.errors.ensure_capacity(store.capacity)
        if new.any():
            self.errors.reset(slots[new])
        m = slots.size
        order = np.argsort(slots, kind="stable")
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
                 last: np.ndarray, out: Outputs) -> None:
        store, pred = self.store, self.predictor
        ts = rec["ts"]
        kin, started = store.update(slots, ts, rec["x"], rec["y"], rec["speed"], rec["heading"],
                                    rec["length"], rec["width"])
        store.partition[slots] = rec["part"]
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
        if self._step_full is not None:
            paths, new_state, sigma = self._step_full(kin, state)
        else:
            paths, new_state = pred.step(kin, state)
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

    def _predictions(self, ids: np.ndarray, kin: Kinematics, paths: np.ndarray,
                     sigma: np.ndarray | None, last: np.ndarray, out: Outputs) -> None:
        name, step = self.predictor.name, self.spec.step_s
        pts = np.round(paths, 2)
        sig = None if sigma is None else np.round(sigma.astype(np.float64), 2)
        append = out.predictions.append
        for r in np.flatnonzero(last).tolist():
            v = ids[r]
            msg = {"vehicle_id": v, "ts": float(kin.ts[r]), "model": name, "dt": step,
                   "points": pts[r]}
            if sig is not None:
                msg["sigma"] = sig[r]
            append((v.encode(), encode_json(msg)))
        self.stats["predictions"] += int(last.sum())

    def _evict(self, t: float) -> None:
        if t < self._next_evict:
            return
        ids, slots = self.store.evict(t - self.config.ttl_s)
        if ids:
            self.errors.reset(slots)
            self.tracker.forget(ids)
            self.stats["evicted"] += len(ids)
        self._next_evict = t + min(1.0, self.config.ttl_s / 4)

    def _assess(self, t: float, stale_after: float, out: Outputs) -> None:
        store = self.store
        act = store.active(t - stale_after)
        kin = store.kin
        fleet = self._risk.Fleet(
            ts=store.last_ts[act], x=kin.x[act], y=kin.y[act], speed=kin.speed[act],
            heading=kin.heading[act], yaw_rate=kin.yaw_rate[act], accel=kin.accel[act],
            length=store.length[act], width=store.width[act], paths=store.path[act],
        )
        t0 = time.perf_counter()
        conflicts = self._risk.assess(t, fleet, self.spec, self._risk_cfg)
        if self.metrics is not None:
            self.metrics.risk_seconds.observe(time.perf_counter() - t0)
        # Pairs ordered by vehicle id, touching only the conflict rows (not the whole fleet).
        ids = store.ids
        pairs: list[tuple[str, str]] = []
        rows: list[tuple[int, int]] = []
        for ia, ib in zip(conflicts.a.tolist(), conflicts.b.tolist(), strict=True):
            va, vb = ids[act[ia]], ids[act[ib]]
            assert va is not None and vb is not None
            if va < vb:
                pairs.append((va, vb))
                rows.append((ia, ib))
            else:
                pairs.append((vb, va))
                rows.append((ib, ia))
        decisions = self.tracker.update(t, pairs, conflicts)
        if not decisions:
            return
        make = self._episodes.alert_message
        for d in decisions:
            ia, ib = rows[d.conflict]
            msg = make(d, fleet, ia, ib, self.spec, self.predictor.name)
            sev = msg["severity"]
            self.stats[sev] += 1
            if self.metrics is not None:
                self.metrics.alerts.labels(severity=sev).inc()
            out.alerts.append((self._episodes.alert_key(d.vehicle_a, d.vehicle_b),
                               encode_json(msg)))

    # -- checkpoints (stream/checkpoint.py) --------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """What changed since the previous call, and the event-time position.

        Taken at a commit point: everything handed to :meth:`process` so far is either
        applied (in the state) or still buffered (read again after a restart).
        """
        store, tracker = self.store, self.tracker
        slots, gone = store.take_changes()
        changed = tracker.changed_vehicles()
        if changed:
            extra = store.lookup(sorted(changed))
            slots = np.union1d(slots, extra[extra >= 0])
        ids = [store.ids[s] for s in slots.tolist()]
        eps = tracker.snapshot(ids) if changed or ids else {}
        rows, rec = store.export_rows(slots)
        parts = store.partition[slots].tolist()
        vehicles = [
            VehicleState(v, p, s, rows[i], rec[i], eps.get(v))  # type: ignore[arg-type]
            for i, (v, p, s) in enumerate(zip(ids, parts, slots.tolist(), strict=True))
        ]
        meta = {
            "done": self._done, "max_ts": self._max_ts, "part_max": dict(self._part_max),
            "next_evict": self._next_evict, "newest": self.newest_applied_ts,
            "prev_t": tracker.prev_t,
        }
        return Checkpoint(vehicles, gone, meta)

    def restore(self, vehicles: list[VehicleState], metas: dict[int, dict[str, Any]]) -> None:
        """Load states and event-time positions read back from the changelog.

        A fresh engine (new, or after :meth:`reset`) takes the released tick of the restored
        partitions (the earliest when they differ); a running one that gains partitions
        keeps its own and only adds their vehicles.
        """
        store = self.store
        # Fresh: nothing applied since start or :meth:`reset` (an empty poll before the
        # assignment may have moved the released tick to the "nothing seen" sentinel, which
        # must not survive the restore).
        fresh = self._done is None or (self.stats["ticks"] == self._ticks_at_reset
                                       and not len(store) and not len(self._pending))
        if vehicles:
            rows = np.stack([v.row for v in vehicles])
            if rows.shape[1] != store.row_width():
                raise ConfigError(
                    f"the changelog holds state of another layout ({rows.shape[1]} values "
                    f"per vehicle, this engine uses {store.row_width()}): a different "
                    f"horizon/step? Use a new --changelog-topic or --group")
            rec = np.stack([v.rec for v in vehicles])
            if rec.shape[1] != store.state_dim:
                raise ConfigError(
                    f"the changelog holds predictor state of size {rec.shape[1]}, the "
                    f"{self.predictor.name!r} predictor uses {store.state_dim}: restore "
                    f"with the same --predictor, or use a new --changelog-topic/--group")
            ids = [v.vehicle_id for v in vehicles]
            slots = store.import_rows(ids, [v.slot for v in vehicles], rows, rec)
            self.errors.ensure_capacity(store.capacity)
            self.errors.reset(slots)
            seen = self._seen
            for v, t in zip(ids, store.last_ts[slots].tolist(), strict=True):
                seen[v] = max(seen.get(v, -math.inf), t)
            self.newest_applied_ts = max(self.newest_applied_ts,
                                         float(np.nanmax(store.last_ts[slots])))
            self.tracker.restore({v.vehicle_id: v.episodes or {} for v in vehicles})
        if not metas:
            return
        # The newest event times seen ("max_ts", "part_max") are NOT restored: they describe
        # how far the previous owner had read, past the committed offsets, and the records in
        # between are read again. Restored, they would put the watermark ahead of those
        # records and drop the held-back ones as "late"; re-reading rebuilds them instead.
        for m in metas.values():
            self.newest_applied_ts = max(self.newest_applied_ts, m.get("newest", -math.inf))
        if fresh:
            done = [m for m in metas.values() if m.get("done") is not None]
            if done:
                first = min(done, key=lambda m: int(m["done"]))
                self._done = int(first["done"])
                self._next_evict = first.get("next_evict", -math.inf)
                if first.get("prev_t") is not None:
                    self.tracker.restore({}, prev_t=float(first["prev_t"]))
        if self.metrics is not None:
            self.metrics.active_vehicles.set(len(store))

    def reset(self) -> list[str]:
        """Forget every vehicle, buffered record and the event-time position (keeps the
        counters); returns the dropped ids.

        For a consumer that lost all its partitions (an eager rebalance revokes them all):
        its next assignment is then restored like a restart, the released tick taken from
        the changelog. Keeping the old clock instead would judge the re-read records against
        a watermark that had moved past the committed offsets.
        """
        store = self.store
        h = store.high
        slots = np.flatnonzero(store.used[:h])
        ids = store.drop(slots)
        if ids:
            self.errors.reset(slots)
        self.tracker = self._episodes.EpisodeTracker(self.tracker.config)
        self._pending = _Pending()
        self._seen = {}
        self._next_prune = -math.inf
        self._max_ts = -math.inf
        self._part_max = {}
        self._watermark_s = -math.inf
        self._done = None
        self._next_evict = -math.inf
        self.newest_applied_ts = -math.inf
        self._ticks_at_reset = self.stats["ticks"]
        if self.metrics is not None:
            self.metrics.active_vehicles.set(len(store))
        return ids

    def drop_partitions(self, parts: Collection[int]) -> list[str]:
        """Forget the state and buffered records of ``parts`` (revoked); returns the ids.

        Their changelog records stay: the partitions' new owner restores them.
        """
        store = self.store
        h = store.high
        wanted = np.asarray(sorted(parts), dtype=np.int64)
        slots = np.flatnonzero(store.used[:h] & np.isin(store.partition[:h], wanted))
        ids = store.drop(slots)
        if ids:
            self.errors.reset(slots)
            self.tracker.forget(ids)
            for v in ids:
                self._seen.pop(v, None)
        self._pending.drop_partitions(parts)
        for p in parts:
            self._part_max.pop(p, None)
        return ids

    def summary(self) -> dict[str, Any]:
        """Counters and the mean online prediction error so far (for logs and the demo)."""
        return {
            **self.stats,
            "vehicles": len(self.store),
            "resets": self.store.resets,
            "pending": len(self._pending),
            "error_m": self.errors.mean_m(),
        }
