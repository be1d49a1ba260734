"""Admission alone (stream/admission.py): arrival checks and the watermark, without the
vehicle or conflict stage."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson

from trajstream.stream.admission import Admission, Released
from trajstream.stream.cadence import Cadence, tick_of
from trajstream.stream.codec import CodecConfig, PositionBatch, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.metrics import RELEASE_RULES, Metrics

T0 = 1_764_081_000.0
# Ticks of 0.2 s (the product's are 0.1 s): the arithmetic in the tests below is written in
# them; the rules do not depend on the tick's length.
CONFIG = EngineConfig(tick_s=0.2)


def _batch(*fixes: tuple[str, float]) -> PositionBatch:
    values = [orjson.dumps({"vehicle_id": v, "ts": T0 + t, "x": 0.0, "y": 0.0})
              for v, t in fixes]
    batch, rejected = decode_batch([v.encode() for v, _ in fixes], values, CodecConfig())
    assert not rejected
    return batch


def test_a_tick_is_released_once_the_input_is_past_it_without_waiting_for_the_watermark():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    # the newest fix (0.35 s) is more than tick_lateness_s (0.05 s) past the tick ending at
    # 0.2 s: that tick is complete, though the watermark (0.35 - 0.5 s) has released nothing
    rel = adm.release(adm.admit(_batch(("a", 0.15), ("b", 0.05), ("a", 0.35)), 0, None, None))
    assert rel is not None
    assert rel.ids.tolist() == ["b", "a"]  # sorted by event time, not arrival
    assert np.all(np.diff(rel.recs["ts"]) > 0) and rel.upto == adm.done
    assert len(adm) == 1 and adm.min_pending_seq == 2  # 0.35 s waits: offsets stop there
    # a tick is not out before a record later than its end + tick_lateness_s came
    rel = adm.release(adm.admit(_batch(("b", 0.42)), 3, None, None))
    assert rel is None or rel.ids.size == 0


def _steady(cfg: EngineConfig, metrics: Metrics | None = None
            ) -> tuple[list[int | None], dict[tuple[str, float], int]]:
    """Vehicles a and b, a fix each per tick (0.2 s) late in it; b stops after 1.0 s. The
    last released tick after each tick's fixes, and the tick each record was released at."""
    adm = Admission(cfg, metrics, wall_clock=lambda: T0)
    base = round(T0 / 0.2)
    done: list[int | None] = []
    ticks: dict[tuple[str, float], int] = {}
    for k in range(1, 8):
        fixes = [("a", 0.2 * k - 0.03)] + ([("b", 0.2 * k - 0.01)] if k <= 5 else [])
        rel = adm.release(adm.admit(_batch(*fixes), 2 * k, None, None))
        if rel is not None:
            for v, t, tick in zip(rel.ids.tolist(), rel.recs["ts"].tolist(),
                                  rel.ticks.tolist(), strict=True):
                ticks[(v, round(t - T0, 2))] = tick - base
        done.append(None if adm.done is None else adm.done - base)
    return done, ticks


def _released_by(metrics: Metrics) -> dict[str, float]:
    return {rule: metrics.registry.get_sample_value("trajstream_ticks_released_total",
                                                    {"reason": rule}) for rule in RELEASE_RULES}


