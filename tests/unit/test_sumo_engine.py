"""The SUMO engine on real SUMO (libsumo in-process): small cities, a few simulated minutes."""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from trajstream.simulator import SimConfig, Tick
from trajstream.simulator.sumo import CONFLICT_KINDS, SumoConfig, binaries, iter_sumo_ticks
from trajstream.simulator.sumo.network import TARGET_DENSITY_PER_LANE_KM, build_network, lane_km

START = 1764547200.0


def _run(run: SimConfig, cfg: SumoConfig) -> list[Tick]:
    return list(iter_sumo_ticks(run, cfg))


def _records(ticks: list[Tick]) -> list[dict]:
    return [orjson.loads(v) for t in ticks for _, v in t.messages]


@pytest.fixture(scope="module")
def reckless_run() -> list[Tick]:
    """A small grid city with many reckless drivers: collisions happen."""
    run = SimConfig(vehicles=250, duration_s=60, seed=3, reckless_fraction=0.4, clean=True,
                    start_ts=START)
    return _run(run, SumoConfig(warmup_s=30))


def test_same_seed_same_bytes_other_seed_other_traffic() -> None:
    run = SimConfig(vehicles=60, duration_s=8, seed=5, start_ts=START)
    cfg = SumoConfig(warmup_s=10)
    a = [(t.ts, t.messages, t.truth) for t in _run(run, cfg)]
    b = [(t.ts, t.messages, t.truth) for t in _run(run, cfg)]
    assert a == b
    c = [(t.ts, t.messages, t.truth) for t in _run(replace(run, seed=6), cfg)]
    assert [m for _, m, _ in a] != [m for _, m, _ in c]


def test_ticks_are_on_the_event_time_grid_with_the_city_full(reckless_run: list[Tick]) -> None:
    ts = [t.ts for t in reckless_run]
    assert len(ts) == 600
    np.testing.assert_allclose(np.diff(ts), 0.1, atol=1e-6)
    assert ts[0] == START
    vehicles = np.array([t.vehicles for t in reckless_run])
    assert vehicles.min() >= 0.8 * 250 and vehicles.max() <= 250


def test_positions_are_the_centre_moving_along_the_heading(reckless_run: list[Tick]) -> None:
    """Consecutive centres of a vehicle are about speed x dt apart, in the direction it heads:
    no teleports, the heading is counter-clockwise from +x. (SUMO's heading is the chord from
    the rear to the front bumper, so it can swing by some degrees where a vehicle enters a
    junction: a few steps are a little longer than speed x dt.)"""
    tracks: defaultdict[str, list[dict]] = defaultdict(list)
    for r in _records(reckless_run):
        tracks[r["vehicle_id"]].append(r)
        assert set(r) >= {"vehicle_id", "ts", "x", "y", "speed", "heading"}
    excess, along = [], []
    for recs in tracks.values():
        for p, q in zip(recs, recs[1:], strict=False):
            dx, dy = q["x"] - p["x"], q["y"] - p["y"]
            step = math.hypot(dx, dy)
            excess.append(step - max(p["speed"], q["speed"]) * 0.1)
            if q["speed"] > 5.0 and step > 0.4:
                along.append((dx * math.cos(q["heading"]) + dy * math.sin(q["heading"])) / step)
    assert max(excess) < 1.5, "no jumps"
    assert np.quantile(excess, 0.999) < 0.3
    assert len(along) > 10_000
    assert np.quantile(along, 0.01) > math.cos(math.radians(20)), "moving where it heads"


