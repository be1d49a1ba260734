"""What the producers say when a send or a flush fails, with fake clients in place of the
libraries' producers: an unreachable broker keeps the advice to start one; a broker that
answers but does not take the messages is named with the client's account of the topics."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from kafka import errors as kerr
from kafka.future import Future

from trajstream.errors import KafkaUnavailable
from trajstream.stream.kafka import _confluent, _kafkapython
from trajstream.stream.kafka._common import not_acknowledged, not_served

BOOTSTRAP = "127.0.0.1:19999"


def test_only_a_broker_that_does_not_answer_gets_the_advice_to_start_one():
    down = not_acknowledged(BOOTSTRAP, "3 message(s) still undelivered after 10 s", False)
    assert str(down).startswith(f"cannot reach Kafka at {BOOTSTRAP} (3 message(s) still")
    assert "is the broker running?" in str(down)
    named = not_acknowledged(BOOTSTRAP, "3 message(s) still undelivered after 10 s", True,
                             "topic alerts: Broker: Topic authorization failed")
    assert str(named) == (f"Kafka at {BOOTSTRAP} answers but does not take the messages (3 "
                          f"message(s) still undelivered after 10 s): topic alerts: Broker: "
                          f"Topic authorization failed")
    unnamed = not_acknowledged(BOOTSTRAP, "3 message(s) still undelivered after 10 s", True)
    assert "answers but has not acknowledged" in str(unnamed)
    for exc in (named, unnamed):
        assert "cannot reach" not in str(exc) and "broker running" not in str(exc)
        assert exc.retriable  # retried until --max-stall-s, as before


def test_a_reader_says_the_same_of_a_topic_it_cannot_read():
    """The changelog read (read_to_end) as the producers: only a broker that does not
    answer gets the advice to start one."""
    why = "partition(s) 0 not read to the end within 60 s"
    down = not_served(BOOTSTRAP, "changelog g-changelog", why, False)
    assert str(down).startswith(f"cannot reach Kafka at {BOOTSTRAP} ({why}); is the broker")
    named = not_served(BOOTSTRAP, "changelog g-changelog", why, True,
                       "topic g-changelog partition(s) 0: no leader")
    assert str(named) == (f"Kafka at {BOOTSTRAP} answers but does not serve changelog "
                          f"g-changelog ({why}): topic g-changelog partition(s) 0: no leader")
    unnamed = not_served(BOOTSTRAP, "changelog g-changelog", why, True)
    assert str(unnamed).startswith(f"Kafka at {BOOTSTRAP} answers but has not served "
                                   f"changelog g-changelog ({why}), and names no cause")
    for exc in (named, unnamed):
        assert exc.retriable  # the restore retries, the processor's stall clock decides


# -- confluent-kafka -----------------------------------------------------------------------

class _Librdkafka:
    """A librdkafka producer whose messages are never acknowledged; ``metadata`` is what a
    metadata request returns (an exception: raised, the broker does not answer)."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata
        self.queued = 0

    def produce(self, topic: str, value: Any, key: Any = None, partition: int = -1) -> None:
        self.queued += 1

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return self.queued

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if isinstance(self.metadata, BaseException):
            raise self.metadata
        return self.metadata

    def __len__(self) -> int:
        return self.queued

    def purge(self) -> None:
        self.queued = 0

    def close(self) -> None:
        pass


def _topic(error: int | None = None, leaders: tuple[int, ...] = (1,)) -> Any:
    return SimpleNamespace(
        error=None if error is None else KafkaError(error),
        partitions={i: SimpleNamespace(id=i, leader=leader, error=None)
                    for i, leader in enumerate(leaders)})


def _confluent_producer(monkeypatch: pytest.MonkeyPatch, metadata: Any
                        ) -> _confluent.ConfluentProducer:
    monkeypatch.setattr(_confluent, "_build", lambda cls, conf, what: _Librdkafka(metadata))
    return _confluent.ConfluentProducer(BOOTSTRAP, {})


