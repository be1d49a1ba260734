"""The micro-batch loop: poll -> decode -> reject policy -> engine -> sinks -> flush -> commit.

Everything the loop needs is built once (:func:`build` for Kafka and file I/O; the demo
builds a memory source itself) and bound to locals before the loop starts. Offsets are
committed on an interval and only after every sink (alerts, predictions, dead letters) has
been flushed, and (per input partition) only up to the first record the engine still holds
back, so a crash loses nothing (at-least-once; replays are dropped as stale). A stop
request (SIGTERM/SIGINT via ``stop``) finishes the current batch, flushes, commits and
returns normally.

At the end of a finite input (file, demo, Kafka ``--until-end``) the engine is flushed so
the last ticks are assessed too; a stop request does not flush the engine, since records it
holds back will be read again after a restart.

Fault tolerance (Kafka): at every commit point the outputs are flushed, then the engine's
changes are written to the state changelog (stream/changelog.py, stream/checkpoint.py) and
flushed, and only then are the offsets committed; the state is
restored when partitions are assigned (start-up, rebalance); state of revoked partitions is
dropped after a last commit (the whole engine, event-time clock included, when all of them
are revoked, so the next assignment restores like a restart). With ``exactly_once`` the
outputs, the changelog and the offsets are one Kafka transaction per commit interval. A
broker outage is retried with exponential backoff (counted in
``trajstream_kafka_errors_total``, logged at a rate limit); after ``max_stall_s`` without the
broker answering (a commit, or a metadata request while idle) the run raises
:class:`Stalled` (exit 1) so an orchestrator restarts the process. Messages the producer
gave up on cannot be retried in place: that raises at once, and the restart replays them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.errors import ConfigError, Fenced, KafkaUnavailable, TrajstreamError
from trajstream.model.predictors import PathSpec, Predictor
from trajstream.outputs import OutputError
from trajstream.stream.checkpoint import Checkpoint
from trajstream.stream.codec import CodecConfig, PositionBatch, decode_batch
from trajstream.stream.config import ProcessorConfig
from trajstream.stream.deadletter import RejectPolicy
from trajstream.stream.engine import Engine, Outputs
from trajstream.stream.metrics import DROP_REASONS, Metrics
from trajstream.stream.plausibility import FrameCheck
from trajstream.stream.risk_process import RiskProcessUnavailable
from trajstream.stream.sinks import Delivery, JsonlSink, KafkaSink, Output, Sink
from trajstream.stream.sources import FileSource, KafkaSource, Source
from trajstream.stream.tiles import TileGrid

__all__ = ["IO", "Processor", "Stalled", "build_io", "load_predictor"]

log = logging.getLogger("trajstream.stream.app")

STATUS_INTERVAL_S = 30.0
LAG_INTERVAL_S = 1.0
PING_INTERVAL_S = 1.0  # while no records come, check this often that the broker answers
ASSESSING_POLL_S = 0.005  # a poll's longest wait while the risk process has alerts to come
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
RETRY_LOG_INTERVAL_S = 10.0
FLUSH_TIMEOUT_S = 10.0
CHUNK_SPAN_S = 1.0  # event time one engine call covers at most (bounds work per call)


class Stalled(KafkaUnavailable):
    """No progress for ``max_stall_s``: exit, let it restart.

    Progress is the broker answering: offsets committed, or, while no records come (a quiet
    topic, or no partitions because the group revoked them when the broker went away), a
    metadata request answered. Records already buffered in the client are not progress:
    their outputs cannot be delivered without the broker.
    """

    retriable = False


def main_thread_times() -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of the calling thread, from
    Linux's scheduler statistics; None where they are not available.

    With the wall clock they tell where a run's time went: computing, starved of a core by
    other work, or idle (waiting for the broker: polls, commits, rebalances, restores).
    CPU seconds alone cannot tell the last two apart.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            run_ns, wait_ns = f.read().split()[:2]
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


def event_time_chunks(ts: np.ndarray, span_s: float = CHUNK_SPAN_S) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of a batch, in input order, each covering at most about
    ``span_s`` of event time (by the running maximum, so disorder cannot split finely).

    The engine's results do not depend on where batches are cut; cutting by event time
    bounds the risk ticks one engine call releases, so a stop request waits for at most one
    chunk, whatever the fix rate or the gaps in the input.
    """
    n = ts.shape[0]
    if not n:
        return []
    running = np.maximum.accumulate(np.where(np.isfinite(ts), ts, -np.inf))
    if not math.isfinite(running[-1] - running[0]) or running[-1] - running[0] <= span_s:
        return [(0, n)]
    out, lo = [], 0
    while lo < n:
        hi = int(np.searchsorted(running, running[lo] + span_s, side="right"))
        hi = max(hi, lo + 1)
        out.append((lo, hi))
        lo = hi
    return out


