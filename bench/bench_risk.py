"""Collision-search time per assessment at 1k, 10k and 100k vehicles, fixed city density.

The fleet is a Manhattan grid of 100 m blocks with one lane each way on every street (lane
centres 3.5 m apart). Vehicles sit along the lanes with exponential gaps (mean 25 m centre to
centre, at least 6.5 m: 2 m bumper to bumper in a queue) at a speed that fits their gap (0 in
queues, up to 14 m/s); cross streets brake for red lights and followers brake at 2 m/s^2 for
slower leaders. The density is fixed (about 1,400 vehicles per km^2 of city) and the area
grows with n. Fixes are up to 0.2 s old with 0.3 m
GPS and 0.02 rad heading noise; paths are constant velocity over 4 s at 0.2 s. Prints the
median wall and CPU time of :func:`stream.risk.assess` per call, candidate pairs, conflicts,
and the per-vehicle cost at 100k relative to 1k (1.0 = linear). On a shared machine the CPU
time is the steadier figure.

Usage: python bench/bench_risk.py [--sizes 1000,10000,100000] [--repeat 5] [--seed 0]
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _kit import parser

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M
from trajstream.model.predictors import PathSpec
from trajstream.stream import risk
from trajstream.stream.risk import Fleet, RiskConfig, assess

BLOCK_M = 100.0
LANE_OFFSET_M = 1.75
MEAN_GAP_M = 25.0
T = 1_764_081_000.0


def city_fleet(n: int, spec: PathSpec, seed: int = 0) -> Fleet:
    """n vehicles on a square street grid sized for a fixed density (module docstring)."""
    rng = np.random.default_rng(seed)
    blocks = max(1, int(np.ceil(np.sqrt(1.15 * n * MEAN_GAP_M / (4 * BLOCK_M)))))
    side = blocks * BLOCK_M
    n_lanes = 4 * blocks  # per street index: along x (+, -), along y (+, -)
    street = np.repeat(np.arange(blocks), 4)
    axis = np.tile([0, 0, 1, 1], blocks)
    direction = np.tile([1, -1, 1, -1], blocks)
    per_lane = int(side / 6.5) + 2
    gaps = np.maximum(rng.exponential(MEAN_GAP_M, (n_lanes, per_lane)), 6.5)
    along = np.cumsum(gaps, axis=1) - rng.uniform(0, MEAN_GAP_M, (n_lanes, 1))
    lane = np.repeat(np.arange(n_lanes), per_lane)
    along = along.ravel()
    # cross traffic (along y) is held at red lights: nobody inside a junction box
    to_junction = np.mod(along * direction[lane], BLOCK_M)  # distance past the last junction
    ok = (along >= 0) & (along < side)
    ok &= (axis[lane] == 0) | ((to_junction > 6.0) & (to_junction < BLOCK_M - 6.0))
    keep = np.flatnonzero(ok)
    keep = np.sort(rng.choice(keep, size=min(n, keep.shape[0]), replace=False))
    lane, along = lane[keep], along[keep]
    n = lane.shape[0]

    # speeds: free speed, limited by the gap to the leader, by a red light ahead, and by what
    # a 2 m/s^2 brake can absorb behind a slower leader (ordinary, conflict-free traffic)
    order = np.lexsort((along * direction[lane], lane))
    lane, along = lane[order], along[order]
    dirn = direction[lane]
    same_lane_next = np.concatenate([lane[1:] == lane[:-1], [False]])
    leader = np.where(same_lane_next, np.arange(n) + 1, -1)
    gap = np.where(leader >= 0, np.abs(along[np.maximum(leader, 0)] - along), np.inf)
    v = np.minimum(rng.uniform(11.0, 14.0, n), np.clip((gap - 6.5) / 1.2, 0.0, None))
    to_stop = BLOCK_M - np.mod(along * dirn, BLOCK_M) - 6.0
    v_stop = np.where(axis[lane] == 1, np.sqrt(4.0 * np.clip(to_stop - 1, 0, None)), np.inf)
    braking = v_stop < v
    v = np.minimum(v, v_stop)
    for _ in range(4):
        lead_v = np.where(leader >= 0, v[np.maximum(leader, 0)], np.inf)
        v_follow = lead_v + np.sqrt(4.0 * np.clip(gap - 6.5, 0.0, None))
        braking |= v_follow < v
        v = np.minimum(v, v_follow)
    v = np.where(v < 1.0, 0.0, v)
    accel = np.where(braking & (v > 0), -2.0, 0.0) + rng.normal(0, 0.3, n)

    off = street[lane] * BLOCK_M - dirn * LANE_OFFSET_M
    x = np.where(axis[lane] == 0, along, off)
    y = np.where(axis[lane] == 0, off, along)
    heading = np.where(axis[lane] == 0, 0.0, np.pi / 2) + np.where(dirn > 0, 0.0, np.pi)
    heading = heading + rng.normal(0, 0.02, n)
    x = x + rng.normal(0, 0.3, n)
    y = y + rng.normal(0, 0.3, n)
    ts = T - rng.uniform(0, 0.2, n)
    off_s = spec.offsets_s[None, :]
    paths = np.stack([x[:, None] + (v * np.cos(heading))[:, None] * off_s,
                      y[:, None] + (v * np.sin(heading))[:, None] * off_s], -1)
    return Fleet(ts=ts, x=x, y=y, speed=v, heading=heading, yaw_rate=np.zeros(n),
                 accel=accel, length=np.full(n, DEFAULT_LENGTH_M),
                 width=np.full(n, DEFAULT_WIDTH_M), paths=paths)


def candidate_count(fleet: Fleet, spec: PathSpec, cfg: RiskConfig) -> tuple[int, float]:
    """Candidate pairs the grid produces (before dropping still-still pairs), and its cell."""
    lo, hi = risk._swept_boxes(T, fleet, spec, cfg)
    r = 0.5 * np.hypot(fleet.length, fleet.width) + 0.5 * cfg.margin_m
    lo, hi = lo - r[:, None], hi + r[:, None]
    cell = risk._auto_cell(lo, hi) if cfg.cell_m is None else cfg.cell_m
    a, _ = risk.candidate_pairs(lo, hi, cell)
    return int(a.shape[0]), cell


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", default="1000,10000,100000", help="fleet sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed assessments per size; the median is printed")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic city fleet")
    args = ap.parse_args()
    spec, cfg = PathSpec(), RiskConfig()
    sizes = [int(s) for s in args.sizes.split(",")]
    per_vehicle: dict[int, float] = {}
    per_vehicle_cpu: dict[int, float] = {}
    print(f"{'vehicles':>9} {'area km2':>9} {'cell m':>7} {'candidates':>11} {'conflicts':>9} "
          f"{'ms/call':>9} {'cpu ms':>8} {'us/vehicle':>10}")
    for n in sizes:
        fleet = city_fleet(n, spec, args.seed)
        assess(T, fleet, spec, cfg)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            c = assess(T, fleet, spec, cfg)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        med, med_cpu = statistics.median(times), statistics.median(cpu)
        cand, cell = candidate_count(fleet, spec, cfg)
        area = (np.ptp(fleet.x) * np.ptp(fleet.y)) / 1e6
        per_vehicle[n] = med / n
        per_vehicle_cpu[n] = med_cpu / n
        print(f"{n:>9} {area:>9.2f} {cell:>7.1f} {cand:>11} {len(c):>9} {med * 1e3:>9.2f} "
              f"{med_cpu * 1e3:>8.2f} {med / n * 1e6:>10.2f}")
    lo_n, hi_n = min(sizes), max(sizes)
    if lo_n != hi_n:
        for label, pv in (("wall", per_vehicle), ("cpu", per_vehicle_cpu)):
            print(f"per-vehicle cost {hi_n} vs {lo_n} ({label}): {pv[hi_n] / pv[lo_n]:.2f}x "
                  f"(1.0 = linear; {hi_n // lo_n}x vehicles -> "
                  f"{pv[hi_n] * hi_n / (pv[lo_n] * lo_n):.0f}x time)")


if __name__ == "__main__":
    main()
