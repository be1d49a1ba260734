"""`trajstream alerts` against a real broker, run as the user runs it (a subprocess)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from trajstream.stream.alerts_cli import format_alert
from trajstream.stream.kafka import create_topics, make_producer, partition_count

REPO = Path(__file__).resolve().parents[2]
TRAJSTREAM = str(Path(sys.executable).parent / "trajstream")
TS0 = 1764081000.0  # 2025-11-25 14:30:00 UTC


def alert(i: int, severity: str = "warning") -> dict:
    a, b = f"veh-{i}", f"veh-{i + 100}"
    return {
        "schema": "trajstream.alert/v1",
        "alert_id": f"id-{i}",
        "vehicle_a": a,
        "vehicle_b": b,
        "severity": severity,
        "ts": TS0 + i * 1.25,
        "ttc": 0.5 + i,
        "min_distance": 0.25 * i,
        "closest_approach": {"ts": TS0 + i * 1.25 + 0.5 + i, "x": 10.0 * i, "y": -5.0 * i},
    }


def run_alerts(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    return subprocess.run(
        [TRAJSTREAM, "alerts", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=REPO,
    )


def publish(bootstrap: str, topic: str, alerts: list[dict]) -> None:
    create_topics(bootstrap, [topic])
    producer = make_producer(bootstrap)
    try:
        for a in alerts:
            producer.send(topic, orjson.dumps(a), key=f"{a['vehicle_a']}|{a['vehicle_b']}".encode())
        producer.flush()
    finally:
        producer.close()


@pytest.fixture
def published(kafka_bootstrap: str, new_topic: Callable[[str], str]) -> tuple[str, list[dict]]:
    topic = new_topic("alerts")
    alerts = [alert(1, "warning"), alert(2, "critical"), alert(3, "warning")]
    publish(kafka_bootstrap, topic, alerts)
    return topic, alerts


def test_readable_lines(
    kafka_bootstrap: str, published: tuple[str, list[dict]], kafka_client: str
) -> None:
    topic, alerts = published
    res = run_alerts(
        "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--idle-timeout", "3", "--kafka-client", kafka_client,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines == [format_alert(a, color=False) for a in alerts]
    assert "\x1b[" not in res.stdout  # no colour when stdout is not a terminal
    # spot-check the rendering itself, independent of format_alert
    assert lines[1].startswith("14:30:02.500 CRITICAL veh-2 <> veh-102")
    assert "ttc 2.5 s" in lines[1] and "min 0.5 m" in lines[1] and "(20.0, -10.0)" in lines[1]


def test_json_lines(kafka_bootstrap: str, published: tuple[str, list[dict]]) -> None:
    topic, alerts = published
    res = run_alerts(
        "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--idle-timeout", "3", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [orjson.loads(line) for line in res.stdout.splitlines()] == alerts


def test_envvars_and_non_alert_messages_skipped(
    kafka_bootstrap: str, new_topic: Callable[[str], str]
) -> None:
    topic = new_topic("alerts")
    publish(kafka_bootstrap, topic, [alert(1)])
    producer = make_producer(kafka_bootstrap)
    producer.send(topic, b"not json")
    producer.send(topic, orjson.dumps(alert(4, "critical")))
    producer.flush()
    producer.close()
    env = {
        "TRAJSTREAM_BOOTSTRAP": kafka_bootstrap,
        "TRAJSTREAM_ALERTS_TOPIC": topic,
        "TRAJSTREAM_ALERTS_FROM_BEGINNING": "1",
        "TRAJSTREAM_ALERTS_IDLE_TIMEOUT": "3",
        "TRAJSTREAM_ALERTS_JSON": "true",
    }
    res = subprocess.run(
        [TRAJSTREAM, "alerts"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    assert [orjson.loads(line)["alert_id"] for line in res.stdout.splitlines()] == ["id-1", "id-4"]
    assert "skipping a non-alert message" in res.stderr


def test_without_from_beginning_only_new_alerts(
    kafka_bootstrap: str, published: tuple[str, list[dict]]
) -> None:
    """Old alerts are skipped; alerts published while it runs are shown."""
    topic, old = published
    proc = subprocess.Popen(
        [TRAJSTREAM, "alerts", "--bootstrap", kafka_bootstrap, "--topic", topic,
         "--idle-timeout", "3", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")},
    )  # fmt: skip
    producer = make_producer(kafka_bootstrap)
    new_ids = []
    try:
        # Keep publishing until well past the time it takes to join the group.
        for i in range(10, 26):
            producer.send(topic, orjson.dumps(alert(i)))
            producer.flush()
            new_ids.append(f"id-{i}")
            time.sleep(0.5)
    finally:
        producer.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    seen = [orjson.loads(line)["alert_id"] for line in out.splitlines()]
    assert seen, "no alert published while running was shown"
    assert not {a["alert_id"] for a in old} & set(seen)
    assert seen == new_ids[-len(seen) :]  # a contiguous tail, ending with the last one


def test_read_committed_hides_aborted_alerts(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str
) -> None:
    from confluent_kafka import Producer

    topic = new_topic("alerts")
    create_topics(kafka_bootstrap, [topic])
    p = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic}-tx", "linger.ms": 0}
    )
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, orjson.dumps(alert(1)))
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, orjson.dumps(alert(2, "critical")))
    p.commit_transaction(30)
    res = run_alerts(
        "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--idle-timeout", "3", "--json", "--kafka-client", kafka_client,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [orjson.loads(line)["alert_id"] for line in res.stdout.splitlines()] == ["id-2"]


def test_unreachable_broker_one_error_line() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_alerts(
        "--bootstrap", f"127.0.0.1:{port}", "--topic", "x", "--connect-timeout", "1",
        timeout_s=30,
    )  # fmt: skip
    assert res.returncode != 0
    assert res.stdout == ""
    err = res.stderr.strip().splitlines()
    assert len(err) == 1, res.stderr
    assert err[0].startswith("trajstream: error:") and f"127.0.0.1:{port}" in err[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bootstrap", "no-port-here"], "bootstrap"),
        (["--idle-timeout", "0"], "--idle-timeout"),
        (["--kafka-client", "librdkafka2"], "--kafka-client"),
        (["--topic", " "], "--topic"),
    ],
)
def test_bad_options_one_clear_error(args: list[str], needle: str) -> None:
    res = run_alerts(*args, "--connect-timeout", "1", timeout_s=30)
    assert res.returncode != 0
    assert res.stdout == ""
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def position(i: int) -> dict:
    return {"vehicle_id": f"veh-{i % 7}", "ts": TS0 + i * 0.1, "x": 1.5 * i, "y": -2.0}


@pytest.mark.parametrize("as_json", [False, True])
def test_json_messages_that_are_not_alerts_are_skipped(
    kafka_bootstrap: str, new_topic: Callable[[str], str], as_json: bool
) -> None:
    """A positions topic followed by mistake: no junk line per fix, one note saying so."""
    topic = new_topic("positions")
    create_topics(kafka_bootstrap, [topic])
    producer = make_producer(kafka_bootstrap)
    messages = [alert(1), {"hello": "world"}, *map(position, range(50)), alert(2), [1, 2]]
    for m in messages:
        producer.send(topic, orjson.dumps(m))
    producer.flush()
    producer.close()
    res = run_alerts(
        "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
        "--idle-timeout", "3", *(["--json"] if as_json else []),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    wanted = [alert(1), alert(2)]
    if as_json:
        assert [orjson.loads(line) for line in res.stdout.splitlines()] == wanted
    else:
        assert res.stdout.splitlines() == [format_alert(a, color=False) for a in wanted]
    err = res.stderr.splitlines()
    assert err[0] == (f"trajstream: skipping a non-alert message at {topic}[0]@1 "
                      "(no vehicle_a, vehicle_b, severity, ts); any more are only counted")
    assert sum("looks like the positions topic" in line for line in err) == 1, res.stderr
    assert err[-1] == "trajstream: 2 alert(s), 52 non-alert message(s) skipped"
    assert len(err) == 4, res.stderr  # the first JSON one, the positions hint, [1, 2], count


class Lines:
    """What a child writes to ``fd`` (a pipe or a pty), read in a thread: wait for a line
    with a deadline instead of sleeping."""

    def __init__(self, fd: int) -> None:
        self.text = ""
        self._fd = fd
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:  # a pty whose child has gone: EIO
                return
            if not chunk:
                return
            self.text += chunk.decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.text:
            assert proc.poll() is None or self._thread.is_alive(), (
                f"ended before {text!r}:\n{self.text}")
            assert time.monotonic() < deadline, f"no {text!r} in {timeout_s} s:\n{self.text}"
            time.sleep(0.05)

    def rest(self, timeout_s: float = 10) -> str:
        self._thread.join(timeout_s)
        return self.text


def start_alerts(*args: str, tty_stderr: bool = False) -> tuple[subprocess.Popen[bytes],
                                                                Lines, Lines]:
    """``trajstream alerts`` running, with its stdout and stderr (a terminal if asked)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    err_r, err_w = pty.openpty() if tty_stderr else os.pipe()
    proc = subprocess.Popen([TRAJSTREAM, "alerts", *args], stdout=subprocess.PIPE,
                            stderr=err_w, env=env, cwd=REPO)
    os.close(err_w)
    assert proc.stdout is not None
    return proc, Lines(proc.stdout.fileno()), Lines(err_r)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_ends_it_cleanly_with_the_summary(
    kafka_bootstrap: str, published: tuple[str, list[dict]], sig: signal.Signals
) -> None:
    """Ctrl-C is how one stops following: exit 0 with the count, not "aborted", 130."""
    topic, alerts = published
    proc, out, err = start_alerts("--bootstrap", kafka_bootstrap, "--topic", topic,
                                  "--from-beginning", tty_stderr=True)
    try:
        err.wait_for(f"following {topic!r}", proc)
        out.wait_for(format_alert(alerts[-1], color=False), proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, err.rest()
    finally:
        proc.kill()
        proc.wait()
    assert err.rest().splitlines()[-1] == "trajstream: 3 alert(s)"
    assert "aborted" not in err.text


def test_a_missing_topic_is_one_line_then_waited_for(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str
) -> None:
    topic = new_topic("later")
    proc, out, err = start_alerts("--bootstrap", kafka_bootstrap, "--topic", topic,
                                  "--from-beginning", "--json", "--kafka-client", kafka_client)
    try:
        err.wait_for("waiting for it", proc)
        assert partition_count(kafka_bootstrap, topic) is None  # following creates nothing
        publish(kafka_bootstrap, topic, [alert(5)])
        out.wait_for('"alert_id":"id-5"', proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, err.rest()
    finally:
        proc.kill()
        proc.wait()
    assert err.rest().splitlines() == [
        f"trajstream: topic {topic!r} does not exist (yet) at {kafka_bootstrap}: waiting for it"]


def test_a_topic_that_never_comes_ends_the_idle_timeout_saying_so(
    kafka_bootstrap: str, new_topic: Callable[[str], str]
) -> None:
    topic = new_topic("never")
    res = run_alerts("--bootstrap", kafka_bootstrap, "--topic", topic, "--connect-timeout", "1",
                     "--idle-timeout", "1")
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr.splitlines()[-1] == (
        f"trajstream: topic {topic!r} still does not exist after 2 s (--connect-timeout + "
        "--idle-timeout)"), res.stderr
    assert partition_count(kafka_bootstrap, topic) is None
