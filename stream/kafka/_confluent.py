"""The confluent-kafka (librdkafka) implementation of the adapter: the fast path."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

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

log = logging.getLogger("trajstream.stream.kafka")
# librdkafka's own log lines (connection refused, ...) go here instead of raw stderr.
lib_log = logging.getLogger("trajstream.stream.kafka.librdkafka")

_PRODUCER_DEFAULTS: dict[str, Any] = {
    # The Java/kafka-python partitioner, so a key lands on the same partition whichever
    # client produced it (librdkafka's default hashes with CRC32).
    "partitioner": "murmur2_random",
    "linger.ms": 10,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "acks": "all",
    # Keeps the order of a partition's records when a request is retried (librdkafka's
    # default is off; kafka-python's is on). Without it a first batch retried after a
    # transient error landed behind the next ones: in a soak test half a positions topic
    # came out of order and the processor dropped it all as late.
    "enable.idempotence": True,
    "message.timeout.ms": 120_000,
    "queue.buffering.max.messages": 500_000,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "allow.auto.create.topics": True,
    "fetch.wait.max.ms": 100,
    # A member that died (SIGKILL, OOM, node lost) holds its partitions until its session
    # expires: 6 s (the broker's minimum) instead of 45 s, so a restart resumes in seconds
    # (bench/bench_recovery.py). Heartbeats come from a background thread every 2 s.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 2000,
    # Partitions added to a topic reach the group at its next metadata refresh: every 5 min
    # by default, and meanwhile a producer that knows them writes records nobody reads
    # (measured: a new partition taken 287 s after it was added, 53,172 positions behind,
    # their alerts as late). A metadata request every 5 s is cheap.
    "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
}
_POLL_EVERY = 1024  # serve delivery reports every this many sends


# librdkafka hands a consumer's fatal error to the application as a message error of code
# _FATAL, its fatal() flag unset and the cause (rd_kafka_fatal_error(), which Python lacks)
# only in its text; a twin --instance-id is the usual cause.
_FENCED_MEMBER = KafkaError(KafkaError.FENCED_INSTANCE_ID).str()


def _member_fence(err: KafkaError, group: str, instance_id: str | None) -> Fenced | None:
    """The end of the run when ``err`` says a twin took the member's static name."""
    if err.code() == KafkaError.FENCED_INSTANCE_ID or _FENCED_MEMBER in err.str():
        return fenced_member(group, instance_id, "FENCED_INSTANCE_ID")
    return None


def _consumer_fatal(err: KafkaError, group: str, instance_id: str | None,
                    ) -> KafkaUnavailable | None:
    """The error that ends the run for a consumer error retrying cannot cure, else None."""
    if not (err.fatal() or err.code() == KafkaError._FATAL):
        return None
    fenced = _member_fence(err, group, instance_id)
    if fenced is not None:
        return fenced
    exc = KafkaUnavailable(f"Kafka consumer failed fatally: {err.str()}")
    exc.retriable = False
    return exc


def _build(cls: type[Any], conf: dict[str, Any], what: str) -> Any:
    try:
        return cls(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"invalid confluent-kafka {what} setting (--kafka-option, or "
                          f"process's --{what}-option): {exc}") from exc


def check_settings(bootstrap: str, consumer: dict[str, Any], producer: dict[str, Any],
                   shared: dict[str, Any]) -> None:
    """Build each client with its settings and drop it: librdkafka checks names and values
    only when a client is made (the group is never joined, nothing is produced). They log
    nothing: a broker that is down is the caller's wait to report, once, not theirs."""
    quiet = {"logger": _Quiet(), "error_cb": lambda err: None}
    _build(Consumer, {**_base(bootstrap), **_CONSUMER_DEFAULTS, "group.id": throwaway_group(),
                      **shared, **consumer, **quiet}, "consumer").close()
    _build(Producer, {**_base(bootstrap), **_PRODUCER_DEFAULTS, **shared, **producer,
                      **quiet}, "producer").flush(0)


