"""Lag and noise of the kinematic estimator (model/kinematics.py) against the true motion.

The LSTM and the risk rules read speed, heading, yaw rate and acceleration from
``KinematicsTracker``; a vehicle that reports positions only gets all four from its fixes.
Its fitted speed is that of the fit window's centre; the risk rules read ``speed_now``, the
same carried forward to the latest fix with the filtered acceleration (the LSTM keeps the
fitted one it was trained on).
An estimate that lags shows a braking leader or a starting turn late, to the model and to the
warner alike, so the estimator is chosen here, on its own truth, not on the warner's figures.

Truth: the motions of the pre-crash scenario library (simulator/precrash.py: steady lanes,
hard braking, turns, lane changes, drifts), observed as the library observes them (10 Hz, a
random phase, Gaussian GPS noise per axis), each vehicle up to its first contact. Per GPS
noise level and with or without reported speed/heading, for every fix after the first
``WARM_S``:

- RMSE of speed, speed now, heading (moving above 2 m/s), yaw rate and acceleration, over all fixes
  and over the manoeuvring ones (|true acceleration| > 1 m/s^2 or |true yaw rate| > 0.05
  rad/s);
- delay: the shift d (0-2 s) for which the estimate best matches the truth d earlier, over
  the manoeuvring fixes (how late the estimator sees a manoeuvre).

Usage: python bench/bench_kinematics.py [--per-scenario 10] [--gps 0,0.2,0.4] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import math  # noqa: E402

import numpy as np  # noqa: E402
from _kit import parser

from trajstream.model.kinematics import KinematicsTracker  # noqa: E402
from trajstream.simulator import precrash  # noqa: E402

HZ = 10.0
WARM_S = 1.5  # the fit window fills first; errors before are start-up, not lag
MOVING_MPS = 2.0
DELAYS = np.arange(0.0, 2.0001, 0.05)
QUANTITIES = ("speed", "speed_now", "heading", "yaw", "accel")


def _tracks(rng: np.random.Generator, per_scenario: int) -> list[precrash.Motion]:
    """Every vehicle's motion of ``per_scenario`` draws of each scenario, cut at its first
    contact (a wreck stops dead: no estimator follows that, and no warner needs to)."""
    out: list[precrash.Motion] = []
    for _ in range(per_scenario):
        for name in (*precrash.CONFLICTS, *precrash.SAFE):
            plan, contacts = precrash._draw(rng, name)
            first: dict[int, int] = {}
            for i, j, k in contacts:
                first.setdefault(i, k)
                first.setdefault(j, k)
            for v, m in enumerate(plan.motions):
                end = first.get(v, m.x.shape[0])
                out.append(precrash.Motion(m.x[:end], m.y[:end], m.heading[:end],
                                           m.speed[:end]))
    return out


def _truth_rates(m: precrash.Motion) -> tuple[np.ndarray, np.ndarray]:
    yaw = np.gradient(np.unwrap(m.heading), precrash.DT)
    acc = np.gradient(m.speed, precrash.DT)
    return yaw, acc


def run(tracks: list[precrash.Motion], gps: float, reported: bool,
        rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Feed every track's fixes through one tracker (all vehicles as one batch per fix
    index), collect estimate and truth per fix."""
    n = len(tracks)
    phase = rng.uniform(0.0, 1.0 / HZ, n)
    grids = [np.arange(phase[v], (t.x.shape[0] - 1) * precrash.DT, 1.0 / HZ)
             for v, t in enumerate(tracks)]
    kidx = [np.minimum(np.rint(g / precrash.DT).astype(np.int64), t.x.shape[0] - 1)
            for g, t in zip(grids, tracks, strict=True)]
    rates = [_truth_rates(t) for t in tracks]
    tracker = KinematicsTracker(n, gps_sigma_m=max(gps, 0.05), check_reported=True)
    longest = max(g.shape[0] for g in grids)
    est: dict[str, list[np.ndarray]] = {q: [] for q in QUANTITIES}
    meta: list[np.ndarray] = []  # (vehicle, grid index, age in s)
    for r in range(longest):
        slots = np.array([v for v in range(n) if grids[v].shape[0] > r], dtype=np.int64)
        k = np.array([kidx[v][r] for v in slots])
        ts = np.array([grids[v][r] for v in slots])
        x = np.array([tracks[v].x[kk] for v, kk in zip(slots, k, strict=True)])
        y = np.array([tracks[v].y[kk] for v, kk in zip(slots, k, strict=True)])
        x = x + rng.normal(0.0, gps, x.shape)
        y = y + rng.normal(0.0, gps, y.shape)
        if reported:
            sp = np.array([tracks[v].speed[kk] for v, kk in zip(slots, k, strict=True)])
            hd = np.array([tracks[v].heading[kk] for v, kk in zip(slots, k, strict=True)])
            if gps > 0:
                sp = np.maximum(sp + rng.normal(0.0, 0.1, sp.shape), 0.0)
                hd = hd + rng.normal(0.0, 0.02, hd.shape)
        else:
            sp = hd = np.full(slots.shape[0], np.nan)
        kin = tracker.update(slots, ts, x, y, sp, hd)
        est["speed"].append(kin.speed)
        est["speed_now"].append(kin.speed_now)
        est["heading"].append(kin.heading)
        est["yaw"].append(kin.yaw_rate)
        est["accel"].append(kin.accel)
        meta.append(np.stack([slots, k, ts - phase[slots]], axis=1))
    e = {q: np.concatenate(est[q]) for q in QUANTITIES}
    mv = np.concatenate(meta)
    veh, k, age = mv[:, 0].astype(np.int64), mv[:, 1].astype(np.int64), mv[:, 2]
    keep = age >= WARM_S
    return _score(tracks, rates, veh[keep], k[keep], {q: e[q][keep] for q in QUANTITIES})


