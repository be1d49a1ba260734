"""The start-up wait for the broker (``stream.kafka.wait_until_ready``) asks for metadata with
the caller's client and its settings (security): on a SASL/TLS listener a probe without them
never gets an answer, and the default client is not the one the command was told to use."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from trajstream.stream import kafka
from trajstream.stream.kafka import _common

SASL = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512"}


def test_the_start_up_wait_probes_with_the_chosen_client_and_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[tuple[str, str, dict[str, Any]]] = []

    def probe(bootstrap: str, timeout_s: float, client: str, config: dict[str, Any]) -> bool:
        probes.append((bootstrap, client, config))
        return True

    monkeypatch.setattr(_common, "_metadata_ok", probe)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        bootstrap = f"127.0.0.1:{listening.getsockname()[1]}"
        kafka.wait_until_ready(bootstrap, timeout_s=5.0, client="kafka-python",
                               client_config=SASL)
    assert probes == [(bootstrap, "kafka-python", SASL)]


def test_the_kafka_python_probe_refuses_a_setting_it_does_not_have() -> None:
    from trajstream.errors import ConfigError
    from trajstream.stream.kafka._kafkapython import metadata_ok

    with pytest.raises(ConfigError, match="no setting 'no.such.setting'"):
        metadata_ok("127.0.0.1:1", 1.0, {"no.such.setting": "1"})


def test_the_confluent_probe_refuses_a_setting_it_does_not_have() -> None:
    pytest.importorskip("confluent_kafka")
    from trajstream.errors import ConfigError
    from trajstream.stream.kafka._confluent import metadata_ok

    with pytest.raises(ConfigError, match="no.such.setting"):
        metadata_ok("127.0.0.1:1", 1.0, {"no.such.setting": "1"})
