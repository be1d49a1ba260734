"""kafka-python's consumer with the batch-at-a-time record parser (stream/kafka/_recordbatch.py)
against a real broker: the same records as kafka-python's own parser, whatever the batches
look like (compressed or not, from either client, transactional with aborted and committed
transactions and their control records, read_committed or not)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from trajstream.stream.kafka import create_topics, make_consumer, make_producer, read_to_end
from trajstream.stream.kafka._recordbatch import install

PARTITIONS = 3


def _library(bootstrap: str, topic: str, read_committed: bool) -> list[tuple[Any, ...]]:
    """Every record as kafka-python's own parser gives it: (partition, offset, key, value)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      isolation_level="read_committed" if read_committed else
                      "read_uncommitted")
    out: list[tuple[Any, ...]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        deadline = time.monotonic() + 30
        while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=200).items():
                out.extend((tp.partition, r.offset, r.key, r.value) for r in recs)
    finally:
        c.close()
    return sorted(out)


def _adapter(bootstrap: str, topic: str, read_committed: bool, n: int) -> list[tuple[Any, ...]]:
    conf = {"isolation.level": "read_committed"} if read_committed else {}
    c = make_consumer(bootstrap, [topic], group=None, client="kafka-python", config=conf)
    assert c._fast, "the fast parser is not in use"  # type: ignore[attr-defined]
    out: list[tuple[Any, ...]] = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            cols = c.poll_columns(97, 0.3)  # an odd batch size: polls end inside batches
            out.extend(zip(cols.partitions, cols.offsets, cols.keys, cols.values, strict=True))
        assert c.poll_columns(100, 1.0).values == []
    finally:
        c.close()
    return sorted(out)


def _send(p: Producer, topic: str, lo: int, hi: int, tag: str) -> None:
    for i in range(lo, hi):
        key = None if i % 11 == 0 else f"veh-{i % 13}".encode()
        value = None if i % 17 == 0 else f'{{"i":{i},"tag":"{tag}"}}'.encode() * (1 + i % 3)
        p.produce(topic, value, key, headers=[("h", b"x")] if i % 5 == 0 else None)


@pytest.mark.parametrize("read_committed", [False, True])
def test_fast_records_equal_kafka_pythons_own(kafka_bootstrap: str, new_topic: Any,
                                              read_committed: bool) -> None:
    topic = new_topic("mixed")
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    # plain batches from both clients, uncompressed and compressed with each codec
    for codec in ("none", "gzip", "lz4", "snappy", "zstd"):  # every codec Kafka has
        p = Producer({"bootstrap.servers": kafka_bootstrap, "compression.type": codec,
                      "linger.ms": 5})
        _send(p, topic, 0, 300, codec)
        p.flush(30)
    kp = make_producer(kafka_bootstrap, client="kafka-python")
    for i in range(200):
        kp.send(topic, f"kp-{i}".encode(), f"veh-{i % 13}".encode())
    kp.flush()
    kp.close()
    # transactions: aborted and committed, each ending in a control record per partition
    tx = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic}-tx",
                   "compression.type": "lz4", "linger.ms": 5})
    tx.init_transactions(30)
    for n, commit in ((150, False), (150, True), (50, False), (80, True)):
        tx.begin_transaction()
        _send(tx, topic, 0, n, "tx-commit" if commit else "tx-abort")
        tx.flush(30)  # on the broker before the abort (else the abort purges them locally)
        if commit:
            tx.commit_transaction(30)
        else:
            tx.abort_transaction(30)

    want = _library(kafka_bootstrap, topic, read_committed)
    aborted = [r for r in want if r[3] is not None and b"tx-abort" in r[3]]
    assert bool(aborted) is not read_committed
    assert _adapter(kafka_bootstrap, topic, read_committed, len(want)) == want
    # the changelog reader (read_to_end) parses the same way
    back = read_to_end(kafka_bootstrap, topic, list(range(PARTITIONS)), client="kafka-python",
                       read_committed=read_committed)
    for part in range(PARTITIONS):  # in log order
        assert ([(k, v) for k, v, p in back if p == part]
                == [(k, v) for p, _, k, v in want if p == part])


def test_install_declines_a_consumer_with_deserializers(kafka_bootstrap: str) -> None:
    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, value_deserializer=bytes.decode)
    try:
        assert install(c) is False
    finally:
        c.close()
