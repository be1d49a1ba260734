"""Collision risk between predicted paths: grid candidates, footprint contact, time to contact.

Pipeline of :func:`assess` at event time ``t`` (all vectorised, no per-pair Python):

1. **Common time frame.** Vehicle i's path point k is at ``ts_i + offsets[k]`` and its fix at
   ``ts_i``; every path is interpolated onto the samples ``t + j * sample_step_s`` for
   ``j * sample_step_s < warning_ttc_s`` (beyond the path end it continues along its last
   segment). Contacts later than ``warning_ttc_s`` never raise an alert, so they are not looked
   for.
2. **Braking awareness.** A vehicle decelerating harder than ``brake_accel_mps2`` travels along
   its predicted route no further than its current deceleration allows (``v t - d t^2 / 2``,
   stopping at ``v^2 / 2d``). A predictor that already brakes is unaffected; constant velocity
   no longer drives a braking follower into the car it is stopping behind, and a braking
   leader comes back towards its follower.
3. **Candidates.** Each vehicle's swept bounding box over the samples, grown by its footprint
   radius and half the margin, is binned into a uniform grid; pairs sharing a cell whose boxes
   overlap are candidates (kept in one cell only, so no sort-and-unique). Cost is linear in
   vehicles for a given density, never quadratic.
4. **Contact.** For each candidate and sample, heading-aligned rectangles (``length`` x
   ``width``, heading from the path tangent, or the reported heading when slower than
   ``still_speed_mps``), each grown by ``margin_m / 2`` on every side, are tested with the
   separating-axis theorem. ``ttc`` is the first sample in contact; ``min_distance`` the least
   centre-to-centre distance over the samples; the closest-approach point is the midpoint of
   the two centres at contact.
5. **Nuisance suppression**, as a forward-collision warner does it; constant-velocity
   extrapolation of noisy fixes otherwise raises alerts for ordinary traffic:

   - both vehicles still (queue, parking): never a conflict;
   - closing speed along the line of centres at contact below ``min_closing_speed_mps``:
     footprints touching by noise, creeping, not a collision course;
   - near-parallel (same or opposite direction, within ``parallel_tol_rad``) and currently a
     lane apart (lateral offset >= ``lane_width_m / 2``): vehicles keep their lanes unless
     the measured lateral closing speed exceeds what heading noise explains,
     ``lateral_heading_tol_rad * hypot(v_a, v_b)``. A 0.02-0.03 rad heading error grows to
     more than the 1.7 m gap between side-by-side cars within 3 s at city speed;
   - same direction, same lane (following): the follower must need more deceleration than
     ``comfort_decel_mps2`` to stop behind the leader (leader's own braking included) and more
     than it is already braking with. A driver calmly braking for a queue is not warned; one
     who does not brake is warned once an ordinary stop no longer fits.

   The episode tracker additionally requires a conflict to persist over consecutive
   assessments (stream.episodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from model.kinematics import Kinematics
from model.predictors import PathSpec
from stream.errors import ConfigError

DEFAULT_LENGTH_M = 4.5
DEFAULT_WIDTH_M = 1.8
WARNING = 1
CRITICAL = 2
SEVERITY_NAMES = {WARNING: "warning", CRITICAL: "critical"}

_CHUNK_PAIRS = 16384  # exact check in chunks: bounds memory at any fleet size


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Thresholds of :func:`assess`; see the module docstring for what each filter is for."""

    critical_ttc_s: float = 1.5
    warning_ttc_s: float = 3.0
    margin_m: float = 0.25  # gap below which footprints are in contact; << the 1.7 m lane gap
    sample_step_s: float = 0.1  # resolution of the contact search (and of ttc)
    max_speed_mps: float = 100.0  # path segments faster than this are clipped (bad predictor)
    still_speed_mps: float = 0.5
    min_closing_speed_mps: float = 1.0
    lane_width_m: float = 3.5
    parallel_tol_rad: float = 0.3
    lateral_heading_tol_rad: float = 0.04
    lateral_speed_tol_mps: float = 1.0
    comfort_decel_mps2: float = 3.0
    standstill_gap_m: float = 1.0  # bumper gap a follower stops at, for the required braking
    brake_accel_mps2: float = 1.0  # decelerations above this re-time the path
    cell_m: float | None = None  # grid cell; None picks it from the swept boxes

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"risk {f.name} must be a finite number >= 0, got {v!r}")
        positive = ("critical_ttc_s", "warning_ttc_s", "sample_step_s", "max_speed_mps",
                    "lane_width_m", "comfort_decel_mps2", "brake_accel_mps2")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"risk {name} must be > 0, got {getattr(self, name)!r}")
        if self.cell_m is not None and self.cell_m <= 0:
            raise ConfigError(f"risk cell_m must be > 0 or None (auto), got {self.cell_m!r}")
        if self.critical_ttc_s > self.warning_ttc_s:
            raise ConfigError(
                f"risk critical_ttc_s ({self.critical_ttc_s}) must not exceed warning_ttc_s "
                f"({self.warning_ttc_s})"
            )
        if self.parallel_tol_rad >= math.pi / 2:
            raise ConfigError(f"risk parallel_tol_rad must be < pi/2, got {self.parallel_tol_rad}")

    @property
    def samples(self) -> int:
        """Number of contact-search samples, at ``j * sample_step_s < warning_ttc_s``."""
        return max(1, int(math.ceil(self.warning_ttc_s / self.sample_step_s - 1e-9)))


