"""Sensor realism: noise, drops, jitter, late and duplicate messages; --clean is exact."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import orjson
import pytest

from simulator import SimConfig, iter_ticks
from simulator.messages import encode_positions

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


def test_encoding_is_compact_and_names_odd_sizes_only() -> None:
    msgs = encode_positions(np.array([42, 7]), np.array([1764081000.1, 1764081000.1049]),
                            np.array([12.5, -0.001]), np.array([-3.2, 1.0]),
                            np.array([13.9, 0.0]), np.array([1.5708, -3.0]),
                            np.array([4.5, 5.3]), np.array([1.8, 2.0]))
    assert msgs[0] == (b"veh-42", b'{"vehicle_id":"veh-42","ts":1764081000.1,"x":12.5,"y":-3.2,'
                                  b'"speed":13.9,"heading":1.5708}')
    assert msgs[1][1] == (b'{"vehicle_id":"veh-7","ts":1764081000.105,"x":0.0,"y":1.0,'
                          b'"speed":0.0,"heading":-3.0,"length":5.3,"width":2.0}')


def test_late_messages_are_not_lost_at_the_end() -> None:
    cfg = replace(BASE, duration_s=3.0, late_fraction=0.5, drop_rate=0.0, duplicate_fraction=0.0)
    seen: defaultdict[str, int] = defaultdict(int)
    total = 0
    for t in iter_ticks(cfg):
        total += t.vehicles
        for k, _ in t.messages:
            seen[k.decode()] += 1
    assert sum(seen.values()) == total
