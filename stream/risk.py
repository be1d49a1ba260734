"""Collision risk between predicted paths: grid candidates, footprint contact, time to contact.

Pipeline of :func:`assess` at event time ``t`` (vectorised; no per-pair Python):

1. **Common time frame.** Vehicle i's fix is at ``ts_i`` and its path point k at
   ``ts_i + offsets[k]``; every path is interpolated onto ``t + j * sample_step_s`` up to
   ``warning_ttc_s`` (past the path's end a vehicle continues along its last segment). Later
   contacts never raise an alert, so they are not looked for. Path steps faster than
   ``max_speed_mps`` are clipped (a broken predictor must not blow up the grid).
2. **Braking awareness.** A vehicle decelerating harder than ``brake_accel_mps2`` travels along
   its predicted route no further than its current deceleration allows (``v t - d t^2 / 2``,
   stopping at ``v^2 / 2d``). A predictor that already brakes is unaffected; constant velocity
   no longer drives a braking follower into the car it stops behind, and a braking leader
   comes back towards its follower.
3. **Candidates.** Each vehicle's swept bounding box (fix and path points up to the window's
   end, grown by its footprint radius and half the margin) is entered in a uniform grid;
   pairs sharing a cell whose boxes overlap are candidates, each reported by one cell only.
   Cost is linear in vehicles at a given density, never quadratic. Pairs of two still
   vehicles are dropped here.
4. **Contact and its probability.** Heading-aligned rectangles (``length`` x ``width``;
   heading from the path tangent, or the reported heading when slower than
   ``still_speed_mps``), each grown by ``margin_m / 2``. Between two samples the relative
   motion is linear, and a continuous separating-axis test gives the exact time of first
   nominal contact, so fast pairs cannot pass through each other between samples. Each
   path point is uncertain: along the path by ``accel_sigma_mps2 tau^2 / 2`` (meant to be
   the predictor's own 1-sigma per point where it gives one, but :func:`assess` does not
   pass the LSTM's on yet: every threshold was tuned without it, and with it the built-in
   simulator's collision-free traffic gets ~30% more alerts; docs/quality.md),
   across it by what the heading (``lateral_heading_tol_rad v tau``) and a turn in
   progress can do. The
   probability of footprint overlap is taken at the samples, in the middle of the nominal
   overlap (:func:`overlap_probability`) and, for a passing pair, on its miss distance at
   closest approach (:func:`encounter_probability`: errors along the relative motion only
   shift *when*). A pair is a conflict when its largest probability within the window
   reaches ``warning_probability``; ``ttc`` is the nominal contact, or the first moment
   the probability reaches that. Near-parallel pairs need a nominal contact with
   ``parallel_probability``: sideways, lane keeping holds them apart, which a sigma grown
   by heading error does not express. Oncoming pairs are near-parallel only while neither
   is predicted to turn away (its path heads off its heading by more than
   ``parallel_tol_rad`` at the window's end, :func:`_turns_away`): a left turn across the
   oncoming car's path is judged on the paths, as crossing paths are, not held apart by
   lane keeping. Likewise a vehicle standing still (slower than
   ``still_speed_mps``) beside the other's way needs a nominal contact: the other driver
   sees it and passes it (a turn past a car waiting at a junction comes within a metre of
   it), and the still one's predicted path foresees it pulling out.
   **Two hypotheses.** Motion forecasting is multi-modal: a vehicle in a lane change or a
   drift that the model smooths away (its constant-velocity path leaves the model's path
   sideways by more than half its width, while it is not turning;
   :func:`_departs_sideways`) makes its pairs be assessed a second time with *both*
   vehicles on their straight lines, sigma growing kinematically. Such a pair is a
   conflict when either hypothesis finds one: the larger probability, the earlier contact.
   The straight lines can warn, never make an alert critical (they do not foresee the
   ordinary braking the model does). Pairs without a manoeuvring vehicle keep the model's
   paths only.
5. **Following in one lane** (same direction, sideways overlapping, one fully ahead; a
   vehicle whose heading is not known yet, standing since its first fix without reporting
   one, counts as going the other's way: a car queueing in that one's lane): the conflict
   is bumper contact on current speeds and braking within ``warning_ttc_s`` (the
   predictor foresees the ordinary stop a distracted driver does not make); a follower
   speeding up while its leader brakes has not reacted and keeps accelerating (out of a
   queue into a leader stopping short; for a warning, not for severity). Kept
   when the follower brakes less than it needs to stop ``standstill_gap_m`` behind the
   leader (the leader's own braking included) and either needs more than
   ``warning_decel_mps2`` (``comfort_decel_mps2`` once it brakes harder than
   ``brake_accel_mps2``: it has reacted, and firms up an under-braked stop as drivers do)
   or would touch within ``follow_warning_ttc_s`` (a car cutting in close ahead needs
   little braking, but now).
6. **Pile-ups.** The vehicles of a critical conflict stop dead at its contact (a wreck); the
   pairs of others with them are assessed again on that (:func:`_with_wrecks`; it adds or
   escalates conflicts, never drops one), so the car behind a crash is warned of the
   obstacle it will meet, not of a leader cruising on.
7. **Severity.** Critical: ``ttc < critical_ttc_s`` and overlap probability at least
   ``critical_probability`` (for a follower: the predicted paths touch too, and it needs
   more than ``comfort_decel_mps2``: an ordinary stop no longer fits). A neighbour in
   another lane is never critical (a lane change next to it is warned). Nor is a pair
   whose evidence is thin: a vehicle silent for more than ``critical_fix_age_s`` (five
   fixes missed at 10 Hz) is coasting on its prediction and may have left the road or the
   coverage, and a track younger than ``critical_track_s`` (a new or restarted one) has
   had too few fixes to fit its heading and speed (a tracker confirms a track before
   acting on it): such a pair is warned of, and critical once the evidence is there.
   Otherwise warning.
8. **Other filters.** Closing speed at contact below ``min_closing_speed_mps`` (touching
   by noise or creeping); near-parallel pairs apart sideways now whose lateral closing
   speed is within ``max(lateral_speed_tol_mps, lateral_heading_tol_rad * hypot(v_a,
   v_b))`` (what fitted headings explain): vehicles keep their lanes. Apart: in another
   lane (sideways clear by more than ``lane_gap_m``, allowing for the axis error at
   distance), or, going the same way or oncoming side by side, sideways clear at all (a
   heading error alone makes straight paths touch).

   The episode tracker also requires a conflict to persist over consecutive assessments
   (stream.episodes). Known limits: a slow sideways drift into an oncoming car is flagged
   late (once within ``lane_gap_m``), into a car going the same way once they overlap
   sideways; a lane change that starts ~1 s before contact cannot be
   foreseen; a driver braking for a stopped car only ~3 s before reaching it looks until
   then like one who does not brake, and is warned (never critical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.errors import ConfigError
from trajstream.model.kinematics import YAW_NOISE_RPS, Kinematics
from trajstream.model.predictors import PathSpec

WARNING = 1
CRITICAL = 2
SEVERITY_NAMES = {WARNING: "warning", CRITICAL: "critical"}
_Num = np.ndarray | float

# Rows (vehicles or pairs) per block of (rows x samples) work. Whole-fleet temporaries of a
# few MB are allocated by mmap and page-faulted on every numpy call, several times slower
# than small blocks that malloc reuses; blocks also bound memory at any fleet size. 1024
# rows (~150 kB per temporary) cost ~9% less per assessment than 256 (per-call overhead).
_BLOCK = 1024
# Cap of the position sigma used to prune (pair, interval) entries: a path known no better
# than this cannot give a footprint overlap probability near the thresholds anyway.
_PRUNE_SIGMA_M = 5.0
_FOLLOW_STEP_S = 0.05  # time grid of the following pairs' bumper contact
# (pair, interval) entries per run of the contact search: its ~100 temporaries stay in the
# cache (whole-fleet ones of several MB each at 100k vehicles cost twice as much per entry)
_ENTRY_BLOCK = 16384


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Thresholds of :func:`assess`; see the module docstring for what each filter is for."""

    critical_ttc_s: float = 1.5
    warning_ttc_s: float = 3.5
    margin_m: float = 0.25  # gap below which footprints are in contact; << the 1.7 m lane gap
    sample_step_s: float = 0.2  # path samples; contact between them is found exactly
    max_speed_mps: float = 100.0  # path segments faster than this are clipped (bad predictor)
    still_speed_mps: float = 0.5
    min_closing_speed_mps: float = 1.0
    lane_gap_m: float = 0.5  # sideways gap beyond which a neighbour is in another lane
    parallel_tol_rad: float = 0.3
    lateral_heading_tol_rad: float = 0.03  # 1-sigma heading error: sideways growth v tau
    lateral_speed_tol_mps: float = 1.2  # headings fitted to noisy fixes (no reported heading)
    yaw_noise_rps: float = YAW_NOISE_RPS  # yaw rates below this are estimation noise, not a turn
    position_sigma_m: float = 0.3  # 1-sigma of a fix (GPS), the floor of every path sigma
    accel_sigma_mps2: float = 0.5  # along-track growth a tau^2 / 2 of paths without a sigma
    warning_probability: float = 0.3  # footprint overlap probability of a warning
    critical_probability: float = 0.6  # ... and of a critical alert (with ttc < critical_ttc_s)
    critical_fix_age_s: float = 0.5  # a vehicle silent longer than this is never critical
    critical_track_s: float = 0.5  # ... nor one whose track is younger than this
    parallel_probability: float = 0.6  # ... of any alert between near-parallel vehicles
    warning_decel_mps2: float = 2.0  # a follower needing this, and braking less, is warned
    follow_warning_ttc_s: float = 2.0  # ... or closer than this to contact, braking less
    comfort_decel_mps2: float = 3.0
    standstill_gap_m: float = 1.0  # bumper gap a follower stops at, for the required braking
    brake_accel_mps2: float = 1.0  # decelerations above this re-time the path
    cv_hypothesis: bool = True  # also assess the constant-velocity path of the same fix
    cell_m: float | None = None  # grid cell; None picks it from the swept boxes

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"risk {f.name} must be a finite number >= 0, got {v!r}")
        positive = ("critical_ttc_s", "warning_ttc_s", "sample_step_s", "max_speed_mps",
                    "comfort_decel_mps2", "brake_accel_mps2")
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
        if not 0 < self.parallel_probability <= 1:
            raise ConfigError(f"risk parallel_probability must be in (0, 1], got "
                              f"{self.parallel_probability!r}")
        if not 0 < self.warning_probability <= self.critical_probability <= 1:
            raise ConfigError(
                f"risk probabilities must satisfy 0 < warning_probability "
                f"({self.warning_probability}) <= critical_probability "
                f"({self.critical_probability}) <= 1")
        if self.parallel_tol_rad >= math.pi / 2:
            raise ConfigError(f"risk parallel_tol_rad must be < pi/2, got {self.parallel_tol_rad}")

    @property
    def samples(self) -> int:
        """Path samples ``j * sample_step_s`` from 0 up to (at least) ``warning_ttc_s``."""
        return 1 + max(1, int(math.ceil(self.warning_ttc_s / self.sample_step_s - 1e-9)))


