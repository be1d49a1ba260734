"""Where position records come from: Kafka, a JSONL file, or an in-process queue (demo).

A source hands out micro-batches (:class:`RecordBatch`, columnar: keys and values as lists)
numbered by a running sequence, so the loop can say which records are fully processed:
``commit(done_before, pending)`` makes every record with ``seq < done_before`` durable
(``None``: all handed out), except, per partition in ``pending``, the records from the first
one still waiting there. For Kafka that becomes, per partition, the offset of the first
record not yet done; records still waiting in the engine's buffer are therefore read again
after a crash (at-least-once), and replays are harmless because the engine drops them as
stale.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import select
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any, Protocol

import numpy as np

from trajstream.errors import ConfigError, TrajstreamError
from trajstream.inputs import READ_ERRORS, is_gzip, open_input

__all__ = [
    "END",
    "FileSource",
    "KafkaSource",
    "MemorySource",
    "RecordBatch",
    "Source",
]

log = logging.getLogger("trajstream.stream.sources")

END = object()  # put on a MemorySource's queue to end the stream
BLOCKING_REFRESH_S = 0.05
PING_TIMEOUT_S = 2.0  # an idle consumer checks the broker answers within this
# A consumer whose polls stay empty this long says what it waits for (--until-end: the end
# of the topic; a live run: only while it has no partition), then again at this interval: a
# group join or a first fetch take seconds, and a hung run must not be silent, nor flood
# its log.
QUIET_WARN_AFTER_S = 30.0
QUIET_WARN_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """One poll's records, in order; record i has sequence number ``seq0 + i``.

    ``keys`` is None when the source has no keys (files, memory queue of bare values).
    ``partitions``/``offsets`` are None for sources without them.
    """

    keys: Sequence[bytes | None] | None
    values: Sequence[bytes | None]
    topic: str
    seq0: int
    partitions: np.ndarray | None = None
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)


class Source(Protocol):
    topic: str

    @property
    def exhausted(self) -> bool:
        """No more records will come (file at EOF, demo finished, Kafka --until-end)."""
        ...

    def poll(self, max_records: int, timeout_s: float) -> RecordBatch: ...

    def commit(self, done_before: int | None,
               pending: Mapping[int, int] | None = None) -> bool:
        """Mark records before ``done_before`` consumed, in a partition of ``pending`` only
        those before its first waiting record; True when that reached a broker."""
        ...

    def ping(self) -> None:
        """Raise KafkaUnavailable when the broker behind the source does not answer."""
        ...

    def lag(self) -> int | None: ...

    def blocking(self) -> set[int] | None:
        """Partitions that still have records to deliver (None: a single ordered stream)."""
        ...

    def close(self) -> None: ...


class _Seq:
    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> int:
        s = self.next
        self.next += n
        return s


class FileSource:
    """A JSONL positions file (``-`` = stdin), read to the end; blank lines are skipped.

    A regular file is read as fast as the loop asks, decompressed when it is gzip. A pipe,
    a FIFO or a terminal is read without blocking longer than the poll's timeout, so a stop
    request (SIGTERM) is seen while the writer is silent (compressed input: `gzip -dc`).
    """

    def __init__(self, path: str) -> None:
        self.topic = path
        self.exhausted = False
        self._seq = _Seq()
        self._own = path != "-"
        try:
            self._f: IO[bytes] = open(path, "rb") if self._own else sys.stdin.buffer  # noqa: SIM115
            try:
                regular = stat.S_ISREG(os.fstat(self._f.fileno()).st_mode)
            except (OSError, ValueError, io.UnsupportedOperation):
                regular = True  # not a real descriptor (tests): read it like a file
            if regular and self._own and is_gzip(path):
                self._f.close()
                self._f = open_input(path)
        except OSError as exc:
            raise ConfigError(f"cannot read --input {path}: {exc.strerror}") from exc
        self._stream = None if regular else _StreamLines(self._f.fileno())

    def poll(self, max_records: int, timeout_s: float = 0.0) -> RecordBatch:
        if self._stream is not None:
            raw = self._stream.read(max_records, timeout_s)
            self.exhausted = self._stream.eof
        else:
            try:
                raw = list(islice(self._f, max_records))
            except READ_ERRORS as exc:  # a truncated or corrupt gzip file
                raise TrajstreamError(f"cannot read --input {self.topic}: {exc}") from exc
            if len(raw) < max_records:
                self.exhausted = True
        values = [v for v in (r.rstrip(b"\r\n") for r in raw) if v]
        return RecordBatch(None, values, self.topic, self._seq.take(len(values)))

    def commit(self, done_before: int | None,
               pending: Mapping[int, int] | None = None) -> bool:
        """Nothing to commit: a file is read from the start every time."""
        return False

    def ping(self) -> None:
        """A file needs no broker."""

    def lag(self) -> int | None:
        return None

    def blocking(self) -> set[int] | None:
        return None

    def close(self) -> None:
        if self._own:
            self._f.close()


class _StreamLines:
    """Lines from a pipe's descriptor, waiting at most ``timeout_s`` for the first ones."""

    CHUNK = 1 << 16

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""
        self._lines: deque[bytes] = deque()
        self._closed = False  # the writer closed its end

    @property
    def eof(self) -> bool:
        """Every line has been handed out and no more will come."""
        return self._closed and not self._lines

    def read(self, max_lines: int, timeout_s: float) -> list[bytes]:
        wait = max(timeout_s, 0.0)
        while len(self._lines) < max_lines and not self._closed:
            ready, _, _ = select.select([self._fd], [], [], wait)
            if not ready:
                break
            chunk = os.read(self._fd, self.CHUNK)
            if not chunk:
                self._closed = True
                if self._buf:
                    self._lines.append(self._buf)
                    self._buf = b""
                break
            parts = (self._buf + chunk).split(b"\n")
            self._buf = parts.pop()
            self._lines.extend(parts)
            wait = 0.0  # take what is there, do not wait for more
        return [self._lines.popleft() for _ in range(min(max_lines, len(self._lines)))]


