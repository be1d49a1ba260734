"""Ground truth: which vehicle footprints touch (collisions) or nearly touch (near misses).

Footprints are oriented boxes. Candidate pairs come from a uniform spatial grid (cell a bit
larger than the biggest footprint plus the distance of interest), so the cost grows linearly
with the number of vehicles; exact box overlap (separating axes) and box-to-box gap are then
computed for the candidates only.

A near miss is an *episode*: it opens when two footprints come within ``near_miss_gap_m`` and
closes when they separate past the gap plus a hysteresis (or a vehicle leaves). It counts only
if the vehicles were closing in on each other (relative velocity along the line between their
centres) at ``min_closing_speed_mps`` or more during the episode, so queues at a standstill,
neighbours in adjacent lanes and a turning car's swinging tail are not near misses. One event
per pair per episode, reported at its closest approach. A collision is reported once per pair,
at contact, and replaces any near miss of the same episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trajstream.simulator.messages import vehicle_name

_HALF_NEIGHBOURHOOD = ((0, 0), (1, -1), (1, 0), (1, 1), (0, 1))


@dataclass(frozen=True)
class ClosePairs:
    """Pairs of vehicle indices (``a < b``) whose footprints are within ``max_gap_m``."""

    a: np.ndarray
    b: np.ndarray
    gap: np.ndarray  # metres between the footprints, 0 when they overlap
    overlap: np.ndarray

    @staticmethod
    def empty() -> ClosePairs:
        z = np.zeros(0, dtype=np.int64)
        return ClosePairs(z, z.copy(), np.zeros(0), np.zeros(0, dtype=bool))


def corners(x: np.ndarray, y: np.ndarray, heading: np.ndarray, length: np.ndarray,
            width: np.ndarray) -> np.ndarray:
    """Footprint corners, shape (n, 4, 2), counter-clockwise starting front-left."""
    c, s = np.cos(heading), np.sin(heading)
    hl, hw = length / 2, width / 2
    fx, fy = c * hl, s * hl  # half length along the heading
    lx, ly = -s * hw, c * hw  # half width to the left
    out = np.empty((x.shape[0], 4, 2))
    for k, (sf, sl) in enumerate(((1, 1), (-1, 1), (-1, -1), (1, -1))):
        out[:, k, 0] = x + sf * fx + sl * lx
        out[:, k, 1] = y + sf * fy + sl * ly
    return out


def candidate_pairs(x: np.ndarray, y: np.ndarray, cell_m: float) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (each once, ``a < b``) in the same or adjacent grid cells.

    Cell ranges come from a dense per-cell table (one bincount) when the map has at most a
    few million cells, else from binary searches in the sorted cell keys."""
    n = x.shape[0]
    if n < 2:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy()
    ix = np.floor((x - x.min()) / cell_m).astype(np.int64)
    iy = np.floor((y - y.min()) / cell_m).astype(np.int64) + 1
    m = int(iy.max()) + 2
    key = ix * m + iy
    order = np.argsort(key, kind="stable")
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    n_cells = (int(ix.max()) + 2) * m
    if n_cells <= 4_000_000:
        count = np.bincount(key, minlength=n_cells)
        first = np.cumsum(count) - count

        def cell_range(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return first[k], first[k] + count[k]
    else:
        sk = key[order]

        def cell_range(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.searchsorted(sk, k, side="left"), np.searchsorted(sk, k, side="right")
    a_parts, b_parts = [], []
    for dx, dy in _HALF_NEIGHBOURHOOD:
        lo, hi = cell_range(key + dx * m + dy)
        if (dx, dy) == (0, 0):
            lo = pos + 1  # later members of the own cell only
        counts = np.maximum(hi - lo, 0)
        total = int(counts.sum())
        if total == 0:
            continue
        starts = np.repeat(lo, counts)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        a_parts.append(np.repeat(np.arange(n), counts))
        b_parts.append(order[starts + within])
    if not a_parts:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy()
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    return np.minimum(a, b), np.maximum(a, b)


def box_gap(ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Distance between non-overlapping convex quadrilaterals (P, 4, 2) pairwise."""
    def point_to_edges(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
        p0 = poly[:, None, :, :]
        d = np.roll(poly, -1, axis=1)[:, None, :, :] - p0
        q = pts[:, :, None, :] - p0
        t = np.clip((q * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
        r = q - t[..., None] * d
        return np.sqrt((r * r).sum(-1)).min(axis=(1, 2))

    return np.minimum(point_to_edges(ca, cb), point_to_edges(cb, ca))


def axis_separation(x: np.ndarray, y: np.ndarray, h: np.ndarray, length: np.ndarray,
                    width: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest separation of boxes ``a`` and ``b`` along their four edge normals (pairwise):
    <= 0 means they overlap (separating-axis theorem); otherwise it is a lower bound of the
    gap between them, exact when the boxes are parallel."""
    dx, dy = x[b] - x[a], y[b] - y[a]
    ua = np.stack([np.cos(h[a]), np.sin(h[a])])
    ub = np.stack([np.cos(h[b]), np.sin(h[b])])
    na = np.stack([-ua[1], ua[0]])
    nb = np.stack([-ub[1], ub[0]])
    hla, hwa, hlb, hwb = length[a] / 2, width[a] / 2, length[b] / 2, width[b] / 2
    sep = np.full(a.shape[0], -np.inf)
    for ax in (ua, na, ub, nb):
        dist = np.abs(dx * ax[0] + dy * ax[1])
        ra = hla * np.abs((ua * ax).sum(0)) + hwa * np.abs((na * ax).sum(0))
        rb = hlb * np.abs((ub * ax).sum(0)) + hwb * np.abs((nb * ax).sum(0))
        sep = np.maximum(sep, dist - ra - rb)
    return sep


def close_pairs(x: np.ndarray, y: np.ndarray, heading: np.ndarray, length: np.ndarray,
                width: np.ndarray, max_gap_m: float) -> ClosePairs:
    """Pairs of footprints that overlap or are within ``max_gap_m`` of each other."""
    if x.shape[0] < 2:
        return ClosePairs.empty()
    radius = 0.5 * np.hypot(length, width)
    reach = 2 * float(radius.max()) + max_gap_m
    a, b = candidate_pairs(x, y, max(reach, 1.0))
    keep = np.hypot(x[b] - x[a], y[b] - y[a]) <= radius[a] + radius[b] + max_gap_m
    a, b = a[keep], b[keep]
    if a.shape[0] == 0:
        return ClosePairs.empty()
    sep = axis_separation(x, y, heading, length, width, a, b)
    keep = sep <= max_gap_m
    a, b, sep = a[keep], b[keep], sep[keep]
    overlap = sep <= 0.0
    gap = np.zeros(a.shape[0])
    apart = ~overlap
    if apart.any():
        box = corners(x, y, heading, length, width)
        gap[apart] = box_gap(box[a[apart]], box[b[apart]])
    keep = overlap | (gap <= max_gap_m)
    return ClosePairs(a[keep], b[keep], gap[keep], overlap[keep])


@dataclass
class _Episode:
    min_gap: float
    ts: float
    x: float
    y: float
    rel_speed: float  # at the closest approach
    max_closing: float


@dataclass
class TruthTracker:
    """Turns per-tick close pairs into collision and near-miss events (dicts, truth JSONL)."""

    near_miss_gap_m: float = 1.0
    release_gap_m: float = 1.5
    min_closing_speed_mps: float = 2.0
    collisions: int = 0
    near_misses: int = 0
    _open: dict[tuple[int, int], _Episode] = field(default_factory=dict)
    _collided: set[tuple[int, int]] = field(default_factory=set)

    def update(self, ts: float, vid: np.ndarray, pairs: ClosePairs, x: np.ndarray,
               y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> list[dict]:
        """Feed one tick (indices in ``pairs`` refer to ``vid`` and the state arrays);
        returns the events finalised by this tick, ordered."""
        events: list[dict] = []
        seen: set[tuple[int, int]] = set()
        dvx, dvy = vx[pairs.b] - vx[pairs.a], vy[pairs.b] - vy[pairs.a]
        dx, dy = x[pairs.b] - x[pairs.a], y[pairs.b] - y[pairs.a]
        rel = np.hypot(dvx, dvy)
        closing = -(dx * dvx + dy * dvy) / np.maximum(np.hypot(dx, dy), 1e-6)
        ids = vid.tolist()
        for k, (ia, ib) in enumerate(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)):
            key = _pair(ids[ia], ids[ib])
            gap = float(pairs.gap[k])
            mx, my = (x[ia] + x[ib]) / 2, (y[ia] + y[ib]) / 2
            if pairs.overlap[k]:
                seen.add(key)
                if key not in self._collided:
                    self._collided.add(key)
                    self._open.pop(key, None)
                    self.collisions += 1
                    events.append(_event("collision", key, ts, mx, my, 0.0, float(rel[k])))
                continue
            if key in self._collided:
                continue
            ep = self._open.get(key)
            if gap <= self.near_miss_gap_m and ep is None:
                self._open[key] = _Episode(gap, ts, mx, my, float(rel[k]), float(closing[k]))
                seen.add(key)
            elif ep is not None and gap <= self.release_gap_m:
                seen.add(key)
                ep.max_closing = max(ep.max_closing, float(closing[k]))
                if gap < ep.min_gap:
                    ep.min_gap, ep.ts, ep.x, ep.y, ep.rel_speed = gap, ts, mx, my, float(rel[k])
        for key in [k for k in self._open if k not in seen]:
            events.extend(self._close(key))
        events.sort(key=lambda e: (e["ts"], e["vehicle_a"], e["vehicle_b"]))
        return events

    def finish(self) -> list[dict]:
        """Close every open episode (end of the run)."""
        events: list[dict] = []
        for key in sorted(self._open):
            events.extend(self._close(key))
        events.sort(key=lambda e: (e["ts"], e["vehicle_a"], e["vehicle_b"]))
        return events

    def _close(self, key: tuple[int, int]) -> list[dict]:
        ep = self._open.pop(key)
        if ep.max_closing < self.min_closing_speed_mps:
            return []
        self.near_misses += 1
        return [_event("near_miss", key, ep.ts, ep.x, ep.y, ep.min_gap, ep.rel_speed)]


def _pair(a: int, b: int) -> tuple[int, int]:
    # ordered like the alert contract: by vehicle_id string
    return (a, b) if vehicle_name(a) < vehicle_name(b) else (b, a)


def _event(kind: str, key: tuple[int, int], ts: float, x: float, y: float, gap: float,
           rel: float) -> dict:
    return {
        "type": kind,
        "vehicle_a": vehicle_name(key[0]),
        "vehicle_b": vehicle_name(key[1]),
        "ts": round(ts, 3),
        "x": round(float(x), 2),
        "y": round(float(y), 2),
        "min_distance": round(gap, 3),
        "relative_speed": round(rel, 2),
    }
