"""The risk stage (``trajstream process --stage risk``): tile-keyed, alerts from the internal
topic the predict stage writes (stream/predict_stage.py, stream/internal.py).

A risk process owns some partitions of the internal topic, hence some tiles, and gets every
vehicle within the halo of them. Per tick it merges the records of its partitions (a vehicle
sent twice, by a replay or through two tiles of one partition, counts once), assesses risk
over all of them with the same conflict stage a single process runs (stream/conflicts.py),
tracks the episodes of every pair it sees, and publishes the alerts of the pairs it owns (the
partition of the tile holding the pair's midpoint, stream/tiles.py): each pair is alerted
by exactly one partition. Like the single engine it assesses the whole fleet only every
``risk_interval_s``, and at the ticks between only the vehicles its episode tracker watches
(stream/episodes.py), out of the rows it was sent.

Event time: tick k is complete once every input partition of the positions topic reported
(progress records) that it released tick k, on every owned partition; ticks are assessed
in order, each exactly once. Records of a tick already assessed are dropped ``late``
(replays of a restarted predict process). State for the changelog (stream/changelog.py):
one record per owned partition with its released tick, the progress seen before the
committed offsets, the episodes of the pairs it owns, and those of the pairs near its tiles
(``near``): a pair's midpoint moves, and the process its next owner restores must know an
episode that began before that process did. No I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.stream import internal
from trajstream.stream.admission import NO_TICK
from trajstream.stream.allocator import keep_temporaries_in_heap
from trajstream.stream.checkpoint import Checkpoint, VehicleState, restored_tick
from trajstream.stream.codec import CodecConfig, Rejection
from trajstream.stream.config import EngineConfig
from trajstream.stream.conflicts import ConflictStage, PredictedTick, TickResult
from trajstream.stream.engine import Outputs
from trajstream.stream.metrics import DROP_REASONS
from trajstream.stream.risk import Fleet
from trajstream.stream.tiles import TileGrid

__all__ = ["RiskEngine"]

# pair -> its state as the episode tracker sets it (None: drop the pair)
_Pairs = dict[tuple[str, str], dict[str, Any] | None]

log = logging.getLogger("trajstream.stream.risk_stage")


@dataclass
class InternalBatch:
    """Decoded internal records; ``index`` maps them to the polled records."""

    records: list[internal.TickRows | internal.Progress]
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ts(self) -> np.ndarray:
        """Per record, for the loop's cutting by event time: one cut (a risk call's work is
        bounded by its records already)."""
        return np.zeros(len(self.records))

    def take(self, rows: slice) -> InternalBatch:
        return InternalBatch(self.records[rows], self.index[rows])


@dataclass
class _Tick:
    rows: dict[str, tuple[PredictedTick, int]] = field(default_factory=dict)  # id -> (tick, row)
    min_seq: int | None = None


class RiskEngine:
    """Engine-shaped (``process``/``flush``/``checkpoint``/``restore``) so the micro-batch
    loop of stream/app.py runs it like the single-process engine."""

    def __init__(self, config: EngineConfig, grid: TileGrid, metrics: Any = None) -> None:
        keep_temporaries_in_heap()  # see stream/allocator.py
        self.config = config
        self.spec = config.spec
        self.grid = grid
        self.metrics = metrics
        self.conflicts = ConflictStage(self.spec, "?", config.risk, config.episodes, metrics)
        self._dt = float(config.tick_s)
        self._per_risk = config.ticks_per_risk
        # the single engine's counters (the loop's summary line reads them), drops by reason
        self.stats: dict[str, int] = {"records": 0, "accepted": 0, "ticks": 0,
                                      **dict.fromkeys(DROP_REASONS, 0)}
        self._fresh_stats = 0
        self.reset()

    def reset(self) -> list[str]:
        """Forget everything but the counters (all partitions revoked)."""
        self.conflicts.reset()
        self._ticks: dict[int, _Tick] = {}
        self._done: int | None = None
        self._progress: dict[int, dict[int, int]] = {}  # risk partition -> input p -> done
        self._inputs = 0
        self._events: list[tuple[int, int, int, int]] = []  # (seq, q, p, done) uncommitted
        self._committed: dict[int, dict[int, int]] = {}  # progress before committed offsets
        self._owners: dict[tuple[str, str], int] = {}  # pair -> owning partition, last seen
        # pair -> the other partitions with a tile within the halo of its midpoint, last seen
        self._near: dict[tuple[str, str], tuple[int, ...]] = {}
        # partition -> (tick, its pairs' states then, the near pairs'): restored ahead of the
        # released tick
        self._hold: dict[int, tuple[int, _Pairs, _Pairs]] = {}
        self.newest_applied_ts = -math.inf
        self._vehicles = 0
        self._tick_k = 0
        self._fleet = _empty_tick(self.spec.points)[1]
        self._fresh_stats = self.stats["ticks"]
        return []

    def __len__(self) -> int:
        """Vehicles in the latest assessed tick."""
        return self._vehicles

    # -- the loop's interface ------------------------------------------------------------------

    @staticmethod
    def decode_records(keys: Sequence[bytes | None] | None, values: Sequence[bytes | None],
                       codec: CodecConfig) -> tuple[InternalBatch, list[Rejection]]:
        recs: list[internal.TickRows | internal.Progress] = []
        index: list[int] = []
        rejected: list[Rejection] = []
        for i, v in enumerate(values):
            try:
                if v is None:
                    raise ValueError("empty record")
                recs.append(internal.decode(v))
                index.append(i)
            except (ValueError, KeyError, TypeError) as exc:
                rejected.append(Rejection(i, "wrong_type", f"internal record: {exc}"))
        return InternalBatch(recs, np.asarray(index, dtype=np.int64)), rejected

    @property
    def min_pending_seq(self) -> int | None:
        seqs = [t.min_seq for t in self._ticks.values() if t.min_seq is not None]
        return min(seqs) if seqs else None

    @property
    def watermark_tick(self) -> int | None:
        return self._done

    def assign(self, partitions: Collection[int]) -> None:
        """Partitions assigned: no tick is complete before each of them reported."""
        for q in partitions:
            self._progress.setdefault(q, {})

    def process(self, batch: Any, seq0: int = 0, *,
                partitions: np.ndarray | None = None,
                blocking: Collection[int] | None = None) -> Outputs:
        """Take the records of one poll (an :class:`InternalBatch`; an empty batch of any
        kind), then assess every tick now complete."""
        n = len(batch)
        records = batch.records if n else []
        parts = (partitions if partitions is not None and n
                 else np.zeros(n, dtype=np.int64)).tolist()
        seqs = (seq0 + batch.index).tolist() if n else []
        self.stats["records"] += n
        for rec, q, seq in zip(records, parts, seqs, strict=True):
            self._progress.setdefault(q, {})
            if isinstance(rec, internal.Progress):
                mine = self._progress[q]
                if rec.done > mine.get(rec.partition, -(2**62)):
                    mine[rec.partition] = rec.done
                self._inputs = max(self._inputs, rec.inputs)
                self._events.append((seq, q, rec.partition, rec.done))
                self.stats["accepted"] += 1
                continue
            if self._done is not None and rec.k <= self._done:
                self.stats["late"] += 1  # a replay of a tick already assessed
                continue
            self.conflicts.model = rec.model
            if rec.tile is not None and rec.tile != (self.grid.tile_m, self.grid.halo_m):
                self._follow(*rec.tile)
            slot = self._ticks.setdefault(rec.k, _Tick())
            for r, v in enumerate(rec.tick.ids.tolist()):
                slot.rows.setdefault(v, (rec.tick, r))
            slot.min_seq = seq if slot.min_seq is None else min(slot.min_seq, seq)
            self.stats["accepted"] += 1
        upto = self._complete()
        return Outputs() if upto is None else self._release(upto)

    def flush(self) -> Outputs:
        """End of input: assess every buffered tick."""
        if not self._ticks:
            return Outputs()
        return self._release(max(self._ticks))

    # -- ticks ---------------------------------------------------------------------------------

    def _complete(self) -> int | None:
        """The last tick every input partition reported on every partition seen."""
        if not self._progress or not self._inputs:
            return None
        low: int | None = None
        for mine in self._progress.values():
            if len(mine) < self._inputs:
                return None
            m = min(mine.values())
            low = m if low is None else min(low, m)
        return low

    def _release(self, upto: int) -> Outputs:
        out = Outputs()
        if self._done is not None and upto <= self._done:
            return out
        ticks = sorted(k for k in self._ticks if k <= upto)
        k = self._done + 1 if self._done is not None else (ticks[0] if ticks else None)
        self._done = upto
        if k is None:
            return out
        dt = self._dt
        stage = self.conflicts
        empty = _empty_tick(self.spec.points)
        nxt = iter([*ticks, None])
        ahead = next(nxt)
        kk = k
        while kk <= upto:
            while ahead is not None and ahead < kk:
                ahead = next(nxt)
            slot = self._ticks.pop(kk, None)
            self._unhold(kk - 1)
            if slot is None and stage.tracker.idle and not self._hold:
                # nothing seen and nothing to close: skip to the next tick with records
                if ahead is None:
                    break
                kk = ahead
                continue
            t = kk * dt
            # between whole-fleet assessments only the watched vehicles, as stream/engine.py
            only = stage.watched() if kk % self._per_risk else None
            if only is None or only:
                merged = _merge(t, slot, only) if slot is not None else None
                tick = merged if merged is not None else PredictedTick(t, *empty)
                if only is None:
                    self._vehicles = len(tick)
                    if self.metrics is not None:  # those of its tiles and their halo
                        self.metrics.active_vehicles.set(self._vehicles)
                self._fleet = tick.fleet
                self._tick_k = kk
                result = stage.assess(tick, owns=self._owns, partial=only is not None)
                out.alerts.extend(result.alerts)
            self._unhold(kk)
            self.stats["ticks"] += 1
            self.newest_applied_ts = max(self.newest_applied_ts, t)
            kk += 1
        # The checkpoint writes every tracked pair, never the changed vehicles: taken here,
        # or the tracker would keep one id per vehicle ever in a conflict (it forgets none).
        stage.changed_vehicles()
        return out

    def _follow(self, tile_m: float, halo_m: float) -> None:
        """Own pairs by the tiles the predict stage fanned the vehicles out by: with its
        own (another --tile-m or --halo-m), a pair's owner could be a partition that never
        got both vehicles, and its alerts were missed."""
        log.warning("the predict stage publishes tiles of %g m with a %g m halo, this risk "
                    "stage was given %g m and %g m: using the predict stage's (give both "
                    "stages the same --tile-m and --halo-m)", tile_m, halo_m,
                    self.grid.tile_m, self.grid.halo_m)
        self.grid = TileGrid(tile_m, halo_m, self.grid.partitions)

    def _owns(self, result: TickResult) -> np.ndarray:
        """Which of the tick's conflicts this process alerts (it owns the midpoint's tile);
        remembers every pair's owner for the changelog."""
        if not result.pairs:
            return np.zeros(0, dtype=bool)
        f = self._fleet
        ia, ib = result.index_a, result.index_b
        q = self.grid.owner(f.x[ia], f.y[ia], f.x[ib], f.y[ib])
        self._owners.update(zip(result.pairs, q.tolist(), strict=True))
        rows, parts = self.grid.fan_out(0.5 * (f.x[ia] + f.x[ib]), 0.5 * (f.y[ia] + f.y[ib]))
        near: dict[int, list[int]] = {}
        for r, part in zip(rows.tolist(), parts.tolist(), strict=True):
            near.setdefault(r, []).append(part)
        owner = q.tolist()
        for r, pair in enumerate(result.pairs):
            self._near[pair] = tuple(x for x in near.get(r, ()) if x != owner[r])
        mine = [p for p in self._progress if p not in self._hold
                or self._hold[p][0] < self._tick_k]
        return np.isin(q, mine)

    def _unhold(self, k: int) -> None:
        """Partitions restored at tick <= ``k`` take their saved pair states now: drop what
        the re-assessment made of their pairs, put the saved ones."""
        for q in [q for q, (kq, _, _) in self._hold.items() if kq <= k]:
            _, saved, near = self._hold.pop(q)
            self._add_near(near, q)
            stale: _Pairs = {
                p: None for p, owner in self._owners.items() if owner == q and p not in saved}
            self._set_near(near)
            self.conflicts.tracker.set_pairs({**stale, **saved})
            for p in saved:
                self._owners[p] = q

    def _set_near(self, near: _Pairs) -> None:
        """Restored near pairs: what this process saw of them since its restore is less than
        the saved history, unless one of its own partitions owns them."""
        self.conflicts.tracker.set_pairs(
            {p: st for p, st in near.items() if self._owners.get(p) not in self._progress})

    def _add_near(self, pairs: _Pairs, q: int) -> None:
        """Restored near partition ``q``: written back to its record until assessed again."""
        for p in pairs:
            if q not in self._near.get(p, ()):
                self._near[p] = (*self._near.get(p, ()), q)

    # -- changelog -----------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """One record per owned partition: released tick, committed progress, its pairs."""
        done_before = self.min_pending_seq
        keep = []
        for ev in self._events:
            seq, q, p, d = ev
            if done_before is None or seq < done_before:
                mine = self._committed.setdefault(q, {})
                mine[p] = max(mine.get(p, d), d)
            else:
                keep.append(ev)
        self._events = keep
        snap = self.conflicts.tracker.snapshot()
        tracked = {(a, b) for a, st in snap.items() for kind in ("episodes", "pending")
                   for b in st.get(kind, {})}
        self._owners = {p: q for p, q in self._owners.items() if p in tracked}
        self._near = {p: qs for p, qs in self._near.items() if p in tracked}
        per: dict[int, dict[str, Any]] = {
            q: {"progress": {str(p): d for p, d in self._committed.get(q, {}).items()},
                "pairs": {}, "near": {}} for q in self._progress}
        for a, st in snap.items():
            for kind in ("episodes", "pending"):
                for b, e in st.get(kind, {}).items():
                    owner = self._owners.get((a, b))
                    if owner is not None and owner in per:
                        per[owner]["pairs"].setdefault(a, {}).setdefault(kind, {})[b] = e
                    for q in self._near.get((a, b), ()):
                        if q in per:
                            per[q]["near"].setdefault(a, {}).setdefault(kind, {})[b] = e
        for q, (kq, saved, near) in self._hold.items():
            if q in per:  # still at its own position: write it back as it came
                per[q]["done"], per[q]["prev_t"] = kq, kq * self._dt
                per[q]["pairs"], per[q]["near"] = _by_vehicle(saved), _by_vehicle(near)
        meta = {"done": self._done, "prev_t": self.conflicts.tracker.prev_t,
                "inputs": self._inputs, "tick_s": self._dt, "per_partition": per}
        return Checkpoint(meta=meta)

    def restore(self, vehicles: list[VehicleState], metas: dict[int, dict[str, Any]]) -> None:
        """Partitions assigned: their episodes, released tick and committed progress."""
        fresh = self._done is None or (self.stats["ticks"] == self._fresh_stats
                                       and not self._ticks)
        done = [m for m in metas.values() if m.get("done") is not None]
        # A partition without a released tick (its previous owner assessed none) has every
        # tick still to assess: a fresh engine then starts at the first tick, and the
        # partitions that have one wait for it (held, below) as those further on do.
        behind = fresh and len(done) < len(metas)
        if fresh and done and not behind:
            first = min(done, key=lambda m: self._tick_of(m, m["done"]))
            self._done = self._tick_of(first, first["done"])
            if first.get("prev_t") is not None:
                self.conflicts.tracker.restore({}, prev_t=float(first["prev_t"]))
        now = [self._done] if self._done is not None else [NO_TICK] if behind else []
        ready: list[tuple[_Pairs, _Pairs]] = []
        for q, m in metas.items():
            self._progress.setdefault(q, {})
            prog = {int(p): int(d) for p, d in (m.get("progress") or {}).items()}
            self._committed[q] = dict(prog)
            mine = self._progress[q]
            for p, d in prog.items():
                mine[p] = max(mine.get(p, d), d)
            self._inputs = max(self._inputs, int(m.get("inputs") or 0))
            pairs, near = _pair_states(m.get("pairs")), _pair_states(m.get("near"))
            self._owners.update(dict.fromkeys(pairs, q))
            self._add_near(near, q)
            q_done = None if m.get("done") is None else self._tick_of(m, m["done"])
            if q_done is not None and now and q_done > now[0]:
                # This partition's previous owner got further than the rest: the ticks up
                # to its position are assessed again for the others; its own pairs wait
                # (their alerts of those ticks are out already) and take the saved states
                # once the tick they were saved at is reached.
                self._hold[q] = (q_done, pairs, near)
            else:
                ready.append((pairs, near))
        # the pairs near a partition's tiles first (unless a partition this process had
        # already owns them: what it saw of them is as long), a partition's own pairs win
        for _, near in ready:
            self._set_near(near)
        for pairs, _ in ready:
            self.conflicts.tracker.set_pairs(pairs)

    def _tick_of(self, meta: dict[str, Any], k: Any) -> int:
        return restored_tick(meta, k, self._dt, self.config.risk_interval_s)

    def drop_partitions(self, parts: Collection[int]) -> list[str]:
        """Revoked partitions: forget their progress (their records stay buffered only as
        far as other partitions sent them too)."""
        for q in parts:
            self._progress.pop(q, None)
            self._committed.pop(q, None)
            self._hold.pop(q, None)
        self._events = [e for e in self._events if e[1] not in parts]
        return []

    def summary(self) -> dict[str, Any]:
        return {**self.stats, **self.conflicts.stats, "vehicles": self._vehicles,
                "pending": sum(len(t.rows) for t in self._ticks.values()), "resets": 0,
                "error_m": {}}


