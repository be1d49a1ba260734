"""``trajstream simulate`` and ``trajstream replay``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from trajstream.cli import (
    KAFKA_TIMEOUT_ENV_HELP,
    KAFKA_TIMEOUT_ENVVARS,
    kafka_option,
    kafka_timeout_envvars_agree,
    option_given,
    parse_kafka_options,
)
from trajstream.contracts import POSITIONS_TOPIC
from trajstream.errors import ConfigError, TrajstreamError
from trajstream.outputs import refuse_aliases
from trajstream.signals import stop_on_signals
from trajstream.simulator.config import DEFAULT_START_TS, SimConfig
from trajstream.simulator.publish import (
    JsonlSink,
    KafkaSink,
    OutputClosed,
    Pacer,
    Progress,
    ReplayFile,
    Sink,
)
from trajstream.simulator.sim import Tick
from trajstream.simulator.sumo.options import SUMO_ONLY, sumo_config, sumo_options

_FRACTION = click.FloatRange(0.0, 1.0)
# the options --clean turns off (the parameter names of the sensor effects)
_SENSOR_EFFECTS = ("gps_sigma", "drop_rate", "jitter", "late_fraction", "duplicate_fraction")
_NON_NEGATIVE = click.FloatRange(min=0.0)


def _opt(*names: str, env: str, **kw: Any) -> Callable[[Any], Any]:
    return click.option(*names, envvar=f"TRAJSTREAM_{env}", show_envvar=True,
                        show_default=True, **kw)


def _kafka_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        _opt("--topic", env="POSITIONS_TOPIC", default=POSITIONS_TOPIC,
             help="Kafka topic of the positions (keyed by vehicle_id)."),
        _opt("--kafka-client", env="KAFKA_CLIENT", default=None,
             type=click.Choice(["confluent", "kafka-python"]),
             help="Kafka client library [default: confluent-kafka when installed]."),
        kafka_option("Raw setting for every Kafka client the command makes: the start-up "
                     "wait's metadata probe, the admin client that creates the topic and "
                     "the producer (librdkafka names, e.g. security.protocol=SASL_SSL; "
                     "with kafka-python each client takes the settings it has). "
                     "Repeatable; the variable takes space-separated pairs."),
        click.option("--kafka-timeout", envvar=list(KAFKA_TIMEOUT_ENVVARS), show_envvar=True,
                     show_default=True, default=10.0, type=_NON_NEGATIVE,
                     callback=kafka_timeout_envvars_agree,
                     help="Seconds to wait for the broker at start-up before giving up "
                          "(alerts: --connect-timeout). " + KAFKA_TIMEOUT_ENV_HELP),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_opt("--engine", env="SIM_ENGINE", default="builtin", type=click.Choice(["builtin", "sumo"]),
      help="Traffic engine: the built-in city grid, or Eclipse SUMO (pip install "
           "'trajstream[sumo]'; options marked [sumo]).")
@_opt("--vehicles", env="VEHICLES", default=200, type=click.IntRange(min=1),
      help="Vehicles present at any time (those that leave are replaced).")
@_opt("--duration", env="DURATION", default=60.0, type=_NON_NEGATIVE,
      help="Simulated seconds to publish; 0 runs until stopped (Ctrl-C, SIGTERM).")
@_opt("--hz", env="HZ", default=10.0, type=click.FloatRange(0.0, 1000.0, min_open=True),
      help="Position updates per vehicle and second.")
@_opt("--seed", env="SEED", default=0, type=click.IntRange(min=0),
      help="Random seed; the same seed and options give byte-identical output.")
@_opt("--reckless", env="RECKLESS", default=SimConfig.reckless_fraction, type=_FRACTION,
      help="Fraction of reckless drivers (builtin: red lights, no yielding, distraction, "
           "cut-ins, drifting; sumo: tailgaters, red-light runners, drivers who do not "
           "yield, pushy lane changers); 0 gives collision-free traffic.")
@_opt("--gps-sigma", env="GPS_SIGMA_M", default=SimConfig.gps_sigma_m, type=_NON_NEGATIVE,
      help="GPS noise, standard deviation per axis (m).")
@_opt("--drop-rate", env="DROP_RATE", default=SimConfig.drop_rate,
      type=click.FloatRange(0.0, 1.0, max_open=True), help="Fraction of messages lost.")
@_opt("--jitter", env="JITTER_S", default=SimConfig.jitter_s, type=_NON_NEGATIVE,
      help="Timestamp jitter, uniform within +- this (s).")
@_opt("--late-fraction", env="LATE_FRACTION", default=SimConfig.late_fraction, type=_FRACTION,
      help="Fraction of messages published late, after newer ones (out of order).")
@_opt("--duplicate-fraction", env="DUPLICATE_FRACTION", default=SimConfig.duplicate_fraction,
      type=_FRACTION, help="Fraction of messages published twice.")
@_opt("--clean", env="CLEAN", is_flag=True, default=False,
      help="No sensor effects: exact positions, every tick, in order.")
@_opt("--positions-only", env="POSITIONS_ONLY", is_flag=True, default=False,
      help="Omit speed and heading (the processor then estimates them).")
@_opt("--out", env="SIM_OUT", default=None, type=click.Path(dir_okay=False, allow_dash=True),
      help="Write positions to this JSONL file ('-' for stdout) instead of Kafka.")
@_opt("--bootstrap", env="BOOTSTRAP", default=None, metavar="HOST:PORT",
      help="Kafka bootstrap servers to publish to.")
@_kafka_options
@_opt("--truth", env="SIM_TRUTH", default=None, type=click.Path(dir_okay=False),
      help="Write ground truth (every collision and near miss) to this JSONL file.")
@_opt("--pace/--no-pace", env="PACE", default=True,
      help="Publish in real time, or as fast as possible (event times are the same).")
@_opt("--start-ts", env="START_TS", default=None, type=_NON_NEGATIVE,
      help="Event time of the first tick (s since the epoch) [default: now when publishing "
      f"to Kafka in real time (--pace), else {DEFAULT_START_TS:.0f}, so files are "
      "reproducible].")
@_opt("--grid", env="SIM_GRID", default=0, type=click.IntRange(0, 60),
      help="[builtin] Junctions per side of the city grid; 0 sizes it for --vehicles.")
@_opt("--lanes", env="SIM_LANES", default=2, type=click.IntRange(1, 4),
      help="Lanes per direction (of a generated city).")
@sumo_options
def simulate(**kw: Any) -> None:
    """Generate city traffic and publish vehicle positions to Kafka or a JSONL file.

    Built-in engine: a grid of signalised junctions; drivers follow the IDM, queue, turn and
    change lanes; a fraction of reckless drivers causes real near misses and collisions,
    recorded with --truth.

    SUMO engine (--engine sumo): Eclipse SUMO drives a generated city (grid, spider or
    random), your own SUMO network or an OpenStreetMap extract; reckless drivers (tailgaters,
    red-light runners, drivers who do not yield, pushy lane changers) cause collisions that
    SUMO decides, recorded with --truth in the same format plus their conflict kind.

    Both engines publish the vehicle's centre, heading, speed and size; sensor realism (GPS
    noise, drops, jitter, late and duplicate messages) is on unless --clean; the same seed
    and options give byte-identical output.
    """
    ctx = click.get_current_context()
    _check_engine_options(kw["engine"])
    kafka_config = parse_kafka_options(kw["kafka_option"])
    out, bootstrap = kw["out"], kw["bootstrap"]
    if out is not None and bootstrap is not None:
        if ctx.get_parameter_source("bootstrap") is click.core.ParameterSource.ENVIRONMENT:
            bootstrap = None  # an explicit --out wins over the environment's broker
        else:
            raise click.UsageError("give either --out FILE or --bootstrap HOST:PORT, not both")
    if out is None and bootstrap is None:
        raise click.UsageError("give --out FILE or --bootstrap HOST:PORT (or "
                               "TRAJSTREAM_BOOTSTRAP)")
    if kw["clean"]:
        effects = [f"--{name.replace('_', '-')}" for name in _SENSOR_EFFECTS
                   if option_given(name)]
        if effects:
            raise click.UsageError(f"--clean turns sensor effects off; {', '.join(effects)} "
                                   "would have no effect: give one or the other")
    duration = kw["duration"] if kw["duration"] > 0 else math.inf
    start_ts = kw["start_ts"]
    if start_ts is None:
        # live traffic starts now (event-time lag means something, and a second run on the
        # same topic follows the first instead of repeating its event times)
        start_ts = round(time.time(), 1) if bootstrap is not None and kw["pace"] else \
            DEFAULT_START_TS
    try:
        config = SimConfig(
            vehicles=kw["vehicles"], duration_s=duration, hz=kw["hz"], seed=kw["seed"],
            reckless_fraction=kw["reckless"], gps_sigma_m=kw["gps_sigma"],
            drop_rate=kw["drop_rate"], jitter_s=kw["jitter"], late_fraction=kw["late_fraction"],
            duplicate_fraction=kw["duplicate_fraction"], clean=kw["clean"],
            positions_only=kw["positions_only"], start_ts=start_ts, grid_n=kw["grid"],
            lanes=kw["lanes"],
        )
        sumo = sumo_config(kw) if kw["engine"] == "sumo" else None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    ticks = None
    if sumo is not None:
        from trajstream.simulator.sumo import iter_sumo_ticks
        from trajstream.simulator.sumo.binaries import require

        require()  # before any output is opened
        ticks = iter_sumo_ticks(config, sumo)
    refuse_aliases({}, {"--out": out, "--truth": kw["truth"]})
    truth_sink = JsonlSink(kw["truth"]) if kw["truth"] else None
    sink: Sink
    if out is not None:
        sink = JsonlSink(out)
    else:
        sink = KafkaSink(bootstrap, kw["topic"], client=kw["kafka_client"],
                         ready_timeout_s=kw["kafka_timeout"],
                         config=kafka_config)
    counts = run_simulation(config, sink, truth_sink, pace=kw["pace"], ticks=ticks)
    if not counts["reader_gone"]:  # `| head` ends quietly, like any filter
        dest = kw["topic"] if out is None else "stdout" if out == "-" else out
        click.echo(_summary(config, counts, dest, builtin=ticks is None), err=True)


def _summary(config: SimConfig, counts: dict[str, int], dest: str, builtin: bool) -> str:
    """The run in one line on stderr, as ``replay`` and ``data import`` end (stdout may be
    the output)."""
    line = (f"trajstream simulate: simulated {counts['peak_vehicles']} vehicles for "
            f"{counts['ticks'] / config.hz:g} s: published {counts['messages']} messages to "
            f"{dest}; {counts['collisions']} collisions, {counts['near_misses']} near misses")
    if builtin and counts["ticks"] and counts["peak_vehicles"] < config.vehicles:
        # vehicles enter at the city's edge where a lane has room: a small city fills up
        line += (f" (at most {counts['peak_vehicles']} of --vehicles {config.vehicles} at once: "
                 "the city had no room for more; a larger --grid holds more)")
    return line


def _check_engine_options(engine: str) -> None:
    """Options of the other engine are a mistake, not something to ignore silently."""
    if engine == "sumo" and option_given("grid"):
        raise click.UsageError("--grid is for the built-in engine; with --engine sumo use "
                               "--net-size")
    if engine != "sumo":
        for option, param in SUMO_ONLY.items():
            if option_given(param):
                raise click.UsageError(f"{option} needs --engine sumo")


def run_simulation(config: SimConfig, sink: Sink, truth_sink: Sink | None = None, *,
                   pace: bool = True, progress: Progress | None = None,
                   ticks: Iterator[Tick] | None = None) -> dict[str, int]:
    """Publish a whole run (``ticks``, the built-in engine's for ``config`` by default);
    returns message, event and tick counts, and ``reader_gone`` 1 when standard output's
    reader left. Closes the sinks and the engine; a stop signal ends the run as if it were
    complete, so its outputs are kept."""
    from trajstream.simulator import iter_ticks

    if ticks is None:
        ticks = iter_ticks(config)
    progress = progress or Progress("simulate")
    counts = {"messages": 0, "collisions": 0, "near_misses": 0, "ticks": 0, "reader_gone": 0,
              "peak_vehicles": 0}
    ok = False
    # the handlers stay until the sinks are closed: a second signal during a flush aborts
    with stop_on_signals("the current tick") as stop:
        try:
            pacer = Pacer(sleep=stop.wait) if pace else None  # a stop ends a wait at once
            _publish(ticks, sink, truth_sink, pacer, progress, stop, counts)
            ok = True
        except OutputClosed:
            ok = True  # `trajstream simulate --out - | head`: the reader has seen enough
            counts["reader_gone"] = 1
        finally:
            progress.close()
            _close(ticks, sink, truth_sink, ok)
    return counts


def _publish(ticks: Iterator[Tick], sink: Sink, truth_sink: Sink | None, pacer: Pacer | None,
             progress: Progress, stop: threading.Event, counts: dict[str, int]) -> None:
    """Write ticks until they run out or ``stop`` is set, counting into ``counts``."""
    for tick in ticks:
        if stop.is_set():
            break
        if pacer is not None:
            pacer.wait(tick.ts)
            if stop.is_set():
                break  # stopped while waiting: this tick is not due yet
        sink.write(tick.messages)
        counts["messages"] += len(tick.messages)
        counts["ticks"] += 1
        counts["peak_vehicles"] = max(counts["peak_vehicles"], tick.vehicles)
        if tick.truth:
            for event in tick.truth:
                counts["collisions" if event["type"] == "collision" else "near_misses"] += 1
            if truth_sink is not None:
                truth_sink.write([(b"", orjson.dumps(e)) for e in tick.truth])
        progress.update(len(tick.messages), vehicles=tick.vehicles,
                        collisions=counts["collisions"], near_misses=counts["near_misses"])


def _close(ticks: Iterator[Tick], sink: Sink, truth_sink: Sink | None, ok: bool) -> None:
    """Stop the engine, then keep the outputs (``ok``) or leave existing files as they were
    (files are renamed into place on success)."""
    try:
        close = getattr(ticks, "close", None)
        if close is not None:
            close()  # a generator's cleanup: SUMO stops, temporary files go
    finally:
        try:
            _finish(sink, ok)
        finally:
            if truth_sink is not None:
                _finish(truth_sink, ok)


def _finish(sink: Sink, ok: bool) -> None:
    """Close ``sink`` keeping what it wrote, or (not ``ok``) discard it where it can."""
    (sink.close if ok else getattr(sink, "abort", sink.close))()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_opt("--bootstrap", env="BOOTSTRAP", required=True, metavar="HOST:PORT",
      help="Kafka bootstrap servers to publish to.")
@_kafka_options
@_opt("--speed", env="SPEED", default=1.0,
      type=click.FloatRange(0.0, 1e6, min_open=True),
      help="Replay this many times faster than the recorded event times.")
@_opt("--pace/--no-pace", env="PACE", default=True,
      help="Pace by the recorded event times, or publish as fast as possible.")
def replay(file: Path, bootstrap: str, topic: str, kafka_client: str | None,
           kafka_option: tuple[str, ...], kafka_timeout: float, speed: float,
           pace: bool) -> None:
    """Publish a recorded positions JSONL file to Kafka, keyed by vehicle_id.

    Lines are published byte for byte in file order; malformed lines are skipped and
    counted (a file of nothing else is an error). Ctrl-C or SIGTERM stops it cleanly.
    """
    sink = KafkaSink(bootstrap, topic, client=kafka_client, ready_timeout_s=kafka_timeout,
                     config=parse_kafka_options(kafka_option))
    records = ReplayFile(file)
    published = replay_records(records, sink, speed if pace else None)
    click.echo(f"trajstream replay: published {published} messages to {topic}; "
               f"skipped {records.malformed} malformed lines", err=True)


def replay_records(records: ReplayFile, sink: Sink, speed: float | None,
                   batch: int = 500) -> int:
    """Send every record (in batches when unpaced, ``speed`` None); returns how many.
    Closes the sink. A stop signal ends it early, what was read is flushed; a file read
    to its end without one record to send is an error."""
    progress = Progress("replay")
    sent = 0
    with stop_on_signals() as stop:
        # a stop wakes the pacer: recordings have gaps (60 s between CommonRoad scenarios)
        pacer = Pacer(speed, sleep=stop.wait) if speed is not None else None
        try:
            sent = _send(records, sink, pacer, batch, progress, stop)
            if not stop.is_set():
                _refuse_nothing_published(records, sent)
        finally:
            progress.close()
            sink.close()
    return sent


def _send(records: ReplayFile, sink: Sink, pacer: Pacer | None, batch: int,
          progress: Progress, stop: threading.Event) -> int:
    """Write records (one at a time when paced) until they run out or ``stop`` is set."""
    sent = 0
    pending: list[tuple[bytes, bytes]] = []
    for ts, key, value in records:
        if stop.is_set():
            break
        if pacer is not None:
            pacer.wait(ts)
            if stop.is_set():
                break  # stopped while waiting: this record is not due yet
            sink.write([(key, value)])
            sent += 1
            progress.update(1, malformed=records.malformed)
            continue
        pending.append((key, value))
        if len(pending) >= batch:
            sink.write(pending)
            sent += len(pending)
            progress.update(len(pending), malformed=records.malformed)
            pending = []
    sink.write(pending)
    return sent + len(pending)


def _refuse_nothing_published(records: ReplayFile, sent: int) -> None:
    """Lines none of which is a positions record (a CSV, an alerts file, the wrong file) are
    a mistake, not a quiet run of nothing: ``trajstream process`` refuses them too. An empty
    file publishes nothing without an error."""
    if sent == 0 and records.malformed:
        raise TrajstreamError(
            f"none of the {records.malformed} lines of {records.path} is a positions record "
            "(a JSON object with a non-empty string vehicle_id and a finite numeric ts): "
            "nothing published")