def _truth_at(tracks: list[precrash.Motion], rates: list[tuple[np.ndarray, np.ndarray]],
              veh: np.ndarray, k: np.ndarray) -> dict[str, np.ndarray]:
    """True speed, heading, yaw rate and acceleration of vehicles ``veh`` at grid ``k``."""
    start = np.concatenate([[0], np.cumsum([t.x.shape[0] for t in tracks])])
    speed = np.concatenate([t.speed for t in tracks])
    flat = {"speed": speed, "speed_now": speed,
            "heading": np.concatenate([t.heading for t in tracks]),
            "yaw": np.concatenate([r[0] for r in rates]),
            "accel": np.concatenate([r[1] for r in rates])}
    return {q: flat[q][start[veh] + k] for q in QUANTITIES}


def _err(q: str, est: np.ndarray, truth: np.ndarray) -> np.ndarray:
    d = est - truth
    return (d + np.pi) % (2 * np.pi) - np.pi if q == "heading" else d


def _score(tracks: list[precrash.Motion], rates: list[tuple[np.ndarray, np.ndarray]],
           veh: np.ndarray, k: np.ndarray, est: dict[str, np.ndarray]) -> dict[str, dict]:
    truth = _truth_at(tracks, rates, veh, k)
    moving = truth["speed"] > MOVING_MPS
    manoeuvre = (np.abs(truth["accel"]) > 1.0) | (np.abs(truth["yaw"]) > 0.05)
    out: dict[str, dict] = {}
    for q in QUANTITIES:
        base = moving if q == "heading" else np.ones_like(moving)
        err = _err(q, est[q], truth[q])
        sel = base & manoeuvre
        best_d, best = 0.0, math.inf
        for d in DELAYS:
            kd = np.maximum(k[sel] - int(round(d / precrash.DT)), 0)
            td = _truth_at(tracks, rates, veh[sel], kd)[q]
            r = float(np.sqrt(np.mean(_err(q, est[q][sel], td) ** 2)))
            if r < best - 1e-9:
                best_d, best = float(d), r
        out[q] = {"rmse": float(np.sqrt(np.mean(err[base] ** 2))),
                  "rmse_manoeuvre": float(np.sqrt(np.mean(err[sel] ** 2))),
                  "delay_s": best_d}
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--per-scenario", type=int, default=10,
                    help="draws of each pre-crash library scenario")
    ap.add_argument("--gps", default="0,0.2,0.4", help="GPS sigma per axis (m), comma list")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the scenario draws, fix phases and GPS noise")
    args = ap.parse_args()
    tracks = _tracks(np.random.default_rng(args.seed), args.per_scenario)
    print(f"{len(tracks)} vehicle tracks from {args.per_scenario} draws of each library "
          f"scenario, 10 Hz; RMSE all fixes / manoeuvring fixes, delay on manoeuvring fixes")
    units = {"speed": "m/s", "speed_now": "m/s", "heading": "deg", "yaw": "deg/s",
             "accel": "m/s^2"}
    scale = {"speed": 1.0, "speed_now": 1.0, "heading": 180 / math.pi, "yaw": 180 / math.pi,
             "accel": 1.0}
    print(f"{'gps':>4} {'reports':>9} | " + " | ".join(
        f"{q + ' (' + units[q] + ')':^22}" for q in QUANTITIES))
    for gps in (float(g) for g in args.gps.split(",")):
        for reported in (False, True):
            res = run(tracks, gps, reported, np.random.default_rng(args.seed + 1))
            cells = [f"{res[q]['rmse'] * scale[q]:5.2f} /{res[q]['rmse_manoeuvre'] * scale[q]:5.2f}"
                     f"  {res[q]['delay_s']:4.2f} s" for q in QUANTITIES]
            print(f"{gps:4.1f} {'speed+hd' if reported else 'positions':>9} | "
                  + " | ".join(f"{c:^22}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
