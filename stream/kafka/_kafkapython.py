"""The kafka-python implementation of the adapter: pure Python, slower, always installable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka import errors as kerr
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import MemberState, OffsetAndMetadata

from trajstream.errors import ConfigError, Fenced, KafkaUnavailable
from trajstream.stream.kafka import Columns, Record
from trajstream.stream.kafka._common import (
    METADATA_REFRESH_MS,
    PROBE_S,
    WATERMARK_CACHE_S,
    RebalanceHooks,
    fenced_member,
    fenced_producer,
    not_acknowledged,
    not_served,
    partitions_of,
    throwaway_group,
    too_few_partitions,
    undelivered,
    unreachable,
)
from trajstream.stream.kafka._recordbatch import FastRecord, as_tuples
from trajstream.stream.kafka._recordbatch import install as install_fast_parser

log = logging.getLogger("trajstream.stream.kafka")

# kafka-python logs every reconnect attempt at ERROR and rebalance chatter at WARNING. The
# adapter reports an unreachable broker as KafkaUnavailable, so keep the library to real
# errors and its connection layers (kafka.net in 3.x, kafka.conn/client_async in 2.x)
# silent. A level the application already set is left alone.
for _name, _level in (("kafka", logging.ERROR), ("kafka.net", logging.CRITICAL),
                      ("kafka.conn", logging.CRITICAL),
                      ("kafka.client_async", logging.CRITICAL)):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)

# the longest wait for kafka-python to learn whether a failed send means fenced
_FENCE_ANSWER_S = 10.0
_PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 10,
    "batch_size": 256 * 1024,
    "acks": "all",
    "max_block_ms": 30_000,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "fetch_max_wait_ms": 100,
    # as the confluent consumer: a dead member's partitions come back after 6 s, not 45 s
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 2000,
    # as the confluent consumer: partitions added to a topic are taken within seconds
    "metadata_max_age_ms": METADATA_REFRESH_MS,
}
# librdkafka names that are not just kafka-python's name with dots for underscores.
_RENAMES = {
    "compression.codec": "compression_type",
    "message.max.bytes": "max_request_size",
    "queue.buffering.max.ms": "linger_ms",
    "fetch.wait.max.ms": "fetch_max_wait_ms",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
}
_IGNORED = {"bootstrap.servers", "bootstrap_servers"}


def translate(config: Mapping[str, Any], known: Mapping[str, Any], *, role: str = "client",
              shared: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """confluent-style settings -> kafka-python keywords of one client ``role``.

    ``config`` holds the role's own settings: one kafka-python's ``role`` does not have is a
    ConfigError naming the role. ``shared`` settings go to every client: each takes those it
    has, and only a setting no kafka-python client has is an error. String values from the
    environment or the CLI ("10", "true") become the int or bool kafka-python expects when
    its default has that type.
    """
    out: dict[str, Any] = {}
    for name, value in (shared or {}).items():
        key = _RENAMES.get(name, name.replace(".", "_"))
        if name in _IGNORED or key not in known:
            if name not in _IGNORED and not any(key in k for k in _known_by_role().values()):
                raise ConfigError(f"kafka-python has no setting {name!r} (--kafka-option); "
                                  f"Kafka client settings are client-specific (use "
                                  f"--kafka-client confluent for librdkafka settings)")
            continue
        out[key] = _typed(name, key, value, known[key])
    for name, value in config.items():
        if name in _IGNORED:
            continue
        key = _RENAMES.get(name, name.replace(".", "_"))
        if key not in known:
            raise ConfigError(
                f"kafka-python {role} has no setting {name!r}"
                + (f" (--{role}-option)" if role in ROLES else "")
                + "; Kafka client settings are client-specific (use --kafka-client "
                "confluent for librdkafka settings)"
            )
        out[key] = _typed(name, key, value, known[key])
    return out


ROLES = ("consumer", "producer", "admin")


def check_settings(bootstrap: str, consumer: dict[str, Any], producer: dict[str, Any],
                   shared: dict[str, Any]) -> None:
    """The names and value types :func:`translate` checks, with no connection made."""
    translate(consumer, KafkaConsumer.DEFAULT_CONFIG, role="consumer", shared=shared)
    translate(producer, KafkaProducer.DEFAULT_CONFIG, role="producer", shared=shared)


def _known_by_role() -> dict[str, Mapping[str, Any]]:
    return {"consumer": KafkaConsumer.DEFAULT_CONFIG, "producer": KafkaProducer.DEFAULT_CONFIG,
            "admin": KafkaAdminClient.DEFAULT_CONFIG}


def _typed(name: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"Kafka setting {name!r} must be true or false, got {value!r}")
        return value.lower() == "true"
    if isinstance(default, int) or key == "acks":
        try:
            return int(value)
        except ValueError:
            if key != "acks":
                raise ConfigError(
                    f"Kafka setting {name!r} must be an integer, got {value!r}") from None
    return value


def _build(cls: type[Any], bootstrap: str, conf: dict[str, Any], *topics: str) -> Any:
    try:
        return cls(*topics, bootstrap_servers=bootstrap.split(","), **conf)
    except (kerr.KafkaConfigurationError, TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"invalid kafka-python setting: {exc}") from exc
    except kerr.KafkaError as exc:  # NoBrokersAvailable (2.x), bootstrap timeouts (3.x)
        raise unreachable(bootstrap, str(exc) or type(exc).__name__) from exc


class KafkaPythonProducer:
    # Futures are checked in bulk rather than with a per-message errback, which costs
    # about a quarter of kafka-python's already low send rate.
    _REAP_EVERY = 50_000

    def __init__(self, bootstrap: str, config: dict[str, Any],
                 shared: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        conf = {**_PRODUCER_DEFAULTS, **translate(config, KafkaProducer.DEFAULT_CONFIG,
                                                  role="producer", shared=shared)}
        self._tx_id: str | None = conf.get("transactional_id")
        self._p: KafkaProducer = _build(KafkaProducer, bootstrap, conf)
        self._send = self._p.send
        self._pending: list[Any] = []
        self._failed = 0
        self._first_failure = ""
        self._first_error: BaseException | None = None
        self._topic: str | None = None  # the latest topic sent to
        self._topics: set[str] = set()  # every topic sent to, for a broker's account of them

    def _reap(self) -> None:
        """Count failed deliveries among the finished futures and forget the finished."""
        still = []
        for fut in self._pending:
            if not fut.is_done:
                still.append(fut)
            elif fut.failed():
                self._failed += 1
                if not self._first_failure:
                    exc = fut.exception
                    self._first_error = exc
                    self._first_failure = f"{type(exc).__name__}: {exc}"
        self._pending = still

    def _fenced(self, exc: BaseException | None = None) -> Fenced | None:
        """The error ending the run if a twin's transactional id fenced this producer.

        kafka-python puts its ProducerFencedError in the arguments of the KafkaError a send
        raises, and keeps it as its transaction manager's last error. It learns of the fence
        by bumping its epoch after a failed send: meanwhile calls fail without saying why, so
        this waits for that answer (a round trip) first.
        """
        if not self._tx_id:
            return None
        tm = getattr(self._p, "_transaction_manager", None)
        bumping = getattr(tm, "is_bumping_epoch", None)
        deadline = time.monotonic() + _FENCE_ANSWER_S
        while bumping is not None and bumping() and time.monotonic() < deadline:
            time.sleep(0.05)
        causes = [exc, *getattr(exc, "args", ()), getattr(tm, "last_error", None),
                  self._first_error]
        # a delivery the broker refused for the epoch a newer producer took is the fence too
        fenced = [c for c in causes
                  if isinstance(c, (kerr.ProducerFencedError, kerr.InvalidProducerEpochError))]
        if fenced:
            return fenced_producer(self._tx_id, type(fenced[0]).__name__)
        return None

    def _check(self) -> None:
        if self._failed:
            fenced = self._fenced()
            if fenced is not None:
                raise fenced
            raise undelivered(self._failed, self._bootstrap, self._first_failure)

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             partition: int | None = None) -> None:
        if topic is not self._topic:
            self._topic = topic
            self._topics.add(topic)
        try:
            self._pending.append(self._send(topic, value=value, key=key, partition=partition))
        except kerr.KafkaTimeoutError as exc:
            raise self._not_acknowledged(f"send to {topic} blocked too long: {exc}") from exc
        except kerr.KafkaError as exc:
            raise (self._fenced(exc) or KafkaUnavailable(f"cannot send to {topic}: {exc}")
                   ) from exc
        except (ValueError, AssertionError) as exc:
            # kafka-python's own checks, not KafkaErrors: a partition its metadata does not
            # have ('Unrecognized partition'), a topic missing from it or a name it refuses
            # (ValueError); a transactional batch without a producer id (AssertionError)
            raise (self._fenced(exc) or KafkaUnavailable(
                f"cannot send to {topic}: {str(exc) or type(exc).__name__}")) from exc
        if len(self._pending) >= self._REAP_EVERY:
            self._reap()
            self._check()

    def await_partitions(self, topic: str, count: int, timeout_s: float = 15.0) -> None:
        # kafka-python has no public refresh; a send to a partition it does not know raises
        # ValueError. Its metadata requests name only the topics it tracks: a topic not sent
        # to yet must be added, or its partitions never come.
        deadline = time.monotonic() + timeout_s
        meta = self._p._metadata
        meta.add_topic(topic)
        while len(meta.partitions_for_topic(topic) or ()) < count:
            if time.monotonic() > deadline:
                if not self._account()[0]:
                    raise unreachable(self._bootstrap, f"{topic} has not {count} partitions")
                raise too_few_partitions(self._bootstrap, topic,
                                         len(meta.partitions_for_topic(topic) or ()), count,
                                         timeout_s)
            meta.request_update()
            self._p._sender.wakeup()
            time.sleep(0.05)

    def flush(self, timeout_s: float = 30.0) -> None:
        try:
            self._p.flush(timeout=timeout_s)
        except kerr.KafkaTimeoutError as exc:
            self._reap()
            self._check()
            raise self._not_acknowledged(
                f"messages still undelivered after {timeout_s:g} s") from exc
        self._reap()
        self._check()

    def _not_acknowledged(self, why: str) -> KafkaUnavailable:
        """Messages not acknowledged in time: the broker's account of the topics sent to if
        it answers, else unreachable."""
        return not_acknowledged(self._bootstrap, why, *self._account())

    def _account(self) -> tuple[bool, str]:
        return _account(self._p._metadata, sorted(self._topics), wakeup=self._p._sender.wakeup)

    # -- transactions (exactly-once; needs transactional.id) -------------------------------

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        self._tx(self._p.init_transactions)

    def begin_transaction(self) -> None:
        self._tx(self._p.begin_transaction)

    def send_offsets_to_transaction(self, offsets: dict[tuple[str, int], int],
                                    consumer: Any, timeout_s: float = 30.0) -> None:
        tps = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
               for (t, p), o in offsets.items()}
        self._tx(self._p.send_offsets_to_transaction, tps, consumer.group_metadata())

    def commit_transaction(self, timeout_s: float = 30.0) -> None:
        self._tx(self._p.commit_transaction)
        self._reap()
        self._check()

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        self._tx(self._p.abort_transaction)

    def _tx(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except kerr.KafkaError as exc:
            raise (self._fenced(exc) or KafkaUnavailable(f"Kafka transaction failed: {exc}")
                   ) from exc

    def close(self) -> None:
        self._p.close(timeout=5.0)


def _account(meta: Any, topics: Sequence[str], partitions: Sequence[int] = (),
             wakeup: Callable[[], Any] | None = None, timeout_s: float = PROBE_S,
             ) -> tuple[bool, str]:
    """Whether the broker answers a metadata request of a client (``meta``: its
    ClusterMetadata; ``wakeup`` has its I/O thread send the request), and the errors it
    reports of ``topics`` (unknown, not authorized, partitions without a leader, and those
    of ``partitions`` a topic does not have)."""
    for topic in topics:  # tracked, or its metadata is not asked for
        meta.add_topic(topic)
    fut = meta.request_update()
    if wakeup is not None:
        wakeup()
    deadline = time.monotonic() + timeout_s
    while not fut.is_done and time.monotonic() < deadline:
        time.sleep(0.05)
    if not fut.is_done or (fut.failed()
                           and not isinstance(fut.exception, kerr.BrokerResponseError)):
        return False, ""
    causes: list[str] = []
    for topic in topics:
        parts = meta.partitions_for_topic(topic)
        if topic in meta.unauthorized_topics:
            causes.append(f"topic {topic}: not authorized (TopicAuthorizationFailedError)")
        elif parts is None:
            causes.append(f"topic {topic}: not in the broker's metadata "
                          f"(UnknownTopicOrPartitionError)")
        else:
            leaderless = sorted(p for p in parts
                                if meta.leader_for_partition(TopicPartition(topic, p)) == -1)
            if leaderless:
                causes.append(f"topic {topic} partition(s) "
                              f"{', '.join(map(str, leaderless))}: no leader")
            missing = sorted(set(partitions) - set(parts))
            if missing:
                causes.append(f"topic {topic} has {len(parts)} partition(s), no "
                              f"partition {', '.join(map(str, missing))}")
    if not causes and fut.failed():
        causes.append(f"{type(fut.exception).__name__}: {fut.exception}")
    return True, "; ".join(causes)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python's rebalance callbacks, passed on to the consumer's hooks.

    They run on the client's I/O thread, which also sends the group heartbeats. A revoke is
    passed on at once (its offset commit must go out before the partitions move). An
    assignment is only noted, and :meth:`KafkaPythonConsumer._fetch` runs the hook on the
    polling thread before it hands out a record: the hook restores vehicle state, which can
    take longer than the session timeout, and blocking the I/O thread that long got the
    member evicted from the group, after which the client never found the coordinator
    again (seen as a hang under load)."""

    def __init__(self, hooks: RebalanceHooks) -> None:
        self._hooks = hooks
        self.assigned: list[list[Any]] = []  # assignments not yet passed on, oldest first

    def on_partitions_revoked(self, revoked: Any) -> None:
        gone = set(revoked)
        self.assigned = [[tp for tp in tps if tp not in gone] for tps in self.assigned]
        self._hooks.revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned.append(list(assigned))

    def pass_on_assigned(self) -> list[Any]:
        """Run the hook of every assignment noted since the last call; the partitions
        passed on."""
        passed: list[Any] = []
        while self.assigned:
            tps = self.assigned.pop(0)
            self._hooks.assigned(tps)
            passed.extend(tps)
        return passed


