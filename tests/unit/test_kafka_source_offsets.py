"""KafkaSource's offset bookkeeping (stream/sources.py) is pure: which offset to commit per
partition given the records handed out and the engine's first waiting record per partition.
A consumer replaying fixed polls drives it here; the broker path is exercised end to end in
tests/integration/test_stages.py. Also: --until-end stops at lag 0 and, while it does not,
warns what it waits for (a quiet fake consumer and a fake clock)."""

from __future__ import annotations

import logging

import pytest

from trajstream.stream.kafka import Columns
from trajstream.stream.sources import QUIET_WARN_AFTER_S, QUIET_WARN_EVERY_S, KafkaSource


class _Polls:
    """Hands out the given (partitions, offsets) polls in order."""

    def __init__(self, *polls: tuple[list[int], list[int]]) -> None:
        self._polls = list(polls)

    def poll_columns(self, max_records: int, timeout_s: float) -> Columns:
        parts, offs = self._polls.pop(0)
        return Columns(parts, offs, [b"k"] * len(parts), [b"v"] * len(parts))


def test_offsets_per_partition_move_forward_only():
    src = KafkaSource(_Polls(([5, 3, 5, 3], [10, 20, 11, 21]), ([5, 5], [12, 13])), "t")
    src.poll(10, 0.0)  # seq 0-3
    # partition 3's first record (seq 1) waits: partition 5 is not held back by it
    got = src.offsets(None, {3: 1})
    assert got == {("t", 5): 12}
    src.mark_committed(got)
    src.poll(10, 0.0)  # seq 4-5, all done
    got = src.offsets(None, {3: 1})
    assert got == {("t", 5): 14}
    src.mark_committed(got)
    # The first batch is still kept for partition 3's waiting record; its partition 5 rows
    # (offsets 10-11) must not move the committed offset back to 12.
    assert src.offsets(None, {3: 1}) == {}
    assert src.offsets(None, {}) == {("t", 3): 22}
    # without a per-partition answer, everything from the first waiting record overall waits
    src2 = KafkaSource(_Polls(([5, 3, 5, 3], [10, 20, 11, 21])), "t")
    src2.poll(10, 0.0)
    assert src2.offsets(1, None) == {("t", 5): 11}


class _Quiet:
    """A consumer whose polls return nothing; assignment and lag are set by the test."""

    def __init__(self, assigned: list[tuple[str, int]],
                 lags: dict[tuple[str, int], int] | None) -> None:
        self.assigned, self.lags_now, self.records = assigned, lags, 0

    def poll_columns(self, max_records: int, timeout_s: float) -> Columns:
        n, self.records = self.records, 0
        return Columns([0] * n, list(range(n)), [b"k"] * n, [b"v"] * n)

    def assignment(self) -> list[tuple[str, int]]:
        return self.assigned

    def lag(self) -> int | None:
        return None if self.lags_now is None else sum(self.lags_now.values())

    def lags(self) -> dict[tuple[str, int], int] | None:
        return self.lags_now


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _polls_until(src: KafkaSource, clock: _Clock, t: float) -> None:
    """Empty polls every second up to ``t`` seconds after the clock's start."""
    while clock.now < 1000.0 + t:
        src.poll(10, 1.0)
        clock.now += 1.0


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(("assigned", "lags", "reason"), [
    ([], None, "no partition is assigned to this consumer (waiting for the group join, or "
               "for other members of the group to release the partitions they hold)"),
    ([("t", 0), ("t", 1)], None, "the consumer lag on t[0], t[1] is unknown (no high "
     "watermark or position from the broker yet, or an offset commit unanswered; waiting "
     "for lag 0)"),
    ([("t", 0), ("t", 1), ("t", 2)], {("t", 0): 7, ("t", 1): 0, ("t", 2): 3},
     "10 records of lag that polls do not return (t[0]: 7, t[2]: 3)"),
])
def test_until_end_warns_what_it_waits_for_at_a_rate_limit(
        caplog: pytest.LogCaptureFixture, assigned: list[tuple[str, int]],
        lags: dict[tuple[str, int], int] | None, reason: str) -> None:
    caplog.set_level(logging.WARNING, logger="trajstream")
    clock = _Clock()
    src = KafkaSource(_Quiet(assigned, lags), "t", until_end=True, clock=clock)
    _polls_until(src, clock, QUIET_WARN_AFTER_S)  # the last one at 29 s: not yet
    assert _warnings(caplog) == []
    src.poll(10, 1.0)  # 30 s
    assert _warnings(caplog) == [f"--until-end: 30 s of empty polls and not at the end of t: "
                                 f"{reason}"]
    _polls_until(src, clock, QUIET_WARN_AFTER_S + QUIET_WARN_EVERY_S)
    assert len(_warnings(caplog)) == 1  # at most one per QUIET_WARN_EVERY_S
    src.poll(10, 1.0)
    assert len(_warnings(caplog)) == 2
    assert _warnings(caplog)[1].startswith("--until-end: 60 s of empty polls")
    assert not src.exhausted


