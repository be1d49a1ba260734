"""Ground-truth detection on hand-built cases: boxes, gaps, episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajstream.simulator.truth import TruthTracker, box_gap, candidate_pairs, close_pairs, corners

L, W = 4.5, 1.8


def _state(*cars: tuple[float, float, float, float]) -> dict[str, np.ndarray]:
    """cars: (x, y, heading, speed) -> state arrays with default footprints."""
    a = np.array(cars, dtype=float)
    n = a.shape[0]
    return {"x": a[:, 0], "y": a[:, 1], "h": a[:, 2], "v": a[:, 3],
            "length": np.full(n, L), "width": np.full(n, W)}


def _pairs(st: dict[str, np.ndarray], max_gap: float = 1.5):
    return close_pairs(st["x"], st["y"], st["h"], st["length"], st["width"], max_gap)


def test_overlapping_boxes_are_a_contact() -> None:
    p = _pairs(_state((0, 0, 0, 10), (4.0, 0.5, 0.3, 0)))
    assert p.overlap.tolist() == [True] and p.gap.tolist() == [0.0]


def test_gap_between_parallel_boxes_is_exact() -> None:
    p = _pairs(_state((0, 0, 0, 0), (L + 0.7, 0, 0, 0)))  # 0.7 m nose to tail
    assert not p.overlap[0] and p.gap[0] == pytest.approx(0.7)
    side = _pairs(_state((0, 0, 0, 0), (1.0, W + 0.4, 0, 0)))  # 0.4 m side by side
    assert side.gap[0] == pytest.approx(0.4)


def test_gap_of_rotated_boxes_matches_a_brute_force_distance() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        h = rng.uniform(-math.pi, math.pi, 2)
        xy = np.array([[0.0, 0.0], rng.uniform(-4, 4, 2)])
        x, y = xy[:, 0], xy[:, 1]
        c = corners(x, y, h, np.full(2, L), np.full(2, W))
        p = close_pairs(x, y, h, np.full(2, L), np.full(2, W), 10.0)
        if p.overlap[0]:
            continue
        # sample both outlines densely
        t = np.linspace(0, 1, 400)[:, None]
        outline = [np.concatenate([c[k, i] + t * (c[k, (i + 1) % 4] - c[k, i])
                                   for i in range(4)]) for k in range(2)]
        d = np.hypot(*(outline[0][:, None, :] - outline[1][None, :, :]).transpose(2, 0, 1))
        assert p.gap[0] == pytest.approx(d.min(), abs=0.02)
        assert box_gap(c[:1], c[1:])[0] == pytest.approx(p.gap[0])


def test_candidate_pairs_find_every_close_pair_once() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 200, 800), rng.uniform(0, 50, 800)
    a, b = candidate_pairs(x, y, 5.0)
    got = set(zip(a.tolist(), b.tolist(), strict=True))
    assert len(got) == a.shape[0], "a pair was produced twice"
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    i, j = np.nonzero(np.triu(d <= 5.0, k=1))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) <= got


def _run(tracker: TruthTracker, frames: list[dict[str, np.ndarray]]) -> list[dict]:
    events: list[dict] = []
    vid = np.array([1, 2])
    for k, st in enumerate(frames):
        vx, vy = st["v"] * np.cos(st["h"]), st["v"] * np.sin(st["h"])
        events += tracker.update(100.0 + k * 0.1, vid, _pairs(st), st["x"], st["y"], vx, vy)
    return events + tracker.finish()


def test_rear_end_approach_that_stops_short_is_one_near_miss() -> None:
    # follower closes at 8 m/s on a stopped car, brakes at 9 m/s2 to stop 0.4 m behind
    frames, x, v = [], -30.0, 8.0
    for _ in range(60):
        gap = -x - L
        if gap <= 0.4 + v * v / 18.0 + 1e-9:
            v = max(0.0, v - 0.9)
        x += v * 0.1
        frames.append(_state((x, 0, 0, v), (0, 0, 0, 0)))
    events = _run(TruthTracker(), frames)
    assert [e["type"] for e in events] == ["near_miss"]
    e = events[0]
    assert e["vehicle_a"] == "veh-1" and e["vehicle_b"] == "veh-2"
    assert 0.1 < e["min_distance"] < 0.7


def test_contact_is_a_collision_and_replaces_the_near_miss() -> None:
    frames = [_state((x, 0, 0, 8.0), (0, 0, 0, 0)) for x in np.arange(-8.0, -3.0, 0.8)]
    frames += [frames[-1]] * 20  # both stop in contact
    events = _run(TruthTracker(), frames)
    assert [e["type"] for e in events] == ["collision"]
    assert events[0]["min_distance"] == 0.0 and events[0]["relative_speed"] == 8.0
    assert events[0]["ts"] == pytest.approx(100.5)  # first frame with contact (x = -4.0)


def test_ordinary_traffic_is_not_a_near_miss() -> None:
    frames = []
    for k in range(50):
        x = 13.0 * k * 0.1
        frames.append(_state((x, 0, 0, 13.0), (x + 3.0, 3.5, 0, 13.0)))  # adjacent lanes
    assert _run(TruthTracker(), frames) == []
    queue = [_state((-L - 2.0, 0, 0, 0), (0, 0, 0, 0))] * 30  # standstill, 2 m gap
    assert _run(TruthTracker(), queue) == []
    creep = [_state((-L - 0.8 + 0.01 * k, 0, 0, 0.1), (0, 0, 0, 0)) for k in range(30)]
    assert _run(TruthTracker(), creep) == [], "closing at walking pace is not a near miss"


def test_passing_twice_gives_two_episodes() -> None:
    frames = []
    for x in np.concatenate([np.arange(-30, 30, 1.0), np.arange(30, -30, -1.0)]):
        frames.append(_state((x, 0, 0, 10.0), (0, W + 0.5, math.pi, 10.0)))
    events = _run(TruthTracker(), frames)
    assert [e["type"] for e in events] == ["near_miss", "near_miss"]
    assert all(e["min_distance"] == pytest.approx(0.5) for e in events)
