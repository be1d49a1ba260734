"""``--kafka-option`` (and $TRAJSTREAM_KAFKA_OPTIONS) on ``alerts``, ``simulate`` and
``replay``: parsed as ``process`` parses it, handed to every Kafka client the command makes
(the start-up wait's metadata probe, topic lookups and creation, the producer or consumer),
with the command's --kafka-client; a setting the client does not have is refused at
start-up in one line (exit 2). No broker: the adapter's functions are fakes here, except
where a setting is refused before any connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from trajstream import cli as top_cli
from trajstream.cli import main, parse_kafka_options
from trajstream.contracts import ALERTS_TOPIC
from trajstream.simulator import cli as sim_cli
from trajstream.stream import kafka

SASL = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512"}
FLAGS = ["--kafka-option", "security.protocol=SASL_SSL",
         "--kafka-option", "sasl.mechanisms=SCRAM-SHA-512"]
ENV = "security.protocol=SASL_SSL sasl.mechanisms=SCRAM-SHA-512"


@pytest.fixture(autouse=True)
def _no_trajstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRAJSTREAM_KAFKA_OPTIONS", "TRAJSTREAM_KAFKA_CLIENT", "TRAJSTREAM_BOOTSTRAP",
                 "TRAJSTREAM_ALERTS_TOPIC", "TRAJSTREAM_POSITIONS_TOPIC"):
        monkeypatch.delenv(name, raising=False)


def test_pairs_from_flags_and_the_variable() -> None:
    assert parse_kafka_options(("a=1", "b=x=y c=")) == {"a": "1", "b": "x=y", "c": ""}
    assert parse_kafka_options(("a=1", "a=2")) == {"a": "2"}
    assert parse_kafka_options(()) == {}


@pytest.mark.parametrize("bad", ["novalue", "=1"])
def test_a_malformed_pair_names_the_flag(bad: str) -> None:
    with pytest.raises(click.BadParameter, match=f"expected KEY=VALUE, got '{bad}'") as err:
        parse_kafka_options(("ok=1", bad), "--consumer-option")
    assert err.value.param_hint == "--consumer-option"


# --- simulate and replay ----------------------------------------------------------------

class _RecordingSink:
    made: list[dict[str, Any]] = []

    def __init__(self, bootstrap: str, topic: str, **kw: Any) -> None:
        self.made.append(kw)

    def write(self, messages: list[tuple[bytes, bytes]]) -> None:
        pass

    def close(self) -> None:
        pass


def _publish(command: str, tmp_path: Path, *args: str) -> list[str]:
    if command == "simulate":
        return ["simulate", "--vehicles", "2", "--duration", "0.2", "--no-pace",
                "--bootstrap", "127.0.0.1:9", *args]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"vehicle_id":"veh-1","ts":1.0,"x":0,"y":0}\n')
    return ["replay", str(src), "--no-pace", "--bootstrap", "127.0.0.1:9", *args]


@pytest.mark.parametrize("command", ["simulate", "replay"])
@pytest.mark.parametrize("via", ["flags", "env"])
def test_simulate_and_replay_hand_the_settings_to_their_kafka_sink(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, via: str) -> None:
    _RecordingSink.made = []
    monkeypatch.setattr(sim_cli, "KafkaSink", _RecordingSink)
    if via == "env":
        monkeypatch.setenv("TRAJSTREAM_KAFKA_OPTIONS", ENV)
    args = FLAGS if via == "flags" else []
    assert main(["--log-level", "ERROR", *_publish(command, tmp_path, "--kafka-client",
                                                   "kafka-python", *args)]) == 0
    assert _RecordingSink.made == [
        {"client": "kafka-python", "ready_timeout_s": 10.0, "config": SASL}]


@pytest.mark.parametrize("command", ["simulate", "replay"])
def test_simulate_and_replay_refuse_a_malformed_pair(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        command: str) -> None:
    monkeypatch.setattr(sim_cli, "KafkaSink", _RecordingSink)
    assert main(_publish(command, tmp_path, "--kafka-option", "security.protocol")) == 2
    assert "Invalid value for --kafka-option: expected KEY=VALUE, got 'security.protocol'" \
        in capsys.readouterr().err


class _Calls(dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]]):
    """The fake adapter functions' calls, by function name."""

    def fake(self, monkeypatch: pytest.MonkeyPatch, name: str, result: Any = None) -> None:
        def record(*args: Any, **kw: Any) -> Any:
            self.setdefault(name, []).append((args, kw))
            return result() if callable(result) else result

        monkeypatch.setattr(kafka, name, record)