@dataclass(frozen=True, slots=True)
class Fleet:
    """Vehicles to assess at one event time; arrays (n,), ``paths`` (n, P, 2).

    ``paths[i, k]`` is the predicted absolute position at ``ts[i] + spec.offsets_s[k]``.
    Angles in radians counter-clockwise from +x, speeds m/s (at ``ts``: for a vehicle that
    reports none, the fitted speed carried forward to its latest fix), ``accel`` m/s^2
    (negative when braking), ``length``/``width`` metres.
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
    sigma: np.ndarray | None = None  # (n, P) 1-sigma of each path point, m; NaN: not given
    # (n,) bool, False where no heading has been observed yet (none reported, and the
    # vehicle not yet seen moving clearly: a standing car, or one over its first few fixes;
    # ``heading`` is a placeholder); None: every heading is known
    heading_known: np.ndarray | None = None
    # (n,) event time of the first fix of the vehicle's current track (NaN: not known, taken
    # as long enough); None: every track is long enough
    since: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray) -> Fleet:
        cols: dict[str, Any] = {f: getattr(self, f) for f in self.__slots__}
        out: dict[str, Any] = {f: None if v is None else v[index] for f, v in cols.items()}
        return Fleet(**out)

    @staticmethod
    def from_kinematics(
        kin: Kinematics,
        paths: np.ndarray,
        length: np.ndarray | None = None,
        width: np.ndarray | None = None,
        sigma: np.ndarray | None = None,
    ) -> Fleet:
        """The fleet of a predictor step; sizes default to the contract's vehicle size."""
        n = len(kin)
        return Fleet(
            ts=kin.ts, x=kin.x, y=kin.y,
            speed=kin.speed if kin.speed_now is None else kin.speed_now, heading=kin.heading,
            yaw_rate=kin.yaw_rate, accel=kin.accel,
            length=np.full(n, DEFAULT_LENGTH_M) if length is None else length,
            width=np.full(n, DEFAULT_WIDTH_M) if width is None else width,
            paths=paths, sigma=sigma, heading_known=kin.heading_known,
        )


@dataclass(frozen=True, slots=True)
class Conflicts:
    """Predicted contacts within ``warning_ttc_s``, arrays (m,), sorted by (a, b).

    ``a < b`` index the :class:`Fleet`. ``ttc`` is seconds from the assessment time to first
    contact; ``cpa_t``/``cpa_x``/``cpa_y`` the event time and midpoint of the two centres
    there; ``min_distance`` the least centre distance over the searched window; ``severity``
    1 (warning) or 2 (critical); ``probability`` the largest footprint overlap probability
    over the window (0 for a following pair whose predicted paths do not touch: it is judged
    on kinematics and that probability is not computed).
    """

    a: np.ndarray
    b: np.ndarray
    ttc: np.ndarray
    min_distance: np.ndarray
    cpa_t: np.ndarray
    cpa_x: np.ndarray
    cpa_y: np.ndarray
    severity: np.ndarray
    probability: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @staticmethod
    def empty() -> Conflicts:
        i, f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return Conflicts(i, i, f, f, f, f, f, np.zeros(0, np.int8), f)


def footprints_overlap(
    dx: _Num, dy: _Num, ax: _Num, ay: _Num, half_la: _Num, half_wa: _Num,
    bx: _Num, by: _Num, half_lb: _Num, half_wb: _Num,
) -> np.ndarray:
    """Separating-axis test of two rectangles; broadcasts over all arguments.

    ``dx``/``dy`` is centre b minus centre a, ``ax``/``ay`` and ``bx``/``by`` the unit heading
    vectors, ``half_*`` half extents. True where the rectangles overlap (touching counts).
    """
    c = np.abs(ax * bx + ay * by)
    s = np.abs(ax * by - ay * bx)
    sep = np.abs(dx * ax + dy * ay) > half_la + half_lb * c + half_wb * s
    sep = sep | (np.abs(dy * ax - dx * ay) > half_wa + half_lb * s + half_wb * c)
    sep = sep | (np.abs(dx * bx + dy * by) > half_lb + half_la * c + half_wa * s)
    sep = sep | (np.abs(dy * bx - dx * by) > half_wb + half_la * s + half_wa * c)
    return np.logical_not(sep)


@dataclass(frozen=True, slots=True)
class Samples:
    """Each vehicle at the search samples ``t + j * sample_step_s``, arrays (n, J).

    ``x``/``y`` position, ``vx``/``vy`` velocity, ``ux``/``uy`` unit footprint heading,
    ``slon``/``slat`` the 1-sigma position error along and across the heading (m).
    """

    x: np.ndarray
    y: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    ux: np.ndarray
    uy: np.ndarray
    slon: np.ndarray
    slat: np.ndarray


def sample_paths(t: float, fleet: Fleet, spec: PathSpec, cfg: RiskConfig) -> Samples:
    """Interpolate every path onto the common samples, braking-aware.

    The fix is the path's point at ``ts_i``; samples before it (``ts_i > t``) stay at the fix;
    past the path's end a vehicle continues along its last segment. The footprint heading is
    the path tangent, or the reported heading where the path is slower than
    ``still_speed_mps``.
    """
    n, j = len(fleet), cfg.samples
    out = Samples(*(np.empty((n, j)) for _ in range(8)))
    tau = cfg.sample_step_s * np.arange(j)
    for s in range(0, n, _BLOCK):
        _sample_block(t, fleet, slice(s, min(n, s + _BLOCK)), tau, spec, cfg, out)
    return out


def _sample_block(
    t: float, fleet: Fleet, rows_: slice, tau: np.ndarray, spec: PathSpec, cfg: RiskConfig,
    out: Samples,
) -> None:
    paths = fleet.paths[rows_]
    n, p = paths.shape[0], paths.shape[1]
    step = spec.step_s
    px = np.concatenate([fleet.x[rows_, None], paths[..., 0]], axis=1)  # (n,P+1)
    py = np.concatenate([fleet.y[rows_, None], paths[..., 1]], axis=1)
    sx, sy = np.diff(px, axis=1), np.diff(py, axis=1)  # (n,P)
    slen = np.hypot(sx, sy)
    heading = fleet.heading[rows_]
    moving = slen > cfg.still_speed_mps * step
    safe = np.where(moving, slen, 1.0)
    dirx = np.where(moving, sx / safe, np.cos(heading)[:, None])
    diry = np.where(moving, sy / safe, np.sin(heading)[:, None])

    since = np.maximum((t - fleet.ts[rows_])[:, None] + tau[None, :], 0.0)  # time since fix
    u = since / step
    k = np.minimum(u.astype(np.int64), p - 1)
    frac = u - k  # > 1 past the path end: continue along the last segment
    fi = np.arange(0, n * p, p)[:, None] + k
    fp = fi + np.arange(n)[:, None]
    sxk, syk = sx.ravel()[fi], sy.ravel()[fi]
    x = px.ravel()[fp] + frac * sxk
    y = py.ravel()[fp] + frac * syk
    vx, vy = sxk / step, syk / step
    ux, uy = dirx.ravel()[fi], diry.ravel()[fi]

    speed, accel = fleet.speed[rows_], fleet.accel[rows_]
    braking = (accel < -cfg.brake_accel_mps2) & (speed > cfg.still_speed_mps)
    if np.any(braking):
        bi = np.flatnonzero(braking)
        x[bi], y[bi], vx[bi], vy[bi], ux[bi], uy[bi] = _retime_braking(
            since[bi], k[bi], frac[bi], px[bi], py[bi], sx[bi], sy[bi], slen[bi],
            dirx[bi], diry[bi], speed[bi], -accel[bi],
        )
    out.x[rows_], out.y[rows_], out.vx[rows_], out.vy[rows_] = x, y, vx, vy
    out.ux[rows_], out.uy[rows_] = ux, uy
    out.slon[rows_], out.slat[rows_] = _path_sigmas(
        since, k, frac, None if fleet.sigma is None else fleet.sigma[rows_], speed,
        fleet.yaw_rate[rows_], cfg)


