"""A hostile feed for soak tests: valid traffic with about 10% bad records of every kind.

Each kind comes from issue 12 (a reproduction each) or the decoder's reasons: garbage,
wrong types, units past range, timestamps in milliseconds, UTF-16, lat/lon without an
origin, keys that disagree, a fast clock, a year ahead, late fixes, a flooding sender,
km/h as m/s, ``speed: 0`` while moving, compass headings, lat/lon degrees sent as x/y and a
sender switching frames. :func:`mix` returns the records in arrival order (Kafka key and
value: two kinds need the key) and what the processor must count for them, by reason;
:func:`summary_counts` reads what it counted from its ``done:`` line. Used by
tests/integration/test_soak_hostile.py and bench/bench_soak.py.

The hostile vehicles drive far from the valid traffic and never move the newest event time
(each is stamped at or before the newest valid fix so far), so the valid traffic's alerts
must come out exactly as without them.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

# Decoder rejections: (reason, key, value); ``{ts}`` is replaced by a current event time.
GARBAGE: list[tuple[str, bytes | None, bytes]] = [
    ("not_json", b"bad-1", b"{not json"),
    ("not_json", b"bad-1", b"\xff\xfe\xfd"),
    ("not_json", b"bad-1",
     '{"vehicle_id": "bad-1", "ts": 1764547230.0, "x": 1, "y": 2}'.encode("utf-16")),
    ("not_object", b"bad-1", b'["an", "array"]'),
    ("missing_field", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "y": 2}'),
    ("missing_field", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "lat": 52.5, '
                                b'"lon": 13.4}'),  # lat/lon without an origin
    ("wrong_type", b"bad-1", b'{"vehicle_id": "bad-1", "ts": "soon", "x": 1, "y": 2}'),
    ("not_finite", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "x": NaN, "y": 2}'),
    ("out_of_range", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "x": 1, "y": 2, '
                               b'"heading": 100}'),  # degrees
    ("out_of_range", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "x": 1, "y": 2, '
                               b'"heading": 1e300}'),
    ("out_of_range", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ms}, "x": 1, "y": 2}'),
    ("out_of_range", b"bad-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "x": 1e12, "y": 2}'),
    ("key_mismatch", b"veh-1", b'{"vehicle_id": "bad-1", "ts": {ts}, "x": 1, "y": 2}'),
    ("empty_key", b"", b'{"vehicle_id": "bad-1", "ts": {ts}, "x": 1, "y": 2}'),
    ("oversized", b"bad-1", b"x" * 5000),
]

# per 10 of the other kinds: 7 decoder rejections, one late, one future, one flood
_EVENTS = ("garbage", "late", "garbage", "flood", "garbage", "garbage", "future", "garbage",
           "garbage", "garbage")
FAR_M = 50_000.0  # hostile vehicles drive this far from any simulated city, 300 m apart


@dataclass
class Feed:
    """Records in arrival order (key, value) and the counts the processor must report."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    # decoder rejections and timing drops, all dead-lettered, by reason
    dead_letters: Counter[str] = field(default_factory=Counter)
    dense: int = 0  # counted only
    # kinematic corrections by reason: (records that may be corrected, the fewest that must)
    corrected: dict[str, tuple[int, int]] = field(default_factory=dict)
    hostile: int = 0
    valid: int = 0


def _vehicle(name: str, lane: int, spoil: Callable[[dict, float], dict]
             ) -> Callable[[float, float], dict]:
    """A vehicle driving +x at 12 m/s on its own lane far away; ``spoil`` makes it hostile."""

    def fix(t: float, t0: float) -> dict:
        rec = {"vehicle_id": name, "ts": round(t, 3), "x": FAR_M + 12.0 * (t - t0),
               "y": FAR_M + 300.0 * lane, "speed": 12.0, "heading": 0.0}
        return spoil(rec, t - t0)

    return fix