def _held_by_later_chunks(held: set[int] | None, parts: np.ndarray | None,
                          spans: list[tuple[int, int]], i: int) -> set[int] | None:
    """The partitions holding the watermark for chunk ``i`` of a batch: those with lag, and
    those with records in a later chunk of the same batch. A partition this poll drained
    shows no lag, yet its records later in the batch must not arrive behind a watermark
    that chunk ``i`` moved past them (the whole batch in one call holds them the same way).
    """
    if parts is None or i == len(spans) - 1:
        return held
    later = np.unique(parts[spans[i + 1][0]:]).tolist()
    return set(held or ()).union(later)


class _Rebalance:
    """Forwards the consumer's assignment callbacks to the processor built after it."""

    def __init__(self) -> None:
        self.target: Any = None

    def assigned(self, parts: list[tuple[str, int]]) -> None:
        if self.target is not None:
            self.target._on_assign(parts)

    def revoked(self, parts: list[tuple[str, int]]) -> None:
        if self.target is not None:
            self.target._on_revoke(parts)


def load_predictor(name: str, spec: PathSpec, weights: str | None = None) -> Predictor:
    """The named predictor ("lstm", "cv", "ctrv") for ``spec``; ``weights`` (LSTM) default
    to the shipped ones."""
    from trajstream import model

    return model.load_predictor(name, spec, weights=weights)


@dataclass
class IO:
    """A source, the outputs the engine's messages go to (stream/sinks.py) and the dead
    letters' sink; ``closers`` release shared clients last."""

    source: Source
    outputs: list[Output]
    dlq: Sink | None = None
    kafka_client: str = "none"
    closers: list[Any] = field(default_factory=list)
    changelog: Any = None  # stream.changelog.Changelog
    producer: Any = None  # the Kafka producer of every output (transactions)
    rebalance: _Rebalance | None = None
    exactly_once: bool = False
    grid: TileGrid | None = None  # two stages: the tiles of the internal topic
    inputs: int = 0  # two stages: the positions topic's partition count

    def discard(self) -> None:
        """Release everything without completing it (a run that could not start): file
        outputs are discarded, so an existing file keeps its content."""
        sinks = [o.sink for o in self.outputs] + ([self.dlq] if self.dlq else [])
        for close in [*(getattr(s, "abort", s.close) for s in sinks), self.source.close,
                      *self.closers]:
            with contextlib.suppress(Exception):
                close()