class _Quiet:
    """A librdkafka log sink that drops every line."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        pass


class _RateLimitedLog:
    """Passes on one line per (level, kind) every ``every_s``; repeats go to DEBUG.

    librdkafka reports an unreachable broker on every reconnect attempt, both as a log line
    and through error_cb; a down broker must not flood the logs.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 30.0) -> None:
        self._logger = logger
        self._every_s = every_s
        self._last: dict[tuple[int, str], float] = {}

    def log(self, level: int, msg: str, *args: Any) -> None:
        kind = str(args[0]) if args else msg[:40]
        now = time.monotonic()
        last = self._last.get((level, kind))
        if level >= logging.WARNING and (last is None or now - last >= self._every_s):
            self._last[(level, kind)] = now
            self._logger.log(level, msg, *args)
        else:
            self._logger.debug(msg, *args)

    def error(self, err: KafkaError) -> None:
        level = logging.ERROR if err.fatal() else logging.WARNING
        self.log(level, "kafka client: %s (%s)", err.name(), err.str())


# bootstrap -> librdkafka's latest authentication error there: a broker that refuses the
# credentials looks unreachable to every later call, which must say why instead
_AUTH_FAILED: dict[str, str] = {}


def _base(bootstrap: str) -> dict[str, Any]:
    limited = _RateLimitedLog(log)

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            _AUTH_FAILED[bootstrap] = err.str()
        limited.error(err)

    return {
        "bootstrap.servers": bootstrap,
        "logger": _RateLimitedLog(lib_log),
        "error_cb": on_error,
    }


def _unreachable(bootstrap: str, why: str) -> KafkaUnavailable:
    """:func:`unreachable`, unless the broker refused the credentials: then that, plainly."""
    refused = _AUTH_FAILED.get(bootstrap)
    if refused is None:
        return unreachable(bootstrap, why)
    return KafkaUnavailable(
        f"Kafka at {bootstrap} refused the credentials ({refused}); check the SASL settings "
        f"(--kafka-option sasl.mechanisms/sasl.username/sasl.password)")


