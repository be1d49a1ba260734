"""Engine: event-time rules, determinism across batch cuts, drops, eviction, predictor batching."""

from __future__ import annotations

import math
import time

import numpy as np
import orjson
import pytest

from trajstream.model.kinematics import Kinematics
from trajstream.model.predictors import ConstantVelocity, PathSpec, constant_velocity_paths
from trajstream.stream.codec import CodecConfig, PositionBatch, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine
from trajstream.stream.metrics import Metrics

T0 = 1764081000.0
FUTURE = time.time() + 1e7
SPEC = PathSpec()


def _msg(vid: str, t: float, x: float, y: float, speed: float, heading: float) -> bytes:
    return orjson.dumps(
        {"vehicle_id": vid, "ts": round(t, 3), "x": x, "y": y, "speed": speed, "heading": heading}
    )


def crossing_traffic(
    seed: int = 0, n_background: int = 30, seconds: float = 12.0, hz: float = 10.0,
    disorder_s: float = 0.0, duplicates: float = 0.0, late: float = 0.0,
) -> list[bytes]:
    """Two vehicles crossing at (0, 0) around T0 + 6 s, background traffic in parallel lanes.

    Arrival order is event time plus a random delay up to ``disorder_s``; a fraction of
    records is duplicated and a fraction delayed by 3 s (beyond any sane lateness).
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, bytes]] = []
    for k in range(int(seconds * hz) + 1):
        t = T0 + k / hz
        tt = k / hz
        recs = [
            _msg("cross-a", t, -60.0 + 10.0 * tt, 0.0, 10.0, 0.0),
            _msg("cross-b", t, 0.0, -60.0 + 10.0 * tt, 10.0, math.pi / 2),
        ]
        for i in range(n_background):
            lane_y = 100.0 + 4.0 * (i % 5)
            x = -200.0 + 25.0 * (i // 5) + 9.0 * tt
            recs.append(_msg(f"bg-{i:03d}", t, x, lane_y, 9.0, 0.0))
        for r in recs:
            arrival = t + rng.uniform(0.0, disorder_s)
            if rng.random() < late:
                arrival += 3.0
            rows.append((arrival, r))
            if rng.random() < duplicates:
                rows.append((arrival + rng.uniform(0.0, 0.5), r))
    rows.sort(key=lambda p: p[0])
    return [r for _, r in rows]


def _batch(values: list[bytes]) -> PositionBatch:
    batch, rejections = decode_batch(None, values, CodecConfig())
    assert not rejections
    return batch


def run(values: list[bytes], cut: int | None, config: EngineConfig | None = None,
        predictor=None, metrics=None) -> tuple[list[tuple[bytes, bytes]], Engine]:
    eng = Engine(config or EngineConfig(), predictor or ConstantVelocity(SPEC), metrics)
    alerts: list[tuple[bytes, bytes]] = []
    step = cut or len(values)
    for i in range(0, len(values), step):
        alerts.extend(eng.process(_batch(values[i : i + step]), seq0=i).alerts)
    alerts.extend(eng.flush().alerts)
    return alerts, eng


def test_crossing_pair_is_alerted_warning_then_critical_before_contact():
    alerts, eng = run(crossing_traffic(), None)
    decoded = [orjson.loads(v) for _, v in alerts]
    assert [k for k, _ in alerts] == [b"cross-a|cross-b"] * len(alerts)
    assert [d["severity"] for d in decoded] == ["warning", "critical"]
    for d in decoded:
        assert d["ts"] < T0 + 6.0 and d["ts"] + d["ttc"] <= T0 + 6.0
        assert d["schema"] == "trajstream.alert/v1" and d["model"] == "cv"
        # on tick times (0.1 s); a critical alert only at a whole-fleet assessment (0.2 s)
        step = 0.2 if d["severity"] == "critical" else 0.1
        assert abs(d["ts"] / step - round(d["ts"] / step)) < 1e-4  # (ts / 0.1 ~ 2e10: ulp 4e-6)
    assert eng.stats["warning"] == 1 and eng.stats["critical"] == 1


@pytest.mark.parametrize("reported", [True, False], ids=["speed+heading", "positions-only"])
def test_a_1_hz_crossing_is_warned_before_contact(reported: bool):
    """At 1 Hz a positions-only vehicle had no speed or heading (fewer than 3 fixes in the
    1.5 s fit window), so no alert ever came; its newest 3 fixes are fitted now."""
    values = crossing_traffic(n_background=5, hz=1.0)
    if not reported:
        values = [orjson.dumps({k: v for k, v in orjson.loads(m).items()
                                if k not in ("speed", "heading")}) for m in values]
    alerts, _ = run(values, None)
    decoded = [orjson.loads(v) for k, v in alerts if k == b"cross-a|cross-b"]
    assert decoded and decoded[0]["ts"] < T0 + 6.0 - 1.0


@pytest.mark.parametrize("cut", [1, 7, 64, 500])
def test_batch_boundaries_do_not_change_alerts(cut: int):
    values = crossing_traffic(seed=3, disorder_s=0.4, duplicates=0.05, late=0.01)
    whole, eng_whole = run(values, None)
    pieces, eng_cut = run(values, cut)
    assert whole  # the scenario does alert
    assert pieces == whole
    for key in ("accepted", "stale", "late", "future", "ticks"):
        assert eng_cut.stats[key] == eng_whole.stats[key], key
    assert eng_whole.stats["stale"] > 0 and eng_whole.stats["late"] > 0


def test_replay_speed_and_restart_do_not_change_ids():
    values = crossing_traffic(seed=1, disorder_s=0.2)
    a, _ = run(values, 50)
    b, _ = run(values, 333)
    ids_a = [orjson.loads(v)["alert_id"] for _, v in a]
    assert ids_a == [orjson.loads(v)["alert_id"] for _, v in b]
    assert len(set(ids_a)) == len(ids_a)


def _positions(rows: list[tuple[str, float, float]]) -> list[bytes]:
    return [_msg(v, t, x, 0.0, 1.0, 0.0) for v, t, x in rows]


def test_stale_late_and_future_drops_are_counted():
    m = Metrics()
    cfg = EngineConfig(allowed_lateness_s=0.5, max_future_s=30.0)
    eng = Engine(cfg, ConstantVelocity(SPEC), m)
    rows = [
        ("a", T0 + 0.0, 0.0),
        ("a", T0 + 0.1, 0.1),
        ("a", T0 + 0.1, 0.1),  # duplicate -> stale
        ("a", T0 + 0.05, 0.05),  # out of order for its vehicle -> stale
        ("b", T0 + 0.05, 5.0),  # other vehicle, within lateness -> accepted
        ("a", T0 + 2.0, 2.0),  # a jump: held until the next record judges it
        ("d", T0 + 2.0, 7.0),  # confirms it: both move the watermark to T0 + 1.5
        ("b", T0 + 0.3, 5.3),  # its tick is released -> late
        ("c", T0 + 1.95, 9.0),  # within lateness -> accepted
        ("c", FUTURE, 9.0),  # far ahead of the stream and the wall clock -> future
        ("a", T0 + 2.1, 2.1),
    ]
    eng.process(_batch(_positions(rows)))
    assert eng.stats["stale"] == 2
    assert eng.stats["late"] == 1
    assert eng.stats["future"] == 1
    assert eng.stats["accepted"] == 7
    dropped = m.positions_dropped
    assert dropped.labels(reason="stale")._value.get() == 2
    assert dropped.labels(reason="late")._value.get() == 1
    assert dropped.labels(reason="future")._value.get() == 1
    # the same records one per batch: same verdicts
    eng2 = Engine(cfg, ConstantVelocity(SPEC))
    for r in rows:
        eng2.process(_batch(_positions([r])))
    for key in ("stale", "late", "future", "accepted"):
        assert eng2.stats[key] == eng.stats[key]
    # a stream resuming after a long pause (still behind the wall clock) is not "future"
    eng.process(_batch(_positions([("d", T0 + 200.0, 0.0), ("e", T0 + 200.0, 0.0)])))
    assert eng.stats["future"] == 1 and eng.stats["accepted"] == 9


def test_stale_is_judged_against_earlier_batches_too():
    eng = Engine(EngineConfig(), ConstantVelocity(SPEC))
    eng.process(_batch(_positions([("a", T0 + 1.0, 0.0), ("b", T0 + 1.0, 0.0)])))
    eng.process(_batch(_positions([("a", T0 + 1.0, 0.0), ("a", T0 + 1.2, 0.0),
                                   ("b", T0 + 0.9, 0.0), ("b", T0 + 1.1, 0.0)])))
    assert eng.stats["stale"] == 2 and eng.stats["accepted"] == 4


def test_a_first_record_far_in_the_future_does_not_stall_the_stream():
    eng = Engine(EngineConfig(), ConstantVelocity(SPEC))
    rows = [("x", FUTURE, 0.0)] + [(f"v{i}", T0 + 0.1 * k, 0.0) for k in range(20)
                                     for i in range(3)]
    eng.process(_batch(_positions(rows)))
    assert eng.stats["future"] == 1
    assert eng.stats["late"] == 0 and eng.stats["accepted"] == 60


def test_pending_records_hold_back_the_commit_position():
    eng = Engine(EngineConfig(allowed_lateness_s=0.5), ConstantVelocity(SPEC))
    assert eng.min_pending_seq is None
    eng.process(_batch(_positions([("a", T0 + 0.01, 0.0), ("a", T0 + 0.03, 0.0)])), seq0=100)
    assert eng.min_pending_seq == 100  # nothing released yet (nothing past the tick)
    # a new vehicle's first fix waits for the tick after its own
    eng.process(_batch(_positions([("b", T0 + 0.45, 0.0)])), seq0=102)
    assert eng.min_pending_seq == 102  # ticks up to T0 + 0.4 released
    eng.flush()
    assert eng.min_pending_seq is None


def test_idle_vehicles_are_evicted_by_event_time():
    cfg = EngineConfig(ttl_s=5.0, reset_gap_s=2.0)
    rows = [("old", T0 + 0.1 * k, 0.1 * k) for k in range(10)]
    rows += [("new", T0 + 0.1 * k, 0.1 * k) for k in range(10, 120)]
    alerts, eng = run(_positions(rows), 13, cfg)
    assert eng.stats["evicted"] == 1
    assert "old" not in eng.store and "new" in eng.store
    # the freed slot is reused by the next new vehicle
    eng.process(_batch(_positions([("newer", T0 + 12.5, 0.0)])))
    eng.flush()
    assert eng.store.slot_of("newer") == 0


def test_long_gap_resets_the_vehicle():
    cfg = EngineConfig(reset_gap_s=2.0, ttl_s=30.0)
    rows = [("a", T0 + 0.1 * k, float(k)) for k in range(10)]
    rows += [("a", T0 + 5.0 + 0.1 * k, 500.0 + k) for k in range(10)]
    _, eng = run(_positions(rows), None, cfg)
    assert eng.store.resets == 1
    assert eng.store.since_ts[eng.store.slot_of("a")] == pytest.approx(T0 + 5.0)


class CountingPredictor:
    """Stateful stand-in: state counts steps; records the batch size of every call."""

    name = "count"
    state_dim = 1

    def __init__(self, spec: PathSpec) -> None:
        self.spec = spec
        self.calls: list[int] = []

    def step(self, kin: Kinematics, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(kin))
        assert np.all(state[kin.first] == 0.0)
        return constant_velocity_paths(kin, self.spec.offsets_s), state + 1.0


def test_predictor_runs_batched_once_per_substep_and_keeps_state():
    pred = CountingPredictor(SPEC)
    values = crossing_traffic(n_background=20, seconds=3.0)  # 22 vehicles x 31 fixes
    _, eng = run(values, 37, predictor=pred)
    ticks_with_data = eng.stats["ticks"]
    # 10 Hz fixes, 0.2 s ticks: two sub-steps per tick (the first tick holds one fix)
    assert len(pred.calls) <= 2 * ticks_with_data
    assert sum(pred.calls) == len(values)
    assert max(pred.calls) == 22
    slot = eng.store.slot_of("cross-a")
    assert eng.store.rec[slot, 0] == 31.0  # state carried through every fix


def test_stateless_predictor_skips_intermediate_fixes_and_predictions_are_emitted():
    cfg = EngineConfig(emit_predictions=True)
    eng = Engine(cfg, ConstantVelocity(SPEC))
    values = crossing_traffic(n_background=0, seconds=2.0)
    out = eng.process(_batch(values))
    out.extend(eng.flush())
    msgs = [orjson.loads(v) for _, v in out.predictions]
    assert {m["vehicle_id"] for m in msgs} == {"cross-a", "cross-b"}
    # one prediction per vehicle per tick (11 ticks for 2 s of 10 Hz data starting on a tick)
    assert len(msgs) == 2 * eng.stats["ticks"]
    m = msgs[-1]
    assert m["model"] == "cv" and m["dt"] == 0.2 and len(m["points"]) == SPEC.points
    assert out.predictions[-1][0] == m["vehicle_id"].encode()


def test_online_error_is_reported_for_active_and_cv_models():
    m = Metrics()
    _, eng = run(crossing_traffic(seconds=8.0), 100, predictor=CountingPredictor(SPEC), metrics=m)
    means = eng.summary()["error_m"]
    assert set(means) == {(mod, h) for mod in ("count", "cv") for h in ("1", "2", "3", "4")}
    assert all(v < 1e-6 for v in means.values())  # straight lines at constant speed
    samples = m.registry.get_sample_value(
        "trajstream_prediction_error_meters_count", {"model": "cv", "horizon": "4"}
    )
    assert samples and samples > 0


def test_predictor_spec_must_match():
    from trajstream.errors import ConfigError

    with pytest.raises(ConfigError):
        Engine(EngineConfig(horizon_s=3.0), ConstantVelocity(SPEC))


def _partitioned(values: list[bytes], parts: int, chunk: int):
    """Consumer-like delivery: each partition's records in order, partitions in big chunks."""
    import zlib

    queues: list[list[bytes]] = [[] for _ in range(parts)]
    for v in values:
        vid = orjson.loads(v)["vehicle_id"]
        queues[zlib.crc32(vid.encode()) % parts].append(v)
    pos = [0] * parts
    while any(pos[p] < len(queues[p]) for p in range(parts)):
        for p in range(parts):
            got = queues[p][pos[p]: pos[p] + chunk]
            pos[p] += len(got)
            if got:
                left = {q for q in range(parts) if pos[q] < len(queues[q])}
                yield got, np.full(len(got), p, dtype=np.int64), left


