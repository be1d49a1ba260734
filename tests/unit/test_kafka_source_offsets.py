"""KafkaSource's offset bookkeeping (stream/sources.py) is pure: which offset to commit per
partition given the records handed out and the engine's first waiting record per partition.
A consumer replaying fixed polls drives it here; the broker path is exercised end to end in
tests/integration/test_stages.py."""

from __future__ import annotations

from trajstream.stream.kafka import Columns
from trajstream.stream.sources import KafkaSource


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