def _account(handle: Any, topics: Sequence[str], partitions: Sequence[int] = (),
             timeout_s: float = PROBE_S) -> tuple[bool, str]:
    """Whether the broker answers a metadata request of a client ``handle`` (a producer or
    a consumer) for ``topics``, and the errors it reports of them (unknown, not authorized,
    partitions without a leader, and those of ``partitions`` a topic does not have)."""
    deadline = time.monotonic() + timeout_s
    causes: list[str] = []
    asked: list[str | None] = [*topics] or [None]  # None: the cluster's metadata
    for topic in asked:
        try:
            md = handle.list_topics(topic, timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaException:
            return False, ""
        tm = md.topics.get(topic) if topic is not None else None
        if tm is None:
            continue
        if tm.error is not None:
            causes.append(f"topic {topic}: {tm.error.str()}")
            continue
        bad: dict[str, list[int]] = {}
        for p in tm.partitions.values():
            if p.error is not None or p.leader < 0:
                why = p.error.str() if p.error is not None else "no leader"
                bad.setdefault(why, []).append(p.id)
        causes += [f"topic {topic} partition(s) {', '.join(map(str, sorted(ids)))}: {why}"
                   for why, ids in sorted(bad.items())]
        missing = sorted(set(partitions) - set(tm.partitions))
        if missing:
            causes.append(f"topic {topic} has {len(tm.partitions)} partition(s), no "
                          f"partition {', '.join(map(str, missing))}")
    return True, "; ".join(causes)


# A transactional producer fenced by a newer one with its id: librdkafka's own code, or the
# broker's that a send or a transaction call then fails with.
_FENCED_CODES = frozenset((KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                           KafkaError.INVALID_PRODUCER_EPOCH))


def _carried(exc: BaseException | None) -> KafkaError | None:
    """The KafkaError ``exc`` carries, or one a SystemError it causes carries (see
    :meth:`ConfluentProducer._served`)."""
    while exc is not None:
        if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
            return exc.args[0]
        exc = exc.__cause__ or exc.__context__
    return None


class ConfluentProducer:
    def __init__(self, bootstrap: str, config: dict[str, Any],
                 shared: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._fatal: KafkaError | None = None
        self._failed = 0
        self._first_failure: str = ""
        self._first_code: int | None = None
        self._stuck = False  # a flush timed out: close() does not wait again
        conf = {
            **_base(bootstrap),
            **_PRODUCER_DEFAULTS,
            **(shared or {}),
            **config,
            # Delivery reports only for failures: no per-message Python callback.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        self._tx_id: str | None = conf.get("transactional.id") or None
        if self._tx_id:
            # librdkafka requires message.timeout.ms <= transaction.timeout.ms.
            conf.setdefault("transaction.timeout.ms", conf["message.timeout.ms"])
        self._log_error = conf["error_cb"]
        conf["error_cb"] = self._on_error
        self._timeout_s = float(conf.get("message.timeout.ms", 300_000)) / 1000.0
        self._p: Producer = _build(Producer, conf, "producer")
        self._produce = self._p.produce
        self._sent = 0
        self._topic: str | None = None  # the latest topic sent to
        self._topics: set[str] = set()  # every topic sent to, for a broker's account of them

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed += 1
            if not self._first_failure:
                self._first_code = err.code()
                self._first_failure = f"{err.str()} (topic {msg.topic()})"

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        self._log_error(err)

    def _fatal_error(self, err: KafkaError) -> KafkaUnavailable:
        """The end of the run once the producer failed fatally (it cannot send again): a
        fenced one says by whom."""
        if self._fatal is None:
            self._fatal = err
        err = self._fatal
        if self._tx_id and err.code() in _FENCED_CODES:
            return fenced_producer(self._tx_id, err.name())
        exc = KafkaUnavailable(f"Kafka producer failed fatally: {err.str()}")
        exc.retriable = False
        return exc

    def _served(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, a call that serves the callbacks (poll, flush).

        confluent-kafka raises the producer's fatal error (a twin's transactional id fenced
        it) from such a call, not through error_cb; when a failed delivery is reported in the
        same call, as the cause of a SystemError.
        """
        try:
            return fn(*args)
        except (KafkaException, SystemError) as exc:
            err = _carried(exc)
            if err is None or not err.fatal():
                raise
            raise self._fatal_error(err) from exc

    def _send_failed(self, topic: str, exc: KafkaException) -> KafkaUnavailable:
        err = _carried(exc)
        if err is None or not (err.fatal() or err.code() == KafkaError._FATAL):
            return KafkaUnavailable(f"cannot send to {topic}: {exc}")
        # produce() says only _FATAL: serving the callbacks raises the cause, if not yet seen
        self._served(self._p.poll, 0)
        return self._fatal_error(err)

    def _check(self) -> None:
        if self._fatal is not None:
            raise self._fatal_error(self._fatal)
        if self._failed:
            if self._tx_id and self._first_code in _FENCED_CODES:
                raise fenced_producer(self._tx_id, KafkaError(self._first_code).name())
            raise undelivered(self._failed, self._bootstrap, self._first_failure)

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             partition: int | None = None) -> None:
        if topic is not self._topic:
            self._topic = topic
            self._topics.add(topic)
        try:
            if partition is None:
                self._produce(topic, value, key)
            else:
                self._p.produce(topic, value, key, partition=partition)
        except BufferError:
            self._wait_for_room(topic, value, key, partition)
        except KafkaException as exc:
            raise self._send_failed(topic, exc) from exc
        self._sent += 1
        if self._sent % _POLL_EVERY == 0:
            self._served(self._p.poll, 0)
            self._check()

    def _wait_for_room(self, topic: str, value: bytes | None, key: bytes | None,
                       partition: int | None) -> None:
        """The local queue is full: serve the network until there is room (or give up)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            self._served(self._p.poll, 0.05)
            self._check()
            try:
                self._p.produce(topic, value, key, partition=-1 if partition is None
                                else partition)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise self._not_acknowledged(
                        f"send queue still full after {self._timeout_s:g} s") from None
            except KafkaException as exc:
                raise self._send_failed(topic, exc) from exc

    def await_partitions(self, topic: str, count: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        have: int | None = None  # partitions in the broker's latest answer
        while True:
            try:  # a metadata request: librdkafka takes its answer into its own cache
                md = self._p.list_topics(topic, timeout=max(deadline - time.monotonic(), 0.1))
                have = len(md.topics[topic].partitions)
                if have >= count:
                    return
            except KafkaException as exc:
                if time.monotonic() > deadline and have is None:
                    raise _unreachable(self._bootstrap, str(exc)) from exc
            if time.monotonic() > deadline:
                if have is None:
                    raise _unreachable(self._bootstrap, f"{topic} has not {count} partitions")
                raise too_few_partitions(self._bootstrap, topic, have, count, timeout_s)
            time.sleep(0.1)

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self._served(self._p.flush, timeout_s)
        self._check()
        if left:
            self._stuck = True
            raise self._not_acknowledged(
                f"{left} message(s) still undelivered after {timeout_s:g} s")

    def _not_acknowledged(self, why: str) -> KafkaUnavailable:
        """Messages not acknowledged in time: the broker's account of the topics sent to if
        it answers, else unreachable (or the credentials it refused)."""
        answered, cause = _account(self._p, sorted(self._topics))
        if not answered:
            return _unreachable(self._bootstrap, why)
        return not_acknowledged(self._bootstrap, why, True, cause)

    # -- transactions (exactly-once; needs transactional.id) -------------------------------

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        """Register the transactional id, fencing (and aborting) an older producer's open
        transaction."""
        self._tx(self._p.init_transactions, timeout_s)

    def begin_transaction(self) -> None:
        self._tx(self._p.begin_transaction)

    def send_offsets_to_transaction(self, offsets: dict[tuple[str, int], int],
                                    consumer: Any, timeout_s: float = 30.0) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._tx(self._p.send_offsets_to_transaction, tps, consumer.group_metadata(),
                     timeout_s)
        except KafkaUnavailable as exc:
            # A twin under the consumer's static name: the group coordinator refuses the
            # offsets, so the fence reaches the producer here, not the consumer.
            err = _carried(exc)
            fenced = None if err is None else consumer.fenced_by(err)
            if fenced is not None:
                raise fenced from exc
            raise

    def commit_transaction(self, timeout_s: float = 30.0) -> None:
        self._tx(self._p.commit_transaction, timeout_s)
        self._check()

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        self._tx(self._p.abort_transaction, timeout_s)

    def _tx(self, fn: Any, *args: Any) -> None:
        try:
            self._served(fn, *args)  # fatal errors (fenced) raised there
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka transaction failed: {exc.args[0].str()}") from exc

    def close(self) -> None:
        broken = self._stuck or self._fatal is not None or self._failed
        try:
            left = self._served(self._p.flush, 0.0 if broken else 5.0)
        except KafkaUnavailable:  # failed fatally: the run ends with that error already
            left = len(self._p)
        if left:  # close() itself would wait for them until message.timeout.ms
            log.warning("closing Kafka producer: dropping %d undelivered message(s)", left)
            self._p.purge()
            self._p.poll(0)
        with warnings.catch_warnings():
            if self._fatal is not None:  # its failed abort of the open transaction: said
                warnings.simplefilter("ignore", RuntimeWarning)
            self._p.close()


class ConfluentConsumer:
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
            **_base(bootstrap),
            **_CONSUMER_DEFAULTS,
            "group.id": group or throwaway_group(),
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            **(shared or {}),
            **config,
        }
        self._from_beginning = str(conf["auto.offset.reset"]) in ("earliest", "smallest",
                                                                     "beginning")
        self._group = str(conf["group.id"])
        self._instance_id: str | None = conf.get("group.instance.id")
        self._c: Consumer = _build(Consumer, conf, "consumer")
        self._consume = self._c.consume
        # Watermarks and start offsets looked up at the broker, with the time of the lookup.
        self._queried: dict[tuple[str, int], tuple[float, int]] = {}
        self._start: dict[tuple[str, int], int] = {}
        self._hooks = hooks = RebalanceHooks(on_assign, on_revoke)
        self._commit_call: _Call | None = None
        self._topics = list(topics)
        self._c.subscribe(topics, on_assign=lambda _, parts: hooks.assigned(parts),
                          on_revoke=lambda _, parts: hooks.revoked(parts),
                          on_lost=lambda _, parts: hooks.revoked(parts))

    def group_metadata(self) -> Any:
        return self._c.consumer_group_metadata()

    def fenced_by(self, err: KafkaError) -> Fenced | None:
        """The end of the run when ``err`` says a twin took this member's static name."""
        return _member_fence(err, self._group, self._instance_id)

    def _messages(self, max_records: int, timeout_s: float) -> list[Any]:
        """``consume()``, but not while an offset commit is unanswered: librdkafka's consume
        then waits behind it, past its own timeout, with the broker gone for good (the stall
        clock, which ends the process, would never run)."""
        call = self._commit_call
        if call is not None and not call.done.wait(timeout_s):
            raise KafkaUnavailable("an offset commit is still unanswered; not reading until "
                                   "the broker answers")
        try:
            # What has arrived, without waiting to fill the batch: consume(n, timeout) waits
            # until n messages or the timeout, which at a live rate below n per poll added up
            # to the whole wait to every record (as the other sources, wait only for the first).
            msgs: list[Any] = self._consume(num_messages=max_records, timeout=0)
            if not msgs and timeout_s > 0:
                msgs = self._consume(num_messages=1, timeout=timeout_s)
                if msgs and max_records > 1:
                    msgs += self._consume(num_messages=max_records - 1, timeout=0)
            return msgs
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            fatal = (_consumer_fatal(err, self._group, self._instance_id)
                     if isinstance(err, KafkaError) else None)
            if fatal is not None:
                raise fatal from exc
            raise KafkaUnavailable(f"Kafka consumer failed: {exc}") from exc

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        msgs = self._messages(max_records, timeout_s)
        return [Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                       m.timestamp()[1]) for m in self._valid(msgs)]

    def poll_columns(self, max_records: int, timeout_s: float) -> Columns:
        msgs = self._messages(max_records, timeout_s)
        if any([m.error() is not None for m in msgs]):  # rare: drop or raise as poll does
            msgs = self._valid(msgs)
        # A comprehension per column: several times cheaper than a tuple per message.
        return Columns([m.partition() for m in msgs], [m.offset() for m in msgs],
                       [m.key() for m in msgs], [m.value() for m in msgs])

    def _valid(self, msgs: list[Any]) -> list[Any]:
        """Messages without an error; non-fatal errors logged (partition EOF silently),
        fatal ones raised."""
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
                continue
            fatal = _consumer_fatal(err, self._group, self._instance_id)
            if fatal is not None:
                raise fatal
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer: %s", err)
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit synchronously, but give up after COMMIT_TIMEOUT_S (asynchronously inside
        the revoke callback, see below).

        librdkafka's synchronous commit has no timeout: with the group coordinator gone it
        waits for good, and the stall clock that ends a processor whose broker is gone would
        never run. So the commit runs in a daemon thread; an unanswered one is a
        KafkaUnavailable (retried by the caller; later offsets supersede it).
        """
        if not offsets:  # an empty list would commit the current positions instead
            return
        prev = self._commit_call
        if prev is not None and not prev.done.wait(COMMIT_TIMEOUT_S):
            raise KafkaUnavailable(f"an offset commit is still unanswered after "
                                   f"{COMMIT_TIMEOUT_S:g} s; is the broker reachable?")
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if self._hooks.in_revoke:
            # Inside the revoke callback (called from consume()) a synchronous commit from
            # the daemon thread is not answered until the callback returns: the member and
            # the one joining both waited COMMIT_TIMEOUT_S, and the new owner read the
            # records again. An asynchronous commit goes out before the member rejoins and
            # never blocks; if it fails, the new owner reads those records again.
            try:
                self._c.commit(offsets=tps, asynchronous=True)
            except KafkaException as exc:
                raise KafkaUnavailable(f"offset commit failed: {exc}") from exc
            return
        call = self._commit_call = _Call(self._c.commit, offsets=tps, asynchronous=False)
        if not call.done.wait(COMMIT_TIMEOUT_S):
            raise KafkaUnavailable(f"offset commit unanswered after {COMMIT_TIMEOUT_S:g} s; "
                                   f"is the broker reachable?")
        if isinstance(call.error, KafkaException):
            raise KafkaUnavailable(f"offset commit failed: {call.error}") from call.error
        if call.error is not None:
            raise call.error
        for tp in call.result or ():
            if tp.error is not None:
                raise KafkaUnavailable(f"offset commit failed for {tp.topic}[{tp.partition}]: "
                                       f"{tp.error}")

    def assignment(self) -> list[tuple[str, int]]:
        return partitions_of(self._c.assignment())

    def ping(self, timeout_s: float) -> None:
        try:  # a metadata request; a topic that does not exist yet is still an answer
            self._c.list_topics(self._topics[0], timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka does not answer: {exc}") from exc

    def expired(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        try:
            for tp in self._c.committed([TopicPartition(t, p) for t, p in partitions],
                                        timeout=COMMIT_TIMEOUT_S):
                if tp.offset >= 0:
                    low = self._c.get_watermark_offsets(tp, timeout=COMMIT_TIMEOUT_S)[0]
                    if tp.offset < low:
                        out[(tp.topic, tp.partition)] = low - tp.offset
        except KafkaException as exc:
            log.info("cannot tell whether records expired: %s", exc)
        return out

    def lag(self) -> int | None:
        lags = self.lags()
        return None if lags is None else sum(lags.values())

    def lags(self) -> dict[tuple[str, int], int] | None:
        """Per assigned partition, records behind the high watermark; None when not known
        now. Also None while an offset commit is unanswered: a processor whose broker had
        gone was seen stuck in librdkafka's ``assignment()`` (no timeout) beside such a
        commit, as ``consume()`` waits behind one, and its stall clock never ended it."""
        call = self._commit_call
        if call is not None and not call.done.is_set():
            return None
        parts = self._c.assignment()
        if not parts:
            return None
        out: dict[tuple[str, int], int] = {}
        try:
            positions = self._c.position(parts)
            for tp in positions:
                key = (tp.topic, tp.partition)
                high = self._high(tp)
                if high is None:
                    return None
                pos = tp.offset if tp.offset >= 0 else self._start_offset(tp, high)
                if pos is None:
                    return None
                out[key] = max(high - pos, 0)
                if tp.offset >= 0:
                    self._start.pop(key, None)
        except KafkaException as exc:
            log.debug("lag unavailable: %s", exc)
            return None
        return out

    def _high(self, tp: TopicPartition) -> int | None:
        """High watermark: from the last fetch response, else a broker query cached ~1 s."""
        cached = self._c.get_watermark_offsets(tp, cached=True)
        if cached is not None and cached[1] >= 0:
            return int(cached[1])
        key = (tp.topic, tp.partition)
        hit = self._queried.get(key)
        if hit is not None and time.monotonic() - hit[0] < WATERMARK_CACHE_S:
            return hit[1]
        wm = self._c.get_watermark_offsets(tp, timeout=1.0)
        if wm is None:
            return None
        self._queried[key] = (time.monotonic(), int(wm[1]))
        return int(wm[1])

    def _start_offset(self, tp: TopicPartition, high: int) -> int | None:
        """Where consumption of a not-yet-read partition starts: committed, else the reset."""
        key = (tp.topic, tp.partition)
        if key not in self._start:
            got = self._c.committed([TopicPartition(tp.topic, tp.partition)], timeout=1.0)
            offset = got[0].offset if got else OFFSET_INVALID
            if offset < 0:
                if not self._from_beginning:
                    return high
                wm = self._c.get_watermark_offsets(tp, timeout=1.0)
                if wm is None:
                    return None
                offset = int(wm[0])
            self._start[key] = offset
        return self._start[key]

    def close(self) -> None:
        if self._commit_call is not None and not self._commit_call.done.is_set():
            # close() would wait behind the unanswered commit: leave the handle to the exit
            log.warning("closing Kafka consumer with an offset commit still unanswered")
            return
        # librdkafka's close leaves the group through the coordinator, without a timeout: with
        # the broker gone it may wait for good and hold up the exit the stall clock decided.
        if not _Call(self._c.close, name="kafka-close").done.wait(CLOSE_TIMEOUT_S):
            log.warning("Kafka consumer still closing after %g s (broker unreachable?): "
                        "leaving it to the exit", CLOSE_TIMEOUT_S)


COMMIT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0


class _Call:
    """``fn(**kw)`` in a daemon thread (never holds up the interpreter's exit)."""

    def __init__(self, fn: Any, name: str = "kafka-commit", **kw: Any) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, args=(fn, kw), daemon=True, name=name).start()

    def _run(self, fn: Any, kw: dict[str, Any]) -> None:
        try:
            self.result = fn(**kw)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.done.set()


def _admin(bootstrap: str, client_config: Mapping[str, Any] | None) -> AdminClient:
    admin: AdminClient = _build(AdminClient, {**_base(bootstrap), **(client_config or {})},
                                "admin")
    return admin


def create_topics(
    bootstrap: str, topics: list[str], partitions: int, config: dict[str, str],
    client_config: Mapping[str, Any] | None = None,
) -> None:
    admin = _admin(bootstrap, client_config)
    existing = _list_topics(admin, bootstrap)
    new = [NewTopic(t, num_partitions=partitions, config=config) for t in topics
           if t not in existing]
    if new:
        futures = admin.create_topics(new, request_timeout=15.0)
        for topic, fut in futures.items():
            try:
                fut.result(timeout=20.0)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if err.code() in (KafkaError.INVALID_CONFIG, KafkaError.INVALID_PARTITIONS,
                                  KafkaError.TOPIC_EXCEPTION,
                                  KafkaError.INVALID_REPLICATION_FACTOR):
                    raise ConfigError(f"cannot create topic {topic!r}: {err.str()}") from exc
                raise KafkaUnavailable(f"cannot create topic {topic!r}: {err.str()}") from exc
    # Creation is acknowledged by the controller; wait until the broker serves the topics.
    deadline = time.monotonic() + 15.0
    while True:
        existing = _list_topics(admin, bootstrap)
        if all(t in existing for t in topics):
            break
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"topics {topics} were created but never showed up")
        time.sleep(0.05)
    for t in topics:
        if t not in (n.topic for n in new) and existing[t] != partitions:
            log.info("topic %s exists with %d partition(s); %d asked, left as is",
                     t, existing[t], partitions)


def grow_topic(bootstrap: str, topic: str, partitions: int,
               client_config: Mapping[str, Any] | None = None) -> int:
    admin = _admin(bootstrap, client_config)
    have = _list_topics(admin, bootstrap).get(topic, 0)
    if have < partitions:
        fut = admin.create_partitions([NewPartitions(topic, partitions)],
                                      request_timeout=15.0)[topic]
        try:
            fut.result(timeout=20.0)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.INVALID_PARTITIONS:  # INVALID: grown meanwhile
                raise KafkaUnavailable(f"cannot add partitions to {topic!r}: "
                                       f"{err.str()}") from exc
        deadline = time.monotonic() + 15.0
        while (have := _list_topics(admin, bootstrap).get(topic, 0)) < partitions:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"topic {topic!r} still has {have} partition(s), "
                                       f"{partitions} asked")
            time.sleep(0.05)
    return have


