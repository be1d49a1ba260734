"""stream.deadletter: counts by reason in the registry, envelopes, rate-limited logging."""

from __future__ import annotations

import base64
import logging

import orjson
import pytest

from trajstream.stream.codec import CodecConfig, Rejection, decode_batch
from trajstream.stream.deadletter import RejectPolicy, envelope
from trajstream.stream.metrics import Metrics


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.flushes = 0
        self.closed = False

    def send(self, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, value))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rejected_count(m: Metrics, reason: str) -> float:
    value = m.registry.get_sample_value("trajstream_positions_rejected_total", {"reason": reason})
    assert value is not None
    return value


GOOD = orjson.dumps({"vehicle_id": "veh-1", "ts": 1764081000.0, "x": 1.0, "y": 2.0})


def batch_with_bad_records() -> tuple[list[bytes | None], list[bytes | None]]:
    keys: list[bytes | None] = [b"veh-1", b"k2", None, b"veh-1", b"", b"k6"]
    values: list[bytes | None] = [GOOD, b"not json", b"[1]", GOOD, GOOD, b"\xff\xfe{"]
    return keys, values


def test_counts_by_reason_in_registry() -> None:
    m = Metrics()
    policy = RejectPolicy(m, None)
    keys, values = batch_with_bad_records()
    batch, rej = decode_batch(keys, values, CodecConfig())
    assert len(batch) == 2
    policy.handle(rej, keys, values, "vehicle-positions")
    policy.handle(rej, keys, values, "vehicle-positions")
    assert rejected_count(m, "not_json") == 4
    assert rejected_count(m, "not_object") == 2
    assert rejected_count(m, "empty_key") == 2
    assert rejected_count(m, "wrong_type") == 0
    assert policy.total == 8


def test_dlq_envelope_contents() -> None:
    m = Metrics()
    sink = ListSink()
    policy = RejectPolicy(m, sink, wall_clock=lambda: 1764081234.5)
    keys, values = batch_with_bad_records()
    _, rej = decode_batch(keys, values, CodecConfig())
    policy.handle(rej, keys, values, "positions-in")
    assert [k for k, _ in sink.sent] == [b"k2", None, b"", b"k6"]
    envs = [orjson.loads(v) for _, v in sink.sent]
    assert [e["reason"] for e in envs] == ["not_json", "not_object", "empty_key", "not_json"]
    for e, r in zip(envs, rej, strict=True):
        assert e["detail"] == r.detail
        assert e["topic"] == "positions-in"
        assert e["ts_wall"] == 1764081234.5
        assert e["value_truncated"] is False
    assert envs[0]["key"] == "k2" and envs[0]["value"] == "not json"
    assert envs[0]["value_encoding"] == "utf-8"
    assert envs[1]["key"] is None and envs[1]["value"] == "[1]"
    assert envs[2]["key"] == "" and orjson.loads(envs[2]["value"])["vehicle_id"] == "veh-1"
    assert envs[3]["value_encoding"] == "base64"
    assert base64.b64decode(envs[3]["value"]) == b"\xff\xfe{"
    policy.flush()
    assert sink.flushes == 1
    policy.close()
    assert sink.closed


def test_keys_none_and_tombstone() -> None:
    sink = ListSink()
    policy = RejectPolicy(Metrics(), sink)
    values: list[bytes | None] = [None, b"{"]
    _, rej = decode_batch(None, values, CodecConfig())
    policy.handle(rej, None, values, "t")
    envs = [orjson.loads(v) for _, v in sink.sent]
    assert [k for k, _ in sink.sent] == [None, None]
    assert envs[0]["value"] is None and envs[0]["key"] is None
    assert envs[1]["value"] == "{"


def test_lossy_key_and_truncated_oversized_value() -> None:
    r = Rejection(0, "oversized", "too big")
    big = ("ä" * 100).encode()  # 200 bytes of 2-byte characters
    e = orjson.loads(envelope(r, b"\xffveh", big, "t", 1.0, max_value_bytes=51))
    assert e["key"] == "\ufffdveh"
    assert e["value_truncated"] is True and e["value_encoding"] == "utf-8"
    assert e["value"] == "ä" * 25  # cut at 51 bytes, back to a character boundary
    raw = bytes(range(128, 256)) * 4  # not UTF-8 anywhere
    e = orjson.loads(envelope(r, None, raw, "t", 1.0, max_value_bytes=100))
    assert e["value_encoding"] == "base64" and e["value_truncated"] is True
    assert base64.b64decode(e["value"]) == raw[:100]


def test_empty_rejections_do_nothing() -> None:
    sink = ListSink()
    m = Metrics()
    policy = RejectPolicy(m, sink)
    policy.handle([], [], [], "t")
    assert sink.sent == [] and policy.total == 0
    assert sum(rejected_count(m, r) for r in ("not_json", "oversized")) == 0


def test_logging_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    policy = RejectPolicy(Metrics(), None, log_interval_s=10.0, clock=clock)
    bad = [Rejection(0, "not_json", "boom")]
    caplog.set_level(logging.WARNING, logger="trajstream.stream.deadletter")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "trajstream.stream.deadletter"]

    policy.handle(bad, None, [b"x"], "t")  # the first one is reported at once
    assert len(lines()) == 1 and "not_json=1" in lines()[0] and "boom" in lines()[0]
    for _ in range(100):
        clock.t += 0.05
        policy.handle(bad, None, [b"x"], "t")
    assert len(lines()) == 1  # 5 s later: still one line
    clock.t += 5.1
    policy.handle([Rejection(0, "out_of_range", "far")], None, [b"x"], "t")
    assert len(lines()) == 2
    assert "101" in lines()[1] and "not_json=100" in lines()[1] and "out_of_range=1" in lines()[1]
    policy.handle(bad, None, [b"x"], "t")
    assert len(lines()) == 2
    policy.close()  # what is pending is reported on close
    assert len(lines()) == 3 and "not_json=1" in lines()[2]
    policy.close()  # nothing pending: no empty summary
    assert len(lines()) == 3


def test_dlq_failure_propagates() -> None:
    class Broken(ListSink):
        def send(self, key: bytes | None, value: bytes) -> None:
            raise OSError("dlq down")

    policy = RejectPolicy(Metrics(), Broken())
    with pytest.raises(OSError):
        policy.handle([Rejection(0, "not_json", "x")], None, [b"x"], "t")