def _jumping(rec: dict, since: float) -> dict:
    """A sender switching between two frames every 2 s (3 km apart)."""
    if int(since // 2.0) % 2:
        rec["x"] += 3000.0
    return rec


def _degrees(rec: dict, since: float) -> dict:
    """lat/lon sent as x/y (a sender near lat -89.5, lon -179.5: 12 m/s is 1e-4 deg/s)."""
    rec["x"] = -89.5 + (rec["x"] - FAR_M) * 1e-5
    rec["y"] = -179.5
    return rec


KINEMATIC: dict[str, tuple[Callable[[dict, float], dict], str]] = {
    "kmh-1": (lambda r, s: {**r, "speed": r["speed"] * 3.6}, "speed"),
    "zero-1": (lambda r, s: {**r, "speed": 0.0}, "speed"),
    "compass-1": (lambda r, s: {**r, "heading": math.pi / 2 - r["heading"]}, "heading"),
    "degrees-1": (_degrees, "speed"),
    "frames-1": (_jumping, "jump"),
}
UNJUDGED_FIXES = 12  # a track's first fixes, before the check can judge (0.3 m GPS noise)


def mix(lines: list[bytes], share: float = 0.10) -> Feed:
    """The valid ``lines`` (a simulated run, sorted by arrival) with hostile records mixed in
    at about ``share`` of the valid count."""
    feed = Feed(valid=len(lines))
    recs = [orjson.loads(x) for x in lines]
    t0 = min(r["ts"] for r in recs)
    budget = share * len(lines)
    kin = {name: _vehicle(name, i, spoil) for i, (name, (spoil, _)) in
           enumerate(KINEMATIC.items())}
    n_kin = Counter[str]()
    jumps = 0
    last_frame: int | None = None
    due = t0 + 1.0  # next tick of the hostile vehicles (10 Hz)
    newest = -math.inf
    year = time.time() + 365 * 86400
    k = 0  # hostile ticks emitted
    j = g = 0  # other kinds emitted, garbage among them
    extra = 0.0
    # valid records per 0.1 s tick, and how many other kinds per tick make up the share
    span_ticks = max((max(r["ts"] for r in recs) - t0) * 10.0, 1.0)
    per_tick = max(share * len(lines) / span_ticks - len(KINEMATIC) - 1, 0.5)
    out = feed.records

    def add(key: bytes | None, value: bytes) -> None:
        out.append((key, value))
        feed.hostile += 1

    for line, r in zip(lines, recs, strict=True):
        out.append((r["vehicle_id"].encode(), line))
        newest = max(newest, r["ts"])
        while due <= newest and feed.hostile < budget:
            t = due
            due += 0.1
            for name, fix in kin.items():
                rec = fix(t, t0 + 1.0)
                add(name.encode(), orjson.dumps(rec))
                n_kin[name] += 1
                if name == "frames-1":  # as _jumping decides
                    frame = int((t - (t0 + 1.0)) // 2.0) % 2
                    if last_frame is not None and frame != last_frame:
                        jumps += 1
                    last_frame = frame
            # a clock 1 s fast: quarantined 'ahead'
            add(b"fastclock-1", orjson.dumps({"vehicle_id": "fastclock-1", "ts": round(t + 1, 3),
                                              "x": -FAR_M, "y": -FAR_M, "speed": 0.0}))
            k += 1
            # the other kinds, as many per tick as the share asks (at least one in two ticks)
            extra += per_tick
            flooded = False
            while extra >= 1.0:
                extra -= 1.0
                j += 1
                kind = _EVENTS[j % len(_EVENTS)]
                if kind == "late":  # 20 s behind: its tick is long released
                    name = f"late-{j}"
                    add(name.encode(), orjson.dumps({"vehicle_id": name, "ts": round(t - 20, 3),
                                                     "x": -FAR_M, "y": FAR_M}))
                    feed.dead_letters["late"] += 1
                elif kind == "future":  # a year ahead
                    add(b"future-1", orjson.dumps({"vehicle_id": "future-1", "ts": year + j,
                                                   "x": FAR_M, "y": -FAR_M}))
                    feed.dead_letters["future"] += 1
                elif kind == "flood" and not flooded:  # a second fix within 10 ms
                    flooded = True
                    for dt in (0.002, 0.006):  # one 10 ms bucket
                        add(b"flood-1", orjson.dumps({"vehicle_id": "flood-1",
                                                      "ts": round(t - 0.05 + dt, 3),
                                                      "x": -FAR_M + 300, "y": -FAR_M}))
                    feed.dense += 1
                else:
                    g += 1
                    reason, key, value = GARBAGE[g % len(GARBAGE)]
                    value = value.replace(b"{ts}", str(round(t, 3)).encode()).replace(
                        b"{ms}", str(int(t * 1000)).encode())
                    add(key, value)
                    feed.dead_letters[reason] += 1
    # every fix of the fast clock (its last one only if a record of its partition follows)
    feed.dead_letters["ahead"] = k
    by_reason: dict[str, list[int]] = {}
    for name, (_, reason) in KINEMATIC.items():
        if reason == "jump":
            continue
        lo_hi = by_reason.setdefault(reason, [0, 0])
        lo_hi[0] += max(n_kin[name] - UNJUDGED_FIXES, 0)
        lo_hi[1] += n_kin[name]
    feed.corrected = {r: (hi, lo) for r, (lo, hi) in by_reason.items()}
    feed.corrected["jump"] = (jumps, jumps)
    return feed


_DONE = re.compile(r"dropped (\d+) stale, (\d+) late, (\d+) future, (\d+) dense, (\d+) ahead; "
                   r"corrected (\d+) speed, (\d+) heading, (\d+) jump; (\d+) rejected")
_DONE_NAMES = ("stale", "late", "future", "dense", "ahead", "speed", "heading", "jump",
               "rejected")


def summary_counts(stderr: str) -> dict[str, int] | None:
    """The counts of the last ``done:`` line of ``trajstream process`` (None: no such line)."""
    found = _DONE.findall(stderr)
    if not found:
        return None
    return dict(zip(_DONE_NAMES, map(int, found[-1]), strict=True))