@pytest.mark.parametrize(("metadata", "says"), [
    (KafkaException(KafkaError(KafkaError._TRANSPORT)),
     f"cannot reach Kafka at {BOOTSTRAP} (1 message(s) still undelivered after 1 s); "
     f"is the broker running?"),
    (SimpleNamespace(topics={"alerts": _topic(KafkaError.TOPIC_AUTHORIZATION_FAILED)}),
     f"Kafka at {BOOTSTRAP} answers but does not take the messages (1 message(s) still "
     f"undelivered after 1 s): topic alerts: Broker: Topic authorization failed"),
    (SimpleNamespace(topics={"alerts": _topic(KafkaError.UNKNOWN_TOPIC_OR_PART)}),
     "): topic alerts: Broker: Unknown topic or partition"),
    (SimpleNamespace(topics={"alerts": _topic(leaders=(1, -1, -1))}),
     "): topic alerts partition(s) 1, 2: no leader"),
    (SimpleNamespace(topics={"alerts": _topic()}),
     f"Kafka at {BOOTSTRAP} answers but has not acknowledged the messages (1 message(s) "
     f"still undelivered after 1 s), and names no cause"),
])
def test_confluent_flush_timeout_names_the_brokers_answer(monkeypatch, metadata, says):
    """Before: every flush that timed out said 'cannot reach Kafka ... is the broker
    running?', also when the broker answered and refused the topic."""
    producer = _confluent_producer(monkeypatch, metadata)
    producer.send("alerts", b"{}", b"a|b")
    with pytest.raises(KafkaUnavailable) as err:
        producer.flush(1.0)
    assert says in str(err.value)
    producer.close()


# -- kafka-python --------------------------------------------------------------------------

class _ClusterMetadata:
    """kafka-python's ClusterMetadata as the producer's probe reads it; ``answer`` settles
    the future of a metadata request (None: it never comes)."""

    def __init__(self, answer: BaseException | None | bool, partitions: dict[str, dict],
                 unauthorized: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.answer = answer
        self._partitions = partitions
        self.unauthorized_topics = set(unauthorized)

    def request_update(self) -> Future:
        fut = Future()
        if isinstance(self.answer, BaseException):
            fut.failure(self.answer)
        elif self.answer:
            fut.success(self)
        return fut

    def add_topic(self, topic: str) -> Future:
        """Track ``topic`` too (a request for its metadata)."""
        return self.request_update()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self._partitions[topic]) if topic in self._partitions else None

    def leader_for_partition(self, tp: Any) -> int | None:
        return self._partitions.get(tp.topic, {}).get(tp.partition)


class _KafkaPython:
    def __init__(self, metadata: _ClusterMetadata, send_raises: BaseException | None = None,
                 ) -> None:
        self._metadata = metadata
        self._sender = SimpleNamespace(wakeup=lambda: None)
        self.send_raises = send_raises

    def send(self, topic: str, value: Any = None, key: Any = None,
             partition: int | None = None) -> Any:
        if self.send_raises is not None:
            raise self.send_raises
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        raise kerr.KafkaTimeoutError("Timeout after waiting for 1 secs.")

    def close(self, timeout: float | None = None) -> None:
        pass


def _kafka_python_producer(monkeypatch: pytest.MonkeyPatch, client: _KafkaPython
                           ) -> _kafkapython.KafkaPythonProducer:
    monkeypatch.setattr(_kafkapython, "_build", lambda cls, bootstrap, conf: client)
    return _kafkapython.KafkaPythonProducer(BOOTSTRAP, {})


@pytest.mark.parametrize(("metadata", "says"), [
    (_ClusterMetadata(kerr.NodeNotReadyError("metadata"), {}),
     f"cannot reach Kafka at {BOOTSTRAP} (messages still undelivered after 1 s); is the "
     f"broker running?"),
    (_ClusterMetadata(True, {"alerts": {0: 1}}, unauthorized={"alerts"}),
     f"Kafka at {BOOTSTRAP} answers but does not take the messages (messages still "
     f"undelivered after 1 s): topic alerts: not authorized"),
    (_ClusterMetadata(kerr.UnknownTopicOrPartitionError("alerts"), {}),
     "): topic alerts: not in the broker's metadata (UnknownTopicOrPartitionError)"),
    (_ClusterMetadata(True, {"alerts": {0: 1, 1: -1}}),
     "): topic alerts partition(s) 1: no leader"),
    (_ClusterMetadata(True, {"alerts": {0: 1}}),
     f"Kafka at {BOOTSTRAP} answers but has not acknowledged the messages (messages still "
     f"undelivered after 1 s), and names no cause"),
])
def test_kafka_python_flush_timeout_names_the_brokers_answer(monkeypatch, metadata, says):
    producer = _kafka_python_producer(monkeypatch, _KafkaPython(metadata))
    producer.send("alerts", b"{}", b"a|b")
    with pytest.raises(KafkaUnavailable) as err:
        producer.flush(1.0)
    assert says in str(err.value)


