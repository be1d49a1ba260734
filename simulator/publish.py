"""Where positions go (a JSONL file or a Kafka topic), pacing, progress, and replay input.

Sinks take batches of (key, value) messages; the Kafka sink keys every message by vehicle id
so one vehicle's positions stay in order within its partition.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from trajstream.errors import ConfigError
from trajstream.inputs import lines, open_input
from trajstream.outputs import OutputError, OutputFile
from trajstream.simulator.messages import Message


class OutputClosed(Exception):
    """The reader of standard output went away (``| head``): a normal end, not an error."""


class Sink(Protocol):
    def write(self, messages: list[Message]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON value per line; ``-`` is standard output.

    A file is written to a temporary sibling and renamed over ``path`` by ``close``;
    ``abort`` (a failed run) leaves an existing file as it was (trajstream.outputs).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._out = OutputFile(self.path)

    def write(self, messages: list[Message]) -> None:
        if messages:
            try:
                self._out.write(b"\n".join([v for _, v in messages]) + b"\n")
            except OutputError as exc:
                self._failed(exc)

    def close(self) -> None:
        try:
            self._out.commit()
        except OutputError as exc:
            self._failed(exc)

    def abort(self) -> None:
        self._out.discard()

    def _failed(self, exc: OutputError) -> None:
        if isinstance(exc.__cause__, BrokenPipeError) and self.path == "-":
            # keep the interpreter's final flush of stdout from complaining as well
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise OutputClosed() from exc
        raise exc


class KafkaSink:
    """Messages to ``topic`` keyed by vehicle id, through the project's Kafka adapter.

    ``config`` (``--kafka-option``: librdkafka names, e.g. the security settings of a
    shared cluster) goes to every client the sink makes: the start-up wait's metadata
    probe, the admin client that creates the topic and the producer; a setting ``client``
    does not have is a ConfigError before anything is made at the broker."""

    def __init__(self, bootstrap: str, topic: str, *, client: str | None = None,
                 ready_timeout_s: float = 10.0,
                 config: Mapping[str, Any] | None = None) -> None:
        from trajstream.stream import kafka

        client = kafka.resolve_client(client)
        shared = dict(config or {})
        kafka.check_settings(bootstrap, client=client, shared=shared)
        kafka.wait_until_ready(bootstrap, timeout_s=ready_timeout_s, client=client,
                               client_config=shared)
        kafka.create_topics(bootstrap, [topic], client=client, client_config=shared)
        self.topic = topic
        self._producer = kafka.make_producer(bootstrap, client=client, shared=shared)

    def write(self, messages: list[Message]) -> None:
        send, topic = self._producer.send, self.topic
        for key, value in messages:
            send(topic, value, key)

    def close(self) -> None:
        try:
            self._producer.flush()
        finally:
            self._producer.close()


class Pacer:
    """Sleeps so that event time advances ``speed`` times as fast as the wall clock.

    The first event time seen is aligned with now; an event time behind schedule (a late
    message, a slow consumer) returns at once, so the pace never drifts but never bursts.
    ``sleep`` may be a stop event's ``wait``, so that a stop ends a long wait at once.
    """

    def __init__(self, speed: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ConfigError(f"speed must be a finite number > 0, got {speed!r}")
        self.speed = speed
        self._clock, self._sleep = clock, sleep
        self._origin: tuple[float, float] | None = None

    def wait(self, event_ts: float) -> None:
        now = self._clock()
        if self._origin is None:
            self._origin = (event_ts, now)
            return
        ts0, wall0 = self._origin
        delay = wall0 + (event_ts - ts0) / self.speed - now
        if delay > 0.0005:
            self._sleep(delay)


class Progress:
    """A live status line on a terminal (rate, vehicles, conflicts); silent otherwise."""

    def __init__(self, label: str, stream: IO[str] | None = None, interval_s: float = 0.5,
                 enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.interval_s = interval_s
        self.messages = 0
        self._last = time.monotonic()
        self._last_count = 0
        self._shown = False

    def update(self, messages: int, **fields: object) -> None:
        self.messages += messages
        if not self.enabled:
            return
        now = time.monotonic()
        if self._last_count == 0:  # the first batch (after any warm-up) starts the clock
            self._last, self._last_count = now, self.messages
            return
        if now - self._last < self.interval_s:
            return
        rate = (self.messages - self._last_count) / (now - self._last)
        self._last, self._last_count = now, self.messages
        extra = "  ".join(f"{v} {k.replace('_', ' ')}" for k, v in fields.items())
        line = f"\r{self.label}: {self.messages:,} msgs  {rate:,.0f} msg/s  {extra}"
        self.stream.write(line[:200] + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


class ReplayFile:
    """Records of a positions JSONL file: (event time, key, the line's exact bytes).

    A line that is not a JSON object with a ``vehicle_id`` (a non-empty string, or an
    integer, keyed by its decimal string) and a finite numeric ``ts`` is skipped and
    counted in ``malformed``; blank lines are ignored.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.malformed = 0

    def __iter__(self) -> Iterator[tuple[float, bytes, bytes]]:
        try:
            f = open_input(self.path)
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from exc
        loads = orjson.loads
        with f:
            for raw in lines(f, self.path):
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    continue
                try:
                    rec = loads(line)
                    vid, ts = rec["vehicle_id"], rec["ts"]
                    if type(vid) is int:  # the processor's codec takes 42 as "42"
                        vid = str(vid)
                    ok = (isinstance(vid, str) and vid != "" and isinstance(ts, int | float)
                          and not isinstance(ts, bool) and math.isfinite(ts))
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    ok = False
                if not ok:
                    self.malformed += 1
                    continue
                yield float(ts), vid.encode(), line
