"""Choosing the Kafka client and checking its settings; no broker involved."""

from __future__ import annotations

import pytest

import trajstream.stream.kafka as sk
from trajstream.errors import ConfigError
from trajstream.stream.kafka._common import parse_bootstrap
from trajstream.stream.kafka._kafkapython import translate

# A port nothing listens on: constructors below must fail on settings before any I/O.
NOWHERE = "127.0.0.1:1"


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sk.CLIENT_ENVVAR, raising=False)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("confluent", "confluent"),
        ("confluent-kafka", "confluent"),
        ("Confluent_Kafka", "confluent"),
        ("kafka-python", "kafka-python"),
        (" KAFKA_PYTHON ", "kafka-python"),
    ],
)
def test_names_and_aliases(name: str, expected: str) -> None:
    assert sk.resolve_client(name) == expected


def test_none_prefers_confluent_when_importable() -> None:
    assert sk.resolve_client(None) == "confluent"
    assert sk.resolve_client("") == "confluent"


def test_none_falls_back_to_kafka_python_without_confluent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sk, "_importable", lambda client: client != "confluent")
    assert sk.resolve_client(None) == "kafka-python"
    with pytest.raises(ConfigError, match="pip install confluent-kafka"):
        sk.resolve_client("confluent")


def test_environment_variable_decides_when_no_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sk.CLIENT_ENVVAR, "kafka-python")
    assert sk.resolve_client(None) == "kafka-python"
    assert sk.resolve_client("confluent") == "confluent"  # an explicit name wins


@pytest.mark.parametrize("name", ["librdkafka", "aiokafka", "kafka python"])
def test_unknown_name_is_a_config_error_naming_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match="expected one of confluent, kafka-python") as info:
        sk.resolve_client(name)
    assert repr(name) in str(info.value)


def test_unknown_name_from_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(sk.CLIENT_ENVVAR, "java")
    with pytest.raises(ConfigError, match="'java'"):
        sk.resolve_client(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:9092", [("localhost", 9092)]),
        ("a:1, b:2", [("a", 1), ("b", 2)]),
        ("[::1]:9092", [("::1", 9092)]),
    ],
)
def test_parse_bootstrap(text: str, expected: list[tuple[str, int]]) -> None:
    assert parse_bootstrap(text) == expected


@pytest.mark.parametrize("text", ["", "localhost", ":9092", "host:port", "a:1,,b:2", "h:70000",
                                  "http://127.0.0.1:9092", "a:1,PLAINTEXT://b:2"])
def test_parse_bootstrap_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="bootstrap"):
        parse_bootstrap(text)


def test_a_bootstrap_with_a_scheme_says_to_drop_it() -> None:
    with pytest.raises(ConfigError, match="HOST:PORT without a scheme"):
        parse_bootstrap("http://127.0.0.1:9092")


def test_translate_dotted_names_renames_and_string_values() -> None:
    known = {"linger_ms": 0, "acks": 1, "enable_idempotence": False, "compression_type": None,
             "client_id": "x"}
    got = translate(
        {"linger.ms": "20", "acks": "all", "enable.idempotence": "true",
         "compression.codec": "gzip", "client.id": "me", "bootstrap.servers": "ignored:1"},
        known,
    )
    assert got == {"linger_ms": 20, "acks": "all", "enable_idempotence": True,
                   "compression_type": "gzip", "client_id": "me"}
    assert translate({"acks": "-1"}, known) == {"acks": -1}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"queue.buffering.max.kbytes": 10}, "client-specific"),
        ({"linger.ms": "soon"}, "integer"),
        ({"enable.idempotence": "yes"}, "true or false"),
    ],
)
def test_translate_rejects(config: dict[str, object], match: str) -> None:
    known = {"linger_ms": 0, "enable_idempotence": False}
    with pytest.raises(ConfigError, match=match):
        translate(config, known)


@pytest.mark.parametrize("client", sk.CLIENTS)
def test_unknown_setting_fails_at_start_up(client: str) -> None:
    with pytest.raises(ConfigError):
        sk.make_producer(NOWHERE, client=client, config={"no.such.setting": 1})
    with pytest.raises(ConfigError):
        sk.make_consumer(NOWHERE, ["t"], group="g", client=client,
                         config={"no.such.setting": 1})


def test_factories_check_their_arguments_before_connecting() -> None:
    with pytest.raises(ConfigError, match="bootstrap"):
        sk.make_producer("no-port")
    with pytest.raises(ConfigError, match="topics"):
        sk.make_consumer(NOWHERE, [], group=None)
    with pytest.raises(ConfigError, match="topics"):
        sk.make_consumer(NOWHERE, "positions", group=None)
    with pytest.raises(ConfigError, match="partitions"):
        sk.create_topics(NOWHERE, ["t"], partitions=0)


