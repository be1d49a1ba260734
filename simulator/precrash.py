"""A scenario library by the NHTSA pre-crash typology: conflicts and their safe look-alikes.

Each scenario is a few vehicles on planned motions (speed and yaw-rate profiles integrated on a
2 ms grid, or lateral offsets along a straight lane). Contacts are found on the true
footprints (oriented rectangles, separating axes) on that grid, earliest first; the two
vehicles of a contact stop dead there (a wreck), so a third one can still run into them (pile-
up). Every scenario is then placed at a random position and rotation in its own slot of event
time, and observed as fixes at 10 Hz with a per-vehicle phase, GPS noise, and with or without
reported speed and heading.

Conflicts carry the live lead a warner must give, from what is physically knowable: the
scenario parameters are drawn so that the hazard is observable (the leader's braking, the
start of a turn or a lane change) for at least the required lead plus one second before
contact; draws that break that, or a look-alike that touches, are drawn again.

- conflicts (NHTSA kind): ``lead_stopped`` and ``lead_decelerating`` (rear end),
  ``straight_crossing`` (crossing paths), ``left_turn_across_path``, ``cut_in`` (lane change),
  ``opposite_drift`` (opposite direction), ``pile_up`` (rear end, three vehicles);
- safe: ``following_headway`` (1.5 s), ``queue_2m`` (standing and creeping queues),
  ``smooth_stop`` (behind a stopped car), ``side_by_side_turns``, ``oncoming_in_lane``,
  ``crossing_miss_3s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.simulator.truth import axis_separation

__all__ = ["CONFLICTS", "SAFE", "Library", "generate"]

DT = 0.002  # planning grid (s); contact times are exact to this
LANE_M = 3.5
START_TS = 1_767_000_000.0
SLOT_S = 40.0  # event time per scenario: scenarios never meet in time

# NHTSA kind and required live lead (s) of each conflict scenario
CONFLICTS: dict[str, tuple[str, float]] = {
    "lead_stopped": ("rear_end", 2.0),
    "lead_decelerating": ("rear_end", 1.0),
    "straight_crossing": ("crossing_paths", 2.0),
    "left_turn_across_path": ("left_turn_across_path", 1.0),
    "cut_in": ("lane_change", 0.8),
    "opposite_drift": ("opposite_direction", 1.0),
    "pile_up": ("rear_end", 1.0),
}
SAFE: tuple[str, ...] = ("following_headway", "queue_2m", "smooth_stop", "side_by_side_turns",
                         "oncoming_in_lane", "crossing_miss_3s")
_KNOWABLE_MARGIN_S = 1.0  # hazard observable this much longer than the required lead


@dataclass
class Motion:
    """One vehicle's true motion on the planning grid (arrays of the same length)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    length: float = DEFAULT_LENGTH_M
    width: float = DEFAULT_WIDTH_M


@dataclass
class Plan:
    """A scenario before placement: motions, duration, and when each vehicle's hazard becomes
    observable (conflicts; ``onset[i]`` for vehicle i, absent when it is a bystander)."""

    motions: list[Motion]
    onset: dict[int, float] = field(default_factory=dict)


def _grid(duration: float) -> np.ndarray:
    return np.arange(0.0, duration + 1e-9, DT)


def _speed_profile(t: np.ndarray, v0: float,
                   events: list[tuple[float, float, float]]) -> np.ndarray:
    """Speed from ``v0`` with (start time, acceleration, target speed) events in order."""
    v = np.full_like(t, v0)
    cur = v0
    for t_start, acc, target in events:
        after = t >= t_start
        ramp = cur + acc * (t - t_start)
        ramp = np.maximum(ramp, target) if acc < 0 else np.minimum(ramp, target)
        v = np.where(after, ramp, v)
        cur = target
    return np.maximum(v, 0.0)