def test_a_tick_is_out_once_every_vehicle_due_in_it_has_reported():
    on, off = Metrics(), Metrics()
    done, ticks = _steady(CONFIG, on)
    evidence, evidence_ticks = _steady(dataclasses.replace(CONFIG, release_on_cadence=False),
                                       off)
    # what completed the ticks after the first: the cadence, also for ticks 6 and 7 once b
    # is given up on (the evidence alone had tick 6 only)
    assert _released_by(on) == {"cadence": 6, "evidence": 0, "watermark": 0}
    assert _released_by(off) == {"cadence": 0, "evidence": 6, "watermark": 0}
    # with its fixes, not the next tick's (on evidence: a record past 0.2k + 0.05 s)
    assert done[:5] == [1, 2, 3, 4, 5] and evidence[:5] == [0, 1, 2, 3, 4]
    # b stops: tick 6 waits for it until its partition (a at 1.37 s) is past the time b's
    # next fix was due by (0.99 + 1.5 * 0.2 s), then goes out with tick 7 at once
    assert done[5:] == [5, 7] and evidence[5:] == [5, 6]
    # the same tick for every record either way: a vehicle's first two fixes count a tick
    # after their own (its cadence is not known yet), later ones at their own
    assert ticks == {**evidence_ticks, ("a", 1.37): 7}
    assert (ticks[("a", 0.17)], ticks[("a", 0.37)]) == (2, 3)
    assert all(ticks[("a", round(0.2 * k - 0.03, 2))] == k for k in range(3, 8))


def test_a_fix_sooner_than_its_cadence_counts_a_tick_later_and_never_overtakes_the_next():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    # every 0.4 s, then 0.05 s after (half an interval not passed: unexpected), then again
    adm.admit(_batch(("a", 0.05), ("a", 0.45), ("a", 0.5), ("a", 0.55)), 0, None, None)
    adm.finish()
    rel = adm.release(adm.flush_bound() or 0)
    assert rel is not None
    base = round(T0 / 0.2)
    got = [(round(t - T0, 2), k - base) for t, k in zip(rel.recs["ts"].tolist(),
                                                       rel.ticks.tolist(), strict=True)]
    # 0.5 s counts at tick 4, and 0.55 s (expected, own tick 3) keeps behind it
    assert got == [(0.05, 2), (0.45, 4), (0.5, 4), (0.55, 4)]


def test_a_forgotten_vehicle_holds_nothing_and_the_others_keep_their_cadence():
    def feed(c: Cadence, vehicles: list[str], t: float) -> list[int]:
        ts = np.full(len(vehicles), T0 + t)
        return c.assign(np.array(vehicles, dtype=object), ts, tick_of(ts, 0.2), ts,
                        np.zeros(len(vehicles), dtype=np.int64)).tolist()

    kept, full = Cadence(0.2, 0.05), Cadence(0.2, 0.05)
    for t in (0.15, 0.35):
        feed(kept, ["x", "y", "z"], t)
        feed(full, ["x", "y", "z"], t)
    kept.forget(lambda v: v != "y")
    assert len(kept) == 2
    # x and z were due in the tick of 0.55 s: expected there, at their own tick, as before
    assert feed(kept, ["x", "z"], 0.55) == feed(full, ["x", "z"], 0.55) == [3 + round(T0 / 0.2)] * 2
    # y, forgotten, no longer holds the tick of 0.55 s; remembered, it does
    top = {0: T0 + 0.55}
    assert kept.complete(top)[0] == full.complete(top)[0] + 1


def test_a_straggler_counts_at_its_partitions_current_tick_and_only_the_watermark_makes_late():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    adm.release(adm.admit(_batch(("a", 0.15), ("a", 0.35)), 0, None, None))
    done = adm.done
    # 0.19 s belongs to a released tick, but the watermark (-0.15 s) had not passed it: it
    # is used, at the tick of the newest fix minus tick_lateness_s (0.30 s: the tick ending
    # at 0.4 s)
    adm.admit(_batch(("c", 0.19)), 2, None, None)
    assert adm.stats["late"] == 0
    rel = adm.release(adm.flush_bound() or 0)
    assert rel is not None and done is not None
    assert dict(zip(rel.ids.tolist(), rel.ticks.tolist(), strict=True)) == \
        {"a": done + 1, "c": done + 1}
    # once the watermark has passed a tick, its records are late
    adm.admit(_batch(*(("a", 0.1 * k) for k in range(5, 21))), 3, None, None)
    adm.admit(_batch(("e", 1.3)), 19, None, None)
    assert adm.stats["late"] == 1


