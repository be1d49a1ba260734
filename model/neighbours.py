"""What the vehicles around each one are doing, in its own frame: the social inputs.

Interaction-aware predictors (social pooling) see the nearest vehicles around the one they
predict: a car closing in on a slower leader brakes, and one with a free gap beside it may
change lanes. The processor already holds every vehicle's latest motion in one
:class:`~model.kinematics.KinematicsTracker` (the state store's), so these inputs are computed
from that tracker right after its update, for the whole batch at once, the same way in the
processor (stream/engine.py) and in training/evaluation (model/data.py).

Zones around the vehicle, in its heading frame: the leader in its own lane, and the nearest
vehicle ahead and behind in the lane to each side. Per zone, how near the vehicle is
(``1 - gap / range``, 0 when nobody is there) and its speed along our heading minus ours.
Vehicles whose last fix is older than ``MAX_AGE_S`` are gone; the others are moved to the
batch's time at their own speed and heading.
"""

from __future__ import annotations

import numpy as np

from trajstream.model.kinematics import Kinematics, KinematicsTracker
from trajstream.model.sorting import stable_argsort

NEIGHBOUR_FEATURES: tuple[str, ...] = (
    "lead_near",  # leader in the own lane: 1 - gap / RANGE_M (0: none within range)
    "lead_dv_mps",  # its speed along our heading minus ours
    "lead_accel_mps2",  # its acceleration
    "left_ahead_near",
    "left_ahead_dv_mps",
    "right_ahead_near",
    "right_ahead_dv_mps",
    "left_behind_near",
    "left_behind_dv_mps",
    "right_behind_near",
    "right_behind_dv_mps",
)
N_NEIGHBOUR_FEATURES = len(NEIGHBOUR_FEATURES)
RANGE_M = 50.0  # how far ahead/behind a neighbour counts (also the grid's cell size)
LANE_HALF_M = 1.6  # |lateral offset| below this: the own lane
SIDE_LANE_M = 5.5  # ...up to this: the lane beside
MAX_AGE_S = 1.0  # a vehicle silent for longer is not around any more
_ZONES = 5  # lead, left ahead, right ahead, left behind, right behind
_KEY = np.int64(1 << 24)


