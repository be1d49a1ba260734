"""A shared Kafka with SASL/SCRAM over TLS: both clients connect with the README's options.

The throwaway broker gets a second listener, SASL_SSL with SCRAM-SHA-512 and a certificate
for 127.0.0.1 signed by a throwaway CA, and a user written into its KRaft metadata at format
time (`kafka-storage format --add-scram`). The
processor runs on that listener with the README's settings passed as `--kafka-option` (the
option every client role takes: consumer, producer, admin, changelog reader), once per
Kafka client, and gives the alerts of a file run; `simulate`, `replay` and `alerts` take the
same settings (flags or $TRAJSTREAM_KAFKA_OPTIONS); the wrong password is refused, with
confluent-kafka as such (not as an unreachable broker).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import _load_broker_module
from tests.integration.cli import cli_cmd, cli_env, read_topic, trajstream
from trajstream.stream.kafka import create_topics, make_producer

pytestmark = pytest.mark.slow

USER, PASSWORD = "trajstream", "s3cret-for-tests"
SIM = ["--vehicles", "40", "--duration", "20", "--seed", "11", "--reckless", "0.3"]


CA: list[str] = []  # the broker's CA certificate, once it has started


def _sasl(password: str = PASSWORD) -> dict[str, str]:
    """The README's settings for a shared Kafka with SASL/SCRAM over TLS."""
    return {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": USER, "sasl.password": password, "ssl.ca.location": CA[0]}


def _flags(conf: dict[str, str]) -> list[str]:
    return [a for k, v in conf.items() for a in ("--kafka-option", f"{k}={v}")]


def _publish(bootstrap: str, client: str, topic: str, path: Path) -> None:
    """Every line of ``path`` to ``topic`` (made with one partition), over SASL/SCRAM."""
    create_topics(bootstrap, [topic], partitions=1, client=client, client_config=_sasl())
    producer = make_producer(bootstrap, client=client, config=_sasl())
    for line in path.read_bytes().splitlines():
        producer.send(topic, line)
    producer.flush()
    producer.close()


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    mod = _load_broker_module()
    broker = mod.start_broker(mod.free_port(), mod.free_port(),
                              tmp_path_factory.mktemp("kafka-scram"), wait_s=90,
                              sasl_port=mod.free_port(), scram_users={USER: PASSWORD})
    CA[:] = [str(broker.ca_path)]
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("scram-sim")
    trajstream("simulate", *SIM, "--no-pace", "--out", str(d / "positions.jsonl"))
    trajstream("process", "--input", str(d / "positions.jsonl"), "--alerts-out",
               str(d / "alerts.jsonl"), "--predictor", "cv", "--metrics-port", "0")
    assert (d / "alerts.jsonl").read_bytes()
    return {"positions": d / "positions.jsonl", "alerts": d / "alerts.jsonl"}


def test_processor_runs_on_a_scram_listener_with_either_client(
        scram_broker: Any, recorded: dict[str, Path], new_topic: Callable[[str], str],
        kafka_client: str) -> None:
    bootstrap = scram_broker.sasl_bootstrap
    positions, alerts = new_topic("positions"), new_topic("alerts")
    create_topics(bootstrap, [alerts], partitions=1, client=kafka_client,
                  client_config=_sasl())
    _publish(bootstrap, kafka_client, positions, recorded["positions"])
    trajstream("process", "--bootstrap", bootstrap, "--positions-topic", positions,
               "--alerts-topic", alerts, "--group", new_topic("group"), "--until-end",
               "--predictor", "cv", "--kafka-client", kafka_client, "--metrics-port", "0",
               *_flags(_sasl()))
    got = [r.value for r in read_topic(bootstrap, alerts, client=kafka_client,
                                       config=_sasl())]
    assert got == recorded["alerts"].read_bytes().splitlines()


def test_simulate_replay_and_alerts_run_on_a_scram_listener_with_either_client(
        scram_broker: Any, recorded: dict[str, Path], new_topic: Callable[[str], str],
        kafka_client: str) -> None:
    """The commands besides `process` that talk to Kafka take the same settings: simulate
    (flags) and replay ($TRAJSTREAM_KAFKA_OPTIONS) publish there, alerts (flags) reads the
    alerts there; with the command's own client for the start-up wait too."""
    bootstrap = scram_broker.sasl_bootstrap
    simulated, replayed, alerts = (new_topic("sim"), new_topic("replay"),
                                   new_topic("alerts"))
    client = ["--kafka-client", kafka_client]
    trajstream("simulate", *SIM, "--no-pace", "--bootstrap", bootstrap, "--topic", simulated,
               "--kafka-timeout", "30", *client, *_flags(_sasl()))
    env = {**cli_env(), "TRAJSTREAM_KAFKA_OPTIONS": " ".join(
        f"{k}={v}" for k, v in _sasl().items())}
    proc = subprocess.run(cli_cmd("replay", str(recorded["positions"]), "--no-pace",
                                  "--bootstrap", bootstrap, "--topic", replayed,
                                  "--kafka-timeout", "30", *client),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    positions = recorded["positions"].read_bytes().splitlines()
    for topic in (simulated, replayed):
        got = [r.value for r in read_topic(bootstrap, topic, client=kafka_client,
                                           config=_sasl())]
        assert got == positions, topic

    _publish(bootstrap, kafka_client, alerts, recorded["alerts"])
    shown = trajstream("alerts", "--bootstrap", bootstrap, "--topic", alerts, "--json",
                       "--from-beginning", "--idle-timeout", "5", "--connect-timeout", "30",
                       *client, *_flags(_sasl()))
    want = [orjson.loads(line) for line in recorded["alerts"].read_bytes().splitlines()]
    assert [orjson.loads(line) for line in shown.stdout.splitlines()] == want


def test_a_wrong_password_is_refused_with_one_line(
        scram_broker: Any, new_topic: Callable[[str], str], kafka_client: str) -> None:
    proc = subprocess.run(
        cli_cmd("process", "--bootstrap", scram_broker.sasl_bootstrap, "--positions-topic",
                new_topic("positions"), "--alerts-topic", new_topic("alerts"), "--group",
                new_topic("group"), "--until-end", "--predictor", "cv", "--kafka-client",
                kafka_client, "--metrics-port", "0", "--max-stall-s", "15",
                *_flags(_sasl("wrong"))),
        env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("trajstream: error:"), proc.stderr[-3000:]
    if kafka_client == "confluent":  # librdkafka reports why; kafka-python only times out
        assert "refused the credentials" in last and "sasl.password" in last, last
    print(f"\n{kafka_client}: {last}")
