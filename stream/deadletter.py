"""The one place bad input is dealt with: count by reason, dead-letter, log at a rate limit.

Bad input never stops the stream. Each rejected record is counted in
``trajstream_positions_rejected_total{reason}``, optionally forwarded to a dead-letter sink
with its reason (so it can be inspected and replayed), and summarised in the log at most once
per ``log_interval_s`` (a minute: the first at once, then what a minute brought) so a flood
of garbage cannot flood the log too; a feed with its usual few late fixes gives one line a
minute, and the counters have the detail.

Envelope (value of each dead letter, UTF-8 JSON; key = the original key)::

    {"reason": "not_json", "detail": "...", "topic": "vehicle-positions",
     "key": "veh-1" | null, "value": "..." | null, "value_encoding": "utf-8" | "base64",
     "value_truncated": false, "ts_wall": 1764081000.123}

``value`` is the original bytes as text, or base64 when they are not UTF-8; values beyond
``max_value_bytes`` (oversized messages) are cut there so the dead letter itself fits in a
Kafka message.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter as _Tally
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson

from trajstream.stream.codec import Rejection, encode_json
from trajstream.stream.metrics import Metrics

__all__ = ["DeadLetterSink", "RejectPolicy", "envelope"]

log = logging.getLogger("trajstream.stream.deadletter")

DEFAULT_MAX_VALUE_BYTES = 64 * 1024


class DeadLetterSink(Protocol):
    """What the policy needs of a sink; stream.sinks' sinks satisfy it."""

    def send(self, key: bytes | None, value: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _text(raw: bytes | None, limit: int) -> tuple[str | None, str, bool]:
    """(text, encoding, truncated) of raw bytes for the envelope."""
    if raw is None:
        return None, "utf-8", False
    raw = bytes(raw)
    truncated = len(raw) > limit
    if truncated:
        raw = raw[:limit]
    try:
        return raw.decode("utf-8"), "utf-8", truncated
    except UnicodeDecodeError as exc:
        if truncated and exc.start >= len(raw) - 3:  # the cut split a multi-byte character
            return raw[: exc.start].decode("utf-8"), "utf-8", True
        return base64.b64encode(raw).decode("ascii"), "base64", truncated


def envelope(
    rejection: Rejection,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    ts_wall: float,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> bytes:
    """The dead-letter value for one rejected record (see the module docstring)."""
    text, encoding, truncated = _text(value, max_value_bytes)
    return encode_json(
        {
            "reason": rejection.reason,
            "detail": rejection.detail,
            "topic": topic,
            "key": None if key is None else bytes(key).decode("utf-8", errors="replace"),
            "value": text,
            "value_encoding": encoding,
            "value_truncated": truncated,
            "ts_wall": ts_wall,
        }
    )


class RejectPolicy:
    """Counts, dead-letters and logs rejected records.

    ``dlq=None`` only counts and logs. Sending to the DLQ is asynchronous like any sink;
    the caller flushes it (:meth:`flush`) with its other outputs before committing offsets,
    so a dead letter is never lost to a crash. A DLQ that fails raises: losing the dead
    letters silently would be worse than stopping.
    """

    def __init__(
        self,
        metrics: Metrics,
        dlq: DeadLetterSink | None,
        log_interval_s: float = 60.0,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._dlq = dlq
        self._interval_s = log_interval_s
        self._max_value_bytes = max_value_bytes
        self._clock = clock
        self._wall = wall_clock
        self._next_log = float("-inf")
        self._pending: _Tally[str] = _Tally()
        self._example: Rejection | None = None
        self._window_start = clock()
        self.total = 0
        self.by_reason: _Tally[str] = _Tally()  # every rejection of the run, by reason
        self.first: Rejection | None = None  # the run's first rejection (an example)

    def handle(
        self,
        rejections: Sequence[Rejection],
        keys: Sequence[bytes | None] | None,
        values: Sequence[bytes | None],
        source_topic: str,
    ) -> None:
        """Act on the rejections of one batch; ``index`` refers to ``keys``/``values``."""
        if not rejections:
            return
        tally = _Tally(r.reason for r in rejections)
        counter = self._metrics.positions_rejected
        for reason, n in tally.items():
            counter.labels(reason=reason).inc(n)
        self.total += len(rejections)
        self.by_reason.update(tally)
        if self.first is None:
            self.first = rejections[0]
        if self._dlq is not None:
            now = self._wall()
            send = self._dlq.send
            for r in rejections:
                key = None if keys is None else keys[r.index]
                send(
                    key,
                    envelope(r, key, values[r.index], source_topic, now, self._max_value_bytes),
                )
        self._pending.update(tally)
        if self._example is None:
            self._example = rejections[0]
        self._maybe_log()

    def dead_letter(
        self,
        dropped: Sequence[tuple[int, str, str, bytes | None]],
        keys: Sequence[bytes | None] | None,
        values: Sequence[bytes | None],
        source_topic: str,
    ) -> None:
        """Dead-letter records the engine dropped (late, future, ahead), already counted in
        ``trajstream_positions_dropped_total``: sent with their reason, logged at a rate
        limit, not counted again as rejections. Each is (row of ``keys``/``values``, reason,
        detail, None), or (-1, reason, detail, the record) when its batch is gone."""
        if not dropped:
            return
        if self._dlq is not None:
            now, send = self._wall(), self._dlq.send
            for index, reason, detail, own in dropped:
                value: bytes | None
                if own is not None:
                    key, value = orjson.loads(own)["vehicle_id"].encode(), own
                else:
                    key = None if keys is None else keys[index]
                    value = values[index]
                send(key, envelope(Rejection(index, reason, detail), key, value,
                                   source_topic, now, self._max_value_bytes))
        self._pending.update(d[1] for d in dropped)
        if self._example is None:
            index, reason, detail, _ = dropped[0]
            self._example = Rejection(index, reason, detail)
        self._maybe_log()

    def _maybe_log(self, force: bool = False) -> None:
        now = self._clock()
        if not self._pending or (not force and now < self._next_log):
            return
        counts = ", ".join(f"{reason}={n}" for reason, n in sorted(self._pending.items()))
        n = sum(self._pending.values())
        ex = self._example
        span = max(now - self._window_start, 0.0)
        log.warning(
            "rejected or dropped %d position record(s) in the last %.0f s (%s)%s; e.g. %s: %s",
            n,
            span,
            counts,
            "" if self._dlq is None else ", sent to the dead-letter sink",
            ex.reason if ex else "",
            ex.detail if ex else "",
        )
        self._pending.clear()
        self._example = None
        self._window_start = now
        self._next_log = now + self._interval_s

    def flush(self) -> None:
        """Flush the dead-letter sink (call before committing offsets)."""
        if self._dlq is not None:
            self._dlq.flush()

    def close(self) -> None:
        """Log what is still pending and close the dead-letter sink."""
        self._maybe_log(force=True)
        if self._dlq is not None:
            self._dlq.close()

    def abort(self) -> None:
        """After a failed run: log what is pending, discard a file dead-letter sink."""
        self._maybe_log(force=True)
        if self._dlq is not None:
            getattr(self._dlq, "abort", self._dlq.close)()
