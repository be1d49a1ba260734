"""Hand-built traffic scenarios for the risk tests: true motion, noisy fixes, the real pipeline.

Each vehicle follows a known trajectory; fixes at 10 Hz (each vehicle at its own phase, so
event times differ per vehicle) get GPS noise on x/y and noise on the reported heading and
speed, go through the real KinematicsTracker and a baseline predictor, and are assessed at
event-time ticks every 0.2 s by the engine's own conflict stage (stream/conflicts.py: risk
and alert episodes over one tick's predicted kinematics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trajstream.model.kinematics import Kinematics, KinematicsTracker
from trajstream.model.predictors import ConstantTurnRate, ConstantVelocity, PathSpec
from trajstream.stream.conflicts import ConflictStage, PredictedTick
from trajstream.stream.episodes import AlertDecision, EpisodeConfig
from trajstream.stream.risk import Fleet, RiskConfig

T0 = 1_764_081_000.0
SPEC = PathSpec()

# A trajectory maps time since T0 (array) to true x, y, speed, heading (arrays).
Trajectory = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def straight(x0: float, y0: float, heading: float, speed: float) -> Trajectory:
    def f(t: np.ndarray):
        return (x0 + speed * np.cos(heading) * t, y0 + speed * np.sin(heading) * t,
                np.full_like(t, speed), np.full_like(t, heading))
    return f


def brake_to_stop(x0: float, y0: float, heading: float, speed: float, t_brake: float,
                  decel: float) -> Trajectory:
    """Cruise at ``speed``, then from ``t_brake`` decelerate at ``decel`` to a stop."""
    def f(t: np.ndarray):
        tb = np.clip(t - t_brake, 0.0, speed / decel)
        s = speed * np.minimum(t, t_brake) + speed * tb - 0.5 * decel * tb * tb
        v = np.where(t < t_brake, speed, np.maximum(speed - decel * (t - t_brake), 0.0))
        return (x0 + s * np.cos(heading), y0 + s * np.sin(heading), v, np.full_like(t, heading))
    return f


def drift(x0: float, y0: float, heading: float, speed: float, t_start: float,
          lateral_mps: float) -> Trajectory:
    """Straight, then from ``t_start`` drifting sideways (to the left when positive) at
    ``lateral_mps`` while keeping ``speed`` along the lane: a driver leaving the lane."""
    ux, uy = math.cos(heading), math.sin(heading)

    def f(t: np.ndarray):
        lat = lateral_mps * np.maximum(t - t_start, 0.0)
        x = x0 + speed * ux * t - lat * uy
        y = y0 + speed * uy * t + lat * ux
        h = heading + np.where(t >= t_start, math.atan2(lateral_mps, speed), 0.0)
        return x, y, np.full_like(t, math.hypot(speed, lateral_mps)), h
    return f


def stop_distance(speed: float, decel: float) -> float:
    return speed * speed / (2.0 * decel)


@dataclass
class Run:
    alerts: list[AlertDecision]
    conflict_ticks: int  # assessments with at least one raw conflict
    ticks: list[float]


def run(
    trajs: list[Trajectory], duration_s: float, *, seed: int = 0, predictor: str = "cv",
    gps_sigma_m: float = 0.3, heading_sigma_rad: float = 0.025, speed_sigma_mps: float = 0.1,
    reported: bool = True, rate_hz: float = 10.0, tick_s: float = 0.2,
    cfg: RiskConfig | None = None, ecfg: EpisodeConfig | None = None, warmup_s: float = 0.2,
) -> Run:
    rng = np.random.default_rng(seed)
    n = len(trajs)
    ids = np.array([f"veh-{i:02d}" for i in range(n)], dtype=object)
    phase = rng.uniform(0.0, 1.0 / rate_hz, n)
    steps = int(duration_s * rate_hz) + 1
    tk = KinematicsTracker(n, gps_sigma_m=max(gps_sigma_m, 0.05))
    slots = np.arange(n)
    kins: list[Kinematics] = []
    fix_t = np.empty((steps, n))
    for k in range(steps):
        tr = k / rate_hz + phase
        truth = [f(tr[i: i + 1]) for i, f in enumerate(trajs)]
        x, y, v, h = (np.array([tt[c][0] for tt in truth]) for c in range(4))
        x = x + rng.normal(0, gps_sigma_m, n)
        y = y + rng.normal(0, gps_sigma_m, n)
        if reported:
            sp = np.abs(v + rng.normal(0, speed_sigma_mps, n))
            hd = h + rng.normal(0, heading_sigma_rad, n)
        else:
            sp = hd = np.full(n, np.nan)
        kins.append(tk.update(slots, T0 + tr, x, y, sp, hd))
        fix_t[k] = tr
    pred = ConstantVelocity(SPEC) if predictor == "cv" else ConstantTurnRate(SPEC)
    stage = ConflictStage(SPEC, pred.name, cfg, ecfg)
    alerts: list[AlertDecision] = []
    ticks: list[float] = []
    conflict_ticks = 0
    tick = int(np.ceil(warmup_s / tick_s))
    while tick * tick_s <= duration_s:
        tt = tick * tick_s
        latest = np.array([np.searchsorted(fix_t[:, i], tt + 1e-9) - 1 for i in range(n)])
        kin = Kinematics(**{
            f: np.array([getattr(kins[latest[i]], f)[i] for i in range(n)])
            for f in Kinematics.__slots__
        })
        paths, _ = pred.step(kin, np.zeros((n, 0)))
        fleet = Fleet.from_kinematics(kin, paths)
        t = T0 + tt
        res = stage.assess(PredictedTick(t, ids, fleet))
        conflict_ticks += len(res.conflicts) > 0
        alerts.extend(res.decisions)
        ticks.append(t)
        tick += 1
    return Run(alerts, conflict_ticks, ticks)
