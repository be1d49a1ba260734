"""``trajstream process`` and ``trajstream demo``.

Both build a :class:`~stream.config.ProcessorConfig` from flags (or ``TRAJSTREAM_*``
environment variables), fail at start-up on anything contradictory, and run the micro-batch
loop of stream/app.py. ``demo`` runs the simulator in a thread, paced to real time, feeding
the processor over an in-process queue: no broker needed.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click
import orjson

from trajstream.cli import (
    WEIGHTS_ENV_HELP,
    WEIGHTS_ENVVARS,
    kafka_option,
    option_given,
    parse_kafka_options,
    weights_envvars_agree,
)
from trajstream.contracts import PREDICTORS
from trajstream.errors import ConfigError
from trajstream.signals import stop_on_signals
from trajstream.stream.config import (
    CODEC_DEFAULTS,
    DEFAULTS,
    ENGINE_DEFAULTS,
    EPISODE_DEFAULTS,
    MIN_RISK_INTERVAL_S,
    RISK_DEFAULTS,
    STAGES,
    EngineConfig,
    ProcessorConfig,
    SourceKind,
)
from trajstream.stream.cpus import usable_cpus
from trajstream.stream.livemap.options import map_options

__all__ = ["demo", "process"]

log = logging.getLogger("trajstream.stream.commands")

_DEFAULT_PREDICTOR = DEFAULTS.predictor


def _opt(*names: str, env: str, **kw: Any) -> Callable[[Any], Any]:
    kw.setdefault("show_default", True)
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True, **kw)


_POS_FLOAT = click.FloatRange(min=0.0, min_open=True)


def _engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by process and demo: predictor, event-time rules, risk, episodes."""
    opts = [
        _opt("--predictor", env="PREDICTOR", default=_DEFAULT_PREDICTOR,
             type=click.Choice(PREDICTORS),
             help="Trajectory predictor: the shipped LSTM, constant velocity or constant turn "
                  "rate. The CV baseline always runs alongside for the online error metric."),
        click.option("--weights", envvar=list(WEIGHTS_ENVVARS), show_envvar=True,
                     show_default=True, default=None, metavar="FILE.npz",
                     type=click.Path(dir_okay=False), callback=weights_envvars_agree,
                     help="LSTM weights from `trajstream model train` [default: the shipped "
                          "ones]. Restored from a changelog written under other weights, a "
                          "vehicle keeps its track and alerts; its LSTM state starts over. "
                          + WEIGHTS_ENV_HELP),
        _opt("--horizon-s", env="HORIZON_S",
             default=ENGINE_DEFAULTS.horizon_s, type=_POS_FLOAT,
             help="Prediction horizon (s)."),
        _opt("--step-s", env="STEP_S",
             default=ENGINE_DEFAULTS.step_s, type=_POS_FLOAT,
             help="Spacing of predicted points (s); the horizon must be a multiple of it."),
        _opt("--allowed-lateness-s", env="ALLOWED_LATENESS_S",
             default=ENGINE_DEFAULTS.allowed_lateness_s,
             type=click.FloatRange(min=0.0),
             help="How far behind the newest event time of its partition a record may "
                  "arrive and still count (older: dropped 'late'); a tick waits at most this "
                  "long for a partition that stopped delivering."),
        _opt("--tick-lateness-s", env="TICK_LATENESS_S",
             default=ENGINE_DEFAULTS.tick_lateness_s, type=click.FloatRange(min=0.0),
             help="A tick's alerts go out as soon as every vehicle that may still report in "
                  "it has (by its own reporting interval), or at the latest once every input "
                  "partition has a fix this far past the tick (not --allowed-lateness-s "
                  "later); a fix behind its partition by more than this counts at the "
                  "partition's current tick. At most --allowed-lateness-s (the default is "
                  "capped at it)."),
        _opt("--tick-s", env="TICK_S",
             default=ENGINE_DEFAULTS.tick_s, type=click.FloatRange(min=MIN_RISK_INTERVAL_S),
             help="Step of event time: records are released and vehicles updated tick by "
                  "tick. Between two whole-fleet assessments a conflict already found is "
                  "assessed again at every tick, on the vehicles' next fixes, so one within "
                  "2.5 s of contact is confirmed (as a warning) a tick after it is found. "
                  f"Match it to the fleet's fix interval (at least {MIN_RISK_INTERVAL_S} s); "
                  "set it to --risk-interval-s to confirm only at whole-fleet assessments."),
        _opt("--risk-interval-s", env="RISK_INTERVAL_S",
             default=ENGINE_DEFAULTS.risk_interval_s,
             type=click.FloatRange(min=MIN_RISK_INTERVAL_S),
             help="The whole fleet is assessed at event times that are multiples of this, a "
                  f"multiple of --tick-s (at least {MIN_RISK_INTERVAL_S} s: each assesses "
                  "every recent vehicle pair)."),
        _opt("--stale-after-s", env="STALE_AFTER_S",
             default=ENGINE_DEFAULTS.stale_after_s, type=_POS_FLOAT,
             help="A vehicle takes part in risk only if its last fix is at most this old."),
        _opt("--ttl-s", env="TTL_S",
             default=ENGINE_DEFAULTS.ttl_s, type=_POS_FLOAT,
             help="A vehicle silent this long (event time) is forgotten."),
        _opt("--reset-gap-s", env="RESET_GAP_S",
             default=ENGINE_DEFAULTS.reset_gap_s, type=_POS_FLOAT,
             help="A gap this long between two fixes restarts the vehicle's motion state."),
        _opt("--max-future-s", env="MAX_FUTURE_S",
             default=ENGINE_DEFAULTS.max_future_s, type=_POS_FLOAT,
             help="Records further than this ahead of both the stream and the wall clock are "
                  "dropped (a wrong clock must not stall everyone)."),
        _opt("--max-partition-skew-s", env="MAX_PARTITION_SKEW_S",
             default=ENGINE_DEFAULTS.max_partition_skew_s,
             type=_POS_FLOAT,
             help="Catching up on several Kafka partitions, the watermark waits for the "
                  "slowest one with records left, unless it trails by more than this (s)."),
        _opt("--max-clock-skew-s", env="MAX_CLOCK_SKEW_S",
             default=ENGINE_DEFAULTS.max_clock_skew_s, type=_POS_FLOAT,
             help="A vehicle whose fixes jump this far past the newest event time of its "
                  "partition, with no other vehicle confirming, is quarantined (dropped "
                  "'ahead', dead-lettered): one fast clock cannot make everyone late."),
        _opt("--min-fix-interval-s", env="MIN_FIX_INTERVAL_S",
             default=ENGINE_DEFAULTS.min_fix_interval_s, type=_POS_FLOAT,
             help="At most one fix per vehicle per this much event time is used; more are "
                  "dropped (a flooding sender cannot slow everyone down)."),
        _opt("--critical-ttc-s", env="CRITICAL_TTC_S",
             default=RISK_DEFAULTS.critical_ttc_s, type=_POS_FLOAT,
             help="Predicted contact within this many seconds is critical."),
        _opt("--warning-ttc-s", env="WARNING_TTC_S",
             default=RISK_DEFAULTS.warning_ttc_s, type=_POS_FLOAT,
             help="Predicted contact within this many seconds is a warning; must exceed "
                  "--critical-ttc-s."),
        _opt("--critical-fix-age-s", env="CRITICAL_FIX_AGE_S",
             default=RISK_DEFAULTS.critical_fix_age_s, type=click.FloatRange(min=0.0),
             help="A pair with a vehicle silent longer than this (s) is warned of, never "
                  "critical: it coasts on its prediction. For fleets reporting slower than "
                  "2 Hz raise it (with --stale-after-s) to about twice their interval."),
        _opt("--margin-m", env="MARGIN_M",
             default=RISK_DEFAULTS.margin_m, type=click.FloatRange(min=0.0),
             help="Footprints closer than this count as contact (m)."),
        _opt("--clear-after-s", env="CLEAR_AFTER_S",
             default=EPISODE_DEFAULTS.clear_after_s,
             type=click.FloatRange(min=0.0),
             help="Risk-free event time that closes an alert episode (s)."),
        _opt("--confirm-ticks", env="CONFIRM_TICKS",
             default=EPISODE_DEFAULTS.confirm_ticks, type=click.IntRange(min=1),
             help="Consecutive assessments a conflict must persist before its first alert."),
        _opt("--max-batch-records", env="MAX_BATCH_RECORDS", default=DEFAULTS.max_batch_records,
             type=click.IntRange(min=1),
             help="A micro-batch takes at most this many of the records that have arrived."),
        _opt("--max-batch-wait-ms", env="MAX_BATCH_WAIT_MS", default=DEFAULTS.max_batch_wait_ms,
             type=click.IntRange(min=0),
             help="How long a poll waits for the first record (a batch is what has "
             "arrived, never held back to fill up)."),
        _opt("--risk-process/--no-risk-process", "risk_process", env="RISK_PROCESS",
             default=None, show_default="on with 2 or more CPUs (affinity, CPU quota)",
             help="Assess collision risk in a child process, on another core than the "
                  "vehicle stage (the alerts are the same either way)."),
        _opt("--metrics-port", env="METRICS_PORT", default=DEFAULTS.metrics_port,
             type=click.IntRange(0, 65535),
             help="Serve Prometheus metrics on this port (0 = off)."),
        _opt("--metrics-addr", env="METRICS_ADDR", default=DEFAULTS.metrics_addr,
             help="Address the metrics endpoint binds: all interfaces by default, as a "
                  "scraper in another container needs; 127.0.0.1 keeps it on this host."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _settings_named_as_options(command: Callable[..., None]) -> Callable[..., None]:
    """A setting refused deeper down (``horizon_s (4.1) must be a multiple of step_s``) is
    named by the command's own options (``--horizon-s``, ``--step-s``) in its message."""

    @functools.wraps(command)
    def run(**kw: Any) -> None:
        try:
            command(**kw)
        except ConfigError as exc:
            ctx = click.get_current_context(silent=True)
            flags = {} if ctx is None else {
                p.name: p.opts[0] for p in ctx.command.params
                if p.name and p.opts and p.opts[0].startswith("--")}
            said = str(exc)
            named = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: flags.get(m[0], m[0]), said)
            if named == said:
                raise
            raise ConfigError(named) from exc

    return run


def _engine_config(kw: dict[str, Any]) -> EngineConfig:
    from trajstream.stream.episodes import EpisodeConfig
    from trajstream.stream.risk import RiskConfig

    ctx = click.get_current_context(silent=True)
    if (kw["weights"] is not None and kw["predictor"] != "lstm" and ctx is not None
            and ctx.get_parameter_source("weights") is click.core.ParameterSource.ENVIRONMENT):
        kw["weights"] = None  # the LSTM's weights, set for other runs: not read for CV/CTRV
    if kw["weights"] is not None and kw["predictor"] != "lstm":
        raise click.BadParameter(f"applies to --predictor lstm, not {kw['predictor']}",
                                 param_hint="--weights")
    per_tick = kw["risk_interval_s"] / kw["tick_s"]
    if per_tick < 1 - 1e-9 or abs(per_tick - round(per_tick)) > 1e-6:
        raise click.BadParameter(
            f"must be a multiple of --tick-s ({kw['tick_s']:g}), got {kw['risk_interval_s']:g}; "
            f"set --tick-s to it to assess the whole fleet at every tick",
            param_hint="--risk-interval-s")
    if kw["tick_lateness_s"] > kw["allowed_lateness_s"] and option_given("tick_lateness_s"):
        raise click.BadParameter(
            f"must be at most --allowed-lateness-s ({kw['allowed_lateness_s']:g}), got "
            f"{kw['tick_lateness_s']:g}", param_hint="--tick-lateness-s")
    if not kw["warning_ttc_s"] > kw["critical_ttc_s"]:
        raise click.BadParameter(
            f"must be greater than --critical-ttc-s ({kw['critical_ttc_s']}), got "
            f"{kw['warning_ttc_s']}", param_hint="--warning-ttc-s")
    risk = RiskConfig(critical_ttc_s=kw["critical_ttc_s"], warning_ttc_s=kw["warning_ttc_s"],
                      margin_m=kw["margin_m"], critical_fix_age_s=kw["critical_fix_age_s"])
    episodes = EpisodeConfig(clear_after_s=kw["clear_after_s"], confirm_ticks=kw["confirm_ticks"])
    return EngineConfig(
        horizon_s=kw["horizon_s"], step_s=kw["step_s"],
        allowed_lateness_s=kw["allowed_lateness_s"], tick_lateness_s=kw["tick_lateness_s"],
        tick_s=kw["tick_s"], risk_interval_s=kw["risk_interval_s"],
        stale_after_s=kw["stale_after_s"], ttl_s=kw["ttl_s"], reset_gap_s=kw["reset_gap_s"],
        max_future_s=kw["max_future_s"], max_partition_skew_s=kw["max_partition_skew_s"],
        min_fix_interval_s=kw["min_fix_interval_s"], max_clock_skew_s=kw["max_clock_skew_s"],
        risk=risk, episodes=episodes,
    )


def _serve_metrics(port: int, addr: str, metrics: Any) -> Any:
    if not port:
        return None
    from trajstream.stream.metrics import serve

    try:
        server = serve(port, metrics.registry, addr=addr)
    except OSError as exc:
        log.warning("metrics not served: %s port %d unavailable (%s)", addr, port,
                    exc.strerror or exc)
        return None
    host = "127.0.0.1" if addr in ("0.0.0.0", "") else "[::1]" if addr == "::" else addr
    log.info("metrics on http://%s:%d/metrics (bound to %s)", host, port, addr or "0.0.0.0")
    return server


def _codec(origin_lat: float | None, origin_lon: float | None, max_message_bytes: int) -> Any:
    from trajstream.stream.codec import CodecConfig

    return CodecConfig(origin_lat=origin_lat, origin_lon=origin_lon,
                       max_message_bytes=max_message_bytes)


# Settings of one source only, each with its value when not given.
_KAFKA_ONLY: dict[str, Any] = {"predictions_topic": None, "dlq_topic": None,
                               "until_end": False, "exactly_once": False,
                               "stage": DEFAULTS.stage}
_FILE_ONLY: dict[str, Any] = {"alerts_out": None, "predictions_out": None, "dlq_out": None}


@click.command("process")
@_opt("--bootstrap", env="BOOTSTRAP", default=None,
      help=f"Kafka bootstrap servers HOST:PORT[,...] (e.g. {DEFAULTS.bootstrap}); selects "
           "the Kafka source (a flag --input wins over TRAJSTREAM_BOOTSTRAP, a flag "
           "--bootstrap over TRAJSTREAM_INPUT).")
@_opt("--positions-topic", env="POSITIONS_TOPIC", default=DEFAULTS.positions_topic,
      help="Topic of position messages (key = vehicle_id).")
@_opt("--alerts-topic", env="ALERTS_TOPIC", default=DEFAULTS.alerts_topic,
      help="Topic the collision alerts are published to.")
@_opt("--predictions-topic", env="PREDICTIONS_TOPIC", default=None,
      help="Also publish every vehicle's predicted path here (one per vehicle per tick).")
@_opt("--dlq-topic", env="DLQ_TOPIC", default=None,
      help="Dead-letter topic for rejected records (with the reason); off when not given.")
@_opt("--group", env="GROUP", default=DEFAULTS.group, help="Kafka consumer group.")
@click.option("--instance-id", envvar="TRAJSTREAM_INSTANCE_ID", show_envvar=True,
              default=None, show_default="$HOSTNAME when set (containers, Kubernetes pods)",
              help="Static group membership: a name unique in the group and stable across "
                   "restarts of this instance. A restarted instance gets its partitions back "
                   "at once, without a rebalance (about 4 s instead of 15 s after a crash); "
                   "a second running process with the name takes the first's place (the "
                   "first exits with an error). Empty: dynamic membership.")
@_opt("--kafka-client", env="KAFKA_CLIENT", default=None,
      type=click.Choice(["confluent", "kafka-python"]),
      help="Kafka client library [default: confluent when installed, else kafka-python].")
@kafka_option("Raw setting for every Kafka client: consumer, producer, admin and the "
              "changelog reader (librdkafka names, e.g. security.protocol=SASL_SSL); with "
              "kafka-python each client takes the settings it has. Repeatable; the variable "
              "takes space-separated pairs.")
@_opt("--consumer-option", "consumer_option", env="CONSUMER_OPTIONS", multiple=True,
      default=(), metavar="KEY=VALUE",
      help="Raw setting for the positions consumer only (e.g. fetch.max.bytes=1048576).")
@_opt("--producer-option", "producer_option", env="PRODUCER_OPTIONS", multiple=True,
      default=(), metavar="KEY=VALUE",
      help="Raw setting for the output producer only (e.g. linger.ms=5).")
@_opt("--admin-option", "admin_option", env="ADMIN_OPTIONS", multiple=True, default=(),
      metavar="KEY=VALUE",
      help="Raw setting for the admin client only (topic creation and description).")
@_opt("--from-beginning/--from-latest", "from_beginning", env="FROM_BEGINNING", default=True,
      help="Where a consumer group without committed offsets starts, and where one goes "
           "on whose committed offset the topic's retention deleted (from-latest then "
           "skips the records still kept, too).")
@_opt("--until-end", env="UNTIL_END", is_flag=True, default=False,
      help="Kafka: stop once the end of the positions topic is reached (lag 0), assess the "
           "last ticks as at the end of a file, exit 0. While polls come back empty and the "
           "end is not reached, warns every 30 s what it waits for (partitions not assigned, "
           "lag unknown, or lag on partitions that deliver nothing).")
@_opt("--input", "input_path", env="INPUT", default=None, metavar="FILE.jsonl",
      help="Read positions from a JSONL file (- = stdin) to the end, then exit 0; selects the "
           "file source.")
@_opt("--alerts-out", env="ALERTS_OUT", default=None, metavar="FILE.jsonl",
      help="File input: write alerts here as JSON lines (- = stdout).")
@_opt("--predictions-out", env="PREDICTIONS_OUT", default=None, metavar="FILE.jsonl",
      help="File input: write predicted paths here as JSON lines.")
@_opt("--dlq-out", env="DLQ_OUT", default=None, metavar="FILE.jsonl",
      help="File input: write dead letters (rejected records with the reason) here.")
@_opt("--commit-interval-s", env="COMMIT_INTERVAL_S", default=DEFAULTS.commit_interval_s,
      type=click.FloatRange(min=0.0),
      help="Flush outputs and commit offsets at most this often (0 = every batch).")
@_opt("--changelog/--no-changelog", "changelog", env="CHANGELOG", default=True,
      help="Kafka: keep per-vehicle state (LSTM h/c, last fix, alert episodes) in a compacted "
           "changelog topic, restored on start and on partition assignment.")
@_opt("--changelog-topic", env="CHANGELOG_TOPIC", default=None,
      help="State changelog topic [default: <group>-changelog]; created compacted with the "
           "positions topic's partition count, and grown with it.")
@_opt("--exactly-once", "exactly_once", env="EXACTLY_ONCE", is_flag=True, default=False,
      help="Kafka transactions covering alerts, predictions, dead letters, the changelog and "
           "the consumed offsets: read-committed consumers see no duplicate alert.")
@_opt("--transactional-id", env="TRANSACTIONAL_ID", default=None,
      help="--exactly-once: the producer's transactional id, unique per running process "
           "and kept across its restarts [default: <group>-<instance id>-tx, or <group>-tx "
           "without --instance-id].")
@_opt("--max-stall-s", env="MAX_STALL_S", default=DEFAULTS.max_stall_s, type=_POS_FLOAT,
      help="Retry (with backoff) a broker that is unreachable, or answers but takes no "
           "outputs or commits, this long without progress, then exit 1 so an orchestrator "
           "restarts the processor.")
@_opt("--origin-lat", env="ORIGIN_LAT", default=None, type=float,
      help="Latitude of the local frame's origin; enables lat/lon messages.")
@_opt("--origin-lon", env="ORIGIN_LON", default=None, type=float,
      help="Longitude of the local frame's origin.")
@_opt("--max-message-bytes", env="MAX_MESSAGE_BYTES",
             default=CODEC_DEFAULTS.max_message_bytes, type=click.IntRange(min=1),
      help="Larger position messages are rejected.")
@_opt("--stage", env="STAGE", default=DEFAULTS.stage, type=click.Choice(STAGES),
      help="all: the whole pipeline in this process. predict: vehicle-keyed, publishes each "
           "vehicle's predicted kinematics per tick to --internal-topic by spatial tile. risk: "
           "tile-keyed (consumer group <group>-risk), alerts from --internal-topic. Scale "
           "each stage with more processes (docs/scaling.md).")
@_opt("--internal-topic", env="INTERNAL_TOPIC", default=DEFAULTS.internal_topic,
      help="Topic between --stage predict and --stage risk (created with the positions "
           "topic's partition count). Default: <group>-predicted-kinematics, one per "
           "deployment (two sharing a topic would alert on each other's vehicles).")
@_opt("--tile-m", env="TILE_M", default=DEFAULTS.tile_m, type=_POS_FLOAT,
      help="Side of the square tiles the risk stage is keyed by (m). The predict stage's "
           "decides: it fans the vehicles out by them, and a risk stage given others "
           "follows it, with a warning.")
@_opt("--halo-m", env="HALO_M", default=None, type=click.FloatRange(min=0.0),
      help="A vehicle goes to every tile within this distance (m) [default: "
           f"{DEFAULTS.max_speed_mps:g} m/s x --horizon-s + {DEFAULTS.halo_margin_m:g} m].")
@_engine_options
@_settings_named_as_options
def process(**kw: Any) -> None:
    """Run the stream processor: positions in, collision alerts out.

    Kafka: --bootstrap HOST:PORT (topics and group have defaults). Files: --input
    positions.jsonl --alerts-out alerts.jsonl (plain or gzip), read to the end. A file and
    a one-partition topic give the same alerts for the same records; on P partitions a
    vehicle's neighbour inputs come from its own partition only (README: the trajectory
    model). SIGTERM/SIGINT finish the current batch, flush, commit and exit 0; a second one
    stops at once (exit 130).
    """
    from trajstream.stream.app import Processor, build_io, load_predictor
    from trajstream.stream.metrics import Metrics

    ctx = click.get_current_context()
    env = {name for name in kw
           if ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT}
    if kw["input_path"] and kw["bootstrap"]:
        if len(env & {"input_path", "bootstrap"}) != 1:
            raise click.UsageError("give either --input FILE.jsonl (file) or --bootstrap "
                                   "HOST:PORT (Kafka), not both")
        kw[(env & {"input_path", "bootstrap"}).pop()] = None  # the flag wins
    source: SourceKind | None = (
        "file" if kw["input_path"] else "kafka" if kw["bootstrap"] else None)
    # One environment serves both sources (compose's holds Kafka topics): its settings
    # for the other source are not read (given as flags, ProcessorConfig refuses them).
    other = _FILE_ONLY if source == "kafka" else _KAFKA_ONLY if source == "file" else {}
    kw.update({name: unset for name, unset in other.items() if name in env})
    if source is None:
        raise click.UsageError(
            "no source: give --bootstrap HOST:PORT (Kafka) or --input FILE.jsonl")
    engine = _engine_config(kw)
    is_file = source == "file"
    cfg = ProcessorConfig(
        source=source, engine=engine,
        codec=_codec(kw["origin_lat"], kw["origin_lon"], kw["max_message_bytes"]),
        predictor=kw["predictor"], bootstrap=kw["bootstrap"],
        positions_topic=kw["positions_topic"],
        alerts_topic=None if is_file else kw["alerts_topic"],
        predictions_topic=kw["predictions_topic"], dlq_topic=kw["dlq_topic"],
        group=kw["group"], instance_id=_instance_id(kw["instance_id"]),
        kafka_client=kw["kafka_client"],
        kafka_config=parse_kafka_options(kw["kafka_option"]),
        consumer_config=parse_kafka_options(kw["consumer_option"], "--consumer-option"),
        producer_config=parse_kafka_options(kw["producer_option"], "--producer-option"),
        admin_config=parse_kafka_options(kw["admin_option"], "--admin-option"),
        from_beginning=kw["from_beginning"], until_end=kw["until_end"],
        input_path=kw["input_path"], alerts_out=kw["alerts_out"],
        predictions_out=kw["predictions_out"], dlq_out=kw["dlq_out"],
        max_batch_records=kw["max_batch_records"], max_batch_wait_ms=kw["max_batch_wait_ms"],
        commit_interval_s=kw["commit_interval_s"], metrics_port=kw["metrics_port"],
        changelog=kw["changelog"], changelog_topic=kw["changelog_topic"],
        exactly_once=kw["exactly_once"], transactional_id=kw["transactional_id"],
        max_stall_s=kw["max_stall_s"],
        stage=kw["stage"], internal_topic=kw["internal_topic"], tile_m=kw["tile_m"],
        halo_m=kw["halo_m"], risk_process=kw["risk_process"],
    )
    risk_only = cfg.stage == "risk"
    predictor = (None if risk_only else
                 load_predictor(cfg.predictor, engine.spec, weights=kw["weights"]))
    metrics = Metrics()
    io = build_io(cfg)
    try:
        proc = Processor(cfg, io, predictor, metrics)
    except BaseException:  # e.g. the risk process cannot start: no output file is left
        io.discard()
        raise
    metrics.set_build_info("none" if predictor is None else predictor.name, io.kafka_client,
                           stage=cfg.stage)
    server = _serve_metrics(kw["metrics_port"], kw["metrics_addr"], metrics)
    topic = cfg.internal_name if risk_only else cfg.positions_topic
    member = "" if not cfg.instance_id else f", instance id {cfg.instance_id}"
    if cfg.exactly_once:
        member += f", transactional id {cfg.tx_id}"
    where = (f"{cfg.input_path}" if is_file else f"{topic} at {cfg.bootstrap} (group "
             f"{cfg.consumer_group}{member}, {io.kafka_client})")
    cpus = usable_cpus()
    log.info("processing %s, stage %s%s%s%s", where, cfg.stage,
             "" if predictor is None else f", the {predictor.name} predictor",
             "" if cfg.stage != "all" else
             f", risk assessed {'in a child process' if proc.engine.risk_in_process else 'inline'}"
             f" ({cpus} usable CPU{'' if cpus == 1 else 's'})",
             f", state changelog {cfg.changelog_name}" if cfg.changelog_name else "")
    try:
        with stop_on_signals() as stop:
            summary = proc.run(stop)
    finally:
        if server is not None:
            server.shutdown()
    log.info("done: %s", _summary_line(summary))


def _instance_id(given: str | None) -> str | None:
    """--instance-id, else $HOSTNAME (compose and Kubernetes set it, stable across restarts
    of a container or pod); empty means dynamic membership."""
    name = given if given is not None else os.environ.get("HOSTNAME", "")
    return name.strip() or None


def _summary_line(s: dict[str, Any]) -> str:
    cpu = f", {s['cpu_s']:.1f} CPU s" if "cpu_s" in s else ""
    if "main_idle_s" in s:
        cpu += (f"; main thread {s['main_wait_s']:.1f} s waiting for a CPU, "
                f"{s['main_idle_s']:.1f} s idle")
    moved = s.get("moved_partition", 0)  # a keying mistake of the producers
    keys = f"; {moved} fixes of vehicles seen on several partitions" if moved else ""
    return (f"{s['consumed']} records in {s.get('elapsed_s', 0.0):.1f} s "
            f"({s.get('records_per_s', 0.0):.0f}/s{cpu}); alerts {s['warning']} warning, "
            f"{s['critical']} critical; dropped {s['stale']} stale, {s['late']} late, "
            f"{s['future']} future, {s['dense']} dense, {s['ahead']} ahead; "
            f"corrected {s.get('corrected_speed', 0)} speed, "
            f"{s.get('corrected_heading', 0)} heading, {s.get('corrected_jump', 0)} jump; "
            f"{s['rejected']} rejected{keys}")


# -- demo --------------------------------------------------------------------------------


def _pace_simulation(sim_cfg: Any, q: queue.Queue[Any], stop: threading.Event, speed: float,
                     truth: list[dict[str, Any]], first_seen: dict[bytes, float],
                     errors: list[BaseException]) -> None:
    """Producer thread: simulator ticks onto the queue at ``speed`` x real time."""
    from trajstream.simulator import iter_ticks
    from trajstream.stream.sources import END

    start_wall = time.monotonic()
    ts0: float | None = None
    try:
        for tick in iter_ticks(sim_cfg):
            if stop.is_set():
                break
            if ts0 is None:
                ts0 = tick.ts
            due = start_wall + (tick.ts - ts0) / speed
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            for k, _ in tick.messages:
                if k is not None and k not in first_seen:
                    first_seen[k] = tick.ts
            truth.extend(tick.truth)
            msgs = list(tick.messages)
            while not stop.is_set():
                try:
                    q.put(msgs, timeout=0.2)
                    break
                except queue.Full:
                    continue
    except BaseException as exc:  # surfaced by the main thread
        errors.append(exc)
    finally:
        while True:  # END lets the processor finish; not needed once stopping anyway
            try:
                q.put(END, timeout=0.2)
                break
            except queue.Full:
                if stop.is_set():
                    break


def _start_demo_map(kw: dict[str, Any]) -> tuple[Any, Any]:
    """(server, tap) of the demo's live map, or (None, None) when off or the port is taken
    (a warning, like the metrics port: the demo still runs)."""
    if not kw["map_port"]:
        return None, None
    from trajstream.stream.livemap import MapHub, ProcessorTap
    from trajstream.stream.livemap.options import start_map_server

    hub = MapHub()
    try:
        server = start_map_server(hub, kw)
    except ConfigError as exc:
        log.warning("%s: the demo runs without it (--map-port)", exc)
        return None, None
    return server, ProcessorTap(hub, fps=kw["map_fps"])


@click.command("demo")
@_opt("--vehicles", env="VEHICLES", default=150, type=click.IntRange(min=2),
      help="Vehicles in the simulated city.")
@_opt("--duration", env="DURATION", default=0.0, type=click.FloatRange(min=0.0),
      help="Simulated seconds to run (0 = until Ctrl-C).")
@_opt("--speed", env="SPEED", default=1.0, type=click.FloatRange(min=0.0, min_open=True),
      help="Replay speed: 1 = real time, 2 = twice as fast.")
@_opt("--seed", env="SEED", default=0, type=int, help="Simulator seed (same seed, same run).")
@_opt("--reckless", env="RECKLESS", default=0.1, type=click.FloatRange(0.0, 1.0),
      help="Fraction of reckless drivers (0 = collision-free traffic).")
@_opt("--json", "as_json", env="DEMO_JSON", is_flag=True, default=False,
      help="Print alerts as JSON lines instead of one readable line each.")
@map_options(port_off=True)
@_engine_options
@_settings_named_as_options
def demo(**kw: Any) -> None:
    """Simulator and processor in one process over an in-process queue (no broker).

    Alerts print live; the live map is served on --map-port, metrics on --metrics-port;
    Ctrl-C (or --duration) ends the run with a summary of alerts against the simulator's
    ground truth.
    """
    from trajstream.simulator import SimConfig
    from trajstream.stream.alerts_cli import format_alert
    from trajstream.stream.app import IO, Processor, load_predictor
    from trajstream.stream.groundtruth import match_collisions
    from trajstream.stream.metrics import Metrics
    from trajstream.stream.sinks import CallbackSink, Delivery, Output
    from trajstream.stream.sources import MemorySource

    engine = _engine_config(kw)
    duration = kw["duration"] or 10.0 * 365 * 86400  # "forever"
    try:
        # Event times start now, so alert clocks and the event-time lag metric read naturally.
        sim_cfg = SimConfig(vehicles=kw["vehicles"], duration_s=duration, seed=kw["seed"],
                            reckless_fraction=kw["reckless"], start_ts=round(time.time(), 1))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    cfg = ProcessorConfig(source="memory", engine=engine, predictor=kw["predictor"],
                          max_batch_records=kw["max_batch_records"],
                          max_batch_wait_ms=kw["max_batch_wait_ms"],
                          metrics_port=kw["metrics_port"], risk_process=kw["risk_process"])
    predictor = load_predictor(cfg.predictor, engine.spec, weights=kw["weights"])
    metrics = Metrics()
    metrics.set_build_info(predictor.name, "none")
    server = _serve_metrics(kw["metrics_port"], kw["metrics_addr"], metrics)
    map_server, tap = _start_demo_map(kw)

    as_json = kw["as_json"]
    color = sys.stdout.isatty()
    alerts: list[dict[str, Any]] = []

    def show(key: bytes | None, value: bytes) -> None:
        alert = orjson.loads(value)
        alerts.append(alert)
        line = value.decode() if as_json else format_alert(alert, color=color)
        click.echo(line)

    q: queue.Queue[Any] = queue.Queue(maxsize=64)
    truth: list[dict[str, Any]] = []
    first_seen: dict[bytes, float] = {}
    errors: list[BaseException] = []
    outputs = [Output("alerts", CallbackSink(show))]
    if tap is not None:
        outputs.append(Output("alerts", tap, Delivery.BEST_EFFORT))
    io = IO(MemorySource(q, topic="demo"), outputs)
    proc = Processor(cfg, io, predictor, metrics, observers=() if tap is None else (tap,))
    click.echo(
        f"trajstream demo: {kw['vehicles']} vehicles, {kw['reckless']:.0%} reckless, "
        f"{kw['speed']:g}x real time, predictor {predictor.name}"
        + (f", live map on {map_server.url}" if map_server is not None else "")
        + (f", metrics on :{kw['metrics_port']}" if server is not None else "")
        + (" (Ctrl-C to stop)" if not kw["duration"] else ""),
        err=True,
    )
    t0 = time.monotonic()
    try:
        with stop_on_signals() as stop:
            producer = threading.Thread(
                target=_pace_simulation, name="simulator", daemon=True,
                args=(sim_cfg, q, stop, kw["speed"], truth, first_seen, errors),
            )
            producer.start()
            summary = proc.run(stop)
            stop.set()
            producer.join(timeout=5.0)
    finally:
        if server is not None:
            server.shutdown()
        if map_server is not None:
            map_server.stop()
    if errors:
        raise errors[0]
    seen = {k.decode(errors="replace"): t for k, t in first_seen.items()}
    report = match_collisions(alerts, truth, seen or None)
    elapsed = time.monotonic() - t0
    errs = summary["error_m"]

    def metres(m: str, h: str) -> str:  # n/a: no fix of the run has an h-second future yet
        e = errs.get((m, h), math.nan)
        return "n/a" if math.isnan(e) else f"{e:.2f}"

    err_text = ", ".join(
        f"{m} {metres(m, '1')}/{metres(m, '4')} m"
        for m in dict.fromkeys(k[0] for k in errs)
        if not math.isnan(errs.get((m, "1"), math.nan))
    )
    click.echo(
        f"\nsummary: {summary['consumed']} positions in {elapsed:.0f} s, "
        f"{summary['vehicles']} vehicles tracked; alerts {summary['warning']} warning, "
        f"{summary['critical']} critical; {report.describe()}"
        + (f"; prediction error at 1 s / 4 s: {err_text}" if err_text else ""),
        err=True,
    )