def test_partitions_caught_up_at_different_speeds_hold_the_watermark():
    values = crossing_traffic(seed=6, n_background=40, seconds=10.0)
    expected, ordered = run(values, None)
    assert expected and ordered.stats["late"] == 0

    def drain(with_blocking: bool) -> tuple[list[bytes], Engine]:
        eng = Engine(EngineConfig(), ConstantVelocity(SPEC))
        out: list[bytes] = []
        seq = 0
        for vals, parts, left in _partitioned(values, 3, chunk=1500):  # ~5 s of one partition
            out += [v for _, v in eng.process(
                _batch(vals), seq, partitions=parts, blocking=left if with_blocking else None
            ).alerts]
            seq += len(vals)
        out += [v for _, v in eng.flush().alerts]
        return out, eng

    got, eng = drain(with_blocking=True)
    assert eng.stats["late"] == 0
    assert sorted(got) == sorted(v for _, v in expected)
    # without knowing which partitions still have records, the overtaken ones are dropped
    _, naive = drain(with_blocking=False)
    assert naive.stats["late"] > len(values) // 4


def test_a_partition_trailing_beyond_the_skew_limit_stops_holding(caplog):
    cfg = EngineConfig(max_partition_skew_s=5.0)
    eng = Engine(cfg, ConstantVelocity(SPEC))
    fast = _batch(_positions([("a", T0 + 0.1 * k, 0.0) for k in range(100)]))  # 10 s
    eng.process(fast, 0, partitions=np.zeros(100, np.int64), blocking={0, 1})
    assert len(eng.admission) == 100  # partition 1 not seen yet: everything waits
    slow = _batch(_positions([("b", T0 + 0.1 * k, 0.0) for k in range(5)]))
    with caplog.at_level("WARNING", logger="trajstream.stream.admission"):
        out = eng.process(slow, 100, partitions=np.ones(5, np.int64), blocking={0, 1})
    # partition 1 trails by ~9.6 s > 5 s: it no longer holds the watermark (its records are
    # late), and what partition 0 delivered is released
    assert eng.stats["late"] == 5
    assert len(eng.admission) < 20
    # said: in each dead letter, and once in the log naming the partition and the option
    assert all(d[2].endswith("its partition trails the stream by more than 5 s "
                             "(--max-partition-skew-s)") for d in out.dropped)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("input partition 1 trails the newest event "
                                                 "time by more than --max-partition-skew-s")
    with caplog.at_level("WARNING", logger="trajstream.stream.admission"):
        eng.process(_batch(_positions([("b", T0 + 0.6, 0.0)])), 105,
                    partitions=np.ones(1, np.int64), blocking={1})
    assert eng.stats["late"] == 6
    assert len(caplog.records) == 1  # once per partition


