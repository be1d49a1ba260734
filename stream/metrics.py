"""Every Prometheus metric of the processor, created in one place on an injected registry.

Names are fixed by the stream contracts (dashboards and alert rules use them). Units are
seconds, metres and records. Labels take values from small fixed sets only (never a vehicle
id); the known values are pre-created so a rate() over them exists before the first event.

Histogram buckets follow what was measured on the 2-core reference machine:

- ``batch_size``: micro-batches range from a handful of records at low load to the 50k
  cap under replay; a 1-2-5 ladder keeps relative resolution constant.
- ``inference_seconds``: a compiled batched LSTM step is ~0.1-1 ms for tens of vehicles and
  10-100 ms for thousands (and per-call TF overhead ~1 ms), so both decades are finely split.
- ``batch_seconds``: a whole micro-batch from the poll that returned it (decoded, applied,
  its outputs handed to the producer; not the poll's wait for input), from ~0.1 ms to
  seconds when Kafka stalls; up to 5 s.
- ``processing_seconds``: per record, poll to the end of its micro-batch; batch_seconds's
  buckets (the same span, counted once per record). With the risk process
  (stream/risk_process.py) the assessment is not part of the batch: its alerts follow
  when it is done, so only end-to-end latency covers them.
- ``commit_seconds``: a commit point (changelog, flush, offsets), batch_seconds's buckets.
- ``risk_seconds``: grid + closest approach, same style as inference.
- ``prediction_error_meters``: displacement error at 1-4 s horizons, decimetres for a good
  1 s prediction to tens of metres for a wrong turn at 4 s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from trajstream.stream.codec import REASONS

__all__ = [
    "ALERT_SEVERITIES",
    "CORRECTION_REASONS",
    "DROP_REASONS",
    "HORIZONS",
    "KAFKA_ERROR_KINDS",
    "LABEL_NAMES",
    "Metrics",
    "serve",
]

DROP_REASONS: tuple[str, ...] = ("stale", "late", "future", "dense", "ahead")
# Fixes used, but not as reported (stream/state.py FLAG_REASONS): speed or heading that
# disagree with the motion, replaced by the derived ones; a jump that restarts the track.
CORRECTION_REASONS: tuple[str, ...] = ("speed", "heading", "jump")
# What completed the ticks a micro-batch released (stream/admission.py).
RELEASE_RULES: tuple[str, ...] = ("cadence", "evidence", "watermark")
ALERT_SEVERITIES: tuple[str, ...] = ("warning", "critical")
HORIZONS: tuple[str, ...] = ("1", "2", "3", "4")
# Pre-created kinds; others may be used but must come from a fixed set in the caller's code.
KAFKA_ERROR_KINDS: tuple[str, ...] = ("consume", "produce", "commit", "dlq")
# Every label name any metric here uses: all bounded by construction.
LABEL_NAMES = frozenset(
    {"reason", "severity", "model", "horizon", "kind", "predictor", "kafka_client", "version",
     "stage"}
)

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
INFERENCE_BUCKETS = (
    50e-6, 100e-6, 200e-6, 350e-6, 500e-6, 750e-6,
    1e-3, 2e-3, 3.5e-3, 5e-3, 7.5e-3,
    0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
    0.2, 0.5, 1.0,
)  # fmt: skip
BATCH_SECONDS_BUCKETS = (
    100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1,
    0.15, 0.25, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
RISK_BUCKETS = INFERENCE_BUCKETS
ERROR_M_BUCKETS = (
    0.1,
    0.2,
    0.35,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    50.0,
)


class Metrics:
    """The processor's metrics on ``registry`` (a fresh one by default, so tests and
    several processors in one process never collide on the global registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry = r
        self.positions_consumed = Counter(
            "trajstream_positions_consumed",
            "Position records polled from the source (valid or not).",
            registry=r,
        )
        self.positions_rejected = Counter(
            "trajstream_positions_rejected",
            "Position records refused by the decoder, by reason.",
            ["reason"],
            registry=r,
        )
        self.positions_dropped = Counter(
            "trajstream_positions_dropped",
            "Valid records not applied: stale (at or before the vehicle's last event time, "
            "duplicates included), late (behind the watermark), future (ahead of the stream "
            "and the clock), dense (a second fix of a vehicle within --min-fix-interval-s) or "
            "ahead (a vehicle's clock running ahead of its partition).",
            ["reason"],
            registry=r,
        )
        self.positions_expired = Counter(
            "trajstream_positions_expired",
            "Position records the topic's retention deleted before they were processed: "
            "the group's committed offset was older than the earliest record kept when the "
            "partition was assigned (the lag outlived retention.ms).",
            registry=r,
        )
        self.positions_corrected = Counter(
            "trajstream_positions_corrected",
            "Records applied, but not as reported, by reason: speed or heading that "
            "disagree with the motion between fixes (the derived value is used), or a "
            "jump no vehicle can make (the track restarts there).",
            ["reason"],
            registry=r,
        )
        self.ticks_released = Counter(
            "trajstream_ticks_released",
            "Ticks released, by what completed them: every vehicle due in them had reported "
            "(cadence), a record past them in every partition (evidence), or the watermark "
            "(a partition that stopped delivering).",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "trajstream_batch_size_records",
            "Records per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "trajstream_inference_seconds",
            "Wall time of one batched predictor step.",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "trajstream_batch_seconds",
            "Wall time to process one micro-batch, from the poll that returned it to its "
            "outputs handed to the producer (the wait for input not included).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.processing_seconds = Histogram(
            "trajstream_processing_seconds",
            "Per record: wall time from the poll that returned it to the end of its "
            "micro-batch (decoded, applied, its outputs handed to the producer; with the "
            "risk process, alerts of the ticks it released may follow with a later batch).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.event_time_lag = Gauge(
            "trajstream_event_time_lag_seconds",
            "Wall clock now minus the newest event time processed (NaN while none is "
            "held: before the first record, or with no partition assigned).",
            registry=r,
        )
        self.active_vehicles = Gauge(
            "trajstream_active_vehicles",
            "Vehicles currently holding state (risk stage: those of its tiles and their halo in "
            "its latest whole-fleet assessment).",
            registry=r,
        )
        self.alerts = Counter(
            "trajstream_alerts", "Collision alerts published, by severity.", ["severity"],
            registry=r,
        )  # fmt: skip
        self.assigned_partitions = Gauge(
            "trajstream_assigned_partitions",
            "Input partitions this process holds: 0 means it consumes nothing (a broker "
            "outage, a group it has not joined, or more processes than partitions); a file "
            "or in-process input counts as 1.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "trajstream_consumer_lag_records",
            "Records between the consumer position and the high watermark, all partitions.",
            registry=r,
        )
        self.prediction_error = Histogram(
            "trajstream_prediction_error_meters",
            "Online displacement error of predictions against later observations, by "
            "predictor and horizon (s).",
            ["model", "horizon"],
            buckets=ERROR_M_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "trajstream_commit_seconds",
            "Wall time of one commit point: changelog written, outputs flushed, offsets "
            "committed (or the transaction); the loop polls nothing meanwhile.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.risk_seconds = Histogram(
            "trajstream_risk_seconds",
            "Wall time of one whole-fleet risk assessment (grid and closest approach; "
            "not the partial ones between, which confirm conflicts already found).",
            buckets=RISK_BUCKETS,
            registry=r,
        )
        self.kafka_errors = Counter(
            "trajstream_kafka_errors", "Kafka client errors, by kind.", ["kind"], registry=r
        )
        self.info = Info(
            "trajstream_build",
            "Predictor, Kafka client and version of this processor.",
            registry=r,
        )
        for reason in REASONS:
            self.positions_rejected.labels(reason=reason)
        for reason in DROP_REASONS:
            self.positions_dropped.labels(reason=reason)
        for reason in CORRECTION_REASONS:
            self.positions_corrected.labels(reason=reason)
        for rule in RELEASE_RULES:
            self.ticks_released.labels(reason=rule)
        for severity in ALERT_SEVERITIES:
            self.alerts.labels(severity=severity)
        for kind in KAFKA_ERROR_KINDS:
            self.kafka_errors.labels(kind=kind)

    def set_build_info(self, predictor: str, kafka_client: str, version: str | None = None,
                       stage: str = "all") -> None:
        """Exported as ``trajstream_build_info{predictor, kafka_client, version, stage} 1``;
        the stage lets an alert rule expect risk processes where predict processes run."""
        if version is None:
            version = _package_version()
        self.info.info({"predictor": predictor, "kafka_client": kafka_client, "version": version,
                        "stage": stage})

    def observe_processing(self, seconds: float, records: int) -> None:
        """One micro-batch's processing latency, counted once per record it held (so the
        quantiles are per record, not per batch) in one bucket update."""
        h = self.processing_seconds
        i = int(np.searchsorted(h._upper_bounds, seconds, side="left"))
        h._buckets[i].inc(records)
        h._sum.inc(seconds * records)

    def observe_prediction_errors(self, model: str, horizon: str, errors_m: Any) -> None:
        """Observe many displacement errors (metres) under one label pair in one go.

        The online error produces thousands of values per tick; counting them per bucket with
        numpy instead of one ``observe`` call each keeps the metric off the profile.
        """
        errors = np.asarray(errors_m, dtype=np.float64).ravel()
        if errors.size == 0:
            return
        child = self.prediction_error.labels(model=model, horizon=horizon)
        bounds = child._upper_bounds  # prometheus_client keeps one counter per bucket
        counts = np.bincount(np.searchsorted(bounds, errors, side="left"), minlength=len(bounds))
        for value, n in zip(child._buckets, counts.tolist(), strict=True):
            if n:
                value.inc(n)
        child._sum.inc(float(errors.sum()))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trajstream")
    except PackageNotFoundError:
        return "unknown"


def serve(port: int, registry: CollectorRegistry, addr: str = "0.0.0.0") -> Any:
    """Expose ``registry`` at http://addr:port/metrics from a daemon thread.

    ``port=0`` picks a free port; the returned server's ``server_port`` tells which. Call
    ``.shutdown()`` on it to stop.
    """
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
