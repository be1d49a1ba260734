"""Client-independent pieces of the Kafka adapter: bootstrap parsing, readiness, group names."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from trajstream.errors import ConfigError, Fenced, KafkaUnavailable

log = logging.getLogger("trajstream.stream.kafka")

# Watermarks fetched from the broker for lag() are reused for this long.
WATERMARK_CACHE_S = 1.0
# How often a consumer asks for its topics' metadata, so that partitions added to them are
# assigned within seconds (both clients' default: 5 minutes). A setting of the user's wins.
METADATA_REFRESH_MS = 5000


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"host:port[,host:port...]"`` (IPv6 as ``[::1]:9092``) -> [(host, port)]."""
    servers: list[tuple[str, int]] = []
    for item in str(bootstrap).split(","):
        item = item.strip()
        host, sep, port_text = item.rpartition(":")
        host = host.strip("[]")
        if not item or not sep or not host or not port_text.isdigit():
            raise ConfigError(
                f"invalid Kafka bootstrap {bootstrap!r}: expected HOST:PORT[,HOST:PORT...]"
            )
        if "/" in host:  # http://host:9092, PLAINTEXT://host:9092
            raise ConfigError(f"invalid Kafka bootstrap {bootstrap!r}: HOST:PORT without a "
                              "scheme (the protocol is --kafka-option security.protocol=...)")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ConfigError(f"invalid Kafka bootstrap {bootstrap!r}: port {port} out of range")
        servers.append((host, port))
    return servers


def partitions_of(tps: Iterable[Any]) -> list[tuple[str, int]]:
    """Either client's TopicPartitions as sorted (topic, partition) pairs."""
    return sorted((tp.topic, tp.partition) for tp in tps)


class RebalanceHooks:
    """``make_consumer``'s on_assign/on_revoke behind either client's rebalance callbacks,
    which hand them the partitions as sorted (topic, partition) pairs.

    ``in_revoke`` is True while on_revoke runs: an offset commit it makes must not wait for
    an answer (see the consumers' ``commit``).
    """

    def __init__(self, on_assign: Callable[[list[tuple[str, int]]], None] | None,
                 on_revoke: Callable[[list[tuple[str, int]]], None] | None) -> None:
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self.in_revoke = False

    def assigned(self, tps: Iterable[Any]) -> None:
        if self._on_assign is not None:
            self._on_assign(partitions_of(tps))

    def revoked(self, tps: Iterable[Any]) -> None:
        if self._on_revoke is not None:
            self.in_revoke = True
            try:
                self._on_revoke(partitions_of(tps))
            finally:
                self.in_revoke = False


def undelivered(failed: int, bootstrap: str, first_failure: str) -> KafkaUnavailable:
    """A producer's messages that could not be delivered. Not retriable: they are lost, only
    a replay from the committed offsets brings them back."""
    exc = KafkaUnavailable(
        f"{failed} message(s) could not be delivered to Kafka at {bootstrap}; "
        f"first: {first_failure}"
    )
    exc.retriable = False
    return exc


def fenced_member(group: str, instance_id: str | None, cause: str) -> Fenced:
    """The consumer's end when a twin joined its group under its static name."""
    return Fenced(
        f"Kafka consumer fenced: another process joined group {group!r} with the same "
        f"--instance-id {instance_id!r} (by default $HOSTNAME); give each process of the "
        f"group its own --instance-id, or --instance-id \"\" for dynamic membership ({cause})")


def fenced_producer(transactional_id: str | None, cause: str) -> Fenced:
    """The transactional producer's end when a twin registered its transactional id."""
    return Fenced(
        f"Kafka producer fenced by another producer with the same transactional id "
        f"{transactional_id!r}; give each --exactly-once process of the group its own "
        f"--transactional-id (or its own --instance-id, which the default id includes) "
        f"({cause})")


def throwaway_group() -> str:
    return f"trajstream-tmp-{uuid.uuid4().hex[:12]}"


def unreachable(bootstrap: str, why: str) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap} ({why}); is the broker running? "
        f"(`make kafka-up` starts one on 127.0.0.1:9092)"
    )


