"""Vectorised traffic engine: every vehicle advances in one set of numpy operations per tick.

State lives in parallel arrays (one row per vehicle present, ordered by vehicle id). Each tick:
despawn vehicles whose crash hold is over; find each vehicle's leader along its lane (one sort
of all occupants, plus a look-ahead into the junction movement and the lane after it);
accelerations from the Intelligent Driver Model (IDM), stop lines (signals, blocked junction,
full exit lane, yielding on a left turn) and turn speeds; lane changes (mandatory to reach the
turn lane, discretionary to pass) accepted on the MOBIL safety criterion; integrate; move
vehicles across segments; spawn replacements at the edges; compute poses and find contacts.

Ordinary drivers are collision-free by construction: cross directions never have green
together and a junction is entered only when no cross traffic is inside it, left turns yield
to oncoming traffic with a generous gap (and oncoming traffic waits for a left turner inside),
lane changes need safe gaps, vehicles keep their lane and car-following gaps. Reckless
drivers (``reckless_fraction``) break one of these rules at a time, mostly in ways visible
for seconds before any contact: run a red light straight through, keep speed into a stopped
queue while distracted, cut in with a small gap and brake, drift out of their lane, and
sometimes turn left across oncoming traffic. Footprints that overlap are collisions: both
vehicles stop, stay for ``crash_hold_s`` and are removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.simulator.config import SimConfig
from trajstream.simulator.drivers import DriverModel, idm_accel
from trajstream.simulator.occupancy import Occupancy
from trajstream.simulator.truth import ClosePairs, close_pairs
from trajstream.simulator.world import GREEN, LEFT, RIGHT, STRAIGHT, YELLOW, World


@dataclass(frozen=True)
class StepResult:
    """The true state after one tick (speeds as at the instant of any contact)."""

    vid: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    length: np.ndarray
    width: np.ndarray
    pairs: ClosePairs


_FLOAT_COLS = ("s", "v", "acc", "x", "y", "hd", "lat_lc", "lc_p", "lc_sign", "lc_dur",
               "lc_len", "drift", "drift_v", "drift_until", "wake_decel", "stop_gap",
               "brake_until", "brake_decel", "crash_until", "length", "width", "v0", "a_max",
               "headway", "lat_prev", "turn_factor")
_INT_COLS = ("vid", "seg", "prev_seg", "turn")
_BOOL_COLS = ("committed", "run_red", "no_yield", "distract_armed", "distracted", "panic",
              "crashed", "reckless")
_REAR_OVERHANG_M = 1.0  # rear bumper to rear axle


class Engine:
    """The traffic state and its update; ``step()`` advances ``1/hz`` seconds."""

    def __init__(self, config: SimConfig, rng: np.random.Generator,
                 model: DriverModel | None = None) -> None:
        self.config = config
        self.model = model or DriverModel()
        self.rng = rng
        wc = config.world_config()
        self.world = World(wc, rng.uniform(0.0, wc.cycle_s, wc.grid_n ** 2))
        self.dt = config.dt_s / config.substeps
        self._tick = -self.warmup_steps
        self.t = self._tick * self.dt  # simulation time; output starts after the warm-up
        self.behaviours_on = False  # reckless behaviour starts with the output, not the warm-up
        self._next_id = 1
        self._vturn = self.world.turn_speed(self.model.turn_lateral_mps2)
        self.st: dict[str, np.ndarray] = {}
        for name in _FLOAT_COLS:
            self.st[name] = np.zeros(0)
        for name in _INT_COLS:
            self.st[name] = np.zeros(0, dtype=np.int64)
        for name in _BOOL_COLS:
            self.st[name] = np.zeros(0, dtype=bool)
        self._initial_fill()

    # ------------------------------------------------------------------ population

    @property
    def warmup_steps(self) -> int:
        return int(round(self.config.warmup_s / self.dt))

    @property
    def n(self) -> int:
        return int(self.st["vid"].shape[0])

    def _initial_fill(self) -> None:
        """Spread the target number of vehicles evenly (with jitter) over the link lanes,
        standing still; the warm-up turns this into traffic."""
        w, n = self.world, self.config.vehicles
        links = w.link_segs
        usable = np.maximum(w.seg_length[links] - 40.0, 0.0)
        ends = np.cumsum(usable)
        u = (np.arange(n) + self.rng.uniform(0.0, 0.5, n)) * (ends[-1] / n)
        k = np.minimum(np.searchsorted(ends, u, side="right"), links.shape[0] - 1)
        s = 10.0 + u - (ends[k] - usable[k])
        seg = links[k]
        too_close = np.r_[False, (seg[1:] == seg[:-1]) & (s[1:] - s[:-1] < 7.0)]
        self._add(seg[~too_close], s[~too_close], np.zeros(int((~too_close).sum())))

    def _add(self, seg: np.ndarray, s: np.ndarray, v: np.ndarray) -> None:
        k = seg.shape[0]
        if k == 0:
            return
        m, rng, cfg = self.model, self.rng, self.config
        new: dict[str, np.ndarray] = {name: np.zeros(k) for name in _FLOAT_COLS}
        new.update({name: np.zeros(k, dtype=np.int64) for name in _INT_COLS})
        new.update({name: np.zeros(k, dtype=bool) for name in _BOOL_COLS})
        new["vid"] = np.arange(self._next_id, self._next_id + k)
        self._next_id += k
        new["seg"], new["prev_seg"], new["s"], new["v"] = seg, seg, s, v
        kind = rng.uniform(0.0, 1.0, k)
        new["length"] = np.select([kind < 0.1, kind < 0.2], [5.3, 3.9], DEFAULT_LENGTH_M)
        new["width"] = np.select([kind < 0.1, kind < 0.2], [2.0, 1.7], DEFAULT_WIDTH_M)
        reckless = np.less(rng.uniform(0.0, 1.0, k), cfg.reckless_fraction)
        new["reckless"] = reckless
        factor = np.clip(rng.normal(1.0, 0.07, k), 0.85, 1.15)
        new["v0"] = cfg.speed_limit_mps * factor * np.where(reckless, m.reckless_speed_factor, 1.0)
        new["a_max"] = np.where(reckless, m.reckless_accel_mps2,
                                m.accel_mps2 * np.clip(rng.normal(1.0, 0.15, k), 0.7, 1.3))
        new["headway"] = np.where(reckless, m.reckless_headway_s,
                                  m.headway_s * np.clip(rng.normal(1.0, 0.12, k), 0.8, 1.3))
        new["turn_factor"] = np.where(reckless, 1.3, 1.0)  # x comfortable turn speed
        new["lc_p"] = np.ones(k)
        new["lc_dur"] = np.where(reckless, 0.6, 1.0) * m.lane_change_s
        new["crash_until"] = np.full(k, np.inf)
        start = self.n
        for name, arr in new.items():
            self.st[name] = np.concatenate([self.st[name], arr])
        self._new_link(np.arange(start, start + k))

    def _new_link(self, idx: np.ndarray) -> None:
        """Decisions made on entering a link: the turn at its end, and what a reckless driver
        will do on this approach."""
        if idx.shape[0] == 0:
            return
        st, m, w, rng = self.st, self.model, self.world, self.rng
        k = idx.shape[0]
        turn = rng.choice(3, size=k, p=m.turn_probs)
        signalised = w.seg_approach[st["seg"][idx]] >= 0
        st["turn"][idx] = np.where(signalised, turn, STRAIGHT)
        st["committed"][idx] = False
        st["distracted"][idx] = False
        st["panic"][idx] = False
        u = rng.uniform(0.0, 1.0, (3, k))
        r = st["reckless"][idx] & signalised
        runner = r & (u[0] < m.p_run_red)
        st["run_red"][idx] = runner
        st["turn"][idx[runner]] = STRAIGHT  # they rush straight through: a straight path
        st["no_yield"][idx] = r & (u[1] < m.p_no_yield)
        st["distract_armed"][idx] = r & (u[2] < m.p_distracted)

    def _compact(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        for name in self.st:
            self.st[name] = self.st[name][keep]

    # ------------------------------------------------------------------ the tick

    def step(self) -> StepResult:
        """Advance ``dt`` (one tick, or a part of it when the tick is longer than 0.1 s);
        returns the state at the new time ``self.t``."""
        st = self.st
        self._tick += 1
        self.t = t = self._tick * self.dt
        self._compact(~(st["crashed"] & (st["crash_until"] <= t)))
        if self.n:
            self._drive(t)
        self._spawn()
        x, y, heading = self._poses()
        speed = st["v"].copy()
        pairs = close_pairs(x, y, heading, st["length"], st["width"],
                            max_gap_m=self.config.near_miss_gap_m + 0.5)
        self._crash(pairs, t)
        return StepResult(st["vid"].copy(), x, y, heading, speed, st["length"].copy(),
                          st["width"].copy(), pairs)

    def _drive(self, t: float) -> None:
        st, w = self.st, self.world
        seg = st["seg"]
        on_link = w.seg_is_link[seg]
        self._missed_turns(on_link)
        own_move = self._own_move(on_link)
        signal = w.signal_state(t)
        occ = Occupancy(self, on_link, own_move, signal)
        gap, lead_v, lead = occ.leaders(own_move)
        acc = self._accelerations(signal, on_link, own_move, occ, gap, lead_v, lead)
        if self.behaviours_on:
            self._start_drifts(t, on_link)
        self._lane_changes(t, on_link, occ, gap, lead_v)
        self._integrate(t, acc)

    def _missed_turns(self, on_link: np.ndarray) -> None:
        """Drivers still in the wrong lane close to the junction go straight instead."""
        st, w = self.st, self.world
        lane = w.seg_lane[st["seg"]]
        d_end = w.seg_length[st["seg"]] - st["s"]
        wrong = on_link & ~self._lane_fits(lane) & (d_end < 40.0)
        st["turn"][wrong] = STRAIGHT

    def _lane_fits(self, lane: np.ndarray) -> np.ndarray:
        turn = self.st["turn"]
        return ((turn == STRAIGHT) | ((turn == LEFT) & (lane == 0))
                | ((turn == RIGHT) & (lane == self.world.lanes - 1)))

    def _own_move(self, on_link: np.ndarray) -> np.ndarray:
        """Movement segment each link vehicle will take (sentinel on exit links/elsewhere)."""
        st, w = self.st, self.world
        seg = st["seg"]
        eff = np.where(self._lane_fits(w.seg_lane[seg]), st["turn"], STRAIGHT)
        row = np.where(on_link, seg, w.n_link_segs)
        return w.link_moves[row, eff]

    def _accelerations(self, signal: np.ndarray, on_link: np.ndarray, own_move: np.ndarray,
                       occ: Occupancy, gap: np.ndarray, lead_v: np.ndarray,
                       lead: np.ndarray) -> np.ndarray:
        st, w, m = self.st, self.world, self.model
        seg, s, v = st["seg"], st["s"], st["v"]
        v0 = st["v0"]
        arc_limit = self._vturn[seg] * st["turn_factor"]
        v0 = np.where(w.seg_arc[seg], np.minimum(v0, arc_limit), v0)
        dv = v - lead_v
        need = self._distraction(on_link, gap, lead_v, lead) if self.behaviours_on else None
        a_follow = idm_accel(v, v0, gap, dv, st["a_max"], m.comfort_decel_mps2, st["headway"],
                             m.min_gap_m)
        a_free = idm_accel(v, v0, np.full(self.n, np.inf), dv, st["a_max"],
                           m.comfort_decel_mps2, st["headway"], m.min_gap_m)
        acc = np.where(st["distracted"], a_free, a_follow)
        if need is not None:
            acc = np.where(st["panic"], -np.minimum(need, m.max_decel_mps2), acc)
        # slow down for the turn ahead
        d_end = w.seg_length[seg] - s
        v_turn = self._vturn[own_move] * st["turn_factor"]
        with np.errstate(invalid="ignore"):
            b_turn = (v * v - v_turn * v_turn) / (2.0 * np.maximum(d_end - 2.0, 0.5))
        slow = on_link & (v > v_turn) & (b_turn >= 1.0)
        acc = np.where(slow, np.minimum(acc, -b_turn), acc)
        acc = np.minimum(acc, self._stop_lines(signal, on_link, own_move, occ))
        wreck_gap = self._wreck_gaps()
        if np.isfinite(wreck_gap).any():
            acc = np.minimum(acc, idm_accel(v, v0, wreck_gap, v, st["a_max"],
                                            m.comfort_decel_mps2, st["headway"], m.min_gap_m))
        braking = self.t < st["brake_until"]
        acc = np.where(braking, np.minimum(acc, -st["brake_decel"]), acc)
        acc = np.clip(acc, -m.max_decel_mps2, st["a_max"])
        acc[st["crashed"]] = -10.0  # wrecks skid to a stop
        return acc

    def _wreck_gaps(self) -> np.ndarray:
        """Distance to a wreck in the way (inf if none): everyone sees a crash in front of
        them, whatever lane or junction movement it stopped in. Wrecks are few: candidates
        are the (vehicle, wreck) pairs within 60 m, from the last poses."""
        st = self.st
        gap = np.full(self.n, np.inf)
        wrecks = np.flatnonzero(st["crashed"])
        if wrecks.shape[0] == 0:
            return gap
        x, y, hd = st["x"], st["y"], st["hd"]
        dx = x[wrecks][None, :] - x[:, None]
        dy = y[wrecks][None, :] - y[:, None]
        i, k = np.nonzero(dx * dx + dy * dy < 60.0 * 60.0)
        dx, dy, j = dx[i, k], dy[i, k], wrecks[k]
        c, s = np.cos(hd[i]), np.sin(hd[i])
        along, across = dx * c + dy * s, dy * c - dx * s
        rel = hd[j] - hd[i]
        hl, hw = 0.5 * st["length"][j], 0.5 * st["width"][j]
        ext_along = hl * np.abs(np.cos(rel)) + hw * np.abs(np.sin(rel))
        ext_across = hl * np.abs(np.sin(rel)) + hw * np.abs(np.cos(rel))
        ahead = (along > 0) & (np.abs(across) < 0.5 * st["width"][i] + ext_across + 1.2)
        i = i[ahead]
        g = along[ahead] - 0.5 * st["length"][i] - ext_along[ahead]
        np.minimum.at(gap, i, np.maximum(g, 0.0))
        gap[st["crashed"]] = np.inf
        return gap

    def _distraction(self, on_link: np.ndarray, gap: np.ndarray, lead_v: np.ndarray,
                     lead: np.ndarray) -> np.ndarray:
        """Armed reckless drivers closing fast on a slower leader stop paying attention; they
        wake up late and brake hard to stop just short of it (a near miss), or cannot.

        Returns the deceleration that stops each driver at its chosen gap behind the leader,
        behind the point where a braking leader will stop (panic braking).
        """
        st, m = self.st, self.model
        v = st["v"]
        dv = v - lead_v
        start = st["distract_armed"] & on_link & (gap < 80.0) & (gap > 15.0) & (dv > 4.0)
        idx = np.flatnonzero(start)
        if idx.shape[0]:
            st["distract_armed"][idx] = False
            st["distracted"][idx] = True
            st["wake_decel"][idx] = self.rng.uniform(*m.wake_decel_mps2, idx.shape[0])
            st["stop_gap"][idx] = self.rng.uniform(*m.stop_gap_m, idx.shape[0])
        closing = np.maximum(dv, 0.0)
        lead_acc = np.where(lead >= 0, st["acc"][np.maximum(lead, 0)], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            need = closing * closing / (2.0 * np.maximum(gap - st["stop_gap"], 0.05))
            lead_stops_in = np.where(lead_acc < -0.5, lead_v * lead_v / (-2.0 * lead_acc), np.inf)
            need_stop = v * v / (2.0 * np.maximum(gap + lead_stops_in - st["stop_gap"], 0.05))
        need = np.maximum(need, need_stop)
        lost = ~np.isfinite(gap) | (dv <= 0.5)
        wake = st["distracted"] & ~lost & (need >= st["wake_decel"])
        st["distracted"] &= ~(lost | wake)
        st["panic"] |= wake
        st["panic"] &= np.isfinite(gap) & (dv > 0.1)
        return need

    def _stop_lines(self, signal: np.ndarray, on_link: np.ndarray, own_move: np.ndarray,
                    occ: Occupancy) -> np.ndarray:
        """Deceleration needed to stop before the junction, inf where the driver may go.

        Rules (signal not green, exit lane full) are obeyed unless the driver can no longer
        stop comfortably: then they commit and go (sticky per link, the yellow-light
        dilemma). Conflicting traffic (cross traffic or a wreck inside the junction, an
        oncoming left turner inside it, oncoming traffic too close for a left turn) makes
        them brake as hard as needed, committed or not; they go only if they cannot stop.
        """
        st, w, m = self.st, self.world, self.model
        seg, s, v, length = st["seg"], st["s"], st["v"], st["length"]
        app = w.seg_approach[seg]
        idx = np.flatnonzero(on_link & (app >= 0) & ~st["crashed"])
        out = np.full(self.n, np.inf)
        if idx.shape[0] == 0:
            return out
        app_i, seg_i = app[idx], seg[idx]
        junction = w.seg_junction[seg_i]
        group = w.approach_group[app_i]
        sig = signal[app_i]
        cross_busy = occ.zone_count[junction, 1 - group] > 0
        wreck = occ.zone_wrecks[junction] > 0
        move = own_move[idx]
        exit_seg = w.seg_next[move]
        room = occ.rear_s[exit_seg] - 0.5 * occ.rear_len[exit_seg]
        need = (occ.moving_to[exit_seg] + 1) * (length[idx] + 2.5)
        no_room = (room < need) & (occ.rear_v[exit_seg] < 3.0)  # moving traffic makes room
        left = w.seg_turn[move] == LEFT
        oncoming = w.approach_oncoming[app_i]
        threat = occ.threat_s[oncoming] < m.yield_gap_s
        turning_across = ~left & (occ.left_inside[oncoming] > 0)
        runner = st["run_red"][idx] & self.behaviours_on
        careless = st["no_yield"][idx] & self.behaviours_on
        d_line = w.seg_length[seg_i] - s[idx] - 0.5 * length[idx] - m.stop_margin_m
        vi = v[idx]
        # a left turner waiting at the line may still go on yellow once oncoming traffic has
        # stopped; cross traffic waits for it (it is inside the junction: cross_busy)
        sneak = left & (sig == YELLOW) & (d_line < 3.0) & (vi < 3.0)
        committed = st["committed"][idx] & (vi > 1.0)  # stopped anyway: the rules apply again
        rule = (((sig != GREEN) & ~runner & ~sneak) | no_room) & ~committed
        conflict = ((cross_busy | wreck) & ~runner) \
            | ((turning_across | (left & threat)) & ~careless)
        b_req = vi * vi / (2.0 * np.maximum(d_line, 0.01))
        commit = rule & (b_req > m.commit_decel_mps2) & (vi > 3.0)
        st["committed"][idx] = committed | commit
        cannot_stop = (b_req > m.max_decel_mps2) & (vi > 3.0)
        stop = (rule & ~commit) | (conflict & ~cannot_stop)
        a_free = st["a_max"][idx]
        a_stop = np.where(b_req >= m.stop_brake_start_mps2, -b_req, a_free)
        a_stop = np.where(d_line <= 0.05, -vi / self.dt, a_stop)
        out[idx] = np.where(stop, a_stop, np.inf)
        return out

    def _start_drifts(self, t: float, on_link: np.ndarray) -> None:
        """Reckless drivers drifting out of lane: from the innermost lane over the centre
        line towards oncoming traffic, from the others towards the kerb, never further than
        ``drift_max_m``: near misses, not collisions (a slow sideways contact is not
        something anyone could predict from positions)."""
        st, m, rng = self.st, self.model, self.rng
        cand = np.flatnonzero(st["reckless"] & on_link & (st["v"] > 5.0) & (st["lc_p"] >= 1.0)
                              & (st["drift"] == 0.0) & ~st["crashed"])
        if cand.shape[0] == 0:
            return
        go = cand[rng.uniform(0.0, 1.0, cand.shape[0]) < m.drift_rate_hz * self.dt]
        if go.shape[0] == 0:
            return
        k = go.shape[0]
        side = np.where(self.world.seg_lane[st["seg"][go]] == 0, 1.0, -1.0)  # + is left
        st["drift_v"][go] = side * rng.uniform(*m.drift_speed_mps, k)
        st["drift_until"][go] = t + rng.uniform(*m.drift_duration_s, k)
        st["drift"][go] = 1e-6 * side

    def _lane_changes(self, t: float, on_link: np.ndarray, occ: Occupancy, gap: np.ndarray,
                      lead_v: np.ndarray) -> None:
        """Mandatory (reach the turn lane) and discretionary (pass a slow leader) changes,
        accepted when neither the changer nor its new follower has to brake hard."""
        st, w, m, rng = self.st, self.world, self.model, self.rng
        seg, s, v = st["seg"], st["s"], st["v"]
        lane = w.seg_lane[seg]
        d_end = w.seg_length[seg] - s
        able = (on_link & (st["lc_p"] >= 1.0) & (st["drift"] == 0.0) & ~st["crashed"]
                & (s > 30.0) & (d_end > 15.0 + 3.0 * v) & (gap > 6.0 + v))
        turn = st["turn"]
        want_left = able & (turn == LEFT) & (lane > 0)
        want_right = able & (turn == RIGHT) & (lane < w.lanes - 1)
        mandatory = want_left | want_right
        target = np.where(want_left, w.seg_left[seg], np.where(want_right, w.seg_right[seg],
                                                                w.n_seg))
        u = rng.uniform(0.0, 1.0, self.n)
        slow_leader = (gap < 40.0) & (lead_v < st["v0"] - 3.0)
        eager = st["reckless"] & self.behaviours_on & (u < m.cut_in_rate_hz * self.dt)
        disc = able & ~mandatory & (turn == STRAIGHT) & ((slow_leader & (u < 0.05)) | eager)
        if w.lanes > 1 and disc.any():
            left_first = rng.uniform(0.0, 1.0, self.n) < 0.5
            l_seg, r_seg = w.seg_left[seg], w.seg_right[seg]
            pick = np.where(left_first, np.where(l_seg < w.n_seg, l_seg, r_seg),
                            np.where(r_seg < w.n_seg, r_seg, l_seg))
            target = np.where(disc, pick, target)
        idx = np.flatnonzero((mandatory | disc) & (target < w.n_seg))
        if idx.shape[0] == 0:
            return
        tseg = target[idx]
        cut_in = eager[idx]
        f_gap, f_vi, b_gap, b_vi = occ.neighbours(tseg, s[idx], st["length"][idx])
        vi = v[idx]
        lead_vt = np.where(f_vi >= 0, v[np.maximum(f_vi, 0)], vi)
        a_self = idm_accel(vi, st["v0"][idx], f_gap, vi - lead_vt, st["a_max"][idx],
                           m.comfort_decel_mps2, st["headway"][idx], m.min_gap_m)
        fb = np.maximum(b_vi, 0)
        vb = v[fb]
        a_back = idm_accel(vb, st["v0"][fb], b_gap, vb - vi, st["a_max"][fb],
                           m.comfort_decel_mps2, st["headway"][fb], m.min_gap_m)
        a_back = np.where(b_vi >= 0, a_back, 0.0)
        safe = m.lane_change_safe_decel_mps2
        ok = np.where(cut_in,
                      (a_back >= -m.cut_in_decel_mps2) & (f_gap > 3.0) & (b_gap > 1.5),
                      (a_self >= -safe) & (a_back >= -safe) & (f_gap > 4.0) & (b_gap > 4.0))
        # a discretionary change must pay: the new lane lets the driver go faster
        a_now = idm_accel(vi, st["v0"][idx], gap[idx], vi - lead_v[idx], st["a_max"][idx],
                          m.comfort_decel_mps2, st["headway"][idx], m.min_gap_m)
        ok &= mandatory[idx] | cut_in | (a_self > a_now + 0.3)
        idx, tseg, cut_in = idx[ok], tseg[ok], cut_in[ok]
        if idx.shape[0] == 0:
            return
        # two changers heading for the same stretch of the same lane: neither goes
        order = np.lexsort((s[idx], tseg))
        ts_, ss_ = tseg[order], s[idx][order]
        close = (ts_[1:] == ts_[:-1]) & (ss_[1:] - ss_[:-1] < 25.0)
        clash = np.zeros(order.shape[0], dtype=bool)
        clash[1:] |= close
        clash[:-1] |= close
        keep = np.zeros(idx.shape[0], dtype=bool)
        keep[order[~clash]] = True
        idx, tseg, cut_in = idx[keep], tseg[keep], cut_in[keep]
        if idx.shape[0] == 0:
            return
        moved_right = w.seg_lane[tseg] > w.seg_lane[seg[idx]]
        st["seg"][idx] = tseg
        st["lc_sign"][idx] = np.where(moved_right, 1.0, -1.0)  # lateral offset starts in old lane
        st["lc_p"][idx] = 0.0
        st["lc_len"][idx] = np.maximum(v[idx] * st["lc_dur"][idx],
                                       m.lane_change_min_m * st["lc_dur"][idx] / m.lane_change_s)
        st["lat_lc"][idx] = st["lc_sign"][idx] * w.config.lane_width_m
        st["lat_prev"][idx] += st["lat_lc"][idx]  # same place, measured from the new lane
        check = idx[cut_in]
        if check.shape[0]:
            k = check.shape[0]
            brake = rng.uniform(0.0, 1.0, k) < m.p_brake_check
            b_idx = check[brake]
            st["brake_until"][b_idx] = t + 1.0 + rng.uniform(0.0, 1.0, b_idx.shape[0])
            st["brake_decel"][b_idx] = rng.uniform(*m.brake_check_mps2, b_idx.shape[0])

    def _integrate(self, t: float, acc: np.ndarray) -> None:
        st, w, dt = self.st, self.world, self.dt
        v = st["v"]
        v_new = v + acc * dt
        stops = v_new < 0.0
        ds = np.where(stops, v * v / (2.0 * np.maximum(-acc, 1e-9)), v * dt + 0.5 * acc * dt * dt)
        st["v"] = np.maximum(v_new, 0.0)
        st["acc"] = np.where(stops, 0.0, acc)
        ds = np.maximum(ds, 0.0)
        st["s"] = st["s"] + ds
        # lateral: lane-change profile (smoothstep over a distance, as steering allows) and drift
        frozen = st["crashed"]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(frozen | (st["lc_p"] >= 1.0), st["lc_p"],
                         np.minimum(st["lc_p"] + ds / st["lc_len"], 1.0))
        st["lc_p"] = p
        st["lat_lc"] = st["lc_sign"] * w.config.lane_width_m * (1.0 - p * p * (3.0 - 2.0 * p))
        drift = st["drift"]
        drifting = (drift != 0.0) & (t < st["drift_until"]) & ~st["crashed"]
        back = np.sign(drift) * np.minimum(np.abs(drift), 0.8 * dt)
        drift = np.where(drifting, drift + st["drift_v"] * dt,
                         np.where(frozen, drift, drift - back))
        st["drift"] = np.clip(drift, -self.model.drift_max_m, self.model.drift_max_m)
        self._advance_segments()

    def _advance_segments(self) -> None:
        st, w = self.st, self.world
        gone = np.zeros(self.n, dtype=bool)
        for _ in range(4):
            seg, s = st["seg"], st["s"]
            over = (s >= w.seg_length[seg]) & ~gone
            if not over.any():
                break
            idx = np.flatnonzero(over)
            sg = seg[idx]
            link = w.seg_is_link[sg]
            leaving = link & (w.seg_approach[sg] < 0)
            gone[idx[leaving]] = True
            into_move = idx[link & ~leaving]
            if into_move.shape[0]:
                ms = seg[into_move]
                fits = self._lane_fits(w.seg_lane[seg])[into_move]
                move = w.link_moves[ms, np.where(fits, st["turn"][into_move], STRAIGHT)]
                st["s"][into_move] -= w.seg_length[ms]
                st["prev_seg"][into_move] = ms
                st["seg"][into_move] = move
            into_link = idx[~link]
            if into_link.shape[0]:
                st["s"][into_link] -= w.seg_length[seg[into_link]]
                st["prev_seg"][into_link] = seg[into_link]
                st["seg"][into_link] = w.seg_next[seg[into_link]]
                self._new_link(into_link)
        self._compact(~gone)

    def _spawn(self) -> None:
        """Replace vehicles that left: enter at the map edge where the lane has room."""
        deficit = self.config.vehicles - self.n
        if deficit <= 0:
            return
        st, w = self.st, self.world
        entries = w.entry_segs
        rear = np.full(w.n_seg + 1, np.inf)
        rear_v = np.zeros(w.n_seg + 1)
        on_entry = np.flatnonzero(np.isin(st["seg"], entries))
        if on_entry.shape[0]:
            tail = st["s"][on_entry] - 0.5 * st["length"][on_entry]
            order = np.lexsort((tail, st["seg"][on_entry]))
            sg = st["seg"][on_entry][order]
            first = np.r_[True, sg[1:] != sg[:-1]]
            rear[sg[first]] = tail[order][first]
            rear_v[sg[first]] = st["v"][on_entry][order][first]
        room = rear[entries] - 0.5 * DEFAULT_LENGTH_M
        cand = self.rng.permutation(entries[room >= 15.0])[:deficit]
        if cand.shape[0] == 0:
            return
        g = rear[cand] - 0.5 * DEFAULT_LENGTH_M
        v = np.minimum(0.7 * self.config.speed_limit_mps,
                       rear_v[cand] + np.sqrt(2.0 * 1.5 * np.maximum(g - 8.0, 0.0)))
        self._add(np.sort(cand), np.zeros(cand.shape[0]), v[np.argsort(cand)])

    def _poses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Footprint centres and headings. ``s`` is the centre's distance along the lane, but
        the body is placed as a car steers: its rear axle on the path and the body along the
        path's tangent there, so a turning car's tail does not swing out into the next lane.
        Just after a segment change the rear axle is still on the previous segment."""
        st, w = self.st, self.world
        ahead = np.maximum(0.5 * st["length"] - _REAR_OVERHANG_M, 0.0)  # axle to centre
        s_axle = st["s"] - ahead
        behind = (s_axle < 0.0) & (st["prev_seg"] != st["seg"])  # new vehicles: extrapolate
        seg = np.where(behind, st["prev_seg"], st["seg"])
        s_axle = np.where(behind, s_axle + w.seg_length[st["prev_seg"]], s_axle)
        x, y, h = w.pose(seg, s_axle)
        x = x + ahead * np.cos(h)
        y = y + ahead * np.sin(h)
        lat = st["lat_lc"] + st["drift"]
        x = x - lat * np.sin(h)
        y = y + lat * np.cos(h)
        lat_rate = (lat - st["lat_prev"]) / self.dt
        st["lat_prev"] = lat
        heading = h + np.arctan2(lat_rate, np.maximum(st["v"], 1.0))
        heading = np.mod(heading + math.pi, 2 * math.pi) - math.pi
        st["x"], st["y"], st["hd"] = x, y, heading
        return x, y, heading

    def _crash(self, pairs: ClosePairs, t: float) -> None:
        if not pairs.overlap.any():
            return
        st = self.st
        hit = np.unique(np.concatenate([pairs.a[pairs.overlap], pairs.b[pairs.overlap]]))
        fresh = hit[~st["crashed"][hit]]
        st["crashed"][hit] = True
        st["crash_until"][fresh] = t + self.config.crash_hold_s
        st["drift_v"][hit] = 0.0
        st["distracted"][hit] = False
        st["panic"][hit] = False