def test_a_vehicle_on_several_partitions_is_named_and_counted(caplog):
    """Producers that do not key by vehicle_id (or mix partitioners) spread a vehicle over
    partitions, and most of its fixes are then dropped stale: said per vehicle (five at
    most, then once that more are only counted), counted in the stats."""
    eng = Engine(EngineConfig(), ConstantVelocity(SPEC))
    ids = [f"v{k}" for k in range(8)]
    seq = 0
    with caplog.at_level("WARNING", logger="trajstream.stream.vehicles"):
        for step in range(40):  # each vehicle's fixes alternate between partitions 0 and 1
            rows = [(v, T0 + 0.1 * step, 10.0 * k + 1.4 * step) for k, v in enumerate(ids)]
            part = np.full(len(rows), step % 2, dtype=np.int64)
            eng.process(_batch(_positions(rows)), seq, partitions=part)
            seq += len(rows)
        eng.flush()
    said = [r.getMessage() for r in caplog.records]
    named = [m for m in said if "records on more than one input partition" in m]
    assert [m.split()[1] for m in named] == ids[:5], said
    assert sum("more vehicles with the same problem (partition)" in m for m in said) == 1
    assert eng.stats["moved_partition"] > 8


def test_a_flooding_sender_is_capped_per_event_time_bucket():
    pred = CountingPredictor(SPEC)
    eng = Engine(EngineConfig(min_fix_interval_s=0.02), pred)
    flood = [("spam", T0 + 0.001 * k, 0.01 * k) for k in range(1, 1001)]  # 1 kHz for 1 s
    normal = [("ok", T0 + 0.1 * k, 0.1 * k) for k in range(1, 11)]
    rows = sorted(flood + normal, key=lambda r: r[1])
    for i in range(0, len(rows), 97):
        eng.process(_batch(_positions(rows[i: i + 97])))
    eng.flush()
    assert 45 <= eng.stats["accepted"] - 10 <= 51  # one fix per 20 ms bucket for "spam"
    assert eng.stats["dense"] == 1000 - (eng.stats["accepted"] - 10)
    assert max(pred.calls) <= 2  # never more than the two vehicles per sub-step
    assert len(pred.calls) <= 5 * 11 + 1  # sub-steps per tick bounded by the cap


