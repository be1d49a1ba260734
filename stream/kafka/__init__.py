"""One small Kafka adapter with two implementations: confluent-kafka and kafka-python.

confluent-kafka (librdkafka) is the fast path, about 20x kafka-python's rate for small
messages; kafka-python is pure Python and always installable. Both sit behind the same
``Producer``/``Consumer`` protocols and are tested against a real broker.

Keys and values are bytes. ``config`` is a raw pass-through of client settings in
confluent/librdkafka style dotted names (``linger.ms``, ``session.timeout.ms``); for
kafka-python the dotted names are translated to its keyword names (``linger_ms``), and a
setting kafka-python does not have is a ConfigError at start-up. librdkafka-only settings are
therefore client-specific. Pass-through settings win over the adapter's defaults.

Offsets are never committed automatically: callers commit after their outputs are flushed.
Rebalance callbacks are keyword arguments of ``make_consumer`` (``on_assign``/``on_revoke``,
called inside ``poll`` with the (topic, partition) list); a producer made with
``transactional_id`` offers Kafka transactions (exactly-once: outputs and the consumer's
offsets committed atomically). :func:`read_to_end` reads a (changelog) topic back.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from trajstream.errors import ConfigError, KafkaUnavailable

__all__ = [
    "CLIENTS",
    "Consumer",
    "KafkaClientName",
    "KafkaUnavailable",
    "Producer",
    "Columns",
    "Record",
    "check_settings",
    "create_topics",
    "grow_topic",
    "make_consumer",
    "make_producer",
    "partition_count",
    "read_to_end",
    "resolve_client",
    "topic_setting",
    "wait_until_ready",
]

KafkaClientName = Literal["confluent", "kafka-python"]
CLIENTS: tuple[KafkaClientName, ...] = ("confluent", "kafka-python")
CLIENT_ENVVAR = "TRAJSTREAM_KAFKA_CLIENT"

_ALIASES: dict[str, KafkaClientName] = {
    "confluent": "confluent",
    "confluent-kafka": "confluent",
    "confluent_kafka": "confluent",
    "kafka-python": "kafka-python",
    "kafka_python": "kafka-python",
}
_MODULES: dict[KafkaClientName, tuple[str, str]] = {
    "confluent": ("confluent_kafka", "confluent-kafka"),
    "kafka-python": ("kafka", "kafka-python"),
}


class Record(NamedTuple):
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class Columns(NamedTuple):
    """One poll's records as columns, in consumption order (no per-record Python object:
    the processor's hot path reads these)."""

    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]


class Producer(Protocol):
    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             partition: int | None = None) -> None:
        """Queue one message (asynchronous, batched); ``value=None`` is a tombstone and
        ``partition`` overrides the key's partition.

        Raises KafkaUnavailable once the producer is broken: a fatal client error, or an
        earlier message that could not be delivered (so losses are never silent).
        """
        ...

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged; KafkaUnavailable if one failed
        or the timeout ran out."""
        ...

    def close(self) -> None:
        """Deliver what can be delivered within a few seconds and release the client."""
        ...

    def await_partitions(self, topic: str, count: int, timeout_s: float = 15.0) -> None:
        """Until the producer knows ``count`` partitions of ``topic``: partitions added by
        another client reach it only at its next metadata refresh (every 5 minutes by
        default), and a send to one before that fails. KafkaUnavailable on timeout."""
        ...

    # Transactions (only on a producer made with ``transactional_id``); failures raise
    # KafkaUnavailable.
    def init_transactions(self, timeout_s: float = 30.0) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(self, offsets: dict[tuple[str, int], int],
                                    consumer: Any, timeout_s: float = 30.0) -> None: ...

    def commit_transaction(self, timeout_s: float = 30.0) -> None: ...

    def abort_transaction(self, timeout_s: float = 30.0) -> None: ...


class Consumer(Protocol):
    def expired(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Per partition of ``partitions`` whose committed offset the topic's retention
        has deleted: how many records from there it deleted (never read, and the client
        goes on from its offset reset). Empty when the broker does not tell."""
        ...

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first one.

        Client-level errors that are not fatal (broker briefly down, partition EOF) are
        logged and filtered out; fatal ones raise KafkaUnavailable.
        """
        ...

    def poll_columns(self, max_records: int, timeout_s: float) -> Columns:
        """:meth:`poll` as columns (partition, offset, key, value), without a
        :class:`Record` per message; same error handling."""
        ...

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Synchronously commit, per (topic, partition), the next offset to read."""
        ...

    def ping(self, timeout_s: float) -> None:
        """Ask the cluster for metadata; KafkaUnavailable when it does not answer within
        ``timeout_s``. (An idle consumer, or one without partitions, has no other way to
        tell a quiet topic from a broker that is gone.)"""
        ...

    def lag(self) -> int | None:
        """Records between the consumed position and the high watermark, summed over the
        assigned partitions; None while nothing is assigned or the broker cannot say.

        Cheap enough to call once per batch: positions are local, watermarks come from
        fetch responses or, failing that, from a broker query cached for about a second.
        """
        ...

    def lags(self) -> dict[tuple[str, int], int] | None:
        """:meth:`lag` per assigned (topic, partition); None when :meth:`lag` would be None.

        The processor holds its event-time watermark back for partitions that still have
        records to deliver (catching up on several partitions at once).
        """
        ...

    def assignment(self) -> list[tuple[str, int]]:
        """The (topic, partition) pairs this consumer currently owns, sorted."""
        ...

    def group_metadata(self) -> Any:
        """The consumer's group metadata (for ``send_offsets_to_transaction``)."""
        ...

    def close(self) -> None:
        """Leave the group (without committing) and release the client."""
        ...


