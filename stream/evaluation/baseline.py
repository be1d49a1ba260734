"""The textbook warner every figure is compared with: constant-velocity time to collision.

At every risk tick each vehicle moves on a straight line at its current velocity (reported
speed and heading, else the displacement over the last half second); a pair is alerted when
its footprints (oriented rectangles) would touch within ``warning_ttc_s`` (critical within
``critical_ttc_s``) while closing in. No filters and no confirmation: one alert per pair
and episode, another on escalation, like the processor's episodes. It runs causally on the
same positions as the processor, tick by tick on event time, so both warners are judged on
the same input with the same live delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajstream.stream.episodes import EpisodeConfig, EpisodeTracker, conflict_pairs
from trajstream.stream.evaluation.tracks import Tracks
from trajstream.stream.risk import (
    CRITICAL,
    SEVERITY_NAMES,
    WARNING,
    Conflicts,
    candidate_pairs,
    contact_in_interval,
)

__all__ = ["BaselineConfig", "cv_ttc_alerts"]

_VELOCITY_BASE_S = 0.5
_STILL_MPS = 0.5


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    """The textbook thresholds, and the processor's tick and staleness (same defaults)."""

    warning_ttc_s: float = 3.0
    critical_ttc_s: float = 1.5
    tick_s: float = 0.2
    stale_after_s: float = 1.0
    clear_after_s: float = 2.0


