"""``trajstream alerts``: follow the collision-alert topic on a terminal or as JSON lines.

Reads with ``isolation.level=read_committed`` so that, once the processor publishes in
exactly-once mode, aborted (never-committed) alerts are not shown. Joins a throwaway
consumer group unless ``--group`` is given, and never commits offsets: watching alerts does
not move anybody's position.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import click
import orjson

from trajstream.cli import (
    KAFKA_TIMEOUT_ENV_HELP,
    KAFKA_TIMEOUT_ENVVARS,
    kafka_option,
    kafka_timeout_envvars_agree,
    parse_kafka_options,
)
from trajstream.contracts import ALERT_REQUIRED, ALERTS_TOPIC
from trajstream.signals import stop_on_signals

__all__ = ["alerts", "format_alert"]

_SEVERITY_COLOUR = {"critical": "red", "warning": "yellow"}
_POLL_TIMEOUT_S = 0.5
_MAX_POLL_RECORDS = 500
_TOPIC_RECHECK_S = 1.0  # how often a missing topic is looked up again


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _clock(ts: Any) -> str:
    t = _num(ts)
    if t is None:
        return "??:??:??.???"
    try:
        dt = datetime.fromtimestamp(t, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return "??:??:??.???"
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def _fmt(v: Any, spec: str, unit: str) -> str:
    f = _num(v)
    return "?" if f is None else f"{f:{spec}} {unit}"


def format_alert(alert: dict[str, Any], color: bool | None = None) -> str:
    """One readable line for an alert (schema ``trajstream.alert/v1``, docs/architecture.md).

    ``12:30:05.200 CRITICAL veh-12 <> veh-40  ttc 1.2 s  min 0.8 m  at (123.4, -56.7)``:
    event time in UTC, severity, the pair, time to contact, predicted minimum distance and
    where the closest approach happens (local x/y, metres). Missing or malformed fields show
    as ``?`` rather than failing. ``color=None`` colours the severity when stdout is a tty.
    """
    if color is None:
        color = sys.stdout.isatty()
    severity = str(alert.get("severity", "?"))
    label = f"{severity.upper():<8}"
    if color and severity in _SEVERITY_COLOUR:
        label = click.style(label, fg=_SEVERITY_COLOUR[severity], bold=True)
    a = alert.get("vehicle_a", "?")
    b = alert.get("vehicle_b", "?")
    ca = alert.get("closest_approach")
    where = "?"
    if isinstance(ca, dict):
        x, y = _num(ca.get("x")), _num(ca.get("y"))
        if x is not None and y is not None:
            where = f"({x:.1f}, {y:.1f})"
    return (
        f"{_clock(alert.get('ts'))} {label} {a} <> {b}  "
        f"ttc {_fmt(alert.get('ttc'), '.1f', 's')}  "
        f"min {_fmt(alert.get('min_distance'), '.1f', 'm')}  at {where}"
    )


def _kafka_client_choices() -> list[str]:
    # Same spellings as stream.kafka.CLIENTS, without importing the adapter for --help.
    return ["confluent", "kafka-python"]


@click.command("alerts")
@click.option(
    "--bootstrap",
    default="127.0.0.1:9092",
    envvar="TRAJSTREAM_BOOTSTRAP",
    show_default=True,
    show_envvar=True,
    help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].",
)
@click.option(
    "--topic",
    default=ALERTS_TOPIC,
    envvar="TRAJSTREAM_ALERTS_TOPIC",
    show_default=True,
    show_envvar=True,
    help="Topic the processor publishes alerts to.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    envvar="TRAJSTREAM_ALERTS_JSON",
    show_default=True,
    show_envvar=True,
    help="Print each alert as one JSON line (the message value) instead of a readable line. "
    "Messages that are not alerts are skipped and counted either way, never passed through.",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    default=False,
    envvar="TRAJSTREAM_ALERTS_FROM_BEGINNING",
    show_default=True,
    show_envvar=True,
    help="Start at the oldest retained alert instead of only new ones "
    "(for a --group with committed offsets, those win).",
)
@click.option(
    "--idle-timeout",
    "idle_timeout_s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    envvar="TRAJSTREAM_ALERTS_IDLE_TIMEOUT",
    show_default="run until interrupted",
    show_envvar=True,
    help="Exit (status 0) after this many seconds without a new alert, counted from when "
    "the subscription is live.",
)
@click.option(
    "--group",
    default=None,
    envvar="TRAJSTREAM_ALERTS_GROUP",
    show_default="a throwaway group",
    show_envvar=True,
    help="Consumer group id; offsets are never committed.",
)
@click.option(
    "--kafka-client",
    type=click.Choice(_kafka_client_choices()),
    default=None,
    envvar="TRAJSTREAM_KAFKA_CLIENT",
    show_default="confluent when installed",
    show_envvar=True,
    help="Kafka client library.",
)
@kafka_option(
    "Raw setting for every Kafka client the command makes: the start-up wait's metadata "
    "probe, the topic lookups and the consumer (librdkafka names, e.g. "
    "security.protocol=SASL_SSL; with kafka-python each client takes the settings it has). "
    "Repeatable; the variable takes space-separated pairs."
)
@click.option(
    "--connect-timeout",
    "connect_timeout_s",
    type=click.FloatRange(min=0.0),  # as --kafka-timeout, which reads the same variable
    default=10.0,
    envvar=list(KAFKA_TIMEOUT_ENVVARS),
    show_default=True,
    show_envvar=True,
    callback=kafka_timeout_envvars_agree,
    help="Seconds to wait for the broker at start-up before giving up (simulate and replay: "
    "--kafka-timeout). " + KAFKA_TIMEOUT_ENV_HELP,
)
def alerts(
    bootstrap: str,
    topic: str,
    as_json: bool,
    from_beginning: bool,
    idle_timeout_s: float | None,
    group: str | None,
    kafka_client: str | None,
    kafka_option: tuple[str, ...],
    connect_timeout_s: float,
) -> None:
    """Subscribe to the alert topic and print alerts as they come.

    One line per alert: event time (UTC), severity, vehicle pair, time to contact, predicted
    minimum distance and location of the closest approach. With --json, the alert messages
    themselves, one per line (for jq and scripts). Messages that are not alerts are skipped
    and counted, with or without --json. Ctrl-C (SIGINT) or SIGTERM stops it (exit 0).
    """
    from trajstream.stream.kafka import (
        check_settings,
        make_consumer,
        resolve_client,
        wait_until_ready,
    )

    if not topic.strip():
        raise click.BadParameter("must not be empty", param_hint="--topic")
    settings = parse_kafka_options(kafka_option)
    client = resolve_client(kafka_client)
    # our own consumer setting wins: aborted alerts are never shown
    consumer_conf = {"isolation.level": "read_committed"}
    check_settings(bootstrap, client=client, consumer=consumer_conf, shared=settings)
    status = sys.stderr.isatty()
    out = _Output(as_json, color=sys.stdout.isatty())
    # Without an assignment (no topic, joining the group takes a few seconds), the idle
    # clock gives up after connect + idle timeouts.
    patience = None if idle_timeout_s is None else connect_timeout_s + idle_timeout_s
    reader_left = False  # `trajstream alerts | head`: no summary then
    with stop_on_signals(finishing=None) as stop:  # its summary says it
        wait_until_ready(bootstrap, timeout_s=connect_timeout_s, stop=stop, client=client,
                         client_config=settings)
        if stop.is_set():  # Ctrl-C before the broker answered: nothing read, nothing to say
            return
        if status:
            click.echo(
                f"trajstream: following {topic!r} at {bootstrap} "
                f"({'from the beginning' if from_beginning else 'new alerts'}; Ctrl-C to stop)",
                err=True,
            )
        if _wait_for_topic(bootstrap, topic, client, settings, patience, stop):
            consumer = make_consumer(
                bootstrap,
                [topic],
                group=group or None,
                client=client,
                from_beginning=from_beginning,
                config=consumer_conf,
                shared=settings,
            )
            reader_left = not _follow(consumer, out, idle_timeout_s, patience, stop)
        elif not stop.is_set():
            click.echo(f"trajstream: topic {topic!r} still does not exist after {patience:g} s "
                       "(--connect-timeout + --idle-timeout)", err=True)
    if not reader_left and (status or out.skipped):
        click.echo(f"trajstream: {out.summary()}", err=True)


def _wait_for_topic(bootstrap: str, topic: str, client: str, settings: dict[str, str],
                    patience_s: float | None, stop: threading.Event) -> bool:
    """True once ``topic`` exists. Subscribing to a missing topic would log the client's raw
    UNKNOWN_TOPIC_OR_PART warning (and let the broker auto-create a misspelt name): say so
    in one line and wait for it instead. False when stopped or ``patience_s`` passes."""
    from trajstream.stream.kafka import partition_count

    if partition_count(bootstrap, topic, client=client, client_config=settings) is not None:
        return True
    click.echo(
        f"trajstream: topic {topic!r} does not exist (yet) at {bootstrap}: waiting for it",
        err=True,
    )
    give_up = None if patience_s is None else time.monotonic() + patience_s
    while not stop.is_set():
        left = _TOPIC_RECHECK_S if give_up is None else give_up - time.monotonic()
        if left <= 0 or stop.wait(min(left, _TOPIC_RECHECK_S)):
            return False
        if partition_count(bootstrap, topic, client=client,
                           client_config=settings) is not None:
            return True
    return False


def _follow(consumer: Any, out: _Output, idle_timeout_s: float | None,
            patience_s: float | None, stop: threading.Event) -> bool:
    """Print what ``consumer`` reads until stopped or idle; False when stdout's reader left."""
    start = time.monotonic()
    last: float | None = None  # when the partitions were assigned or the last record came
    try:
        while not stop.is_set():
            wait = _POLL_TIMEOUT_S
            if idle_timeout_s is not None and patience_s is not None:
                if last is None and consumer.assignment():
                    last = time.monotonic()
                deadline = start + patience_s if last is None else last + idle_timeout_s
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            records = consumer.poll(_MAX_POLL_RECORDS, wait)
            if records:
                last = time.monotonic()
                out.write(records)
    except BrokenPipeError:  # `trajstream alerts | head`: the reader is gone, so are we
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    finally:
        consumer.close()
    return True


