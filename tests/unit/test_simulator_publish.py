"""Pacing, progress, JSONL sink and the replay reader (no broker)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from trajstream.errors import ConfigError, TrajstreamError
from trajstream.simulator.publish import JsonlSink, Pacer, Progress, ReplayFile


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_pacer_follows_event_time_at_the_given_speed() -> None:
    clock = FakeClock()
    pacer = Pacer(speed=2.0, clock=clock, sleep=clock.sleep)
    pacer.wait(1000.0)  # first event: no wait
    pacer.wait(1001.0)  # 1 s of event time at 2x = 0.5 s
    assert clock.slept == [pytest.approx(0.5)]
    clock.now += 3.0  # we fell behind: no sleeping to catch up, no burst either
    pacer.wait(1002.0)
    pacer.wait(1000.5)  # a late record: at once
    assert len(clock.slept) == 1
    pacer.wait(1010.0)  # due at 100 + 5.0; now is 103.5
    assert clock.slept[-1] == pytest.approx(1.5)


def test_pacer_rejects_a_bad_speed() -> None:
    with pytest.raises(ConfigError):
        Pacer(speed=0.0)


def test_replay_file_skips_and_counts_malformed_lines(tmp_path: Path) -> None:
    good = [b'{"vehicle_id":"veh-1","ts":10.0,"x":1,"y":2}',
            b'{"vehicle_id": "veh-2", "ts": 10, "x": 1, "y": 2, "extra": [1]}',
            b'{"vehicle_id": 42, "ts": 11, "x": 1, "y": 2}']
    bad = [b'not json', b'[1, 2]', b'{"vehicle_id":"veh-3"}', b'{"vehicle_id":"","ts":1}',
           b'{"vehicle_id":5.0,"ts":1}', b'{"vehicle_id":true,"ts":1}',
           b'{"vehicle_id":"v","ts":"1"}',
           b'{"vehicle_id":"v","ts":true}', b'"a string"', b'{"vehicle_id":"v","ts":1e999}']
    path = tmp_path / "positions.jsonl"
    path.write_bytes(b"\n".join([good[0], *bad, b"", b"   ", good[1] + b"\r", good[2]]) + b"\n")
    records = ReplayFile(path)
    got = list(records)
    assert got == [(10.0, b"veh-1", good[0]), (10.0, b"veh-2", good[1]), (11.0, b"42", good[2])]
    assert records.malformed == len(bad)


def test_replay_file_missing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        list(ReplayFile(tmp_path / "nope.jsonl"))


def test_jsonl_sink_writes_values_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    sink.write([(b"a", b'{"a":1}'), (b"b", b'{"b":2}')])
    sink.write([])
    sink.close()
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'


def test_jsonl_sink_unwritable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        JsonlSink(tmp_path / "missing-dir" / "out.jsonl")


def test_progress_line_only_when_enabled() -> None:
    quiet = io.StringIO()
    p = Progress("simulate", stream=quiet, interval_s=0.0)
    p.update(10, vehicles=5)
    p.close()
    assert quiet.getvalue() == "" and p.messages == 10
    loud = io.StringIO()
    p = Progress("simulate", stream=loud, interval_s=0.0, enabled=True)
    p.update(10, vehicles=5, near_misses=2)
    assert loud.getvalue() == "", "the first batch only starts the rate clock"
    p.update(10, vehicles=5, near_misses=2)
    p.close()
    text = loud.getvalue()
    assert text.startswith("\rsimulate: 20 msgs") and "5 vehicles" in text
    assert "2 near misses" in text and text.endswith("\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_jsonl_sink_full_disk_is_one_error_not_a_traceback() -> None:
    sink = JsonlSink("/dev/full")
    with pytest.raises(TrajstreamError, match="cannot write /dev/full: No space left"):
        sink.write([(b"k", b"x" * 100_000)])
        sink.close()
