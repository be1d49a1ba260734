"""Traffic engine invariants: on the road, collision-free without reckless drivers, real
collisions with them, vehicles come and go, determinism."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import orjson
import pytest

from trajstream.simulator import SimConfig, Tick, iter_ticks

CALM = SimConfig(vehicles=300, duration_s=150.0, seed=11, reckless_fraction=0.0, clean=True)
RECKLESS = SimConfig(vehicles=200, duration_s=120.0, seed=5, clean=True)


def _collect(config: SimConfig) -> tuple[list[Tick], list[dict], list[dict]]:
    ticks = list(iter_ticks(config))
    positions = [orjson.loads(v) for t in ticks for _, v in t.messages]
    truth = [e for t in ticks for e in t.truth]
    return ticks, positions, truth


@pytest.fixture(scope="module")
def calm() -> tuple[list[Tick], list[dict], list[dict]]:
    return _collect(CALM)


@pytest.fixture(scope="module")
def reckless() -> tuple[list[Tick], list[dict], list[dict]]:
    return _collect(RECKLESS)


def test_without_reckless_drivers_nothing_happens(calm) -> None:
    _, positions, truth = calm
    assert len(positions) > 300 * 1000
    assert truth == [], truth[:3]


def test_vehicles_stay_on_the_roads(calm) -> None:
    _, positions, _ = calm
    wc = CALM.world_config()
    x = np.array([p["x"] for p in positions])
    y = np.array([p["y"] for p in positions])
    span = (wc.grid_n - 1) * wc.block_m
    half = wc.lanes * wc.lane_width_m
    lo, hi = -wc.stub_m, span + wc.stub_m

    def off_line(c: np.ndarray) -> np.ndarray:
        return np.abs(c - np.round(np.clip(c, 0, span) / wc.block_m) * wc.block_m)

    on_ew = (off_line(y) <= half) & (x >= lo - 1e-6) & (x <= hi + 1e-6)
    on_ns = (off_line(x) <= half) & (y >= lo - 1e-6) & (y <= hi + 1e-6)
    zone = (off_line(x) <= wc.zone_half_m) & (off_line(y) <= wc.zone_half_m)
    assert (on_ew | on_ns | zone).all()
    assert (on_ew | on_ns).mean() > 0.99, "turning through a junction corner is brief"
    # outside junctions, vehicles are (nearly always) on a lane centre line
    lateral = np.where(on_ew, off_line(y), off_line(x))[~zone]
    in_lane = np.abs(np.mod(lateral, wc.lane_width_m) - wc.lane_width_m / 2) < 0.02
    assert in_lane.mean() > 0.9


def test_speeds_and_headings_are_plausible(calm) -> None:
    _, positions, _ = calm
    speed = np.array([p["speed"] for p in positions])
    heading = np.array([p["heading"] for p in positions])
    assert speed.min() >= 0.0 and speed.max() < CALM.speed_limit_mps * 1.25
    assert (np.abs(heading) <= 3.1416).all()  # radians, rounded to 0.1 mrad
    assert 3.0 < speed.mean() < CALM.speed_limit_mps, "traffic should flow, with queues"
    assert (speed < 0.1).mean() > 0.05, "someone should be waiting at a red light"


def test_motion_is_continuous(calm) -> None:
    _, positions, _ = calm
    last: dict[str, dict] = {}
    jumps = 0
    for p in positions:
        q = last.get(p["vehicle_id"])
        if q is not None:
            dt = p["ts"] - q["ts"]
            assert dt == pytest.approx(0.1, abs=1e-6)
            step = np.hypot(p["x"] - q["x"], p["y"] - q["y"])
            jumps += step > CALM.speed_limit_mps * 1.2 * dt + 0.05
        last[p["vehicle_id"]] = p
    assert jumps == 0


def test_vehicle_count_is_kept_and_ids_never_reused(calm) -> None:
    ticks, positions, _ = calm
    counts = np.array([t.vehicles for t in ticks])
    assert (counts <= CALM.vehicles).all() and counts.mean() > 0.95 * CALM.vehicles
    per_tick = Counter(round((p["ts"] - CALM.start_ts) * 10) for p in positions)
    assert [per_tick[k] for k in range(len(ticks))] == counts.tolist()
    spans: dict[str, list[int]] = {}
    for p in positions:
        k = round((p["ts"] - CALM.start_ts) * 10)
        spans.setdefault(p["vehicle_id"], []).append(k)
    for ks in spans.values():  # present in one unbroken run of ticks: never reused
        assert ks == list(range(ks[0], ks[0] + len(ks)))
    left = sum(1 for ks in spans.values() if ks[-1] < len(ticks) - 1)
    entered = sum(1 for ks in spans.values() if ks[0] > 0)
    assert left > 50 and entered > 50, "vehicles enter and leave"


def test_reckless_drivers_cause_collisions_and_near_misses(reckless) -> None:
    _, positions, truth = reckless
    kinds = Counter(e["type"] for e in truth)
    assert kinds["collision"] >= 3, kinds
    assert kinds["near_miss"] >= 1, kinds
    present = {(p["vehicle_id"], round(p["ts"], 3)) for p in positions}
    for e in truth:
        assert e["vehicle_a"] < e["vehicle_b"]
        assert set(e) == {"type", "vehicle_a", "vehicle_b", "ts", "x", "y", "min_distance",
                          "relative_speed"}
        assert (e["vehicle_a"], e["ts"]) in present and (e["vehicle_b"], e["ts"]) in present
        if e["type"] == "collision":
            assert e["min_distance"] == 0.0
        else:
            assert 0.0 < e["min_distance"] <= RECKLESS.near_miss_gap_m


def test_collided_vehicles_stop_then_leave(reckless) -> None:
    _, positions, truth = reckless
    track: dict[str, list[dict]] = {}
    for p in positions:
        track.setdefault(p["vehicle_id"], []).append(p)
    end_ts = RECKLESS.start_ts + RECKLESS.duration_s - 0.1
    collided = sorted((e["ts"], v) for e in truth if e["type"] == "collision"
                      for v in (e["vehicle_a"], e["vehicle_b"]))
    first_hit = {v: ts for ts, v in reversed(collided)}  # vehicle -> its first collision
    assert first_hit
    for vid, ts in first_hit.items():
        after = [p["speed"] for p in track[vid] if p["ts"] > ts + 1e-6]
        assert all(b <= a + 1e-9 for a, b in zip(after, after[1:], strict=False)), "skids"
        assert all(s == 0.0 for s in after[30:]), "stopped within 3 s"
        if ts + RECKLESS.crash_hold_s + 1.0 < end_ts:
            assert len(after) <= RECKLESS.crash_hold_s * 10 + 1, "removed after the hold"


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    cfg = SimConfig(vehicles=80, duration_s=15.0, seed=3, warmup_s=5.0)
    a = [(t.ts, t.messages, t.truth) for t in iter_ticks(cfg)]
    b = [(t.ts, t.messages, t.truth) for t in iter_ticks(cfg)]
    assert a == b
    c = [(t.ts, t.messages, t.truth) for t in iter_ticks(replace(cfg, seed=4))]
    assert a != c


def test_start_ts_and_hz_set_the_event_times() -> None:
    cfg = SimConfig(vehicles=20, duration_s=3.0, hz=4.0, start_ts=1_000_000.0, clean=True,
                    warmup_s=1.0)
    ts = [t.ts for t in iter_ticks(cfg)]
    assert ts == [1_000_000.0 + k * 0.25 for k in range(12)]
