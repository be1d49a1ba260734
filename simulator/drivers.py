"""How drivers behave: the car-following model and the constants of ordinary and reckless
driving. Pure functions over arrays; the engine decides who does what when."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DriverModel:
    """Behaviour constants; ordinary drivers first, then what reckless drivers do."""

    accel_mps2: float = 1.5
    comfort_decel_mps2: float = 2.0
    max_decel_mps2: float = 9.0
    headway_s: float = 1.2
    min_gap_m: float = 2.0
    turn_lateral_mps2: float = 2.5
    stop_margin_m: float = 3.0  # front bumper to the junction zone when stopped
    stop_brake_start_mps2: float = 1.5  # start braking for a stop line at this deceleration
    commit_decel_mps2: float = 3.0  # cannot stop comfortably: go through (yellow dilemma)
    yield_gap_s: float = 5.5  # left turners need oncoming traffic this far away
    lane_change_s: float = 3.0
    lane_change_min_m: float = 15.0  # lateral motion is spread over at least this distance
    lane_change_safe_decel_mps2: float = 2.0
    turn_probs: tuple[float, float, float] = (0.6, 0.2, 0.2)  # straight, left, right
    # reckless drivers
    reckless_speed_factor: float = 1.2
    reckless_headway_s: float = 0.7
    reckless_accel_mps2: float = 2.5
    p_run_red: float = 0.8  # per signalised approach
    p_no_yield: float = 0.25  # per left turn (turning paths are hard to predict: keep rare)
    p_distracted: float = 0.3  # per approach: ignores a slower leader until late
    # they wake up when stopping short of the leader (at a gap drawn from stop_gap_m) would
    # take wake_decel_mps2; above max_decel_mps2 that is too late: a collision
    wake_decel_mps2: tuple[float, float] = (6.0, 12.0)
    stop_gap_m: tuple[float, float] = (0.2, 1.5)
    cut_in_rate_hz: float = 0.15
    cut_in_decel_mps2: float = 7.0  # what they accept to impose on the new follower
    p_brake_check: float = 0.6
    brake_check_mps2: tuple[float, float] = (5.0, 7.0)
    drift_rate_hz: float = 0.03
    drift_speed_mps: tuple[float, float] = (0.3, 0.6)
    drift_duration_s: tuple[float, float] = (2.5, 5.0)
    # how far out of lane: close enough to neighbours for near misses, not for contact
    drift_max_m: float = 1.2


def idm_accel(v: np.ndarray, v0: np.ndarray, gap: np.ndarray, dv: np.ndarray,
              a_max: np.ndarray, b: float, headway: np.ndarray, s0: float) -> np.ndarray:
    """Intelligent Driver Model; ``gap`` bumper to bumper (inf: free road), ``dv`` = v - v_lead.
    The free-road braking above the desired speed is limited to a comfortable deceleration."""
    s_star = s0 + np.maximum(0.0, v * headway + v * dv / (2.0 * np.sqrt(a_max * b)))
    free = np.maximum(1.0 - (v / np.maximum(v0, 0.1)) ** 4, -b / a_max)
    with np.errstate(invalid="ignore"):
        inter = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 0.1)) ** 2, 0.0)
    return a_max * (free - inter)


def arrival_time(d: np.ndarray, v: np.ndarray, accel: float, v_max: float) -> np.ndarray:
    """Seconds to cover ``d`` from speed ``v``, accelerating at ``accel`` up to ``v_max``."""
    v = np.minimum(v, v_max)
    d_acc = (v_max * v_max - v * v) / (2.0 * accel)
    t_acc = (-v + np.sqrt(v * v + 2.0 * accel * np.minimum(d, d_acc))) / accel
    return t_acc + np.maximum(d - d_acc, 0.0) / v_max