def test_collisions_are_sumos_with_a_conflict_kind(reckless_run: list[Tick]) -> None:
    events = [e for t in reckless_run for e in t.truth]
    collisions = [e for e in events if e["type"] == "collision"]
    assert len(collisions) >= 2, events
    positions = {(r["vehicle_id"], r["ts"]): r for r in _records(reckless_run)}
    for e in collisions:
        assert set(e) == {"type", "vehicle_a", "vehicle_b", "ts", "x", "y", "min_distance",
                          "relative_speed", "kind", "collider", "sumo_type"}
        assert e["vehicle_a"] < e["vehicle_b"]
        assert e["kind"] in CONFLICT_KINDS
        assert e["collider"] in (e["vehicle_a"], e["vehicle_b"])
        a, b = positions[(e["vehicle_a"], e["ts"])], positions[(e["vehicle_b"], e["ts"])]
        reach = (a.get("length", 4.5) + b.get("length", 4.5)) / 2 + 0.5
        assert math.hypot(a["x"] - b["x"], a["y"] - b["y"]) <= reach, (e, a, b)
        assert (e["x"], e["y"]) == pytest.approx(((a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2),
                                                 abs=0.02)
    pairs = [(e["vehicle_a"], e["vehicle_b"]) for e in collisions]
    assert len(pairs) == len(set(pairs)), "one event per pair"


def test_crashed_vehicles_stop_and_are_removed(reckless_run: list[Tick]) -> None:
    crash = next(e for t in reckless_run for e in t.truth if e["type"] == "collision"
                 and e["ts"] < START + 40)
    ids = {crash["vehicle_a"], crash["vehicle_b"]}
    after = [r for r in _records(reckless_run)
             if r["vehicle_id"] in ids and r["ts"] > crash["ts"] + 0.05]
    assert after and all(r["speed"] == 0.0 for r in after)
    assert max(r["ts"] for r in after) <= crash["ts"] + SumoConfig().crash_hold_s + 0.15


def test_careful_drivers_do_not_crash() -> None:
    run = SimConfig(vehicles=250, duration_s=60, seed=3, reckless_fraction=0.0, clean=True)
    events = [e for t in _run(run, SumoConfig(warmup_s=30)) for e in t.truth]
    assert [e for e in events if e["type"] == "collision"] == []


@pytest.mark.parametrize("kind", ["grid", "spider", "random"])
def test_generated_cities_are_sized_for_the_vehicles(kind: str, tmp_path: Path) -> None:
    cfg = SumoConfig(net_kind=kind, lanes=1)  # type: ignore[arg-type]
    net = build_network(cfg, 600, seed=1, work_dir=tmp_path)
    assert lane_km(net) >= 600 / TARGET_DENSITY_PER_LANE_KM
    run = SimConfig(vehicles=40, duration_s=3, seed=1, clean=True)
    ticks = _run(run, replace(cfg, net_file=net, warmup_s=5))
    assert ticks[-1].vehicles >= 30


def test_an_openstreetmap_extract_is_driven(tmp_path: Path) -> None:
    osm = tmp_path / "town.osm"
    nodes, ways = [], []
    for i in range(4):
        for j in range(4):
            nodes.append(f'<node id="{1 + 4 * i + j}" lat="{48.0 + 0.0018 * i:.4f}" '
                         f'lon="{11.0 + 0.0027 * j:.4f}" version="1"/>')
    way_id = 100
    for i in range(4):
        row = [1 + 4 * i + j for j in range(4)]
        col = [1 + 4 * j + i for j in range(4)]
        for line in (row, col):
            refs = "".join(f'<nd ref="{n}"/>' for n in line)
            ways.append(f'<way id="{way_id}" version="1">{refs}'
                        '<tag k="highway" v="residential"/></way>')
            way_id += 1
    osm.write_text('<?xml version="1.0"?><osm version="0.6">' + "".join(nodes + ways)
                   + "</osm>")
    run = SimConfig(vehicles=20, duration_s=3, seed=1, clean=True)
    work = tmp_path / "work"
    ticks = _run(run, SumoConfig(osm_file=osm, work_dir=work, warmup_s=10, block_m=100))
    assert (work / "city.net.xml").is_file(), "--sumo-dir keeps the converted network"
    assert ticks[-1].vehicles >= 10
    xs = [r["x"] for r in _records(ticks)]
    assert min(xs) >= 0 and max(xs) <= 700  # four 200 m blocks, projected to metres


def test_sumo_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    binaries.sumo_home.cache_clear()
    monkeypatch.setitem(sys.modules, "sumo", None)  # as if eclipse-sumo were not installed
    try:
        with pytest.raises(binaries.SumoMissing, match=r"pip install 'trajstream\[sumo\]'"):
            binaries.require()
    finally:
        binaries.sumo_home.cache_clear()
