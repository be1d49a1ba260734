"""Admission alone (stream/admission.py): arrival checks and the watermark, without the
vehicle or conflict stage."""

from __future__ import annotations

import numpy as np
import orjson

from trajstream.stream.admission import Admission
from trajstream.stream.codec import CodecConfig, PositionBatch, decode_batch
from trajstream.stream.config import EngineConfig

T0 = 1_764_081_000.0


def _batch(*fixes: tuple[str, float]) -> PositionBatch:
    values = [orjson.dumps({"vehicle_id": v, "ts": T0 + t, "x": 0.0, "y": 0.0})
              for v, t in fixes]
    batch, rejected = decode_batch([v.encode() for v, _ in fixes], values, CodecConfig())
    assert not rejected
    return batch


def test_watermark_releases_complete_ticks_in_event_time_order():
    adm = Admission(EngineConfig(), wall_clock=lambda: T0)
    first = adm.release(adm.admit(_batch(("a", 0.15), ("b", 0.05), ("a", 0.35)), 0, None,
                                  None))
    assert first is not None and first.ids.size == 0  # all within the lateness: they wait
    assert len(adm) == 3
    # M = 1.0 s, watermark 0.5 s: the ticks up to 0.4 s are complete
    rel = adm.release(adm.admit(_batch(("a", 0.6), ("b", 0.8), ("a", 1.0)), 3, None, None))
    assert rel is not None
    assert rel.ids.tolist() == ["b", "a", "a"]  # sorted by event time, not arrival
    assert np.all(np.diff(rel.recs["ts"]) > 0) and rel.upto == adm.done
    assert adm.min_pending_seq == 3  # the later fixes still wait: offsets stop before them


def test_late_stale_and_future_are_dropped_and_counted():
    adm = Admission(EngineConfig(), wall_clock=lambda: T0)
    steady = _batch(*(("a", t) for t in (0.1, 0.5, 0.9, 1.3, 1.7, 2.0)))
    adm.release(adm.admit(steady, 0, None, None))
    adm.admit(_batch(("b", 0.3),  # tick released already: late
                     ("a", 2.0),  # same fix again: stale
                     ("c", 1e6)),  # far past the stream and the wall clock: future
              6, None, None)
    assert {k: adm.stats[k] for k in ("late", "stale", "future")} == \
        {"late": 1, "stale": 1, "future": 1}
    assert adm.stats["accepted"] == 6


def test_each_partition_commits_up_to_its_own_first_waiting_record():
    """Partition 0 runs 2 s ahead of partition 1, which holds the watermark: partition 0's
    records wait, but partition 1's released records must not wait behind them (its offsets
    move on; after a restore they are not read again and dropped late)."""
    adm = Admission(EngineConfig(), wall_clock=lambda: T0)
    fast = _batch(*(("a", 0.1 * k) for k in range(1, 31)))  # 0.1 .. 3.0 s, seq 0-29
    adm.release(adm.admit(fast, 0, np.zeros(30, dtype=np.int64), {1}))
    assert adm.done is None  # partition 1 not seen yet: no watermark, nothing released
    slow = _batch(*(("b", 0.1 * k) for k in range(1, 11)))  # 0.1 .. 1.0 s, seq 30-39
    rel = adm.release(adm.admit(slow, 30, np.ones(10, dtype=np.int64), {1}))
    assert rel is not None and adm.done == round(T0 / 0.2) + 2  # 1.0 s: ticks to 0.4 s out
    # overall, seq 4 (a at 0.5 s) waits; per partition: a at 0.5 s, b at 0.5 s (seq 34)
    assert adm.min_pending_seq == 4
    assert adm.pending_by_partition() == {0: 4, 1: 34}
    rel = adm.release(adm.admit(_batch(("b", 2.9)), 40, np.ones(1, dtype=np.int64), set()))
    assert rel is not None and adm.pending_by_partition() == {0: 24, 1: 40}
