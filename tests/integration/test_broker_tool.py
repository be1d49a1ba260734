"""broker/broker.py: the test broker keeps its data over a restart; its CLI answers plainly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trajstream.stream.kafka import Record, make_consumer, make_producer

REPO = Path(__file__).resolve().parents[2]


def _read(bootstrap: str, topic: str, group: str, n: int) -> list[Record]:
    consumer = make_consumer(bootstrap, [topic], group=group)
    try:
        got: list[Record] = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            got.extend(consumer.poll(n - len(got), 0.5))
        if got:
            consumer.commit({(topic, 0): got[-1].offset + 1})
        return got
    finally:
        consumer.close()


def test_restart_keeps_port_topics_and_committed_offsets(
    kafka_broker: Any, topic_name: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    producer = make_producer(bootstrap)
    for i in range(10):
        producer.send(topic_name, f"m{i}".encode())
    producer.flush()
    producer.close()
    group = f"g-{topic_name}"
    assert [r.offset for r in _read(bootstrap, topic_name, group, 4)] == [0, 1, 2, 3]

    kafka_broker.restart()

    assert kafka_broker.bootstrap == bootstrap
    rest = _read(bootstrap, topic_name, group, 6)
    assert [r.value for r in rest] == [f"m{i}".encode() for i in range(4, 10)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "broker" / "broker.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_status_and_stop_without_a_broker(tmp_path: Path) -> None:
    status = _cli("status", "--dir", str(tmp_path))
    assert status.returncode == 1
    assert "not running" in status.stdout
    stop = _cli("stop", "--dir", str(tmp_path))
    assert stop.returncode == 0
    assert "no broker running" in stop.stdout


def test_cli_start_refuses_a_port_in_use(tmp_path: Path, kafka_broker: Any) -> None:
    start = _cli("start", "--dir", str(tmp_path), "--port", str(kafka_broker.port),
                 "--controller-port", str(kafka_broker.port))
    assert start.returncode == 1
    assert f"port {kafka_broker.port}" in start.stderr and "in use" in start.stderr