_JOIN_WAIT_MS = 1000  # how long a poll waits at most for a group (re)join to complete


def _complete_join(consumer: KafkaConsumer) -> None:
    """While the member (re)joins its group, wait up to _JOIN_WAIT_MS for the join.

    kafka-python (3.0) completes a JoinGroup/SyncGroup round trip only inside a poll that
    is still waiting for it. One that ends between polls is thrown away and sent again
    (polls of 0 s went through 250 generations in 15 s). Worse, one that a metadata change
    started (partitions added; at start-up, a first join made before the topic's partitions
    were known) is not sent again: the member stays 'rebalancing' without a partition for
    good (processors idled 300 s under load). So a lost rejoin is flagged again, and the
    join is waited for on its own, which returns as soon as it completes; a joining member
    holds no partition (eager rebalancing), so the wait holds nothing up. Skipped on a
    client without these internals."""
    co = getattr(consumer, "_coordinator", None)
    state = getattr(co, "state", MemberState.STABLE)
    if co is None or (state == MemberState.STABLE and not co.need_rejoin()):
        return
    if (state == MemberState.REBALANCING and getattr(co, "_join_task", None) is not None
            and not co.need_rejoin()):
        log.info("kafka consumer: completing a group rejoin the client lost")
        co.request_rejoin()
    co.ensure_active_group(timeout_ms=_JOIN_WAIT_MS)