def resolve_client(name: str | None) -> KafkaClientName:
    """The client to use: ``name``, else $TRAJSTREAM_KAFKA_CLIENT, else confluent-kafka when
    importable, else kafka-python. Unknown or uninstalled clients are a ConfigError."""
    if name is None or not name.strip():
        name = os.environ.get(CLIENT_ENVVAR, "")
    if not name.strip():
        return "confluent" if _importable("confluent") else "kafka-python"
    client = _ALIASES.get(name.strip().lower())
    if client is None:
        raise ConfigError(
            f"unknown Kafka client {name!r}: expected one of {', '.join(CLIENTS)}"
        )
    if not _importable(client):
        module, package = _MODULES[client]
        raise ConfigError(
            f"Kafka client {client!r} needs the {package} package (pip install {package})"
        )
    return client


def _importable(client: KafkaClientName) -> bool:
    return importlib.util.find_spec(_MODULES[client][0]) is not None


def make_producer(
    bootstrap: str,
    *,
    client: str | None = None,
    config: Mapping[str, Any] | None = None,
    transactional_id: str | None = None,
    shared: Mapping[str, Any] | None = None,
) -> Producer:
    """A producer tuned for throughput of small messages (linger ~10 ms, big batches,
    acks=all). Raises ConfigError on a malformed bootstrap or an unknown setting.

    With ``transactional_id`` the producer is idempotent and transactional; call
    ``init_transactions`` once before the first ``begin_transaction``."""
    _parse_bootstrap(bootstrap)
    conf = dict(config or {})
    if transactional_id:
        conf["transactional.id"] = transactional_id
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import ConfluentProducer

        return ConfluentProducer(bootstrap, conf, shared)
    from trajstream.stream.kafka._kafkapython import KafkaPythonProducer

    return KafkaPythonProducer(bootstrap, conf, shared)


def check_settings(
    bootstrap: str,
    *,
    client: str | None = None,
    consumer: Mapping[str, Any] | None = None,
    producer: Mapping[str, Any] | None = None,
    shared: Mapping[str, Any] | None = None,
) -> None:
    """Raise ConfigError for a consumer or producer setting the client refuses, before the
    caller creates anything at the broker: a misspelt option must not leave topics behind
    (a positions topic created with one partition stays that way)."""
    _parse_bootstrap(bootstrap)
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import check_settings as impl
    else:
        from trajstream.stream.kafka._kafkapython import check_settings as impl
    impl(bootstrap, dict(consumer or {}), dict(producer or {}), dict(shared or {}))


def make_consumer(
    bootstrap: str,
    topics: Sequence[str],
    *,
    group: str | None,
    client: str | None = None,
    from_beginning: bool = True,
    config: Mapping[str, Any] | None = None,
    on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
    on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
    shared: Mapping[str, Any] | None = None,
) -> Consumer:
    """A consumer subscribed to ``topics`` with auto-commit off.

    ``group=None`` joins a fresh throwaway group (``trajstream-tmp-<random>``), so the
    consumer reads every partition and its commits bother nobody. ``from_beginning`` picks
    where a group without committed offsets starts (earliest or latest).
    """
    _parse_bootstrap(bootstrap)
    if isinstance(topics, str) or not topics:
        raise ConfigError(f"make_consumer needs a non-empty list of topics, got {topics!r}")
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import ConfluentConsumer

        return ConfluentConsumer(bootstrap, list(topics), group, from_beginning,
                                 dict(config or {}), on_assign, on_revoke, shared)
    from trajstream.stream.kafka._kafkapython import KafkaPythonConsumer

    return KafkaPythonConsumer(bootstrap, list(topics), group, from_beginning,
                               dict(config or {}), on_assign, on_revoke, shared)


