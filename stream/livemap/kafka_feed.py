"""Feeding the map from Kafka (``trajstream map``): the positions, predictions and alerts
topics, read from their end (a live view has no use for history) without a consumer group
of its own that anyone would see lagging, and without committing anything.

Between two snapshots (``fps`` a second) only the newest position and prediction message of
each vehicle is kept, undecoded (a dictionary store per message, keyed by the Kafka key);
only those are decoded when the snapshot is made. A picture needs nothing older, and
decoding is what costs: 5,000 vehicles at 10 Hz send 50,000 positions a second, a snapshot
needs 5,000. Positions go through the processor's own decoder (so lat/lon input is projected
the same way). Throughput, lag and the model-vs-constant-velocity error in the
page's corner come from the processor's Prometheus endpoint when ``metrics_url`` is given
(the processor computes them; the map does not guess), else from what the map itself reads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from trajstream.errors import KafkaUnavailable
from trajstream.stream.codec import CodecConfig, decode_batch
from trajstream.stream.livemap.hub import MapHub
from trajstream.stream.livemap.table import FleetTable

__all__ = ["FeedConfig", "KafkaFeed", "scrape_processor"]

log = logging.getLogger("trajstream.stream.livemap")

MAX_POLL_RECORDS = 20_000
TOPIC_RECHECK_S = 10.0
SCRAPE_INTERVAL_S = 2.0
LOG_INTERVAL_S = 30.0


@dataclass(frozen=True)
class FeedConfig:
    bootstrap: str
    positions_topic: str
    predictions_topic: str | None  # None: vehicles and alerts only
    alerts_topic: str
    kafka_client: str | None = None
    kafka_config: dict[str, str] = field(default_factory=dict)
    codec: CodecConfig = field(default_factory=CodecConfig)
    fps: float = 4.0
    show_s: float = 2.0
    ttl_s: float = 10.0
    metrics_url: str | None = None


class KafkaFeed:
    """Runs until ``stop`` is set: consume, rebuild the fleet, publish to the hub."""

    def __init__(self, hub: MapHub, config: FeedConfig) -> None:
        self.hub = hub
        self.config = config
        self.table = FleetTable(ttl_s=config.ttl_s)
        self.counts = {"positions": 0, "predictions": 0, "alerts": 0, "rejected": 0}
        self._next_log = -math.inf
        # newest undecoded message per Kafka key since the last snapshot (keyless: all)
        self._positions: dict[bytes, bytes] = {}
        self._keyless: list[bytes] = []
        self._predictions: dict[bytes | None, bytes] = {}
        self._said_missing: list[str] = []  # the missing topics last warned about

    def run(self, stop: threading.Event) -> None:
        from trajstream.stream.kafka import resolve_client

        cfg = self.config
        client = resolve_client(cfg.kafka_client)
        scraper = None
        if cfg.metrics_url:
            scraper = threading.Thread(target=self._scrape_loop, args=(stop,),
                                       name="map-metrics", daemon=True)
            scraper.start()
        consumer: Any = None
        topics: list[str] = []
        next_check = -math.inf
        next_snap = time.monotonic()
        interval = 1.0 / cfg.fps
        rate_t, rate_n = time.monotonic(), 0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_check and len(topics) < len(self._wanted()):
                    next_check = now + TOPIC_RECHECK_S
                    found = self._existing_topics(client)
                    if cfg.positions_topic in found and found != topics:
                        if consumer is not None:
                            consumer.close()
                        consumer = self._consumer(client, found)
                        topics = found
                if consumer is None:
                    stop.wait(0.5)
                    continue
                try:
                    records = consumer.poll(MAX_POLL_RECORDS, 0.05)
                except KafkaUnavailable as exc:
                    self._log("Kafka unavailable, retrying: %s", exc)
                    stop.wait(1.0)
                    continue
                self._apply(records)
                now = time.monotonic()
                if now >= next_snap:
                    next_snap = now + interval
                    self._decode_pending()
                    stats: dict[str, Any] = {"source": "kafka", "map_vehicles": len(self.table)}
                    if now - rate_t >= 1.0:
                        n = self.counts["positions"]
                        stats["map_positions_per_s"] = round((n - rate_n) / (now - rate_t), 1)
                        rate_t, rate_n = now, n
                    newest = self.table.newest_ts
                    if math.isfinite(newest):
                        stats["map_lag_s"] = round(time.time() - newest, 3)
                    self.hub.publish_fleet(self.table.snapshot(cfg.show_s), stats)
        finally:
            if consumer is not None:
                consumer.close()
            if scraper is not None:
                scraper.join(timeout=SCRAPE_INTERVAL_S + 3.0)

    def _existing_topics(self, client: str) -> list[str]:
        from trajstream.stream.kafka import partition_count

        cfg = self.config
        wanted = self._wanted()
        found = []
        try:
            for t in wanted:
                if partition_count(cfg.bootstrap, t, client=client,
                                   client_config=cfg.kafka_config):
                    found.append(t)
        except KafkaUnavailable as exc:
            self._log("Kafka unavailable, retrying: %s", exc)
            return []
        missing = [t for t in wanted if t not in found]
        if missing and missing != self._said_missing:  # once, not at every check
            hint = (" (the processor publishes predictions with --predictions-topic; "
                    "--predictions-topic '' draws without them)"
                    if cfg.predictions_topic in missing else "")
            log.warning("map: topic(s) %s not found yet, checking every %.0f s%s",
                        ", ".join(missing), TOPIC_RECHECK_S, hint)
        self._said_missing = missing
        return found

    def _wanted(self) -> list[str]:
        cfg = self.config
        return [t for t in (cfg.positions_topic, cfg.predictions_topic, cfg.alerts_topic) if t]

    def _consumer(self, client: str, topics: list[str]) -> Any:
        from trajstream.stream.kafka import make_consumer

        log.info("map: reading %s from their end", ", ".join(topics))
        return make_consumer(self.config.bootstrap, topics, group=None, client=client,
                             from_beginning=False, config=dict(self.config.kafka_config))

    def _apply(self, records: list[Any]) -> None:
        """Keep the newest message per vehicle; alerts go to the hub at once."""
        cfg = self.config
        positions, keyless, predictions = self._positions, self._keyless, self._predictions
        pos_topic, pred_topic, alerts_topic = (cfg.positions_topic, cfg.predictions_topic,
                                               cfg.alerts_topic)
        n_pos = n_pred = 0
        for r in records:
            value = r.value
            if value is None:
                continue
            topic = r.topic
            if topic == pos_topic:
                n_pos += 1
                if r.key:
                    positions[r.key] = value
                else:
                    keyless.append(value)
            elif topic == pred_topic:
                n_pred += 1
                predictions[r.key] = value
            elif topic == alerts_topic:
                self.counts["alerts"] += 1
                self.hub.publish_alert(value)
        self.counts["positions"] += n_pos
        self.counts["predictions"] += n_pred
        if len(keyless) > MAX_POLL_RECORDS:  # keyless senders: bound what waits
            del keyless[:-MAX_POLL_RECORDS]

    def _decode_pending(self) -> None:
        """Decode what :meth:`_apply` kept into the fleet table."""
        if self._positions or self._keyless:
            keys: list[bytes | None] = [*self._positions, *([None] * len(self._keyless))]
            values: list[bytes | None] = [*self._positions.values(), *self._keyless]
            self._positions, self._keyless = {}, []
            batch, rejections = decode_batch(keys, values, self.config.codec)
            self.counts["rejected"] += len(rejections)
            self.table.update_positions(batch)
        if self._predictions:
            preds = list(self._predictions.values())
            self._predictions = {}
            self.table.update_predictions(preds)

    def _scrape_loop(self, stop: threading.Event) -> None:
        url = self.config.metrics_url
        assert url
        prev: tuple[float, float] | None = None
        while not stop.wait(SCRAPE_INTERVAL_S):
            try:
                got = scrape_processor(url)
            except (OSError, ValueError) as exc:
                self._log("map: processor metrics at %s unavailable: %s", url, exc)
                self.hub.publish_stats({"processor_metrics": "unreachable"})
                continue
            now = time.monotonic()
            consumed = got.pop("positions_consumed", None)
            if consumed is not None:
                if prev is not None and now > prev[0] and consumed >= prev[1]:
                    got["positions_per_s"] = round((consumed - prev[1]) / (now - prev[0]), 1)
                prev = (now, consumed)
            got["processor_metrics"] = "ok"
            self.hub.publish_stats(got)

    def _log(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + LOG_INTERVAL_S
            log.warning(msg, *args)


def scrape_processor(url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """The corner figures from a processor's /metrics: mean online error per model and
    horizon (since start), consumer and event-time lag, positions consumed so far, model."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - operator URL
        text = resp.read(4 << 20).decode("utf-8", "replace")
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], float] = {}
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "trajstream_prediction_error_meters_sum":
                sums[(labels.get("model", ""), labels.get("horizon", ""))] = value
            elif name == "trajstream_prediction_error_meters_count":
                counts[(labels.get("model", ""), labels.get("horizon", ""))] = value
            elif name == "trajstream_consumer_lag_records":
                out["consumer_lag"] = int(value)
            elif name == "trajstream_event_time_lag_seconds" and math.isfinite(value):
                out["lag_s"] = round(value, 3)  # NaN: none yet (the map's own lag shows)
            elif name == "trajstream_positions_consumed_total":
                out["positions_consumed"] = value
            elif name == "trajstream_build_info" and "predictor" in labels:
                out["model"] = labels["predictor"]
    errors: dict[str, dict[str, float]] = {}
    for key, total in sums.items():
        n = counts.get(key, 0.0)
        if n > 0:
            errors.setdefault(key[0], {})[key[1]] = round(total / n, 3)
    out["error_m"] = errors
    return out
