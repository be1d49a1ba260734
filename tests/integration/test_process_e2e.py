"""End to end on the real broker: simulator -> Kafka -> `trajstream process` -> alert topic.

Each test runs the real commands as subprocesses on its own topics. Figures (lead times,
alert rate) are printed; run with ``-s`` (or ``-rP``) to see them.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.cli import cli_cmd, cli_env, read_topic, trajstream
from trajstream.stream.groundtruth import match_collisions
from trajstream.stream.kafka import create_topics, make_consumer, make_producer

pytestmark = pytest.mark.slow

SIM = ["--vehicles", "150", "--duration", "90", "--seed", "7", "--reckless", "0.2"]
MIN_HISTORY_S = 3.0
# Collision-free traffic (seed 8): measured 10.7 alerts per vehicle-hour, 0.3 critical, with
# the shipped LSTM (trained with Peachtree 4 and the residual shrink) and a car standing
# beside the other's way needing a nominal contact (stream/risk.py); without that rule this
# LSTM gave 17-21 on seeds 9-11, the excess turns passing cars waiting at junctions. The
# LSTM's sigma does not change them (identical alerts at 0.1x and 5x). Confirming a conflict
# near contact at the next 0.1 s tick instead of the next whole-fleet assessment (0.2 s) took
# it from 12.9 to 15.0 (48 -> 56 alerts, critical unchanged): warnings for cars closing on a
# stopped one at junctions that a later assessment no longer sees. That is the price of
# alerting every conflict a tick earlier (README, "Warning quality").
MAX_ALERTS_PER_VEHICLE_HOUR = 18.0
MAX_CRITICAL_PER_VEHICLE_HOUR = 3.0
# a tick goes out with the first 10 Hz fix past it + tick_lateness_s (0.1 s), + a tick
RELEASE_DELAY_S = 0.1 + 0.1


def first_seen(path: Path) -> dict[str, float]:
    seen: dict[str, float] = {}
    for line in path.read_bytes().splitlines():
        d = orjson.loads(line)
        seen.setdefault(d["vehicle_id"], d["ts"])
    return seen


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The simulated run as files (the simulator is deterministic: the same options publish
    the same records to Kafka)."""
    d = tmp_path_factory.mktemp("sim")
    trajstream("simulate", *SIM, "--no-pace", "--out", str(d / "positions.jsonl"),
               "--truth", str(d / "truth.jsonl"))
    trajstream("process", "--input", str(d / "positions.jsonl"), "--alerts-out",
               str(d / "alerts.jsonl"), "--metrics-port", "0")
    return {"positions": d / "positions.jsonl", "truth": d / "truth.jsonl",
            "alerts": d / "alerts.jsonl", "dir": d}


def _describe_leads(report: Any) -> str:
    leads = sorted(report.leads_s)
    return ("lead times (s, alert event time to contact): "
            + ", ".join(f"{x:.1f}" for x in leads)
            + f"\n  counting the release delay ({RELEASE_DELAY_S:.1f} s): "
            + ", ".join(f"{x - RELEASE_DELAY_S:.1f}" for x in leads))


def test_every_collision_is_alerted_before_contact_through_kafka(
    kafka_bootstrap: str, new_topic: Callable[[str], str], recorded: dict[str, Path]
):
    positions, alerts = new_topic("positions"), new_topic("alerts")
    create_topics(kafka_bootstrap, [positions], partitions=3)
    trajstream("simulate", *SIM, "--no-pace", "--bootstrap", kafka_bootstrap,
               "--topic", positions)
    proc = trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
                      "--alerts-topic", alerts, "--group", new_topic("group"), "--until-end",
                      "--metrics-port", "0")
    got = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, alerts)]
    for r in got:
        assert r["schema"] == "trajstream.alert/v1"
    truth = [orjson.loads(x) for x in recorded["truth"].read_bytes().splitlines()]
    report = match_collisions(got, truth, first_seen(recorded["positions"]), MIN_HISTORY_S)
    print(f"\n[e2e] {len(got)} alerts; {report.describe()}\n  {_describe_leads(report)}")
    assert len(report.eligible) >= 5, "the scenario should contain collisions"
    assert not report.missed, (
        f"collisions not alerted before contact: {report.missed}\n{proc.stderr[-2000:]}")