def _integrate(t: np.ndarray, x0: float, y0: float, h0: float, speed: np.ndarray,
               yaw_rate: np.ndarray | None = None) -> Motion:
    h = h0 + (np.concatenate([[0.0], np.cumsum(yaw_rate[:-1]) * DT]) if yaw_rate is not None
              else np.zeros_like(t))
    ds = np.concatenate([[0.0], speed[:-1] * DT])
    x = x0 + np.cumsum(ds * np.cos(np.concatenate([[h0], h[:-1]])))
    y = y0 + np.cumsum(ds * np.sin(np.concatenate([[h0], h[:-1]])))
    return Motion(x, y, h, speed)


def _lane(t: np.ndarray, s0: float, y0: float, h0: float, speed: np.ndarray,
          lateral: np.ndarray) -> Motion:
    """Along a straight lane in the frame rotated by ``h0``: starting ``s0`` along it, ``y0``
    plus ``lateral`` to its left."""
    s = s0 + np.concatenate([[0.0], np.cumsum(speed[:-1] * DT)])
    side = y0 + lateral
    c, sn = math.cos(h0), math.sin(h0)
    lat_rate = np.gradient(lateral, DT)
    return Motion(s * c - side * sn, s * sn + side * c,
                  h0 + np.arctan2(lat_rate, np.maximum(speed, 0.1)), np.hypot(speed, lat_rate))


def _smoothstep(t: np.ndarray, t0: float, dur: float, amount: float) -> np.ndarray:
    u = np.clip((t - t0) / dur, 0.0, 1.0)
    return amount * u * u * (3 - 2 * u)


# ---- conflicts ------------------------------------------------------------------------------

def _lead_stopped(rng: np.random.Generator) -> Plan:
    v = rng.uniform(8.0, 25.0)
    t_hit = rng.uniform(6.0, 8.0)
    t = _grid(t_hit + 1.0)
    gap = v * t_hit + DEFAULT_LENGTH_M
    follower = _lane(t, 0.0, 0.0, 0.0, np.full_like(t, v), np.zeros_like(t)
                     + rng.uniform(-0.4, 0.4))
    lead = _lane(t, gap, 0.0, 0.0, np.zeros_like(t), np.zeros_like(t))
    return Plan([lead, follower], {1: 0.0})


def _lead_decelerating(rng: np.random.Generator) -> Plan:
    v = rng.uniform(12.0, 25.0)
    headway = rng.uniform(0.8, 1.5)
    decel = rng.uniform(6.0, 8.0)
    t_brake = rng.uniform(4.0, 5.0)
    t = _grid(t_brake + 9.0)
    lead = _lane(t, v * headway + DEFAULT_LENGTH_M, 0.0, 0.0,
                 _speed_profile(t, v, [(t_brake, -decel, 0.0)]), np.zeros_like(t))
    # the follower does not react (distracted), or late and too softly
    soft = rng.uniform(0.0, 2.5)
    react = t_brake + rng.uniform(1.5, 2.5)
    follower = _lane(t, 0.0, 0.0, 0.0, _speed_profile(t, v, [(react, -max(soft, 1e-3), 0.0)]),
                     np.zeros_like(t))
    return Plan([lead, follower], {1: t_brake + 0.3})


def _straight_crossing(rng: np.random.Generator) -> Plan:
    va, vb = rng.uniform(8.0, 17.0, 2)
    t_meet = rng.uniform(6.0, 8.0)
    angle = rng.uniform(math.radians(70), math.radians(110))
    t = _grid(t_meet + 1.5)
    a = _lane(t, -va * t_meet, 0.0, 0.0, np.full_like(t, va), np.zeros_like(t))
    off = rng.uniform(-1.0, 1.0)  # where along a the paths meet
    bx0 = off - vb * t_meet * math.cos(angle)
    by0 = -vb * t_meet * math.sin(angle)
    b = _integrate(t, bx0, by0, angle, np.full_like(t, vb))
    return Plan([a, b], {0: 0.0, 1: 0.0})