def _not_an_alert(doc: Any) -> str | None:
    """Why a decoded message value is not an alert, None when it is one."""
    if doc is None:
        return "not JSON"
    if not isinstance(doc, dict):
        return "not a JSON object"
    missing = [f for f in ALERT_REQUIRED if f not in doc]
    return f"no {', '.join(missing)}" if missing else None


def _looks_like_position(doc: Any) -> bool:
    return isinstance(doc, dict) and "vehicle_id" in doc and (
        ("x" in doc and "y" in doc) or ("lat" in doc and "lon" in doc))


class _Output:
    """Alerts to stdout; other messages counted, the first of each kind noted on stderr
    (a positions topic followed by mistake would otherwise print a junk line per fix)."""

    def __init__(self, as_json: bool, color: bool) -> None:
        self.as_json = as_json
        self.color = color
        self.shown = 0
        self.skipped = 0
        self._noted: set[str] = set()

    def write(self, records: list[Any]) -> None:
        lines = [line for r in records if (line := self._render(r)) is not None]
        if lines:
            self.shown += len(lines)
            _write(lines)

    def summary(self) -> str:
        skipped = f", {self.skipped} non-alert message(s) skipped" if self.skipped else ""
        return f"{self.shown} alert(s){skipped}"

    def _render(self, record: Any) -> str | None:
        value = record.value
        doc: Any
        try:
            doc = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            doc = None
        why = _not_an_alert(doc)
        if why is None:
            return orjson.dumps(doc).decode() if self.as_json else format_alert(doc, self.color)
        self._skip(record, doc, why)
        return None

    def _skip(self, record: Any, doc: Any, why: str) -> None:
        self.skipped += 1
        kind = "json" if isinstance(doc, dict) else "other"
        if kind not in self._noted:
            self._noted.add(kind)
            click.echo(
                f"trajstream: skipping a non-alert message at {record.topic}[{record.partition}]"
                f"@{record.offset} ({why}); any more are only counted",
                err=True,
            )
        if "positions" not in self._noted and _looks_like_position(doc):
            self._noted.add("positions")
            click.echo(
                f"trajstream: {record.topic!r} looks like the positions topic (messages with "
                f"vehicle_id and x/y or lat/lon), not the alerts topic ({ALERTS_TOPIC!r} by "
                "default)",
                err=True,
            )


def _write(lines: list[str]) -> None:
    out = sys.stdout
    out.write("\n".join(lines) + "\n")
    out.flush()
