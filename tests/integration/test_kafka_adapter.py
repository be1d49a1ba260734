"""stream.kafka against a real broker, once per client (confluent-kafka and kafka-python)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from trajstream.errors import ConfigError, KafkaUnavailable
from trajstream.stream.kafka import (
    Consumer,
    Record,
    create_topics,
    grow_topic,
    make_consumer,
    make_producer,
    read_to_end,
    wait_until_ready,
)

OTHER = {"confluent": "kafka-python", "kafka-python": "confluent"}


def _poll_until(consumer: Consumer, n: int, timeout_s: float = 30.0) -> list[Record]:
    """Exactly ``n`` records (never more: later polls ask only for what is missing)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got.extend(consumer.poll(n - len(got), 0.5))
    assert len(got) == n, f"expected {n} records within {timeout_s} s, got {len(got)}"
    return got


def _produce(bootstrap: str, client: str, topic: str, n: int, *, start: int = 0) -> None:
    producer = make_producer(bootstrap, client=client)
    try:
        for i in range(start, start + n):
            producer.send(topic, f"value-{i}".encode(), key=f"veh-{i % 7}".encode())
        producer.flush(30.0)
    finally:
        producer.close()


def test_round_trip_with_keys(kafka_bootstrap: str, kafka_client: str, topic_name: str) -> None:
    create_topics(kafka_bootstrap, [topic_name], partitions=3, client=kafka_client)
    producer = make_producer(kafka_bootstrap, client=kafka_client)
    sent = {(f"veh-{i % 7}".encode(), f"value-{i}".encode()) for i in range(60)}
    before_ms = int(time.time() * 1000) - 60_000
    for key, value in sorted(sent, key=lambda kv: int(kv[1].split(b"-")[1])):
        producer.send(topic_name, value, key=key)
    producer.send(topic_name, b"no-key")
    producer.flush()
    producer.close()

    consumer = make_consumer(kafka_bootstrap, [topic_name], group=None, client=kafka_client)
    try:
        got = _poll_until(consumer, 61)
        assert consumer.poll(10, 0.5) == []
    finally:
        consumer.close()

    assert {(r.key, r.value) for r in got if r.key is not None} == sent
    assert [r.value for r in got if r.key is None] == [b"no-key"]
    assert {r.topic for r in got} == {topic_name}
    assert all(before_ms < r.timestamp_ms < before_ms + 120_000 for r in got)
    partition_of: dict[bytes | None, set[int]] = {}
    for r in got:
        partition_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partition_of.values()), "a key spread over partitions"
    for p in {r.partition for r in got}:  # offsets dense and ordered within a partition
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == list(range(len(offsets)))
        values = [int(r.value.split(b"-")[1]) for r in got if r.partition == p and r.key]
        assert values == sorted(values)