def test_kafka_python_routes_shared_settings_to_the_clients_that_have_them() -> None:
    """Finding 8: --kafka-option session.timeout.ms with kafka-python was refused because
    the producer has no such setting; shared settings now go where they apply."""
    from kafka import KafkaConsumer, KafkaProducer

    shared = {"session.timeout.ms": "6000", "linger.ms": "5", "security.protocol": "SSL"}
    consumer = translate({}, KafkaConsumer.DEFAULT_CONFIG, role="consumer", shared=shared)
    producer = translate({}, KafkaProducer.DEFAULT_CONFIG, role="producer", shared=shared)
    assert consumer == {"session_timeout_ms": 6000, "security_protocol": "SSL"}
    assert producer == {"linger_ms": 5, "security_protocol": "SSL"}
    with pytest.raises(ConfigError, match="no setting 'no.such.thing' \\(--kafka-option\\)"):
        translate({}, KafkaConsumer.DEFAULT_CONFIG, role="consumer",
                  shared={"no.such.thing": "1"})
    with pytest.raises(ConfigError, match="kafka-python producer has no setting "
                                          "'session.timeout.ms' \\(--producer-option\\)"):
        translate({"session.timeout.ms": "6000"}, KafkaProducer.DEFAULT_CONFIG,
                  role="producer")


@pytest.mark.parametrize("client", sk.CLIENTS)
def test_a_role_option_unknown_to_its_client_names_the_role(client: str) -> None:
    with pytest.raises(ConfigError, match="producer"):
        sk.make_producer(NOWHERE, client=client, config={"no.such.setting": 1})
    with pytest.raises(ConfigError, match="consumer"):
        sk.make_consumer(NOWHERE, ["t"], group="g", client=client,
                         config={"no.such.setting": 1})


def test_both_producers_keep_a_partitions_order_through_retries() -> None:
    """librdkafka retries without idempotence could put a retried first batch behind the
    next ones (a soak run had half its positions topic reordered, then dropped as late);
    kafka-python is idempotent by default, the confluent producer is made so."""
    from kafka import KafkaProducer

    from trajstream.stream.kafka import _confluent, _kafkapython

    assert _confluent._PRODUCER_DEFAULTS["enable.idempotence"] is True
    conf = {**KafkaProducer.DEFAULT_CONFIG, **_kafkapython._PRODUCER_DEFAULTS}
    assert conf["enable_idempotence"] is True


@pytest.mark.parametrize("client", sk.CLIENTS)
def test_check_settings_refuses_what_the_client_refuses_without_a_broker(client: str) -> None:
    sk.check_settings(NOWHERE, client=client, consumer={"fetch.min.bytes": "1"},
                      producer={"linger.ms": "5"}, shared={"client.id": "x"})
    with pytest.raises(ConfigError, match="consumer"):
        sk.check_settings(NOWHERE, client=client, consumer={"no.such.setting": "1"})
    with pytest.raises(ConfigError, match="linger.ms|queue.buffering.max.ms"):
        sk.check_settings(NOWHERE, client=client, producer={"linger.ms": "abc"})


@pytest.mark.parametrize(("client", "name", "user_name"), [
    ("confluent", "topic.metadata.refresh.interval.ms", "topic.metadata.refresh.interval.ms"),
    ("kafka-python", "metadata_max_age_ms", "metadata.max.age.ms"),
])
def test_consumers_take_added_partitions_within_seconds_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, client: str, name: str, user_name: str
) -> None:
    """Both clients refresh a topic's metadata every 5 minutes by default, so partitions added
    to the positions topic were assigned only then (measured: 287 s, 53,172 positions
    behind). The consumers ask every 5 s; a setting of the user's wins."""
    from types import SimpleNamespace

    from trajstream.stream.kafka import _confluent, _kafkapython

    made: list[dict] = []

    def build(*args):
        made.append(args[1] if client == "confluent" else args[2])
        return SimpleNamespace(consume=None, subscribe=lambda *a, **kw: None)

    module = _confluent if client == "confluent" else _kafkapython
    monkeypatch.setattr(module, "_build", build)
    monkeypatch.setattr(_kafkapython, "install_fast_parser", lambda c: None)
    sk.make_consumer(NOWHERE, ["t"], group="g", client=client)
    sk.make_consumer(NOWHERE, ["t"], group="g", client=client, config={user_name: "300000"})
    sk.make_consumer(NOWHERE, ["t"], group="g", client=client, shared={user_name: "60000"})
    typed = int if client == "kafka-python" else str  # kafka-python's settings are typed
    assert [conf.get(name) for conf in made] == [5000, typed("300000"), typed("60000")]