def test_collision_free_traffic_alert_rate_is_bounded(tmp_path: Path):
    pos, truth, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl", tmp_path / "a.jsonl"
    trajstream("simulate", "--vehicles", "150", "--duration", "90", "--seed", "8",
               "--reckless", "0", "--no-pace", "--out", str(pos), "--truth", str(truth))
    events = [orjson.loads(x) for x in truth.read_bytes().splitlines()]
    assert not [e for e in events if e["type"] == "collision"]
    trajstream("process", "--input", str(pos), "--alerts-out", str(out), "--metrics-port", "0")
    alerts = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    n_pos = sum(1 for _ in pos.open("rb"))
    vehicle_hours = n_pos / 10.0 / 3600.0  # 10 Hz
    rate = len(alerts) / vehicle_hours
    critical = sum(a["severity"] == "critical" for a in alerts) / vehicle_hours
    print(f"\n[e2e] collision-free traffic: {len(alerts)} alerts in {vehicle_hours:.2f} "
          f"vehicle-hours = {rate:.1f} per vehicle-hour ({critical:.1f} critical)")
    assert rate <= MAX_ALERTS_PER_VEHICLE_HOUR
    assert critical <= MAX_CRITICAL_PER_VEHICLE_HOUR


def test_kafka_path_and_file_path_give_identical_alerts(
    kafka_bootstrap: str, new_topic: Callable[[str], str], recorded: dict[str, Path],
    kafka_client: str,
):
    positions, alerts = new_topic("positions"), new_topic("alerts")
    create_topics(kafka_bootstrap, [positions, alerts], partitions=1)
    trajstream("replay", str(recorded["positions"]), "--bootstrap", kafka_bootstrap,
               "--topic", positions, "--no-pace")
    trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
               "--alerts-topic", alerts, "--group", new_topic("group"), "--until-end",
               "--kafka-client", kafka_client, "--metrics-port", "0")
    via_kafka = [r.value for r in read_topic(kafka_bootstrap, alerts)]
    via_file = recorded["alerts"].read_bytes().splitlines()
    assert via_file
    assert via_kafka == via_file
    keys = [r.key for r in read_topic(kafka_bootstrap, alerts)]
    for k, v in zip(keys, via_kafka, strict=True):
        d = orjson.loads(v)
        assert k == f"{d['vehicle_a']}|{d['vehicle_b']}".encode()