def _drain(arrivals: list[tuple[int, str, float]], cut: int,
           interleave: str) -> tuple[list[tuple[str, float, int]], int]:
    """Feed per-partition queues of (partition, vehicle, ts) interleaved round-robin or
    partition after partition, ``cut`` records per call; the records as released (vehicle,
    event time, tick) and how many were dropped."""
    queues: dict[int, list[tuple[str, float]]] = {}
    for p, v, t in arrivals:
        queues.setdefault(p, []).append((v, t))
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    out: list[tuple[str, float, int]] = []

    def take(rel: Released | None) -> None:
        if rel is not None:
            out.extend((v, round(t - T0, 3), k) for v, t, k in zip(
                rel.ids.tolist(), rel.recs["ts"].tolist(), rel.ticks.tolist(), strict=True))

    pos = dict.fromkeys(queues, 0)
    seq = 0
    order = sorted(queues)
    while any(pos[p] < len(queues[p]) for p in order):
        for p in order:
            if interleave == "sequential" and any(pos[q] < len(queues[q]) for q in order
                                                  if q < p):
                continue
            got = queues[p][pos[p]: pos[p] + cut]
            if not got:
                continue
            pos[p] += len(got)
            left = {q for q in order if pos[q] < len(queues[q])}
            parts = np.full(len(got), p, dtype=np.int64)
            take(adm.release(adm.admit(_batch(*got), seq, parts, left)))
            seq += len(got)
    adm.finish()
    bound = adm.flush_bound()
    if bound is not None:
        take(adm.release(bound))
    return out, adm.stats["late"] + adm.stats["stale"]


def _ticks_by_record(arrivals: list[tuple[int, str, float]], cut: int,
                     interleave: str) -> tuple[dict[tuple[str, float], int], int]:
    """The tick each record was released with, and how many were dropped."""
    released, dropped = _drain(arrivals, cut, interleave)
    return {(v, t): k for v, t, k in released}, dropped


def test_the_tick_of_a_record_depends_on_its_partitions_order_alone():
    rng = np.random.default_rng(4)
    arrivals = []
    for p in range(3):
        # 20 vehicles per partition, each with a fix every 0.5 s (jittered), a few of them
        # delayed by more than tick_lateness_s but less than the allowed lateness
        fixes = [(f"v{p}-{i}", round(0.5 * m + 0.025 * i + rng.uniform(-0.02, 0.02), 3))
                 for m in range(1, 13) for i in range(20)]
        keys = np.array([t + (rng.uniform(0.1, 0.3) if rng.random() < 0.05 else 0.0)
                         for _, t in fixes])
        arrivals += [(p, *fixes[i]) for i in np.argsort(keys, kind="stable").tolist()]
    runs = [_ticks_by_record(arrivals, cut, how)
            for cut in (1, 7, 50, 1000) for how in ("round-robin", "sequential")]
    ticks, dropped = runs[0]
    assert dropped == 0 and len(ticks) == len(arrivals)
    assert all(r == runs[0] for r in runs[1:])
    own = {k: int(np.ceil((T0 + k[1]) / 0.2)) for k in ticks}
    assert all(ticks[k] >= own[k] for k in ticks)
    assert any(ticks[k] > own[k] for k in ticks)  # stragglers count at a later tick


def test_which_records_are_late_depends_on_their_partitions_order_alone():
    """A backlog of several partitions drained at any pace drops the same fixes late: a fix
    is judged against its own partition's newest event time, never against how far the
    other partitions had got (which depends on the fetches)."""
    rng = np.random.default_rng(5)
    arrivals, held_back = [], 0
    for p in range(3):
        # 40 vehicles per partition, each with a fix every 2 s (the partition: one every
        # 0.05 s); 10% held back 0.2-1.5 s, not overtaken by their vehicle's next fix
        fixes = [(f"v{p}-{i}", round(2.0 * m + 0.05 * i, 3))
                 for m in range(1, 8) for i in range(40)]
        delay = np.where(rng.random(len(fixes)) < 0.1, rng.uniform(0.2, 1.5, len(fixes)), 0)
        keys = np.array([t for _, t in fixes]) + delay
        arrivals += [(p, *fixes[i]) for i in np.argsort(keys, kind="stable").tolist()]
        held_back += int((delay > 0).sum())
    runs = [_ticks_by_record(arrivals, cut, how)
            for cut in (1, 13, 200, 5000) for how in ("round-robin", "sequential")]
    ticks, late = runs[0]
    assert 0 < late < held_back and len(ticks) + late == len(arrivals)
    assert all(r == runs[0] for r in runs[1:])