def build_io(config: ProcessorConfig) -> IO:
    """Source and sinks for a Kafka or file configuration (the memory source is the demo's)."""
    if config.source == "file":
        assert config.input_path and config.alerts_out
        # The input first: one that cannot be read leaves no output file behind.
        io = IO(FileSource(config.input_path), [])
        try:
            io.outputs.append(Output("alerts", JsonlSink(config.alerts_out)))
            if config.predictions_out:
                io.outputs.append(Output("predictions", JsonlSink(config.predictions_out)))
            io.dlq = JsonlSink(config.dlq_out) if config.dlq_out else None
        except BaseException:
            io.discard()
            raise
        return io
    if config.source != "kafka":
        raise ConfigError(f"build_io handles kafka and file sources, not {config.source!r}")
    from trajstream.stream.changelog import TOPIC_CONFIG, Changelog
    from trajstream.stream.kafka import (
        check_settings,
        create_topics,
        grow_topic,
        make_consumer,
        make_producer,
        partition_count,
        resolve_client,
        topic_setting,
    )

    assert config.bootstrap
    client = resolve_client(config.kafka_client)
    eos = config.exactly_once
    shared = dict(config.kafka_config)
    admin = {**shared, **config.admin_config}
    stage = config.stage
    alerts_topic = config.alerts_topic if stage != "predict" else None
    consumer_conf = dict(config.consumer_config)
    if config.instance_id:
        consumer_conf.setdefault("group.instance.id", config.instance_id)
    if eos and "isolation.level" not in shared:
        consumer_conf.setdefault("isolation.level", "read_committed")
    producer_conf = dict(config.producer_config)
    if stage == "predict":
        # progress records must follow the tick records they cover, also across retries
        producer_conf.setdefault("enable.idempotence", "true")
    check_settings(config.bootstrap, client=client, consumer=consumer_conf,
                   producer=producer_conf, shared=shared)
    topics = [t for t in (alerts_topic, config.predictions_topic, config.dlq_topic) if t]
    create_topics(config.bootstrap, topics, client=client, client_config=admin)
    changelog_topic = config.changelog_name
    inputs = partition_count(config.bootstrap, config.positions_topic, client=client,
                             client_config=admin) or 0
    if not inputs:
        # Created here, not by the consumer's subscription, so that a misspelt name is said
        # once, with or without a changelog (which needs the input's partition count).
        create_topics(config.bootstrap, [config.positions_topic], client=client,
                      client_config=admin)
        inputs = 1
        log.warning("positions topic %r did not exist at %s: created it with 1 partition "
                    "(is the name the producers use? For more partitions, create it "
                    "before the processor starts)", config.positions_topic,
                    config.bootstrap)
    n_parts = inputs
    grid = None
    if stage != "all":
        # The internal topic has the positions topic's partition count (whichever stage
        # starts first creates it); the risk stage's changelog follows the internal topic.
        create_topics(config.bootstrap, [config.internal_name], partitions=inputs,
                      client=client, client_config=admin)
        tiles = partition_count(config.bootstrap, config.internal_name, client=client,
                                client_config=admin)
        grid = TileGrid(config.tile_m, config.halo, tiles or inputs)
        if stage == "risk":
            n_parts = grid.partitions
    if changelog_topic:
        create_topics(config.bootstrap, [changelog_topic], partitions=n_parts, client=client,
                      config=TOPIC_CONFIG, client_config=admin)
        policy = topic_setting(config.bootstrap, changelog_topic, "cleanup.policy",
                               client=client, client_config=admin)
        if policy is not None and "compact" not in policy.split(","):
            raise ConfigError(
                f"changelog topic {changelog_topic!r} is not compacted (cleanup.policy="
                f"{policy}; created by a client's auto-creation after it was deleted?): "
                f"state would be deleted with age and a restore would read every version. "
                f"Set cleanup.policy=compact and segment.ms=60000 on it, or use a new "
                f"--changelog-topic")
        have = partition_count(config.bootstrap, changelog_topic, client=client,
                               client_config=admin) or 0
        if have < n_parts:  # the input grew: its new partitions' state goes to new ones
            log.warning("changelog topic %r has %d partition(s), its input topic %d: adding "
                        "%d", changelog_topic, have, n_parts, n_parts - have)
            have = grow_topic(config.bootstrap, changelog_topic, n_parts, client=client,
                              client_config=admin)
        if have != n_parts:
            raise ConfigError(
                f"changelog topic {changelog_topic!r} has {have} partition(s), its input "
                f"topic {n_parts}: they must match (use a new --changelog-topic)")
    rebalance = _Rebalance()
    source_topic = config.internal_name if stage == "risk" else config.positions_topic
    consumer = make_consumer(
        config.bootstrap,
        [source_topic],
        group=config.consumer_group,
        client=client,
        from_beginning=config.from_beginning,
        config=consumer_conf,
        shared=shared,
        on_assign=rebalance.assigned,
        on_revoke=rebalance.revoked,
    )
    producer = make_producer(
        config.bootstrap, client=client, config=producer_conf, shared=shared,
        transactional_id=config.tx_id if eos else None,
    )
    source = KafkaSource(consumer, source_topic, until_end=config.until_end)
    outputs = [Output(kind, KafkaSink(producer, topic)) for kind, topic in
               (("alerts", alerts_topic), ("predictions", config.predictions_topic),
                ("internal", config.internal_name if stage == "predict" else None))
               if topic]
    changelog = Changelog(producer, changelog_topic, bootstrap=config.bootstrap, client=client,
                          partitions=n_parts, read_committed=eos, client_config=shared,
                          admin_config=admin) if changelog_topic else None
    return IO(
        source,
        outputs,
        KafkaSink(producer, config.dlq_topic) if config.dlq_topic else None,
        kafka_client=client,
        closers=[producer.close],
        changelog=changelog,
        producer=producer,
        rebalance=rebalance,
        exactly_once=eos,
        grid=grid,
        inputs=inputs,
    )


def build_engine(config: ProcessorConfig, io: IO, predictor: Predictor | None,
                 metrics: Metrics) -> Any:
    """The engine of the configured stage: the whole pipeline (``all``), admission and
    vehicles publishing to the internal topic (``predict``), or the tile-keyed risk engine
    (``risk``, no predictor)."""
    if config.stage == "risk":
        from trajstream.stream.risk_stage import RiskEngine

        assert io.grid is not None
        return RiskEngine(config.engine, io.grid, metrics)
    if predictor is None:
        raise ConfigError(f"--stage {config.stage} needs a predictor")
    publisher = None
    if config.stage == "predict":
        from trajstream.stream.predict_stage import TilePublisher

        assert io.grid is not None
        publisher = TilePublisher(io.grid, predictor.name, io.inputs)
    try:
        return Engine(config.engine, predictor, metrics, publisher=publisher,
                      risk_process=config.risk_in_process)
    except RiskProcessUnavailable as exc:
        if config.risk_process:  # asked for by name: say why it cannot be
            raise RiskProcessUnavailable(
                f"{exc}: --no-risk-process assesses risk in the main process") from exc
        log.warning("%s: assessing risk in the main process instead (the same alerts)", exc)
        return Engine(config.engine, predictor, metrics, publisher=publisher)


def nothing_accepted(s: dict[str, Any]) -> TrajstreamError | None:
    """The error for an input read to its end of which not one record was used: a mistake
    (milliseconds for seconds, UTF-16, lat/lon without --origin-lat/--origin-lon), not a
    quiet run; None when some record was used (or there was none)."""
    if not s["consumed"] or s["accepted"]:
        return None
    reasons = {**s["rejected_by_reason"],
               **{k: s[k] for k in DROP_REASONS if s.get(k)}}
    counts = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
    example = f"; e.g. {s['rejected_example']}" if s["rejected_example"] else ""
    return TrajstreamError(f"none of the {s['consumed']} records was accepted ({counts})"
                           f"{example}")