def test_kafka_python_send_blocked_on_a_topic_the_broker_refuses_names_it(monkeypatch):
    """kafka-python waits in send() for the metadata of a topic the broker will not create,
    then raises KafkaTimeoutError: that was 'cannot reach Kafka'."""
    blocked = kerr.KafkaTimeoutError("Failed to update metadata after 30.0 secs.")
    producer = _kafka_python_producer(monkeypatch, _KafkaPython(
        _ClusterMetadata(kerr.UnknownTopicOrPartitionError("coll.alerts"), {}), blocked))
    with pytest.raises(KafkaUnavailable) as err:
        producer.send("coll.alerts", b"{}", b"a|b")
    assert str(err.value) == (
        f"Kafka at {BOOTSTRAP} answers but does not take the messages (send to coll.alerts "
        f"blocked too long: KafkaTimeoutError: Failed to update metadata after 30.0 secs.): "
        f"topic coll.alerts: not in the broker's metadata (UnknownTopicOrPartitionError)")


@pytest.mark.parametrize(("raised", "says"), [
    (ValueError("Unrecognized partition 5 for topic alerts"),
     "cannot send to alerts: Unrecognized partition 5 for topic alerts"),
    (ValueError('Topic name "bad name!" is illegal'),
     'cannot send to alerts: Topic name "bad name!" is illegal'),
    (AssertionError("Cannot write transactional messages without a valid producer ID"),
     "cannot send to alerts: Cannot write transactional messages without a valid producer ID"),
    (AssertionError(), "cannot send to alerts: AssertionError"),
])
def test_kafka_python_send_turns_its_bare_value_and_assertion_errors_into_ours(
        monkeypatch, raised, says):
    """kafka-python checks a send against its metadata and state with bare ValueErrors and
    asserts, not KafkaErrors: they went past the adapter, and the processor ended in a
    traceback where confluent-kafka's run said 'could not be delivered ... Unknown
    partition' in one line."""
    producer = _kafka_python_producer(monkeypatch, _KafkaPython(
        _ClusterMetadata(True, {"alerts": {0: 1}}), raised))
    with pytest.raises(KafkaUnavailable) as err:
        producer.send("alerts", b"{}", b"a|b", partition=5)
    assert str(err.value) == says
    assert err.value.__cause__ is raised


def _created(topic: str, code: int, message: str | None) -> dict:
    return {"topics": [{"name": topic, "topic_id": None, "error_code": code,
                        "error_message": message, "num_partitions": -1}]}


def test_kafka_python_topic_creation_says_the_brokers_refusal_in_its_own_words():
    """kafka-python raises a refused CreateTopics with the whole request and response as its
    text: the one-line error ran to 600 characters of protocol dump ('Request
    'CreateTopicsRequest(version=7, topics=[CreatableTopic(...' failed with response ...)."""
    from trajstream.errors import ConfigError
    from trajstream.stream.kafka._kafkapython import _create_refusal

    collides = "Topic 'coll.alerts' collides with existing topic: coll_alerts"
    refused = _create_refusal("coll.alerts", _created("coll.alerts", 17, collides))
    assert isinstance(refused, ConfigError)
    assert str(refused) == f"cannot create topic 'coll.alerts': {collides} (InvalidTopicError)"
    denied = _create_refusal("alerts", _created("alerts", 29, None))
    assert type(denied) is KafkaUnavailable
    assert str(denied) == ("cannot create topic 'alerts': TOPIC_AUTHORIZATION_FAILED "
                           "(TopicAuthorizationFailedError)")
    assert _create_refusal("a", _created("a", 36, "exists")) is kerr.TopicAlreadyExistsError
    assert _create_refusal("a", _created("a", 0, None)) is None


def _grown(topic: str, code: int, message: str | None) -> dict:
    return {"throttle_time_ms": 0,
            "results": [{"name": topic, "error_code": code, "error_message": message}]}


