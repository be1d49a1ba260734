"""Positions files -> what the processor would see, fix by fix.

Training and evaluation both start from the positions contract (a JSONL file, one position
object per line) and replay it the way the processor does: records are put in event-time
order with the engine's lateness rule, duplicates and stale fixes are dropped, each vehicle's
motion comes from the same :class:`~model.kinematics.KinematicsTracker`, advanced in batched
steps (one per event-time tick and per fix within it), and the state resets after a long gap.
That keeps the features the network is trained on identical to the ones it is served.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from trajstream.errors import ConfigError
from trajstream.inputs import READ_ERRORS, open_input
from trajstream.model.kinematics import Kinematics, KinematicsTracker
from trajstream.model.neighbours import N_NEIGHBOUR_FEATURES, neighbour_features
from trajstream.stream.cadence import Cadence, tick_of
from trajstream.stream.codec import CodecConfig, decode_batch
from trajstream.stream.config import EngineConfig

_ENGINE = EngineConfig()  # the processor's defaults
TICK_S = _ENGINE.tick_s  # the predictor runs once per tick (a sub-step per fix)
RESET_GAP_S = _ENGINE.reset_gap_s  # a vehicle silent for longer starts over
MAX_TARGET_GAP_S = 0.6  # longer gaps between fixes make an interpolated target unreliable


@dataclass(frozen=True)
class Positions:
    """Columnar position records; ``vehicle`` indexes ``ids``. speed/heading NaN when absent.
    ``tick``: the engine's tick of each record (None: not assigned yet, see
    :func:`event_time_order`)."""

    ids: tuple[str, ...]
    vehicle: np.ndarray
    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    tick: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray) -> Positions:
        return Positions(
            self.ids, self.vehicle[index], self.ts[index], self.x[index], self.y[index],
            self.speed[index], self.heading[index],
            None if self.tick is None else self.tick[index],
        )


def parse_positions(
    lines: Iterable[bytes | str], codec: CodecConfig | None = None
) -> tuple[Positions, int]:
    """Decode position messages with the processor's codec: (valid positions in input
    order, number rejected). Blank lines are ignored.
    """
    values = [ln if isinstance(ln, bytes) else ln.encode() for ln in lines]
    values = [v.strip() for v in values if v.strip()]
    batch, rejected = decode_batch(None, values, codec or CodecConfig())
    uniq, vehicle = np.unique(batch.vehicle_id.astype(str), return_inverse=True)
    pos = Positions(
        ids=tuple(str(u) for u in uniq), vehicle=vehicle.astype(np.int64), ts=batch.ts,
        x=batch.x, y=batch.y, speed=batch.speed, heading=batch.heading,
    )
    return pos, len(rejected)


def read_positions(
    path: str | Path, codec: CodecConfig | None = None
) -> tuple[Positions, int]:
    """A positions JSONL file, plain or gzip."""
    try:
        with open_input(path) as fh:
            return parse_positions(fh, codec)
    except READ_ERRORS as exc:
        raise ConfigError(f"cannot read positions file {path}: {exc}") from exc


def source_name(path: str | Path) -> str:
    """``ngsim-us101`` for ``.../ngsim-us101.jsonl.gz``: how tables name a file's traffic."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


Side = Literal["all", "train", "held-out"]


def recorded_side(pos: Positions, side: Side) -> Positions:
    """The records of one side of the recorded-traffic rule (simulator/recorded/split.py).

    ``held-out`` keeps the held-out recordings, ``train`` the others; records whose vehicle id
    names no recording (simulated, SUMO: held out by file instead) are kept on both sides.
    """
    from trajstream.simulator.recorded.split import is_held_out, recording_of

    if side == "all" or len(pos) == 0:
        return pos
    recorded = np.array([recording_of(v) is not None for v in pos.ids])
    held = np.array([is_held_out(v) for v in pos.ids])
    keep_id = ~recorded | (held if side == "held-out" else ~held)
    return pos.take(np.flatnonzero(keep_id[pos.vehicle]))


def event_time_order(
    pos: Positions,
    allowed_lateness_s: float = _ENGINE.allowed_lateness_s,
    tick_s: float = _ENGINE.tick_s,
    min_fix_interval_s: float = _ENGINE.min_fix_interval_s,
) -> Positions:
    """The records the engine (stream/engine.py) applies, in the order it applies them, each
    with the tick the engine applies it at.

    Input order is arrival order, one ordered stream. As in the engine: a record is *late*
    when its tick ((k-1)*tick_s, k*tick_s] was already released by the watermark (newest
    event time so far minus ``allowed_lateness_s``); *stale* when at or before an earlier
    on-time record of its vehicle; *dense* when in the same ``min_fix_interval_s`` bucket as
    the vehicle's previous fresh record. Those are dropped; the rest are sorted by event
    time, ties in arrival order, and given the engine's ticks (stream/cadence.py: a fix its
    vehicle's cadence did not expect is applied a tick later). (The engine's wall-clock
    ``future`` check never applies to recorded data.)
    """
    n = len(pos)
    if n == 0:
        return pos
    newest = np.maximum.accumulate(pos.ts)
    released = np.ceil((newest - allowed_lateness_s) / tick_s) - 1
    on_time = np.ceil(pos.ts / tick_s) > released
    idx = np.flatnonzero(on_time)
    order = idx[np.lexsort((idx, pos.vehicle[idx]))]  # by vehicle, then arrival
    veh, ts = pos.vehicle[order], pos.ts[order]
    keep = np.zeros(order.size, dtype=bool)
    starts = np.flatnonzero(np.r_[True, veh[1:] != veh[:-1]])
    ends = np.r_[starts[1:], order.size]
    for s, e in zip(starts, ends, strict=True):
        run = ts[s:e]
        fresh = np.flatnonzero(run > np.maximum.accumulate(np.r_[-np.inf, run[:-1]]))
        bucket = np.floor(run[fresh] / min_fix_interval_s)
        dense = np.r_[False, bucket[1:] == bucket[:-1]]
        keep[s + fresh[~dense]] = True
    kept = np.sort(order[keep])  # back to arrival order
    cadence = Cadence(tick_s, min(_ENGINE.tick_lateness_s, allowed_lateness_s))
    ts_kept = pos.ts[kept]
    ticks = cadence.assign(np.asarray(pos.ids, dtype=object)[pos.vehicle[kept]], ts_kept,
                           tick_of(ts_kept, tick_s), newest[kept],
                           np.full(kept.size, -1, dtype=np.int64))
    by_time = np.argsort(ts_kept, kind="stable")
    out = pos.take(kept[by_time])
    return dataclasses.replace(out, tick=ticks[by_time])