def test_the_release_order_does_not_depend_on_how_partitions_interleave():
    """Records of one tick with the same event time, from different partitions (fleets on
    synchronised clocks report on the same instants), come out in the same order however
    the polls interleaved the partitions: that order decides the vehicle stage's sub-steps,
    and so the alerts."""
    arrivals = [(p, f"v{p}-{i}", 0.5 * m) for m in range(1, 9) for p in range(3)
                for i in range(10)]
    runs = [_drain(arrivals, cut, how)
            for cut in (1, 4, 30, 1000) for how in ("round-robin", "sequential")]
    released, dropped = runs[0]
    assert dropped == 0 and len(released) == len(arrivals)
    assert all(r == runs[0] for r in runs[1:])


def test_a_synchronised_slow_feed_has_the_ticks_nobody_is_due_in_out_with_its_fixes():
    """Vehicles reporting at the same whole seconds send nothing between them: the ticks
    before the next due fix go out with the fixes, not with the next second's records."""
    on, off = (Admission(c, wall_clock=lambda: T0)
               for c in (CONFIG, dataclasses.replace(CONFIG, release_on_cadence=False)))
    base = round(T0 / 0.2)
    for t in (1.0, 2.0, 3.0):
        for adm in (on, off):
            adm.release(adm.admit(_batch(("a", t), ("b", t)), int(t), None, None))
    # due again 0.5 s after 3.0 s: the ticks ending at 3.2 and 3.4 s are out (tick 17);
    # on evidence only, nothing after 3.0 s (tick 15) before a record past it came
    assert (on.done - base, off.done - base) == (17, 14)  # type: ignore[operator]


def test_a_record_after_the_look_ahead_counts_after_it_however_the_input_is_cut():
    """A new vehicle's first fixes, arriving after ticks went out ahead of its own, count
    after its partition's look-ahead: in a tick not yet out, the same one whatever the
    batches and the interleaving of partitions."""
    arrivals = []
    for p in range(2):
        for m in range(1, 6):
            arrivals += [(p, f"v{p}-{i}", float(m)) for i in range(5)]
            if m >= 3:  # a new vehicle each second, 0.1 s after the others
                arrivals.append((p, f"new{p}-{m}", m + 0.1))
    runs = [_ticks_by_record(arrivals, cut, how)
            for cut in (1, 3, 6, 100) for how in ("round-robin", "sequential")]
    ticks, dropped = runs[0]
    assert dropped == 0 and len(ticks) == len(arrivals)
    assert all(r == runs[0] for r in runs[1:])
    base = round(T0 / 0.2)
    # the fleet's fixes at 3.0 s let ticks up to 3.4 s out (due again at 3.5 s): the new
    # vehicle at 3.1 s counts in the tick ending at 3.6 s, not its own (3.2 s)
    assert ticks[("new0-3", 3.1)] - base == 18
    assert ticks[("v0-0", 4.0)] - base == 20  # expected fixes keep their own tick


