"""Small synthetic tracks in the positions contract, for tests and smoke runs.

Not a traffic simulator (that is ``simulator/``): independent vehicles following a kinematic
unicycle with random speed changes, turns and lane-change-like swerves, observed with GPS noise
at jittered, occasionally dropped sample times. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np


def synthetic_records(
    seed: int = 0,
    vehicles: int = 8,
    duration_s: float = 30.0,
    rate_hz: float = 10.0,
    noise_m: float = 0.3,
    t0: float = 1_764_081_000.0,
    report_motion: bool = True,
) -> list[dict]:
    """Position dicts sorted by ts (the JSONL positions contract, x/y form)."""
    rng = np.random.default_rng(seed)
    fine_dt = 0.02
    n = int(duration_s / fine_dt) + 1
    t = np.arange(n) * fine_dt
    out: list[dict] = []
    for v in range(vehicles):
        x, y = rng.uniform(-500, 500, 2)
        h = rng.uniform(-np.pi, np.pi)
        speed = rng.uniform(0.0, 25.0)
        target_speed, yaw, yaw_until = speed, 0.0, 0.0
        xs, ys, hs, ss = (np.empty(n) for _ in range(4))
        for i in range(n):
            if rng.random() < fine_dt / 4.0:
                target_speed = rng.choice([0.0, rng.uniform(3, 30)], p=[0.15, 0.85])
            if t[i] >= yaw_until and rng.random() < fine_dt / 3.0:
                kind = rng.random()
                dur = rng.uniform(1.0, 4.0)
                yaw = rng.uniform(-0.5, 0.5) if kind < 0.7 else rng.choice([-0.15, 0.15])
                yaw_until = t[i] + dur
            elif t[i] >= yaw_until:
                yaw = 0.0
            accel = np.clip(target_speed - speed, -6.0, 3.0)
            speed = max(0.0, speed + accel * fine_dt)
            h += yaw * fine_dt * min(1.0, speed / 3.0)
            x += speed * np.cos(h) * fine_dt
            y += speed * np.sin(h) * fine_dt
            xs[i], ys[i], hs[i], ss[i] = x, y, h, speed
        period = 1.0 / rate_hz
        ts = np.arange(rng.uniform(0, period), duration_s, period)
        ts = ts + rng.normal(0.0, 0.15 * period, ts.size)
        ts = np.sort(ts[(ts >= 0) & (rng.random(ts.size) > 0.05)])
        ts = ts[np.r_[True, np.diff(ts) > 1e-3]]
        k = np.clip(np.round(ts / fine_dt).astype(int), 0, n - 1)
        for j, i in enumerate(k):
            rec = {
                "vehicle_id": f"veh-{v}",
                "ts": round(float(t0 + ts[j]), 3),
                "x": round(float(xs[i] + rng.normal(0, noise_m)), 3),
                "y": round(float(ys[i] + rng.normal(0, noise_m)), 3),
            }
            if report_motion:
                rec["speed"] = round(float(max(0.0, ss[i] + rng.normal(0, 0.2))), 3)
                rec["heading"] = round(float((hs[i] + rng.normal(0, 0.02) + np.pi)
                                             % (2 * np.pi) - np.pi), 4)
            out.append(rec)
    out.sort(key=lambda r: r["ts"])
    return out
