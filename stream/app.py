"""The micro-batch loop: poll -> decode -> reject policy -> engine -> sinks -> flush -> commit.

Everything the loop needs is built once (:func:`build` for Kafka and file I/O; the demo
builds a memory source itself) and bound to locals before the loop starts. Offsets are
committed on an interval and only after every sink (alerts, predictions, dead letters) has
been flushed, and only up to the first record the engine still holds back, so a crash loses
nothing (at-least-once; replays are dropped as stale). A stop request (SIGTERM/SIGINT via
``stop``) finishes the current batch, flushes, commits and returns normally.

At the end of a finite input (file, demo, Kafka ``--until-end``) the engine is flushed so
the last ticks are assessed too; a stop request does not flush the engine, since records it
holds back will be read again after a restart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.predictors import PathSpec, Predictor
from stream.codec import CodecConfig, PositionBatch, decode_batch
from stream.config import ProcessorConfig
from stream.deadletter import RejectPolicy
from stream.engine import Engine, Outputs
from stream.errors import ConfigError, KafkaUnavailable
from stream.metrics import Metrics
from stream.sinks import JsonlSink, KafkaSink, Sink
from stream.sources import FileSource, KafkaSource, Source

__all__ = ["IO", "Processor", "build_io", "load_predictor"]

log = logging.getLogger("stream.app")

STATUS_INTERVAL_S = 30.0
LAG_INTERVAL_S = 1.0


def load_predictor(name: str, spec: PathSpec) -> Predictor:
    """The named predictor ("lstm", "cv", "ctrv") for ``spec``."""
    import model

    return model.load_predictor(name, spec)


@dataclass
class IO:
    """A source and the sinks the outputs go to; ``closers`` release shared clients last."""

    source: Source
    alerts: Sink
    predictions: Sink | None = None
    dlq: Sink | None = None
    kafka_client: str = "none"
    closers: list[Any] = field(default_factory=list)


def build_io(config: ProcessorConfig) -> IO:
    """Source and sinks for a Kafka or file configuration (the memory source is the demo's)."""
    if config.source == "file":
        assert config.input_path and config.alerts_out
        return IO(
            FileSource(config.input_path),
            JsonlSink(config.alerts_out),
            JsonlSink(config.predictions_out) if config.predictions_out else None,
            JsonlSink(config.dlq_out) if config.dlq_out else None,
        )
    if config.source != "kafka":
        raise ConfigError(f"build_io handles kafka and file sources, not {config.source!r}")
    from stream.kafka import create_topics, make_consumer, make_producer, resolve_client

    assert config.bootstrap
    client = resolve_client(config.kafka_client)
    outputs = [t for t in (config.alerts_topic, config.predictions_topic, config.dlq_topic) if t]
    create_topics(config.bootstrap, outputs, client=client)
    consumer = make_consumer(
        config.bootstrap,
        [config.positions_topic],
        group=config.group,
        client=client,
        from_beginning=config.from_beginning,
        config=dict(config.kafka_config),
    )
    producer = make_producer(config.bootstrap, client=client, config=dict(config.kafka_config))
    source = KafkaSource(consumer, config.positions_topic, until_end=config.until_end)
    alerts: Sink = KafkaSink(producer, config.alerts_topic) if config.alerts_topic else _Null()
    return IO(
        source,
        alerts,
        KafkaSink(producer, config.predictions_topic) if config.predictions_topic else None,
        KafkaSink(producer, config.dlq_topic) if config.dlq_topic else None,
        kafka_client=client,
        closers=[producer.close],
    )


class _Null:
    def send(self, key: bytes | None, value: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Processor:
    """One processor instance: an engine between a source and its sinks.

    ``run`` returns a summary dict (records, alerts by severity, drops, rejections, mean
    online error, throughput) when the input ends or ``stop`` is set.
    """

    def __init__(
        self,
        config: ProcessorConfig,
        io: IO,
        predictor: Predictor,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.io = io
        self.metrics = metrics if metrics is not None else Metrics()
        self.engine = Engine(config.engine, predictor, self.metrics)
        self.codec = config.codec if config.codec is not None else CodecConfig()
        self.rejects = RejectPolicy(self.metrics, io.dlq)
        self.batches = 0
        self.records = 0
        self.batch_seconds: list[float] = []
        self.first_record_at: float | None = None  # time.monotonic() of the first record
        self._keep_latencies = False

    def keep_batch_latencies(self) -> None:
        """Record each batch's wall time in :attr:`batch_seconds` (benchmarks)."""
        self._keep_latencies = True

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        stop = stop or threading.Event()
        cfg, io, m, eng = self.config, self.io, self.metrics, self.engine
        source = io.source
        poll, decode, codec = source.poll, decode_batch, self.codec
        blocking = source.blocking
        empty, no_parts = PositionBatch.empty(), np.empty(0, dtype=np.int64)
        process, handle_rejects = eng.process, self.rejects.handle
        max_records, wait_s = cfg.max_batch_records, cfg.max_batch_wait_ms / 1000.0
        consumed, batch_size, batch_secs = m.positions_consumed, m.batch_size, m.batch_seconds
        keep = self.batch_seconds.append if self._keep_latencies else None
        perf, mono, wall = time.perf_counter, time.monotonic, time.time
        emit = self._emit
        commit_every = cfg.commit_interval_s
        t_start = mono()
        next_commit = t_start + commit_every
        next_lag = t_start
        next_status = t_start + STATUS_INTERVAL_S
        finished = False
        try:
            while not stop.is_set():
                t0 = perf()
                try:
                    rb = poll(max_records, wait_s)
                except KafkaUnavailable:
                    m.kafka_errors.labels(kind="consume").inc()
                    raise
                n = len(rb)
                held = blocking()
                if n:
                    if self.first_record_at is None:
                        self.first_record_at = mono()
                    consumed.inc(n)
                    batch, rejections = decode(rb.keys, rb.values, codec)
                    if rejections:
                        handle_rejects(rejections, rb.keys, rb.values, rb.topic)
                    parts = None if rb.partitions is None else rb.partitions[batch.index]
                    emit(process(batch, rb.seq0, partitions=parts, blocking=held))
                    self.batches += 1
                    self.records += n
                elif held is not None:
                    # partitions may have caught up: the watermark can move without records
                    emit(process(empty, rb.seq0, partitions=no_parts, blocking=held))
                finished = source.exhausted
                if finished:
                    emit(eng.flush())
                if n:
                    dt = perf() - t0
                    batch_size.observe(n)
                    batch_secs.observe(dt)
                    if keep is not None:
                        keep(dt)
                    newest = eng.newest_applied_ts
                    if math.isfinite(newest):
                        m.event_time_lag.set(wall() - newest)
                now = mono()
                if finished or now >= next_commit:
                    self._commit()
                    next_commit = now + commit_every
                if now >= next_lag:
                    lag = source.lag()
                    if lag is not None:
                        m.consumer_lag.set(lag)
                    next_lag = now + LAG_INTERVAL_S
                if now >= next_status:
                    self._status(now - t_start)
                    next_status = now + STATUS_INTERVAL_S
                if finished:
                    break
            if not finished:
                self._commit()
        finally:
            self._close()
        return self.summary(mono() - t_start)

    def _emit(self, out: Outputs) -> None:
        if out.alerts:
            send = self.io.alerts.send
            for k, v in out.alerts:
                send(k, v)
        if out.predictions and self.io.predictions is not None:
            send = self.io.predictions.send
            for k, v in out.predictions:
                send(k, v)

    def _commit(self) -> None:
        """Flush every output, then mark what is fully processed as consumed."""
        io = self.io
        try:
            io.alerts.flush()
            if io.predictions is not None:
                io.predictions.flush()
            self.rejects.flush()
        except KafkaUnavailable:
            self.metrics.kafka_errors.labels(kind="produce").inc()
            raise
        try:
            io.source.commit(self.engine.min_pending_seq)
        except KafkaUnavailable:
            self.metrics.kafka_errors.labels(kind="commit").inc()
            raise

    def _close(self) -> None:
        io = self.io
        errors: list[BaseException] = []
        for close in (io.alerts.close, *(s.close for s in (io.predictions,) if s),
                      self.rejects.close, io.source.close, *io.closers):
            try:
                close()
            except Exception as exc:  # closing everything matters more than the first error
                errors.append(exc)
        if errors:
            log.warning("errors while closing: %s", "; ".join(map(str, errors)))

    def _status(self, elapsed_s: float) -> None:
        s = self.engine.stats
        log.info(
            "%d records (%.0f/s), %d vehicles, alerts %d warning / %d critical, dropped "
            "%d stale / %d late / %d future / %d dense, %d rejected",
            self.records, self.records / max(elapsed_s, 1e-9), len(self.engine.store),
            s["warning"], s["critical"], s["stale"], s["late"], s["future"], s["dense"],
            self.rejects.total,
        )

    def summary(self, elapsed_s: float | None = None) -> dict[str, Any]:
        out = {**self.engine.summary(), "consumed": self.records, "batches": self.batches,
               "rejected": self.rejects.total}
        if elapsed_s is not None:
            out["elapsed_s"] = elapsed_s
            out["records_per_s"] = self.records / max(elapsed_s, 1e-9)
        return out