@dataclass(frozen=True, slots=True)
class Fleet:
    """Vehicles to assess at one event time; arrays (n,), ``paths`` (n, P, 2).

    ``paths[i, k]`` is the predicted absolute position at ``ts[i] + spec.offsets_s[k]``.
    Angles in radians counter-clockwise from +x, speeds m/s, ``accel`` m/s^2 (negative when
    braking), ``length``/``width`` metres.
    """

    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    yaw_rate: np.ndarray
    accel: np.ndarray
    length: np.ndarray
    width: np.ndarray
    paths: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray) -> Fleet:
        return Fleet(**{f: getattr(self, f)[index] for f in self.__slots__})

    @staticmethod
    def from_kinematics(
        kin: Kinematics,
        paths: np.ndarray,
        length: np.ndarray | None = None,
        width: np.ndarray | None = None,
    ) -> Fleet:
        """The fleet of a predictor step; sizes default to 4.5 x 1.8 m."""
        n = len(kin)
        return Fleet(
            ts=kin.ts, x=kin.x, y=kin.y, speed=kin.speed, heading=kin.heading,
            yaw_rate=kin.yaw_rate, accel=kin.accel,
            length=np.full(n, DEFAULT_LENGTH_M) if length is None else length,
            width=np.full(n, DEFAULT_WIDTH_M) if width is None else width,
            paths=paths,
        )


@dataclass(frozen=True, slots=True)
class Conflicts:
    """Predicted contacts within ``warning_ttc_s``, arrays (m,), sorted by (a, b).

    ``a < b`` index the :class:`Fleet`. ``ttc`` is seconds from the assessment time to first
    contact; ``cpa_t``/``cpa_x``/``cpa_y`` the event time and midpoint of the two centres
    there; ``min_distance`` the least centre distance over the searched window; ``severity``
    1 (warning) or 2 (critical).
    """

    a: np.ndarray
    b: np.ndarray
    ttc: np.ndarray
    min_distance: np.ndarray
    cpa_t: np.ndarray
    cpa_x: np.ndarray
    cpa_y: np.ndarray
    severity: np.ndarray

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @staticmethod
    def empty() -> Conflicts:
        i, f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return Conflicts(i, i, f, f, f, f, f, np.zeros(0, np.int8))


def footprints_overlap(
    d: np.ndarray,
    ua: np.ndarray,
    half_la: np.ndarray,
    half_wa: np.ndarray,
    ub: np.ndarray,
    half_lb: np.ndarray,
    half_wb: np.ndarray,
) -> np.ndarray:
    """Separating-axis test of two rectangles; broadcasts over leading dimensions.

    ``d`` (..., 2) is centre b minus centre a, ``ua``/``ub`` (..., 2) unit heading vectors,
    ``half_*`` half extents (...). True where the rectangles overlap (touching counts).
    """
    ax, ay = ua[..., 0], ua[..., 1]
    bx, by = ub[..., 0], ub[..., 1]
    dx, dy = d[..., 0], d[..., 1]
    c = np.abs(ax * bx + ay * by)
    s = np.abs(ax * by - ay * bx)
    sep = np.abs(dx * ax + dy * ay) > half_la + half_lb * c + half_wb * s
    sep |= np.abs(dy * ax - dx * ay) > half_wa + half_lb * s + half_wb * c
    sep |= np.abs(dx * bx + dy * by) > half_lb + half_la * c + half_wa * s
    sep |= np.abs(dy * bx - dx * by) > half_wb + half_la * s + half_wa * c
    return ~sep