def _left_turn_across_path(rng: np.random.Generator) -> Plan:
    """b comes the other way and turns left across a's lane in front of it."""
    vb = rng.uniform(5.0, 9.0)
    va = rng.uniform(10.0, 16.0)
    t_turn = rng.uniform(5.0, 6.0)
    radius = rng.uniform(8.0, 14.0)
    t = _grid(t_turn + 7.0)
    yaw = np.where(t >= t_turn, vb / radius, 0.0)
    turn_end = t_turn + (math.pi / 2) * radius / vb
    yaw = np.where(t >= turn_end, 0.0, yaw)
    # b's lane lies about one turn radius beyond a's: the quarter turn ends across a's lane
    b = _integrate(t, 0.0, radius * rng.uniform(0.9, 1.1), math.pi, np.full_like(t, vb), yaw)
    # where b crosses a's lane (y = 0): a arrives there just as b does
    k = int(np.argmax(b.y <= 0.0))
    t_cross = t[k]
    target_x = b.x[k] + rng.uniform(-1.5, 1.5)
    a = _lane(t, target_x - va * t_cross - 2.0, 0.0, 0.0, np.full_like(t, va),
              np.zeros_like(t))
    return Plan([a, b], {0: t_turn + 0.3, 1: t_turn + 0.3})


def _cut_in(rng: np.random.Generator) -> Plan:
    """b in the next lane, slightly ahead, changes into a's lane too close in front of it."""
    v = rng.uniform(10.0, 25.0)
    dv = rng.uniform(-4.0, -1.0)  # b is slower than a
    t_lc = rng.uniform(5.0, 6.0)
    lc_dur = rng.uniform(2.5, 3.5)
    t = _grid(t_lc + lc_dur + 2.0)
    ahead = rng.uniform(2.0, 6.0) + DEFAULT_LENGTH_M - dv * (t_lc + 1.2)
    a = _lane(t, 0.0, 0.0, 0.0, np.full_like(t, v), np.zeros_like(t))
    b = _lane(t, ahead, 0.0, 0.0, np.full_like(t, v + dv),
              LANE_M - _smoothstep(t, t_lc, lc_dur, LANE_M))
    return Plan([a, b], {0: t_lc + 0.4})


def _opposite_drift(rng: np.random.Generator) -> Plan:
    """b, oncoming in the next lane, drifts over the centre line into a."""
    va, vb = rng.uniform(10.0, 20.0, 2)
    t_drift = rng.uniform(4.0, 5.0)
    lat_v = rng.uniform(0.6, 1.2)
    t = _grid(t_drift + 8.0)
    lat = LANE_M - np.clip((t - t_drift) * lat_v, 0.0, LANE_M)
    t_meet = t_drift + rng.uniform(2.5, 3.5)
    a = _lane(t, 0.0, 0.0, 0.0, np.full_like(t, va), np.zeros_like(t))
    xm = va * t_meet
    b = _lane(t, -(xm + vb * t_meet), 0.0, math.pi, np.full_like(t, vb), lat)
    return Plan([a, b], {0: t_drift + 0.5, 1: t_drift + 0.5})


def _pile_up(rng: np.random.Generator) -> Plan:
    v = rng.uniform(12.0, 22.0)
    decel = rng.uniform(7.0, 9.0)
    t_brake = rng.uniform(4.0, 5.0)
    t = _grid(t_brake + 9.0)
    h1, h2 = rng.uniform(0.7, 1.1, 2)
    x_lead = (h1 + h2) * v + 2 * DEFAULT_LENGTH_M
    lead = _lane(t, x_lead, 0.0, 0.0, _speed_profile(t, v, [(t_brake, -decel, 0.0)]),
                 np.zeros_like(t))
    r1 = t_brake + rng.uniform(1.5, 2.5)
    mid = _lane(t, (h2 * v) + DEFAULT_LENGTH_M, 0.0, 0.0,
                _speed_profile(t, v, [(r1, -rng.uniform(1.0, 3.0), 0.0)]), np.zeros_like(t))
    r2 = r1 + rng.uniform(1.0, 2.0)
    tail = _lane(t, 0.0, 0.0, 0.0, _speed_profile(t, v, [(r2, -rng.uniform(1.0, 3.0), 0.0)]),
                 np.zeros_like(t))
    return Plan([lead, mid, tail], {1: t_brake + 0.3, 2: t_brake + 0.3})


