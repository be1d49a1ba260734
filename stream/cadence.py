"""When each vehicle's next fix is due: a tick is complete once every vehicle that may still
report in it has, without waiting for a record past its end (stream/admission.py).

A vehicle whose last two accepted fixes are ``g`` seconds apart may report again once half
of ``g`` has passed: until it does, it holds every tick from that one on. It is given up on
(it holds nothing) once its partition is ``tick_lateness_s`` past ``last + 1.5 g``: it missed
a fix. A partition is complete through tick k when nobody it holds is due by k and it has
delivered a record ``tick_lateness_s`` into tick k. A fleet reporting at 10 Hz on 0.1 s
ticks then has a tick out with its last fixes instead of the next tick's (up to 0.1 s of
event time sooner for every alert), and the evidence rule stays the fallback.

Which tick a record belongs to must not depend on when a tick was released, or alerts would
depend on how the input was cut into batches and how partitions interleaved. A record its
vehicle's cadence expected (due, not given up on) belongs to its own tick, as before: its
partition waited for it. Every other record (a vehicle's first two fixes, a fix sooner than
half an interval, one after a missed fix) belongs to the tick after the one it would have had,
which cannot be out yet. A vehicle's fixes never change order: a record's tick is never
before its vehicle's previous one.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection

import numpy as np

__all__ = ["Cadence", "tick_of"]

_DUE_SHARE = 0.5  # of the last interval, after which a vehicle's next fix may come
_MISSED_SHARE = 1.5  # of the last interval, after which a vehicle has missed its next fix
_NO_TICK = -(2**62)


def tick_of(ts: np.ndarray, dt: float) -> np.ndarray:
    """The tick ``((k-1)*dt, k*dt]`` each event time falls in (-inf: a very early one)."""
    return np.ceil(np.maximum(ts, -1e17) / dt).astype(np.int64)


class Cadence:
    """Per vehicle its last two accepted fix times and last tick; per partition a heap of
    (due tick, vehicle)."""

    def __init__(self, dt: float, lateness_s: float) -> None:
        self._dt = dt
        self._lateness_s = lateness_s
        self._fixes: dict[str, tuple[float, float, int]] = {}  # vehicle -> (prev, last, tick)
        self._due: dict[str, tuple[int, float]] = {}  # vehicle -> (due tick, missed after)
        self._heaps: dict[int, list[tuple[int, str]]] = {}  # partition -> (due tick, vehicle)

    def __len__(self) -> int:
        return len(self._fixes)

    def assign(self, ids: np.ndarray, ts: np.ndarray, own: np.ndarray, front: np.ndarray,
               parts: np.ndarray) -> np.ndarray:
        """The tick of each accepted record (arrival order; ``own`` its event time's tick,
        ``front`` its partition's newest event time up to it), and the cadence moved on."""
        m = ts.shape[0]
        if m == 0:
            return np.empty(0, dtype=np.int64)
        names_all = ids.tolist()
        names = list(dict.fromkeys(names_all))
        number = dict(zip(names, range(len(names)), strict=True))
        gid = np.fromiter(map(number.__getitem__, names_all), dtype=np.int64, count=m)
        none = (math.nan, math.nan, _NO_TICK)
        carried = [self._fixes.get(v, none) for v in names]
        c_prev = np.fromiter((c[0] for c in carried), dtype=np.float64, count=len(names))
        c_last = np.fromiter((c[1] for c in carried), dtype=np.float64, count=len(names))
        c_tick = np.fromiter((c[2] for c in carried), dtype=np.int64, count=len(names))
        order = np.argsort(gid, kind="stable")
        g = gid[order]
        start = np.ones(m, dtype=bool)
        start[1:] = g[1:] != g[:-1]
        ts_s = ts[order]
        last = np.empty(m)
        last[1:] = ts_s[:-1]
        last[start] = c_last[g[start]]
        prev = np.empty(m)
        prev[1:] = last[:-1]
        prev[start] = c_prev[g[start]]
        known = np.isfinite(prev)
        due, missed = self._due_of(prev, last, known)
        own_s = own[order]
        later = front[order] - self._lateness_s
        behind = np.maximum(own_s, self._ticks(later))  # the tick it had before cadences
        expected = known & (own_s >= due) & (later <= missed)
        raw = np.where(expected, behind, behind + 1)
        # never before the vehicle's previous record: a running maximum per vehicle, on
        # keys vehicle * width + tick (vehicles ascending, so no maximum crosses over)
        low = int(raw.min()) - 1  # a carried tick at or before it holds nothing
        rel = raw - low
        seed = np.clip(c_tick[g[start]] - low, 0, None)
        width = int(max(rel.max(), seed.max())) + 1
        base = g * width
        key = base + rel
        key[start] = np.maximum(key[start], base[start] + seed)
        tick_s = np.maximum.accumulate(key) - base + low
        ticks = np.empty(m, dtype=np.int64)
        ticks[order] = tick_s
        # each vehicle's newest two fixes and tick, and its next due tick on its heap
        ends = np.flatnonzero(np.r_[start[1:], True])
        new_prev, new_last = last[ends], ts_s[ends]
        self._fixes.update(zip(names, zip(new_prev.tolist(), new_last.tolist(),
                                          tick_s[ends].tolist(), strict=True), strict=True))
        self._push(names, new_prev, new_last, parts[order][ends])
        return ticks

    def complete(self, part: int, top: float) -> int:
        """The last tick partition ``part`` (newest event time ``top``) is complete through
        by its vehicles' cadence."""
        later = top - self._lateness_s
        heap = self._heaps.get(part)
        while heap:
            d, v = heap[0]
            due = self._due.get(v)
            if due is not None and due[0] == d and later <= due[1]:
                break
            heapq.heappop(heap)  # missed its fix, superseded, or forgotten
        cap = int(self._ticks(np.array([later]))[0])
        return min(cap, heap[0][0] - 1) if heap else cap

    def remember(self, ids: Collection[str], prev_ts: Collection[float],
                 last_ts: Collection[float], parts: Collection[int]) -> None:
        """Restored vehicles: their last two fixes, as an uninterrupted run has them (their
        released ticks are behind every tick still to come)."""
        names = list(ids)
        prev = np.asarray(list(prev_ts), dtype=np.float64)
        last = np.asarray(list(last_ts), dtype=np.float64)
        self._fixes.update(zip(names, zip(prev.tolist(), last.tolist(),
                                          [_NO_TICK] * len(names), strict=True), strict=True))
        self._push(names, prev, last, np.asarray(list(parts), dtype=np.int64))

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the vehicles ``keep`` rejects (their heap entries lapse)."""
        self._fixes = {v: f for v, f in self._fixes.items() if keep(v)}
        self._due = {v: d for v, d in self._due.items() if v in self._fixes}

    def drop_partitions(self, parts: Collection[int]) -> None:
        for p in parts:
            self._heaps.pop(p, None)

    def _ticks(self, ts: np.ndarray) -> np.ndarray:
        return tick_of(ts, self._dt)

    def _due_of(self, prev: np.ndarray, last: np.ndarray,
                known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tick a vehicle's next fix may come in, and the event time after which it has
        missed it (where ``known``: two fixes)."""
        gap = np.where(known, last - prev, 0.0)
        due = self._ticks(np.where(known, last + _DUE_SHARE * gap, -math.inf))
        return due, np.where(known, last + _MISSED_SHARE * gap, -math.inf)

    def _push(self, names: list[str], prev: np.ndarray, last: np.ndarray,
              parts: np.ndarray) -> None:
        known = np.isfinite(prev) & np.isfinite(last)
        due, missed = self._due_of(prev, last, known)
        heaps, dues = self._heaps, self._due
        for v, d, e, p, k in zip(names, due.tolist(), missed.tolist(), parts.tolist(),
                                 known.tolist(), strict=True):
            if k:
                dues[v] = (d, e)
                heapq.heappush(heaps.setdefault(p, []), (d, v))
            else:
                dues.pop(v, None)