def test_a_faster_vehicle_keeps_its_partitions_look_ahead_at_hand():
    """Beside a vehicle reporting every 0.2 s, the ticks of slow vehicles' silence are not
    free, and a new vehicle's first fix counts a tick after its own, not after theirs."""
    def first_fix_tick(with_fast: bool) -> int:
        c = Cadence(0.2, 0.05)
        for k in range(1, 31):  # slow: every 1.0 s; fast: every 0.2 s
            t = round(0.2 * k, 1)
            ids = ([f"slow{i}" for i in range(3)] if k % 5 == 0 else []) + (
                ["fast"] if with_fast else [])
            if ids:
                ts = np.full(len(ids), T0 + t)
                c.assign(np.array(ids, dtype=object), ts, tick_of(ts, 0.2), ts,
                         np.zeros(len(ids), dtype=np.int64))
        ts = np.array([T0 + 6.1])
        return int(c.assign(np.array(["new"], dtype=object), ts, tick_of(ts, 0.2), ts,
                            np.zeros(1, dtype=np.int64))[0] - round(T0 / 0.2))

    # the slow vehicles alone are due again 0.5 s after 6.0 s: ticks to 6.4 s may go out,
    # and the new vehicle at 6.1 s counts after them; beside the fast one, a tick after
    # its own (6.2 s)
    assert (first_fix_tick(False), first_fix_tick(True)) == (33, 32)


def test_restored_vehicles_give_their_partition_the_look_ahead_of_an_uninterrupted_run():
    ids = np.array([f"v{i}" for i in range(4)], dtype=object)
    zero = np.zeros(4, dtype=np.int64)
    run = Cadence(0.2, 0.05)
    for t in (1.0, 2.0, 3.0):
        ts = np.full(4, T0 + t)
        run.assign(ids, ts, tick_of(ts, 0.2), ts, zero)
    restored = Cadence(0.2, 0.05)
    restored.remember(ids.tolist(), [T0 + 2.0] * 4, [T0 + 3.0] * 4, zero.tolist())
    top = {0: T0 + 3.0}
    assert restored.complete(top) == run.complete(top) == {0: round(T0 / 0.2) + 17}
    ts = np.array([T0 + 3.1])  # a new vehicle: after the look-ahead either way
    new = [c.assign(np.array(["new"], dtype=object), ts, tick_of(ts, 0.2), ts, zero[:1])
           for c in (run, restored)]
    assert new[0].tolist() == new[1].tolist() == [round(T0 / 0.2) + 18]


def test_records_whose_fronts_are_out_of_order_are_assigned_near_their_own_ticks():
    """Held rows are admitted with their own times as their partition's front, in no
    order: the look-ahead's window takes them as they come (it indexed past its end)."""
    rng = np.random.default_rng(2)
    c = Cadence(0.1, 0.05)
    ids = np.array([f"v{i}" for i in range(50)], dtype=object)
    for k in range(1, 30):
        ts = T0 + k + rng.uniform(-0.5, 0.5, 50)
        own = tick_of(ts, 0.1)
        ticks = c.assign(ids, ts, own, ts, np.zeros(50, dtype=np.int64))
        assert (ticks >= own).all() and (ticks <= own.max() + 11).all()


def test_a_partition_with_records_to_deliver_holds_the_release_and_an_idle_one_does_not():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    zero, one = np.zeros(10, np.int64), np.ones(10, np.int64)
    fast = _batch(*(("a", 0.1 * k) for k in range(1, 11)))
    assert adm.admit(fast, 0, zero, {0, 1}) < 0  # partition 1 not seen yet: nothing out
    assert len(adm.release(adm.admit(_batch(*(("b", 0.1 * k) for k in range(1, 11))), 10,
                                     one, {0, 1})).ids) >= 16  # type: ignore[union-attr]
    # partition 1 stops delivering (no lag): it holds the release until it trails the
    # newest event time by more than the allowed lateness
    more = _batch(*(("a", 1.0 + 0.1 * k) for k in range(1, 4)))
    upto = adm.admit(more, 20, zero[:3], set())
    assert upto == adm.done  # 1.3 s trails 1.0 s by 0.3 s: still held at partition 1
    later = _batch(*(("a", 1.3 + 0.1 * k) for k in range(1, 5)))
    assert adm.admit(later, 23, zero[:4], set()) > adm.done  # idle now