def sample_paths(
    t: float, fleet: Fleet, spec: PathSpec, cfg: RiskConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (n, J, 2) at ``t + j * sample_step_s``, braking-aware.

    The fix is the path's point at ``ts_i``; samples before it (``ts_i > t``) stay at the fix.
    """
    n, p = fleet.paths.shape[0], fleet.paths.shape[1]
    step = spec.step_s
    tau = cfg.sample_step_s * np.arange(cfg.samples)
    start = np.stack([fleet.x, fleet.y], axis=-1)
    seg = np.diff(np.concatenate([start[:, None, :], fleet.paths], axis=1), axis=1)  # (n,P,2)
    seg_len = np.hypot(seg[..., 0], seg[..., 1])
    limit = cfg.max_speed_mps * step
    if np.any(seg_len > limit):  # an implausible path: clip its speed, keep its direction
        scale = np.minimum(1.0, limit / np.maximum(seg_len, 1e-12))
        seg = seg * scale[..., None]
        seg_len = seg_len * scale
    cum = np.concatenate([start[:, None, :], start[:, None, :] + np.cumsum(seg, axis=1)], axis=1)

    since = np.maximum((t - fleet.ts)[:, None] + tau[None, :], 0.0)  # (n,J) time since fix
    u = since / step
    k = np.minimum(u.astype(np.int64), p - 1)
    frac = u - k  # > 1 past the path end: continue along the last segment
    rows = np.arange(n)[:, None]
    s_k = seg[rows, k]  # (n,J,2)
    pos = cum[rows, k] + frac[..., None] * s_k
    vel = s_k / step

    braking = (fleet.accel < -cfg.brake_accel_mps2) & (fleet.speed > cfg.still_speed_mps)
    if np.any(braking):
        bi = np.flatnonzero(braking)
        pos[bi], vel[bi] = _retime_braking(
            since[bi], u[bi], k[bi], frac[bi], cum[bi], seg[bi], seg_len[bi],
            fleet.speed[bi], -fleet.accel[bi],
        )
    return pos, vel


def _retime_braking(
    since: np.ndarray, u: np.ndarray, k: np.ndarray, frac: np.ndarray, cum: np.ndarray,
    seg: np.ndarray, seg_len: np.ndarray, speed: np.ndarray, decel: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Move each vehicle along its predicted route no further than its braking allows."""
    nb, p = seg_len.shape
    arc = np.concatenate([np.zeros((nb, 1)), np.cumsum(seg_len, axis=1)], axis=1)  # (nb,P+1)
    rows = np.arange(nb)[:, None]
    s_path = arc[rows, k] + frac * seg_len[rows, k]
    t_stop = (speed / decel)[:, None]
    tt = np.minimum(since, t_stop)
    s_kin = speed[:, None] * tt - 0.5 * decel[:, None] * tt * tt
    s = np.minimum(s_path, s_kin)
    # locate s on each row's polyline with one searchsorted over row-offset arc lengths
    stride = arc[:, -1].max() + 1.0 + s.max()
    off = stride * np.arange(nb)
    q = np.searchsorted((arc + off[:, None]).ravel(), (s + off[:, None]).ravel(), side="right")
    q = np.clip(q.reshape(s.shape) - 1 - rows * (p + 1), 0, p - 1)
    ln = seg_len[rows, q]
    f = np.where(ln > 0, (s - arc[rows, q]) / np.where(ln > 0, ln, 1.0), 0.0)
    s_q = seg[rows, q]
    pos = cum[rows, q] + f[..., None] * s_q
    v_now = np.maximum(speed[:, None] - decel[:, None] * since, 0.0)
    dirn = s_q / np.where(ln > 0, ln, 1.0)[..., None]
    return pos, dirn * v_now[..., None]


def candidate_pairs(lo: np.ndarray, hi: np.ndarray, cell_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a < b) whose boxes ``[lo, hi]`` (n, 2) overlap, via a uniform grid.

    Every box is entered in each cell it covers; a pair is reported by the one cell holding
    the lower-left corner of the boxes' intersection, so no pair appears twice.
    """
    n = lo.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    origin = lo.min(axis=0)
    c0 = np.floor((lo - origin) / cell_m).astype(np.int64)
    c1 = np.floor((hi - origin) / cell_m).astype(np.int64)
    ny_all = int(c1[:, 1].max()) + 2
    span_x = c1[:, 0] - c0[:, 0] + 1
    span_y = c1[:, 1] - c0[:, 1] + 1
    count = span_x * span_y
    veh = np.repeat(np.arange(n), count)
    local = np.arange(veh.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    sy = span_y[veh]
    key = (c0[veh, 0] + local // sy) * ny_all + (c0[veh, 1] + local % sy)

    order = np.argsort(key, kind="stable")
    ks, vs = key[order], veh[order]
    e = ks.shape[0]
    bound = np.flatnonzero(ks[1:] != ks[:-1]) + 1
    starts = np.concatenate([[0], bound])
    ends = np.concatenate([bound, [e]])
    group_end = np.repeat(ends, ends - starts)
    per = group_end - np.arange(e) - 1  # partners after each entry in its cell
    total = int(per.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.repeat(np.arange(e), per)
    second = first + 1 + np.arange(total) - np.repeat(np.cumsum(per) - per, per)
    i, j = vs[first], vs[second]
    lo_i, lo_j, hi_i, hi_j = lo[i], lo[j], hi[i], hi[j]
    corner = np.maximum(lo_i, lo_j)
    keep = np.all(corner <= np.minimum(hi_i, hi_j), axis=1)
    cc = np.floor((corner - origin) / cell_m).astype(np.int64)
    keep &= cc[:, 0] * ny_all + cc[:, 1] == ks[first]
    i, j = i[keep], j[keep]
    return np.minimum(i, j), np.maximum(i, j)


def _auto_cell(lo: np.ndarray, hi: np.ndarray) -> float:
    """About the typical swept-box size: few cells per box, few boxes per cell."""
    ext = np.max(hi - lo, axis=1)
    return float(np.clip(np.median(ext), 8.0, 200.0))


def assess(t: float, fleet: Fleet, spec: PathSpec, cfg: RiskConfig | None = None) -> Conflicts:
    """Predicted contacts within ``cfg.warning_ttc_s`` of event time ``t`` (module docstring).

    Vehicles with a non-finite position, speed, heading or path are left out.
    """
    cfg = cfg or RiskConfig()
    n = len(fleet)
    if n < 2:
        return Conflicts.empty()
    ok = (
        np.isfinite(fleet.ts) & np.isfinite(fleet.x) & np.isfinite(fleet.y)
        & np.isfinite(fleet.speed) & np.isfinite(fleet.heading)
        & np.all(np.isfinite(fleet.paths), axis=(1, 2))
    )
    idx = np.flatnonzero(ok)
    if idx.shape[0] < 2:
        return Conflicts.empty()
    if idx.shape[0] < n:
        fleet = fleet.take(idx)
    accel = np.nan_to_num(fleet.accel)
    yaw = np.nan_to_num(fleet.yaw_rate)
    length = np.where(np.isfinite(fleet.length) & (fleet.length > 0), fleet.length,
                      DEFAULT_LENGTH_M)
    width = np.where(np.isfinite(fleet.width) & (fleet.width > 0), fleet.width, DEFAULT_WIDTH_M)
    fleet = Fleet(fleet.ts, fleet.x, fleet.y, fleet.speed, fleet.heading, yaw, accel, length,
                  width, fleet.paths)

    # Work relative to a local origin: keeps float precision for large coordinates.
    ox, oy = float(np.median(fleet.x)), float(np.median(fleet.y))
    local = Fleet(fleet.ts, fleet.x - ox, fleet.y - oy, fleet.speed, fleet.heading, yaw, accel,
                  length, width, fleet.paths - np.array([ox, oy]))
    pos, vel = sample_paths(t, local, spec, cfg)

    half_margin = 0.5 * cfg.margin_m
    radius = 0.5 * np.hypot(length, width) + half_margin
    lo = pos.min(axis=1) - radius[:, None]
    hi = pos.max(axis=1) + radius[:, None]
    cell = cfg.cell_m if cfg.cell_m is not None else _auto_cell(lo, hi)
    a, b = candidate_pairs(lo, hi, cell)
    still = fleet.speed < cfg.still_speed_mps
    moving = ~(still[a] & still[b])
    a, b = a[moving], b[moving]

    parts = [
        _exact(t, local, pos, vel, radius, a[s: s + _CHUNK_PAIRS], b[s: s + _CHUNK_PAIRS], cfg)
        for s in range(0, a.shape[0], _CHUNK_PAIRS)
    ]
    parts = [p for p in parts if len(p)]
    if not parts:
        return Conflicts.empty()
    c = Conflicts(*(np.concatenate([getattr(p, f) for p in parts])
                    for f in Conflicts.__slots__))
    order = np.lexsort((c.b, c.a))
    return Conflicts(
        a=idx[c.a[order]], b=idx[c.b[order]], ttc=c.ttc[order],
        min_distance=c.min_distance[order], cpa_t=c.cpa_t[order], cpa_x=c.cpa_x[order] + ox,
        cpa_y=c.cpa_y[order] + oy, severity=c.severity[order],
    )


def _exact(
    t: float, fleet: Fleet, pos: np.ndarray, vel: np.ndarray, radius: np.ndarray,
    a: np.ndarray, b: np.ndarray, cfg: RiskConfig,
) -> Conflicts:
    """Contact search and nuisance filters for one chunk of candidate pairs."""
    if a.shape[0] == 0:
        return Conflicts.empty()
    # Cheap prune: circumscribed circles must meet at some sample.
    d = pos[b] - pos[a]  # (m,J,2)
    dist = np.hypot(d[..., 0], d[..., 1])
    near = np.any(dist < (radius[a] + radius[b])[:, None], axis=1)
    if not np.any(near):
        return Conflicts.empty()
    a, b, d, dist = a[near], b[near], d[near], dist[near]

    head = np.stack([np.cos(fleet.heading), np.sin(fleet.heading)], axis=-1)
    ua, ub = _unit_heading(vel[a], head[a], cfg), _unit_heading(vel[b], head[b], cfg)
    hm = 0.5 * cfg.margin_m
    la, wa = (0.5 * fleet.length[a] + hm)[:, None], (0.5 * fleet.width[a] + hm)[:, None]
    lb, wb = (0.5 * fleet.length[b] + hm)[:, None], (0.5 * fleet.width[b] + hm)[:, None]
    touch = footprints_overlap(d, ua, la, wa, ub, lb, wb)
    hit = np.any(touch, axis=1)
    if not np.any(hit):
        return Conflicts.empty()
    a, b, d, dist, touch = a[hit], b[hit], d[hit], dist[hit], touch[hit]
    ua, ub, la, wa, lb, wb = ua[hit], ub[hit], la[hit], wa[hit], lb[hit], wb[hit]
    frame = _PairFrame(fleet, a, b, d[:, 0], cfg)

    # Near-parallel pairs that are not following in one lane (oncoming, or a lane apart): the
    # contact must survive the lateral drift heading noise alone produces by then
    # (tol * distance travelled), i.e. hold with boxes narrowed by it.
    tau = cfg.sample_step_s * np.arange(d.shape[1])
    rho = cfg.lateral_heading_tol_rad * np.hypot(fleet.speed[a], fleet.speed[b])[:, None] * tau
    lateral = frame.parallel & ~frame.following
    rho = np.where(lateral[:, None], 0.5 * rho, 0.0)
    robust = footprints_overlap(d, ua, la, np.maximum(wa - rho, 0.0), ub, lb,
                                np.maximum(wb - rho, 0.0))
    m = a.shape[0]
    r = np.arange(m)
    jc = np.argmax(touch, axis=1)

    # Closing speed along the line of centres at first contact.
    dc = d[r, jc]
    vrel = vel[b, jc] - vel[a, jc]
    dn = np.hypot(dc[:, 0], dc[:, 1])
    closing = np.where(
        dn > 1e-6, -(dc[:, 0] * vrel[:, 0] + dc[:, 1] * vrel[:, 1]) / np.maximum(dn, 1e-6),
        np.hypot(vrel[:, 0], vrel[:, 1]),
    )
    keep = (closing >= cfg.min_closing_speed_mps) & np.any(robust, axis=1)
    keep &= _plausible(fleet, a, b, frame, cfg)

    a, b, jc, d, dist = a[keep], b[keep], jc[keep], d[keep], dist[keep]
    r = np.arange(a.shape[0])
    ttc = jc * cfg.sample_step_s
    mid = 0.5 * (pos[a, jc] + pos[b, jc])
    return Conflicts(
        a=a, b=b, ttc=ttc, min_distance=dist.min(axis=1), cpa_t=t + ttc,
        cpa_x=mid[:, 0], cpa_y=mid[:, 1],
        severity=np.where(ttc < cfg.critical_ttc_s, CRITICAL, WARNING).astype(np.int8),
    )


def _unit_heading(vel: np.ndarray, head: np.ndarray, cfg: RiskConfig) -> np.ndarray:
    """Direction of travel along the path; the reported heading when (nearly) still."""
    sp = np.hypot(vel[..., 0], vel[..., 1])
    moving = sp > cfg.still_speed_mps
    return np.where(moving[..., None], vel / np.where(moving, sp, 1.0)[..., None],
                    head[:, None, :])


def _lateral_tol(va: np.ndarray, vb: np.ndarray, cfg: RiskConfig) -> np.ndarray:
    """Relative lateral speed that heading noise alone can produce (reported or derived)."""
    return np.maximum(cfg.lateral_heading_tol_rad * np.hypot(va, vb), cfg.lateral_speed_tol_mps)


class _PairFrame:
    """Relative geometry of pairs at time t: direction classes and the pair's own axes."""

    def __init__(
        self, fleet: Fleet, a: np.ndarray, b: np.ndarray, d0: np.ndarray, cfg: RiskConfig
    ) -> None:
        ha, hb = fleet.heading[a], fleet.heading[b]
        dh = np.angle(np.exp(1j * (hb - ha)))
        cos_tol = math.cos(cfg.parallel_tol_rad)
        self.same = np.cos(dh) >= cos_tol
        self.opposite = np.cos(dh) <= -cos_tol
        self.parallel = self.same | self.opposite
        # Axis: mean direction of travel (b's heading flipped when oncoming).
        self.axis = ha + 0.5 * np.where(self.opposite, np.angle(np.exp(1j * (dh - np.pi))), dh)
        ux, uy = np.cos(self.axis), np.sin(self.axis)
        self.lon = d0[:, 0] * ux + d0[:, 1] * uy
        self.lat = -d0[:, 0] * uy + d0[:, 1] * ux
        self.other_lane = np.abs(self.lat) >= 0.5 * cfg.lane_width_m
        self.following = self.same & ~self.other_lane


def _plausible(
    fleet: Fleet, a: np.ndarray, b: np.ndarray, fr: _PairFrame, cfg: RiskConfig
) -> np.ndarray:
    """Lane-keeping and following filters on the current state."""
    ha, hb = fleet.heading[a], fleet.heading[b]
    va, vb = fleet.speed[a], fleet.speed[b]
    axis_ang, lat, lon, other_lane = fr.axis, fr.lat, fr.lon, fr.other_lane

    # Lane keeping: lateral closing speed must exceed what heading noise explains.
    vlat_a = va * np.sin(ha - axis_ang)
    vlat_b = vb * np.sin(hb - axis_ang)
    lat_closing = -np.sign(lat) * (vlat_b - vlat_a)
    lane_ok = lat_closing >= _lateral_tol(va, vb, cfg)
    keep = np.where(fr.parallel & other_lane, lane_ok, True)

    # Following: the follower needs more than a comfortable stop, and more than it brakes.
    follow = fr.following
    if np.any(follow):
        a_leads = lon < 0
        f = np.where(a_leads, b, a)
        ld = np.where(a_leads, a, b)
        gap = np.abs(lon) - 0.5 * (fleet.length[f] + fleet.length[ld]) - cfg.standstill_gap_m
        gap = np.maximum(gap, 0.1)
        v_f = np.maximum(fleet.speed[f] * np.cos(fleet.heading[f] - axis_ang), 0.0)
        v_l = np.maximum(fleet.speed[ld] * np.cos(fleet.heading[ld] - axis_ang), 0.0)
        dec_l = np.maximum(-fleet.accel[ld], 0.0)
        dec_l = np.where(v_l > cfg.still_speed_mps, dec_l, 0.0)
        rel = np.maximum(v_f - v_l, 0.0)
        need_moving = dec_l + rel * rel / (2.0 * gap)
        leader_stops = (v_l <= cfg.still_speed_mps) | (dec_l > 0)
        stop_l = np.where(dec_l > 0, v_l * v_l / (2.0 * np.maximum(dec_l, 1e-9)), 0.0)
        need_stop = np.where(leader_stops, v_f * v_f / (2.0 * (gap + stop_l)), 0.0)
        need = np.maximum(need_moving, need_stop)
        dec_f = np.maximum(-fleet.accel[f], 0.0)
        follow_ok = (need >= cfg.comfort_decel_mps2) & (need > dec_f)
        keep &= np.where(follow, follow_ok, True)
    return keep