def test_until_end_warning_clock_restarts_when_records_come(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trajstream")
    clock = _Clock()
    consumer = _Quiet([("t", 0)], {("t", 0): 5})
    src = KafkaSource(consumer, "t", until_end=True, clock=clock)
    _polls_until(src, clock, 29.0)
    consumer.records = 2
    assert len(src.poll(10, 1.0)) == 2  # at 29 s: the quiet spell ends
    _polls_until(src, clock, 29.0 + QUIET_WARN_AFTER_S)
    assert _warnings(caplog) == []
    src.poll(10, 1.0)
    assert len(_warnings(caplog)) == 1


def test_until_end_stops_at_lag_zero_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trajstream")
    clock = _Clock()
    consumer = _Quiet([("t", 0)], {("t", 0): 4})
    src = KafkaSource(consumer, "t", until_end=True, clock=clock)
    _polls_until(src, clock, 20.0)
    assert not src.exhausted
    consumer.lags_now = {("t", 0): 0}
    src.poll(10, 1.0)
    assert src.exhausted
    assert _warnings(caplog) == []
    # without --until-end a quiet consumer with partitions neither stops nor warns (a live
    # topic may go quiet) ...
    plain = KafkaSource(_Quiet([("t", 0)], {("t", 0): 4}), "t", clock=clock)
    _polls_until(plain, clock, 200.0)
    assert not plain.exhausted
    assert _warnings(caplog) == []
    # ... but one that is never given a partition (the group join stuck) says so
    stuck = KafkaSource(_Quiet([], None), "t", clock=clock)
    clock.now = 1000.0
    _polls_until(stuck, clock, QUIET_WARN_AFTER_S + 1)
    assert not stuck.exhausted
    assert _warnings(caplog) == ["30 s of empty polls on t: no partition is assigned to this "
                                 "consumer (waiting for the group join, or for other members "
                                 "of the group to release the partitions they hold)"]


def test_blocking_keeps_the_last_answer_while_the_lag_is_unknown() -> None:
    """A lag the client cannot tell for a moment (an offset commit unanswered, a high
    watermark not known) must not read as "no partition has records left": the watermark
    would then run to the newest event time of the partition ahead and drop everything
    behind it late (a 6-partition backlog of 358k records with one lag query in seven
    unknown: 222,550 dropped late instead of 3,034). The last answer stands until the next
    known one; a revoked partition leaves it."""
    clock = _Clock()
    consumer = _Quiet([("t", 0), ("t", 1), ("t", 2)], {("t", 0): 7, ("t", 1): 0, ("t", 2): 3})
    src = KafkaSource(consumer, "t", clock=clock)
    assert src.blocking() == {0, 2}
    consumer.lags_now = None
    clock.now += 1.0
    assert src.blocking() == {0, 2}
    src.forget([2])
    assert src.blocking() == {0}
    consumer.lags_now = {("t", 0): 0, ("t", 1): 4}
    clock.now += 1.0
    assert src.blocking() == {1}