# ---- safe look-alikes ----------------------------------------------------------------------

def _following_headway(rng: np.random.Generator) -> Plan:
    v = rng.uniform(8.0, 30.0)
    t = _grid(12.0)
    gap = 1.5 * v + DEFAULT_LENGTH_M
    dv = rng.uniform(-0.5, 0.5)
    return Plan([_lane(t, gap, 0.0, 0.0, np.full_like(t, v + dv), np.zeros_like(t)),
                 _lane(t, 0.0, 0.0, 0.0, np.full_like(t, v), np.zeros_like(t))])


def _queue_2m(rng: np.random.Generator) -> Plan:
    n = int(rng.integers(3, 6))
    creep = rng.uniform(0.0, 2.0) if rng.random() < 0.5 else 0.0
    t = _grid(12.0)
    pitch = DEFAULT_LENGTH_M + 2.0
    return Plan([_lane(t, -i * pitch, 0.0, 0.0, np.full_like(t, creep), np.zeros_like(t))
                 for i in range(n)])


def _smooth_stop(rng: np.random.Generator) -> Plan:
    v = rng.uniform(8.0, 20.0)
    decel = rng.uniform(1.5, 3.0)
    stop_gap = rng.uniform(2.0, 4.0)
    t_brake = rng.uniform(4.0, 6.0)
    t = _grid(t_brake + v / decel + 3.0)
    lead_x = v * t_brake + v * v / (2 * decel) + stop_gap + DEFAULT_LENGTH_M
    return Plan([_lane(t, lead_x, 0.0, 0.0, np.zeros_like(t), np.zeros_like(t)),
                 _lane(t, 0.0, 0.0, 0.0, _speed_profile(t, v, [(t_brake, -decel, 0.0)]),
                       np.zeros_like(t))])


def _side_by_side_turns(rng: np.random.Generator) -> Plan:
    v = rng.uniform(5.0, 9.0)
    r_in = rng.uniform(10.0, 15.0)
    t_turn = rng.uniform(4.0, 5.0)
    t = _grid(t_turn + 7.0)
    out: list[Motion] = []
    for r in (r_in, r_in + LANE_M):
        w = v * (r / r_in) / r  # both keep abreast: the outer one drives faster
        end = t_turn + (math.pi / 2) / w
        yaw = np.where((t >= t_turn) & (t < end), w, 0.0)
        out.append(_integrate(t, -v * t_turn * (r / r_in), -(r - r_in), 0.0,
                              np.full_like(t, v * r / r_in), yaw))
    return Plan(out)


def _oncoming_in_lane(rng: np.random.Generator) -> Plan:
    va, vb = rng.uniform(8.0, 25.0, 2)
    t_meet = rng.uniform(5.0, 7.0)
    t = _grid(t_meet + 4.0)
    sep = LANE_M + rng.uniform(-0.3, 0.3)
    return Plan([_lane(t, 0.0, 0.0, 0.0, np.full_like(t, va), np.zeros_like(t)),
                 _lane(t, -(va + vb) * t_meet, -sep, math.pi, np.full_like(t, vb),
                       np.zeros_like(t))])


def _crossing_miss_3s(rng: np.random.Generator) -> Plan:
    va, vb = rng.uniform(8.0, 17.0, 2)
    t_meet = rng.uniform(6.0, 7.0)
    t = _grid(t_meet + 6.0)
    a = _lane(t, -va * t_meet, 0.0, 0.0, np.full_like(t, va), np.zeros_like(t))
    # b reaches the crossing point 3 s after a's rear has cleared it (or 3 s before a arrives)
    clear = (DEFAULT_LENGTH_M + DEFAULT_WIDTH_M) / 2
    late = rng.random() < 0.5
    t_b = t_meet + clear / va + 3.0 if late else t_meet - clear / vb - 3.0
    b = _integrate(t, 0.0, -vb * t_b, math.pi / 2, np.full_like(t, vb))
    return Plan([a, b])