def _path_sigmas(
    since: np.ndarray, k: np.ndarray, frac: np.ndarray, sigma: np.ndarray | None,
    speed: np.ndarray, yaw_rate: np.ndarray, cfg: RiskConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """1-sigma position error along and across the path at each sample.

    Along: the predictor's own sigma (the LSTM's, per point, interpolated; the fix has the
    GPS floor), else kinematic growth ``accel_sigma_mps2 tau^2 / 2`` (an unknown change of
    speed). The predictor's sigma is one figure per point and is dominated by speed errors,
    so across the path the error is what the heading and the turn can do instead:
    ``lateral_heading_tol_rad v tau`` plus, for a vehicle turning faster than
    ``yaw_noise_rps``, ``v |omega| tau^2 / 2`` (it may end or keep its turn), never more than
    the predictor's own sigma.
    """
    floor = cfg.position_sigma_m
    kin = np.hypot(floor, 0.5 * cfg.accel_sigma_mps2 * since * since)
    v = speed[:, None]
    omega = np.maximum(np.abs(yaw_rate) - cfg.yaw_noise_rps, 0.0)[:, None]
    slat = floor + cfg.lateral_heading_tol_rad * v * since + 0.5 * v * omega * since * since
    if sigma is None:
        return kin, slat
    n, p = sigma.shape
    sg = np.concatenate([np.full((n, 1), floor), sigma.astype(np.float64)], axis=1)
    rows = np.arange(n)[:, None]
    f = np.minimum(frac, 1.0)  # past the path's end: the last point's sigma
    model = sg[rows, k] + f * (sg[rows, k + 1] - sg[rows, k])
    given = np.isfinite(model)
    slon = np.where(given, np.maximum(model, floor), kin)
    return slon, np.where(given, np.minimum(slat, slon), slat)


def _retime_braking(
    since: np.ndarray, k: np.ndarray, frac: np.ndarray, px: np.ndarray, py: np.ndarray,
    sx: np.ndarray, sy: np.ndarray, slen: np.ndarray, dirx: np.ndarray, diry: np.ndarray,
    speed: np.ndarray, decel: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Move each vehicle along its predicted route no further than its braking allows."""
    nb, p = slen.shape
    arc = np.concatenate([np.zeros((nb, 1)), np.cumsum(slen, axis=1)], axis=1)  # (nb,P+1)
    rows = np.arange(nb)[:, None]
    s_path = arc[rows, k] + frac * slen[rows, k]
    t_stop = (speed / decel)[:, None]
    tt = np.minimum(since, t_stop)
    s_kin = speed[:, None] * tt - 0.5 * decel[:, None] * tt * tt
    s = np.minimum(s_path, s_kin)
    # locate s on each row's polyline with one searchsorted over row-offset arc lengths
    stride = arc[:, -1].max() + 1.0 + s.max()
    off = stride * np.arange(nb)
    q = np.searchsorted((arc + off[:, None]).ravel(), (s + off[:, None]).ravel(), side="right")
    q = np.clip(q.reshape(s.shape) - 1 - rows * (p + 1), 0, p - 1)
    ln = slen[rows, q]
    f = np.where(ln > 0, (s - arc[rows, q]) / np.where(ln > 0, ln, 1.0), 0.0)
    x = px[rows, q] + f * sx[rows, q]
    y = py[rows, q] + f * sy[rows, q]
    v_now = np.maximum(speed[:, None] - decel[:, None] * since, 0.0)
    ux, uy = dirx[rows, q], diry[rows, q]
    return x, y, ux * v_now, uy * v_now, ux, uy


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
        & np.isfinite(fleet.paths.sum(axis=(1, 2)))  # NaN or inf anywhere in the path
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
    # Work relative to a local origin: keeps float precision for large coordinates. The
    # fleet's sigma is left out (see 4. in the module docstring): a known gap, not a choice.
    known = (np.ones(len(fleet), dtype=bool) if fleet.heading_known is None
             else fleet.heading_known.astype(bool))
    ox, oy = float(np.median(fleet.x)), float(np.median(fleet.y))
    local = Fleet(fleet.ts, fleet.x - ox, fleet.y - oy, fleet.speed, fleet.heading, yaw, accel,
                  length, width, fleet.paths - np.array([ox, oy]))
    local = Fleet(local.ts, local.x, local.y, local.speed, local.heading, yaw, accel, length,
                  width, _clip_paths(local, spec, cfg), heading_known=known, since=fleet.since)

    radius = 0.5 * np.hypot(length, width) + 0.5 * cfg.margin_m
    lo, hi = _swept_boxes(t, local, spec, cfg)
    cv: Fleet | None = None
    if cfg.cv_hypothesis:
        cv = Fleet(local.ts, local.x, local.y, local.speed, local.heading, yaw, accel, length,
                   width, _cv_paths(local, spec), heading_known=known, since=fleet.since)
        manoeuvre = _departs_sideways(local, cv, spec, cfg)
        if np.any(manoeuvre):
            lo_cv, hi_cv = _swept_boxes(t, cv.take(np.flatnonzero(manoeuvre)), spec, cfg)
            lo[manoeuvre] = np.minimum(lo[manoeuvre], lo_cv)
            hi[manoeuvre] = np.maximum(hi[manoeuvre], hi_cv)
        else:
            cv = None
    lo -= radius[:, None]
    hi += radius[:, None]
    cell = cfg.cell_m if cfg.cell_m is not None else _auto_cell(lo, hi)
    a, b = candidate_pairs(lo, hi, cell)
    still = fleet.speed < cfg.still_speed_mps
    moving = ~(still[a] & still[b])
    a, b = a[moving], b[moving]
    if a.shape[0] == 0:
        return Conflicts.empty()

    # Sample only the vehicles that have a candidate, in the grid's order: a pair's two
    # rows are then near each other in memory. (In slot order they are anywhere in the
    # sample arrays; at 100k vehicles those gathers cost ~3x more per pair.) Each pair
    # keeps its orientation (a before b in the fleet), so the results are the same.
    g = np.floor((lo - lo.min(axis=0)) / cell).astype(np.int64)
    grid_key = g[:, 0] * (int(g[:, 1].max()) + 1) + g[:, 1]

    def in_grid_order(rows: np.ndarray) -> np.ndarray:
        return rows[np.argsort(grid_key[rows], kind="stable")]

    need = np.zeros(len(local), dtype=bool)
    need[a] = True
    need[b] = True
    sel = in_grid_order(np.flatnonzero(need))
    remap = np.full(len(local), -1, dtype=np.int64)
    remap[sel] = np.arange(sel.shape[0])
    sub = local.take(sel)
    smp = sample_paths(t, sub, spec, cfg)
    c = _exact(t, sub, smp, radius[sel], remap[a], remap[b], cfg)
    c = _with_wrecks(t, sub, smp, radius[sel], remap[a], remap[b], c, cfg)
    if cv is not None:
        # the constant-velocity hypothesis for the pairs with a manoeuvring vehicle
        m = manoeuvre[a] | manoeuvre[b]
        if np.any(m):
            need[:] = False
            need[a[m]] = True
            need[b[m]] = True
            sel_cv = in_grid_order(np.flatnonzero(need))
            to_sub = remap[sel_cv]  # back to the rows of sub
            remap[sel_cv] = np.arange(sel_cv.shape[0])
            sub_cv = cv.take(sel_cv)
            c_cv = _exact(t, sub_cv, sample_paths(t, sub_cv, spec, cfg), radius[sel_cv],
                          remap[a[m]], remap[b[m]], cfg)
            c = _union(c, replace(c_cv, a=to_sub[c_cv.a], b=to_sub[c_cv.b]), sel.shape[0])
    back = idx[sel]
    ca, cb = back[c.a], back[c.b]
    order = np.lexsort((cb, ca))
    return Conflicts(
        a=ca[order], b=cb[order], ttc=c.ttc[order],
        min_distance=c.min_distance[order], cpa_t=c.cpa_t[order], cpa_x=c.cpa_x[order] + ox,
        cpa_y=c.cpa_y[order] + oy, severity=c.severity[order],
        probability=None if c.probability is None else c.probability[order],
    )


def _with_wrecks(
    t: float, fleet: Fleet, smp: Samples, radius: np.ndarray, a: np.ndarray, b: np.ndarray,
    c: Conflicts, cfg: RiskConfig,
) -> Conflicts:
    """Pile-ups: the vehicles of a critical conflict stop dead at its contact (a wreck), and
    the pairs of others with them are assessed again on that: the car behind a crash sees
    the obstacle it will meet, not a leader cruising on. A second hypothesis: it adds or
    escalates conflicts, never drops one. One level deep (linear)."""
    crit = np.flatnonzero(c.severity == CRITICAL)
    if crit.shape[0] == 0:
        return c
    n = len(fleet)
    wreck = np.full(n, np.inf)
    np.minimum.at(wreck, c.a[crit], c.ttc[crit])
    np.minimum.at(wreck, c.b[crit], c.ttc[crit])
    key = a * n + b
    again = np.flatnonzero((np.isfinite(wreck[a]) | np.isfinite(wreck[b]))
                           & ~np.isin(key, c.a[crit] * n + c.b[crit]))
    if again.shape[0] == 0:
        return c
    rows = np.flatnonzero(np.isfinite(wreck))
    tw = wreck[rows]
    j = smp.x.shape[1]
    u = tw / cfg.sample_step_s
    j0 = np.minimum(u.astype(np.int64), j - 2)
    fr = (u - j0)[:, None]
    after = (cfg.sample_step_s * np.arange(j))[None, :] > tw[:, None]
    frozen = {}
    for name in ("x", "y", "vx", "vy"):
        v = getattr(smp, name).copy()
        r = v[rows]
        if name in ("x", "y"):
            at = r[np.arange(rows.shape[0]), j0][:, None]
            at = at + fr * (r[np.arange(rows.shape[0]), j0 + 1][:, None] - at)
        else:
            at = np.zeros((rows.shape[0], 1))
        v[rows] = np.where(after, at, r)
        frozen[name] = v
    c2 = _exact(t, fleet, replace(smp, **frozen), radius, a[again], b[again], cfg, wreck)
    # both hypotheses (the crash happens, or not): per pair the earlier contact, the higher
    # severity and probability, the least distance
    both = {f: np.concatenate([getattr(c, f), getattr(c2, f)]) for f in Conflicts.__slots__}
    order = np.lexsort((both["ttc"], both["a"] * n + both["b"]))
    k = (both["a"] * n + both["b"])[order]
    heads = _run_heads(k)
    out = {f: v[order[heads]] for f, v in both.items()}
    for f, red in (("severity", np.maximum), ("probability", np.maximum),
                   ("min_distance", np.minimum)):
        out[f] = red.reduceat(both[f][order], heads)
    return Conflicts(**out)


def _cv_paths(fleet: Fleet, spec: PathSpec) -> np.ndarray:
    """Constant-velocity paths (n, P, 2) from each fix's speed and heading."""
    off = spec.offsets_s[None, :]
    v = fleet.speed[:, None]
    return np.stack([fleet.x[:, None] + v * np.cos(fleet.heading)[:, None] * off,
                     fleet.y[:, None] + v * np.sin(fleet.heading)[:, None] * off], axis=-1)


def _departs_sideways(fleet: Fleet, cv: Fleet, spec: PathSpec, cfg: RiskConfig) -> np.ndarray:
    """Vehicles in a manoeuvre the model does not follow: not turning (yaw rate within
    ``yaw_noise_rps``; a turn is the model's to predict, and straight on through it is the
    textbook false alarm), yet the constant-velocity path leaves the model's path sideways
    (across the heading at the fix) by more than half the vehicle's width within the
    warning horizon: a lane change or drift the model smooths away. Along the path the two
    differ in speed only, which the model foresees (braking) and a constant velocity does
    not."""
    p = min(fleet.paths.shape[1], int(math.ceil(cfg.warning_ttc_s / spec.step_s - 1e-9)))
    d = cv.paths[:, :p] - fleet.paths[:, :p]
    ux, uy = np.cos(fleet.heading)[:, None], np.sin(fleet.heading)[:, None]
    lateral = np.abs(d[..., 1] * ux - d[..., 0] * uy).max(axis=1)
    return (lateral > 0.5 * fleet.width) & (np.abs(fleet.yaw_rate) <= cfg.yaw_noise_rps) & (
        fleet.speed >= cfg.still_speed_mps)


def _union(model: Conflicts, cv: Conflicts, n: int) -> Conflicts:
    """The conflicts of either hypothesis: per pair the larger probability and the earlier
    contact (with its closest approach); severity from the model's hypothesis only, so the
    constant-velocity path can warn but never make an alert critical."""
    km, kc = model.a * n + model.b, cv.a * n + cv.b
    if kc.shape[0] == 0:
        return model
    only_cv = np.flatnonzero(~np.isin(kc, km))
    both_m = np.flatnonzero(np.isin(km, kc))
    order = np.argsort(kc)
    both_c = order[np.searchsorted(kc, km[both_m], sorter=order)]

    def col(name: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(model, name).copy(), getattr(cv, name)

    ttc, ttc_c = col("ttc")
    earlier = ttc_c[both_c] < ttc[both_m]
    m_e, c_e = both_m[earlier], both_c[earlier]
    out: dict[str, np.ndarray] = {}
    for name in ("ttc", "min_distance", "cpa_t", "cpa_x", "cpa_y"):
        v, v_c = col(name)
        if name == "min_distance":
            v[both_m] = np.minimum(v[both_m], v_c[both_c])
        else:
            v[m_e] = v_c[c_e]
        out[name] = np.concatenate([v, v_c[only_cv]])
    p, p_c = col("probability")
    p[both_m] = np.maximum(p[both_m], p_c[both_c])
    out["probability"] = np.concatenate([p, p_c[only_cv]])
    out["severity"] = np.concatenate([model.severity, np.full(only_cv.shape[0], WARNING,
                                                              dtype=np.int8)])
    a = np.concatenate([model.a, cv.a[only_cv]])
    b = np.concatenate([model.b, cv.b[only_cv]])
    return Conflicts(a=a, b=b, **out)


def _swept_boxes(
    t: float, fleet: Fleet, spec: PathSpec, cfg: RiskConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (n, 2) of each vehicle's fix and path up to the end of the window.

    Taken on the path points themselves (cheaper than on the samples, and a superset of
    them); past the path's end the extrapolated end position is included.
    """
    p = fleet.paths.shape[1]
    step = spec.step_s
    u_end = np.maximum(t + (cfg.samples - 1) * cfg.sample_step_s - fleet.ts, 0.0) / step
    k_last = np.minimum(np.ceil(u_end).astype(np.int64), p)  # last point index (0 = the fix)
    px, py = fleet.paths[..., 0], fleet.paths[..., 1]
    inside = np.arange(1, p + 1)[None, :] <= k_last[:, None]
    lo = np.stack([np.minimum(fleet.x, np.where(inside, px, np.inf).min(axis=1)),
                   np.minimum(fleet.y, np.where(inside, py, np.inf).min(axis=1))], axis=1)
    hi = np.stack([np.maximum(fleet.x, np.where(inside, px, -np.inf).max(axis=1)),
                   np.maximum(fleet.y, np.where(inside, py, -np.inf).max(axis=1))], axis=1)
    beyond = np.flatnonzero(u_end > p)
    if beyond.shape[0]:
        prev = np.stack([fleet.x[beyond], fleet.y[beyond]], axis=1) if p == 1 else \
            fleet.paths[beyond, p - 2]
        last = fleet.paths[beyond, p - 1]
        end = last + (u_end[beyond] - p)[:, None] * (last - prev)
        lo[beyond] = np.minimum(lo[beyond], end)
        hi[beyond] = np.maximum(hi[beyond], end)
    return lo, hi


def _clip_paths(fleet: Fleet, spec: PathSpec, cfg: RiskConfig) -> np.ndarray:
    """Paths with every step no faster than ``max_speed_mps`` (a broken predictor must not
    blow up the grid); direction kept. Returns the input array when nothing is clipped."""
    px, py = fleet.paths[..., 0], fleet.paths[..., 1]
    limit2 = (cfg.max_speed_mps * spec.step_s) ** 2
    step2 = np.diff(px, axis=1) ** 2 + np.diff(py, axis=1) ** 2
    first2 = (px[:, 0] - fleet.x) ** 2 + (py[:, 0] - fleet.y) ** 2
    bad = np.flatnonzero((first2 > limit2) | np.any(step2 > limit2, axis=1))
    if bad.shape[0] == 0:
        return fleet.paths
    start = np.stack([fleet.x[bad], fleet.y[bad]], axis=-1)[:, None, :]
    seg = np.diff(np.concatenate([start, fleet.paths[bad]], axis=1), axis=1)
    slen = np.hypot(seg[..., 0], seg[..., 1])
    scale = np.minimum(1.0, np.sqrt(limit2) / np.maximum(slen, 1e-12))
    paths = fleet.paths.copy()
    paths[bad] = start + np.cumsum(seg * scale[..., None], axis=1)
    return paths


def _exact(
    t: float, fleet: Fleet, smp: Samples, radius: np.ndarray, a: np.ndarray, b: np.ndarray,
    cfg: RiskConfig, wreck: np.ndarray | None = None,
) -> Conflicts:
    """Contact search and overlap probability over candidate pairs, then the filters;
    ``wreck``: per row, when a vehicle stops dead at a crash (:func:`_with_wrecks`)."""
    step = cfg.sample_step_s
    horizon = cfg.warning_ttc_s
    # 1. Prune per interval between samples. An overlap probability of warning_probability
    #    needs the centres within reach + k sigma of each other somewhere in the interval
    #    (:func:`_prune_reach`); farther apart the pair cannot alert there. Following pairs
    #    are judged on kinematics and keep every interval within their circumscribed circles
    #    grown by twice each sigma (their contact and overlap probability feed severity).
    #    Only the remaining (pair, interval) entries are searched.
    sig = np.maximum(smp.slon, smp.slat)
    sig = np.maximum(sig[:, 1:], sig[:, :-1])  # largest 1-sigma within each interval
    grow = 2.0 * np.minimum(sig, _PRUNE_SIGMA_M)
    reach, k_sig = _prune_reach(fleet, cfg)
    frame_all = _PairFrame(fleet, a, b, smp.x[b, 0] - smp.x[a, 0], smp.y[b, 0] - smp.y[a, 0],
                           cfg, _turns_away(fleet, smp, cfg))
    follow_all = frame_all.following
    sig2 = sig * sig
    pair_parts, int_parts, dmin_parts = [], [], []
    for s in range(0, a.shape[0], _BLOCK):
        ia, ib = a[s: s + _BLOCK], b[s: s + _BLOCK]
        d2 = _closest_d2(smp.x[ib] - smp.x[ia], smp.y[ib] - smp.y[ia])
        rr = (reach[ia] + reach[ib])[:, None] + k_sig * np.sqrt(sig2[ia] + sig2[ib])
        f = np.flatnonzero(follow_all[s: s + _BLOCK])
        if f.shape[0]:
            fol_a, fol_b = ia[f], ib[f]
            rr[f] = (radius[fol_a] + radius[fol_b])[:, None] + grow[fol_a] + grow[fol_b]
        pi, ji = np.nonzero(d2 < rr * rr)
        pair_parts.append(pi + s)
        int_parts.append(ji)
        dmin_parts.append(np.sqrt(d2.min(axis=1)))
    pe, je = np.concatenate(pair_parts), np.concatenate(int_parts)  # pair-major, j ascending
    if pe.shape[0] == 0:
        return Conflicts.empty()
    dmin_all = np.concatenate(dmin_parts)

    # 2. Per pair from its entries (in runs of whole pairs, each small enough for the cache:
    #    at 100k vehicles whole-fleet temporaries cost twice as much per entry).
    parts = [_pair_contacts(fleet, smp, a, b, pe[lo:hi], je[lo:hi], follow_all, cfg)
             for lo, hi in _runs(pe, _ENTRY_BLOCK)]
    pp, p_max, nominal, ttc, fr_ref, x0, y0, x1, y1 = (
        np.concatenate(col) for col in zip(*parts, strict=True))
    a_c, b_c = a[pp], b[pp]
    frame = frame_all.take(pp)
    pw = cfg.warning_probability
    # Near-parallel pairs need a nominal contact that is near certain (parallel_probability):
    # sideways they are held apart by lane keeping, which a path sigma grown by heading
    # error does not express, and a heading error of 0.02 rad makes paths a lane apart
    # graze each other within the horizon.
    geometric = (p_max >= pw) & np.isfinite(ttc) & (
        ~frame.parallel | (nominal & (p_max >= cfg.parallel_probability)))
    # A vehicle standing still beside the other's way is an obstacle its driver sees and
    # passes (a turn past a car waiting at a junction comes within a metre of it): such a
    # pair needs a nominal contact of the predicted paths, the still one's foreseeing it
    # pulling out. One standing in the mover's way (ahead, within a lane of its heading
    # line) is left as it is: a stopped car ahead is the rear end not braked for in time.
    geometric &= ~_passing_still(fleet, a_c, b_c, cfg) | nominal
    # Following in one lane: contact on the current speeds and braking (the predictor
    # foresees the ordinary stop a distracted driver does not make).
    # severity is judged without a follower's acceleration carried on (it warns only)
    ttc_f, closing_f, ttc_sev = _following_contact(fleet, a_c, b_c, frame, cfg, wreck=wreck)
    follow = frame.following
    ok = np.where(follow, ttc_f < horizon, geometric)
    ttc = np.where(follow, ttc_f, ttc)

    # 3. Closing speed (along the line of centres at that moment), then the filters.
    rvx, rvy = x1 - x0, y1 - y0
    cx, cy = x0 + fr_ref * rvx, y0 + fr_ref * rvy
    rvx, rvy = rvx / step, rvy / step
    dn = np.hypot(cx, cy)
    closing = np.where(dn > 1e-6, -(cx * rvx + cy * rvy) / np.maximum(dn, 1e-6),
                       np.hypot(rvx, rvy))
    closing = np.where(follow, closing_f, closing)
    plausible, critical_ok = _plausible(fleet, a_c, b_c, frame, ttc_f, cfg, wreck)
    # A neighbour in another lane is warned of a lane change into it, never critical: the
    # merging driver sees the car beside it and usually completes the change behind or
    # ahead of it (recorded highway traffic); critical once they overlap sideways.
    critical_ok &= ~(frame.parallel & frame.other_lane)
    keep = np.flatnonzero(ok & (closing >= cfg.min_closing_speed_mps) & plausible)
    if keep.shape[0] == 0:
        return Conflicts.empty()
    a_c, b_c, ttc, p_max, ttc_sev = a_c[keep], b_c[keep], ttc[keep], p_max[keep], ttc_sev[keep]
    follow, critical_ok, nominal = follow[keep], critical_ok[keep], nominal[keep]
    # midpoint of the two predicted centres at contact
    u = ttc / step
    jb = np.minimum(u.astype(np.int64), smp.x.shape[1] - 2)
    fb = u - jb
    mx = 0.5 * (smp.x[a_c, jb] + smp.x[b_c, jb]
                + fb * (smp.x[a_c, jb + 1] - smp.x[a_c, jb] + smp.x[b_c, jb + 1] - smp.x[b_c, jb]))
    my = 0.5 * (smp.y[a_c, jb] + smp.y[b_c, jb]
                + fb * (smp.y[a_c, jb + 1] - smp.y[a_c, jb] + smp.y[b_c, jb + 1] - smp.y[b_c, jb]))
    # Critical: the predicted paths (which foresee a driver's ordinary braking) overlap with
    # critical_probability; for a follower, they also touch, and an ordinary stop no longer
    # fits (critical_ok).
    likely = (p_max >= cfg.critical_probability) & (nominal | ~follow)
    critical = (np.where(follow, ttc_sev, ttc) < cfg.critical_ttc_s) & likely & critical_ok
    # Thin evidence (point 7): a vehicle coasting on its prediction or a track just begun.
    sure = t - fleet.ts <= cfg.critical_fix_age_s
    if fleet.since is not None:
        sure &= ~(t - fleet.since < cfg.critical_track_s)  # NaN: not known, long enough
    critical &= sure[a_c] & sure[b_c]
    return Conflicts(
        a=a_c, b=b_c, ttc=ttc, min_distance=dmin_all[pp[keep]], cpa_t=t + ttc, cpa_x=mx,
        cpa_y=my, severity=np.where(critical, CRITICAL, WARNING).astype(np.int8),
        probability=p_max,
    )


def _first_finite(v: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Per pair (entries pair-major from ``heads``, interval ascending), its entry with the
    least ``v``: a time within the entry's interval, so the first finite one; the pair's
    first entry where none is finite. Linear, where a sort on (pair, v) is not."""
    e = v.shape[0]
    first = np.minimum.reduceat(np.where(np.isfinite(v), np.arange(e), e), heads)
    return np.where(first < e, first, heads)


def _run_heads(k: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in ``k`` (non-empty)."""
    return np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))


def _runs(pe: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Consecutive slices of the pair-major entries ``pe``, each about ``size`` long and
    made of whole pairs."""
    heads = _run_heads(pe)
    cuts = np.unique(heads[np.minimum(np.searchsorted(heads, np.arange(0, pe.shape[0], size)),
                                      heads.shape[0] - 1)])
    bounds = np.append(cuts, pe.shape[0])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _pair_contacts(
    fleet: Fleet, smp: Samples, a: np.ndarray, b: np.ndarray, pe: np.ndarray,
    je: np.ndarray, follow_all: np.ndarray, cfg: RiskConfig,
) -> tuple[np.ndarray, ...]:
    """Nominal contact (continuous, between samples) and the overlap probability at the
    interval's ends and in the middle of the nominal overlap, of the (pair, interval)
    entries ``pe``/``je`` (pair-major, whole pairs); per pair: its index, the largest
    probability, whether the paths touch, the time to contact (or to the probability
    reaching ``warning_probability``) and the relative motion of its interval there (the
    fraction into it, the offsets at its start and end)."""
    step = cfg.sample_step_s
    horizon = cfg.warning_ttc_s
    n_s = smp.x.shape[1]
    ea, eb = a[pe], b[pe]
    fa, fb_ = ea * n_s + je, eb * n_s + je  # flat sample indices of the interval starts
    sx, sy, sux, suy = smp.x.ravel(), smp.y.ravel(), smp.ux.ravel(), smp.uy.ravel()
    x0, y0 = sx[fb_] - sx[fa], sy[fb_] - sy[fa]
    x1, y1 = sx[fb_ + 1] - sx[fa + 1], sy[fb_ + 1] - sy[fa + 1]
    ax, ay, bx, by = sux[fa], suy[fa], sux[fb_], suy[fb_]
    hm = 0.5 * cfg.margin_m
    la, wa = 0.5 * fleet.length[ea] + hm, 0.5 * fleet.width[ea] + hm
    lb, wb = 0.5 * fleet.length[eb] + hm, 0.5 * fleet.width[eb] + hm
    hit, f_in, f_out = overlap_window(x0, y0, x1, y1, ax, ay, la, wa, bx, by, lb, wb)
    toi = np.where(hit, (je + f_in) * step, np.inf)
    toi = np.where(toi < horizon, toi, np.inf)
    slon, slat = smp.slon.ravel(), smp.slat.ravel()
    # Pairs following in one lane are judged on kinematics (in _exact); their overlap
    # probability only matters where the predicted paths touch (critical).
    heads = _run_heads(pe)
    pp = pe[heads]
    following = follow_all[pp]
    entry_pair = np.repeat(np.arange(heads.shape[0]), np.diff(np.append(heads, pe.shape[0])))
    touching = np.logical_or.reduceat(np.isfinite(toi), heads)
    e = np.flatnonzero(~following[entry_pair] | touching[entry_pair])
    # the entries' geometry and sigmas at both ends of their intervals, gathered once
    fa_e, fb_e = fa[e], fb_[e]
    ex0, ey0, ex1, ey1 = x0[e], y0[e], x1[e], y1[e]
    boxes = (ax[e], ay[e], la[e], wa[e], bx[e], by[e], lb[e], wb[e])
    sig0 = (slon[fa_e], slat[fa_e], slon[fb_e], slat[fb_e])
    sig1 = (slon[fa_e + 1], slat[fa_e + 1], slon[fb_e + 1], slat[fb_e + 1])

    # Below warning_probability a probability only counts for a pair's own p_max, which
    # only a following pair reports (it alerts on kinematics, whatever its probability):
    # for the others an upper bound under warning_probability is as good (and cheaper).
    below = np.where(following[entry_pair[e]], 0.0, cfg.warning_probability)

    def prob(fr: np.ndarray | float, k: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Overlap probability of entries ``e[k]`` at fractions ``fr`` of their intervals
        (where under warning_probability, maybe an upper bound: ``below``)."""
        def at(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
            return v0[k] + fr * (v1[k] - v0[k])
        return overlap_probability(at(ex0, ex1), at(ey0, ey1), *(v[k] for v in boxes),
                                   *(at(s0, s1) for s0, s1 in zip(sig0, sig1, strict=True)),
                                   below=below[k])

    hit_e = hit[e]
    f_mid = np.where(hit_e, 0.5 * (f_in[e] + f_out[e]), 0.0)
    p_mid = np.zeros(e.shape[0])  # (without a nominal overlap: the interval's start)
    h = np.flatnonzero(hit_e)
    p_mid[h] = prob(f_mid[h], h)
    # The encounter: where the relative motion passes its closest approach within the
    # interval, the chance that the miss distance is within the footprints (errors along
    # the relative motion only shift when, not whether).
    dvx, dvy = ex1 - ex0, ey1 - ey0
    vv = dvx * dvx + dvy * dvy
    f_star = -(ex0 * dvx + ey0 * dvy) / np.where(vv > 0, vv, 1.0)
    passing = (vv > (cfg.min_closing_speed_mps * step) ** 2) & (f_star >= 0) & (f_star <= 1)
    f_enc = np.where(passing, np.where(hit_e, f_in[e], np.clip(f_star, 0.0, 1.0)), 0.0)
    q = np.flatnonzero(passing)  # at most one interval per pair
    fs = f_star[q]
    p_enc = np.zeros(e.shape[0])
    p_enc[q] = encounter_probability(
        ex0[q] + fs * dvx[q], ey0[q] + fs * dvy[q], dvx[q], dvy[q], *(v[q] for v in boxes),
        *(s0[q] + fs * (s1[q] - s0[q]) for s0, s1 in zip(sig0, sig1, strict=True)))
    zero, one = np.zeros(e.shape[0]), np.ones(e.shape[0])
    je_e = je[e]
    p_start = prob(0.0)
    p_mid = np.where(hit_e, p_mid, p_start)
    p_end = np.zeros(e.shape[0])  # (past the horizon it is not looked at)
    k_end = np.flatnonzero((je_e + one) * step < horizon)
    p_end[k_end] = prob(1.0, k_end)
    cand = ((zero, p_start), (f_mid, p_mid), (f_enc, p_enc), (one, p_end))
    pw = cfg.warning_probability
    p_e = np.zeros(e.shape[0])
    t_e = np.full(e.shape[0], np.inf)  # earliest time in the entry with p >= pw
    f_e = np.zeros(e.shape[0])
    for fr, pr in cand:
        when = (je_e + fr) * step
        inside = when < horizon
        p_e = np.maximum(p_e, np.where(inside, pr, 0.0))
        first = inside & (pr >= pw) & (when < t_e)
        t_e = np.where(first, when, t_e)
        f_e = np.where(first, fr, f_e)
    p_entry = np.zeros_like(x0)
    t_warn = np.full_like(x0, np.inf)
    f_warn = np.zeros_like(x0)
    p_entry[e], t_warn[e], f_warn[e] = p_e, t_e, f_e

    # Per pair (entries are pair-major): most probable overlap, first nominal contact, and
    # the first time the overlap probability reaches warning_probability.
    p_max = np.maximum.reduceat(p_entry, heads)
    first_c = _first_finite(toi, heads)  # entry of each pair's first nominal contact
    first_w = _first_finite(t_warn, heads)
    nominal = np.isfinite(toi[first_c])
    ref = np.where(nominal, first_c, first_w)  # the entry whose moment gives ttc and cpa
    ttc = np.where(nominal, toi[first_c], t_warn[first_w])
    fr_ref = np.where(nominal, f_in[first_c], f_warn[first_w])
    return pp, p_max, nominal, ttc, fr_ref, x0[ref], y0[ref], x1[ref], y1[ref]


def _passing_still(fleet: Fleet, a: np.ndarray, b: np.ndarray, cfg: RiskConfig) -> np.ndarray:
    """Pairs of a moving vehicle and one standing still (slower than ``still_speed_mps``)
    that is not in the mover's way: behind it, or sideways off its heading line by more
    than a lane gap beyond their half widths. Judged in the mover's frame: a still
    vehicle's own heading may be noise."""
    still_a = fleet.speed[a] < cfg.still_speed_mps
    mover, other = np.where(still_a, b, a), np.where(still_a, a, b)
    h = fleet.heading[mover]
    dx, dy = fleet.x[other] - fleet.x[mover], fleet.y[other] - fleet.y[mover]
    lon = dx * np.cos(h) + dy * np.sin(h)
    lat = -dx * np.sin(h) + dy * np.cos(h)
    in_way = (lon > 0) & (np.abs(lat) < 0.5 * (fleet.width[mover] + fleet.width[other])
                          + cfg.margin_m + cfg.lane_gap_m)
    return (still_a | (fleet.speed[b] < cfg.still_speed_mps)) & ~in_way


def _prune_reach(fleet: Fleet, cfg: RiskConfig) -> tuple[np.ndarray, float]:
    """Per vehicle a reach, and a factor k, such that a pair whose centres are farther apart
    than ``reach_a + reach_b + k sqrt(sigma_a^2 + sigma_b^2)`` has an overlap (and encounter)
    probability below ``warning_probability``.

    On a box frame the footprints overlap only if the offset is within (r1, r2) of both axes,
    and ``hypot(r1, r2) <= hypot(la, wa) + lb + wb`` (either frame): beyond that by ``u``,
    one axis is missed by at least ``u / sqrt(2)``, and on it the error is normal with a
    1-sigma of at most ``sqrt(sigma_a^2 + sigma_b^2)`` (sigma: the larger of along and
    across). ``reach = half length + half width`` (margin included) bounds both terms.
    """
    hm = 0.5 * cfg.margin_m
    reach = 0.5 * (fleet.length + fleet.width) + 2.0 * hm
    k = max(0.0, -math.sqrt(2.0) * NormalDist().inv_cdf(cfg.warning_probability)) \
        if cfg.warning_probability < 1.0 else 0.0
    return reach, k


def _following_contact(
    fleet: Fleet, a: np.ndarray, b: np.ndarray, fr: _PairFrame, cfg: RiskConfig,
    wreck: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time to bumper contact of following pairs on current speeds and braking, and the
    closing speed then (inf and 0 for other pairs or no contact within the horizon); third,
    the time to contact without a follower's acceleration carried on.

    Each keeps its speed along the lane, or brakes on to a stop when decelerating harder
    than ``brake_accel_mps2`` (as the braking-aware paths do); a vehicle with a ``wreck``
    time (per fleet row, from ``t``) stops dead then.
    """
    n = a.shape[0]
    ttc, closing = np.full(n, np.inf), np.zeros(n)
    idx = np.flatnonzero(fr.following)
    if idx.shape[0] == 0:
        return ttc, closing, ttc.copy()
    lon, axis = fr.lon[idx], fr.axis[idx]
    a_leads = lon < 0
    f = np.where(a_leads, b[idx], a[idx])
    ld = np.where(a_leads, a[idx], b[idx])
    gap0 = np.abs(lon) - 0.5 * (fleet.length[f] + fleet.length[ld]) - cfg.margin_m
    v_f = np.maximum(fleet.speed[f] * np.cos(fleet.heading[f] - axis), 0.0)[:, None]
    v_l = np.maximum(fleet.speed[ld] * np.cos(fleet.heading[ld] - axis), 0.0)[:, None]

    def decel(i: np.ndarray) -> np.ndarray:
        d = -fleet.accel[i]
        return np.where(np.abs(d) > cfg.brake_accel_mps2, d, 0.0)[:, None]

    d_f, d_l = decel(f), decel(ld)
    # a follower speeding up while its leader brakes has not reacted yet: it keeps
    # accelerating (as out of a queue into a leader stopping short); otherwise its
    # acceleration ends as it closes up, and only braking is carried on
    speeding = (d_f < 0) & (d_l > 0)
    d_f = np.where((d_f < 0) & ~speeding, 0.0, d_f)
    tau = np.arange(1, int(math.ceil(cfg.warning_ttc_s / _FOLLOW_STEP_S)) + 1) * _FOLLOW_STEP_S

    def travel(v: np.ndarray, d: np.ndarray, w: np.ndarray | float
               ) -> tuple[np.ndarray, np.ndarray]:
        # braking: on to a stop; accelerating (d < 0): on at that rate; a wreck stops dead
        tt = np.minimum(tau, np.where(d > 0, v / np.maximum(d, 1e-9), np.inf))
        tt = np.minimum(tt, w)
        return v * tt - 0.5 * d * tt * tt, np.where(tau < w, v - d * tt, 0.0)

    def wrecked(i: np.ndarray) -> np.ndarray | float:
        return np.inf if wreck is None else wreck[i][:, None]

    def contact(s_f: np.ndarray, s_l: np.ndarray, gap: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        hit = gap[:, None] - (s_f - s_l) <= 0.0
        k = np.argmax(hit, axis=1)
        rows = np.arange(gap.shape[0])
        found = hit[rows, k]
        return np.where(gap <= 0, 0.0, np.where(found, tau[k], np.inf)), found, rows, k

    s_f, vf_t = travel(v_f, d_f, wrecked(f))
    s_l, vl_t = travel(v_l, d_l, wrecked(ld))
    ttc_i, found, rows, k = contact(s_f, s_l, gap0)
    ttc[idx] = ttc_i
    closing[idx] = np.where(found | (gap0 <= 0), (vf_t - vl_t)[rows, k], 0.0)
    ttc_sev = ttc.copy()
    acc = np.flatnonzero(speeding[:, 0])
    if acc.shape[0]:  # the same follower, its acceleration ending
        ff = f[acc]
        s_f0 = travel(v_f[acc], np.zeros((acc.shape[0], 1)), wrecked(ff))[0]
        ttc_sev[idx[acc]] = contact(s_f0, s_l[acc], gap0[acc])[0]
    return ttc, closing, ttc_sev


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (erf by Abramowitz-Stegun 7.1.26, error < 2e-7), in place on
    two temporaries (the hot loop of the overlap probabilities)."""
    shape = np.shape(z)
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    x = np.abs(z)
    x /= math.sqrt(2.0)
    k = 0.3275911 * x
    k += 1.0
    np.divide(1.0, k, out=k)
    poly = k * 1.061405429
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += coef
        poly *= k
    np.multiply(x, x, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x *= poly
    np.subtract(1.0, x, out=x)  # erf(|z| / sqrt 2)
    out = np.sign(z)
    out *= x
    out += 1.0
    out *= 0.5
    return out.reshape(shape)


def overlap_probability(
    dx: np.ndarray, dy: np.ndarray, ax: np.ndarray, ay: np.ndarray, la: np.ndarray,
    wa: np.ndarray, bx: np.ndarray, by: np.ndarray, lb: np.ndarray, wb: np.ndarray,
    sa_lon: np.ndarray, sa_lat: np.ndarray, sb_lon: np.ndarray, sb_lat: np.ndarray,
    *, below: np.ndarray | float | None = None,
) -> np.ndarray:
    """Probability that two rectangles overlap when each centre is off by a Gaussian error.

    ``dx``/``dy`` is the predicted centre b minus centre a, ``ax``/``ay``, ``bx``/``by`` unit
    headings, ``l*``/``w*`` half extents, ``s*_lon``/``s*_lat`` each centre's 1-sigma along
    and across its heading. The rectangles overlap iff the offset lies within the separating-
    axis bound on all four box axes; on each axis the offset's projection is normal. The
    probability is taken per box frame (two orthogonal axes, treated as independent) and the
    smaller of the two frames is returned: an upper bound of the exact figure, exact for
    aligned boxes with aligned errors, continuous in every input. Broadcasts.

    On a box axis one vehicle's own along/across projections are its squared norm and an
    exact zero, and the other's are the pair's dot and cross product (up to sign), so four
    products give all sixteen projections; the result is the same to the bit as projecting
    each error on each axis.

    With ``below`` (1-D inputs), where a's frame alone is under ``below`` the result is that
    frame, an upper bound still under it, and b's frame is not computed: for callers that
    only need the exact figure where it reaches ``below``.
    """
    dot = ax * bx + ay * by  # a's heading on b's axis and b's on a's
    cross = ax * by - ay * bx  # b's heading across a's axis (minus: a's across b's)
    na, nb = ax * ax + ay * ay, bx * bx + by * by
    c, s = np.abs(dot), np.abs(cross)
    va_lon, va_lat = sa_lon * sa_lon, sa_lat * sa_lat
    vb_lon, vb_lat = sb_lon * sb_lon, sb_lat * sb_lat

    def axis(var: np.ndarray, p: np.ndarray, r: np.ndarray) -> np.ndarray:
        sd = np.maximum(np.sqrt(var), 1e-6)
        return _normal_cdf((r - p) / sd) - _normal_cdf((-r - p) / sd)

    frame_a = (axis(va_lon * na * na + vb_lon * dot * dot + vb_lat * cross * cross,
                    dx * ax + dy * ay, la + lb * c + wb * s)
               * axis(va_lat * na * na + vb_lon * cross * cross + vb_lat * dot * dot,
                      dy * ax - dx * ay, wa + lb * s + wb * c))
    if below is None:
        k: slice | np.ndarray = slice(None)
    else:
        k = np.flatnonzero(frame_a >= below)
        dx, dy, bx, by, la, wa, lb, wb, dot, cross, nb, c, s = (
            v if np.ndim(v) == 0 else v[k]
            for v in (dx, dy, bx, by, la, wa, lb, wb, dot, cross, nb, c, s))
        va_lon, va_lat, vb_lat = (v if np.ndim(v) == 0 else v[k] for v in (va_lon, va_lat, vb_lat))
        vb_lon = vb_lon if np.ndim(vb_lon) == 0 else vb_lon[k]
    frame_b = (axis(va_lon * dot * dot + va_lat * cross * cross + vb_lon * nb * nb,
                    dx * bx + dy * by, lb + la * c + wa * s)
               * axis(va_lon * cross * cross + va_lat * dot * dot + vb_lat * nb * nb,
                      dy * bx - dx * by, wb + la * s + wa * c))
    if below is None:
        return np.minimum(frame_a, frame_b)
    out = frame_a.copy()
    out[k] = np.minimum(frame_a[k], frame_b)
    return out


def encounter_probability(
    dx: np.ndarray, dy: np.ndarray, vx: np.ndarray, vy: np.ndarray, ax: np.ndarray,
    ay: np.ndarray, la: np.ndarray, wa: np.ndarray, bx: np.ndarray, by: np.ndarray,
    lb: np.ndarray, wb: np.ndarray, sa_lon: np.ndarray, sa_lat: np.ndarray,
    sb_lon: np.ndarray, sb_lat: np.ndarray,
) -> np.ndarray:
    """Probability that a passing encounter is a contact (short-encounter model).

    ``dx``/``dy`` is b minus a at the closest approach, ``vx``/``vy`` the relative motion
    (any scale, non-zero); other arguments as :func:`overlap_probability`. Across the
    relative motion the miss distance is normal; the footprints touch when it is within the
    half extent of both rectangles on that direction. Broadcasts.
    """
    norm = np.maximum(np.hypot(vx, vy), 1e-12)
    nx, ny = -vy / norm, vx / norm
    miss = dx * nx + dy * ny
    reach = (la * np.abs(ax * nx + ay * ny) + wa * np.abs(ax * ny - ay * nx)
             + lb * np.abs(bx * nx + by * ny) + wb * np.abs(bx * ny - by * nx))
    along_a, across_a = ax * nx + ay * ny, ax * ny - ay * nx
    along_b, across_b = bx * nx + by * ny, bx * ny - by * nx
    sd = np.sqrt(sa_lon * sa_lon * along_a * along_a + sa_lat * sa_lat * across_a * across_a
                 + sb_lon * sb_lon * along_b * along_b + sb_lat * sb_lat * across_b * across_b)
    sd = np.maximum(sd, 1e-6)
    return _normal_cdf((reach - miss) / sd) - _normal_cdf((-reach - miss) / sd)


def _closest_d2(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Least squared distance of the relative position over each interval between samples
    (linear motion within an interval), shape (m, J - 1)."""
    x0, y0 = dx[:, :-1], dy[:, :-1]
    ex, ey = dx[:, 1:] - x0, dy[:, 1:] - y0
    ee = ex * ex + ey * ey
    f = np.clip(-(x0 * ex + y0 * ey) / np.where(ee > 0, ee, 1.0), 0.0, 1.0)
    cx, cy = x0 + f * ex, y0 + f * ey
    return cx * cx + cy * cy


def contact_in_interval(
    x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
    ax: np.ndarray, ay: np.ndarray, la: np.ndarray, wa: np.ndarray,
    bx: np.ndarray, by: np.ndarray, lb: np.ndarray, wb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether, and at which fraction of the interval, two rectangles first touch.

    The offset b - a moves linearly from (x0, y0) to (x1, y1); headings are those at the
    interval's start. In 2-D the four box axes are then the only separating axes, so contact
    on [0, 1] is the intersection of the per-axis overlap intervals (continuous separating-
    axis test): fast pairs cannot pass through each other between samples.
    """
    hit, enter, _ = overlap_window(x0, y0, x1, y1, ax, ay, la, wa, bx, by, lb, wb)
    return hit, enter


def overlap_window(
    x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
    ax: np.ndarray, ay: np.ndarray, la: np.ndarray, wa: np.ndarray,
    bx: np.ndarray, by: np.ndarray, lb: np.ndarray, wb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`contact_in_interval` with the fraction where the overlap ends too (hit, enter,
    leave; enter = leave = 0 where there is no contact)."""
    c = np.abs(ax * bx + ay * by)
    s = np.abs(ax * by - ay * bx)
    enter = np.zeros_like(x0)
    leave = np.ones_like(x0)
    for ex, ey, r in ((ax, ay, la + lb * c + wb * s), (-ay, ax, wa + lb * s + wb * c),
                      (bx, by, lb + la * c + wa * s), (-by, bx, wb + la * s + wa * c)):
        p0 = x0 * ex + y0 * ey
        dp = x1 * ex + y1 * ey - p0
        moving = np.abs(dp) > 1e-12
        inv = 1.0 / np.where(moving, dp, 1.0)
        s1, s2 = (-r - p0) * inv, (r - p0) * inv
        inside = np.abs(p0) <= r
        enter = np.maximum(enter, np.where(moving, np.minimum(s1, s2),
                                           np.where(inside, 0.0, np.inf)))
        leave = np.minimum(leave, np.where(moving, np.maximum(s1, s2),
                                           np.where(inside, 1.0, -np.inf)))
    hit = enter <= leave
    return hit, np.where(hit, enter, 0.0), np.where(hit, leave, 0.0)


def _lateral_tol(va: np.ndarray, vb: np.ndarray, cfg: RiskConfig) -> np.ndarray:
    """Relative lateral speed that heading noise alone can produce (reported or derived)."""
    return np.maximum(cfg.lateral_heading_tol_rad * np.hypot(va, vb), cfg.lateral_speed_tol_mps)


def _turns_away(fleet: Fleet, smp: Samples, cfg: RiskConfig) -> np.ndarray:
    """Vehicles whose predicted path, at the end of the window, heads off their current
    heading by more than ``parallel_tol_rad``: the model foresees a turn (left across
    oncoming traffic, out of a junction's stop line), which lane keeping does not hold."""
    c = smp.ux[:, -1] * np.cos(fleet.heading) + smp.uy[:, -1] * np.sin(fleet.heading)
    return c < math.cos(cfg.parallel_tol_rad)


class _PairFrame:
    """Relative geometry of pairs at time t: direction classes and the pair's own axes.

    Near-parallel (same way or oncoming) by current headings, except an oncoming pair with
    one predicted to turn away (``turns``, per fleet row): a turn across the path of the
    oncoming car is judged on the predicted paths alone, as crossing paths are. Vehicles
    going the same way turn together (side by side through a junction) and stay parallel."""

    def __init__(
        self, fleet: Fleet, a: np.ndarray, b: np.ndarray, dx0: np.ndarray, dy0: np.ndarray,
        cfg: RiskConfig, turns: np.ndarray | None = None,
    ) -> None:
        ha, hb = fleet.heading[a], fleet.heading[b]
        if fleet.heading_known is not None:
            # A vehicle never seen moving has no heading yet: it is taken to stand along the
            # other's (a car queueing in its lane), so a stopped car ahead is followed.
            ka, kb = fleet.heading_known[a], fleet.heading_known[b]
            ha, hb = np.where(ka | ~kb, ha, hb), np.where(kb | ~ka, hb, ha)
        dh = np.angle(np.exp(1j * (hb - ha)))
        cos_tol = math.cos(cfg.parallel_tol_rad)
        oncoming = np.cos(dh) <= -cos_tol
        steady = True if turns is None else ~(turns[a] | turns[b])
        self.same = np.cos(dh) >= cos_tol
        self.opposite = oncoming & steady
        self.parallel = self.same | self.opposite
        # Axis: mean direction of travel (b's heading flipped when oncoming).
        self.axis = ha + 0.5 * np.where(oncoming, np.angle(np.exp(1j * (dh - np.pi))), dh)
        ux, uy = np.cos(self.axis), np.sin(self.axis)
        self.lon = dx0 * ux + dy0 * uy
        self.lat = -dx0 * uy + dy0 * ux
        # Another lane: sideways clear of each other by more than lane_gap_m now. Closer,
        # the footprints (nearly) overlap sideways and a contact is longitudinal. The offset
        # is measured across an axis known to lateral_heading_tol_rad, so far apart it is
        # short by up to |lon| times that: at most lane_gap_m, twice that for oncoming pairs
        # (they close at the sum of their speeds: twice as far apart at the same ttc).
        cap = np.where(self.opposite, 2.0 * cfg.lane_gap_m, cfg.lane_gap_m)
        slack = np.minimum(np.abs(self.lon) * cfg.lateral_heading_tol_rad, cap)
        self.other_lane = np.abs(self.lat) + slack >= (0.5 * (fleet.width[a] + fleet.width[b])
                                                       + cfg.margin_m + cfg.lane_gap_m)
        # one fully ahead of the other in the same lane
        ahead = np.abs(self.lon) > 0.5 * (fleet.length[a] + fleet.length[b])
        self.following = self.same & ~self.other_lane & ahead
        # Sideways clear (the footprints, taken along the axis, do not overlap across it):
        # going the same way, or oncoming side by side, only a sideways closing brings them
        # into contact; a heading error turns their straight paths into each other.
        clear = np.abs(self.lat) >= (0.5 * (fleet.width[a] + fleet.width[b]) + cfg.margin_m)
        self.apart = self.other_lane | (clear & (self.same | ~ahead))

    def take(self, index: np.ndarray) -> _PairFrame:
        out = object.__new__(_PairFrame)
        out.__dict__.update({k: v[index] for k, v in self.__dict__.items()})
        return out


def _plausible(
    fleet: Fleet, a: np.ndarray, b: np.ndarray, fr: _PairFrame, ttc_follow: np.ndarray,
    cfg: RiskConfig, wreck: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lane-keeping and following filters on the current state: (keep, may be critical);
    ``ttc_follow`` is the following pairs' bumper contact on current speeds and braking, a
    leader with a ``wreck`` time stops dead then."""
    ha, hb = fleet.heading[a], fleet.heading[b]
    va, vb = fleet.speed[a], fleet.speed[b]
    axis_ang, lat, lon = fr.axis, fr.lat, fr.lon

    # Lane keeping: lateral closing speed must exceed what heading noise explains.
    vlat_a = va * np.sin(ha - axis_ang)
    vlat_b = vb * np.sin(hb - axis_ang)
    lat_closing = -np.sign(lat) * (vlat_b - vlat_a)
    lane_ok = lat_closing >= _lateral_tol(va, vb, cfg)
    keep = np.where(fr.parallel & fr.apart, lane_ok, True)
    critical_ok = np.ones(a.shape[0], dtype=bool)

    # Following: warned when the follower brakes less than it needs to (and needs at least
    # warning_decel_mps2, or is about to touch); critical only once an ordinary stop no
    # longer fits either.
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
        # Required deceleration (leader keeps its own): while both still move the gap is
        # least at 2 gap / rel after the follower starts braking with dec_l + rel^2 / 2 gap;
        # if the leader has stopped before that, the follower must stop within gap plus
        # the leader's stopping distance instead.
        need_moving = dec_l + rel * rel / (2.0 * gap)
        stop_l = np.where(dec_l > 0, v_l * v_l / (2.0 * np.maximum(dec_l, 1e-9)), 0.0)
        t_leader_stops = np.where(dec_l > 0, v_l / np.maximum(dec_l, 1e-9), np.inf)
        if wreck is not None:
            dead = wreck[ld] < t_leader_stops
            w = np.where(dead, wreck[ld], 0.0)
            stop_l = np.where(dead, v_l * w - 0.5 * dec_l * w * w, stop_l)
            t_leader_stops = np.where(dead, w, t_leader_stops)
        need_stop = v_f * v_f / (2.0 * (gap + stop_l))
        t_least_gap = 2.0 * gap / np.maximum(rel, 1e-9)
        leader_first = (v_l <= cfg.still_speed_mps) | (t_leader_stops < t_least_gap)
        need = np.where(leader_first, need_stop, need_moving)
        dec_f = np.maximum(-fleet.accel[f], 0.0)
        short = need > dec_f
        # A follower already braking has seen the hazard and is stopping: it is warned only
        # once even a comfortable stop no longer fits (a driver firms up an under-braked stop
        # as the gap closes); one not braking, as soon as it needs warning_decel_mps2.
        reacting = dec_f > cfg.brake_accel_mps2
        enough = need >= np.where(reacting, cfg.comfort_decel_mps2, cfg.warning_decel_mps2)
        # ...or, however little braking would do, is about to touch (time to contact under
        # follow_warning_ttc_s: a car cutting in close ahead, a follower not reacting)
        urgent = ttc_follow < cfg.follow_warning_ttc_s
        keep &= np.where(follow, short & (enough | urgent), True)
        critical_ok &= np.where(follow, short & (need >= cfg.comfort_decel_mps2), True)
    return keep, critical_ok