_COMMITTED_TIMEOUT_MS = 10_000  # a committed-offset lookup that blocks longer is retried


class KafkaPythonConsumer:
    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        group: str | None,
        from_beginning: bool,
        config: dict[str, Any],
        on_assign: Any = None,
        on_revoke: Any = None,
        shared: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        conf = {
            **_CONSUMER_DEFAULTS,
            "group_id": group or throwaway_group(),
            "auto_offset_reset": "earliest" if from_beginning else "latest",
            **translate(config, KafkaConsumer.DEFAULT_CONFIG, role="consumer", shared=shared),
        }
        self._group = str(conf["group_id"])
        self._instance_id: str | None = conf.get("group_instance_id")
        self._c: KafkaConsumer = _build(KafkaConsumer, bootstrap, conf)
        self._fast = install_fast_parser(self._c)  # poll gives (offset, ts, key, value)
        self._queried: dict[TopicPartition, tuple[float, int]] = {}
        self._hooks = RebalanceHooks(on_assign, on_revoke)
        self._topics = list(topics)
        self._listener = _Listener(self._hooks)
        self._rewind_pending: set[Any] = set()  # (re)assigned, not yet sought back
        self._c.subscribe(topics, listener=self._listener)

    def group_metadata(self) -> Any:
        return self._c.group_metadata()

    def _fetch(self, max_records: int, timeout_s: float) -> dict[Any, list[FastRecord]]:
        """Polled records by topic-partition, as (offset, timestamp, key, value)."""
        try:
            _complete_join(self._c)
            polled = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
            self._rewind_pending.update(self._listener.pass_on_assigned())  # before records
            if self._rewind_pending:
                polled = self._rewind(polled)
            return {tp: as_tuples(recs, self._fast) for tp, recs in polled.items()}
        except kerr.KafkaError as exc:
            if getattr(exc, "retriable", False):
                log.warning("kafka consumer: %s", exc)
                return {}
            if isinstance(exc, kerr.FencedInstanceIdError):
                raise fenced_member(self._group, self._instance_id, type(exc).__name__
                                    ) from exc
            raise KafkaUnavailable(f"Kafka consumer failed: {exc}") from exc

    def _rewind(self, polled: dict[Any, Any]) -> dict[Any, Any]:
        """Read the partitions just passed on from their committed offsets.

        An eager rebalance revokes every partition, and the processor drops what it holds of
        them (records consumed but not released, not committed) and restores their state as
        of the commit. kafka-python (3.x) keeps the position of a partition assigned to the
        same member again, so those records were never read again: the fixes were lost and
        the member's predictions and alerts differed from an uninterrupted run's. librdkafka
        starts a (re)assigned partition at its committed offset; so does this now. Records of
        them this poll returned come again from there. A lookup that fails leaves its
        partition pending: the next poll drops its records again and retries, so none is
        taken from the kept position (and the other partitions' records are kept)."""
        tps = self._rewind_pending
        for tp in sorted(tps):
            try:
                start = self._c.committed(tp, timeout_ms=_COMMITTED_TIMEOUT_MS)
            except kerr.KafkaError as exc:
                log.warning("committed offset of %s:%d unknown (%s): its records wait for "
                            "the next poll", tp.topic, tp.partition, exc)
                break
            if start is None and polled.get(tp):  # nothing committed: from this poll's first
                start = as_tuples(polled[tp][:1], self._fast)[0][0]
            if start is not None:
                self._c.seek(tp, start)
            tps.discard(tp)
            polled.pop(tp, None)
        return {tp: recs for tp, recs in polled.items() if tp not in tps}

    def expired(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        tps = [TopicPartition(t, p) for t, p in partitions]
        try:
            lows = self._c.beginning_offsets(tps, timeout_ms=_COMMITTED_TIMEOUT_MS)
            for tp in tps:
                done = self._c.committed(tp, timeout_ms=_COMMITTED_TIMEOUT_MS)
                if done is not None and done < lows[tp]:
                    out[(tp.topic, tp.partition)] = lows[tp] - done
        except kerr.KafkaError as exc:
            log.info("cannot tell whether records expired: %s", exc)
        return out

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for tp, recs in self._fetch(max_records, timeout_s).items():
            t, p = tp.topic, tp.partition
            out.extend(Record(t, p, o, k, v, ts) for o, ts, k, v in recs)
        return out

    def poll_columns(self, max_records: int, timeout_s: float) -> Columns:
        cols = Columns([], [], [], [])
        for tp, recs in self._fetch(max_records, timeout_s).items():
            cols.partitions.extend([tp.partition] * len(recs))
            cols.offsets.extend([r[0] for r in recs])
            cols.keys.extend([r[2] for r in recs])
            cols.values.extend([r[3] for r in recs])
        return cols

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:  # commit() without offsets would commit the current positions
            return
        to_commit = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                     for (t, p), o in offsets.items()}
        try:
            if self._hooks.in_revoke:
                # The rebalance listener runs on the client's I/O thread, which refuses a
                # blocking commit (RuntimeError): commit without waiting, before the rejoin.
                # If it fails, the new owner reads those records again.
                self._c.commit_async(to_commit)
                return
            self._c.commit(to_commit)
        except kerr.FencedInstanceIdError as exc:  # the heartbeat's fence only shows here
            raise fenced_member(self._group, self._instance_id, type(exc).__name__) from exc
        except kerr.KafkaError as exc:
            raise KafkaUnavailable(f"offset commit failed: {exc}") from exc

    def assignment(self) -> list[tuple[str, int]]:
        return partitions_of(self._c.assignment())

    def ping(self, timeout_s: float) -> None:
        try:  # a fresh metadata request
            self._c.bootstrap(timeout_ms=int(timeout_s * 1000), refresh=True)
        except kerr.KafkaError as exc:
            raise KafkaUnavailable(f"Kafka does not answer: {exc}") from exc

    def lag(self) -> int | None:
        lags = self.lags()
        return None if lags is None else sum(lags.values())

    def lags(self) -> dict[tuple[str, int], int] | None:
        parts = self._c.assignment()
        if not parts:
            return None
        out: dict[tuple[str, int], int] = {}
        try:
            for tp in parts:
                high = self._c.highwater(tp)
                if high is None:
                    high = self._queried_high(tp)
                pos = self._c.position(tp, timeout_ms=1000)
                if high is None or pos is None:
                    return None
                out[(tp.topic, tp.partition)] = max(high - pos, 0)
        except kerr.KafkaError as exc:
            log.debug("lag unavailable: %s", exc)
            return None
        return out

    def _queried_high(self, tp: TopicPartition) -> int | None:
        hit = self._queried.get(tp)
        if hit is not None and time.monotonic() - hit[0] < WATERMARK_CACHE_S:
            return hit[1]
        ends = self._c.end_offsets([tp], timeout_ms=1000)
        if tp not in ends:
            return None
        self._queried[tp] = (time.monotonic(), int(ends[tp]))
        return int(ends[tp])

    def close(self) -> None:
        self._c.close(autocommit=False)


