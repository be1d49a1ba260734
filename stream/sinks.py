"""Where outputs go: a Kafka topic, a JSONL file, a list in memory, or a callback.

Every sink is asynchronous-or-buffered on ``send`` and durable after ``flush``. The loop
routes the engine's messages by a list of :class:`Output` s, each naming the kind of message
(``alerts``, ``predictions``), its sink and its :class:`Delivery`: a ``MUST_FLUSH`` output is
flushed before input offsets are committed and a failure stops the commit, which is what
makes delivery at-least-once; a ``BEST_EFFORT`` output (the live map) is flushed too, but its
failure is logged and never holds back the commit. A new output is one more list entry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from trajstream.errors import ConfigError
from trajstream.outputs import OutputFile

__all__ = ["CallbackSink", "Delivery", "JsonlSink", "KafkaSink", "MemorySink", "Output", "Sink"]


class Sink(Protocol):
    def send(self, key: bytes | None, value: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Delivery(enum.Enum):
    """How hard the loop tries to deliver an output before it commits input offsets."""

    MUST_FLUSH = "must-flush"
    BEST_EFFORT = "best-effort"


@dataclass(frozen=True)
class Output:
    """One output of the processor: messages of ``kind`` (a field of the engine's
    ``Outputs``: ``"alerts"``, ``"predictions"``, or ``"internal"``, the predict stage's
    records with their partition, for a sink with ``send_to``) go to ``sink``."""

    kind: str
    sink: Sink
    delivery: Delivery = Delivery.MUST_FLUSH

    def __post_init__(self) -> None:
        if self.kind not in ("alerts", "predictions", "internal"):
            raise ConfigError(f"unknown output kind {self.kind!r}: alerts, predictions or "
                              f"internal")


class KafkaSink:
    """One topic on a (possibly shared) producer; ``close`` closes the producer only when
    this sink owns it."""

    def __init__(self, producer: Any, topic: str, *, owns_producer: bool = False) -> None:
        self.topic = topic
        self._p = producer
        self._send = producer.send
        self._owns = owns_producer

    def send(self, key: bytes | None, value: bytes) -> None:
        self._send(self.topic, value, key)

    def send_to(self, partition: int, key: bytes | None, value: bytes) -> None:
        """To a chosen partition (the internal topic's records go to their tile's)."""
        self._send(self.topic, value, key, partition)

    def flush(self) -> None:
        self._p.flush()

    def close(self) -> None:
        if self._owns:
            self._p.close()


class JsonlSink:
    """Values one per line (``-`` = stdout); keys are not written (alerts carry their pair).

    The file is written to a temporary sibling and renamed over ``path`` by ``close``;
    ``abort`` (a failed run) leaves an existing file as it was (trajstream.outputs). A full
    disk raises OutputError, one line naming the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._out = OutputFile(path)
        self._write = self._out.file.write

    def send(self, key: bytes | None, value: bytes) -> None:
        try:
            self._write(value + b"\n")
        except OSError as exc:
            raise self._out.error(exc) from exc

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.commit()

    def abort(self) -> None:
        self._out.discard()


class MemorySink:
    """Collects ``(key, value)`` pairs in :attr:`messages` (tests, the demo)."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes | None, bytes]] = []

    def send(self, key: bytes | None, value: bytes) -> None:
        self.messages.append((key, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class CallbackSink:
    """Calls ``fn(key, value)`` for each message (the demo prints alerts this way)."""

    def __init__(self, fn: Callable[[bytes | None, bytes], None]) -> None:
        self._fn = fn

    def send(self, key: bytes | None, value: bytes) -> None:
        self._fn(key, value)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