def test_both_clients_put_a_key_on_the_same_partition(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    create_topics(kafka_bootstrap, [topic_name], partitions=4, client=kafka_client)
    _produce(kafka_bootstrap, kafka_client, topic_name, 28)
    _produce(kafka_bootstrap, OTHER[kafka_client], topic_name, 28, start=28)
    consumer = make_consumer(kafka_bootstrap, [topic_name], group=None, client=kafka_client)
    try:
        got = _poll_until(consumer, 56)
    finally:
        consumer.close()
    partitions: dict[bytes | None, set[int]] = {}
    for r in got:
        partitions.setdefault(r.key, set()).add(r.partition)
    assert len(partitions) == 7
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len({next(iter(p)) for p in partitions.values()}) > 1  # keys do spread


def test_commit_then_same_group_resumes_after_committed_offset(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    _produce(kafka_bootstrap, kafka_client, topic_name, 20)
    group = f"g-{topic_name}"
    first = make_consumer(kafka_bootstrap, [topic_name], group=group, client=kafka_client)
    try:
        got = _poll_until(first, 12)
        first.commit({(topic_name, 0): got[11].offset + 1})
        first.commit({})  # nothing to commit: must not commit the current position
    finally:
        first.close()

    second = make_consumer(kafka_bootstrap, [topic_name], group=group, client=kafka_client)
    try:
        rest = _poll_until(second, 8)
        assert second.poll(10, 0.5) == []
        assert second.assignment() == [(topic_name, 0)]
    finally:
        second.close()
    assert [r.offset for r in rest] == list(range(12, 20))
    assert [r.value for r in rest] == [f"value-{i}".encode() for i in range(12, 20)]


def test_from_beginning_false_skips_the_backlog(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    _produce(kafka_bootstrap, kafka_client, topic_name, 5)
    consumer = make_consumer(
        kafka_bootstrap, [topic_name], group=None, client=kafka_client, from_beginning=False
    )
    producer = make_producer(kafka_bootstrap, client=kafka_client)
    try:
        # "latest" is resolved asynchronously after assignment: send probes until one
        # arrives, so the consumer is known to be live before the real messages go out.
        got: list[Record] = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            producer.send(topic_name, b"probe")
            producer.flush()
            got = consumer.poll(10, 0.5)
        producer.send(topic_name, b"after-1")
        producer.send(topic_name, b"after-2")
        producer.flush()
        while b"after-2" not in [r.value for r in got] and time.monotonic() < deadline:
            got.extend(consumer.poll(10, 0.5))
    finally:
        producer.close()
        consumer.close()
    values = [r.value for r in got]
    assert values[-2:] == [b"after-1", b"after-2"]
    assert set(values[:-2]) == {b"probe"}, values


def test_lag_reports_the_backlog(kafka_bootstrap: str, kafka_client: str, topic_name: str) -> None:
    create_topics(kafka_bootstrap, [topic_name], partitions=2, client=kafka_client)
    _produce(kafka_bootstrap, kafka_client, topic_name, 100)
    consumer = make_consumer(kafka_bootstrap, [topic_name], group=None, client=kafka_client)
    try:
        _poll_until(consumer, 40)
        assert len(consumer.assignment()) == 2
        assert consumer.lag() == 60
        _poll_until(consumer, 60)
        assert consumer.lag() == 0
    finally:
        consumer.close()


def test_lag_after_resuming_from_a_commit(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    _produce(kafka_bootstrap, kafka_client, topic_name, 30)
    group = f"g-{topic_name}"
    first = make_consumer(kafka_bootstrap, [topic_name], group=group, client=kafka_client)
    try:
        _poll_until(first, 1)
        first.commit({(topic_name, 0): 10})
    finally:
        first.close()
    second = make_consumer(kafka_bootstrap, [topic_name], group=group, client=kafka_client)
    try:
        got = _poll_until(second, 1)
        assert got[0].offset == 10
        assert second.lag() == 19
    finally:
        second.close()


def test_create_topics_is_idempotent_and_sets_partitions_and_config(
    kafka_bootstrap: str, kafka_client: str, new_topic: Callable[[str], str]
) -> None:
    a, b = new_topic("a"), new_topic("b")
    config = {"cleanup.policy": "compact"}
    create_topics(kafka_bootstrap, [a, b], partitions=3, config=config, client=kafka_client)
    create_topics(kafka_bootstrap, [a, b], partitions=3, config=config, client=kafka_client)
    create_topics(kafka_bootstrap, [a], partitions=5, client=kafka_client)  # left as is

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[a].partitions) == 3
    assert len(topics[b].partitions) == 3
    resource = ConfigResource(ConfigResource.Type.TOPIC, b)
    described = admin.describe_configs([resource])[resource].result(timeout=10)
    assert described["cleanup.policy"].value == "compact"


def test_create_topics_rejects_a_bad_topic_config(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    with pytest.raises(ConfigError, match=topic_name):
        create_topics(kafka_bootstrap, [topic_name], config={"cleanup.policy": "sideways"},
                      client=kafka_client)


def test_wait_until_ready_returns_for_a_live_broker(
    kafka_bootstrap: str, kafka_client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAJSTREAM_KAFKA_CLIENT", kafka_client)
    wait_until_ready(kafka_bootstrap, timeout_s=10.0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_wait_until_ready_fails_fast_on_a_closed_port() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=f"cannot reach Kafka at {bootstrap}"):
        wait_until_ready(bootstrap, timeout_s=1.0)
    assert time.monotonic() - started < 3.0


def test_producer_reports_an_unreachable_broker(kafka_client: str) -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    # kafka-python blocks in its constructor and send; bound those waits for the test.
    config = {"bootstrap.timeout.ms": 1000} if kafka_client == "kafka-python" else {}
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        producer = make_producer(bootstrap, client=kafka_client, config=config)
        try:
            producer.send("nowhere", b"x")
            producer.flush(1.0)
        finally:
            producer.close()
    assert time.monotonic() - started < 10.0


def test_flush_raises_when_the_broker_rejects_a_message(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    create_topics(kafka_bootstrap, [topic_name], config={"max.message.bytes": "1024"},
                  client=kafka_client)
    producer = make_producer(kafka_bootstrap, client=kafka_client)
    try:
        producer.send(topic_name, b"small")
        producer.flush()
        producer.send(topic_name, os.urandom(4096))  # random: compression cannot shrink it
        with pytest.raises(KafkaUnavailable, match="could not be delivered"):
            producer.flush(10.0)
        with pytest.raises(KafkaUnavailable):  # the loss is sticky, never silent
            producer.send(topic_name, b"after")
            producer.flush(10.0)
    finally:
        producer.close()


def test_a_broker_that_answers_but_will_not_take_the_topic_is_named_not_unreachable(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    """The broker refuses to create a topic whose name collides with an existing one ('.'
    and '_' are the same to it) and answers every metadata request for it with
    UNKNOWN_TOPIC_OR_PART, so the messages wait until the send (kafka-python) or the flush
    (confluent) times out. Both used to end 'cannot reach Kafka ...; is the broker
    running?', with the broker up and answering."""
    create_topics(kafka_bootstrap, [f"{topic_name}_x"], client=kafka_client)
    topic = f"{topic_name}.x"
    config = {"max.block.ms": "3000"} if kafka_client == "kafka-python" else {}
    producer = make_producer(kafka_bootstrap, client=kafka_client, config=config)
    try:
        with pytest.raises(KafkaUnavailable) as err:
            producer.send(topic, b"{}", key=b"veh-1")
            producer.flush(3.0)
    finally:
        producer.close()
    says = str(err.value)
    assert says.startswith(f"Kafka at {kafka_bootstrap} answers but does not take the "
                           f"messages ("), says
    assert f"topic {topic}" in says and "nknown" in says, says  # Unknown topic / Unknown...Error
    assert "cannot reach" not in says and "broker running" not in says, says


def test_a_send_to_a_partition_the_topic_does_not_have_is_a_kafka_error(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    """confluent-kafka reports it as an undelivered message at the flush; kafka-python
    raised a bare ValueError('Unrecognized partition 3 ...') from send, past the adapter."""
    create_topics(kafka_bootstrap, [topic_name], partitions=1, client=kafka_client)
    producer = make_producer(kafka_bootstrap, client=kafka_client)
    try:
        producer.send(topic_name, b"ok", key=b"veh-1")
        producer.flush(10.0)
        with pytest.raises(KafkaUnavailable, match="(?i)unknown partition|unrecognized "
                           "partition 3"):
            producer.send(topic_name, b"{}", key=b"veh-1", partition=3)
            producer.flush(10.0)
    finally:
        producer.close()


@pytest.mark.parametrize("case", ["unknown topic", "missing partition", "slow"])
def test_a_changelog_read_the_broker_answers_for_names_its_answer_not_unreachable(
    kafka_bootstrap: str, kafka_client: str, topic_name: str, case: str
) -> None:
    """Restoring state reads the changelog with read_to_end. Every failure or timeout of
    that read said 'cannot reach Kafka ...; is the broker running?' with the broker up and
    answering: a topic the broker does not serve (a name colliding with an existing one,
    which it answers with UNKNOWN_TOPIC_OR_PART; kafka-python also waited its 30 s request
    timeout, past the read's own), a partition the topic does not have (kafka-python: a
    bare KeyError) or a read that just took longer than its time."""
    create_topics(kafka_bootstrap, [f"{topic_name}_x"], client=kafka_client)
    topic, partitions, timeout_s = {
        "unknown topic": (f"{topic_name}.x", [0], 5.0),
        "missing partition": (f"{topic_name}_x", [0, 3], 5.0),
        "slow": (f"{topic_name}_x", [0], 0.0),
    }[case]
    if case == "slow":
        _produce(kafka_bootstrap, kafka_client, topic, 500)
    t0 = time.monotonic()
    with pytest.raises(KafkaUnavailable) as err:
        read_to_end(kafka_bootstrap, topic, partitions, client=kafka_client,
                    timeout_s=timeout_s)
    says = str(err.value)
    assert "cannot reach" not in says and "broker running" not in says, says
    assert "\n" not in says, says
    assert time.monotonic() - t0 < timeout_s + 10.0, says  # the read's time, plus the probe
    if case == "slow":
        assert says.startswith(f"Kafka at {kafka_bootstrap} answers but has not served "
                               f"changelog {topic} ("), says
        assert says.endswith("and names no cause: a slow or loaded broker; see the "
                             "broker's log"), says
        return
    assert says.startswith(f"Kafka at {kafka_bootstrap} answers but does not serve "
                           f"changelog {topic} ("), says
    if case == "unknown topic":
        assert f"topic {topic}: " in says and "nknown" in says, says
    else:
        assert says.endswith(f"topic {topic} has 1 partition(s), no partition 3"), says


def test_a_commit_in_the_revoke_callback_answers_when_a_member_joins(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    """The processor commits what it has done when a rebalance takes its partitions (a
    member joined). That commit must reach the broker at once: unanswered, the member and
    the one joining wait for it (the whole group stalled 10 s in bench_scale_out), and the
    new owner reads the records again."""
    create_topics(kafka_bootstrap, [topic_name], partitions=4, client=kafka_client)
    _produce(kafka_bootstrap, kafka_client, topic_name, 200)
    group = f"g-{topic_name}"
    took: list[float] = []
    errors: list[BaseException] = []
    first: Consumer | None = None
    read: list[Record] = []

    def revoked(parts: list[tuple[str, int]]) -> None:
        if not parts:  # kafka-python revokes nothing before its first join
            return
        assert first is not None
        done: dict[tuple[str, int], int] = {}
        for r in read:
            done[(r.topic, r.partition)] = max(done.get((r.topic, r.partition), 0),
                                               r.offset + 1)
        t0 = time.monotonic()
        try:
            first.commit({tp: o for tp, o in done.items() if tp in parts})
        except BaseException as exc:  # raised after poll by the check below
            errors.append(exc)
        took.append(time.monotonic() - t0)

    first = make_consumer(kafka_bootstrap, [topic_name], group=group, client=kafka_client,
                          from_beginning=True, on_revoke=revoked)
    second = None
    try:
        read.extend(_poll_until(first, 200))
        second = make_consumer(kafka_bootstrap, [topic_name], group=group,
                               client=kafka_client, from_beginning=True)
        deadline = time.monotonic() + 30.0
        while not took and time.monotonic() < deadline:
            first.poll(100, 0.2)
            second.poll(100, 0.2)
        assert took, "the second member's join never revoked the first one's partitions"
        assert not errors, errors
        assert took[0] < 5.0, f"the commit in the revoke callback took {took[0]:.1f} s"
        # and it reached the broker: the second member reads nothing again
        end = time.monotonic() + 5.0
        again: list[Record] = []
        while time.monotonic() < end:
            again.extend(second.poll(100, 0.2))
            first.poll(100, 0.2)
        assert again == []
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_partition_assigned_again_after_a_rebalance_is_read_from_its_committed_offset(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    """An eager rebalance revokes every partition; the processor then drops what it holds of
    them (records consumed but not yet released, so not committed) and restores their state
    as of the committed offset. A partition the member gets back must therefore be read
    again from that offset: kafka-python 3.x kept its position instead, so those records
    were never applied (a scale-out run with kafka-python lost fixes at every member join
    and its alerts drifted from the uninterrupted run's)."""
    create_topics(kafka_bootstrap, [topic_name], partitions=2, client=kafka_client)
    _produce(kafka_bootstrap, kafka_client, topic_name, 200)
    group = f"g-{topic_name}"
    first: Consumer | None = None
    committed: dict[tuple[str, int], int] = {}

    def revoked(parts: list[tuple[str, int]]) -> None:
        if not parts:  # kafka-python revokes nothing before its first join
            return
        assert first is not None
        # the processor commits only up to its first held record: here, 10 per partition
        committed.update({tp: 10 for tp in parts})
        first.commit({tp: 10 for tp in parts})

    first = make_consumer(kafka_bootstrap, [topic_name], group=group, client=kafka_client,
                          from_beginning=True, on_revoke=revoked)
    second = None
    try:
        _poll_until(first, 200)  # everything consumed, nothing committed yet
        second = make_consumer(kafka_bootstrap, [topic_name], group=group,
                               client=kafka_client, from_beginning=True)
        after: list[Record] = []
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not (committed and after):
            got = first.poll(100, 0.2)
            if committed:
                after.extend(got)
            second.poll(100, 0.2)
        assert committed, "the second member's join never revoked the first one's partitions"
        kept = first.assignment()
        assert len(kept) == 1, kept
        mine = [r for r in after if (r.topic, r.partition) in kept]
        assert mine, f"the first member read nothing of {kept} after the rebalance"
        assert min(r.offset for r in mine) == 10, (
            f"{kept} was read again from offset {min(r.offset for r in mine)}, not from its "
            f"committed offset 10")
    finally:
        first.close()
        if second is not None:
            second.close()


# Each client's setting for how often it refreshes topic metadata (5 min by default).
_METADATA_REFRESH_1S = {"confluent": {"topic.metadata.refresh.interval.ms": 1000},
                        "kafka-python": {"metadata.max.age.ms": 1000}}


def test_a_topic_that_cannot_grow_says_so_in_one_line_in_the_brokers_words(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    """kafka-python said a refused CreatePartitions with its whole request and response
    ('[Error 3] UnknownTopicOrPartitionError: Request 'CreatePartitionsRequest(version=3,
    ...' failed with response ...'). A topic already as large is no error."""
    with pytest.raises(KafkaUnavailable) as err:
        grow_topic(kafka_bootstrap, topic_name, 2, client=kafka_client)
    says = str(err.value)
    assert says.startswith(f"cannot add partitions to {topic_name!r}: "), says
    assert "nknown" in says and "Request" not in says and len(says) < 160, says
    create_topics(kafka_bootstrap, [topic_name], partitions=3, client=kafka_client)
    assert grow_topic(kafka_bootstrap, topic_name, 2, client=kafka_client) == 3


def test_a_member_that_polls_briefly_while_its_topic_grows_gets_the_new_partition(
    kafka_bootstrap: str, kafka_client: str, topic_name: str
) -> None:
    """Partitions added to a subscribed topic make the group rebalance. kafka-python 3 lost
    that rejoin when a poll's timeout ended before its JoinGroup/SyncGroup round trip: the
    round trip finished in the background, nothing marked the rejoin as still to be
    completed, and the member stayed 'rebalancing' with no partition for good (under load,
    processors idled 300 s without a partition at start-up). Short polls make it certain."""
    create_topics(kafka_bootstrap, [topic_name], partitions=1, client=kafka_client)
    _produce(kafka_bootstrap, kafka_client, topic_name, 5)
    consumer = make_consumer(kafka_bootstrap, [topic_name], group=f"g-{topic_name}",
                             client=kafka_client, config=_METADATA_REFRESH_1S[kafka_client])
    try:
        _poll_until(consumer, 5)
        grow_topic(kafka_bootstrap, topic_name, 2)
        producer = make_producer(kafka_bootstrap, client=kafka_client)
        producer.await_partitions(topic_name, 2)
        producer.send(topic_name, b"on-the-new-partition", key=b"k", partition=1)
        producer.flush(30.0)
        producer.close()
        new: list[Record] = []  # (partition 0 comes again from its commit, here none)
        deadline = time.monotonic() + 30.0
        while not new and time.monotonic() < deadline:
            new = [r for r in consumer.poll(10, 0.0) if r.partition == 1]
            time.sleep(0.05)
        assert [r.value for r in new] == [b"on-the-new-partition"], (
            f"nothing from the new partition in 30 s; assigned {consumer.assignment()}")
    finally:
        consumer.close()