def read_to_end(
    bootstrap: str,
    topic: str,
    partitions: Sequence[int],
    *,
    client: str | None = None,
    read_committed: bool = False,
    timeout_s: float = 60.0,
    client_config: Mapping[str, Any] | None = None,
) -> list[tuple[bytes | None, bytes | None, int]]:
    """``(key, value, partition)`` of every record of ``partitions`` of ``topic`` up to
    their end as of the call, in log order per partition (restoring a changelog).
    ``client_config``: connection settings (security); group settings are left out, the
    reader joins no group."""
    _parse_bootstrap(bootstrap)
    conn = {k: v for k, v in (client_config or {}).items() if not k.startswith("group")}
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import read_to_end as impl
    else:
        from trajstream.stream.kafka._kafkapython import read_to_end as impl
    return impl(bootstrap, topic, list(partitions), read_committed, timeout_s, conn)


def create_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    client: str | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> None:
    """Create the topics that do not exist yet and wait until the broker serves them.

    Idempotent: an existing topic is left as it is (a differing partition count is logged,
    never changed). ``config`` holds topic settings such as ``cleanup.policy=compact``;
    ``client_config`` the admin client's settings (security).
    """
    _parse_bootstrap(bootstrap)
    if partitions < 1:
        raise ConfigError(f"partitions must be >= 1, got {partitions}")
    if not topics:
        return
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import create_topics as impl
    else:
        from trajstream.stream.kafka._kafkapython import create_topics as impl
    impl(bootstrap, list(topics), partitions, dict(config or {}), client_config)


def grow_topic(bootstrap: str, topic: str, partitions: int, *, client: str | None = None,
               client_config: Mapping[str, Any] | None = None) -> int:
    """Add partitions to ``topic`` until it has at least ``partitions`` (existing ones keep
    their records); returns its count. Never shrinks, and another client growing it at the
    same time is no error."""
    _parse_bootstrap(bootstrap)
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import grow_topic as impl
    else:
        from trajstream.stream.kafka._kafkapython import grow_topic as impl
    return impl(bootstrap, topic, partitions, client_config)


def topic_setting(bootstrap: str, topic: str, name: str, *, client: str | None = None,
                  client_config: Mapping[str, Any] | None = None) -> str | None:
    """The value of the topic setting ``name`` (e.g. ``cleanup.policy``); None when the
    broker does not tell (the topic is missing, or describing it is not allowed)."""
    _parse_bootstrap(bootstrap)
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import topic_setting as impl
    else:
        from trajstream.stream.kafka._kafkapython import topic_setting as impl
    return impl(bootstrap, topic, name, client_config)


def partition_count(bootstrap: str, topic: str, *, client: str | None = None,
                    client_config: Mapping[str, Any] | None = None) -> int | None:
    """Partitions of ``topic``; None when it does not exist."""
    _parse_bootstrap(bootstrap)
    if resolve_client(client) == "confluent":
        from trajstream.stream.kafka._confluent import partition_count as impl
    else:
        from trajstream.stream.kafka._kafkapython import partition_count as impl
    return impl(bootstrap, topic, client_config)


def wait_until_ready(bootstrap: str, timeout_s: float = 10.0,
                     stop: threading.Event | None = None, *, client: str | None = None,
                     client_config: Mapping[str, Any] | None = None) -> None:
    """Return once a broker at ``bootstrap`` answers a metadata request made with ``client``
    and ``client_config`` (connection settings: security), or once ``stop`` is set (Ctrl-C
    while waiting: the caller checks it).

    Raises KafkaUnavailable("cannot reach Kafka at HOST:PORT ...") after ``timeout_s``; a
    closed port fails after ``timeout_s`` without any client log noise.
    """
    from trajstream.stream.kafka._common import wait_until_ready as impl

    impl(bootstrap, timeout_s, resolve_client(client), stop, dict(client_config or {}))


def _parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    from trajstream.stream.kafka._common import parse_bootstrap

    return parse_bootstrap(bootstrap)