def test_release_on_evidence_changes_when_alerts_go_out_not_which():
    """Ordered input (disorder within tick_lateness_s): the same alerts whether ticks go out
    by the vehicles' cadence (the default), on evidence or by the watermark
    (tick_lateness_s = allowed_lateness_s is the watermark's release), each earlier than the
    next."""
    values = crossing_traffic(seed=2, disorder_s=0.04)

    def emitted(cfg: EngineConfig) -> tuple[list[bytes], list[float]]:
        eng = Engine(cfg, ConstantVelocity(SPEC))
        out: list[bytes] = []
        delays: list[float] = []
        newest = -math.inf
        for i in range(0, len(values), 16):
            batch = _batch(values[i: i + 16])
            newest = max(newest, float(batch.ts.max()))
            for _, v in eng.process(batch, seq0=i).alerts:
                out.append(v)
                delays.append(newest - orjson.loads(v)["ts"])
        out += [v for _, v in eng.flush().alerts]
        return out, delays

    early, early_delay = emitted(EngineConfig())
    evidence, evidence_delay = emitted(EngineConfig(release_on_cadence=False))
    late, late_delay = emitted(EngineConfig(tick_lateness_s=0.5, release_on_cadence=False))
    assert early and early == evidence == late
    assert max(early_delay) < min(evidence_delay)  # fixes every 0.1 s: one fix sooner
    assert max(evidence_delay) < 0.2 and min(late_delay) > 0.5



def test_the_risk_stage_knows_which_headings_are_placeholders():
    """A car standing since its first fix without a reported heading has heading 0 as a
    placeholder: the fleet the risk stage assesses says so (test_risk.py's stopped car never
    seen moving shows what that changes); once it moves, or reports one, it is known."""
    def pos(vid: str, t: float, x: float, **extra: float) -> bytes:
        return orjson.dumps({"vehicle_id": vid, "ts": round(t, 3), "x": x, "y": 0.0, **extra})

    values = []
    for k in range(20):
        t = T0 + 0.1 * k
        values += [pos("stopped", t, 0.0), pos("stopped-reporting", t, 50.0, heading=1.0),
                   pos("moving", t, 100.0 - 14.0 * 0.1 * k)]
    _, eng = run(values, 10)
    tick = eng.vehicles.predicted(T0 + 1.9)
    known = dict(zip(tick.ids.tolist(), tick.fleet.heading_known.tolist(), strict=True))
    assert known == {"stopped": False, "stopped-reporting": True, "moving": True}
