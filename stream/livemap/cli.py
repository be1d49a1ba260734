"""``trajstream map`` and the map options ``trajstream demo`` shares."""

from __future__ import annotations

import logging
from typing import Any

import click

from trajstream.cli import kafka_option, parse_kafka_options
from trajstream.signals import stop_on_signals
from trajstream.stream.commands import _opt
from trajstream.stream.config import DEFAULTS
from trajstream.stream.livemap.options import map_options, start_map_server

__all__ = ["map_command"]

log = logging.getLogger("trajstream.stream.livemap")

@click.command("map")
@_opt("--bootstrap", env="BOOTSTRAP", default=DEFAULTS.bootstrap,
      help="Kafka bootstrap servers HOST:PORT[,...].")
@_opt("--positions-topic", env="POSITIONS_TOPIC", default=DEFAULTS.positions_topic,
      help="Topic of position messages.")
@_opt("--predictions-topic", env="PREDICTIONS_TOPIC", default=DEFAULTS.predictions_topic,
      help="Topic of predicted paths (the processor's --predictions-topic); '' (empty): "
           "the map shows vehicles and alerts only.")
@_opt("--alerts-topic", env="ALERTS_TOPIC", default=DEFAULTS.alerts_topic,
      help="Topic of collision alerts.")
@_opt("--kafka-client", env="KAFKA_CLIENT", default=None,
      type=click.Choice(["confluent", "kafka-python"]),
      help="Kafka client library [default: confluent when installed, else kafka-python].")
@kafka_option("Raw Kafka client setting (librdkafka names); repeatable; the variable "
              "takes space-separated pairs.")
@_opt("--origin-lat", env="ORIGIN_LAT", default=None, type=float,
      help="Latitude of the local frame's origin (as given to the processor): lat/lon "
           "positions are drawn projected around it.")
@_opt("--origin-lon", env="ORIGIN_LON", default=None, type=float,
      help="Longitude of the local frame's origin.")
@_opt("--processor-metrics-url", env="PROCESSOR_METRICS_URL", default=None, metavar="URL",
      help="The processor's Prometheus endpoint (e.g. http://127.0.0.1:9100/metrics): its "
           "throughput, lag and model-vs-CV error are shown in the map's corner.")
@map_options(port_off=False)
def map_command(**kw: Any) -> None:
    """A live map in the browser: vehicles, predicted paths with their uncertainty, alerts.

    Reads the positions, predictions and alerts topics from their end and serves one page
    (nothing fetched from the internet) on --map-host:--map-port. Ctrl-C/SIGTERM stop it.
    """
    from trajstream.stream.codec import CodecConfig
    from trajstream.stream.kafka import resolve_client
    from trajstream.stream.livemap.hub import MapHub
    from trajstream.stream.livemap.kafka_feed import FeedConfig, KafkaFeed

    if (kw["origin_lat"] is None) != (kw["origin_lon"] is None):
        raise click.UsageError("give both --origin-lat and --origin-lon, or neither")
    feed_cfg = FeedConfig(
        bootstrap=kw["bootstrap"], positions_topic=kw["positions_topic"],
        predictions_topic=kw["predictions_topic"] or None, alerts_topic=kw["alerts_topic"],
        kafka_client=resolve_client(kw["kafka_client"]),
        kafka_config=parse_kafka_options(kw["kafka_option"]),
        codec=CodecConfig(origin_lat=kw["origin_lat"], origin_lon=kw["origin_lon"]),
        fps=kw["map_fps"], metrics_url=kw["processor_metrics_url"],
    )
    hub = MapHub()
    server = start_map_server(hub, kw)
    log.info("live map on %s (Kafka %s)", server.url, kw["bootstrap"])
    try:
        with stop_on_signals(finishing=None) as stop:
            KafkaFeed(hub, feed_cfg).run(stop)
    finally:
        server.stop()