def _pair_states(saved: dict[str, Any] | None) -> _Pairs:
    """``{a: {"episodes": {b: e}, "pending": {b: p}}}`` (a changelog meta's) as
    ``{(a, b): {"episode": e}}`` or ``{(a, b): {"pending": p}}``."""
    out: _Pairs = {}
    for a, st in (saved or {}).items():
        for kind, key in (("episodes", "episode"), ("pending", "pending")):
            for b, e in st.get(kind, {}).items():
                out[(a, b)] = {key: e}
    return out


def _by_vehicle(pairs: _Pairs) -> dict[str, Any]:
    """The inverse of :func:`_pair_states`."""
    out: dict[str, Any] = {}
    for (a, b), state in pairs.items():
        for key, kind in (("episode", "episodes"), ("pending", "pending")):
            if state is not None and key in state:
                out.setdefault(a, {}).setdefault(kind, {})[b] = state[key]
    return out


def _empty_tick(points: int) -> tuple[np.ndarray, Fleet, np.ndarray]:
    z = np.zeros(0)
    fleet = Fleet(z, z, z, z, z, z, z, z, z, np.zeros((0, points, 2)))
    return np.zeros(0, dtype=object), fleet, np.zeros((0, points), np.float32)


def _merge(t: float, slot: _Tick, only: Collection[str] | None = None) -> PredictedTick | None:
    """One tick's vehicles (those among ``only``) from all records, ordered by vehicle id
    (deterministic); None when there are none."""
    ids = sorted(slot.rows if only is None else [v for v in slot.rows if v in only])
    if not ids:
        return None
    by_record: dict[int, tuple[PredictedTick, list[int], list[int]]] = {}
    for i, v in enumerate(ids):
        tk, r = slot.rows[v]
        entry = by_record.setdefault(id(tk), (tk, [], []))
        entry[1].append(i)
        entry[2].append(r)
    n = len(ids)
    first = next(iter(by_record.values()))[0]
    points = first.fleet.paths.shape[1]
    cols = {c: np.empty(n) for c in Fleet.__slots__
            if c not in ("paths", "sigma", "heading_known", "since")}
    paths = np.empty((n, points, 2))
    sigma = np.full((n, points), np.nan, np.float32)
    known = np.ones(n, dtype=bool)
    since = np.full(n, np.nan)
    for tk, at_list, r_list in by_record.values():
        dst, src = np.asarray(at_list), np.asarray(r_list)
        for c, col in cols.items():
            col[dst] = getattr(tk.fleet, c)[src]
        paths[dst] = tk.fleet.paths[src]
        if tk.fleet.heading_known is not None:
            known[dst] = tk.fleet.heading_known[src]
        if tk.fleet.since is not None:
            since[dst] = tk.fleet.since[src]
        if tk.sigma is not None:
            sigma[dst] = tk.sigma[src]
    return PredictedTick(t, np.array(ids, dtype=object),
                         Fleet(**cols, paths=paths, sigma=sigma, heading_known=known,
                               since=since), sigma)
