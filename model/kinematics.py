"""Batched kinematic estimation: speed, heading, yaw rate and acceleration per vehicle.

Raw GPS positions are noisy (tenths of a metre), so finite differences of successive fixes
make a parked car look like it moves at walking pace. Speed and heading therefore come from
the message when the vehicle reports them (as fleets do, from odometry and GNSS), and
otherwise from a least-squares line through the vehicle's last few fixes, with a dead band
scaled to the fit's own uncertainty. Heading is kept when the vehicle is (nearly) still, since
the heading of a stationary fix is meaningless.

All state lives in slot-indexed numpy arrays owned by :class:`KinematicsTracker`; the stream's
state store allocates the slots. Everything runs on event time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

WINDOW = 12  # fixes kept per vehicle for the position-based velocity fit
WINDOW_S = 1.5  # only fixes this recent take part in the fit
# The full window is sized for this much position noise; a vehicle whose fixes show less
# gets a shorter one (see KinematicsTracker), down to its newest 3 fixes.
WINDOW_NOISE_M = 0.3
NOISE_FLOOR_M = 0.02  # a measured noise below this is taken as this (rounding, jerk)
# One window measures the noise only roughly (the median of ~10 chords: a standard error of
# ~25%); the dead band takes it this much larger, or a car standing in noise takes a
# heading from the low draws.
_NOISE_MARGIN = 1.5
_NOISE_MIN_TRIPLES = 3  # chords (5 fixes) before the noise is measured instead of assumed
STILL_SPEED_MPS = 0.5  # below this a heading is not updated from motion
# ...nor below this many sigma of the fit (its direction is then known to 1/6 rad). A car
# standing in GPS noise fits speeds past the 3-sigma dead band now and then; taken as a
# direction, its heading swung ~5 times a minute at the assumed noise and ~35 at 0.4 m,
# where at 6 sigma it never moves at 0.3 m and 2.5% of cars get one in a minute at 0.4 m.
HEADING_MIN_SIGMAS = 6.0
# The yaw rate's filter: 0.2 s shows a turn ~0.15 s sooner than 0.4 s did, with 1.5-1.8x
# the noise on a straight road, which YAW_NOISE_RPS absorbs (chosen on the tuning library;
# docs/quality.md).
_YAW_TAU_S = 0.2
# Yaw rates below this are the estimator's noise, not a turn: a car going straight with
# 1.4 degrees of reported heading noise at 10 Hz shows up to 0.14 rad/s (99th percentile,
# 0.26 at most; 0.06 / 0.17 from positions with 0.3 m of GPS noise) through the 0.2 s filter.
YAW_NOISE_RPS = 0.2
_ACCEL_TAU_S = 0.4
_HEADING_TAU_S = 0.15
_MAX_YAW_RATE = 1.0  # rad/s; tighter than any road vehicle can turn at speed
# Plausibility of reported speed/heading (see KinematicsTracker): tolerances, generous on
# purpose (GPS noise, real stops and hard braking must never be flagged).
SPEED_TOL_MPS = 2.0  # reported mean speed may differ from the fitted one by this ...
SPEED_TOL_REL = 0.25  # ... plus this share of the larger of the two, plus 3 sigma of the fit
HEADING_CHECK_MPS = 3.0  # headings are judged only above this fitted speed
HEADING_TOL_RAD = np.deg2rad(35.0)
FIT_SIGMA_MAX_MPS = 0.5  # a fit less certain than this judges nothing
# A feed slower than ~2 Hz has fewer than 3 fixes within WINDOW_S: its newest 3 take their
# place when they span at most this (1 Hz: 2 s; 0.5 Hz: 4 s). Without them a 1 Hz vehicle
# reporting positions only never had a speed or a heading (a simulated 1 Hz city: not one
# alert), and its reported speed and heading were never checked.
SLOW_FEED_SPAN_S = 4.5
SPEED_FLAG, HEADING_FLAG = 1, 2  # bits of KinematicsTracker.flags


@dataclass(frozen=True, slots=True)
class Kinematics:
    """Estimated motion of a batch of n vehicles at their latest fix (all arrays shape (n,)).

    ``x``/``y`` are the latest observed position, ``prev_x``/``prev_y`` the previous one (equal
    to the latest when ``first``), ``dt`` the event time since the previous fix (0 when
    ``first``). Angles in radians counter-clockwise from +x, speeds in m/s. ``heading_known``
    is False while no heading has been reported and the vehicle has not yet been seen moving
    clearly (a fitted speed past ``HEADING_MIN_SIGMAS`` sigmas of the fit: a standing car, any
    car over its first few fixes); ``heading`` is then a placeholder. None where the producer
    does not say (every heading taken as known). ``speed_now``: the speed at the latest fix
    (see :class:`KinematicsTracker`; None: ``speed``).
    """

    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    prev_x: np.ndarray
    prev_y: np.ndarray
    dt: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    yaw_rate: np.ndarray
    accel: np.ndarray
    first: np.ndarray
    heading_known: np.ndarray | None = None
    speed_now: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray) -> Kinematics:
        """The subset of vehicles at ``index`` (indices or boolean mask)."""
        cols: dict[str, Any] = {f: getattr(self, f) for f in self.__slots__}
        out: dict[str, Any] = {f: None if v is None else v[index] for f, v in cols.items()}
        return Kinematics(**out)


def _shifted(hist: np.ndarray, slots: np.ndarray, newest: np.ndarray) -> np.ndarray:
    """Rows ``slots`` of a (capacity, WINDOW) history, one place older, ``newest`` last."""
    rows = hist.take(slots, axis=0)  # whole rows: a plain copy per row, unlike hist[slots, 1:]
    out = np.empty_like(rows)
    out[:, :-1] = rows[:, 1:]
    out[:, -1] = newest
    return out


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _window(age: np.ndarray, recent: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Weights (1: in the fit) of the fixes a line fit uses at this position noise: those
    within ``WINDOW_S * (noise / WINDOW_NOISE_M) ** (2/3)``, and always the newest 3."""
    span = WINDOW_S * np.minimum(noise / WINDOW_NOISE_M, 1.0) ** (2.0 / 3.0)
    newest3 = np.arange(age.shape[1]) >= age.shape[1] - 3
    return (recent & ((age <= span[:, None]) | newest3)).astype(np.float64)