def test_the_kafka_sink_gives_every_client_the_settings_and_the_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trajstream.simulator.publish import KafkaSink

    calls = _Calls()
    for name in ("check_settings", "wait_until_ready", "create_topics"):
        calls.fake(monkeypatch, name)
    calls.fake(monkeypatch, "make_producer", object())
    monkeypatch.setattr(kafka, "resolve_client", lambda name: name or "confluent")
    KafkaSink("h:9092", "pos", client="kafka-python", ready_timeout_s=3.0, config=SASL)
    assert calls == {
        "check_settings": [(("h:9092",), {"client": "kafka-python", "shared": SASL})],
        "wait_until_ready": [(("h:9092",), {"timeout_s": 3.0, "client": "kafka-python",
                                            "client_config": SASL})],
        "create_topics": [(("h:9092", ["pos"]), {"client": "kafka-python",
                                                 "client_config": SASL})],
        "make_producer": [(("h:9092",), {"client": "kafka-python", "shared": SASL})],
    }


# --- alerts -------------------------------------------------------------------------------

class _IdleConsumer:
    def assignment(self) -> list[tuple[str, int]]:
        return [("alerts", 0)]

    def poll(self, max_records: int, timeout_s: float) -> list[Any]:
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize("via", ["flags", "env"])
def test_alerts_hands_the_settings_and_its_client_to_every_kafka_call(
        monkeypatch: pytest.MonkeyPatch, via: str) -> None:
    calls = _Calls()
    for name in ("check_settings", "wait_until_ready"):
        calls.fake(monkeypatch, name)
    calls.fake(monkeypatch, "partition_count", 1)
    calls.fake(monkeypatch, "make_consumer", _IdleConsumer)
    monkeypatch.setattr(kafka, "resolve_client", lambda name: name or "confluent")
    if via == "env":
        monkeypatch.setenv("TRAJSTREAM_KAFKA_OPTIONS", ENV)
    args = FLAGS if via == "flags" else []
    assert main(["alerts", "--bootstrap", "h:9092", "--kafka-client", "kafka-python",
                 "--idle-timeout", "0.01", *args]) == 0
    committed = {"isolation.level": "read_committed"}
    assert calls["check_settings"] == [
        (("h:9092",), {"client": "kafka-python", "consumer": committed, "shared": SASL})]
    (_, wait), = calls["wait_until_ready"]
    assert (wait["client"], wait["client_config"]) == ("kafka-python", SASL)
    assert calls["partition_count"] == [
        (("h:9092", ALERTS_TOPIC), {"client": "kafka-python", "client_config": SASL})]
    (_, kw), = calls["make_consumer"]
    assert kw["client"] == "kafka-python" and kw["shared"] == SASL
    assert kw["config"] == committed


def test_alerts_refuses_a_malformed_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "--bootstrap", "127.0.0.1:1", "--kafka-option", "=x"]) == 2
    assert "Invalid value for --kafka-option: expected KEY=VALUE, got '=x'" \
        in capsys.readouterr().err


# --- a setting the client does not have: refused before any connection -------------------

_REFUSED = {
    "kafka-python": "trajstream: error: kafka-python has no setting 'no.such.setting' "
                    "(--kafka-option)",
    "confluent": "trajstream: error: invalid confluent-kafka consumer setting",
}


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
@pytest.mark.parametrize("command", ["alerts", "simulate", "replay"])
def test_a_setting_the_client_does_not_have_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, client: str) -> None:
    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    bad = ["--kafka-client", client, "--kafka-option", "no.such.setting=1"]
    args = (["alerts", "--bootstrap", "127.0.0.1:1", "--connect-timeout", "30", *bad]
            if command == "alerts" else _publish(command, tmp_path, "--kafka-timeout", "30",
                                                  *bad))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(_REFUSED[client]) and "no.such.setting" in err[0], err


def test_the_option_is_documented_with_the_variable() -> None:
    from trajstream.stream.alerts_cli import alerts

    for command in (alerts, sim_cli.simulate, sim_cli.replay):
        ctx = click.Context(command, info_name=command.name)
        text = command.get_help(ctx)
        assert "--kafka-option KEY=VALUE" in text and top_cli.KAFKA_OPTIONS_ENVVAR in text