def test_a_resumed_admission_tells_late_records_from_released_ticks():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    tick = int(np.ceil((T0 + 1.0) / 0.2))
    adm.resume(tick, tick - 3)
    adm.admit(_batch(("a", 0.3), ("b", 0.9), ("c", 1.3)), 0, None, None)
    assert adm.stats["late"] == 1  # 0.3 s is behind the restored watermark; 0.9 s is not
    rel = adm.release(adm.flush_bound() or 0)
    assert rel is not None and rel.ticks.min() > tick  # nothing lands in a released tick


def test_late_stale_and_future_are_dropped_and_counted():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
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
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    fast = _batch(*(("a", 0.1 * k) for k in range(1, 31)))  # 0.1 .. 3.0 s, seq 0-29
    adm.release(adm.admit(fast, 0, np.zeros(30, dtype=np.int64), {1}))
    assert adm.done is None  # partition 1 not seen yet: no watermark, nothing released
    slow = _batch(*(("b", 0.1 * k) for k in range(1, 11)))  # 0.1 .. 1.0 s, seq 30-39
    rel = adm.release(adm.admit(slow, 30, np.ones(10, dtype=np.int64), {1}))
    # b reports every 0.1 s: its next fix (1.1 s) is due after the tick ending at 1.0 s,
    # so that tick is out with b's fix at 1.0 s (stream/cadence.py)
    assert rel is not None and adm.done == round(T0 / 0.2) + 5
    # overall, seq 10 (a at 1.1 s) waits; partition 1 has nothing waiting
    assert adm.min_pending_seq == 10
    assert adm.pending_by_partition() == {0: 10}
    rel = adm.release(adm.admit(_batch(("b", 2.9)), 40, np.ones(1, dtype=np.int64), set()))
    # b at 2.9 s jumps ahead of its partition (held until confirmed): partition 1 shows
    # 1.0 s, yet the watermark (3.0 - 0.5 s) releases the ticks to 2.4 s
    assert rel is not None and adm.pending_by_partition() == {0: 24, 1: 40}


def test_the_changelog_position_keeps_buffered_records_from_being_late_after_a_restart():
    adm = Admission(CONFIG, wall_clock=lambda: T0)
    zero, one = np.zeros(1, np.int64), np.ones(1, np.int64)
    fast = _batch(*(("a", t) for t in (0.1, 0.3, 0.5, 0.7, 0.9, 1.08)))
    adm.release(adm.admit(fast, 0, np.zeros(6, np.int64), {0, 1}))
    adm.release(adm.admit(_batch(*(("b", 0.1 * k) for k in range(1, 7))), 6,
                          np.ones(6, np.int64), {0, 1}))
    # 0.63 s behind its partition (1.08 s): not late (its tick, ending at 0.6 s, is not
    # before 1.08 - 0.5 s); it waits for the tick of 1.08 - 0.05 s (ending at 1.2 s)
    adm.release(adm.admit(_batch(("c", 0.45)), 12, zero, {0, 1}))
    adm.release(adm.admit(_batch(("a", 1.15)), 13, zero, {0, 1}))
    adm.release(adm.admit(_batch(*(("b", t) for t in (0.7, 0.8, 0.9, 1.0, 1.1, 1.15))), 14,
                          np.ones(6, np.int64), {0, 1}))
    own = int(np.ceil((T0 + 0.45) / 0.2))
    assert adm.stats["late"] == 0 and "c" in _pending_ids(adm)
    assert adm._late_upto is not None and adm._late_upto >= own  # the watermark passed it
    meta = adm.meta()
    assert meta["late_upto"] < own
    again = Admission(CONFIG, wall_clock=lambda: T0)
    again.resume(meta["done"], meta["late_upto"])
    again.admit(_batch(("c", 0.45)), 0, one, {0, 1})
    assert again.stats["late"] == 0 and len(again) == 1


def _pending_ids(adm: Admission) -> set[str]:
    return {str(v) for c in adm._pending.chunks for v in c["ids"]}
