"""The two stages without a broker: predict processes (vehicle-keyed) write the internal topic's
records, risk processes (tile-keyed) read them; the alerts equal a single engine's, pairs
across input partitions included."""

from __future__ import annotations

import zlib

import numpy as np
import orjson
import pytest

from trajstream.model.predictors import ConstantVelocity, PathSpec
from trajstream.simulator import SimConfig, iter_ticks
from trajstream.stream import internal
from trajstream.stream.checkpoint import encode_meta
from trajstream.stream.codec import CodecConfig, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine
from trajstream.stream.predict_stage import TilePublisher
from trajstream.stream.risk_stage import RiskEngine
from trajstream.stream.tiles import TileGrid

INPUTS, RISK_PARTS = 6, 6
CFG = EngineConfig()


@pytest.fixture(scope="module")
def traffic() -> list[tuple[bytes, bytes]]:
    cfg = SimConfig(vehicles=80, duration_s=40.0, seed=11, reckless_fraction=0.4, warmup_s=5.0)
    return [m for tick in iter_ticks(cfg) for m in tick.messages]


def _part(key: bytes) -> int:
    return zlib.crc32(key) % INPUTS


@pytest.fixture(scope="module")
def want(traffic) -> set[str]:
    """The single process's alert ids."""
    eng = Engine(CFG, ConstantVelocity(PathSpec()))
    out = []
    for i in range(0, len(traffic), 500):
        chunk = traffic[i:i + 500]
        b, _ = decode_batch([k for k, _ in chunk], [v for _, v in chunk], CodecConfig())
        parts = np.array([_part(k.encode()) for k in b.vehicle_id], dtype=np.int64)
        out += eng.process(b, i, partitions=parts).alerts
    out += eng.flush().alerts
    return {orjson.loads(v)["alert_id"] for _, v in out}


def _predict(traffic, owners: list[set[int]], grid: TileGrid) -> list[list[bytes]]:
    """Each predict process reads its input partitions; returns the internal topic's log."""
    log: list[list[bytes]] = [[] for _ in range(grid.partitions)]
    for owned in owners:
        pub = TilePublisher(grid, "cv", INPUTS)
        eng = Engine(CFG, ConstantVelocity(PathSpec()), publisher=pub)
        mine = [m for m in traffic if _part(m[0]) in owned]
        for i in range(0, len(mine) + 300, 300):
            chunk = mine[i:i + 300]
            b, _ = decode_batch([k for k, _ in chunk], [v for _, v in chunk], CodecConfig())
            parts = np.array([_part(k.encode()) for k in b.vehicle_id], dtype=np.int64)
            out = eng.process(b, i, partitions=parts) if chunk else eng.flush()  # end: flush
            for q, _, v in out.internal + pub.progress(eng.watermark_tick, owned):
                log[q].append(v)
    return log


def _risk(log: list[list[bytes]], owners: list[set[int]], grid: TileGrid, step: int,
          restart_every: int = 0) -> list[str]:
    """Each risk process reads its partitions ``step`` records at a time; with
    ``restart_every``, each time it has read that many more records for the first time it
    commits (changelog meta, and offsets at the first record of a tick not yet released)
    and a new process restores from that."""
    alerts: list[str] = []
    for owned in owners:
        eng = RiskEngine(CFG, grid)
        eng.assign(owned)
        pos = dict.fromkeys(owned, 0)
        seq = 0
        where: list[tuple[int, int]] = []  # per seq: (partition, offset)
        high = dict(pos)  # the furthest offsets read
        restart_at = restart_every
        while any(pos[q] < len(log[q]) for q in owned):
            for q in sorted(owned):
                vals = log[q][pos[q]:pos[q] + step]
                where += [(q, pos[q] + i) for i in range(len(vals))]
                pos[q] += len(vals)
                batch, rej = eng.decode_records(None, vals, CodecConfig())
                assert not rej
                out = eng.process(batch, seq, partitions=np.full(len(batch), q))
                seq += len(vals)
                alerts += [orjson.loads(v)["alert_id"] for _, v in out.alerts]
            high = {q: max(high[q], pos[q]) for q in owned}
            if restart_every and sum(high.values()) >= restart_at:
                restart_at += restart_every
                meta = eng.checkpoint().meta
                first = eng.min_pending_seq
                if first is not None:
                    for q, off in where[first:]:
                        pos[q] = min(pos[q], off)
                eng = RiskEngine(CFG, grid)
                eng.assign(owned)
                eng.restore([], {q: orjson.loads(encode_meta(meta, q)) for q in owned})
        # end of input: the predict processes flushed and stopped
        alerts += [orjson.loads(v)["alert_id"] for _, v in eng.flush().alerts]
    return alerts