class MemorySource:
    """An in-process queue (the demo). Items: ``(key, value)`` pairs, lists of them, or
    :data:`END`."""

    def __init__(self, q: queue.Queue[Any], topic: str = "memory") -> None:
        self.topic = topic
        self._end = False
        self._q = q
        self._seq = _Seq()
        self._carry: list[tuple[bytes | None, bytes]] = []

    def poll(self, max_records: int, timeout_s: float) -> RecordBatch:
        items = self._carry
        self._carry = []
        if not items and not self._end:
            with contextlib.suppress(queue.Empty):
                self._take(self._q.get(timeout=max(timeout_s, 0.0)), items)
        while len(items) < max_records and not self._end:
            try:
                self._take(self._q.get_nowait(), items)
            except queue.Empty:
                break
        if len(items) > max_records:
            self._carry = items[max_records:]
            items = items[:max_records]
        keys = [k for k, _ in items]
        values = [v for _, v in items]
        return RecordBatch(keys, values, self.topic, self._seq.take(len(values)))

    def _take(self, item: Any, into: list[tuple[bytes | None, bytes]]) -> None:
        if item is END:
            self._end = True
        elif isinstance(item, list):
            into.extend(item)
        else:
            into.append(item)

    @property
    def exhausted(self) -> bool:
        """END was seen and everything before it handed out."""
        return self._end and not self._carry

    def commit(self, done_before: int | None,
               pending: Mapping[int, int] | None = None) -> bool:
        """Nothing to commit in memory."""
        return False

    def ping(self) -> None:
        """An in-process queue needs no broker."""

    def lag(self) -> int | None:
        return self._q.qsize() + len(self._carry)

    def blocking(self) -> set[int] | None:
        return None

    def close(self) -> None:
        pass


