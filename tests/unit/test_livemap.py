"""Live map, pure parts: frame packing and thinning, the alert book, the hub, the fleet table
rebuilt from topics, and the in-process snapshot of a real engine (sigma included)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from tests.unit.test_engine import T0, crossing_traffic
from trajstream.model import load_predictor
from trajstream.model.predictors import PathSpec
from trajstream.stream.codec import CodecConfig, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine
from trajstream.stream.livemap.alertbook import AlertBook, slim_alert
from trajstream.stream.livemap.frames import (
    FleetSnapshot,
    View,
    decode_frame,
    encode_frame,
    path_step,
    select,
)
from trajstream.stream.livemap.hub import MapHub
from trajstream.stream.livemap.table import FleetTable
from trajstream.stream.livemap.tap import ProcessorTap, engine_snapshot


def _fleet(n: int = 5, points: int = 20, x0: float = 0.0, sigma: bool = True) -> FleetSnapshot:
    x = x0 + 10.0 * np.arange(n)
    y = np.zeros(n)
    t = 0.2 * np.arange(1, points + 1)
    paths = np.stack([x[:, None] + 10.0 * t, y[:, None] + 0.0 * t], axis=-1)
    return FleetSnapshot(
        ts=T0, ids=np.array([f"v{i}" for i in range(n)], dtype=object), x=x, y=y,
        heading=np.zeros(n), length=np.full(n, 4.5), width=np.full(n, 1.8), paths=paths,
        sigma=np.tile(0.1 * t, (n, 1)).astype(np.float32) if sigma else None,
    )


# -- frames ------------------------------------------------------------------------------


def test_frame_round_trip_keeps_positions_paths_and_sigma_relative_to_the_origin():
    snap = _fleet(4, x0=123456.0)  # far from 0: float32 would lose centimetres unshifted
    rows = np.arange(4)
    data = encode_frame(snap, rows, 1, (123000.0, 0.0), {"seq": 7})
    head, arr = decode_frame(data)
    assert head["seq"] == 7 and head["n"] == 4 and head["p"] == 20
    assert head["ids"] == ["v0", "v1", "v2", "v3"]
    assert (8 + len(data[8:8 + int.from_bytes(data[4:8], "little")])) % 4 == 0
    np.testing.assert_allclose(arr["x"], snap.x, atol=1e-3)
    np.testing.assert_allclose(arr["paths"], snap.paths, atol=1e-3)
    np.testing.assert_allclose(arr["sigma"], snap.sigma, atol=1e-6)


def test_frame_decimates_paths_but_keeps_the_last_point_and_marks_missing_sigma():
    snap = _fleet(2, sigma=False)
    step = path_step(2.0, 20)
    head, arr = decode_frame(encode_frame(snap, np.arange(2), step, (0.0, 0.0), {}))
    assert step == 4 and head["p"] == 5
    np.testing.assert_allclose(arr["paths"][:, -1], snap.paths[:, -1], atol=1e-3)
    assert np.isnan(arr["sigma"]).all()
    assert path_step(0.1, 20) == 1 and path_step(100.0, 20) == 10


def test_select_thins_to_the_viewport_keeps_incoming_paths_and_alert_vehicles():
    snap = _fleet(100)  # x = 0..990, each path 40 m ahead
    view = View(400.0, -50.0, 500.0, 50.0, 0.5)
    rows = select(snap, view)
    xs = snap.x[rows]
    # inside plus the margin, and vehicles whose path ends inside
    assert xs.min() >= 400.0 - 80.0 - 40.0 and xs.max() <= 500.0 + 80.0
    assert 400.0 in xs and 0.0 not in xs
    rows = select(snap, view, always=frozenset({"v0"}))
    assert 0 in rows
    assert select(snap, None).size == 100
    limited = select(snap, view, limit=3)
    assert limited.size == 3 and np.all(np.abs(snap.x[limited] - 450.0) <= 20.0)


@pytest.mark.parametrize("msg", [
    {"x0": 0, "y0": 0, "x1": 0, "y1": 1, "mpp": 1},
    {"x0": 0, "y0": 0, "x1": 1, "y1": 1, "mpp": 0},
    {"x0": "a", "y0": 0, "x1": 1, "y1": 1, "mpp": 1},
    {"x0": float("nan"), "y0": 0, "x1": 1, "y1": 1, "mpp": 1},
    {"y0": 0, "x1": 1, "y1": 1, "mpp": 1},
])
def test_view_rejects_malformed_viewports(msg):
    with pytest.raises(ValueError):
        View.parse(msg)


def test_view_clamps_a_huge_viewport():
    v = View.parse({"x0": -1e300, "y0": -1e300, "x1": 1e300, "y1": 1e300, "mpp": 1})
    assert v.x1 - v.x0 <= 2e7 + 1


# -- alerts ------------------------------------------------------------------------------


def _alert(a: str, b: str, ts: float, ttc: float, severity: str = "warning",
           alert_id: str = "id") -> dict:
    return {"schema": "trajstream.alert/v1", "alert_id": alert_id, "vehicle_a": a,
            "vehicle_b": b, "severity": severity, "ts": ts, "ttc": ttc, "min_distance": 0.4,
            "closest_approach": {"ts": ts + ttc, "x": 5.0, "y": 6.0},
            "vehicles": {"a": {"state": {"x": 1.0, "y": 2.0}, "path": [[0, 0]] * 20},
                         "b": {"state": {"x": 3.0, "y": 4.0}, "path": [[0, 0]] * 20}}}


def test_slim_alert_keeps_what_the_page_draws_and_refuses_non_alerts():
    slim = slim_alert(_alert("a", "b", T0, 1.5, "critical"), 99.0)
    assert slim is not None
    assert slim["cpa"] == [5.0, 6.0, T0 + 1.5] and slim["at"] == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
    assert slim["severity"] == "critical" and slim["pub"] == 99.0 and "vehicles" not in slim
    for bad in (None, [], {"vehicle_a": "a"}, {"vehicle_a": 1, "vehicle_b": "b", "ts": 1.0},
                {"vehicle_a": "a", "vehicle_b": "b", "ts": "soon"}):
        assert slim_alert(bad, 0.0) is None


def test_alert_book_keeps_the_latest_per_pair_until_contact_plus_hold_and_bounds_recent():
    book = AlertBook(hold_s=3.0, recent=3)
    book.add(slim_alert(_alert("a", "b", T0, 2.0, alert_id="1"), 0.0))  # type: ignore[arg-type]
    book.add(slim_alert(_alert("b", "a", T0 + 1, 1.0, "critical", "2"), 0.0))  # type: ignore[arg-type]
    assert [a["id"] for a in book.open()] == ["2"] and book.vehicles() == {"a", "b"}
    book.expire(T0 + 1 + 1.0 + 3.0)
    assert len(book.open()) == 1
    book.expire(T0 + 1 + 1.0 + 3.01)
    assert book.open() == [] and book.vehicles() == frozenset()
    for i in range(5):
        book.add(slim_alert(_alert(f"x{i}", "y", T0, 1.0, alert_id=f"r{i}"), 0.0))  # type: ignore[arg-type]
    assert [a["id"] for a in book.recent()] == ["r4", "r3", "r2"]


def test_hub_notifies_listeners_and_counts_what_is_not_an_alert():
    hub = MapHub()
    calls = []
    hub.add_listener(lambda: calls.append(1))
    hub.publish_fleet(_fleet(3, x0=2600.0), {"positions_per_s": 5.0})
    assert hub.publish_alert(orjson.dumps(_alert("a", "b", T0, 1.0)))
    assert not hub.publish_alert(b"not json")
    assert not hub.publish_alert(b'{"no": "alert"}')
    state = hub.state()
    assert len(calls) == 2 and state.version == 2
    assert state.origin == (3000.0, 0.0) and state.stats["positions_per_s"] == 5.0
    assert state.counters["bad_alerts"] == 2 and len(state.open_alerts) == 1


# -- fleet table (trajstream map) ----------------------------------------------------------


def _positions(rows: list[dict]) -> list[bytes]:
    return [orjson.dumps(r) for r in rows]


def test_table_keeps_the_newest_fix_derives_missing_headings_and_evicts():
    table = FleetTable(ttl_s=5.0)
    batch, _ = decode_batch(None, _positions([
        {"vehicle_id": "a", "ts": T0 + 0.1, "x": 0.0, "y": 0.0},
        {"vehicle_id": "b", "ts": T0 + 0.1, "x": 50.0, "y": 0.0, "heading": 1.0},
    ]), CodecConfig())
    table.update_positions(batch)
    batch, _ = decode_batch(None, _positions([
        {"vehicle_id": "a", "ts": T0 + 0.3, "x": 0.0, "y": 2.0},  # moving north, no heading
        {"vehicle_id": "a", "ts": T0 + 0.2, "x": 0.0, "y": 1.0},  # older in the same batch
        {"vehicle_id": "b", "ts": T0 + 0.05, "x": 99.0, "y": 99.0},  # older than what b has
    ]), CodecConfig())
    table.update_positions(batch)
    snap = table.snapshot(show_s=10.0)
    got = {v: i for i, v in enumerate(snap.ids)}
    a, b = got["a"], got["b"]
    assert snap.y[a] == 2.0 and snap.heading[a] == pytest.approx(math.pi / 2)
    assert snap.x[b] == 50.0 and snap.heading[b] == 1.0
    batch, _ = decode_batch(None, _positions([
        {"vehicle_id": "a", "ts": T0 + 6.0, "x": 0.0, "y": 3.0}]), CodecConfig())
    table.update_positions(batch)
    snap = table.snapshot(show_s=10.0)
    assert list(snap.ids) == ["a"] and len(table) == 1


def test_table_takes_predictions_with_optional_sigma_and_skips_malformed_ones():
    table = FleetTable()
    batch, _ = decode_batch(None, _positions([
        {"vehicle_id": v, "ts": T0, "x": 0.0, "y": 0.0} for v in ("a", "b", "c")]),
        CodecConfig())
    table.update_positions(batch)
    pts = [[float(k), 0.0] for k in range(20)]
    table.update_predictions([
        orjson.dumps({"vehicle_id": "a", "ts": T0, "model": "lstm", "dt": 0.2, "points": pts,
                      "sigma": [0.5] * 20}),
        orjson.dumps({"vehicle_id": "b", "ts": T0, "model": "cv", "dt": 0.2, "points": pts}),
        b"garbage",
        orjson.dumps({"vehicle_id": "c", "ts": T0, "points": pts[:5]}),  # another length
        orjson.dumps({"vehicle_id": "unknown", "ts": T0, "points": pts}),  # no position yet
    ])
    snap = table.snapshot(show_s=10.0)
    got = {v: i for i, v in enumerate(snap.ids)}
    assert snap.paths.shape[1:] == (20, 2)
    assert snap.paths[got["a"], 3, 0] == 3.0 and snap.sigma is not None
    assert np.all(snap.sigma[got["a"]] == 0.5) and np.isnan(snap.sigma[got["b"]]).all()
    assert np.isnan(snap.paths[got["c"]]).all()
    assert table.ignored_predictions == 2


# -- in-process snapshot (trajstream demo) -------------------------------------------------


def _run_engine(predictor: str) -> tuple[Engine, list[dict]]:
    """An engine that processed 4 s of crossing traffic, and its prediction messages."""
    cfg = EngineConfig(emit_predictions=True)
    engine = Engine(cfg, load_predictor(predictor, PathSpec()))
    batch, rej = decode_batch(None, crossing_traffic(n_background=5, seconds=4.0), CodecConfig())
    assert not rej
    out = engine.process(batch)
    return engine, [orjson.loads(v) for _, v in out.predictions]


def test_engine_snapshot_has_every_recent_vehicle_with_lstm_sigma():
    engine, preds = _run_engine("lstm")
    snap = engine_snapshot(engine, show_s=2.0)
    rows = snap.rows()
    assert len(snap) == 7 and {snap.ids[i] for i in rows} >= {"cross-a", "cross-b"}
    assert snap.sigma is not None and np.isfinite(snap.sigma[rows]).all()
    assert np.all(snap.sigma[rows] > 0) and np.isfinite(snap.paths[rows]).all()
    # Frames carry exactly the shown vehicles, with their sigma.
    head, arr = decode_frame(encode_frame(snap, select(snap, None), 1, (0.0, 0.0), {}))
    assert sorted(head["ids"]) == sorted(snap.ids[i] for i in rows)
    assert np.isfinite(arr["sigma"]).all()
    # The predictions topic carries the same sigma (optional field of the contract).
    assert preds and all(len(p["sigma"]) == len(p["points"]) == 20 for p in preds)


def test_cv_predictions_carry_no_sigma():
    engine, preds = _run_engine("cv")
    assert preds and all("sigma" not in p for p in preds)
    assert np.isnan(engine_snapshot(engine, 2.0).sigma).all()  # type: ignore[arg-type]


def test_tap_publishes_at_most_fps_snapshots_and_forwards_alerts():
    engine, _ = _run_engine("cv")
    hub = MapHub()
    tap = ProcessorTap(hub, fps=4.0)
    tap(engine)
    assert hub.state().counters["snapshots"] == 0  # nobody watching: no copies
    hub.viewers = 1
    for _ in range(50):
        tap(engine)
    tap.send(b"a|b", orjson.dumps(_alert("a", "b", T0, 1.0)))
    state = hub.state()
    assert state.counters["snapshots"] == 1 and len(state.fleet) == 7
    assert state.stats["source"] == "in-process" and state.stats["model"] == "cv"
    assert len(state.open_alerts) == 1


def test_tap_never_raises_into_the_processor():
    class Broken:
        stats = {"records": 0}

        @property
        def store(self):
            raise RuntimeError("boom")

    hub = MapHub()
    hub.viewers = 1
    tap = ProcessorTap(hub)
    tap(Broken())  # logged, swallowed
    tap.send(None, b"\xff")  # not an alert: counted by the hub, no exception
    assert tap.errors == 1


def test_table_draws_lat_lon_positions_in_the_projected_frame():
    codec = CodecConfig(origin_lat=48.0, origin_lon=11.0)
    table = FleetTable()
    batch, rej = decode_batch(None, _positions([
        {"vehicle_id": "north", "ts": T0, "lat": 48.001, "lon": 11.0},  # ~111 m north
        {"vehicle_id": "east", "ts": T0, "lat": 48.0, "lon": 11.001},  # ~74 m east
    ]), codec)
    assert not rej
    table.update_positions(batch)
    snap = table.snapshot(show_s=10.0)
    got = {v: i for i, v in enumerate(snap.ids)}
    n, e = got["north"], got["east"]
    assert snap.x[n] == pytest.approx(0.0, abs=0.5) and snap.y[n] == pytest.approx(111.2, abs=1)
    assert snap.y[e] == pytest.approx(0.0, abs=0.5) and snap.x[e] == pytest.approx(74.4, abs=1)


def test_corner_figures_are_read_from_a_processor_metrics_endpoint():
    from prometheus_client import CollectorRegistry

    from trajstream.stream.livemap.kafka_feed import scrape_processor
    from trajstream.stream.metrics import Metrics, serve

    metrics = Metrics(CollectorRegistry())
    metrics.set_build_info("lstm", "confluent")
    metrics.positions_consumed.inc(1234)
    metrics.consumer_lag.set(17)
    metrics.event_time_lag.set(0.75)
    metrics.observe_prediction_errors("lstm", "4", [1.0, 3.0])
    metrics.observe_prediction_errors("cv", "4", [4.0, 8.0])
    server = serve(0, metrics.registry, addr="127.0.0.1")
    try:
        got = scrape_processor(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
    assert got["model"] == "lstm" and got["consumer_lag"] == 17 and got["lag_s"] == 0.75
    assert got["positions_consumed"] == 1234
    assert got["error_m"] == {"lstm": {"4": 2.0}, "cv": {"4": 6.0}}


def test_kafka_feed_decodes_only_the_newest_message_per_vehicle_per_snapshot():
    from trajstream.stream.kafka import Record
    from trajstream.stream.livemap.kafka_feed import FeedConfig, KafkaFeed

    hub = MapHub()
    feed = KafkaFeed(hub, FeedConfig(bootstrap="127.0.0.1:1", positions_topic="pos",
                                     predictions_topic="pred", alerts_topic="alerts"))
    pts = [[float(k), 1.0] for k in range(20)]

    def rec(topic: str, key: bytes | None, value: dict | None) -> Record:
        return Record(topic, 0, 0, key, None if value is None else orjson.dumps(value), 0)

    feed._apply([
        rec("pos", b"a", {"vehicle_id": "a", "ts": T0, "x": 0.0, "y": 0.0}),
        rec("pos", b"a", {"vehicle_id": "a", "ts": T0 + 0.1, "x": 1.0, "y": 0.0}),
        rec("pos", None, {"vehicle_id": "b", "ts": T0, "x": 5.0, "y": 5.0}),
        rec("pos", b"c", None),  # a tombstone: nothing
        rec("pred", b"a", {"vehicle_id": "a", "ts": T0, "points": [[9.0, 9.0]] * 20}),
        rec("pred", b"a", {"vehicle_id": "a", "ts": T0 + 0.1, "points": pts}),
        rec("alerts", b"a|b", _alert("a", "b", T0, 1.0)),
    ])
    assert feed.counts == {"positions": 3, "predictions": 2, "alerts": 1, "rejected": 0}
    assert len(hub.state().open_alerts) == 1
    assert len(feed.table) == 0  # nothing decoded before the snapshot
    feed._decode_pending()
    snap = feed.table.snapshot(show_s=10.0)
    got = {v: i for i, v in enumerate(snap.ids)}
    assert set(got) == {"a", "b"} and snap.x[got["a"]] == 1.0
    assert snap.paths[got["a"], 3, 0] == 3.0
    assert snap.heading[got["a"]] == 0.0  # no previous fix decoded: nothing to derive from


def test_kafka_feed_without_predictions_and_a_missing_topic_said_once(monkeypatch, caplog):
    from trajstream.stream import kafka
    from trajstream.stream.livemap.kafka_feed import FeedConfig, KafkaFeed

    monkeypatch.setattr(kafka, "partition_count",
                        lambda b, t, client=None, client_config=None: 1 if t == "pos" else None)
    off = KafkaFeed(MapHub(), FeedConfig(bootstrap="127.0.0.1:1", positions_topic="pos",
                                         predictions_topic=None, alerts_topic="alerts"))
    assert off._wanted() == ["pos", "alerts"]
    with caplog.at_level("WARNING", logger="trajstream.stream.livemap"):
        for _ in range(3):  # a check every 10 s: said once while the same topics are missing
            assert off._existing_topics("confluent") == ["pos"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("map: topic(s) alerts not found yet"), said


def test_kafka_feed_looks_topics_up_with_the_kafka_options(monkeypatch):
    """On a cluster with SASL/TLS the topic lookup needs --kafka-option as the consumer does;
    without it the map waited for topics it could never see."""
    from trajstream.stream import kafka
    from trajstream.stream.livemap.kafka_feed import FeedConfig, KafkaFeed

    seen: list[object] = []

    def count(b, t, client=None, client_config=None):
        seen.append(client_config)
        return 1

    monkeypatch.setattr(kafka, "partition_count", count)
    sasl = {"security.protocol": "SASL_SSL"}
    feed = KafkaFeed(MapHub(), FeedConfig(bootstrap="127.0.0.1:1", positions_topic="pos",
                                          predictions_topic=None, alerts_topic="alerts",
                                          kafka_config=sasl))
    assert feed._existing_topics("confluent") == ["pos", "alerts"]
    assert seen == [sasl, sasl]