def _admin(bootstrap: str, client_config: Mapping[str, Any] | None = None) -> KafkaAdminClient:
    conf = {"request_timeout_ms": 15_000,
            **translate({}, KafkaAdminClient.DEFAULT_CONFIG, role="admin",
                        shared=client_config)}
    admin: KafkaAdminClient = _build(KafkaAdminClient, bootstrap, conf)
    return admin


def create_topics(
    bootstrap: str, topics: list[str], partitions: int, config: dict[str, str],
    client_config: Mapping[str, Any] | None = None,
) -> None:
    admin = _admin(bootstrap, client_config)
    try:
        existing = _partition_counts(admin, topics)
        created = []
        for topic in topics:
            if topic in existing:
                if existing[topic] != partitions:
                    log.info("topic %s exists with %d partition(s); %d asked, left as is",
                             topic, existing[topic], partitions)
                continue
            new = NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                           topic_configs=dict(config))
            try:  # the broker's refusal read from its answer: raised, kafka-python's
                # error text is the whole request and response
                answer = admin.create_topics([new], timeout_ms=15_000, raise_errors=False)
            except kerr.KafkaError as exc:
                raise KafkaUnavailable(f"cannot create topic {topic!r}: {exc}") from exc
            refused = _create_refusal(topic, answer)
            if refused is kerr.TopicAlreadyExistsError:
                continue
            if isinstance(refused, Exception):
                raise refused
            created.append(topic)
        # Creation is acknowledged by the controller; wait until the broker serves them.
        deadline = time.monotonic() + 15.0
        while created and not set(created) <= _topic_names(admin):
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"topics {created} were created but never showed up")
            time.sleep(0.05)
    finally:
        admin.close()


