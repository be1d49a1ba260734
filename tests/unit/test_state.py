"""StateStore: slots, growth, gap reset, TTL eviction, deterministic reuse."""

from __future__ import annotations

import numpy as np
import pytest

from trajstream.stream.state import StateStore


def _fix(store: StateStore, ids: list[str], ts: float | list[float], x: float = 0.0,
         y: float = 0.0):
    slots, new = store.slots_for(ids)
    n = len(ids)
    t = np.broadcast_to(np.asarray(ts, dtype=np.float64), (n,)).copy()
    xs = np.full(n, x) + np.arange(n) * 10.0
    nan = np.full(n, np.nan)
    kin, started = store.update(slots, t, xs, np.full(n, y), nan, nan, np.full(n, 4.5),
                                np.full(n, 1.8))
    return slots, new, kin, started


def test_slots_are_allocated_in_order_and_stable():
    store = StateStore(4)
    slots, new = store.slots_for(["a", "b", "a", "c"])
    assert slots.tolist() == [0, 1, 0, 2]
    assert new.tolist() == [True, True, False, True]
    again, new2 = store.slots_for(["c", "a"])
    assert again.tolist() == [2, 0] and not new2.any()
    assert len(store) == 3 and "b" in store and "z" not in store
    assert store.lookup(["b", "z"]).tolist() == [1, -1]


def test_arrays_grow_and_keep_contents():
    store = StateStore(2, state_dim=3, points=5)
    ids = [f"v{i}" for i in range(2)]
    slots, _, _, _ = _fix(store, ids, 100.0)
    store.set_prediction(slots, np.full(2, 100.0), np.ones((2, 5, 2)), np.full((2, 3), 7.0))
    many = [f"v{i}" for i in range(50)]
    slots, new, _, _ = _fix(store, many, 100.5)
    assert store.capacity >= 50 and store.kin.capacity >= 50
    assert new.sum() == 48
    assert store.rec.shape == (store.capacity, 3)
    np.testing.assert_array_equal(store.rec[:2], 7.0)  # survived the growth
    assert np.all(store.rec[2:50] == 0.0)
    assert store.fixes[0] == 2 and store.fixes[10] == 1


def test_gap_resets_the_track_but_not_the_slot():
    store = StateStore(8, state_dim=2, reset_gap_s=5.0)
    slots, _, kin, started = _fix(store, ["a"], 100.0)
    assert started.tolist() == [True] and kin.first.tolist() == [True]
    store.set_prediction(slots, np.array([100.0]), np.zeros((1, 20, 2)), np.ones((1, 2)))
    _, _, kin, started = _fix(store, ["a"], 100.1, x=1.0)
    assert started.tolist() == [False] and kin.dt[0] == pytest.approx(0.1)
    assert store.rec[slots[0]].tolist() == [1.0, 1.0]
    # a gap longer than reset_gap_s starts over: zero state, first fix again
    _, _, kin, started = _fix(store, ["a"], 106.0, x=50.0)
    assert started.tolist() == [True] and kin.first.tolist() == [True]
    assert store.rec[slots[0]].tolist() == [0.0, 0.0]
    assert store.since_ts[slots[0]] == 106.0 and store.fixes[slots[0]] == 1
    assert store.resets == 1
    assert store.slot_of("a") == slots[0]
    # exactly reset_gap_s is not a gap
    _, _, _, started = _fix(store, ["a"], 111.0)
    assert started.tolist() == [False]


def test_eviction_by_event_time_frees_and_reuses_slots_deterministically():
    store = StateStore(8)
    _fix(store, ["a", "b", "c", "d"], 100.0)
    _fix(store, ["b", "d"], 120.0)
    assert store.active(110.0).tolist() == [1, 3]
    evicted, slots = store.evict(100.0)  # at or before 100.0
    assert evicted == ["a", "c"] and slots.tolist() == [0, 2]
    assert len(store) == 2 and "a" not in store
    assert not store.used[0] and np.isnan(store.last_ts[0])
    assert store.evictions == 2
    # freed slots are reused lowest first, then new ones are appended
    slots, new = store.slots_for(["e", "f", "g"])
    assert slots.tolist() == [0, 2, 4] and new.all()
    # a reused slot starts clean
    assert store.fixes[0] == 0 and np.isnan(store.path_ts[0])
    assert store.evict(99.0)[0] == []


def test_evict_nothing_and_active_on_empty_store():
    store = StateStore(4)
    ids, slots = store.evict(1e12)
    assert ids == [] and slots.size == 0
    assert store.active(0.0).size == 0


def test_same_calls_give_same_layout():
    def run() -> list[int]:
        store = StateStore(2)
        out = []
        for step in range(30):
            ids = [f"v{(step * 7 + i) % 13}" for i in range(4)]
            ids = list(dict.fromkeys(ids))
            slots, _, _, _ = _fix(store, ids, 100.0 + step)
            store.evict(100.0 + step - 3)
            out.extend(slots.tolist())
        return out

    assert run() == run()


def test_rows_carry_the_speed_now_and_rows_without_it_still_load():
    """Positions only, braking, in 0.3 m of sideways noise (the fit then spans its whole
    window): the speed at the latest fix is not the fitted one. It goes into the checkpoint
    row; a row written before it was kept (one value shorter) loads with the fitted speed in
    its place."""
    store = StateStore(4, points=5)
    for k in range(20):
        t = 0.1 * k
        _fix(store, ["a"], 100.0 + t, x=15.0 * t - 1.5 * t * t,  # 15 m/s, braking at 3 m/s^2
             y=0.3 * (-1) ** k)
    slot = store.lookup(["a"])
    k = store.kin
    assert k.speed_now[slot][0] < k.speed[slot][0] - 1.0
    rows, rec = store.export_rows(slot)
    assert rows.shape[1] == store.row_width()
    for width, expect in ((rows.shape[1], k.speed_now[slot][0]),
                          (rows.shape[1] - 1, k.speed[slot][0])):
        other = StateStore(4, points=5)
        got = other.import_rows(["a"], [0], rows[:, :width], rec)
        assert other.kin.speed_now[got][0] == expect
        assert other.kin.speed[got][0] == k.speed[slot][0]
