"""What really happened, from a positions file: every vehicle's track and footprint over time.

The evaluation judges alerts against the recorded motion, not against any model: where each
footprint (an oriented rectangle) was at any instant, linearly interpolated between fixes.
Headings come from the records when they carry one, otherwise from the direction of travel
(held while the vehicle is nearly still, where the direction of noise means nothing).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.errors import TrajstreamError
from trajstream.inputs import lines, open_input
from trajstream.simulator.truth import box_gap, corners
from trajstream.stream.codec import CodecConfig, PositionBatch, Rejection, decode_batch
from trajstream.stream.risk import footprints_overlap

__all__ = ["Tracks", "footprint_gap", "read_lines", "read_positions", "sample_times"]

_CHUNK = 50_000
_HEADING_BASE_M = 1.0  # displacement over which a missing heading is measured


def read_lines(path: str | Path) -> Iterator[bytes]:
    """Non-empty lines of a JSONL file, plain or gzip."""
    p = Path(path)
    if not p.is_file():
        raise TrajstreamError(f"{p}: no such file")
    with open_input(p) as f:
        for line in lines(f, p):
            line = line.strip()
            if line:
                yield line


def read_positions(path: str | Path, codec: CodecConfig | None = None) -> PositionBatch:
    """Every valid position of a file, decoded like the processor decodes them.

    A file without one (empty, another kind of JSON such as an alerts file, not JSON) is an
    error naming how many lines were read and why they were refused: scored as it is, it
    would pass for traffic without vehicles.
    """
    cfg = codec or CodecConfig(max_message_bytes=1 << 16)
    parts: list[PositionBatch] = []
    refused = _Refused()
    chunk: list[bytes | None] = []
    for line in read_lines(path):
        chunk.append(line)
        if len(chunk) >= _CHUNK:
            parts.append(refused.decode(chunk, cfg))
            chunk = []
    if chunk:
        parts.append(refused.decode(chunk, cfg))
    if not any(len(p.ts) for p in parts):
        raise TrajstreamError(f"{path}: no valid positions{refused.why_none()}")
    return PositionBatch(**{
        f: np.concatenate([getattr(p, f) for p in parts])
        for f in ("vehicle_id", "ts", "x", "y", "speed", "heading", "length", "width", "index")
    })


class _Refused:
    """The lines read and the reasons of those refused: counts and the first example."""

    def __init__(self) -> None:
        self.lines = 0
        self.reasons: Counter[str] = Counter()
        self.first: Rejection | None = None

    def decode(self, chunk: list[bytes | None], cfg: CodecConfig) -> PositionBatch:
        batch, rejections = decode_batch(None, chunk, cfg)
        self.lines += len(chunk)
        self.reasons.update(r.reason for r in rejections)
        if self.first is None and rejections:
            self.first = rejections[0]
        return batch

    def why_none(self) -> str:
        """`` (3 lines read: missing_field 3; e.g. ...)``: the reasons, most frequent first."""
        if not self.lines:
            return " (the file is empty)"
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.reasons.most_common())
        example = f"; e.g. {self.first.detail}" if self.first is not None else ""
        return f" ({self.lines} line{'s' if self.lines != 1 else ''} read: {reasons}{example})"


@dataclass(frozen=True)
class Tracks:
    """Every vehicle's fixes sorted by event time, as flat arrays with per-vehicle ranges.

    Vehicle ``v`` owns rows ``start[v]:end[v]`` (``vehicle[r]`` is the vehicle of row r);
    ``heading`` is always finite (reported or from the direction of travel),
    ``length``/``width`` the vehicle's last reported size.
    """

    ids: list[str]
    index: dict[str, int]
    start: np.ndarray
    end: np.ndarray
    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed_reported: np.ndarray  # NaN where the record carried none
    heading_reported: np.ndarray  # NaN where the record carried none
    length: np.ndarray  # per vehicle
    width: np.ndarray  # per vehicle

    @staticmethod
    def from_batch(b: PositionBatch) -> Tracks:
        ids_arr = np.asarray(b.vehicle_id, dtype=object).astype(str)
        uniq, inv = np.unique(ids_arr, return_inverse=True)
        order = np.lexsort((b.ts, inv))
        inv = inv[order]
        ts, x, y = b.ts[order], b.x[order], b.y[order]
        # duplicate fixes of a vehicle at one event time: keep the first
        dup = np.zeros(ts.shape[0], dtype=bool)
        dup[1:] = (inv[1:] == inv[:-1]) & (ts[1:] <= ts[:-1])
        keep = ~dup
        inv, ts, x, y = inv[keep], ts[keep], x[keep], y[keep]
        hd = b.heading[order][keep]
        sp = b.speed[order][keep]
        length = b.length[order][keep]
        width = b.width[order][keep]
        n = uniq.shape[0]
        start = np.searchsorted(inv, np.arange(n), side="left")
        end = np.searchsorted(inv, np.arange(n), side="right")
        heading = _headings(inv, x, y, hd)
        last = end - 1
        ln = np.where(np.isfinite(length[last]) & (length[last] > 0), length[last],
                      DEFAULT_LENGTH_M)
        wd = np.where(np.isfinite(width[last]) & (width[last] > 0), width[last], DEFAULT_WIDTH_M)
        ids = [str(v) for v in uniq]
        return Tracks(ids, {v: i for i, v in enumerate(ids)}, start, end, ts, x, y, heading,
                      sp, hd, ln, wd)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vehicle(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.ids)), self.end - self.start)

    def first_seen(self, v: int) -> float:
        return float(self.ts[self.start[v]])

    def last_seen(self, v: int) -> float:
        return float(self.ts[self.end[v] - 1])

    def vehicle_hours(self) -> float:
        """Observed time summed over vehicles: each track's span plus one median fix interval
        (so n fixes at 10 Hz count n / 10 s)."""
        span = self.ts[self.end - 1] - self.ts[self.start]
        gaps = np.diff(self.ts)
        same = np.ones(gaps.shape[0], dtype=bool)
        same[self.end[:-1] - 1] = False  # no gap across two vehicles
        step = float(np.median(gaps[same])) if same.any() else 0.1
        return float(span.sum() + step * len(self)) / 3600.0

    def state(self, v: int, t: np.ndarray) -> tuple[np.ndarray, ...]:
        """``x``, ``y``, ``heading`` and ``present`` of vehicle ``v`` at event times ``t``,
        interpolated between fixes; ``present`` is False outside the track."""
        s, e = int(self.start[v]), int(self.end[v])
        ts = self.ts[s:e]
        x = np.interp(t, ts, self.x[s:e])
        y = np.interp(t, ts, self.y[s:e])
        h = self.heading[s:e]
        k = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, e - s - 1)
        k2 = np.minimum(k + 1, e - s - 1)
        span = np.where(ts[k2] > ts[k], ts[k2] - ts[k], 1.0)
        f = np.clip((t - ts[k]) / span, 0.0, 1.0)
        dh = np.angle(np.exp(1j * (h[k2] - h[k])))
        heading = h[k] + f * dh
        present = (t >= ts[0] - 1e-9) & (t <= ts[-1] + 1e-9)
        return x, y, heading, present


def _headings(inv: np.ndarray, x: np.ndarray, y: np.ndarray, reported: np.ndarray) -> np.ndarray:
    """Reported headings where present, else the direction of travel over about a metre
    (forward difference, then backward), held across still stretches."""
    out = reported.copy()
    missing = ~np.isfinite(out)
    if not missing.any():
        return out
    bounds = np.flatnonzero(np.diff(inv)) + 1
    for s, e in zip(np.r_[0, bounds], np.r_[bounds, inv.shape[0]], strict=True):
        m = missing[s:e]
        if not m.any():
            continue
        out[s:e] = np.where(m, _travel_direction(x[s:e], y[s:e]), out[s:e])
    return out


def _travel_direction(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    h = np.full(n, np.nan)
    if n < 2:
        return np.zeros(n)
    # the first later fix at least _HEADING_BASE_M away (cumulative path length)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    j = np.searchsorted(arc, arc + _HEADING_BASE_M, side="left")
    ok = j < n
    jj = np.minimum(j, n - 1)
    h[ok] = np.arctan2(y[jj[ok]] - y[ok], x[jj[ok]] - x[ok])
    # near the end: the last earlier fix at least _HEADING_BASE_M behind
    i = np.searchsorted(arc, arc - _HEADING_BASE_M, side="right") - 1
    back = ~ok & (i >= 0)
    h[back] = np.arctan2(y[back] - y[i[back]], x[back] - x[i[back]])
    # still stretches: hold the last known direction (then the first one, then east)
    valid = np.isfinite(h)
    if not valid.any():
        return np.zeros(n)
    idx = np.where(valid, np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(valid))
    held = h[idx]
    held[:first] = h[first]
    return np.where(np.isfinite(held), held, 0.0)


def footprint_gap(
    xa: np.ndarray, ya: np.ndarray, ha: np.ndarray, la: float, wa: float,
    xb: np.ndarray, yb: np.ndarray, hb: np.ndarray, lb: float, wb: float,
) -> np.ndarray:
    """Distance between two oriented rectangles at each sample, 0 where they overlap."""
    m = xa.shape[0]
    x = np.concatenate([xa, xb])
    y = np.concatenate([ya, yb])
    h = np.concatenate([ha, hb])
    ln = np.concatenate([np.full(m, la), np.full(m, lb)])
    wd = np.concatenate([np.full(m, wa), np.full(m, wb)])
    box = corners(x, y, h, ln, wd)
    overlap = footprints_overlap(xb - xa, yb - ya, np.cos(ha), np.sin(ha), la / 2, wa / 2,
                                 np.cos(hb), np.sin(hb), lb / 2, wb / 2)
    gap = np.zeros(m)
    apart = ~overlap
    if apart.any():
        gap[apart] = box_gap(box[:m][apart], box[m:][apart])
    return gap


def sample_times(t0: float, t1: float, step_s: float) -> np.ndarray:
    """``t0, t0 + step, ...`` up to and including ``t1`` (at least one sample)."""
    k = max(0, int(math.floor((t1 - t0) / step_s + 1e-9)))
    return t0 + step_s * np.arange(k + 1)