_SETTING_ERRORS = (kerr.InvalidConfigurationError, kerr.InvalidPartitionsError,
                   kerr.InvalidTopicError, kerr.InvalidReplicationFactorError)


def _create_refusal(topic: str, answer: Mapping[str, Any]) -> Any:
    """What the broker's answer to a CreateTopics request says of ``topic``: None (created),
    kafka-python's TopicAlreadyExistsError class, or the error to raise, with the broker's own
    message (ConfigError for a name, setting or partition count it refuses)."""
    return _refusal(f"cannot create topic {topic!r}", topic, answer.get("topics", ()),
                    kerr.TopicAlreadyExistsError)


def _grow_refusal(topic: str, answer: Mapping[str, Any]) -> Exception | None:
    """What the broker's answer to a CreatePartitions request says of ``topic``: None
    (grown), or the error in the broker's words (ConfigError for a count it refuses, such
    as no increase over the partitions it has)."""
    refused: Exception | None = _refusal(f"cannot add partitions to {topic!r}", topic,
                                         answer.get("results", ()), None)
    return refused


def _refusal(doing: str, topic: str, results: Any, passed: type[Exception] | None) -> Any:
    """The error of ``topic`` among an admin answer's ``results`` (name, error_code,
    error_message each): None, the error class ``passed`` on to the caller, or the error to
    raise, one line in the broker's words (kafka-python's own text is the whole request and
    response)."""
    mine = [t for t in results if t.get("name") == topic]
    error = kerr.for_code(mine[0].get("error_code", 0)) if mine else kerr.NoError
    if error is kerr.NoError:
        return None
    if error is passed:
        return error
    why = f"{mine[0].get('error_message') or error.message} ({error.__name__})"
    cls = ConfigError if issubclass(error, _SETTING_ERRORS) else KafkaUnavailable
    return cls(f"{doing}: {why}")