_BUILDERS: dict[str, Callable[[np.random.Generator], Plan]] = {
    "lead_stopped": _lead_stopped, "lead_decelerating": _lead_decelerating,
    "straight_crossing": _straight_crossing, "left_turn_across_path": _left_turn_across_path,
    "cut_in": _cut_in, "opposite_drift": _opposite_drift, "pile_up": _pile_up,
    "following_headway": _following_headway, "queue_2m": _queue_2m,
    "smooth_stop": _smooth_stop, "side_by_side_turns": _side_by_side_turns,
    "oncoming_in_lane": _oncoming_in_lane, "crossing_miss_3s": _crossing_miss_3s,
}


# ---- contacts ------------------------------------------------------------------------------

def _first_overlap(a: Motion, b: Motion, since: int) -> int | None:
    """First grid index >= ``since`` where the two footprints overlap."""
    n = a.x.shape[0] - since
    if n <= 0:
        return None
    sl = slice(since, None)
    x = np.concatenate([a.x[sl], b.x[sl]])
    y = np.concatenate([a.y[sl], b.y[sl]])
    h = np.concatenate([a.heading[sl], b.heading[sl]])
    ln = np.concatenate([np.full(n, a.length), np.full(n, b.length)])
    wd = np.concatenate([np.full(n, a.width), np.full(n, b.width)])
    idx = np.arange(n)
    sep = axis_separation(x, y, h, ln, wd, idx, idx + n)
    hit = np.flatnonzero(sep <= 0.0)
    return since + int(hit[0]) if hit.shape[0] else None


def resolve_contacts(plan: Plan) -> list[tuple[int, int, int]]:
    """Contacts ``(i, j, grid index)`` earliest first; both vehicles of a contact stop dead
    there, so later vehicles may run into the wreck."""
    mot = plan.motions
    contacts: list[tuple[int, int, int]] = []
    touched: set[tuple[int, int]] = set()
    since = 0
    while True:
        best: tuple[int, int, int] | None = None
        for i in range(len(mot)):
            for j in range(i + 1, len(mot)):
                if (i, j) in touched:
                    continue
                k = _first_overlap(mot[i], mot[j], since)
                if k is not None and (best is None or k < best[2]):
                    best = (i, j, k)
        if best is None:
            return contacts
        i, j, k = best
        contacts.append(best)
        touched.add((i, j))
        for v in (i, j):
            m = mot[v]
            m.x[k:], m.y[k:], m.heading[k:] = m.x[k], m.y[k], m.heading[k]
            m.speed[k:] = 0.0
        since = k


# ---- placement and observation -------------------------------------------------------------

@dataclass
class Library:
    """Positions (dicts in the positions contract, sorted by event time) and truth lines."""

    positions: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)


def generate(seed: int = 0, per_scenario: int = 20, *, names: tuple[str, ...] | None = None,
             hz: float = 10.0, start_ts: float = START_TS) -> Library:
    """``per_scenario`` random instances of every scenario (or of ``names``)."""
    rng = np.random.default_rng(seed)
    lib = Library()
    slot = 0
    order = names or (*CONFLICTS, *SAFE)
    for name in order:
        if name not in _BUILDERS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(_BUILDERS)}")
    for rep in range(per_scenario):
        for name in order:
            sid = f"{name}-{seed}-{rep:03d}"
            plan, contacts = _draw(rng, name)
            _observe(rng, lib, sid, name, plan, contacts, start_ts + slot * SLOT_S, hz)
            slot += 1
    lib.positions.sort(key=lambda d: (d["ts"], d["vehicle_id"]))
    return lib


