"""When each vehicle's next fix is due: a tick is complete once every vehicle that may still
report in it has, without waiting for a record past its end (stream/admission.py).

A vehicle whose last two accepted fixes are ``g`` seconds apart may report again once half
of ``g`` has passed: until it does, it holds every tick from that one on. It is given up on
(it holds nothing) once its partition is ``tick_lateness_s`` past ``last + 1.5 g``: it missed
a fix. A partition is complete through tick k when nobody it holds is due by k and it has
delivered a record ``tick_lateness_s`` into tick k, or nobody it holds is due by k and k is
within the partition's look-ahead (below). A fleet reporting at 10 Hz on 0.1 s ticks then
has a tick out with its last fixes instead of the next tick's (up to 0.1 s of event time
sooner for every alert), and the evidence rule stays the fallback.

Ticks nobody is due in go out ahead of the records. Event time moves only with records, so
a fleet whose vehicles all report at the same instants (1 Hz, on the GPS second) sends
nothing between them: the ticks up to the next due fix would wait a whole interval for the
next second's records, and with them every alert confirmed in them. A partition is complete
through the ticks its vehicles' cadence leaves empty, up to its *look-ahead*: each fix
reaches to the tick before its vehicle is due again (at most ``_AHEAD_S`` past its own
tick); a partition's look-ahead is the running maximum, over its records, of the smallest
reach among its fixes of the last ``_WINDOW_S``. The window keeps it near the newest fix
wherever some vehicle reports faster than the others, since an unexpected fix counts after
the look-ahead (below).

Which tick a record belongs to must not depend on when a tick was released, or alerts would
depend on how the input was cut into batches and how partitions interleaved. A record its
vehicle's cadence expected (due, not given up on) belongs to its own tick, as before: its
partition waited for it. Every other record (a vehicle's first two fixes, a fix sooner than
half an interval, one after a missed fix) belongs to the tick after the one it would have had,
or after its partition's look-ahead as it stood before the record if that is later: neither
can be out yet, and both follow from the partition's records up to it. A vehicle's fixes
never change order: a record's tick is never before its vehicle's previous one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from itertools import repeat

import numpy as np

__all__ = ["NO_TICK", "Cadence", "tick_of"]

_DUE_SHARE = 0.5  # of the last interval, after which a vehicle's next fix may come
_MISSED_SHARE = 1.5  # of the last interval, after which a vehicle has missed its next fix
# How far past its last fix a vehicle's cadence may complete ticks before any record is
# there: a 1 Hz feed's due tick is 0.5 s on, a 0.5 Hz feed's 1 s. It is also the most an
# unexpected record (a new vehicle's first fixes) may count later than its own tick.
_AHEAD_S = 1.0
# The span of a partition's fixes whose smallest reach moves its look-ahead: shorter than a
# 2 Hz interval, so a synchronised feed's window holds one instant's fixes, and longer than
# a 10 Hz one, so a partition with any vehicle at 10 Hz keeps its look-ahead at hand.
_WINDOW_S = 0.25
# The tick of "no event time yet" (a watermark of -inf): nothing up to it is ever complete.
NO_TICK = -(2**62)
_NEVER = 2**62  # the due tick of a vehicle that holds nothing


def tick_of(ts: np.ndarray, dt: float) -> np.ndarray:
    """The tick ``((k-1)*dt, k*dt]`` each event time falls in (-inf: a very early one)."""
    return np.ceil(np.maximum(ts, -1e17) / dt).astype(np.int64)


class Cadence:
    """Per vehicle its last two accepted fix times, its last tick and its partition, in
    arrays indexed by a vehicle number (a dict from id to number is the only per-record
    Python work)."""

    def __init__(self, dt: float, lateness_s: float) -> None:
        self._dt = dt
        self._lateness_s = lateness_s
        self._ahead_ticks = round(_AHEAD_S / dt)
        self._number: dict[str, int] = {}
        self._look_ahead: dict[int, int] = {}  # per partition: the last tick it may complete
        # per partition, its fixes of the last _WINDOW_S: (partition's newest time, reach)
        self._window: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._alloc(0)

    def _alloc(self, n: int, keep: bool = True) -> None:
        """Room for ``n`` vehicles, keeping the numbered ones (``keep``) or none."""
        old = getattr(self, "_prev", None) if keep else None
        if old is not None and n <= old.size:
            return
        cap = max(1024, 2 * n)

        def grow(name: str, fill: float, dtype: type) -> np.ndarray:
            arr: np.ndarray = np.full(cap, fill, dtype=dtype)
            if old is not None:
                arr[:old.size] = getattr(self, name)
            return arr

        self._prev = grow("_prev", math.nan, np.float64)  # fix before the last
        self._last = grow("_last", math.nan, np.float64)  # last accepted fix
        self._tick = grow("_tick", NO_TICK, np.int64)  # tick of the last accepted fix
        self._part = grow("_part", -1, np.int64)  # its input partition
        self._due = grow("_due", _NEVER, np.int64)  # tick the next fix may come in
        self._missed = grow("_missed", -math.inf, np.float64)  # missed after this time

    def __len__(self) -> int:
        return len(self._number)

    def assign(self, ids: np.ndarray, ts: np.ndarray, own: np.ndarray, front: np.ndarray,
               parts: np.ndarray) -> np.ndarray:
        """The tick of each accepted record (arrival order; ``own`` its event time's tick,
        ``front`` its partition's newest event time up to it), and the cadence moved on."""
        m = ts.shape[0]
        if m == 0:
            return np.empty(0, dtype=np.int64)
        veh = self._numbers(ids.tolist())
        order = np.argsort(veh, kind="stable")
        g = veh[order]
        start = np.ones(m, dtype=bool)
        start[1:] = g[1:] != g[:-1]
        first = g[start]
        ts_s = ts[order]
        last = np.empty(m)
        last[1:] = ts_s[:-1]
        last[start] = self._last[first]
        prev = np.empty(m)
        prev[1:] = last[:-1]
        prev[start] = self._prev[first]
        known = np.isfinite(prev)
        due, missed = self._due_of(prev, last, known)
        own_s = own[order]
        later = front[order] - self._lateness_s
        behind = np.maximum(own_s, tick_of(later, self._dt))  # its tick before cadences
        expected = known & (own_s >= due) & (later <= missed)
        # each record's look-ahead, and its partition's as it stood before the record
        reach = np.empty(m, dtype=np.int64)
        reach[order] = self._reach(last, ts_s, own_s)
        before = self._look_aheads(reach, front, parts)[order]
        raw = np.where(expected, behind, np.maximum(behind, before) + 1)
        # never before the vehicle's previous record: a running maximum per vehicle, on
        # keys vehicle * width + tick (vehicles ascending, so no maximum crosses over)
        low = int(raw.min()) - 1  # a carried tick at or before it holds nothing
        rel = raw - low
        seed = np.clip(self._tick[first] - low, 0, None)
        width = int(max(rel.max(), seed.max())) + 1
        base = g * width
        key = base + rel
        key[start] = np.maximum(key[start], base[start] + seed)
        tick_s = np.maximum.accumulate(key) - base + low
        ticks = np.empty(m, dtype=np.int64)
        ticks[order] = tick_s
        # each vehicle's newest two fixes, tick and partition, and when it is due again
        ends = np.flatnonzero(np.r_[start[1:], True])
        v = g[ends]
        self._set(v, last[ends], ts_s[ends], parts[order][ends])
        self._tick[v] = tick_s[ends]
        return ticks

    def complete(self, tops: dict[int, float]) -> dict[int, int]:
        """Per partition (newest event time ``tops[p]``) the last tick it is complete
        through by its vehicles' cadence."""
        n = len(self._number)
        out = {}
        for p, top in tops.items():
            later = top - self._lateness_s
            cap = max(int(tick_of(np.array([later]), self._dt)[0]),
                      self._look_ahead.get(p, NO_TICK))
            holding = (self._part[:n] == p) & (self._missed[:n] >= later)
            if holding.any():
                cap = min(cap, int(self._due[:n][holding].min()) - 1)
            out[p] = cap
        return out

    def remember(self, ids: Collection[str], prev_ts: Collection[float],
                 last_ts: Collection[float], parts: Collection[int]) -> None:
        """Restored vehicles: their last two fixes, as an uninterrupted run has them (their
        released ticks are behind every tick still to come)."""
        names = list(ids)
        v = self._numbers(names)
        prev = np.asarray(list(prev_ts), dtype=np.float64)
        last = np.asarray(list(last_ts), dtype=np.float64)
        part = np.asarray(list(parts), dtype=np.int64)
        self._set(v, prev, last, part)
        self._tick[v] = NO_TICK
        # their partitions' look-ahead as if their last fixes had just come, in time order
        at = np.argsort(last, kind="stable")
        part, last = part[at], last[at]
        front = np.empty_like(last)
        for p in np.unique(part).tolist():
            mine = part == p
            front[mine] = np.maximum.accumulate(last[mine])
        self._look_aheads(self._reach(prev[at], last, tick_of(last, self._dt)), front, part)

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the vehicles ``keep`` rejects; the others are numbered afresh."""
        kept = [(v, i) for v, i in self._number.items() if keep(v)]
        if len(kept) == len(self._number):
            return
        old = np.asarray([i for _, i in kept], dtype=np.int64)
        arrays = {f: getattr(self, f)[old] for f in _FIELDS}
        self._number = {v: k for k, (v, _) in enumerate(kept)}
        self._alloc(len(old), keep=False)
        for f, a in arrays.items():
            getattr(self, f)[:len(old)] = a

    def drop_partitions(self, parts: Collection[int]) -> None:
        """The vehicles of ``parts`` hold nothing any more (their ids are forgotten too)."""
        n = len(self._number)
        gone = np.isin(self._part[:n], np.asarray(sorted(parts), dtype=np.int64))
        self._missed[:n][gone] = -math.inf
        for p in parts:
            self._look_ahead.pop(p, None)
            self._window.pop(p, None)

    def _numbers(self, names: list[str]) -> np.ndarray:
        number = self._number
        veh = np.fromiter(map(number.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = veh < 0
        if new.any():
            fresh = np.asarray(names, dtype=object)[new].tolist()
            for name in fresh:
                number.setdefault(name, len(number))
            self._alloc(len(number))
            veh[new] = np.fromiter(map(number.__getitem__, fresh), dtype=np.int64,
                                   count=len(fresh))
        return veh

    def _set(self, v: np.ndarray, prev: np.ndarray, last: np.ndarray,
             parts: np.ndarray) -> None:
        self._prev[v], self._last[v], self._part[v] = prev, last, parts
        known = np.isfinite(prev) & np.isfinite(last)
        due, missed = self._due_of(prev, last, known)
        self._due[v] = np.where(known, due, _NEVER)
        self._missed[v] = missed  # -inf when unknown: holds nothing

    def _reach(self, prev: np.ndarray, last: np.ndarray, own: np.ndarray) -> np.ndarray:
        """The last tick a vehicle whose last two fixes are ``prev`` and ``last`` (own tick
        ``own``) lets its partition complete: the one before its next fix is due, at most
        ``_AHEAD_S`` on (_NEVER with one fix: nothing is known of its cadence, and its next
        fix is unexpected anyway)."""
        known = np.isfinite(prev) & np.isfinite(last)
        due, _ = self._due_of(prev, last, known)
        return np.where(known, np.minimum(due - 1, own + self._ahead_ticks), _NEVER)

    def _look_aheads(self, reach: np.ndarray, front: np.ndarray,
                     parts: np.ndarray) -> np.ndarray:
        """Each record's partition's look-ahead before it (``reach`` and ``front``, its
        partition's newest event time, per record in arrival order), kept moving on."""
        out = np.empty_like(reach)
        porder = np.argsort(parts, kind="stable")
        sorted_parts = parts[porder]
        cuts = np.flatnonzero(sorted_parts[1:] != sorted_parts[:-1]) + 1
        for seg in np.split(porder, cuts):
            p = int(parts[seg[0]])
            old_front, old_reach = self._window.get(p, (np.empty(0), np.empty(0, np.int64)))
            # ascending (held rows come with their own times)
            fronts = np.maximum.accumulate(np.concatenate([old_front, front[seg]]))
            reaches = np.concatenate([old_reach, reach[seg]])
            low = _window_min(reaches, fronts, _WINDOW_S)[old_front.size:]
            run = np.empty(seg.size + 1, dtype=np.int64)
            run[0] = self._look_ahead.get(p, NO_TICK)
            run[1:] = np.where(low >= _NEVER, NO_TICK, low)
            np.maximum.accumulate(run, out=run)
            out[seg] = run[:-1]
            self._look_ahead[p] = int(run[-1])
            recent = fronts >= fronts[-1] - _WINDOW_S
            self._window[p] = (fronts[recent], reaches[recent])
        return out

    def _due_of(self, prev: np.ndarray, last: np.ndarray,
                known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tick a vehicle's next fix may come in, and the event time after which it has
        missed it (where ``known``: two fixes)."""
        gap = np.where(known, last - prev, 0.0)
        due = tick_of(np.where(known, last + _DUE_SHARE * gap, -math.inf), self._dt)
        return due, np.where(known, last + _MISSED_SHARE * gap, -math.inf)


def _window_min(values: np.ndarray, times: np.ndarray, span: float) -> np.ndarray:
    """Per position i, the smallest of ``values[j]`` for j <= i with ``times[j] >=
    times[i] - span`` (``times`` ascending): range minima from a sparse table, O(n log n)."""
    n = values.size
    if n == 0:
        return values.copy()
    end = np.arange(n)
    start = np.searchsorted(times, times - span, side="left")
    level = np.frexp((end - start + 1).astype(np.float64))[1] - 1  # floor(log2(length))
    out = np.empty_like(values)
    table = values  # table[i]: the smallest of values[i : i + 2**j]
    for j in range(int(level.max()) + 1):
        at = level == j
        if at.any():
            out[at] = np.minimum(table[start[at]], table[end[at] - (1 << j) + 1])
        table = np.minimum(table[:-(1 << j)], table[(1 << j):])
    return out


_FIELDS = ("_prev", "_last", "_tick", "_part", "_due", "_missed")