def grow_topic(bootstrap: str, topic: str, partitions: int,
               client_config: Mapping[str, Any] | None = None) -> int:
    admin = _admin(bootstrap, client_config)
    try:
        have = _partition_counts(admin, [topic]).get(topic, 0)
        if have < partitions:
            try:  # the broker's refusal read from its answer, as for topic creation
                answer = admin.create_partitions({topic: partitions}, timeout_ms=15_000,
                                                 raise_errors=False)
            except kerr.KafkaError as exc:
                raise KafkaUnavailable(f"cannot add partitions to {topic!r}: {exc}") from exc
            refused = _grow_refusal(topic, answer.to_dict())
            if isinstance(refused, KafkaUnavailable):  # unknown topic, not authorized, ...
                raise refused
            # a count refused (no increase) is no error if another client grew it meanwhile
            deadline = time.monotonic() + (2.0 if refused is not None else 15.0)
            while (have := _partition_counts(admin, [topic]).get(topic, 0)) < partitions:
                if time.monotonic() > deadline:
                    raise refused or KafkaUnavailable(
                        f"topic {topic!r} still has {have} partition(s), {partitions} asked")
                time.sleep(0.05)
        return have
    finally:
        admin.close()


def topic_setting(bootstrap: str, topic: str, name: str,
                  client_config: Mapping[str, Any] | None = None) -> str | None:
    admin = _admin(bootstrap, client_config)
    try:
        got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                     config_filter="all")
    except kerr.KafkaError as exc:
        log.info("cannot describe topic %s: %s", topic, exc)
        return None
    finally:
        admin.close()
    entry = got.get("topic", {}).get(topic, {}).get(name)
    return None if entry is None else str(entry["value"])