@pytest.mark.parametrize("tile_m", [60.0, 400.0])
def test_two_stages_give_the_single_process_alerts(traffic, want, tile_m):
    assert len(want) >= 5
    grid = TileGrid(tile_m, 170.0, RISK_PARTS)
    log = _predict(traffic, [{0, 2, 4}, {1, 3, 5}], grid)
    got = _risk(log, [{0, 1}, {2, 3, 4}, {5}], grid, step=7)
    assert len(got) == len(set(got))  # every pair alerted by exactly one risk process
    assert set(got) == want


def test_risk_processes_restored_mid_stream_give_the_single_process_alerts(traffic, want):
    """A pair's midpoint moves from one risk partition's tiles to another's while its episode
    is open: the process that takes it over must know the episode, also when it was
    restored after the episode began (it alerted a second episode before the changelog
    carried pairs near a partition's tiles)."""
    grid = TileGrid(60.0, 170.0, RISK_PARTS)
    log = _predict(traffic, [{0, 2, 4}, {1, 3, 5}], grid)
    got = _risk(log, [{0, 1}, {2, 3, 4}, {5}], grid, step=7, restart_every=60)
    assert len(got) == len(set(got))
    assert set(got) == want


def test_a_risk_stage_given_another_tile_size_follows_the_predict_stage(traffic, want):
    """--tile-m changed on the risk stage only (the README: 'the risk stage is keyed by
    --tile-m squares'): before, a pair was owned by the partition of its midpoint's tile on
    the risk stage's grid, which need not have got both vehicles (measured on the broker:
    3 risk processes, 11 of 103 alerts missed, none said)."""
    log = _predict(traffic, [{0, 2, 4}, {1, 3, 5}], TileGrid(400.0, 170.0, RISK_PARTS))
    got = _risk(log, [{0, 1}, {2, 3, 4}, {5}], TileGrid(60.0, 100.0, RISK_PARTS), step=7)
    assert len(got) == len(set(got))
    assert set(got) == want


def test_the_risk_stage_keeps_no_change_set(traffic):
    """The risk stage writes every tracked pair at a checkpoint and forgets no vehicle: the
    episode tracker's changed vehicles must not pile up there (one id per vehicle that was
    ever in a conflict, for as long as the process runs)."""
    grid = TileGrid(400.0, 170.0, RISK_PARTS)
    log = _predict(traffic, [set(range(INPUTS))], grid)
    eng = RiskEngine(CFG, grid)
    eng.assign(range(RISK_PARTS))
    seq, alerts = 0, 0
    for q in range(RISK_PARTS):
        batch, _ = eng.decode_records(None, log[q], CodecConfig())
        alerts += len(eng.process(batch, seq, partitions=np.full(len(batch), q)).alerts)
        seq += len(log[q])
    alerts += len(eng.flush().alerts)
    assert alerts >= 5
    assert eng.conflicts.tracker.changed_vehicles() == set()


def test_the_risk_stage_reports_the_vehicles_it_assesses(traffic):
    """Its active-vehicles gauge read 0 for the whole run: the vehicles of its tiles and
    their halo in the latest whole-fleet assessment."""
    from prometheus_client import CollectorRegistry

    from trajstream.stream.metrics import Metrics

    grid = TileGrid(400.0, 170.0, RISK_PARTS)
    log = _predict(traffic, [set(range(INPUTS))], grid)
    metrics = Metrics(CollectorRegistry())
    eng = RiskEngine(CFG, grid, metrics)
    eng.assign(range(RISK_PARTS))
    seq = 0
    for q in range(RISK_PARTS):
        batch, _ = eng.decode_records(None, log[q], CodecConfig())
        eng.process(batch, seq, partitions=np.full(len(batch), q))
        seq += len(log[q])
    assert len(eng) > 0
    assert metrics.active_vehicles._value.get() == len(eng)