@dataclass(frozen=True)
class Replay:
    """Event-time-ordered positions with the tracker's output for every record.

    ``groups`` lists record indices per batched step in processing order (each vehicle at
    most once per group); ``segment`` numbers each vehicle's runs between resets;
    ``neighbours`` the vehicles around each record (model/neighbours.py), computed from the
    tracker at that step as the processor does.
    """

    pos: Positions
    kin: Kinematics
    groups: list[np.ndarray]
    segment: np.ndarray
    neighbours: np.ndarray


def step_groups(pos: Positions, tick_s: float = TICK_S) -> list[np.ndarray]:
    """Batches of records as the engine steps them: per tick, one sub-step per fix rank."""
    n = len(pos)
    if n == 0:
        return []
    tick = tick_of(pos.ts, tick_s) if pos.tick is None else pos.tick
    by_vt = np.lexsort((pos.ts, tick, pos.vehicle))
    key_v, key_t = pos.vehicle[by_vt], tick[by_vt]
    new_run = np.r_[True, (key_v[1:] != key_v[:-1]) | (key_t[1:] != key_t[:-1])]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[by_vt] = np.arange(n) - run_start
    order = np.lexsort((rank, tick))
    gt, gr = tick[order], rank[order]
    cuts = np.flatnonzero((gt[1:] != gt[:-1]) | (gr[1:] != gr[:-1])) + 1
    return np.split(order, cuts)


def replay(
    pos: Positions,
    *,
    tick_s: float = TICK_S,
    reset_gap_s: float = RESET_GAP_S,
    gps_sigma_m: float = _ENGINE.gps_sigma_m,
) -> Replay:
    """Run the kinematic tracker over event-time-ordered positions, batched like the engine."""
    n = len(pos)
    nveh = len(pos.ids)
    tracker = KinematicsTracker(max(nveh, 1), gps_sigma_m=gps_sigma_m)
    last_ts = np.full(max(nveh, 1), np.nan)
    flags = {f: np.zeros(n, dtype=bool) for f in ("first", "heading_known")}
    fields = {f: np.zeros(n) for f in Kinematics.__slots__ if f not in flags}
    neighbours = np.zeros((n, N_NEIGHBOUR_FEATURES))
    groups = step_groups(pos, tick_s)
    for idx in groups:
        slots = pos.vehicle[idx]
        ts = pos.ts[idx]
        gap = ts - last_ts[slots]
        stale = gap > reset_gap_s
        if stale.any():
            tracker.reset(slots[stale])
        kin = tracker.update(slots, ts, pos.x[idx], pos.y[idx], pos.speed[idx], pos.heading[idx])
        last_ts[slots] = ts
        neighbours[idx] = neighbour_features(kin, slots, tracker)
        for f, arr in (*fields.items(), *flags.items()):
            arr[idx] = getattr(kin, f)
    # segments: a new one at every first fix, numbered in (vehicle, time) order
    by_vt = np.lexsort((pos.ts, pos.vehicle))
    seg_sorted = np.cumsum(flags["first"][by_vt]) - 1
    segment = np.empty(n, dtype=np.int64)
    segment[by_vt] = seg_sorted
    return Replay(pos=pos, kin=Kinematics(**fields, **flags), groups=groups, segment=segment,
                  neighbours=neighbours)


def future_positions(
    rep: Replay, offsets_s: np.ndarray, max_gap_s: float = MAX_TARGET_GAP_S
) -> tuple[np.ndarray, np.ndarray]:
    """Observed positions at ``ts + offsets_s`` per record, interpolated from the same
    segment's later fixes: (targets (n, P, 2), valid (n,)).

    A record's target is valid only if the segment covers the whole horizon with no gap between
    fixes longer than ``max_gap_s`` (a gap would make the interpolation a guess).
    """
    pos = rep.pos
    n, p = len(pos), offsets_s.size
    targets = np.full((n, p, 2), np.nan)
    valid = np.zeros(n, dtype=bool)
    if n == 0:
        return targets, valid
    order = np.lexsort((pos.ts, rep.segment))
    seg = rep.segment[order]
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    ends = np.r_[starts[1:], n]
    horizon = offsets_s[-1]
    for s, e in zip(starts, ends, strict=True):
        rows = order[s:e]
        t, x, y = pos.ts[rows], pos.x[rows], pos.y[rows]
        q = t[:, None] + offsets_s[None, :]
        targets[rows, :, 0] = np.interp(q, t, x)
        targets[rows, :, 1] = np.interp(q, t, y)
        big = np.r_[0, np.cumsum(np.diff(t) > max_gap_s)]  # big gaps before each fix
        k = np.minimum(np.searchsorted(t, t + horizon, side="left"), t.size - 1)
        valid[rows] = (t + horizon <= t[-1] + 1e-9) & (big[k] == big)
    return targets, valid
