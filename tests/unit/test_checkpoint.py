"""Checkpoints: an engine restored from a changelog at a commit point, fed the records after the
committed position again, produces exactly what an uninterrupted engine produces."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from trajstream.model.kinematics import Kinematics
from trajstream.model.predictors import ConstantVelocity, PathSpec
from trajstream.model.runtime import LstmPredictor
from trajstream.model.weights_io import LstmWeights, NetworkConfig, _expected_shapes
from trajstream.simulator import SimConfig, iter_ticks
from trajstream.stream import checkpoint as ck
from trajstream.stream.changelog import Changelog
from trajstream.stream.codec import CodecConfig, PositionBatch, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine

SPEC = PathSpec()


class Recurrent:
    """A stateful predictor: CV paths bent by a running state, so a lost or wrong state shows
    in every later path (stands in for the LSTM's h/c)."""

    name = "rec"
    state_dim = 3

    def __init__(self) -> None:
        self.spec = SPEC
        self._cv = ConstantVelocity(SPEC)

    def step(self, kin: Kinematics, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        paths, _ = self._cv.step(kin, np.zeros((len(kin), 0), np.float32))
        new = (0.9 * state + 0.1 * np.stack([kin.speed, kin.heading, kin.x % 7.0], axis=1)
               ).astype(np.float32)
        return paths + new[:, :1, None].astype(np.float64) * 0.01, new


@pytest.fixture(scope="module")
def traffic() -> list[tuple[bytes, bytes]]:
    cfg = SimConfig(vehicles=60, duration_s=30.0, seed=3, reckless_fraction=0.3, warmup_s=5.0)
    return [m for tick in iter_ticks(cfg) for m in tick.messages]


@pytest.fixture(scope="module")
def positions_only(traffic) -> list[tuple[bytes, bytes]]:
    """The same traffic without speed and heading: both derived from the fixes."""
    out = []
    for k, v in traffic:
        d = orjson.loads(v)
        d.pop("speed", None)
        d.pop("heading", None)
        out.append((k, orjson.dumps(d)))
    return out


def _engine() -> Engine:
    eng = Engine(EngineConfig(emit_predictions=True), Recurrent())
    eng.store.log_evictions = True
    return eng


def _run(eng: Engine, msgs: list[tuple[bytes, bytes]], start: int, stop: int, seq_base: int,
         batch: int, out: dict[str, list[bytes]]) -> None:
    codec = CodecConfig()
    for i in range(start, stop, batch):
        chunk = msgs[i:min(i + batch, stop)]
        b, rej = decode_batch([k for k, _ in chunk], [v for _, v in chunk], codec)
        assert not rej
        o = eng.process(b, seq_base + i, partitions=np.zeros(len(b), dtype=np.int64))
        out["alerts"] += [v for _, v in o.alerts]
        out["pred"] += [v for _, v in o.predictions]


class _Recorder:
    """Keeps what a producer would send, as (key, value, partition) in log order."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes | None, bytes | None, int]] = []

    def send(self, topic: str, value: bytes | None, key: bytes, partition: int) -> None:
        self.log.append((key, value, partition))


def _changelog(log: _Recorder, partitions: int = 3) -> Changelog:
    """The real changelog writer, on a topic in memory (a new one: a new process)."""
    return Changelog(log, "cl", bootstrap="-", client="-", partitions=partitions)


@pytest.mark.parametrize("feed", ["speed+heading", "positions only"])
@pytest.mark.parametrize("reuse", [False, True], ids=["restart", "rebalance"])
@pytest.mark.parametrize("cuts", [(3000,), (1500, 5200, 9000)])
def test_restored_engine_equals_uninterrupted(request, feed, cuts, reuse):
    """A restart (new engine) or an eager rebalance (the same engine, reset: every partition
    was revoked) restores from the changelog and re-reads from the committed position."""
    traffic = request.getfixturevalue("traffic" if feed == "speed+heading" else "positions_only")
    ref: dict[str, list[bytes]] = {"alerts": [], "pred": []}
    eng = _engine()
    _run(eng, traffic, 0, len(traffic), 0, 700, ref)
    ref_out = {"alerts": ref["alerts"] + [v for _, v in eng.flush().alerts], "pred": []}
    assert len(ref_out["alerts"]) >= 3

    got: dict[str, list[bytes]] = {"alerts": [], "pred": []}
    log = _Recorder()
    start, eng, changelog = 0, _engine(), _changelog(log)
    for cut in (*cuts, None):
        stop = len(traffic) if cut is None else cut
        _run(eng, traffic, start, stop, 0, 700, got)
        if cut is None:
            got["alerts"] += [v for _, v in eng.flush().alerts]
            break
        changelog.write(eng.checkpoint(), [0])
        pending = eng.min_pending_seq
        start = stop if pending is None else pending  # the committed position
        if reuse:
            eng.reset()  # all partitions revoked, then assigned again
            changelog.forget([0])
        else:  # crash: a new process restores from the changelog
            eng, changelog = _engine(), _changelog(log)
        # an empty poll before the partitions are assigned (Kafka) must not matter
        eng.process(PositionBatch.empty(), 0, partitions=np.zeros(0, dtype=np.int64),
                    blocking=set())
        eng.restore(*changelog.load(log.log, [0]))
    ids = lambda xs: sorted(orjson.loads(a)["alert_id"] for a in xs)  # noqa: E731
    assert ids(got["alerts"]) == ids(ref_out["alerts"])
    # Predictions after each restart equal the uninterrupted ones for the same (vehicle, ts).
    ref_p = {(d["vehicle_id"], d["ts"]): d["points"] for d in map(orjson.loads, ref["pred"])}
    n = 0
    for d in map(orjson.loads, got["pred"]):
        assert np.allclose(d["points"], ref_p[(d["vehicle_id"], d["ts"])], atol=1e-5, rtol=0)
        n += 1
    assert n >= len(ref_p)


def test_only_changes_are_written_and_evictions_are_tombstones(traffic):
    eng = Engine(EngineConfig(ttl_s=3.0, reset_gap_s=2.0), Recurrent())
    eng.store.log_evictions = True
    out: dict[str, list[bytes]] = {"alerts": [], "pred": []}
    _run(eng, traffic, 0, 4000, 0, 500, out)
    log = _Recorder()
    changelog = _changelog(log)
    first = eng.checkpoint()
    changelog.write(first, [0])
    assert len(first.vehicles) == len(eng.store)
    assert not eng.checkpoint().vehicles  # nothing changed since
    # silence: only one vehicle keeps sending, the others are evicted by TTL
    last = orjson.loads(traffic[3999][1])
    vid, t0 = last["vehicle_id"], last["ts"]
    codec = CodecConfig()
    for k in range(1, 60):
        msg = orjson.dumps({**last, "ts": t0 + 0.1 * k})
        b, _ = decode_batch([vid.encode()], [msg], codec)
        eng.process(b, 10_000 + k, partitions=np.zeros(1, dtype=np.int64))
    cp = eng.checkpoint()
    assert [v.vehicle_id for v in cp.vehicles] == [vid]
    gone = {v for v, _ in cp.tombstones}
    assert vid not in gone and gone >= {v.vehicle_id for v in first.vehicles} - {vid}
    changelog.write(cp, [0])
    vehicles, metas = ck.decode(log.log)
    assert [v.vehicle_id for v in vehicles] == [vid]
    assert metas[0]["done"] == eng.watermark_tick


def _lstm(units: int, seed: int) -> LstmPredictor:
    """An LSTM of random weights (own-track inputs)."""
    cfg = NetworkConfig(units=units)
    rng = np.random.default_rng(seed)
    ones = ("feat_std", "out_scale", "sigma_scale")
    return LstmPredictor(LstmWeights(config=cfg, **{
        n: (np.ones(shape) if n in ones else rng.normal(0.0, 0.3, shape)).astype(np.float32)
        for n, shape in _expected_shapes(cfg).items()}))


def _checkpointed(eng: Engine, traffic) -> tuple[list[ck.VehicleState], dict]:
    _run(eng, traffic, 0, 2000, 0, 500, {"alerts": [], "pred": []})
    log = _Recorder()
    _changelog(log).write(eng.checkpoint(), [0])
    return ck.decode(log.log)


@pytest.mark.parametrize(("units", "seed", "kept"), [(8, 1, True), (8, 2, False), (16, 1, False)],
                         ids=["same weights", "other weights", "other size"])
def test_state_written_by_other_weights_starts_over(traffic, caplog, units, seed, kept):
    """A processor restarted on retrained weights used to restore the old network's h/c into
    the new one when the sizes matched (silently), or stop when they did not. The
    checkpoint now names the model; another model's recurrent state starts over from zeros,
    the rest of the vehicle's state is kept."""
    vehicles, metas = _checkpointed(Engine(EngineConfig(), _lstm(8, 1)), traffic)
    old = np.stack([v.rec for v in vehicles])
    assert old.any()
    new = Engine(EngineConfig(), _lstm(units, seed))
    new.restore(vehicles, metas)
    slots = new.store.lookup([v.vehicle_id for v in vehicles])
    rec = new.store.rec[slots]
    assert rec.shape == (len(vehicles), 2 * units)
    assert np.array_equal(rec, old) if kept else not rec.any()
    assert ("starts over" in caplog.text) != kept
    np.testing.assert_array_equal(new.store.last_ts[slots], [v.row[0] for v in vehicles])


def test_restore_rejects_state_of_another_size_from_an_unnamed_model(traffic):
    """A checkpoint from before the model was named: its state is trusted only if it fits."""
    vehicles, metas = _checkpointed(_engine(), traffic)
    for m in metas.values():
        del m["model"]
    other = Engine(EngineConfig(), ConstantVelocity(SPEC))
    with pytest.raises(Exception, match="predictor state.*--weights"):
        other.restore(vehicles, metas)


def test_dropped_partitions_forget_state_and_buffer(traffic):
    eng = _engine()
    codec = CodecConfig()
    msgs = traffic[:3000]
    b, _ = decode_batch([k for k, _ in msgs], [v for _, v in msgs], codec)
    parts = np.array([hash(k) % 2 for k in b.vehicle_id], dtype=np.int64)
    eng.process(b, 0, partitions=parts)
    n = len(eng.store)
    assert n
    ids = eng.drop_partitions([1])
    assert ids and len(eng.store) == n - len(ids)
    assert not np.isin(eng.store.partition[eng.store.used], [1]).any()


def test_several_partitions_restored_at_once_keep_each_ones_meta(traffic):
    """Two owners checkpoint different partitions at different positions into one changelog;
    a member taking both over gets both metas back and starts at the earlier released tick
    (the later one would drop the other partition's re-read records as late)."""
    log = _Recorder()
    changelog = _changelog(log)
    ahead, behind = _engine(), _engine()
    _run(ahead, traffic, 0, 4000, 0, 500, {"alerts": [], "pred": []})
    _run(behind, traffic, 0, 2000, 0, 500, {"alerts": [], "pred": []})
    changelog.write(behind.checkpoint(), [0, 1])
    changelog.write(ahead.checkpoint(), [2])
    vehicles, metas = ck.decode(log.log)
    assert sorted(metas) == [0, 1, 2]
    assert metas[0]["done"] == metas[1]["done"] == behind.watermark_tick
    assert metas[2]["done"] == ahead.watermark_tick > behind.watermark_tick
    fresh = _engine()
    fresh.restore(vehicles, metas)
    assert fresh.watermark_tick == behind.watermark_tick


def test_meta_keys_cannot_collide_with_a_vehicle_id():
    row, rec = np.arange(4, dtype=np.float64), np.zeros(2, np.float32)
    recs = [
        (b"__meta__", _v1_record(ck.VehicleState("__meta__", 1, 0, row, rec)), 1),
        (ck.meta_key(1), ck.encode_meta({"done": 7, "part_max": {1: 3.0}}, 1), 1),
        (ck.meta_key(0), ck.encode_meta({"done": 5, "part_max": {}}, 0), 0),
    ]
    vehicles, metas = ck.decode(recs)
    assert [v.vehicle_id for v in vehicles] == ["__meta__"]
    assert {p: m["done"] for p, m in metas.items()} == {0: 5, 1: 7}
    with pytest.raises(UnicodeDecodeError):  # no vehicle id encodes to a meta key
        ck.meta_key(0).decode()


@pytest.mark.timeout(60)  # before the fix the restored engine walked ticks from -2**62
def test_a_partition_whose_owner_saw_no_record_does_not_hold_back_the_restore(traffic):
    """An owner assigned a partition it never got a record of (the watermark still waiting
    for it) writes no released tick for it, and a changelog from an older version that wrote
    the "no event time yet" tick is read as none. Restored together with a partition that
    has a position, the engine starts from the first record read again (the partition
    without a position has all its records still to release) and gives the uninterrupted
    alerts."""
    idle = _engine()
    idle.process(PositionBatch.empty(), 0, partitions=np.zeros(0, dtype=np.int64),
                 blocking={1})
    assert idle.admission.done is None and idle.checkpoint().meta["done"] is None

    ref: dict[str, list[bytes]] = {"alerts": [], "pred": []}
    eng = _engine()
    _run(eng, traffic, 0, len(traffic), 0, 700, ref)
    ref["alerts"] += [v for _, v in eng.flush().alerts]

    got: dict[str, list[bytes]] = {"alerts": [], "pred": []}
    eng = _engine()
    _run(eng, traffic, 0, 3000, 0, 700, got)
    cp = eng.checkpoint()
    start = eng.min_pending_seq
    assert start is not None
    recs: list[tuple[bytes | None, bytes | None, int]] = [
        (ck.shard_key(0, 1), ck.encode_shard(cp.vehicles), 0)]
    recs.append((ck.meta_key(0), ck.encode_meta(cp.meta, 0), 0))
    recs.append((ck.meta_key(1), ck.encode_meta(idle.checkpoint().meta, 1), 1))
    legacy = {**cp.meta, "done": -(2**62) - 1}
    recs.append((ck.meta_key(2), ck.encode_meta(legacy, 2), 2))
    eng = _engine()
    eng.restore(*ck.decode(recs))
    assert eng.admission.done is None
    _run(eng, traffic, start, len(traffic), 0, 700, got)
    got["alerts"] += [v for _, v in eng.flush().alerts]
    ids = lambda xs: sorted(orjson.loads(a)["alert_id"] for a in xs)  # noqa: E731
    assert ids(got["alerts"]) == ids(ref["alerts"]) and len(ref["alerts"]) >= 3


def test_a_partition_without_position_restored_with_one_ahead_loses_no_record(traffic):
    """Partition 1's previous owner released nothing of it; partition 0's got 20 s into the
    stream. Restored together, partition 1's records from the start are released, not
    dropped late behind partition 0's position."""
    codec = CodecConfig()
    part = {v: i % 2 for i, v in enumerate(sorted({orjson.loads(m)["vehicle_id"]
                                                    for _, m in traffic}))}
    rows = [(k, v, part[orjson.loads(v)["vehicle_id"]]) for k, v in traffic]
    ahead = _engine()
    p0 = [(k, v) for k, v, p in rows if p == 0]
    _run(ahead, p0, 0, len(p0) * 2 // 3, 0, 700, {"alerts": [], "pred": []})
    cp = ahead.checkpoint()
    assert cp.meta["done"] is not None
    recs: list[tuple[bytes | None, bytes | None, int]] = [
        (ck.shard_key(0, 1), ck.encode_shard(cp.vehicles), 0)]
    recs.append((ck.meta_key(0), ck.encode_meta(cp.meta, 0), 0))
    vehicles, metas = ck.decode(recs)
    eng = _engine()
    eng.restore(vehicles, {0: metas[0], 1: {}})
    assert eng.admission.done is None
    p1 = [(k, v) for k, v, p in rows if p == 1]
    b, _ = decode_batch([k for k, _ in p1], [v for _, v in p1], codec)
    alone = _engine()  # the same records without anything restored: the traffic's own
    for e in (eng, alone):
        e.process(b, 0, partitions=np.ones(len(b), dtype=np.int64), blocking=set())
        e.flush()
    assert eng.stats["late"] == alone.stats["late"] < len(p1) // 100
    assert eng.stats["accepted"] == alone.stats["accepted"]


def _v1_record(v: ck.VehicleState) -> bytes:
    """A vehicle's record as changelogs before the shards held it (one per vehicle)."""
    import base64

    b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()  # noqa: E731
    return orjson.dumps({"v": 1, "p": v.partition, "s": v.slot, "row": b64(v.row),
                         "rec": b64(v.rec.astype(np.float32)), "ep": v.episodes})


def _vehicle_rows(width: int, state: int, n: int = 40) -> ck.VehicleRows:
    rng = np.random.default_rng(width + state)
    rows = rng.normal(size=(n, width))
    rows[::7, 0], rows[::5, -1] = np.nan, -np.inf
    rec = rng.normal(size=(n, state)).astype(np.float32)
    ids = [f"v{i}" for i in range(n)]
    eps = {ids[i]: {"episodes": {"w": {"start": 1.5, "last": 2.0, "severity": "high"}},
                    "pending": {"z": {"last": 2.0, "count": 2}}} for i in range(0, n, 3)}
    return ck.VehicleRows(ids, [2] * n, [3 * i for i in range(n)], rows, rec, eps)


def _same(got: list[ck.VehicleState], vs: ck.VehicleRows) -> bool:
    return len(got) == len(vs) and all(
        b.vehicle_id == vs.ids[i] and b.slot == vs.slots[i] and b.partition == vs.partitions[i]
        and np.array_equal(b.row, vs.rows[i], equal_nan=True) and np.array_equal(b.rec, vs.rec[i])
        and b.episodes == vs.episodes.get(vs.ids[i]) for i, b in enumerate(got))


@pytest.mark.parametrize("width,state", [(105, 128), (1, 0), (2, 1), (3, 2), (107, 64)])
def test_a_shard_record_holds_its_vehicles_bit_for_bit(width, state):
    """Every row width, no recurrent state, non-finite values, episodes or none."""
    vs = _vehicle_rows(width, state)
    value = ck.encode_shard(vs)
    assert _same(ck.decode_shard(value, 2), vs)
    assert _same(ck.decode([(ck.shard_key(1, 4), value, 2)])[0], vs)
    with pytest.raises(ValueError):
        ck.decode_shard(value[:-1], 2)


def test_changelogs_of_a_record_per_vehicle_are_still_read():
    vs = _vehicle_rows(105, 128)
    back, _ = ck.decode([(v.vehicle_id.encode(), _v1_record(v), 2) for v in vs])
    assert _same(back, vs)


def test_a_changelog_counting_ticks_of_the_risk_interval_resumes_at_the_same_event_time():
    """Changelogs written before ``tick_s`` numbered ticks in ``risk_interval_s`` (0.2 s);
    the engine's ticks are 0.1 s: tick k then ends where tick 2k does now."""
    assert ck.restored_tick({}, 41, 0.1, 0.2) == 82
    assert ck.restored_tick({"tick_s": 0.1}, 41, 0.1, 0.2) == 41
    assert ck.restored_tick({"tick_s": 0.2}, 41, 0.2, 0.2) == 41
    k = 8_822_740_001  # a tick of 0.2 s in 2025 (float error must not lose one)
    assert ck.restored_tick({}, k, 0.1, 0.2) == 2 * k
    eng = Engine(EngineConfig(), ConstantVelocity(SPEC))
    meta = {"done": k, "late_upto": k - 2, "next_evict": 0.0, "newest": k * 0.2, "prev_t": None}
    eng.restore([], {0: meta})
    assert eng.admission.done == 2 * k
    assert eng.checkpoint().meta["tick_s"] == 0.1