def _topic_names(admin: KafkaAdminClient) -> set[str]:
    try:
        return set(admin.list_topics())
    except kerr.KafkaError as exc:
        raise KafkaUnavailable(f"cannot list topics: {exc}") from exc


def _partition_counts(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition counts of those of ``topics`` that exist (a Metadata request naming a
    missing topic could auto-create it, so only existing ones are described)."""
    topics = sorted(set(topics) & _topic_names(admin))
    if not topics:
        return {}
    try:
        described = admin.describe_topics(topics)
    except kerr.KafkaError as exc:
        raise KafkaUnavailable(f"cannot describe topics {topics}: {exc}") from exc
    return {d.get("name", d.get("topic")): len(d["partitions"]) for d in described
            if d.get("error_code", 0) == 0 and d.get("partitions")}


def metadata_ok(bootstrap: str, timeout_s: float,
                client_config: Mapping[str, Any] | None = None) -> bool:
    """Whether the broker answers a metadata request made with ``client_config`` (its
    security settings, those an admin client has); an unknown setting is a ConfigError."""
    conf = {**translate({}, KafkaAdminClient.DEFAULT_CONFIG, role="admin",
                        shared=client_config),
            "request_timeout_ms": int(timeout_s * 1000),
            "bootstrap_timeout_ms": int(timeout_s * 1000)}
    try:
        admin = _build(KafkaAdminClient, bootstrap, conf)
    except KafkaUnavailable:
        return False
    try:
        admin.list_topics()
    except kerr.KafkaError:
        return False
    finally:
        admin.close()
    return True


def read_to_end(bootstrap: str, topic: str, partitions: list[int], read_committed: bool,
                timeout_s: float, client_config: Mapping[str, Any] | None = None,
                ) -> list[tuple[bytes | None, bytes | None, int]]:
    """Every record of ``partitions`` of ``topic`` up to their current end, in log order."""
    c: KafkaConsumer = _build(KafkaConsumer, bootstrap, {
        **translate({}, KafkaConsumer.DEFAULT_CONFIG, role="consumer", shared=client_config),
        "group_id": None, "enable_auto_commit": False,
        "isolation_level": "read_committed" if read_committed else "read_uncommitted"})
    fast = install_fast_parser(c)
    out: list[tuple[bytes | None, bytes | None, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        try:  # bounded by the read's time (kafka-python waits its request timeout, 30 s)
            ends = c.end_offsets(tps, timeout_ms=_left_ms(deadline))
            starts = c.beginning_offsets(tps, timeout_ms=_left_ms(deadline))
        except kerr.KafkaError as exc:
            raise _unread(bootstrap, c, topic, partitions,
                          f"the offsets of {topic}: {exc}") from exc
        except KeyError as exc:  # kafka-python's own lookup of a partition it does not know
            raise _unread(bootstrap, c, topic, partitions, f"the offsets of {topic}: no "
                          f"partition {getattr(exc.args[0], 'partition', exc)} in the "
                          f"client's metadata") from exc
        tps = [tp for tp in tps if ends.get(tp, 0) > starts.get(tp, 0)]
        if not tps:
            return out
        c.assign(tps)
        c.seek_to_beginning(*tps)
        left = set(tps)
        while left:
            if time.monotonic() > deadline:
                raise _unread(bootstrap, c, topic, partitions,
                              f"partition(s) {', '.join(str(tp.partition) for tp in sorted(left))}"
                              f" not read to the end within {timeout_s:g} s")
            for tp, recs in c.poll(timeout_ms=200, max_records=10_000).items():
                p = tp.partition
                out.extend([(k, v, p) for _, _, k, v in as_tuples(recs, fast)])
            for tp in list(left):
                if c.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        c.close(autocommit=False)
    return out


def _left_ms(deadline: float) -> int:
    return max(int((deadline - time.monotonic()) * 1000), 100)


def _unread(bootstrap: str, c: KafkaConsumer, topic: str, partitions: Sequence[int], why: str,
            ) -> KafkaUnavailable:
    """The changelog read failed or timed out (``why``): the broker's account of the topic
    if it answers, else unreachable."""
    client = c._client
    answered, cause = _account(client.cluster, [topic], partitions,
                               wakeup=getattr(client, "wakeup", None))
    if not answered:
        return unreachable(bootstrap, f"changelog {topic}: {why}")
    return not_served(bootstrap, f"changelog {topic}", why, True, cause)


def partition_count(bootstrap: str, topic: str,
                    client_config: Mapping[str, Any] | None = None) -> int | None:
    admin = _admin(bootstrap, client_config)
    try:
        return _partition_counts(admin, [topic]).get(topic)
    finally:
        admin.close()