def _cell_runs(cx: np.ndarray, cy: np.ndarray, act: np.ndarray, qx: np.ndarray,
               qy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vehicles ``act`` in cells ``(cx, cy)`` sorted by cell (column-major, stable), and
    per query cell ``(qx, qy)`` and column ``qx - 1 .. qx + 1`` the run of them in the cells
    ``qy - 1 .. qy + 1`` of that column (one run: a column's cells are consecutive), as
    (start, count) arrays (3 per query, row-major), and the sorted ``act``.

    On a dense table of the cells when the occupied area is small (the usual case: a cell
    is 50 m), else by binary search; both give the same runs."""
    x0, y0 = int(cx.min()) - 1, int(cy.min()) - 1
    nx, ny = int(cx.max()) - x0 + 2, int(cy.max()) - y0 + 2
    d = np.array([-1, 0, 1], np.int64)
    if nx * ny <= 8 * cx.shape[0] + 4096:
        cell = (cx - x0) * ny + (cy - y0)
        order = stable_argsort(cell)
        starts = np.zeros(nx * ny + 1, np.int64)
        np.cumsum(np.bincount(cell, minlength=nx * ny), out=starts[1:])
        col = (qx - x0)[:, None] + d[None, :]  # (n, 3)
        r0 = np.maximum(qy - y0 - 1, 0)[:, None]
        r1 = np.minimum(qy - y0 + 1, ny - 1)[:, None]
        ok = (col >= 0) & (col < nx) & (r0 <= r1)
        base = np.clip(col, 0, nx - 1) * ny
        lo = starts[base + np.minimum(r0, ny - 1)]
        cnt = np.where(ok, starts[base + np.maximum(r1, 0) + 1] - lo, 0)
        lo = np.where(ok, lo, 0)
        return lo.reshape(-1), cnt.reshape(-1), act[order]
    keys = cx * _KEY + cy
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    col = ((qx[:, None] + d[None, :]) * _KEY + qy[:, None]).reshape(-1)
    lo = np.searchsorted(keys, col - 1, "left")
    cnt = np.searchsorted(keys, col + 1, "right") - lo
    return lo, cnt, act[order]


def _groups_apart(cx: np.ndarray, qx: np.ndarray, g_act: np.ndarray, g_query: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Grid columns that put each group's vehicles on a grid of its own, the grids side by
    side with two empty columns between them: a vehicle's 3 x 3 cells then hold only its
    own group (a search over every group's vehicles, filtered afterwards, finds the same
    neighbours in the same order, at P partitions P times the candidates)."""
    g_lo = min(int(g_act.min()), int(g_query.min()))
    g_hi = max(int(g_act.max()), int(g_query.max()))
    if g_lo == g_hi:
        return cx, qx
    if g_hi - g_lo < 64:  # partition numbers: no need to number them densely
        r_act, r_query = g_act - g_lo, g_query - g_lo
    else:
        _, rank = np.unique(np.concatenate([g_act, g_query]), return_inverse=True)
        r_act, r_query = rank[: g_act.size], rank[g_act.size:]
    lo = min(int(cx.min()), int(qx.min()))
    width = max(int(cx.max()), int(qx.max())) - lo + 3
    return cx + r_act * width, qx + r_query * width


def neighbour_features(
    kin: Kinematics, slots: np.ndarray, tracker: KinematicsTracker,
    group: np.ndarray | None = None,
) -> np.ndarray:
    """(n, N_NEIGHBOUR_FEATURES) float64 for the batch ``kin`` (the vehicles in ``slots`` of
    ``tracker``, already updated with these fixes).

    ``group`` (per tracker slot) limits the neighbours to vehicles of the same group. The
    processor passes each vehicle's input partition: a partition is always processed whole
    by one process, so a prediction then depends on the input alone, never on which
    partitions a process happens to hold (scale-out, rebalances and restarts give the same
    alerts). With vehicle-keyed partitions, a vehicle sees about 1/P of its neighbours.
    """
    n = len(kin)
    out = np.zeros((n, N_NEIGHBOUR_FEATURES))
    if n == 0:
        return out
    since = float(kin.ts.max()) - MAX_AGE_S
    act = np.flatnonzero(tracker.ts[: tracker.capacity] > since)
    if act.size < 2:
        return out
    # uniform grid over the active vehicles, cell = range: candidates are in the 3 x 3 cells
    cx = np.floor(tracker.x[act] / RANGE_M).astype(np.int64)
    cy = np.floor(tracker.y[act] / RANGE_M).astype(np.int64)
    qx = np.floor(kin.x / RANGE_M).astype(np.int64)
    qy = np.floor(kin.y / RANGE_M).astype(np.int64)
    if group is not None:
        cx, qx = _groups_apart(cx, qx, group[act], group[slots])
    lo, cnt, act = _cell_runs(cx, cy, act, qx, qy)
    ax, ay = tracker.x[act], tracker.y[act]
    total = int(cnt.sum())
    if total == 0:
        return out
    qi = np.repeat(np.arange(n * 3) // 3, cnt)
    ci = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
    # Cheap pass over every candidate pair: the last fixes in the vehicle's frame, kept when
    # within reach of a zone. The margin covers how far any of them moves to the batch's time.
    h_q = kin.heading
    c_q, s_q = np.cos(h_q), np.sin(h_q)
    cq, sq = c_q[qi], s_q[qi]
    dx = ax[ci] - kin.x[qi]
    dy = ay[ci] - kin.y[qi]
    age_max = float(kin.ts.max() - tracker.ts[act].min())
    margin = float(np.abs(tracker.speed[act]).max()) * max(age_max, 0.0) + 1e-6
    reach = ((np.abs(cq * dy - sq * dx) < SIDE_LANE_M + margin)
             & (np.abs(cq * dx + sq * dy) < RANGE_M + margin))
    cand = np.flatnonzero(reach)
    qi, ti = qi[cand], act[ci[cand]]
    other = ti != slots[qi]
    qi, ti = qi[other], ti[other]

    # Exact pass over the few left: moved to the batch's time, zones, nearest per zone.
    h = h_q[qi]
    c, s = c_q[qi], s_q[qi]
    oh, ov = tracker.heading[ti], tracker.speed[ti]
    age = kin.ts[qi] - tracker.ts[ti]
    dx = tracker.x[ti] + ov * np.cos(oh) * age - kin.x[qi]
    dy = tracker.y[ti] + ov * np.sin(oh) * age - kin.y[qi]
    fwd = c * dx + s * dy
    lat = c * dy - s * dx
    gap = np.abs(fwd)
    ahead = fwd > 0.0
    left = (lat >= LANE_HALF_M) & (lat < SIDE_LANE_M)
    right = (lat <= -LANE_HALF_M) & (lat > -SIDE_LANE_M)
    zone = np.where(np.abs(lat) < LANE_HALF_M, np.where(ahead, 0, -1),
                    np.where(left, np.where(ahead, 1, 3), np.where(right, np.where(ahead, 2, 4),
                                                                   -1)))
    sel = np.flatnonzero((zone >= 0) & (gap < RANGE_M))
    grp = qi[sel] * _ZONES + zone[sel]
    gap = gap[sel]
    best = np.full(n * _ZONES, RANGE_M)
    np.minimum.at(best, grp, gap)
    nearest = gap == best[grp]
    win, grp = sel[nearest], grp[nearest]  # the pairs of the nearest per zone, their zone
    dv = np.zeros(n * _ZONES)
    dv[grp] = ov[win] * np.cos(oh[win] - h[win]) - kin.speed[qi[win]]
    acc = np.zeros(n * _ZONES)
    acc[grp] = tracker.accel[ti[win]]
    near = (1.0 - best / RANGE_M).reshape(n, _ZONES)
    dvz = dv.reshape(n, _ZONES)
    out[:, 0], out[:, 1], out[:, 2] = near[:, 0], dvz[:, 0], acc.reshape(n, _ZONES)[:, 0]
    out[:, 3::2] = near[:, 1:]
    out[:, 4::2] = dvz[:, 1:]
    return out
