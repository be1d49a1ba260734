"""Per-vehicle state in slot-indexed numpy arrays.

Each vehicle id owns a slot (dict id -> slot, free list); everything about the vehicle lives
in row ``slot`` of preallocated arrays that double when full: last event time, size, the
kinematic estimator's state, the predictor's recurrent state and the latest predicted path.
Batched code gathers rows with one fancy index instead of touching per-vehicle objects.

All time is event time. Vehicles silent for ``ttl`` are evicted (memory stays bounded); a
vehicle whose next fix comes after a gap longer than ``reset_gap_s`` starts over (its motion
history and recurrent state say nothing about where it is now). So does a fix further from
the previous one than ``JUMP_SPEED_MPS`` could travel (plus ``JUMP_SLACK_M`` of noise): a
sender that switched frames or origins mid-stream, or a GPS glitch; the fix is kept as the
start of a new track and counted in ``jumps``. The kinematic estimator also checks reported
speed and heading against the motion (model/kinematics.py, ``check_reported``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.model.kinematics import HEADING_FLAG, SPEED_FLAG, Kinematics, KinematicsTracker
from trajstream.stream.slots import SlotAllocator, SlotOwner

__all__ = ["StateStore"]

JUMP_SPEED_MPS = 70.0  # 252 km/h: no road vehicle moves between two fixes faster
JUMP_SLACK_M = 5.0
JUMP_FLAG = 4
# What :attr:`StateStore.flags` bits mean, as counted (metric label ``reason``)
FLAG_REASONS: tuple[tuple[int, str], ...] = (
    (SPEED_FLAG, "speed"), (HEADING_FLAG, "heading"), (JUMP_FLAG, "jump"))


class StateStore(SlotOwner):
    """Slots, growable arrays and the per-vehicle rules (gap reset, TTL eviction).

    Slot allocation is deterministic: the free list is last-in first-out
    (:class:`SlotAllocator`) and allocation follows the order ids are presented in, so the
    same sequence of calls gives the same layout (the engine relies on this for
    batch-independent results).
    """

    used: np.ndarray  # (capacity,) bool: slot holds a vehicle
    last_ts: np.ndarray  # event time of the latest fix (NaN: none)
    since_ts: np.ndarray  # first fix of the current track
    fixes: np.ndarray  # fixes since the track started
    length: np.ndarray
    width: np.ndarray
    rec: np.ndarray  # (capacity, state_dim) float32 recurrent state
    path: np.ndarray  # (capacity, points, 2) latest predicted path
    sigma: np.ndarray  # (capacity, points) float32 1-sigma of each point, m (NaN: not given)
    path_ts: np.ndarray  # event time the path was predicted at
    partition: np.ndarray  # (capacity,) int64 input partition of the latest fix (-1: none)
    dirty: np.ndarray  # (capacity,) bool: changed since the last take_changes()
    id_of: np.ndarray  # (capacity,) object: ``ids`` as an array, for gathers by slot

    def __init__(
        self,
        capacity: int = 1024,
        *,
        state_dim: int = 0,
        points: int = 20,
        reset_gap_s: float = 5.0,
        gps_sigma_m: float = 0.3,
    ) -> None:
        self.state_dim = int(state_dim)
        self.points = int(points)
        self.reset_gap_s = float(reset_gap_s)
        self.kin = KinematicsTracker(max(capacity, 1), gps_sigma_m=gps_sigma_m,
                                     check_reported=True)
        self.resets = 0  # gap resets since start
        self.jumps = 0  # tracks restarted by an impossible jump since start
        self.flags = np.zeros(0, dtype=np.int8)  # per row of the last update
        self.evictions = 0
        # (id, partition) evicted since take_changes(), kept only with a changelog to write
        # (log_evictions): otherwise it would grow with every id ever seen.
        self.log_evictions = False
        self.evicted_log: list[tuple[str, int]] = []
        self._allocator = SlotAllocator(max(capacity, 1), self._alloc)

    # -- storage -------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        def grow(name: str, shape: tuple[int, ...], fill: float | None, dtype: type) -> None:
            new: np.ndarray = np.full(shape, fill, dtype=dtype)
            old = self.__dict__.get(name)
            if old is not None:
                new[: old.shape[0]] = old
            setattr(self, name, new)

        grow("used", (capacity,), False, bool)
        grow("last_ts", (capacity,), np.nan, np.float64)
        grow("since_ts", (capacity,), np.nan, np.float64)  # first fix of the current track
        grow("fixes", (capacity,), 0, np.int64)  # fixes since the track started
        grow("length", (capacity,), DEFAULT_LENGTH_M, np.float64)
        grow("width", (capacity,), DEFAULT_WIDTH_M, np.float64)
        grow("rec", (capacity, self.state_dim), 0.0, np.float32)
        grow("path", (capacity, self.points, 2), np.nan, np.float64)
        grow("sigma", (capacity, self.points), np.nan, np.float32)
        grow("path_ts", (capacity,), np.nan, np.float64)
        grow("partition", (capacity,), -1, np.int64)
        grow("dirty", (capacity,), False, bool)
        grow("id_of", (capacity,), None, object)
        self.kin.ensure_capacity(capacity)

    def __contains__(self, vehicle_id: object) -> bool:
        return vehicle_id in self._allocator.slot_of

    def slot_of(self, vehicle_id: str) -> int | None:
        return self._allocator.slot_of.get(vehicle_id)

    def lookup(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Slots of ``ids`` (-1 for unknown ones), without allocating."""
        get = self._allocator.slot_of.get
        return np.fromiter((get(v, -1) for v in ids), dtype=np.int64, count=len(ids))

    def slots_for(self, ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots of ``ids``, allocating (in order) for unknown ones.

        Returns ``(slots, new)`` where ``new`` marks the rows that allocated a slot; a
        repeated unknown id allocates once, at its first occurrence.
        """
        get = self._allocator.slot_of.get
        names = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        slots = np.fromiter(map(get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = np.zeros(len(names), dtype=bool)
        new_ids: list[str] = []
        take = self._allocator.take
        for i in np.flatnonzero(slots < 0).tolist():
            v = names[i]
            s = get(v)  # an unknown id repeated in ``ids`` has its slot by now
            if s is None:
                s = take(v)
                new[i] = True
                new_ids.append(v)
            slots[i] = s
        if new_ids:
            # cleared together: one call per array, not one per new vehicle (a fleet's
            # first tick, and every id the stream has not seen yet)
            self._claim(slots[new], new_ids)
        return slots, new

    def _new_slot(self, vehicle_id: str, prefer: int = -1) -> int:
        """A cleared slot for ``vehicle_id`` (``prefer`` when free: see SlotAllocator.take)."""
        s = self._allocator.take(vehicle_id, prefer)
        self._claim(np.array([s]), [vehicle_id])
        return s

    def _claim(self, slots: np.ndarray, vehicle_ids: list[str]) -> None:
        """Mark ``slots``, just taken from the allocator, as holding ``vehicle_ids``; cleared."""
        owners = np.empty(len(vehicle_ids), dtype=object)
        owners[:] = vehicle_ids
        self.id_of[slots] = owners
        self.used[slots] = True
        self._clear(slots)

    def _clear(self, slots: np.ndarray) -> None:
        """Forget the track of ``slots`` (kinematics, recurrent state, path)."""
        self.kin.reset(slots)
        self.last_ts[slots] = np.nan
        self.since_ts[slots] = np.nan
        self.fixes[slots] = 0
        self.rec[slots] = 0.0
        self.path[slots] = np.nan
        self.sigma[slots] = np.nan
        self.path_ts[slots] = np.nan
        self.partition[slots] = -1
        self.dirty[slots] = False

    # -- updates -------------------------------------------------------------------------

    def update(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        speed: np.ndarray,
        heading: np.ndarray,
        length: np.ndarray,
        width: np.ndarray,
    ) -> tuple[Kinematics, np.ndarray]:
        """Apply one fix to each of ``slots`` (unique, each ``ts`` after the slot's last).

        Returns the kinematics and a mask of the rows whose track (re)started here: a new
        vehicle, a gap longer than ``reset_gap_s`` or a jump. Their recurrent state is zero.
        :attr:`flags` tells per row what was not taken as reported.
        """
        prev = self.last_ts[slots]
        gap = ts - prev > self.reset_gap_s  # False for NaN (new track)
        reach = JUMP_SLACK_M + JUMP_SPEED_MPS * (ts - prev)
        with np.errstate(invalid="ignore"):
            jump = np.hypot(x - self.kin.x[slots], y - self.kin.y[slots]) > reach
        jump &= ~gap
        gap |= jump
        started = np.isnan(prev) | gap
        if gap.any():
            self._clear(slots[gap])
            self.resets += int(gap.sum())
            self.jumps += int(jump.sum())
        kin = self.kin.update(slots, ts, x, y, speed, heading)
        # per row: what was not taken as reported (bits of FLAG_REASONS)
        self.flags = self.kin.flags | (jump * JUMP_FLAG).astype(np.int8)
        self.last_ts[slots] = ts
        self.since_ts[slots] = np.where(started, ts, self.since_ts[slots])
        self.fixes[slots] = np.where(started, 1, self.fixes[slots] + 1)
        self.length[slots] = length
        self.width[slots] = width
        self.dirty[slots] = True
        return kin, started

    def set_prediction(
        self, slots: np.ndarray, ts: np.ndarray, paths: np.ndarray, state: np.ndarray | None,
        sigma: np.ndarray | None = None,
    ) -> None:
        """Store the predictor's output for ``slots``: the path made at ``ts``, its per-point
        uncertainty (when the predictor gives one) and the new recurrent state.

        ``sigma`` (the live map, and the risk's overlap probability) is not part of
        checkpoints: a restored vehicle has none until its next fix, and risk uses the
        kinematic growth of stream/risk.py for it meanwhile (at most ``stale_after_s``)."""
        self.path[slots] = paths
        self.sigma[slots] = np.nan if sigma is None else sigma
        self.path_ts[slots] = ts
        if state is not None and self.state_dim:
            self.rec[slots] = state

    # -- queries and eviction --------------------------------------------------------------

    def active(self, since_ts: float) -> np.ndarray:
        """Slots (ascending) whose last fix is later than ``since_ts``."""
        h = self.high
        with np.errstate(invalid="ignore"):
            return np.flatnonzero(self.last_ts[:h] > since_ts)

    def evict(self, before_ts: float) -> tuple[list[str], np.ndarray]:
        """Free every vehicle whose last fix is at or before ``before_ts``.

        Returns the evicted ids and their (now free) slots, ascending.
        """
        h = self.high
        with np.errstate(invalid="ignore"):
            slots = np.flatnonzero(self.used[:h] & (self.last_ts[:h] <= before_ts))
        if slots.size == 0:
            return [], slots
        parts = self.partition[slots].tolist()  # before _release clears them
        ids = self._release(slots.tolist())
        if self.log_evictions:
            self.evicted_log.extend(zip(ids, parts, strict=True))
        self.evictions += len(ids)
        return ids, slots

    def _release(self, slots: list[int]) -> list[str]:
        """Free ``slots`` (each holding a vehicle) and clear their rows; returns their ids.

        Released last to first, so that new vehicles get them in the order given (ascending
        from evict and drop: the lowest freed slot first)."""
        ids = [self._allocator.release(s) for s in reversed(slots)]
        ids.reverse()
        self.id_of[slots] = None
        self.used[slots] = False
        self._clear(np.asarray(slots, dtype=np.int64))
        return ids

    # -- checkpoints ---------------------------------------------------------------------

    def row_width(self) -> int:
        """Length of one exported float64 row (see :meth:`export_rows`). Rows one shorter,
        written before the speed at the latest fix was kept, are read too (it is then taken
        to be the fitted speed until the vehicle's next fix)."""
        return 7 + 2 * self.points + 8 + 3 * self.kin.hist_t.shape[1] + 1

    def export_rows(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Everything about ``slots`` as float64 rows plus their recurrent state (float32).

        Bit-exact: restoring the rows with :meth:`import_rows` gives the same predictions.
        """
        k = self.kin
        rows = np.concatenate([
            np.stack([self.last_ts[slots], self.since_ts[slots],
                      self.fixes[slots].astype(np.float64), self.length[slots],
                      self.width[slots], self.path_ts[slots],
                      self.partition[slots].astype(np.float64)], axis=1),
            self.path[slots].reshape(slots.size, 2 * self.points),
            np.stack([k.ts[slots], k.x[slots], k.y[slots], k.speed[slots], k.heading[slots],
                      k.heading_known[slots], k.yaw_rate[slots], k.accel[slots]], axis=1),
            k.hist_t[slots], k.hist_x[slots], k.hist_y[slots], k.speed_now[slots, None],
        ], axis=1)
        return rows, self.rec[slots].copy()

    def import_rows(self, ids: Sequence[str], want_slots: Sequence[int], rows: np.ndarray,
                    rec: np.ndarray) -> np.ndarray:
        """Load exported rows, each into its recorded slot when that slot is free (the same
        layout as before a restart), else into a new one. Replaces known ids' state.

        Returns the slots used. Not marked dirty: the changelog already holds them.
        """
        slots = np.empty(len(ids), dtype=np.int64)
        for i, (v, want) in enumerate(zip(ids, want_slots, strict=True)):
            s = self._allocator.slot_of.get(v)
            if s is None:
                # the recorded slot when it is free: the same layout as before a restart
                s = self._new_slot(v, int(want))
            slots[i] = s
        if not len(ids):
            return slots
        p, w = self.points, self.kin.hist_t.shape[1]
        r = rows
        self.last_ts[slots], self.since_ts[slots] = r[:, 0], r[:, 1]
        self.fixes[slots] = r[:, 2].astype(np.int64)
        self.length[slots], self.width[slots], self.path_ts[slots] = r[:, 3], r[:, 4], r[:, 5]
        self.partition[slots] = r[:, 6].astype(np.int64)
        o = 7
        self.path[slots] = r[:, o:o + 2 * p].reshape(-1, p, 2)
        o += 2 * p
        k = self.kin
        for j, name in enumerate(("ts", "x", "y", "speed", "heading", "heading_known",
                                  "yaw_rate", "accel")):
            getattr(k, name)[slots] = r[:, o + j]
        o += 8
        k.hist_t[slots] = r[:, o:o + w]
        k.hist_x[slots] = r[:, o + w:o + 2 * w]
        k.hist_y[slots] = r[:, o + 2 * w:o + 3 * w]
        k.speed_now[slots] = r[:, -1] if r.shape[1] == self.row_width() else k.speed[slots]
        if self.state_dim:
            self.rec[slots] = rec.reshape(len(ids), self.state_dim)
        self.dirty[slots] = False
        return slots

    def take_changes(self) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """Slots changed and (id, partition) evicted since the last call; clears both."""
        h = self.high
        slots = np.flatnonzero(self.dirty[:h] & self.used[:h])
        self.dirty[:h] = False
        gone, self.evicted_log = self.evicted_log, []
        return slots, gone

    def drop(self, slots: np.ndarray) -> list[str]:
        """Forget ``slots`` without logging an eviction (partition revoked: the changelog
        keeps their state for the new owner). Returns their ids; free slots are skipped."""
        ids = self.ids
        return self._release([s for s in slots.tolist() if ids[s] is not None])
