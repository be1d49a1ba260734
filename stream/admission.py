"""Admission: which arriving records are used, and when a tick is complete (event time).

Per record in arrival order (rule 1 of stream/engine.py), a record is dropped ``future``
when it is more than ``max_future_s`` ahead of both the newest event time accepted so far
and the wall clock; ``late`` when its tick was already released by the watermark (see
below); ``stale`` when it is at or before an earlier record of the same vehicle;
``dense`` when the vehicle already has a fix in the same ``min_fix_interval_s`` bucket;
``ahead`` when it jumps more than ``max_clock_skew_s`` ahead of its partition's newest
accepted event time and no other vehicle corroborates the jump (a sender whose clock runs
ahead is quarantined instead of pushing the watermark past everyone else: one bad clock
must not make every other vehicle's fixes late). A jump that a second vehicle confirms
within ``max_clock_skew_s`` (traffic resuming after a gap) moves the partition on; only the
records before the confirmation are dropped. A stream with one vehicle has nobody to
disagree with.

Two event-time positions decide when a tick is out:

- **Evidence and cadence** (when ticks are released). Each accepted record belongs to its
  tick, unless it arrives behind the newest event time of its own input partition by more
  than ``tick_lateness_s`` (J): it then belongs to the tick of that partition's newest
  record minus J; a record its vehicle's cadence did not expect belongs to the tick after
  (stream/cadence.py). So tick k is complete once every input partition (those seen, and
  those that still have records to deliver) has delivered a record later than ``k*dt +
  J``, or has nobody left who may still report in tick k by their cadence; it is released
  then, without waiting for the watermark. Which tick a record belongs to depends only on
  its own partition's arrival order: never on how partitions interleave, how the input
  was cut into batches, how fast it came or when a tick was released.
- **Watermark** (what is too late, and the fallback). ``M - allowed_lateness_s``, M the
  newest event time seen, held back to the newest event time of each input partition that
  still has records to deliver (unless it trails by more than ``max_partition_skew_s``). A
  record is dropped ``late`` when the watermark had released its tick before its batch, or
  when its tick ends more than ``allowed_lateness_s`` before the newest event time of its
  own partition up to it (of the whole input, for a partition trailing by more than
  ``max_partition_skew_s``): within a batch no other partition moves that line, so which
  records are late depends on each partition's order alone (a backlog drained at any pace,
  partitions fetched in any order, drops the same ones). A tick
  is released by the watermark at the latest, so a partition that stopped delivering holds
  the others for ``allowed_lateness_s`` and no longer: it is then left out of the evidence
  until it delivers again (its first records, if behind the released tick, count at the
  next one).

Accepted records wait here until their tick is released; :meth:`Admission.release` hands
them out in event-time order. Pure: no I/O, no model, only the wall clock for ``future``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from trajstream.stream.cadence import NO_TICK, Cadence, tick_of
from trajstream.stream.codec import PositionBatch
from trajstream.stream.config import EngineConfig
from trajstream.stream.metrics import DROP_REASONS, RELEASE_RULES

__all__ = ["NO_TICK", "Admission", "Released"]

log = logging.getLogger("trajstream.stream.admission")

_COLS = ("ts", "x", "y", "speed", "heading", "length", "width")
# Fixes of one vehicle held ahead of its partition at most (the oldest is dropped 'ahead'):
# a partition with a single sender running ahead would otherwise hold its fixes forever.
_MAX_HELD = 100


@dataclass(frozen=True)
class Released:
    """Records of the released ticks, sorted by (tick, event time, arrival).

    ``recs`` holds the columns of ``_COLS`` plus ``part`` (input partition, -1 when none);
    ``ticks`` each record's tick. Ticks ``first`` (None: nothing released before, start at
    the first record's tick) to ``upto`` are complete.
    """

    recs: dict[str, np.ndarray]
    ids: np.ndarray
    ticks: np.ndarray
    first: int | None
    upto: int


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

    def min_seq_by_partition(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for c in self.chunks:
            parts, seq = c["part"], c["seq"]
            if not parts.size:
                continue
            order = np.lexsort((seq, parts))
            ps = parts[order]
            first = np.r_[True, ps[1:] != ps[:-1]]
            for p, s in zip(ps[first].tolist(), seq[order][first].tolist(), strict=True):
                if s < out.get(p, s + 1):
                    out[p] = s
        return out

    def min_own_tick(self, dt: float) -> int | None:
        """The smallest tick a buffered record's event time falls in (None: none)."""
        if not self.size:
            return None
        return min(int(np.ceil(np.maximum(c["ts"], -1e17) / dt).min()) for c in self.chunks
                   if c["ts"].size)

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
        """Remove the records of ticks <= k; returned sorted by tick, event time, input
        partition and, last, arrival (a partition's own order): records of one instant
        from several partitions (fleets on synchronised clocks) come out in the same order
        however the polls interleaved the partitions, and that order decides the vehicle
        stage's sub-steps.

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
        order = np.lexsort((merged["seq"][sel], merged["part"][sel], merged["ts"][sel],
                            merged["tick"][sel]))
        out = {c: merged[c][sel][order] for c in (*_COLS, "part")}
        return out, merged["ids"][sel][order], merged["tick"][sel][order]


@dataclass
class _Held:
    """A row that jumped ahead of its partition, waiting for the next record to judge it."""

    vehicle: str
    ts: float
    part: int
    seq: int
    row: int  # row in the batch being admitted, -1 once that batch is done
    index: int  # the row's input index (batch.index) in that batch
    cols: dict[str, float]

    @staticmethod
    def of(batch: PositionBatch, i: int, ts: float, part: int, seq0: int) -> _Held:
        index = int(batch.index[i])
        return _Held(str(batch.vehicle_id[i]), ts, part, seq0 + index, i, index,
                     {c: float(getattr(batch, c)[i]) for c in _COLS})

    def value(self) -> bytes:
        """The record as JSON (for a dead letter once its batch's raw bytes are gone)."""
        rec = {"vehicle_id": self.vehicle, **{c: v for c, v in self.cols.items()
                                               if not math.isnan(v)}}
        return json.dumps(rec).encode()


class Admission:
    """Arrival checks, the per-partition watermark and the buffer of accepted records."""

    def __init__(self, config: EngineConfig, metrics: Any = None, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._wall = wall_clock
        self._dt = float(config.tick_s)
        self.stats: dict[str, int] = {
            "records": 0, "accepted": 0, "stale": 0, "late": 0, "future": 0, "dense": 0,
            "ahead": 0,
        }  # fmt: skip
        # Records the last admitted batch dropped late, future or ahead: (row of the batch,
        # reason, detail, None), or (-1, ..., the record as JSON) for a row held from an
        # earlier batch. The processor dead-letters them (stale and dense are routine).
        self.dropped: list[tuple[int, str, str, bytes | None]] = []
        self._drop_counters = None
        self._release_counters = None
        if metrics is not None:
            self._drop_counters = {
                r: metrics.positions_dropped.labels(reason=r) for r in DROP_REASONS
            }
            self._release_counters = {
                r: metrics.ticks_released.labels(reason=r) for r in RELEASE_RULES
            }
        self.reset()

    def reset(self) -> None:
        """Forget every buffered record and the event-time position (keeps the counters)."""
        self._pending = _Pending()
        self._seen: dict[str, float] = {}  # newest accepted event time per vehicle
        self._cadence = Cadence(self._dt, self._tick_lateness())
        self._next_prune = -math.inf
        self._max_ts = -math.inf  # newest event time accepted (M)
        self._part_max: dict[int, float] = {}  # the same per input partition
        self._given_up: set[int] = set()  # partitions said to trail beyond the skew limit
        self._watermark_s = -math.inf  # where the watermark stands, before lateness
        self._done: int | None = None  # last released tick
        self._release_rule: str | None = None  # what completed the ticks of the last admit
        self._late_upto: int | None = None  # last tick the watermark released (later: late)
        self._holding: set[int] = set()  # partitions the watermark waits for (last batch)
        self._held: dict[int, list[_Held]] = {}  # rows ahead of their partition, by partition
        self._quarantined: set[str] = set()  # logged once each

    # -- public ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Records waiting for their tick."""
        return len(self._pending)

    @property
    def done(self) -> int | None:
        """The last released tick (None before the first)."""
        return self._done

    @property
    def seen(self) -> int:
        """Vehicles whose newest event time is remembered (for stale checks)."""
        return len(self._seen)

    @property
    def min_pending_seq(self) -> int | None:
        seqs = [h.seq for held in self._held.values() for h in held]
        low = self._pending.min_seq()
        if low is not None:
            seqs.append(low)
        return min(seqs) if seqs else None

    def pending_by_partition(self) -> dict[int, int]:
        """Per input partition, the smallest ``seq`` of its records still waiting (buffered
        or held ahead); a partition not listed has nothing waiting.

        Offsets are committed per partition up to these: with the smallest ``seq`` overall,
        one partition's record held back by a slower partition would hold back every
        partition's offsets, and after a restore their records applied since would be read
        again (thousands of them when partitions progress unevenly)."""
        out = self._pending.min_seq_by_partition()
        for held in self._held.values():
            for h in held:
                out[h.part] = min(out.get(h.part, h.seq), h.seq)
        return out

    def admit(self, batch: PositionBatch, seq0: int, partitions: np.ndarray | None,
              blocking: Collection[int] | None) -> int:
        """Check and buffer one micro-batch; returns the last complete tick (on evidence, or
        by the watermark at the latest)."""
        self.stats["records"] += len(batch)
        held = set(blocking) if blocking and partitions is not None else set()
        accepted, ticks = self._admit(batch, partitions, held, seq0)
        if accepted.size:
            part = (partitions[accepted] if partitions is not None
                    else np.full(accepted.size, -1, dtype=np.int64))
            self._pending.append(batch, accepted, ticks, seq0 + batch.index[accepted], part)
        self._prune_seen()
        by_watermark = self._tick_of_scalar(
            self._watermark_s - self.config.allowed_lateness_s) - 1
        if self._late_upto is None or by_watermark > self._late_upto:
            self._late_upto = by_watermark
        through, self._release_rule = self._complete_through(held, partitions)
        if by_watermark > through:
            self._release_rule = "watermark"
        return max(by_watermark, through)

    def finish(self) -> None:
        """End of input: rows still held ahead were never contradicted; they are admitted."""
        held, self._held = self._held, {}
        rows = [h for hs in held.values() for h in hs]
        if rows:
            self._admit_held(rows)

    def flush_bound(self) -> int | None:
        """The last tick holding a buffered record (None when nothing waits)."""
        return self._pending.max_tick() if len(self._pending) else None

    def release(self, upto: int) -> Released | None:
        """Take the records of ticks up to ``upto`` (None when those ticks are already out,
        or when no watermark exists yet: then no tick is released, so a checkpoint never
        carries a released tick from before the first record)."""
        if upto <= NO_TICK or (self._done is not None and upto <= self._done):
            return None
        recs, ids, ticks = self._pending.pop_until(upto)
        first = self._done + 1 if self._done is not None else None
        if first is not None and self._release_counters is not None and self._release_rule:
            self._release_counters[self._release_rule].inc(upto - first + 1)
        self._release_rule = None  # counted once; the end of input is not a rule
        self._done = upto
        return Released(recs, ids, ticks, first, upto)

    def drop_partitions(self, parts: Collection[int], vehicle_ids: Collection[str]) -> None:
        """Forget the buffered records of ``parts`` and the vehicles that came from them."""
        for v in vehicle_ids:
            self._seen.pop(v, None)
        gone = set(vehicle_ids)
        self._cadence.forget(lambda v: v not in gone)
        self._pending.drop_partitions(parts)
        self._cadence.drop_partitions(parts)
        for p in parts:
            self._part_max.pop(p, None)
            self._held.pop(p, None)

    def remember(self, vehicle_ids: Collection[str], last_ts: Collection[float],
                 prev_ts: Collection[float], partitions: Collection[int]) -> None:
        """Restored vehicles: a record at or before their last event time is stale, and
        their next fix is due as their last two fixes say (``prev_ts`` NaN: one fix)."""
        seen = self._seen
        for v, t in zip(vehicle_ids, last_ts, strict=True):
            seen[v] = max(seen.get(v, -math.inf), t)
        self._cadence.remember(vehicle_ids, prev_ts, last_ts, partitions)

    def meta(self) -> dict[str, Any]:
        """The event-time position for a changelog. ``late_upto`` stays below the own tick
        of every record still buffered: those are read again after a restart and must be
        used again, not dropped late by a watermark that had passed them while they waited
        for a later tick."""
        late = self._late_upto
        low = self._pending.min_own_tick(self._dt)
        if late is not None and low is not None:
            late = min(late, low - 1)
        return {"done": self._done, "late_upto": late, "max_ts": self._max_ts,
                "part_max": dict(self._part_max)}

    def resume(self, done: int, late_upto: int | None = None) -> None:
        """Continue after tick ``done`` (restored from a changelog); records of ticks up to
        ``late_upto`` (default ``done``: a changelog written before the two were told apart)
        are late, those of later released ticks count at the next one."""
        self._done = done
        self._late_upto = done if late_upto is None else min(late_upto, done)

    # -- arrival ---------------------------------------------------------------------------

    def _tick_of(self, ts: np.ndarray) -> np.ndarray:
        return tick_of(ts, self._dt)

    def _tick_of_scalar(self, ts: float) -> int:
        if not math.isfinite(ts):
            return NO_TICK
        return int(math.ceil(ts / self._dt))

    def _tick_lateness(self) -> float:
        return min(self.config.tick_lateness_s, self.config.allowed_lateness_s)

    def _complete_through(self, blocking: set[int],
                          partitions: np.ndarray | None) -> tuple[int, str]:
        """The last tick every input partition is complete through: it has delivered a
        record ``tick_lateness_s`` past the tick, or every vehicle that may still report in
        it by its cadence has (stream/cadence.py). That holds for the partitions seen and
        those with records still to deliver (one not seen yet holds everything). A partition
        that neither has records to deliver nor kept up with the watermark (it trails the
        newest event time by more than ``allowed_lateness_s``) has stopped delivering and
        is left out: the watermark has released past it. With the tick, the rule that
        completed it (``cadence`` when the evidence alone would not have)."""
        if partitions is None and not self._part_max:
            tops = {-1: self._max_ts}
        else:
            for p in blocking:
                if p not in self._part_max:
                    return NO_TICK, "evidence"
            idle_before = self._max_ts - self.config.allowed_lateness_s
            tops = {p: top for p, top in self._part_max.items()
                    if p in blocking or p in self._holding or top >= idle_before}
        if not tops or not all(math.isfinite(t) for t in tops.values()):
            return NO_TICK, "evidence"
        j = self._tick_lateness()
        evidence = {p: self._tick_of_scalar(top - j) - 1 for p, top in tops.items()}
        done = dict(evidence)
        if self.config.release_on_cadence:
            # (rows held ahead of a partition join at their own ticks once confirmed)
            steady = {p: t for p, t in tops.items() if not self._held.get(p)}
            for p, k in self._cadence.complete(steady).items():
                done[p] = max(done[p], k)
        through = min(done.values())
        return through, "cadence" if through > min(evidence.values()) else "evidence"

    def _admit(
        self, batch: PositionBatch, partitions: np.ndarray | None, blocking: set[int],
        seq0: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Arrival checks (future, late, stale); returns the accepted row indices and the
        tick each one belongs to (see the module docstring)."""
        cfg = self.config
        ts = batch.ts
        n = ts.shape[0]
        # future: far ahead of both the stream so far and the wall clock
        future = ts > max(self._max_ts, self._wall()) + cfg.max_future_s
        good_ts = np.where(future, -np.inf, ts)
        self.dropped = []
        ahead = self._ahead(batch, good_ts, partitions, seq0)
        if ahead is not None:
            good_ts[ahead] = -np.inf
        running = np.maximum.accumulate(good_ts) if n else good_ts
        np.maximum(running, self._max_ts, out=running)
        front = self._partition_fronts(good_ts, running, partitions, blocking)
        # late: the record's tick was already released by the watermark, as it stood before
        # the batch or as the record's own partition moves it (never by another partition's
        # pace within the batch: that would depend on how the partitions interleave), unless
        # the partition trails by more than the skew limit (then it holds nothing)
        trailing = front < running - cfg.max_partition_skew_s
        line = np.where(trailing, running, front)
        wm_tick = self._tick_of(line - cfg.allowed_lateness_s) - 1
        if self._late_upto is not None:
            np.maximum(wm_tick, self._late_upto, out=wm_tick)
        own_tick = self._tick_of(ts)
        late = ~future & (own_tick <= wm_tick)
        if n:
            self._max_ts = max(self._max_ts, float(running[-1]))
        if ahead is not None:
            late &= ~ahead
        dropped = future | late if ahead is None else future | late | ahead
        cand = np.flatnonzero(~dropped)
        stale_rows, dense_rows = self._stale(batch, cand)
        n_stale, n_dense = int(stale_rows.sum()), int(dense_rows.sum())
        accepted = cand[~(stale_rows | dense_rows)] if n_stale or n_dense else cand
        n_future, n_late = int(future.sum()), int(late.sum())
        self._count_drops(n_stale, n_late, n_future, n_dense)
        self.stats["accepted"] += int(accepted.size)
        if n_future or n_late:
            self._explain(batch, future, late, late & trailing, partitions)
        # the tick each accepted record belongs to: its own when its vehicle's cadence
        # expected it (or its partition's newest minus J, when it arrived further behind
        # than that), else the tick after its partition's newest (stream/cadence.py)
        parts = (partitions[accepted] if partitions is not None
                 else np.full(accepted.size, -1, dtype=np.int64))
        ticks = self._cadence.assign(batch.vehicle_id[accepted], ts[accepted],
                                     own_tick[accepted], front[accepted], parts)
        if self._done is not None:
            np.maximum(ticks, self._done + 1, out=ticks)
        return accepted, ticks

    def _ahead(self, batch: PositionBatch, good_ts: np.ndarray, partitions: np.ndarray | None,
               seq0: int) -> np.ndarray | None:
        """Rows not to admit now (None: none): held or quarantined for running ahead.

        In arrival order per partition, a row jumping more than ``max_clock_skew_s`` past the
        newest event time accepted there is held until another vehicle's record decides
        (the vehicle's own further fixes, as far ahead, are held with it, up to
        ``_MAX_HELD``): a vehicle at least as far on confirms the jump (traffic resuming
        after a gap, a feed whose fixes come in whole seconds) and the held rows are
        admitted with it; anything else means this vehicle's clock runs ahead, and the held
        rows are dropped ``ahead``. A partition with no other vehicle has nobody to disagree
        with. Held rows of earlier batches that are confirmed are appended to the buffer
        here."""
        skew = self.config.max_clock_skew_s
        n = good_ts.shape[0]
        parts = partitions if partitions is not None else np.full(n, -1, dtype=np.int64)
        if not n:
            return None
        if not self._held:  # fast path: no row jumps past its partition's running maximum
            jumps = False
            for p in np.unique(parts).tolist():
                mine = parts == p
                top = self._part_top(p)
                run = np.maximum.accumulate(np.where(mine, good_ts, -np.inf))
                prev = np.empty(n)
                prev[0] = top
                np.maximum(run[:-1], top, out=prev[1:])
                if (mine & np.isfinite(prev) & (good_ts > prev + skew)).any():
                    jumps = True
                    break
            if not jumps:
                return None
        out = np.zeros(n, dtype=bool)
        tops: dict[int, float] = {}
        ids = batch.vehicle_id
        others = set(self._seen) if len(self._seen) < 3 else None  # None: several vehicles
        earlier: list[_Held] = []  # confirmed rows of earlier batches
        for i in range(n):
            t = float(good_ts[i])
            if t == -math.inf:
                continue
            p = int(parts[i])
            v = str(ids[i])
            if p not in tops:
                tops[p] = self._part_top(p)
            held = self._held.get(p)
            confirmed = False
            if held and held[0].vehicle == v and t > tops[p] + skew:
                # the held vehicle's own next fix, still ahead: it waits with the others
                # (its first fixes after a gap may all come before anyone else's)
                out[i] = True
                held.append(_Held.of(batch, i, t, p, seq0))
                if len(held) > _MAX_HELD:
                    self._drop_held(held.pop(0))
                continue
            if held:
                for h in held:
                    if h.vehicle != v and t >= h.ts - skew:
                        confirmed = True
                        tops[p] = max(tops[p], h.ts)
                        if h.row >= 0:
                            out[h.row] = False
                        else:
                            earlier.append(h)
                    else:
                        self._drop_held(h)
                del self._held[p]
            top = tops[p]
            if confirmed or top == -math.inf or t <= top + skew or (
                    others is not None and others <= {v}):
                if t > top:
                    tops[p] = t
                if others is not None:
                    others.add(v)
                    if len(others) >= 3:
                        others = None
                continue
            out[i] = True
            self._held.setdefault(p, []).append(_Held.of(batch, i, t, p, seq0))
        # rows still held now belong to no batch: they are judged by later records
        for held in self._held.values():
            for h in held:
                h.row = -1
        if earlier:
            self._admit_held(earlier)
        return out

    def _drop_held(self, h: _Held) -> None:
        """A held row nobody confirmed: its vehicle's clock runs ahead."""
        self._count_drops(0, 0, 0, 0, 1)
        detail = (f"vehicle {h.vehicle}: ts {h.ts:.3f} runs more than "
                  f"{self.config.max_clock_skew_s:g} s ahead of its partition")
        self.dropped.append((h.index, "ahead", detail, None) if h.row >= 0
                            else (-1, "ahead", detail, h.value()))
        if h.vehicle not in self._quarantined:
            self._quarantined.add(h.vehicle)
            log.warning("vehicle %s quarantined: its clock runs ahead of the other vehicles "
                        "(ts %.3f, more than %g s past the newest accepted); its fixes are "
                        "dropped as 'ahead'", h.vehicle, h.ts, self.config.max_clock_skew_s)

    def _admit_held(self, rows: list[_Held]) -> None:
        """Confirmed rows of earlier batches join the buffer, checked stale and dense like
        any other (a vehicle's held fixes need not be in order)."""
        cols = {c: np.array([h.cols[c] for h in rows]) for c in _COLS}
        batch = PositionBatch(vehicle_id=np.array([h.vehicle for h in rows], dtype=object),
                              index=np.arange(len(rows), dtype=np.int64), **cols)
        stale, dense = self._stale(batch, np.arange(len(rows)))
        self._count_drops(int(stale.sum()), 0, 0, int(dense.sum()))
        idx = np.flatnonzero(~(stale | dense))
        if idx.size:
            ts = batch.ts[idx]  # the rows are ahead of their partitions: each its own front
            parts = np.array([rows[i].part for i in idx], dtype=np.int64)
            ticks = self._cadence.assign(batch.vehicle_id[idx], ts, self._tick_of(ts), ts, parts)
            if self._done is not None:
                np.maximum(ticks, self._done + 1, out=ticks)
            self._pending.append(batch, idx, ticks,
                                 np.array([rows[i].seq for i in idx], dtype=np.int64), parts)
            self.stats["accepted"] += int(idx.size)
        for h in rows:
            if h.part == -1:
                self._max_ts = max(self._max_ts, h.ts)
            else:
                self._part_max[h.part] = max(self._part_max.get(h.part, -math.inf), h.ts)

    def _part_top(self, p: int) -> float:
        """Newest accepted event time of partition ``p`` (-1: the only stream)."""
        if p == -1:
            return self._max_ts
        return self._part_max.get(p, -math.inf)

    def _explain(self, batch: PositionBatch, future: np.ndarray, late: np.ndarray,
                 given_up: np.ndarray, partitions: np.ndarray | None) -> None:
        """Add the late and future rows to :attr:`dropped` (row, reason, detail, None); say
        once per partition when it trails too far to be waited for (``given_up``)."""
        out = self.dropped
        ts, index = batch.ts, batch.index
        skew = self.config.max_partition_skew_s
        for i in np.flatnonzero(future).tolist():
            out.append((int(index[i]), "future", f"ts {ts[i]:.3f} more than "
                        f"{self.config.max_future_s:g} s ahead of the stream and the clock",
                        None))
        for i in np.flatnonzero(late).tolist():
            why = (f": its partition trails the stream by more than {skew:g} s "
                   "(--max-partition-skew-s)" if given_up[i] else "")
            out.append((int(index[i]), "late", f"ts {ts[i]:.3f} behind the watermark{why}",
                        None))
        if partitions is not None and given_up.any():
            for p in np.unique(partitions[given_up]).tolist():
                if p not in self._given_up:
                    self._given_up.add(p)
                    log.warning(
                        "input partition %d trails the newest event time by more than "
                        "--max-partition-skew-s (%g s): its fixes behind the watermark are "
                        "dropped late; to catch up a backlog spanning longer, raise it", p, skew)

    def _partition_fronts(
        self, good_ts: np.ndarray, running: np.ndarray, partitions: np.ndarray | None,
        blocking: set[int],
    ) -> np.ndarray:
        """The newest event time of each record's own partition up to it (the record
        included; the whole stream's without partitions).

        Also moves the watermark (``self._watermark_s``, before lateness) to where it stands
        after the batch: the newest event time seen, held back to the newest of each blocking
        partition (-inf for one not seen yet) unless that partition trails by more than
        ``max_partition_skew_s``, which bounds the records held in memory.
        """
        part_max = self._part_max
        n = good_ts.shape[0]
        present = np.unique(partitions).tolist() if partitions is not None and n else []
        # A partition delivering records in this batch holds them to its own order even if
        # this poll drained it (it no longer shows lag).
        self._holding = blocking.union(present)
        carry = {p: part_max.get(p, -math.inf) for p in present}
        end = max(self._max_ts, float(running[-1])) if n else self._max_ts
        front = running
        if present:
            front = running.copy()
            for p in present:
                mine = partitions == p  # type: ignore[operator]
                run_p = np.maximum.accumulate(good_ts[mine])
                np.maximum(run_p, carry[p], out=run_p)
                front[mine] = run_p
                if run_p[-1] > carry[p]:
                    part_max[p] = float(run_p[-1])
        w_end = end
        skew = self.config.max_partition_skew_s
        for p in blocking:
            m = part_max.get(p, -math.inf)
            if m == -math.inf or m >= end - skew:
                w_end = min(w_end, m)
        self._watermark_s = w_end
        return front

    def _stale(self, batch: PositionBatch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``rows`` (arrival order): ``stale``, at or before an earlier fix of the same
        vehicle, and ``dense``, a second fix of the vehicle within one
        ``min_fix_interval_s`` bucket of event time (caps the sub-steps a flooding sender
        can cost)."""
        m = rows.size
        if m == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
        ids = batch.vehicle_id[rows].tolist()
        ts = batch.ts[rows]
        # vehicles numbered in order of first appearance (dict calls mapped in C)
        names = list(dict.fromkeys(ids))
        number = dict(zip(names, range(len(names)), strict=True))
        gid = np.fromiter(map(number.__getitem__, ids), dtype=np.int64, count=m)
        carry = np.fromiter(map(self._seen.get, names, repeat(-math.inf)), dtype=np.float64,
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
        # (g[ends] is 0, 1, ... : one end per vehicle, in the order of names)
        self._seen.update(zip(names, newest.tolist(), strict=True))
        return stale, dense

    def _prune_seen(self) -> None:
        if self._max_ts < self._next_prune:
            return
        horizon = self._max_ts - self.config.ttl_s
        if self._seen:
            self._seen = {v: t for v, t in self._seen.items() if t > horizon}
        if len(self._cadence) > len(self._seen):
            self._cadence.forget(self._seen.__contains__)
        if len(self._quarantined) > 10_000:  # only log-once bookkeeping
            self._quarantined.clear()
        self._next_prune = self._max_ts + self.config.ttl_s / 4

    def _count_drops(self, stale: int, late: int, future: int, dense: int,
                     ahead: int = 0) -> None:
        self.stats["stale"] += stale
        self.stats["late"] += late
        self.stats["future"] += future
        self.stats["dense"] += dense
        self.stats["ahead"] += ahead
        if self._drop_counters is not None:
            for reason, k in (("stale", stale), ("late", late), ("future", future),
                              ("dense", dense), ("ahead", ahead)):
                if k:
                    self._drop_counters[reason].inc(k)