@dataclass(frozen=True)
class _CommitPoint:
    """What a commit marks done, fixed where it was cut (:meth:`Processor._cut`)."""

    done: int | None  # records before this seq (None: no such bound) ...
    pending: dict[int, int] | None  # ... and, per partition, before its first waiting one
    offsets: dict[tuple[str, int], int] | None  # Kafka: those as offsets to commit
    checkpoint: Callable[[], Checkpoint] | None  # the changelog's (waits for it); None: none
    ready: Callable[[], bool]  # the risk process has caught up with the point
    owned: frozenset[int]


class Processor:
    """One processor instance: an engine between a source and its sinks.

    ``run`` returns a summary dict (records, alerts by severity, drops, rejections, mean
    online error, throughput) when the input ends or ``stop`` is set.
    """

    def __init__(
        self,
        config: ProcessorConfig,
        io: IO,
        predictor: Predictor | None,
        metrics: Metrics | None = None,
        *,
        observers: Sequence[Callable[[Engine], None]] = (),
    ) -> None:
        self.config = config
        self.io = io
        self.metrics = metrics if metrics is not None else Metrics()
        self.engine = build_engine(config, io, predictor, self.metrics)
        # The risk stage decodes internal records instead of positions.
        self._decode = getattr(self.engine, "decode_records", decode_batch)
        self._publisher = getattr(self.engine, "publisher", None)
        # Called with the engine after every batch (the live map's snapshot): best effort,
        # they must return quickly and never raise.
        self._observers = tuple(observers)
        self.codec = config.codec if config.codec is not None else CodecConfig()
        self.rejects = RejectPolicy(self.metrics, io.dlq)
        self.batches = 0
        self.records = 0
        self.batch_seconds: list[float] = []
        self.first_record_at: float | None = None  # time.monotonic() of the first record
        self._keep_latencies = False
        self.owned: set[int] = set()  # input partitions assigned (changelog meta goes there)
        self._warned_partial: frozenset[int] = frozenset()  # --stage all: a share said once
        self._closing = False
        self._unprocessed_seq: int | None = None  # first record a stop left unprocessed
        self._hook_error: BaseException | None = None
        self._trouble_since: float | None = None  # first failure since the last success
        self._commit_failing = False  # the last commit failed: only a commit is progress
        self._point: _CommitPoint | None = None  # cut, waiting for the risk process
        self._backoff_s = 0.0
        self._errors_unlogged = 0
        self._next_error_log = 0.0
        self._status_mark = (0.0, 0)  # (elapsed s, records) at the last status line
        if io.rebalance is not None:
            io.rebalance.target = self
        else:
            self.metrics.assigned_partitions.set(1)  # a file or in-process input: one stream
        store = getattr(self.engine, "store", None)
        if store is not None:
            store.log_evictions = io.changelog is not None  # tombstones

    def keep_batch_latencies(self) -> None:
        """Record each batch's wall time in :attr:`batch_seconds` (benchmarks)."""
        self._keep_latencies = True

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        stop = stop or threading.Event()
        cfg, io, m, eng = self.config, self.io, self.metrics, self.engine
        source = io.source
        poll, decode, codec = source.poll, self._decode, self.codec
        blocking = source.blocking
        empty, no_parts = PositionBatch.empty(), np.empty(0, dtype=np.int64)
        process, handle_rejects, chunks = eng.process, self.rejects.handle, event_time_chunks
        settle = getattr(eng, "settle", None)  # not the risk stage's engine
        dead_letter = self.rejects.dead_letter
        frame = FrameCheck()
        positions_in = self._decode is decode_batch  # not the risk stage's internal records
        max_records, wait_s = cfg.max_batch_records, cfg.max_batch_wait_ms / 1000.0
        consumed, batch_size, batch_secs = m.positions_consumed, m.batch_size, m.batch_seconds
        commit_secs = m.commit_seconds
        observe_processing = m.observe_processing
        keep = self.batch_seconds.append if self._keep_latencies else None
        perf, mono, wall = time.perf_counter, time.monotonic, time.time
        emit = self._emit

        def hand_over(*, wait: bool = False) -> None:
            """Emit the alerts of the assessments the risk process has finished (``wait``:
            of all, waiting for them). Waiting idles the loop, so it is only for a loop
            caught up with its input: a drain waited ~80 ms at every lag query and at every
            poll that found the client's queue empty. Without it the polls wait
            ASSESSING_POLL_S at most, so a finished alert is out within that."""
            if settle is not None and eng.assessing:
                emit(settle(wait=wait))

        commit_every = cfg.commit_interval_s
        t_start, cpu_start, sched_start = mono(), time.process_time(), main_thread_times()
        next_commit = t_start + commit_every
        next_lag = t_start
        next_ping = t_start + PING_INTERVAL_S
        next_status = t_start + STATUS_INTERVAL_S
        finished = False
        committed = True
        try:
            if io.exactly_once:
                self._retrying("transactions", io.producer.init_transactions)
                io.producer.begin_transaction()
            while not stop.is_set():
                try:
                    # While the risk process assesses, look back soon for its alerts.
                    rb = poll(max_records, wait_s if settle is None or not eng.assessing
                              else min(wait_s, ASSESSING_POLL_S))
                    t_polled = perf()
                except KafkaUnavailable as exc:
                    if not exc.retriable:  # fatal (e.g. fenced by a twin --instance-id)
                        raise
                    self._failed("consume", exc)
                    stop.wait(self._backoff_s)
                    continue
                if self._hook_error is not None:
                    raise self._hook_error
                n = len(rb)
                held = blocking()
                if not n:
                    # Nothing read: the risk process's alerts now, rather than held until
                    # the next batch (or behind a ping of the broker). Caught up with the
                    # input (no partition has records left), wait for them: nothing else
                    # to do, and they go out the moment they are ready.
                    hand_over(wait=not held)
                if not n and mono() >= next_ping:
                    # Quiet, or no partitions (the group may have revoked them when the
                    # broker went away): only the broker answering counts as progress.
                    next_ping = mono() + PING_INTERVAL_S
                    try:
                        source.ping()
                        if not self._commit_failing:  # a broker that answers, but refuses
                            self._succeeded()         # the commit, is not progress
                    except KafkaUnavailable as exc:
                        self._failed("consume", exc)
                if n:
                    if self.first_record_at is None:
                        self.first_record_at = mono()
                        log.info("first record %.1f s after start", self.first_record_at
                                 - t_start)
                    consumed.inc(n)
                    batch, rejections = decode(rb.keys, rb.values, codec)
                    if not frame.done and positions_in:
                        frame(batch)  # degrees in a metre frame: refused with one line
                    if rejections:
                        handle_rejects(rejections, rb.keys, rb.values, rb.topic)
                    parts = None if rb.partitions is None else rb.partitions[batch.index]
                    spans = chunks(batch.ts)
                    for i, (lo, hi) in enumerate(spans):
                        if stop.is_set():  # the rest is read again after a restart
                            self._unprocessed_seq = rb.seq0 + int(batch.index[lo])
                            break
                        sub = batch if hi - lo == len(batch) else batch.take(slice(lo, hi))
                        out = process(sub, rb.seq0, partitions=None if parts is None
                                      else parts[lo:hi],
                                      blocking=_held_by_later_chunks(held, parts, spans, i))
                        if out.dropped:
                            dead_letter(out.dropped, rb.keys, rb.values, rb.topic)
                        emit(out)
                    self.batches += 1
                    self.records += n
                elif held is not None:
                    # partitions may have caught up: the watermark can move without records
                    emit(process(empty, rb.seq0, partitions=no_parts, blocking=held))
                finished = source.exhausted
                if finished:
                    emit(eng.flush())
                if n:
                    # From the poll's return: the wait for the first record is idle time,
                    # not the batch's (up to max_batch_wait_ms on every batch of a live feed).
                    dt = perf() - t_polled
                    batch_size.observe(n)
                    batch_secs.observe(dt)
                    observe_processing(dt, n)
                    if keep is not None:
                        keep(dt)
                # Also between records: when the producers stop, the lag grows (the alert
                # rule on it says so) instead of holding the last batch's value. NaN while
                # it holds no event time (none yet, or all partitions revoked): no lag to
                # report, neither a healthy 0 nor the last value of partitions now gone.
                newest = eng.newest_applied_ts
                m.event_time_lag.set(wall() - newest if math.isfinite(newest) else math.nan)
                now = mono()
                if finished or now >= next_commit or self._point is not None:
                    result = self._try_commit(wait=finished or io.exactly_once)
                    if result is not None:
                        committed = result
                        commit_secs.observe(mono() - now)
                        next_commit = now + (commit_every if committed else self._backoff_s)
                if now >= next_lag:
                    hand_over()  # a lag query may wait on the broker: alerts first
                    lag = source.lag()
                    if lag is not None:
                        m.consumer_lag.set(lag)
                    next_lag = now + LAG_INTERVAL_S
                if now >= next_status:
                    self._status(now - t_start)
                    next_status = now + STATUS_INTERVAL_S
                if finished and committed:
                    break
            if not finished:
                self._commit()
        except BaseException:
            self._closing = True
            self._close(failed=True)
            raise
        self._closing = True
        # A whole input read and not one record used: a failed run (outputs discarded).
        refused = nothing_accepted(self.summary()) if finished else None
        self._close(failed=refused is not None)
        if refused is not None:
            raise refused
        out = self.summary(mono() - t_start, time.process_time() - cpu_start
                           + getattr(eng, "risk_process_cpu_s", 0.0))
        sched_end = main_thread_times()
        if sched_start is not None and sched_end is not None:
            run_s, wait_s = (b - a for a, b in zip(sched_start, sched_end, strict=True))
            out["main_wait_s"] = wait_s
            out["main_idle_s"] = max(out["elapsed_s"] - run_s - wait_s, 0.0)
        return out

    def _emit(self, out: Outputs) -> None:
        if self._publisher is not None:
            out.internal.extend(self._publisher.progress(self.engine.watermark_tick, self.owned))
        for o in self.io.outputs:
            if o.kind == "internal":
                if out.internal:
                    send_to = o.sink.send_to  # type: ignore[attr-defined]
                    for part, k, v in out.internal:
                        send_to(part, k, v)
                continue
            msgs = out.alerts if o.kind == "alerts" else out.predictions
            if msgs:
                send = o.sink.send
                for k, v in msgs:
                    send(k, v)
        for observe in self._observers:
            observe(self.engine)

    def _commit(self) -> bool:
        """Commit everything processed so far, waiting for the risk process (a stop, a
        revoke): an earlier point still waiting for it first. True when offsets reached the
        broker (a commit with nothing to commit proves nothing about it)."""
        point, self._point = self._point, None
        # its changes were taken from the engine: written first
        reached = point is not None and self._finish(point)
        return self._finish(self._cut()) or reached

    def _cut(self) -> _CommitPoint:
        """A commit point here: the offsets of what is fully processed and the engine's
        checkpoint, its risk-process half possibly still to come (:meth:`Engine.cut`)."""
        io, eng = self.io, self.engine
        # Per input partition where the engine tells (each partition's offsets stop at its
        # own first waiting record), else at the first waiting record overall.
        pending = getattr(eng, "pending_by_partition", None)
        done = eng.min_pending_seq if pending is None else None
        if self._unprocessed_seq is not None:  # stopped inside a batch
            done = self._unprocessed_seq if done is None else min(done, self._unprocessed_seq)
        offsets_of = getattr(io.source, "offsets", None)
        offsets = None if offsets_of is None else offsets_of(done, pending)
        changelog = io.changelog is not None
        cut = getattr(eng, "cut", None)
        if cut is None:  # the risk stage's engine: no risk process to wait for
            return _CommitPoint(done, pending, offsets, eng.checkpoint if changelog else None,
                                lambda: True, frozenset(self.owned))
        c = cut(states=changelog)
        return _CommitPoint(done, pending, offsets, c.result if changelog else None,
                            lambda: c.ready, frozenset(self.owned))

    def _finish(self, point: _CommitPoint) -> bool:
        """Deliver the outputs of everything before ``point`` (its alerts included), then
        write and flush the changelog, then commit its offsets (one transaction with
        ``exactly_once``). True when offsets reached the broker."""
        io, eng = self.io, self.engine
        settle = getattr(eng, "settle", None)
        if settle is not None:  # no committed record may have alerts still to come
            self._emit(settle(wait=not point.ready()))  # ready: theirs are all done
        if point.checkpoint is not None:
            assert io.changelog is not None
            if not io.exactly_once:
                # The outputs first: once the changelog reaches the broker, a restart has
                # its vehicles' fixes as applied and skips them as stale, so their alerts
                # and predictions must be delivered already (queued with it, a SIGKILL could
                # leave them undelivered for good). A transaction makes both one.
                try:
                    self._flush_outputs()
                except BaseException:
                    io.changelog.rewrite()  # the point's changes were taken from the engine
                    raise
            try:
                io.changelog.write(point.checkpoint(), point.owned)
            except KafkaUnavailable:
                self.metrics.kafka_errors.labels(kind="produce").inc()
                raise
        if io.exactly_once:
            source: Any = io.source
            offsets = point.offsets or {}
            try:
                if offsets:
                    io.producer.send_offsets_to_transaction(offsets, source.consumer)
                io.producer.commit_transaction()
            except Fenced:  # a restart would fence the twin in turn: say why instead
                raise
            except KafkaUnavailable as exc:
                # The engine already holds this interval's effects: only a restart from the
                # last committed transaction (state restored from the changelog) is exact.
                self.metrics.kafka_errors.labels(kind="commit").inc()
                raise Stalled(f"exactly-once transaction failed, restart needed: {exc}"
                              ) from exc
            source.mark_committed(offsets)
            io.producer.begin_transaction()
            return True
        self._flush_outputs()
        try:
            if point.offsets is None:  # a file or a queue: nothing to commit
                return io.source.commit(point.done, point.pending)
            return io.source.commit_offsets(point.offsets)  # type: ignore[attr-defined]
        except KafkaUnavailable:
            self.metrics.kafka_errors.labels(kind="commit").inc()
            raise

    def _flush_outputs(self) -> None:
        """Everything produced so far delivered (the Kafka producer, then each sink)."""
        try:
            if self.io.producer is not None:
                self.io.producer.flush(FLUSH_TIMEOUT_S)
            for o in self.io.outputs:
                if o.delivery is Delivery.MUST_FLUSH:
                    o.sink.flush()
                else:
                    self._flush_best_effort(o)
            self.rejects.flush()
        except KafkaUnavailable:
            self.metrics.kafka_errors.labels(kind="produce").inc()
            raise

    @staticmethod
    def _flush_best_effort(o: Output) -> None:
        try:
            o.sink.flush()
        except Exception as exc:  # best effort: never holds back the commit
            log.warning("best-effort %s output failed to flush: %s", o.kind, exc)

    def _try_commit(self, *, wait: bool) -> bool | None:
        """The periodic commit: a point cut now (or the one cut before), finished once the
        risk process has caught up with it, so the loop goes on reading meanwhile (``wait``:
        everything processed so far, now: the end of the input, a transaction). None while
        it waits; False when a retriable Kafka failure makes it a later retry."""
        try:
            if wait:
                reached = self._commit()
            else:
                if self._point is None:
                    self._point = self._cut()
                if not self._point.ready():
                    return None
                point, self._point = self._point, None
                reached = self._finish(point)
        except Stalled:
            raise
        except KafkaUnavailable as exc:
            if not getattr(exc, "retriable", True):
                raise
            self._commit_failing = True
            self._failed(None, exc)
            return False
        self._commit_failing = False
        if reached:
            self._succeeded()
        return True

    def _failed(self, kind: str | None, exc: BaseException) -> None:
        """Count, back off, log at a rate limit; raise Stalled after ``max_stall_s``."""
        if kind is not None:
            self.metrics.kafka_errors.labels(kind=kind).inc()
        now = time.monotonic()
        if self._trouble_since is None:
            self._trouble_since = now
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
        self._errors_unlogged += 1
        stalled = now - self._trouble_since
        if now >= self._next_error_log:
            log.warning("Kafka unavailable (%d failure(s), no progress for %.0f s, retrying "
                        "every %.1f s): %s", self._errors_unlogged, stalled, self._backoff_s,
                        exc)
            self._errors_unlogged = 0
            self._next_error_log = now + RETRY_LOG_INTERVAL_S
        limit = self.config.max_stall_s
        if stalled > limit:
            raise Stalled(f"no progress for {stalled:.0f} s (--max-stall-s {limit:g}): {exc}")

    def _succeeded(self) -> None:
        if self._trouble_since is not None:
            log.info("Kafka available again after %.1f s",
                     time.monotonic() - self._trouble_since)
        self._trouble_since = None
        self._backoff_s = 0.0

    def _retrying(self, what: str, fn: Any) -> None:
        while True:
            try:
                fn()
                self._succeeded()
                return
            except KafkaUnavailable as exc:
                if not exc.retriable:  # Stalled, a producer failed fatally
                    raise
                self._failed(None, exc)
                time.sleep(self._backoff_s)

    # -- rebalance (called inside poll) ------------------------------------------------------

    def _on_assign(self, parts: list[tuple[str, int]]) -> None:
        mine = {p for t, p in parts if t == self.io.source.topic}
        new = mine - self.owned
        log.info("partitions %s assigned (%s newly held by this process)", sorted(mine),
                 sorted(new))
        if new and max(new) >= self.io.inputs and self.config.stage != "risk":
            # partitions added to the positions topic while this process runs
            added = sorted(p for p in new if p >= self.io.inputs)
            log.warning("partition(s) %s of %s are new (it had %d when this process started): "
                        "vehicles whose key now hashes to another partition restart their "
                        "track there", added, self.io.source.topic, self.io.inputs)
            if not self.config.from_beginning:
                # the group has no offset of a new partition: the client starts at its end
                log.warning("--from-latest: partition(s) %s of %s are read from their end, so "
                            "the positions written to them before this group took them are "
                            "skipped (--from-beginning reads them; grow a topic before its "
                            "producers know the new partitions: README, Scaling out)", added,
                            self.io.source.topic)
            self.io.inputs = max(new) + 1
            if self._publisher is not None:
                self._publisher.inputs = self.io.inputs
        assign = getattr(self.engine, "assign", None)
        if new and assign is not None:
            assign(new)
        try:
            if new and self.io.changelog is not None:
                vehicles, metas = self.io.changelog.restore(new)
                # a partition the changelog has no meta of has no position either
                self.engine.restore(vehicles, {p: metas.get(p, {}) for p in sorted(new)})
        except BaseException as exc:  # raised after poll: some clients swallow callback errors
            self._hook_error = exc
            raise
        self.owned |= new
        self.metrics.assigned_partitions.set(len(self.owned))
        self._warn_partial_share()
        if new:
            self._count_expired(sorted(new))

    def _count_expired(self, parts: list[int]) -> None:
        """Records the input's retention deleted before this group read them: lost, and
        no other sign of it (kafka-python's offset reset logs nothing)."""
        expired = getattr(getattr(self.io.source, "consumer", None), "expired", None)
        if expired is None:  # a test's stand-in
            return
        topic = self.io.source.topic
        for (_, p), n in sorted(expired([(topic, p) for p in parts]).items()):
            self.metrics.positions_expired.inc(n)
            log.warning("%d record(s) of %s[%d] were deleted by its retention before they "
                        "were processed (the committed offset was older than the earliest "
                        "record kept): lost. Keep retention.ms above the longest outage",
                        n, topic, p)

    def _warn_partial_share(self) -> None:
        """--stage all holding a share of the input: pairs across the shares are not
        assessed (docs/architecture.md, scaling out); said once per share held."""
        total, held = self.io.inputs, frozenset(self.owned)
        if self.config.stage != "all" or not 0 < len(held) < total or (
                held == self._warned_partial):
            return
        self._warned_partial = held
        log.warning("this process holds %d of the %d partitions of %s (--stage all): a pair of "
                    "vehicles whose positions arrive on partitions held by another process of "
                    "group %s is never assessed, and its alerts are missed. To scale out, run "
                    "--stage predict and --stage risk (README: Scaling out)", len(held),
                    total, self.io.source.topic, self.config.consumer_group)

    def _on_revoke(self, parts: list[tuple[str, int]]) -> None:
        mine = {p for t, p in parts if t == self.io.source.topic} & self.owned
        if not mine:
            return
        if not self._closing:
            try:
                self._commit()
            except Fenced as exc:  # raised after poll: this process's run is over
                self._hook_error = exc
            except KafkaUnavailable as exc:  # lost ownership: the new owner replays
                log.warning("commit before giving up partitions %s failed: %s", sorted(mine),
                            exc)
        # All owned partitions revoked (librdkafka's default eager protocol revokes all at
        # every rebalance): reset the whole engine, so the next assignment restores like a
        # restart; only an incremental revoke keeps the rest.
        everything = mine == self.owned
        dropped = self.engine.reset() if everything else self.engine.drop_partitions(mine)
        forget = getattr(self.io.source, "forget", None)
        if forget is not None:
            forget(mine)
        if self.io.changelog is not None:
            self.io.changelog.forget(mine)
        if self._publisher is not None:
            self._publisher.forget(mine)
        self.owned -= mine
        self.metrics.assigned_partitions.set(len(self.owned))
        log.info("partitions %s revoked: dropped %d vehicle state(s)", sorted(mine),
                 len(dropped))

    def _close(self, *, failed: bool) -> None:
        """Close every sink and client. After a failure, file outputs are discarded (an
        existing file keeps its content); otherwise the first output that cannot be
        completed (a full disk) raises, since its records would be lost."""
        io = self.io
        sinks = [o.sink for o in io.outputs]
        closes = [getattr(s, "abort", s.close) if failed else s.close for s in sinks]
        closes += [self.rejects.abort if failed else self.rejects.close, io.source.close,
                   *io.closers]
        close_engine = getattr(self.engine, "close", None)
        if close_engine is not None:
            closes.append(close_engine)
        errors: list[BaseException] = []
        for close in closes:
            try:
                close()
            except Exception as exc:  # closing everything matters more than the first error
                errors.append(exc)
        lost = [e for e in errors if isinstance(e, OutputError)]
        if lost and not failed:
            raise lost[0]
        if errors:
            log.warning("errors while closing: %s", "; ".join(map(str, errors)))

    def _status(self, elapsed_s: float) -> None:
        # summary(), not stats: the risk stage keeps its alert counts in its conflict stage
        s = self.engine.summary()
        # The rate since the previous line: a run's average would read thousands a second
        # long after the input stopped, and hide a slowdown after days.
        since_s, since_records = self._status_mark
        self._status_mark = (elapsed_s, self.records)
        log.info(
            "%d records (%.0f/s), %d vehicles, alerts %d warning / %d critical, dropped "
            "%d stale / %d late / %d future / %d dense, %d rejected",
            self.records, (self.records - since_records) / max(elapsed_s - since_s, 1e-9),
            len(self.engine),
            *(s.get(k, 0) for k in ("warning", "critical", "stale", "late", "future",
                                    "dense")),
            self.rejects.total,
        )

    def summary(self, elapsed_s: float | None = None,
                cpu_s: float | None = None) -> dict[str, Any]:
        """Counters so far; with the run's wall time and (``cpu_s``) the CPU time of the
        whole process over it (client threads and the risk process included: on shared
        cores, records per CPU second compare runs better than records per second).
        :meth:`run` adds where Linux tells: the main thread's seconds waiting for a CPU
        (``main_wait_s``) and idle (``main_idle_s``: blocked on the broker or a
        rebalance)."""
        first = self.rejects.first
        out = {**self.engine.summary(), "consumed": self.records, "batches": self.batches,
               "rejected": self.rejects.total,
               "rejected_by_reason": dict(self.rejects.by_reason),
               "rejected_example": None if first is None else f"{first.reason}: {first.detail}"}
        if elapsed_s is not None:
            out["elapsed_s"] = elapsed_s
            out["records_per_s"] = self.records / max(elapsed_s, 1e-9)
        if cpu_s is not None:
            out["cpu_s"] = cpu_s
        return out