def test_records_round_trip_bit_exact(traffic):
    grid = TileGrid(100.0, 170.0, 4)
    log = _predict(traffic[:3000], [set(range(INPUTS))], grid)
    ticks = [internal.decode(v) for q in log for v in q]
    kinds = {type(t).__name__ for t in ticks}
    assert kinds == {"TickRows", "Progress"}
    with pytest.raises(ValueError):
        internal.decode(b"\x00\x00\x00\x05{}")


def test_tiles_fan_out_within_the_halo():
    grid = TileGrid(100.0, 30.0, 1000)
    rows, parts = grid.fan_out(np.array([50.0, 95.0, 99.0, np.nan]),
                               np.array([50.0, 50.0, 99.0, 0.0]))
    per_row = {r: set(parts[rows == r].tolist()) for r in range(4)}
    home = {r: int(grid.partition_of(*grid.tile_of(np.array([x]), np.array([y])))[0])
            for r, (x, y) in enumerate([(50.0, 50.0), (95.0, 50.0), (99.0, 99.0)])}
    assert per_row[0] == {home[0]}  # 50 m from every edge: one tile
    assert len(per_row[1]) == 2 and home[1] in per_row[1]  # near one edge
    assert len(per_row[2]) == 4  # near a corner: the corner tile is within 1.4 m
    assert per_row[3] == set()  # no position, no partition


def test_a_heading_not_observed_yet_travels_as_unknown():
    from trajstream.stream.conflicts import PredictedTick
    from trajstream.stream.risk import Fleet

    n, points = 3, 4
    col = np.arange(n, dtype=np.float64)
    fleet = Fleet(col, col, col, col, np.array([0.5, 0.0, 1.0]), col, col, col + 4, col + 2,
                  np.zeros((n, points, 2)), heading_known=np.array([True, False, True]))
    tick = PredictedTick(1.0, np.array(["a", "b", "c"], dtype=object), fleet,
                         np.zeros((n, points), np.float32))
    got = internal.decode(internal.encode_tick(10, "lstm", tick, np.arange(n), (1000.0, 170.0)))
    assert got.tick.fleet.heading_known.tolist() == [True, False, True]
    assert got.tick.fleet.heading.tolist() == [0.5, 0.0, 1.0]


def test_a_track_start_travels_and_version_1_records_still_decode():
    from trajstream.stream.conflicts import PredictedTick
    from trajstream.stream.risk import Fleet

    n, points = 2, 3
    col = np.arange(n, dtype=np.float64)
    paths, sigma = np.ones((n, points, 2)), np.zeros((n, points), np.float32)
    ids = np.array(["a", "b"], dtype=object)
    fleet = Fleet(col, col, col, col, col, col, col, col + 4, col + 2, paths,
                  since=np.array([0.25, np.nan]))
    got = internal.decode(internal.encode_tick(3, "cv", PredictedTick(1.0, ids, fleet, sigma),
                                               np.arange(n), (1000.0, 170.0))).tick.fleet
    assert got.since[0] == 0.25 and np.isnan(got.since[1])
    no_since = Fleet(col, col, col, col, col, col, col, col + 4, col + 2, paths)
    got = internal.decode(internal.encode_tick(3, "cv", PredictedTick(1.0, ids, no_since, sigma),
                                               np.arange(n), (1000.0, 170.0))).tick.fleet
    assert np.isnan(got.since).all()  # not known: taken as long enough
    # a record of a predict process from before the track start was carried (version 1)
    header = {"v": 1, "kind": "tick", "k": 3, "t": 1.0, "model": "cv", "ids": ["a", "b"],
              "points": points}
    old = internal.decode(internal._pack(header, np.zeros((n, 9)), paths, sigma))
    assert old.tick.fleet.since is None and old.tick.fleet.length.tolist() == [0.0, 0.0]