def topic_setting(bootstrap: str, topic: str, name: str,
                  client_config: Mapping[str, Any] | None = None) -> str | None:
    admin = _admin(bootstrap, client_config)
    fut = admin.describe_configs([ConfigResource("topic", topic)], request_timeout=15.0)
    try:
        entry = next(iter(fut.values())).result(timeout=20.0).get(name)
    except KafkaException as exc:
        log.info("cannot describe topic %s: %s", topic, exc)
        return None
    return None if entry is None else str(entry.value)


def _list_topics(admin: AdminClient, bootstrap: str) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=10.0)
    except KafkaException as exc:
        admin.poll(0)  # serves error_cb: an authentication error explains the failure
        raise _unreachable(bootstrap, str(exc)) from exc
    _AUTH_FAILED.pop(bootstrap, None)  # answered: an earlier refusal no longer explains
    return {name: len(t.partitions) for name, t in md.topics.items()
            if t.error is None and t.partitions}


def metadata_ok(bootstrap: str, timeout_s: float,
                client_config: Mapping[str, Any] | None = None) -> bool:
    """Whether the broker answers a metadata request made with ``client_config`` (its
    security settings); a setting librdkafka refuses is a ConfigError."""
    conf: dict[str, Any] = {**(client_config or {}), "bootstrap.servers": bootstrap,
                            "logger": _RateLimitedLog(lib_log, every_s=1e9),
                            "error_cb": lambda err: None}
    admin = _build(AdminClient, conf, "admin")
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def read_to_end(bootstrap: str, topic: str, partitions: list[int], read_committed: bool,
                timeout_s: float, client_config: Mapping[str, Any] | None = None,
                ) -> list[tuple[bytes | None, bytes | None, int]]:
    """Every record of ``partitions`` of ``topic`` up to their current end, in log order."""
    conf = {**_base(bootstrap), **(client_config or {}),
            "group.id": throwaway_group(), "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted"}
    c: Consumer = _build(Consumer, conf, "consumer")
    out: list[tuple[bytes | None, bytes | None, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            try:
                lo, hi = c.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=max(deadline - time.monotonic(), 0.1))
            except KafkaException as exc:
                err = _carried(exc)
                raise _unread(bootstrap, c, topic, partitions, f"the offsets of {topic}[{p}]: "
                              f"{err.str() if err is not None else exc}") from exc
            if hi > lo:
                ends[p] = hi
        if not ends:
            return out
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        left = set(ends)
        last_error = ""  # the latest error the reads met (not authorized, no leader, ...)
        while left:
            if time.monotonic() > deadline:
                raise _unread(bootstrap, c, topic, partitions,
                              f"partition(s) {', '.join(map(str, sorted(left)))} not read to "
                              f"the end within {timeout_s:g} s{last_error}")
            for m in c.consume(num_messages=10_000, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaUnavailable(f"changelog read failed: {err.str()}")
                    last_error = f"; last error: {err.str()}"
                    continue
                out.append((m.key(), m.value(), int(m.partition() or 0)))
            for tp in c.position([TopicPartition(topic, p) for p in left]):
                if tp.offset >= ends[tp.partition]:
                    left.discard(tp.partition)
    finally:
        c.close()
    return out


def _unread(bootstrap: str, c: Consumer, topic: str, partitions: Sequence[int], why: str,
            ) -> KafkaUnavailable:
    """The changelog read failed or timed out (``why``): the broker's account of the topic
    if it answers, else unreachable (or the credentials it refused)."""
    answered, cause = _account(c, [topic], partitions)
    if not answered:
        return _unreachable(bootstrap, f"changelog {topic}: {why}")
    return not_served(bootstrap, f"changelog {topic}", why, True, cause)


def partition_count(bootstrap: str, topic: str,
                    client_config: Mapping[str, Any] | None = None) -> int | None:
    admin = _admin(bootstrap, client_config)
    return _list_topics(admin, bootstrap).get(topic)