def _parts(tps: Sequence[tuple[str, int]]) -> str:
    """``[("t", 0), ("t", 2)]`` as ``t[0], t[2]``."""
    return ", ".join(f"{t}[{p}]" for t, p in tps)


class KafkaSource:
    """The positions topic through the stream.kafka adapter (auto-commit off).

    With ``until_end`` the source reports ``exhausted`` once a poll comes back empty while
    partitions are assigned and the consumer lag is zero: drain what is there, then stop.
    Until then, polls empty for ``QUIET_WARN_AFTER_S`` log a warning saying what it
    waits for (no assignment, unknown lag, or lag that polls do not return), repeated every
    ``QUIET_WARN_EVERY_S``; ``clock`` (monotonic seconds) times them. Without
    ``until_end`` only a consumer without partitions warns (a group join that never
    completes: seen with kafka-python, whose coordinator lookup can spin for minutes).
    """

    def __init__(
        self,
        consumer: Any,
        topic: str,
        *,
        until_end: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.exhausted = False
        self._c = consumer
        self._seq = _Seq()
        self._until_end = until_end
        self._clock = clock
        self._empty_since: float | None = None  # first of the current run of empty polls
        self._warn_at = 0.0
        self._out: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        self._committed: dict[int, int] = {}
        self._uncommitted: dict[int, int] = {}
        self._blocking: set[int] = set()
        self._blocking_at = -float("inf")

    def poll(self, max_records: int, timeout_s: float) -> RecordBatch:
        part_col, off_col, keys, values = self._c.poll_columns(max_records, timeout_s)
        n = len(values)
        seq0 = self._seq.take(n)
        if n == 0:
            self._check_quiet()
            return RecordBatch([], [], self.topic, seq0)
        self._empty_since = None
        parts = np.array(part_col, dtype=np.int64)
        offs = np.array(off_col, dtype=np.int64)
        self._out.append((seq0, parts, offs))
        return RecordBatch(keys, values, self.topic, seq0, parts, offs)

    def _check_quiet(self) -> None:
        """After an empty poll. With ``until_end``: at the end (assigned, lag 0) set
        ``exhausted``, otherwise warn, at the rate limit, what the run waits for. Without:
        warn, at the rate limit, while no partition is assigned (a live topic may go quiet;
        a consumer that never joins its group, or is never given a partition, is stuck)."""
        assigned = self._c.assignment()
        lags = self._c.lags() if assigned and self._until_end else None
        lag = None if lags is None else sum(lags.values())
        if assigned and (lag == 0 or not self._until_end):
            self.exhausted = self._until_end
            self._empty_since = None
            return
        now = self._clock()
        if self._empty_since is None:
            self._empty_since, self._warn_at = now, now + QUIET_WARN_AFTER_S
            return
        if now < self._warn_at:
            return
        self._warn_at = now + QUIET_WARN_EVERY_S
        if not assigned:
            why = ("no partition is assigned to this consumer (waiting for the group join, "
                   "or for other members of the group to release the partitions they hold)")
        elif lags is None:
            why = (f"the consumer lag on {_parts(assigned)} is unknown (no high watermark "
                   "or position from the broker yet, or an offset commit unanswered; "
                   "waiting for lag 0)")
        else:
            behind = ", ".join(f"{t}[{p}]: {k}" for (t, p), k in sorted(lags.items()) if k > 0)
            why = f"{lag} records of lag that polls do not return ({behind})"
        if self._until_end:
            log.warning("--until-end: %.0f s of empty polls and not at the end of %s: %s",
                        now - self._empty_since, self.topic, why)
        else:
            log.warning("%.0f s of empty polls on %s: %s", now - self._empty_since,
                        self.topic, why)

    def offsets(self, done_before: int | None, pending: Mapping[int, int] | None = None
                ) -> dict[tuple[str, int], int]:
        """Per partition, the offset of the first record not done that is not committed yet,
        including earlier attempts that failed. A record is done when ``seq < done_before``
        (None: no such bound) and, for a partition in ``pending``, ``seq`` is below that
        partition's first waiting record: one partition's waiting record does not hold back
        the others' offsets."""
        upto = self._uncommitted
        pending = pending or {}
        kept: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        for seq0, parts, offs in self._out:
            n = parts.shape[0]
            seqs = np.arange(seq0, seq0 + n, dtype=np.int64)
            bound = np.full(n, np.iinfo(np.int64).max if done_before is None else done_before,
                            dtype=np.int64)
            uniq = np.unique(parts).tolist()
            for p in uniq:
                first = pending.get(p)
                if first is not None:
                    np.minimum(bound, np.where(parts == p, first, bound), out=bound)
            done = seqs < bound
            # Within a partition, seq and offset grow together: its done rows come first.
            # A batch kept for another partition's waiting row holds rows of p older than
            # what is committed already: the offset only moves forward.
            for p in uniq:
                mine = done & (parts == p)
                if mine.any():
                    top = int(offs[mine].max())
                    if top >= 0 and top + 1 > max(upto.get(p, -1),  # -1: revoked (forget)
                                                  self._committed.get(p, -1)):
                        upto[p] = top + 1
            if not done.all():
                kept.append((seq0, parts, offs))
        self._out = kept
        return {(self.topic, p): o for p, o in upto.items() if o > self._committed.get(p, -1)}

    def mark_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """``offsets`` are durable (committed directly or in a transaction)."""
        for (_, p), o in offsets.items():
            self._committed[p] = o
            if self._uncommitted.get(p) == o:
                del self._uncommitted[p]

    def commit(self, done_before: int | None,
               pending: Mapping[int, int] | None = None) -> bool:
        """Commit, per partition, up to the first record not done (see :meth:`offsets`).
        True when there was something to commit (the broker answered)."""
        return self.commit_offsets(self.offsets(done_before, pending))

    def commit_offsets(self, offsets: dict[tuple[str, int], int]) -> bool:
        """Commit ``offsets`` (from :meth:`offsets`); True when there were any."""
        if not offsets:
            return False
        self._c.commit(offsets)
        self.mark_committed(offsets)
        return True

    def ping(self) -> None:
        self._c.ping(PING_TIMEOUT_S)

    def forget(self, partitions: Collection[int]) -> None:
        """Drop what is not committed of revoked ``partitions`` (their new owner re-reads)."""
        gone = np.asarray(sorted(partitions), dtype=np.int64)
        kept: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        for seq0, parts, offs in self._out:
            # Keep the row positions (seq numbers) intact: mark revoked rows with offset -1.
            offs = np.where(np.isin(parts, gone), -1, offs)
            kept.append((seq0, parts, offs))
        self._out = kept
        for p in partitions:
            self._uncommitted.pop(p, None)
            self._committed.pop(p, None)
        self._blocking = self._blocking.difference(partitions)

    @property
    def consumer(self) -> Any:
        return self._c

    def lag(self) -> int | None:
        return self._c.lag()

    def blocking(self) -> set[int] | None:
        """Partitions with consumer lag: the engine's watermark waits for them.

        Looked up at most every ``BLOCKING_REFRESH_S``; a slightly old answer only holds
        the watermark a little longer. A lag the client cannot tell now (an offset commit
        unanswered, a high watermark not known) keeps the last answer: taken as "nothing
        left" it would let the watermark run to the newest event time of the partition
        ahead, and every partition behind it by more than the allowed lateness would be
        dropped late (a backlog: most of it).
        """
        now = self._clock()
        if now >= self._blocking_at + BLOCKING_REFRESH_S:
            lags = self._c.lags()
            if lags is not None:
                self._blocking = {p for (t, p), n in lags.items() if n > 0 and t == self.topic}
            self._blocking_at = now
        return self._blocking

    def close(self) -> None:
        self._c.close()
