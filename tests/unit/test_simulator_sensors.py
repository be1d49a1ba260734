"""Sensor realism: noise, drops, jitter, late and duplicate messages; --clean is exact."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import orjson
import pytest

from trajstream.simulator import SimConfig, iter_ticks
from trajstream.simulator.messages import encode_positions

BASE = SimConfig(vehicles=120, duration_s=40.0, seed=21, warmup_s=10.0, gps_sigma_m=0.5,
                 drop_rate=0.1, jitter_s=0.03, late_fraction=0.05, duplicate_fraction=0.04)


def _run(config: SimConfig) -> tuple[list[bytes], list[int]]:
    values, counts = [], []
    for t in iter_ticks(config):
        for key, value in t.messages:
            assert key == orjson.loads(value)["vehicle_id"].encode()
            values.append(value)
        counts.append(t.vehicles)
    return values, counts


@pytest.fixture(scope="module")
def noisy() -> tuple[list[bytes], list[int]]:
    return _run(BASE)


@pytest.fixture(scope="module")
def clean() -> tuple[list[bytes], list[int]]:
    return _run(replace(BASE, clean=True))


def _tick(rec: dict) -> int:
    return round((rec["ts"] - BASE.start_ts) * BASE.hz)


def test_clean_is_every_vehicle_every_tick_in_order(clean) -> None:
    values, counts = clean
    assert len(values) == sum(counts)
    last: dict[str, float] = {}
    for v in values:
        rec = orjson.loads(v)
        assert rec["ts"] > last.get(rec["vehicle_id"], -1.0)
        assert rec["ts"] == round(BASE.start_ts + _tick(rec) / BASE.hz, 3)
        last[rec["vehicle_id"]] = rec["ts"]


def test_drops_duplicates_and_late_messages_at_the_configured_rates(noisy, clean) -> None:
    values, counts = noisy
    expected = sum(counts)
    dup = sum(c - 1 for c in Counter(values).values())
    unique = len(set(values))
    assert dup / expected == pytest.approx(BASE.duplicate_fraction, rel=0.25)
    assert 1 - unique / expected == pytest.approx(BASE.drop_rate, rel=0.15)
    newest: dict[str, int] = {}
    late = 0
    for v in dict.fromkeys(values):  # first copies, in publish order
        rec = orjson.loads(v)
        k = _tick(rec)
        late += k < newest.get(rec["vehicle_id"], -1)
        newest[rec["vehicle_id"]] = max(k, newest.get(rec["vehicle_id"], -1))
    # a late message is out of order unless its vehicle had nothing newer delivered yet
    assert late / unique == pytest.approx(BASE.late_fraction, rel=0.3)


def test_gps_noise_and_jitter(noisy, clean) -> None:
    truth = {}
    for v in clean[0]:
        rec = orjson.loads(v)
        truth[(rec["vehicle_id"], _tick(rec))] = rec
    dx, dt = [], []
    for v in set(noisy[0]):
        rec = orjson.loads(v)
        ref = truth[(rec["vehicle_id"], _tick(rec))]
        dx += [rec["x"] - ref["x"], rec["y"] - ref["y"]]
        dt.append(rec["ts"] - ref["ts"])
    assert np.std(dx) == pytest.approx(BASE.gps_sigma_m, rel=0.05)
    assert abs(np.mean(dx)) < 0.02
    assert max(abs(d) for d in dt) <= BASE.jitter_s + 0.0015
    assert np.std(dt) == pytest.approx(BASE.jitter_s / np.sqrt(3), rel=0.1)  # uniform


def test_noisy_runs_are_reproducible(noisy) -> None:
    again, _ = _run(BASE)
    assert again == noisy[0]


def test_positions_only_omits_speed_and_heading() -> None:
    cfg = replace(BASE, positions_only=True, duration_s=2.0)
    for t in iter_ticks(cfg):
        for _, v in t.messages:
            assert {"speed", "heading"}.isdisjoint(orjson.loads(v))


def test_encoding_is_fixed_point_and_names_odd_sizes_only() -> None:
    msgs = encode_positions(np.array([42, 7]), np.array([1764081000.1, 1764081000.1049]),
                            np.array([12.5, -0.001]), np.array([-3.2, 1.0]),
                            np.array([13.9, 0.0]), np.array([1.5708, -3.0]),
                            np.array([4.5, 5.3]), np.array([1.8, 2.0]))
    assert msgs[0] == (b"veh-42", b'{"vehicle_id":"veh-42","ts":1764081000.100,"x":12.50,'
                                  b'"y":-3.20,"speed":13.90,"heading":1.5708}')
    assert msgs[1] == (b"veh-7", b'{"vehicle_id":"veh-7","ts":1764081000.105,"x":0.00,'
                                 b'"y":1.00,"speed":0.00,"heading":-3.0000,"length":5.30,'
                                 b'"width":2.00}')


def test_vectorised_encoding_equals_rounded_values() -> None:
    """Parity with the obvious per-message encoding (round, then a JSON library)."""
    rng = np.random.default_rng(5)
    n = 3000
    vid = rng.integers(0, 10**7, n)
    cols = {"ts": (1.7e9 + rng.uniform(-1e6, 1e6, n), 3),
            "x": (rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-4, 5, n), 2),
            "y": (np.where(rng.uniform(size=n) < 0.1, 0.0, rng.normal(0, 500, n)), 2),
            "speed": (rng.uniform(0, 40, n), 2), "heading": (rng.uniform(-np.pi, np.pi, n), 4)}
    length = np.where(rng.uniform(size=n) < 0.3, rng.uniform(3, 12, n), 4.5)
    width = np.where(rng.uniform(size=n) < 0.3, rng.uniform(1.5, 2.6, n), 1.8)
    msgs = encode_positions(vid, *(c[0] for c in cols.values()), length, width)
    for k, (key, value) in enumerate(msgs):
        rec = orjson.loads(value)
        assert key == f"veh-{vid[k]}".encode() == rec["vehicle_id"].encode()
        for name, (v, decimals) in cols.items():
            assert abs(rec[name] - v[k]) <= 0.5 * 10.0**-decimals * (1 + 1e-9) + 1e-6
            assert round(rec[name], decimals) == rec[name]
        odd = length[k] != 4.5 or width[k] != 1.8
        assert ("length" in rec) == odd and ("width" in rec) == odd
        assert b" " not in value and re.search(rb":-0\.0*[,}]", value) is None  # no -0.00


def test_late_messages_are_not_lost_at_the_end() -> None:
    cfg = replace(BASE, duration_s=3.0, late_fraction=0.5, drop_rate=0.0, duplicate_fraction=0.0)
    seen: defaultdict[str, int] = defaultdict(int)
    total = 0
    for t in iter_ticks(cfg):
        total += t.vehicles
        for k, _ in t.messages:
            seen[k.decode()] += 1
    assert sum(seen.values()) == total
