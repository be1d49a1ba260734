"""`trajstream simulate` and `trajstream replay` against a real broker, with both clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from trajstream.stream.kafka import Record, create_topics, make_consumer

REPO = Path(__file__).resolve().parents[2]
TRAJSTREAM = str(REPO / ".venv" / "bin" / "trajstream")
SCHEMA = {"vehicle_id": str, "ts": float, "x": float, "y": float, "speed": float,
          "heading": float}


def _run(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    return subprocess.run([TRAJSTREAM, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def _consume(bootstrap: str, client: str, topic: str, n: int,
             timeout_s: float = 60.0) -> list[Record]:
    """Every record of the topic, expecting exactly ``n``."""
    consumer = make_consumer(bootstrap, [topic], group=None, client=client)
    got: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            got.extend(consumer.poll(min(5000, n - len(got)), 0.5))
        assert len(got) == n, f"expected {n} records, got {len(got)}"
        assert consumer.poll(100, 1.0) == [], "more records than published"
    finally:
        consumer.close()
    return got


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def test_simulate_publishes_keyed_positions_and_collisions_happen(
    kafka_bootstrap: str, kafka_client: str, topic_name: str, tmp_path: Path
) -> None:
    create_topics(kafka_bootstrap, [topic_name], partitions=3, client=kafka_client)
    common = ["--vehicles", "120", "--duration", "45", "--seed", "2", "--reckless", "0.2",
              "--clean", "--no-pace"]
    truth = tmp_path / "truth.jsonl"
    res = _run("simulate", *common, "--bootstrap", kafka_bootstrap, "--topic", topic_name,
               "--kafka-client", kafka_client, "--truth", str(truth))
    assert res.returncode == 0, res.stderr
    assert "msg/s" not in res.stderr and "\r" not in res.stderr, "no progress line off a tty"
    reference = tmp_path / "positions.jsonl"  # the same run, to a file: same bytes
    res = _run("simulate", *common, "--out", str(reference))
    assert res.returncode == 0, res.stderr
    expected = reference.read_bytes().splitlines()

    got = _consume(kafka_bootstrap, kafka_client, topic_name, len(expected))
    assert Counter(r.value for r in got) == Counter(expected)
    last_ts: dict[bytes, float] = {}
    for r in got:
        rec = orjson.loads(r.value)
        assert r.key == rec["vehicle_id"].encode()
        assert set(rec) - {"length", "width"} == set(SCHEMA)
        assert all(_number(rec[k]) for k in SCHEMA if k != "vehicle_id")
        assert r.key is not None and rec["ts"] > last_ts.get(r.key, 0.0), "per-vehicle order"
        last_ts[r.key] = rec["ts"]
    events = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    collisions = [e for e in events if e["type"] == "collision"]
    assert len(collisions) >= 1, events
    ids = {r.key for r in got}
    assert all(e["vehicle_a"].encode() in ids and e["vehicle_b"].encode() in ids
               for e in events)


def test_replay_reads_back_identical_and_counts_malformed_lines(
    kafka_bootstrap: str, kafka_client: str, topic_name: str, tmp_path: Path
) -> None:
    recorded = tmp_path / "recorded.jsonl"
    res = _run("simulate", "--vehicles", "40", "--duration", "10", "--seed", "9", "--no-pace",
               "--late-fraction", "0.05", "--duplicate-fraction", "0.02", "--out",
               str(recorded))
    assert res.returncode == 0, res.stderr
    lines = recorded.read_bytes().splitlines()
    bad = [b"garbage", b'{"vehicle_id": "veh-1"}', b"[1,2,3]", b'{"ts": 1, "x": 2}']
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join(lines[:100] + bad[:2] + lines[100:] + bad[2:]) + b"\n")

    res = _run("replay", str(mixed), "--bootstrap", kafka_bootstrap, "--topic", topic_name,
               "--kafka-client", kafka_client, "--no-pace")
    assert res.returncode == 0, res.stderr
    assert f"published {len(lines)} messages" in res.stderr
    assert "skipped 4 malformed lines" in res.stderr

    got = _consume(kafka_bootstrap, kafka_client, topic_name, len(lines))
    assert [r.value for r in got] == lines, "one partition: same bytes, same order"
    assert [r.key for r in got] == [orjson.loads(v)["vehicle_id"].encode() for v in lines]


def test_replay_is_paced_by_event_time(kafka_bootstrap: str, topic_name: str,
                                       tmp_path: Path) -> None:
    path = tmp_path / "two-seconds.jsonl"
    path.write_bytes(b"".join(
        orjson.dumps({"vehicle_id": f"veh-{k % 3}", "ts": 1000.0 + k * 0.1, "x": k, "y": 0})
        + b"\n" for k in range(21)))
    # The producer stamps each record with its send time: their spread is the pacing, free of
    # the process start-up a loaded machine stretches.
    spreads = {}
    for mode, topic in (("--speed=2", topic_name), ("--no-pace", f"{topic_name}-unpaced")):
        res = _run("replay", str(path), "--bootstrap", kafka_bootstrap, "--topic", topic, mode)
        assert res.returncode == 0, res.stderr
        assert "published 21 messages" in res.stderr
        sent = [r.timestamp_ms for r in _consume(kafka_bootstrap, "confluent", topic, 21)]
        spreads[mode] = (max(sent) - min(sent)) / 1e3
    assert spreads["--speed=2"] >= 0.95, f"2 s of event time at --speed 2 span 1 s: {spreads}"
    assert spreads["--no-pace"] < 0.5, f"unpaced, the sends are not spread: {spreads}"


def test_simulate_to_stdout_stops_quietly_when_the_reader_does() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    proc = subprocess.Popen([TRAJSTREAM, "simulate", "--vehicles", "50", "--duration", "60",
                             "--no-pace", "--out", "-"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    _, err = proc.communicate(timeout=120)
    assert orjson.loads(first)["vehicle_id"].startswith("veh-")
    assert proc.returncode == 0 and err == b"", err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["simulate", "--vehicles", "-5", "--out", "-"], "--vehicles"),
        (["simulate", "--hz", "0", "--out", "-"], "--hz"),
        (["simulate", "--duration", "-1", "--out", "-"], "--duration"),
        (["simulate", "--reckless", "1.5", "--out", "-"], "--reckless"),
        (["simulate", "--duration", "1"], "--out FILE or --bootstrap"),
        (["simulate", "--out", "/nonexistent-dir/x.jsonl"], "cannot write"),
        (["simulate", "--drop-rate", "1", "--out", "-"], "--drop-rate"),
        (["replay", "/nonexistent-file.jsonl", "--bootstrap", "127.0.0.1:9"], "does not exist"),
        (["simulate", "--bootstrap", "127.0.0.1:{port}", "--kafka-timeout", "2"],
         "cannot reach Kafka"),
        (["replay", "{file}", "--bootstrap", "127.0.0.1:{port}", "--kafka-timeout", "2"],
         "cannot reach Kafka"),
    ],
)
def test_bad_input_is_one_clear_error_line(args: list[str], says: str, tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text('{"vehicle_id":"veh-1","ts":1.0,"x":0,"y":0}\n')
    port = str(_free_port())
    res = _run(*[a.replace("{port}", port).replace("{file}", str(file)) for a in args],
               timeout=60)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    error_lines = res.stderr.splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("trajstream: error:"), res.stderr
    assert says in error_lines[0], res.stderr
    assert res.stdout == ""


def test_endless_simulation_stops_cleanly_on_sigterm(kafka_bootstrap: str, topic_name: str,
                                                     tmp_path: Path) -> None:
    """`--duration 0` (as docker compose runs it) publishes in real time until SIGTERM, then
    flushes what it produced and exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    env.update(TRAJSTREAM_BOOTSTRAP=kafka_bootstrap, TRAJSTREAM_POSITIONS_TOPIC=topic_name,
               TRAJSTREAM_VEHICLES="30", TRAJSTREAM_DURATION="0")
    proc = subprocess.Popen([TRAJSTREAM, "simulate", "--clean"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        consumer = make_consumer(kafka_bootstrap, [topic_name], group=None)
        got: list[Record] = []
        deadline = time.monotonic() + 60
        while len(got) < 300 and time.monotonic() < deadline:  # 1 s of traffic
            got.extend(consumer.poll(1000, 0.5))
        assert len(got) >= 300, "an endless run should be publishing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    time.sleep(1.0)
    while batch := consumer.poll(5000, 1.0):
        got.extend(batch)
    consumer.close()
    ts = [orjson.loads(r.value)["ts"] for r in got]
    per_vehicle = Counter(r.key for r in got)
    assert len(per_vehicle) >= 30
    assert max(ts) - min(ts) < 30, "paced in real time, not as fast as possible"