def _line_fit(
    age: np.ndarray, w: np.ndarray, hx: np.ndarray, hy: np.ndarray, noise: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares velocity over the fixes weighted ``w``, the standard error of its speed
    (the noise taken ``_NOISE_MARGIN`` larger) and how long before the newest fix the fitted
    velocity holds (the mean age of the fitted fixes)."""
    n = w.sum(axis=1)
    t = np.where(w > 0, -age, 0.0)
    tm = (w * t).sum(axis=1) / np.maximum(n, 1.0)
    dtm = (t - tm[:, None]) * w
    sxx = (dtm * dtm).sum(axis=1)
    ok = (n >= 3) & (sxx > 1e-6)
    safe = np.where(ok, sxx, 1.0)
    xm = (w * hx).sum(axis=1) / np.maximum(n, 1.0)
    ym = (w * hy).sum(axis=1) / np.maximum(n, 1.0)
    vx = np.where(ok, (dtm * (hx - xm[:, None])).sum(axis=1) / safe, 0.0)
    vy = np.where(ok, (dtm * (hy - ym[:, None])).sum(axis=1) / safe, 0.0)
    sigma = np.where(ok, _NOISE_MARGIN * noise / np.sqrt(safe), np.inf)
    return vx, vy, sigma, np.where(ok, -tm, 0.0)


class KinematicsTracker:
    """Per-slot kinematic state, grown on demand; ``update`` is vectorised over a batch.

    The position noise is measured per vehicle from its own fixes: how far each fix of the
    window lies off the chord of its two neighbours (second differences; at 10 Hz a turn or
    hard braking moves a fix off that chord by under 3 cm, so what is left is noise), their
    median, so that one multipath fix is not taken for noisy fixes.
    ``gps_sigma_m`` is assumed until the window holds 5 fixes. The noise sets the dead band
    under which a position-derived speed is treated as zero, and the window's length: a
    line fit's speed error grows with the noise and shrinks with the window length to the
    power 1.5, so the window is ``WINDOW_S * (noise / WINDOW_NOISE_M) ** (2/3)`` (at least
    the newest 3 fixes): the same speed error as the full window at 0.3 m, at a fraction of
    its lag for a vehicle with precise positions (RTK, a roadside tracker). Both come from
    the window itself, so a restored tracker measures what an uninterrupted one does.

    A position-derived speed is a line fit over the window, so it is the speed of the
    window's centre (~0.55 s back at 10 Hz): braking at 3 m/s^2 it reads 1.6 m/s fast.
    ``speed_now`` carries it forward to the latest fix with the filtered acceleration, which
    takes most of that lag out (``bench/bench_kinematics.py``); the risk rules read it.
    ``speed``, the fitted value, stays what the LSTM reads (it was trained on it) and what
    the acceleration is differenced from (differencing the carried-forward speed would feed
    the acceleration back into itself). A reported speed is both.

    With ``check_reported`` a reported speed or heading is used only while it agrees with
    the vehicle's motion: over the last ``WINDOW_S`` of fixes (at least 3, all reporting; the
    whole of it, also where the fit itself uses fewer) the mean reported speed must match
    a line fit's speed within ``SPEED_TOL_MPS`` + ``SPEED_TOL_REL`` of the larger + 3 sigma
    of the fit, and above ``HEADING_CHECK_MPS`` the mean reported direction must lie within
    ``HEADING_TOL_RAD`` of the fitted course. Means over the same window as that fit
    cancel the fit's lag under steady acceleration or turning, so hard braking, real stops
    and GPS noise pass; km/h sent as m/s, ``speed: 0`` on a moving vehicle, degrees or
    compass headings do not. A fix that fails uses the
    derived value instead (the fix itself is kept) and is marked in :attr:`flags`
    (``SPEED_FLAG``, ``HEADING_FLAG``) for the caller to count; so is every later fix of the
    same track (a wrong unit does not heal when the vehicle slows below what is judged).
    The reported history and the distrust are not part of checkpoints: after a restore the
    check resumes once the window refills.
    """

    def __init__(self, capacity: int = 1024, *, gps_sigma_m: float = 0.3,
                 check_reported: bool = False) -> None:
        self.gps_sigma_m = gps_sigma_m
        self.check_reported = check_reported
        self.capacity = 0
        self.flags = np.zeros(0, dtype=np.int8)  # per row of the last update
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        def grow(old: np.ndarray | None, shape: tuple[int, ...], fill: float) -> np.ndarray:
            new = np.full(shape, fill, dtype=np.float64)
            if old is not None:
                new[: old.shape[0]] = old
            return new

        g = self.__dict__.get
        self.ts = grow(g("ts"), (capacity,), np.nan)
        self.x = grow(g("x"), (capacity,), 0.0)
        self.y = grow(g("y"), (capacity,), 0.0)
        self.speed = grow(g("speed"), (capacity,), 0.0)
        self.heading = grow(g("heading"), (capacity,), 0.0)
        # 1.0 once a heading has been observed or derived from motion; until then heading 0
        # is a placeholder that must not be blended into (or differenced with) a real one.
        self.heading_known = grow(g("heading_known"), (capacity,), 0.0)
        self.yaw_rate = grow(g("yaw_rate"), (capacity,), 0.0)
        self.accel = grow(g("accel"), (capacity,), 0.0)
        self.speed_now = grow(g("speed_now"), (capacity,), 0.0)
        self.hist_t = grow(g("hist_t"), (capacity, WINDOW), np.nan)
        self.hist_x = grow(g("hist_x"), (capacity, WINDOW), 0.0)
        self.hist_y = grow(g("hist_y"), (capacity, WINDOW), 0.0)
        if self.check_reported:  # reported speed and heading (unit vector), NaN: absent
            self.hist_s = grow(g("hist_s"), (capacity, WINDOW), np.nan)
            self.hist_c = grow(g("hist_c"), (capacity, WINDOW), np.nan)
            self.hist_n = grow(g("hist_n"), (capacity, WINDOW), np.nan)
            # bits of the reported values found wrong on this track: not used again on it
            self.distrust = grow(g("distrust"), (capacity,), 0.0)
            # bits a slow feed's last judgement found wrong, awaiting a second one
            self.suspect = grow(g("suspect"), (capacity,), 0.0)
        self.capacity = capacity

    def ensure_capacity(self, capacity: int) -> None:
        if capacity > self.capacity:
            self._alloc(max(capacity, 2 * self.capacity))

    def reset(self, slots: np.ndarray) -> None:
        """Forget the motion history of ``slots`` (new vehicle, eviction or a long gap)."""
        self.ts[slots] = np.nan
        self.speed[slots] = 0.0
        self.heading[slots] = 0.0
        self.heading_known[slots] = 0.0
        self.yaw_rate[slots] = 0.0
        self.accel[slots] = 0.0
        self.speed_now[slots] = 0.0
        self.hist_t[slots] = np.nan
        if self.check_reported:
            self.hist_s[slots] = np.nan
            self.hist_c[slots] = np.nan
            self.hist_n[slots] = np.nan
            self.distrust[slots] = 0.0
            self.suspect[slots] = 0.0

    def update(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        speed: np.ndarray,
        heading: np.ndarray,
    ) -> Kinematics:
        """Advance ``slots`` (unique) by one fix each; ``speed``/``heading`` are NaN when absent.

        The caller guarantees ``ts`` is later than each slot's previous fix.
        """
        prev_ts = self.ts[slots]
        first = np.isnan(prev_ts)
        dt = np.where(first, 0.0, ts - np.where(first, ts, prev_ts))
        prev_x = np.where(first, x, self.x[slots])
        prev_y = np.where(first, y, self.y[slots])
        prev_speed = self.speed[slots]
        prev_heading = self.heading[slots]
        prev_known = (self.heading_known[slots] > 0) & ~first

        # Recent fixes, newest last: shifted one place left, the new fix appended.
        ht, hx, hy = (_shifted(self.hist_t, slots, ts), _shifted(self.hist_x, slots, x),
                      _shifted(self.hist_y, slots, y))
        self.hist_t[slots], self.hist_x[slots], self.hist_y[slots] = ht, hx, hy
        age = ts[:, None] - ht
        recent = np.isfinite(ht) & (age <= WINDOW_S)
        slow = (recent.sum(axis=1) < 3) & (age[:, -3] <= SLOW_FEED_SPAN_S)
        if slow.any():  # (a NaN age, fewer than 3 fixes yet, compares False)
            recent[slow, -3:] = True
        noise = self._noise(ht, hx, hy, recent)
        w = _window(age, recent, noise)
        fit_vx, fit_vy, fit_sigma, fit_age = _line_fit(age, w, hx, hy, noise)

        # Speed: reported, else fitted with a dead band of ~3 sigma of the fit.
        fit_speed = np.hypot(fit_vx, fit_vy)
        moving = fit_speed > np.maximum(STILL_SPEED_MPS, 3.0 * fit_sigma)
        est_speed = np.where(moving, fit_speed, 0.0)
        has_speed = np.isfinite(speed)
        has_heading = np.isfinite(heading)
        if self.check_reported:
            # Judged over every recent fix, not the fit's window: the mean of the reported
            # values matches a line fit's slope only over a window that smooths an abrupt
            # change (a crash stops a car within one fix; over its newest 3 fixes the
            # reported 15, 0 and 0 m/s average 5 where the car moved at 0.3).
            cw, cvx, cvy, csig = w, fit_vx, fit_vy, fit_sigma
            short = (w.sum(axis=1) < recent.sum(axis=1)).nonzero()[0]
            if short.size:
                cw, cvx, cvy, csig = w.copy(), cvx.copy(), cvy.copy(), csig.copy()
                cw[short] = recent[short]
                cvx[short], cvy[short], csig[short], _ = _line_fit(
                    age[short], cw[short], hx[short], hy[short], noise[short])
            bad_speed, bad_heading = self._check(slots, speed, heading, cw, cvx, cvy,
                                                 np.hypot(cvx, cvy), csig)
            held = self.suspect[slots]
            if slow.any() or held.any():
                # A slow feed's 3 fixes disagree once at a real crash (15, 0 and 0 m/s
                # reported where the car stood through all three): a mismatch there counts
                # when the judgement before found it too.
                bits = (bad_speed * SPEED_FLAG + bad_heading * HEADING_FLAG).astype(np.int8)
                self.suspect[slots] = np.where(slow, bits, 0)
                bits = np.where(slow, bits & held.astype(np.int8), bits)
                bad_speed, bad_heading = (bits & SPEED_FLAG) > 0, (bits & HEADING_FLAG) > 0
            # once wrong, a vehicle's reported value stays unused for the rest of its track
            # (a unit mistake does not heal when the vehicle slows below what is judged)
            was = self.distrust[slots].astype(np.int8)
            bad_speed |= (was & SPEED_FLAG).astype(bool) & np.isfinite(speed)
            bad_heading |= (was & HEADING_FLAG).astype(bool) & np.isfinite(heading)
            has_speed &= ~bad_speed
            has_heading &= ~bad_heading
            self.flags = (bad_speed * SPEED_FLAG + bad_heading * HEADING_FLAG).astype(np.int8)
            self.distrust[slots] = self.flags
        new_speed = np.where(has_speed, np.abs(np.nan_to_num(speed)), est_speed)

        # Heading: reported (smoothed), else direction of the fitted velocity while moving.
        fit_heading = np.arctan2(fit_vy, fit_vx)
        target = np.where(has_heading, np.nan_to_num(heading), fit_heading)
        usable = has_heading | (moving & (fit_speed > HEADING_MIN_SIGMAS * fit_sigma))
        k_head = np.where(prev_known, 1.0 - np.exp(-dt / _HEADING_TAU_S), 1.0)
        new_heading = np.where(
            usable,
            _wrap(prev_heading + k_head * _wrap(target - prev_heading)),
            prev_heading,
        )
        new_heading = np.where(first & ~usable, 0.0, new_heading)

        safe_dt = np.where(dt > 0, dt, 1.0)
        turning = prev_known & (new_speed > 1.0) & (prev_speed > 1.0)
        inst_yaw = np.where(turning, _wrap(new_heading - prev_heading) / safe_dt, 0.0)
        inst_yaw = np.clip(inst_yaw, -_MAX_YAW_RATE, _MAX_YAW_RATE)
        k_yaw = np.where(first, 1.0, 1.0 - np.exp(-dt / _YAW_TAU_S))
        new_yaw = self.yaw_rate[slots] + k_yaw * (inst_yaw - self.yaw_rate[slots])

        # A slow feed's first fit is not an acceleration from a standstill: its previous
        # fix had no speed yet (at 1 Hz, carried forward a second, it read 19 m/s for 12).
        unmeasured = first | (slow & ~has_speed & np.isnan(ht[:, -4]))
        inst_acc = np.where(unmeasured, 0.0, (new_speed - prev_speed) / safe_dt)
        k_acc = np.where(first, 1.0, 1.0 - np.exp(-dt / _ACCEL_TAU_S))
        new_acc = self.accel[slots] + k_acc * (np.clip(inst_acc, -12.0, 8.0) - self.accel[slots])

        self.ts[slots], self.x[slots], self.y[slots] = ts, x, y
        self.speed[slots], self.heading[slots] = new_speed, new_heading
        known = prev_known | usable
        self.heading_known[slots] = known.astype(np.float64)
        self.yaw_rate[slots], self.accel[slots] = new_yaw, new_acc
        carried = np.maximum(est_speed + new_acc * fit_age, 0.0)
        speed_now = np.where(moving & ~first & ~has_speed, carried, new_speed)
        self.speed_now[slots] = speed_now
        return Kinematics(
            ts=ts, x=x, y=y, prev_x=prev_x, prev_y=prev_y, dt=dt, speed=new_speed,
            heading=new_heading, yaw_rate=new_yaw, accel=new_acc, first=first,
            heading_known=known, speed_now=speed_now,
        )

    def _check(self, slots: np.ndarray, speed: np.ndarray, heading: np.ndarray,
               w: np.ndarray, fit_vx: np.ndarray, fit_vy: np.ndarray, fit_speed: np.ndarray,
               fit_sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose reported speed / heading disagree with the fitted motion (see class)."""
        hs = _shifted(self.hist_s, slots, speed)
        hc = _shifted(self.hist_c, slots, np.cos(heading))
        hn = _shifted(self.hist_n, slots, np.sin(heading))
        self.hist_s[slots], self.hist_c[slots], self.hist_n[slots] = hs, hc, hn
        judged = (w.sum(axis=1) >= 3) & (fit_sigma <= FIT_SIGMA_MAX_MPS)
        if not judged.any():  # two arrays: the caller ORs into each in place
            return np.zeros(slots.size, dtype=bool), np.zeros(slots.size, dtype=bool)
        inside = w > 0
        n = np.maximum(w.sum(axis=1), 1.0)
        # Sums over the fit's fixes are NaN where one of them reported nothing (values are
        # finite or NaN): such a row is not judged, whatever its other values say.
        mean_s = np.abs(np.where(inside, hs, 0.0)).sum(axis=1) / n
        s_all = judged & np.isfinite(speed) & ~np.isnan(mean_s)
        tol = SPEED_TOL_MPS + SPEED_TOL_REL * np.maximum(mean_s, fit_speed) + 3.0 * fit_sigma
        bad_speed = s_all & (np.abs(mean_s - fit_speed) > tol)
        mc = np.where(inside, hc, 0.0).sum(axis=1)
        mn = np.where(inside, hn, 0.0).sum(axis=1)
        h_all = (judged & np.isfinite(heading) & (fit_speed > HEADING_CHECK_MPS)
                 & ~np.isnan(mc))
        # angle between the mean reported direction and the fitted course, by its cosine
        dot = mc * fit_vx + mn * fit_vy
        norm = np.hypot(mc, mn) * fit_speed
        bad_heading = h_all & (dot < np.cos(HEADING_TOL_RAD) * norm)
        return bad_speed, bad_heading

    def _noise(self, ht: np.ndarray, hx: np.ndarray, hy: np.ndarray,
               recent: np.ndarray) -> np.ndarray:
        """Position noise per row, from how far each recent fix lies off the chord of its
        neighbours (``gps_sigma_m`` while fewer than ``_NOISE_MIN_TRIPLES`` fixes have both)."""
        ok = recent[:, :-2] & recent[:, 1:-1] & recent[:, 2:]
        with np.errstate(invalid="ignore"):  # NaN times of unfilled slots: masked below
            # the chord's share of the way from the first fix to the third at the middle
            # one (fixes of a vehicle come in event-time order: the gap is > 0)
            share = (ht[:, 1:-1] - ht[:, :-2]) / (ht[:, 2:] - ht[:, :-2])
            ex = hx[:, 1:-1] - hx[:, :-2] - share * (hx[:, 2:] - hx[:, :-2])
            ey = hy[:, 1:-1] - hy[:, :-2] - share * (hy[:, 2:] - hy[:, :-2])
            off = np.sort(np.where(ok, ex * ex + ey * ey, np.inf), axis=1)
        # ex and ey are normal with variance 1.5 sigma^2 at even spacing, so ex^2 + ey^2 is
        # 1.5 sigma^2 chi-square(2), whose median is 1.5 sigma^2 * 2 ln 2. The median, not
        # the mean: one fix metres off (multipath) spoils three of the window's chords, and
        # their mean reads as a metre of noise, a dead band that stops a crawling car.
        triples = ok.sum(axis=1)
        measured = triples >= _NOISE_MIN_TRIPLES
        lo = np.maximum(triples - 1, 0) // 2
        hi = np.minimum(triples // 2, off.shape[1] - 1)
        mid = 0.5 * (np.take_along_axis(off, lo[:, None], axis=1)[:, 0]
                     + np.take_along_axis(off, hi[:, None], axis=1)[:, 0])
        sigma = np.sqrt(np.where(measured, mid, 0.0) / (3.0 * math.log(2.0)))
        return np.where(measured, np.maximum(sigma, NOISE_FLOOR_M), self.gps_sigma_m)