BAD_RECORDS: list[tuple[bytes | None, bytes]] = [
    (b"veh-x", b"{not json"),
    (b"veh-x", b'{"vehicle_id": "veh-x", "ts": "soon", "x": 1, "y": 2}'),
    (b"veh-x", b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": NaN, "y": 2}'),
    (b"veh-1", b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": 1, "y": 2}'),  # key mismatch
    (b"", b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": 1, "y": 2}'),  # empty key
    (b"veh-x", b"\xff\xfe\xfd"),
    (b"veh-x", b'["an", "array"]'),
    (b"veh-x", b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": 1e12, "y": 2}'),
    (b"veh-x", b"x" * 5000),
]


def test_bad_input_is_dead_lettered_and_changes_no_alert(
    kafka_bootstrap: str, new_topic: Callable[[str], str], recorded: dict[str, Path]
):
    positions, alerts, dlq = new_topic("positions"), new_topic("alerts"), new_topic("dlq")
    create_topics(kafka_bootstrap, [positions, alerts, dlq], partitions=1)
    producer = make_producer(kafka_bootstrap)
    n_bad = n_future = 0
    future = time.time() + 3600 * 24 * 365
    for i, line in enumerate(recorded["positions"].read_bytes().splitlines()):
        producer.send(positions, line, orjson.loads(line)["vehicle_id"].encode())
        if i % 997 == 0:
            key, value = BAD_RECORDS[(i // 997) % len(BAD_RECORDS)]
            producer.send(positions, value, key)
            n_bad += 1
        if i % 20011 == 0:  # valid but a year ahead: dropped, never stalls the stream
            msg = orjson.dumps({"vehicle_id": "veh-clock", "ts": future, "x": 0.0, "y": 0.0})
            producer.send(positions, msg, b"veh-clock")
            n_future += 1
    producer.flush()
    producer.close()
    trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
               "--alerts-topic", alerts, "--dlq-topic", dlq, "--group", new_topic("group"),
               "--until-end", "--metrics-port", "0")
    assert [r.value for r in read_topic(kafka_bootstrap, alerts)] == \
        recorded["alerts"].read_bytes().splitlines()
    # Valid records dropped for their timing are dead-lettered too: the year-ahead ones as
    # "future", and the simulated traffic's own late messages as "late".
    letters = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, dlq)]
    timing = [d for d in letters if d["reason"] in ("late", "future", "ahead")]
    garbage = [d for d in letters if d["reason"] not in ("late", "future", "ahead")]
    assert len(garbage) == n_bad
    assert {d["reason"] for d in garbage} == {
        "not_json", "wrong_type", "not_finite", "key_mismatch", "empty_key", "not_object",
        "out_of_range", "oversized"}
    assert sum(d["reason"] == "future" for d in timing) == n_future
    for env in letters:
        assert env["topic"] == positions and env["detail"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_sigterm_finishes_cleanly_with_metrics_and_commits_what_is_done(
    kafka_bootstrap: str, new_topic: Callable[[str], str], recorded: dict[str, Path]
):
    positions, alerts, group = new_topic("positions"), new_topic("alerts"), new_topic("group")
    create_topics(kafka_bootstrap, [positions, alerts], partitions=1)
    trajstream("replay", str(recorded["positions"]), "--bootstrap", kafka_bootstrap,
               "--topic", positions, "--no-pace")
    n = sum(1 for _ in recorded["positions"].open("rb"))
    port = _free_port()
    proc = subprocess.Popen(
        cli_cmd("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
                "--alerts-topic", alerts, "--group", group, "--metrics-port", str(port),
                "--commit-interval-s", "0.2"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                m = _metrics(port)
            except OSError:
                continue
            if m.get("trajstream_positions_consumed_total", 0) >= n and \
                    m.get("trajstream_consumer_lag_records", -1) == 0:
                break
        else:
            raise AssertionError(f"processor did not catch up: {m}")
        assert m["trajstream_active_vehicles"] > 0
        assert [k for k in m if k.startswith("trajstream_build_info")
                and 'predictor="lstm"' in k and 'kafka_client="confluent"' in k]
        for model in ("lstm", "cv"):
            for h in ("1", "4"):
                key = f'trajstream_prediction_error_meters_count{{horizon="{h}",model="{model}"}}'
                assert m.get(key, 0) > 100, key
        assert m['trajstream_alerts_total{severity="warning"}'] > 0
        assert m["trajstream_event_time_lag_seconds"] > 0
        assert m["trajstream_assigned_partitions"] == 1  # the positions topic's one
        time.sleep(0.5)  # one more commit interval
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The group resumes after what was fully processed: near the end, never past it (the
    # last records were still held back for stragglers and will be read again).
    consumer = make_consumer(kafka_bootstrap, [positions], group=group)
    try:
        recs: list[Any] = []
        for _ in range(40):
            recs = consumer.poll(10, 0.5)
            if recs:
                break
    finally:
        consumer.close()
    assert recs, "nothing left to re-read: records held back were committed"
    resume = recs[0].offset
    assert n - 2000 < resume < n


@pytest.mark.parametrize("changelog", [[], ["--no-changelog"]], ids=["changelog", "none"])
def test_a_positions_topic_that_does_not_exist_is_created_with_a_warning(
    kafka_bootstrap: str, new_topic: Callable[[str], str], changelog: list[str]
):
    """A mistyped --positions-topic is created by the processor, which says so (a run that
    reads nothing would else look fine), also without a changelog, where the consumer's
    subscription alone would have had the broker create it silently."""
    positions = new_topic("typo")
    err = trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
                     "--group", new_topic("group"), "--alerts-topic", new_topic("alerts"),
                     *changelog, "--until-end", "--metrics-port", "0",
                     log_level="INFO").stderr
    assert f"positions topic {positions!r} did not exist at {kafka_bootstrap}: created it " \
           "with 1 partition" in err, err[-2000:]
    assert "done: 0 records" in err
