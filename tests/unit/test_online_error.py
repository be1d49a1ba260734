"""OnlineError: anchors scored once per horizon against later fixes, vectorised over vehicles."""

from __future__ import annotations

import math

import numpy as np

from trajstream.model.predictors import PathSpec
from trajstream.stream.online_error import OnlineError

SPEC = PathSpec(4.0, 0.2)


def _straight_paths(x0: np.ndarray, vx: float, t0: np.ndarray) -> np.ndarray:
    """Paths moving at vx along +x from x0."""
    offs = SPEC.offsets_s
    px = x0[:, None] + vx * offs[None, :]
    return np.stack([px, np.zeros_like(px)], -1)


def _run(oe: OnlineError, n: int, true_v: float, pred_v: list[float], rate_hz: float = 10.0,
         seconds: float = 6.0):
    """n vehicles at x = true_v * t; model m predicts speed pred_v[m]. Returns errors seen."""
    oe.ensure_capacity(n)
    slots = np.arange(n)
    got: dict[tuple[str, str], list[float]] = {}
    dt = 1.0 / rate_hz
    for k in range(int(seconds * rate_hz) + 1):
        t = 1000.0 + k * dt
        ts = np.full(n, t)
        x = true_v * (ts - 1000.0) + np.arange(n) * 100.0
        step_dt = np.full(n, 0.0 if k == 0 else dt)
        for model, h, e in oe.observe(slots, ts, x, np.zeros(n), step_dt):
            got.setdefault((model, h), []).extend(e.tolist())
        due = oe.due(slots, ts)
        d = np.flatnonzero(due)
        oe.add(slots[d], ts[d], [_straight_paths(x[d], v, ts[d]) for v in pred_v])
    return got


def test_errors_at_each_horizon_for_each_model():
    oe = OnlineError(SPEC, ["lstm", "cv"], capacity=2)
    got = _run(oe, 3, true_v=10.0, pred_v=[10.0, 8.0])  # lstm exact, cv 2 m/s slow
    for h in ("1", "2", "3", "4"):
        assert got[("lstm", h)] and max(got[("lstm", h)]) < 1e-6
        np.testing.assert_allclose(got[("cv", h)], 2.0 * float(h), atol=1e-6)
    # 6 s of data, anchors at 0..6 s: horizon 1 s scored for anchors 0..5, 4 s for 0..2
    assert len(got[("lstm", "1")]) == 3 * 6
    assert len(got[("lstm", "4")]) == 3 * 3
    means = oe.mean_m()
    assert math.isclose(means[("cv", "3")], 6.0) and means[("lstm", "3")] < 1e-6
    assert oe.capacity >= 3


def test_each_anchor_horizon_is_scored_once_even_at_high_rate():
    oe = OnlineError(SPEC, ["cv"])
    got = _run(oe, 1, true_v=5.0, pred_v=[5.0], rate_hz=50.0, seconds=5.0)
    assert len(got[("cv", "1")]) == 5  # anchors at 0,1,2,3,4 s
    assert len(got[("cv", "4")]) == 2


def test_sparse_fixes_are_not_scored_far_from_the_horizon():
    # fixes every 0.7 s: tolerance is capped at 0.25 s, so only fixes near t0 + h count
    oe = OnlineError(SPEC, ["cv"], max_tolerance_s=0.25)
    slots = np.array([0])
    times = [0.0, 0.7, 1.4, 2.1, 2.8, 3.5, 4.2]
    scored = []
    for i, t in enumerate(times):
        ts = np.array([1000.0 + t])
        dt = np.array([0.0 if i == 0 else 0.7])
        for _, h, _e in oe.observe(slots, ts, ts - 1000.0, np.zeros(1), dt):
            scored.append((t, h))
        if i == 0:
            oe.add(slots, ts, [_straight_paths(np.zeros(1), 1.0, ts)])
    # |t - h| <= 0.25: 2.1 (h=2), 2.8 (h=3), 4.2 (h=4); 0.7 and 1.4 are 0.3/0.4 away from 1
    assert scored == [(2.1, "2"), (2.8, "3"), (4.2, "4")]


def test_reset_forgets_anchors_and_horizons_beyond_the_path_are_skipped():
    oe = OnlineError(PathSpec(2.0, 0.2), ["cv"])
    assert oe.horizons == ("1", "2")
    slots = np.array([0, 1])
    ts = np.array([10.0, 10.0])
    oe.add(slots, ts, [_straight_paths(np.zeros(2), 1.0, ts)])
    oe.reset(np.array([1]))
    got = oe.observe(slots, ts + 1.0, np.array([1.0, 1.0]), np.zeros(2), np.array([0.1, 0.1]))
    assert len(got) == 1 and got[0][2].size == 1  # only vehicle 0 still had an anchor
    # no previous fix (dt 0): nothing scored
    assert oe.observe(slots, ts + 2.0, np.zeros(2), np.zeros(2), np.zeros(2)) == []


def test_due_respects_the_interval():
    oe = OnlineError(SPEC, ["cv"], anchor_interval_s=1.0)
    s = np.array([0])
    assert oe.due(s, np.array([5.0])).tolist() == [True]
    oe.add(s, np.array([5.0]), [_straight_paths(np.zeros(1), 1.0, np.array([5.0]))])
    assert oe.due(s, np.array([5.9])).tolist() == [False]
    assert oe.due(s, np.array([6.0])).tolist() == [True]