class _Admin:
    """kafka-python's admin client as grow_topic uses it: ``counts`` the partitions it
    describes (the second after a CreatePartitions request), ``answer`` that request's."""

    def __init__(self, counts: list[int], answer: dict) -> None:
        self.counts, self.answer = counts, answer

    def list_topics(self) -> list[str]:
        return ["cl"]

    def describe_topics(self, topics: list[str]) -> list[dict]:
        n = self.counts[0] if len(self.counts) == 1 else self.counts.pop(0)
        return [{"name": "cl", "error_code": 0, "partitions": [{}] * n}]

    def create_partitions(self, topic_partitions: dict, timeout_ms: int = 0,
                          raise_errors: bool = True) -> Any:
        return SimpleNamespace(to_dict=lambda: self.answer)

    def close(self) -> None:
        pass


def test_kafka_python_adding_partitions_says_the_brokers_refusal_in_its_own_words(monkeypatch):
    """As topic creation: a refused CreatePartitions was kafka-python's whole request and
    response ('[Error 3] UnknownTopicOrPartitionError: Request 'CreatePartitionsRequest(
    version=3, topics=[...' failed with response ...', 430 characters), and a refused count
    was taken for a topic grown meanwhile and waited for 15 s."""
    from trajstream.errors import ConfigError

    unknown = _kafkapython._grow_refusal("cl", _grown("cl", 3, None))
    assert type(unknown) is KafkaUnavailable
    assert str(unknown) == ("cannot add partitions to 'cl': UNKNOWN_TOPIC_OR_PARTITION "
                            "(UnknownTopicOrPartitionError)")
    no_increase = "The topic cl currently has 3 partition(s); 2 would not be an increase."
    refused = _kafkapython._grow_refusal("cl", _grown("cl", 37, no_increase))
    assert isinstance(refused, ConfigError)
    assert str(refused) == f"cannot add partitions to 'cl': {no_increase} (InvalidPartitionsError)"
    assert _kafkapython._grow_refusal("cl", _grown("cl", 0, None)) is None

    def grow(counts: list[int], answer: dict) -> int:
        monkeypatch.setattr(_kafkapython, "_admin", lambda *a: _Admin(counts, answer))
        return _kafkapython.grow_topic(BOOTSTRAP, "cl", 3)

    assert grow([1, 3], _grown("cl", 0, None)) == 3
    assert grow([1, 3], _grown("cl", 37, no_increase)) == 3  # grown by another client
    with pytest.raises(ConfigError, match=r"^cannot add partitions to 'cl': The topic"):
        grow([1], _grown("cl", 37, no_increase))  # refused, and not grown
    with pytest.raises(KafkaUnavailable) as err:
        grow([1], _grown("cl", 29, None))
    assert str(err.value) == ("cannot add partitions to 'cl': TOPIC_AUTHORIZATION_FAILED "
                              "(TopicAuthorizationFailedError)")


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
@pytest.mark.parametrize("answers", [True, False])
def test_waiting_for_partitions_the_broker_does_not_have_says_whether_it_answers(
        monkeypatch, client, answers):
    """A producer waiting for a grown topic's partitions said 'cannot reach Kafka ...; is the
    broker running?' also when the broker answered, with fewer partitions."""
    if client == "confluent":
        producer: Any = _confluent_producer(monkeypatch, SimpleNamespace(
            topics={"cl": _topic(leaders=(1,))}) if answers
            else KafkaException(KafkaError(KafkaError._TRANSPORT)))
    else:
        producer = _kafka_python_producer(monkeypatch, _KafkaPython(_ClusterMetadata(
            True if answers else kerr.NodeNotReadyError("metadata"),
            {"cl": {0: 1}} if answers else {})))
    with pytest.raises(KafkaUnavailable) as err:
        producer.await_partitions("cl", 3, timeout_s=0.2)
    if answers:
        assert str(err.value) == (f"Kafka at {BOOTSTRAP} answers, but topic cl has 1 "
                                  f"partition(s), not 3, after 0.2 s")
    else:
        assert str(err.value).startswith(f"cannot reach Kafka at {BOOTSTRAP} (")
        assert "is the broker running?" in str(err.value)