def _draw(rng: np.random.Generator, name: str) -> tuple[Plan, list[tuple[int, int, int]]]:
    for _ in range(200):
        plan = _BUILDERS[name](rng)
        contacts = resolve_contacts(plan)
        if _acceptable(name, plan, contacts):
            return plan, contacts
    raise RuntimeError(f"scenario {name}: no acceptable draw in 200 tries")


def _acceptable(name: str, plan: Plan, contacts: list[tuple[int, int, int]]) -> bool:
    if name in SAFE:
        return not contacts
    if not contacts:
        return False
    _, lead = CONFLICTS[name]
    for i, j, k in contacts:
        onset = min(plan.onset.get(v, math.inf) for v in (i, j))
        if k * DT - onset < lead + _KNOWABLE_MARGIN_S:
            return False
    return True


def _observe(rng: np.random.Generator, lib: Library, sid: str, name: str, plan: Plan,
             contacts: list[tuple[int, int, int]], t0: float, hz: float) -> None:
    rot = rng.uniform(-math.pi, math.pi)
    ox, oy = rng.uniform(-3000.0, 3000.0, 2)
    c, s = math.cos(rot), math.sin(rot)
    gps = float(rng.choice([0.0, 0.2, 0.4]))
    reported = bool(rng.random() < 0.5)
    ids = [f"{sid}/{i}" for i in range(len(plan.motions))]
    n_grid = plan.motions[0].x.shape[0]
    end_k = n_grid - 1
    last_contact = {v: k for i, j, k in contacts for v in (i, j)}
    for v, m in enumerate(plan.motions):
        phase = rng.uniform(0.0, 1.0 / hz)
        # a wrecked vehicle reports for one more second, then falls silent
        stop_k = min(end_k, last_contact[v] + int(1.0 / DT)) if v in last_contact else end_k
        tk = np.arange(phase, stop_k * DT, 1.0 / hz)
        k = np.minimum(np.rint(tk / DT).astype(np.int64), end_k)
        x = ox + c * m.x[k] - s * m.y[k] + rng.normal(0.0, gps, k.shape[0]) if gps else \
            ox + c * m.x[k] - s * m.y[k]
        y = oy + s * m.x[k] + c * m.y[k] + rng.normal(0.0, gps, k.shape[0]) if gps else \
            oy + s * m.x[k] + c * m.y[k]
        hd = np.angle(np.exp(1j * (m.heading[k] + rot)))
        for r in range(k.shape[0]):
            d: dict = {"vehicle_id": ids[v], "ts": round(t0 + float(tk[r]), 3),
                       "x": round(float(x[r]), 3), "y": round(float(y[r]), 3)}
            if reported:
                d["speed"] = round(float(m.speed[k[r]]) + float(rng.normal(0, 0.1)) * (gps > 0),
                                   2)
                d["speed"] = max(d["speed"], 0.0)
                d["heading"] = round(float(hd[r]) + float(rng.normal(0, 0.02)) * (gps > 0), 4)
            lib.positions.append(d)
    conflict = name in CONFLICTS
    lib.truth.append({"type": "scenario", "scenario": sid, "kind": name, "conflict": conflict,
                      "vehicles": ids, "ts": t0, "end_ts": round(float(t0 + end_k * DT), 3),
                      "gps_sigma_m": gps, "reported": reported})
    for i, j, k in contacts:
        a, b = sorted((ids[i], ids[j]))
        mi, mj = plan.motions[i], plan.motions[j]
        mx, my = float(mi.x[k] + mj.x[k]) / 2, float(mi.y[k] + mj.y[k]) / 2
        lib.truth.append({
            "type": "collision", "vehicle_a": a, "vehicle_b": b, "ts": round(float(t0 + k * DT), 3),
            "x": round(float(ox + c * mx - s * my), 2), "y": round(float(oy + s * mx + c * my), 2),
            "kind": CONFLICTS[name][0], "scenario": sid,
            "required_lead_s": CONFLICTS[name][1],
        })