def _velocities(tracks: Tracks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per fix: vx, vy and the footprint heading, from what was known at that fix."""
    ts, x, y = tracks.ts, tracks.x, tracks.y
    veh = tracks.vehicle
    # the latest earlier fix of the same vehicle at least _VELOCITY_BASE_S before
    key = veh * 1e7 + (ts - ts.min())
    j = np.searchsorted(key, key - _VELOCITY_BASE_S, side="right") - 1
    j = np.maximum(j, tracks.start[veh])
    dt = ts - ts[j]
    ok = dt > 0
    safe = np.where(ok, dt, 1.0)
    vx = np.where(ok, (x - x[j]) / safe, 0.0)
    vy = np.where(ok, (y - y[j]) / safe, 0.0)
    sp, hd = tracks.speed_reported, tracks.heading_reported
    has = np.isfinite(sp) & np.isfinite(hd)
    vx = np.where(has, np.nan_to_num(sp) * np.cos(np.nan_to_num(hd)), vx)
    vy = np.where(has, np.nan_to_num(sp) * np.sin(np.nan_to_num(hd)), vy)
    moving = np.hypot(vx, vy) > _STILL_MPS
    heading = np.where(np.isfinite(hd), hd,
                       np.where(moving, np.arctan2(vy, vx), tracks.heading))
    return vx, vy, heading


def cv_ttc_alerts(tracks: Tracks, cfg: BaselineConfig | None = None) -> list[dict[str, Any]]:
    """The baseline's alerts on ``tracks`` (dicts with the alert contract's core fields)."""
    cfg = cfg or BaselineConfig()
    n = len(tracks)
    if n < 2:
        return []
    vx_all, vy_all, hd_all = _velocities(tracks)
    veh = tracks.vehicle
    dt = cfg.tick_s
    horizon = cfg.warning_ttc_s
    tick_of = np.ceil(tracks.ts / dt - 1e-9).astype(np.int64)
    order = np.argsort(tick_of, kind="stable")
    ticks_sorted = tick_of[order]
    last = np.full(n, -1, dtype=np.int64)
    tracker = EpisodeTracker(EpisodeConfig(clear_after_s=cfg.clear_after_s, confirm_ticks=1))
    ids = np.asarray(tracks.ids, dtype=object)
    half_l, half_w = 0.5 * tracks.length, 0.5 * tracks.width
    radius = np.hypot(half_l, half_w)
    out: list[dict[str, Any]] = []
    i, m = 0, order.shape[0]
    k = int(ticks_sorted[0])
    stale_ticks = int(math.ceil(cfg.stale_after_s / dt))
    idle_until = k
    while i < m or k <= idle_until:
        j = int(np.searchsorted(ticks_sorted, k, side="right"))
        if j > i:
            rows = order[i:j]
            np.maximum.at(last, veh[rows], rows)
            i = j
            idle_until = k + stale_ticks
        t = k * dt
        have = np.flatnonzero(last >= 0)
        act = have[t - tracks.ts[last[have]] <= cfg.stale_after_s]
        if act.shape[0] >= 2:
            conflicts = _assess(t, act, last[act], tracks, vx_all, vy_all, hd_all, half_l,
                                half_w, radius, horizon, cfg.critical_ttc_s)
            names, _, _ = conflict_pairs(conflicts, ids[act])
            for d in tracker.update(t, names, conflicts):
                out.append({"vehicle_a": d.vehicle_a, "vehicle_b": d.vehicle_b,
                            "ts": round(d.ts, 3), "severity": SEVERITY_NAMES[d.severity],
                            "ttc": round(d.ttc, 2), "warner": "cv-ttc"})
        else:
            tracker.update(t, [], Conflicts.empty())
        k += 1
        if i < m and k > idle_until:  # nobody recent: jump to the next fix's tick
            k = int(ticks_sorted[i])
    return out


def _assess(
    t: float, act: np.ndarray, rows: np.ndarray, tracks: Tracks, vx_all: np.ndarray,
    vy_all: np.ndarray, hd_all: np.ndarray, half_l: np.ndarray, half_w: np.ndarray,
    radius: np.ndarray, horizon: float, critical_s: float,
) -> Conflicts:
    """Straight-line footprint contacts within ``horizon`` among the ``act`` vehicles."""
    vx, vy = vx_all[rows], vy_all[rows]
    since = t - tracks.ts[rows]
    x = tracks.x[rows] + vx * since
    y = tracks.y[rows] + vy * since
    hd = hd_all[rows]
    r = radius[act]
    ex, ey = x + vx * horizon, y + vy * horizon
    lo = np.stack([np.minimum(x, ex) - r, np.minimum(y, ey) - r], axis=1)
    hi = np.stack([np.maximum(x, ex) + r, np.maximum(y, ey) + r], axis=1)
    cell = float(np.clip(np.median(np.max(hi - lo, axis=1)), 8.0, 200.0))
    a, b = candidate_pairs(lo, hi, cell)
    still = np.hypot(vx, vy) < _STILL_MPS
    keep = ~(still[a] & still[b])
    a, b = a[keep], b[keep]
    if a.shape[0] == 0:
        return Conflicts.empty()
    x0, y0 = x[b] - x[a], y[b] - y[a]
    rvx, rvy = vx[b] - vx[a], vy[b] - vy[a]
    x1, y1 = x0 + rvx * horizon, y0 + rvy * horizon
    ca, sa, cb, sb = np.cos(hd[a]), np.sin(hd[a]), np.cos(hd[b]), np.sin(hd[b])
    va, vb = act[a], act[b]
    hit, f = contact_in_interval(x0, y0, x1, y1, ca, sa, half_l[va], half_w[va], cb, sb,
                                 half_l[vb], half_w[vb])
    closing = -(x0 * rvx + y0 * rvy) > 0
    hit &= (f > 0) | closing
    ttc = f * horizon
    a, b, ttc = a[hit], b[hit], ttc[hit]
    cx, cy = 0.5 * (x[a] + x[b]), 0.5 * (y[a] + y[b])
    zeros = np.zeros(a.shape[0])
    sev = np.where(ttc < critical_s, CRITICAL, WARNING).astype(np.int8)
    o = np.lexsort((b, a))
    return Conflicts(a[o], b[o], ttc[o], zeros, t + ttc[o], cx[o], cy[o], sev[o])