# How long a producer whose messages are not acknowledged waits for the broker to answer a
# metadata request before it says the broker is unreachable.
PROBE_S = 3.0


def not_acknowledged(bootstrap: str, why: str, answered: bool, cause: str = "",
                     ) -> KafkaUnavailable:
    """Messages a producer could not get acknowledged in time (``why``: what timed out).

    Only a broker that does not answer gets the advice to start one (:func:`unreachable`).
    One that answers a metadata request but does not take the messages (an unknown topic or
    partition, topic authorization, a partition without a leader, a quota) is said to
    answer, with ``cause``, the client's account of the topics, when it has one."""
    return _answers_but(bootstrap, why, answered, cause, "does not take the messages",
                        "has not acknowledged the messages", "see the broker's log (quotas, "
                        "partitions under min.insync.replicas)")


def not_served(bootstrap: str, what: str, why: str, answered: bool, cause: str = "",
               ) -> KafkaUnavailable:
    """Records of ``what`` (a topic) a reader could not get (``why``: what failed or timed
    out), said as :func:`not_acknowledged` says it of a producer's messages: only a broker
    that does not answer a metadata request gets the advice to start one; one that answers
    is named with ``cause``, its account of the topic (unknown, not authorized, partitions
    without a leader or missing), or said to name none (slow, or busy)."""
    return _answers_but(bootstrap, why, answered, cause, f"does not serve {what}",
                        f"has not served {what}", "a slow or loaded broker; see the broker's log")


def _answers_but(bootstrap: str, why: str, answered: bool, cause: str, refused: str,
                 pending: str, hint: str) -> KafkaUnavailable:
    """Unreachable, or a broker that answers but ``refused`` (with its ``cause``), or whose
    request is ``pending`` with no cause named (``hint``: where to look)."""
    if not answered:
        return unreachable(bootstrap, why)
    if cause:
        return KafkaUnavailable(f"Kafka at {bootstrap} answers but {refused} ({why}): {cause}")
    return KafkaUnavailable(f"Kafka at {bootstrap} answers but {pending} ({why}), and names "
                            f"no cause: {hint}")


def too_few_partitions(bootstrap: str, topic: str, have: int, count: int, timeout_s: float,
                       ) -> KafkaUnavailable:
    """A producer waited for partitions the broker, answering, still does not have."""
    return KafkaUnavailable(f"Kafka at {bootstrap} answers, but topic {topic} has {have} "
                            f"partition(s), not {count}, after {timeout_s:g} s")


def wait_until_ready(bootstrap: str, timeout_s: float, client: str,
                     stop: threading.Event | None = None,
                     client_config: dict[str, Any] | None = None) -> None:
    """TCP first (quiet and fast to retry), then one metadata round trip with the client
    and its settings ``client_config``. Returns early, without raising, once ``stop`` is
    set."""
    servers = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + max(timeout_s, 0.0)
    last_error = "no attempt"
    pause = stop.wait if stop is not None else time.sleep
    while stop is None or not stop.is_set():
        for host, port in servers:
            remaining = deadline - time.monotonic()
            try:
                with socket.create_connection((host, port), timeout=max(min(remaining, 1.0), 0.05)):
                    pass
            except OSError as exc:
                last_error = exc.strerror or type(exc).__name__
                continue
            if _metadata_ok(bootstrap, max(deadline - time.monotonic(), 1.0), client,
                            client_config or {}):
                return
            last_error = "the port is open but no Kafka metadata came back"
        if time.monotonic() >= deadline:
            raise unreachable(bootstrap, f"{last_error.lower()} after {timeout_s:g} s")
        pause(min(0.2, max(deadline - time.monotonic(), 0.0)))


def _metadata_ok(bootstrap: str, timeout_s: float, client: str,
                 client_config: dict[str, Any]) -> bool:
    if client == "confluent":
        from trajstream.stream.kafka._confluent import metadata_ok
    else:
        from trajstream.stream.kafka._kafkapython import metadata_ok
    return metadata_ok(bootstrap, timeout_s, client_config)
