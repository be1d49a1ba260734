"""Alert episodes: confirmation, one alert per episode, escalation, clearing, deterministic ids,
snapshot/restore, eviction, and the alert message contract."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest

from trajstream.errors import ConfigError
from trajstream.model.predictors import PathSpec
from trajstream.stream.episodes import (
    SCHEMA,
    EpisodeConfig,
    EpisodeTracker,
    alert_id,
    alert_key,
    alert_message,
    conflict_pairs,
)
from trajstream.stream.risk import CRITICAL, WARNING, Conflicts, Fleet

T0 = 1_764_081_000.0
DT = 0.2


def conflicts(severities: list[int], ttc: float = 2.0) -> Conflicts:
    m = len(severities)
    return Conflicts(
        a=np.arange(m, dtype=np.int64), b=np.arange(m, dtype=np.int64) + 100,
        ttc=np.full(m, ttc), min_distance=np.full(m, 1.25), cpa_t=np.full(m, T0 + ttc),
        cpa_x=np.full(m, 10.0), cpa_y=np.full(m, -3.0), severity=np.array(severities, np.int8),
    )


def feed(tracker: EpisodeTracker, script: list[dict[tuple[str, str], int]], start: int = 0):
    """Tick k of ``script`` maps pairs to severity; returns [(tick, decision)]."""
    out = []
    for k, tick in enumerate(script, start=start):
        pairs = list(tick)
        for d in tracker.update(T0 + k * DT, pairs, conflicts([tick[p] for p in pairs])):
            out.append((k, d))
    return out


AB = ("veh-a", "veh-b")
CD = ("veh-c", "veh-d")


def test_single_tick_conflict_never_alerts() -> None:
    got = feed(EpisodeTracker(), [{AB: WARNING}, {}, {AB: CRITICAL}, {}, {}])
    assert got == []


def test_alert_on_second_consecutive_assessment_then_deduplicated() -> None:
    got = feed(EpisodeTracker(), [{AB: WARNING}] * 20)
    assert [(k, d.severity) for k, d in got] == [(1, WARNING)]
    d = got[0][1]
    assert (d.vehicle_a, d.vehicle_b) == AB
    assert d.ts == pytest.approx(T0 + DT) and d.episode_start == d.ts
    assert d.ttc == 2.0 and d.min_distance == 1.25 and (d.cpa_x, d.cpa_y) == (10.0, -3.0)


def test_confirm_ticks_one_alerts_at_once() -> None:
    got = feed(EpisodeTracker(EpisodeConfig(confirm_ticks=1)), [{AB: CRITICAL}, {AB: CRITICAL}])
    assert [(k, d.severity) for k, d in got] == [(0, CRITICAL)]


def test_escalation_alerts_again_with_a_new_id_but_not_after_a_dip() -> None:
    script = [{AB: WARNING}] * 3 + [{AB: CRITICAL}] * 2 + [{AB: WARNING}] * 2 + [{AB: CRITICAL}]
    got = feed(EpisodeTracker(), script)
    assert [(k, d.severity) for k, d in got] == [(1, WARNING), (3, CRITICAL)]
    first, second = got[0][1], got[1][1]
    assert first.alert_id != second.alert_id
    assert second.episode_start == first.episode_start


def test_first_alert_carries_the_current_severity() -> None:
    got = feed(EpisodeTracker(), [{AB: WARNING}, {AB: CRITICAL}, {AB: CRITICAL}])
    assert [(k, d.severity) for k, d in got] == [(1, CRITICAL)]


def test_episode_survives_short_gaps_and_closes_after_clear_time() -> None:
    cfg = EpisodeConfig(clear_after_s=1.0)  # 5 ticks
    script = [{AB: WARNING}] * 3 + [{}] * 4 + [{AB: WARNING}] * 3  # gap 0.8 s: same episode
    got = feed(EpisodeTracker(cfg), script)
    assert [k for k, _ in got] == [1]
    script = [{AB: WARNING}] * 3 + [{}] * 5 + [{AB: WARNING}] * 3  # gap 1.0 s: closed
    got = feed(EpisodeTracker(cfg), script)
    assert [k for k, _ in got] == [1, 9]
    assert got[0][1].alert_id != got[1][1].alert_id
    assert got[1][1].episode_start == pytest.approx(T0 + 9 * DT)


def test_pairs_are_independent() -> None:
    script = [{AB: WARNING}, {AB: WARNING, CD: CRITICAL}, {AB: CRITICAL, CD: CRITICAL}]
    got = feed(EpisodeTracker(), script)
    assert [(k, d.vehicle_a, d.severity) for k, d in got] == [
        (1, "veh-a", WARNING), (2, "veh-a", CRITICAL), (2, "veh-c", CRITICAL)]
    assert [d.conflict for _, d in got] == [0, 0, 1]


def test_alert_id_is_a_hash_of_pair_start_and_severity() -> None:
    start = T0 + 1.2341
    want = hashlib.sha1(f"veh-a|veh-b|{round(start * 1000)}|critical".encode()).hexdigest()[:20]
    assert alert_id("veh-a", "veh-b", start, CRITICAL) == want
    assert alert_id("veh-a", "veh-b", start + 0.0001, CRITICAL) == want  # ms resolution
    assert alert_id("veh-a", "veh-b", start, WARNING) != want
    assert alert_id("veh-a", "veh-c", start, CRITICAL) != want
    assert alert_id("veh-a", "veh-b", start + 0.2, CRITICAL) != want


def test_replay_gives_identical_ids() -> None:
    rng = np.random.default_rng(3)
    pairs = [AB, CD, ("veh-a", "veh-d")]
    script = [{p: int(rng.integers(1, 3)) for p in pairs if rng.random() < 0.6} for _ in range(80)]
    one = [(k, d.alert_id) for k, d in feed(EpisodeTracker(), script)]
    two = [(k, d.alert_id) for k, d in feed(EpisodeTracker(), script)]
    assert one == two and len(one) >= 3
    assert len({i for _, i in one}) == len(one)


def test_snapshot_restore_continues_like_an_uninterrupted_tracker() -> None:
    script = [{AB: WARNING, CD: WARNING}] * 4 + [{AB: CRITICAL, CD: WARNING}] * 3 + [{}] * 12
    whole = feed(EpisodeTracker(), script)
    first = EpisodeTracker()
    before = feed(first, script[:4])
    snap = orjson.loads(orjson.dumps(first.snapshot()))  # plain data, survives JSON
    assert set(snap) == {"veh-a", "veh-c"}
    resumed = EpisodeTracker()
    resumed.restore(snap)
    after = feed(resumed, script[4:], start=4)
    assert [(k, d.alert_id) for k, d in before + after] == [(k, d.alert_id) for k, d in whole]
    assert len(resumed) == 0  # all episodes cleared by the end


def test_snapshot_subset_restore_replaces_and_changed_vehicles() -> None:
    tr = EpisodeTracker()
    feed(tr, [{AB: WARNING, CD: WARNING}] * 2)
    assert tr.changed_vehicles() == {"veh-a", "veh-c"}
    assert tr.changed_vehicles() == set()
    assert set(tr.snapshot(["veh-c", "veh-x"])) == {"veh-c"}
    ep = tr.snapshot()["veh-a"]["episodes"]["veh-b"]
    assert ep == {"start": pytest.approx(T0 + DT), "last": pytest.approx(T0 + DT),
                  "severity": WARNING}
    tr.restore({"veh-a": {"episodes": {}}})  # an empty state removes the vehicle's episodes
    assert set(tr.snapshot()) == {"veh-c"}
    with pytest.raises(ValueError):
        tr.restore({"veh-z": {"episodes": {"veh-a": {"start": 0, "last": 0, "severity": 1}}}})


def test_forget_drops_episodes_of_evicted_vehicles() -> None:
    tr = EpisodeTracker()
    feed(tr, [{AB: WARNING, CD: WARNING}] * 2)
    tr.changed_vehicles()
    tr.forget(["veh-b"])
    assert set(tr.snapshot()) == {"veh-c"}
    assert tr.changed_vehicles() == {"veh-a"}
    got = feed(tr, [{AB: WARNING, CD: WARNING}] * 2, start=2)
    assert [(k, d.vehicle_a) for k, d in got] == [(3, "veh-a")]  # a fresh episode for a|b


def test_forgotten_vehicles_leave_the_change_set() -> None:
    """Without a changelog nobody collects the changed vehicles: forgetting the vehicles
    that are gone must bound the set (it kept one id per vehicle ever in a conflict)."""
    tr = EpisodeTracker()
    for n in range(200):  # a churning fleet: every pair of vehicles is new, then evicted
        pair = (f"veh-{2 * n:04d}", f"veh-{2 * n + 1:04d}")
        feed(tr, [{pair: WARNING}] * 2 + [{}] * 12, start=14 * n)
        tr.forget(pair)
    assert len(tr) == 0
    assert tr.changed_vehicles() == set()
    feed(tr, [{AB: WARNING, CD: WARNING}] * 2, start=14 * 200)
    tr.forget(["veh-b", "veh-c"])  # a's episode ended with b: still a change to write
    assert tr.changed_vehicles() == {"veh-a"}


def test_update_checks_its_input() -> None:
    tr = EpisodeTracker()
    with pytest.raises(ValueError):
        tr.update(T0, [("veh-b", "veh-a")], conflicts([WARNING]))
    with pytest.raises(ValueError):
        tr.update(T0, [AB, CD], conflicts([WARNING]))


def test_episode_config_validation() -> None:
    with pytest.raises(ConfigError):
        EpisodeConfig(clear_after_s=-1.0)
    with pytest.raises(ConfigError):
        EpisodeConfig(clear_after_s=float("nan"))
    with pytest.raises(ConfigError):
        EpisodeConfig(confirm_ticks=0)


def test_alert_key_orders_the_pair() -> None:
    assert alert_key("veh-a", "veh-b") == b"veh-a|veh-b"
    assert alert_key("veh-b", "veh-a") == b"veh-a|veh-b"


def test_conflict_pairs_orders_by_id_not_index() -> None:
    c = conflicts([WARNING, CRITICAL])
    c = Conflicts(np.array([0, 1]), np.array([2, 3]), *(getattr(c, f) for f in
                  ("ttc", "min_distance", "cpa_t", "cpa_x", "cpa_y", "severity")))
    pairs, ia, ib = conflict_pairs(c, ["v9", "v1", "v5", "v7"])
    assert pairs == [("v5", "v9"), ("v1", "v7")]
    assert ia.tolist() == [2, 1] and ib.tolist() == [0, 3]


def test_alert_message_follows_the_contract() -> None:
    spec = PathSpec()
    n, p = 3, spec.points
    paths = np.stack([np.linspace(1, 20, p) + 0.004, np.full(p, 2.0)], -1)[None].repeat(n, 0)
    fleet = Fleet(
        ts=np.array([T0 - 0.05, T0 - 0.1, T0]), x=np.array([0.123456, 50.0, 9.0]),
        y=np.array([2.0, 2.5, 9.0]), speed=np.array([10.0, 12.0, 0.0]),
        heading=np.array([0.0, np.pi, 1.0]), yaw_rate=np.zeros(n), accel=np.zeros(n),
        length=np.full(n, 4.5), width=np.full(n, 1.8), paths=paths,
    )
    c = Conflicts(np.array([0]), np.array([1]), np.array([1.4]), np.array([3.21987]),
                  np.array([T0 + 1.4]), np.array([25.004]), np.array([2.25]),
                  np.array([CRITICAL], np.int8))
    pairs, ia, ib = conflict_pairs(c, ["veh-9", "veh-10", "veh-3"])
    tr = EpisodeTracker(EpisodeConfig(confirm_ticks=1))
    (d,) = tr.update(T0, pairs, c)
    msg = alert_message(d, fleet, int(ia[0]), int(ib[0]), spec, "cv")
    assert msg["schema"] == SCHEMA == "trajstream.alert/v1"
    assert msg["alert_id"] == d.alert_id and len(d.alert_id) == 20
    assert (msg["vehicle_a"], msg["vehicle_b"]) == ("veh-10", "veh-9")
    assert msg["severity"] == "critical"
    assert msg["ts"] == pytest.approx(T0) and msg["ttc"] == 1.4 and msg["min_distance"] == 3.22
    assert msg["closest_approach"] == {"ts": pytest.approx(T0 + 1.4), "x": 25.0, "y": 2.25}
    a, b = msg["vehicles"]["a"], msg["vehicles"]["b"]
    assert a["state"] == {"ts": pytest.approx(T0 - 0.1), "x": 50.0, "y": 2.5, "speed": 12.0,
                          "heading": pytest.approx(3.1416)}
    assert b["state"]["x"] == 0.12 and b["state"]["speed"] == 10.0
    assert len(a["path"]) == p and a["path"][0] == [1.0, 2.0]
    assert msg["model"] == "cv" and msg["dt"] == spec.step_s
    again = orjson.loads(orjson.dumps(msg))
    assert again["vehicles"]["a"]["path"][-1] == [20.0, 2.0]


def _update(tracker: EpisodeTracker, t: float, tick: dict[tuple[str, str], int], ttc: float,
            partial: bool = False) -> list[tuple[str, int]]:
    pairs = list(tick)
    got = tracker.update(T0 + t, pairs, conflicts([tick[p] for p in pairs], ttc),
                         partial=partial)
    return [(d.vehicle_a, d.severity) for d in got]


def test_a_partial_assessment_confirms_a_near_conflict_as_a_warning_and_escalates_none():
    tr = EpisodeTracker()
    assert _update(tr, 0.0, {AB: CRITICAL}, ttc=1.0) == []  # whole fleet: found
    # the next tick, only the watched vehicles: confirmed, but as a warning
    assert _update(tr, 0.1, {AB: CRITICAL}, ttc=0.9, partial=True) == [("veh-a", WARNING)]
    assert _update(tr, 0.2, {AB: CRITICAL}, ttc=0.8) == [("veh-a", CRITICAL)]  # whole fleet
    # an open episode neither escalates nor alerts again at a partial assessment
    tr = EpisodeTracker()
    _update(tr, 0.0, {CD: WARNING}, ttc=1.0)
    assert _update(tr, 0.1, {CD: WARNING}, ttc=0.9, partial=True) == [("veh-c", WARNING)]
    assert _update(tr, 0.3, {CD: CRITICAL}, ttc=0.7, partial=True) == []
    assert _update(tr, 0.4, {CD: CRITICAL}, ttc=0.6) == [("veh-c", CRITICAL)]


def test_a_conflict_far_from_contact_waits_for_the_next_whole_fleet_assessment():
    tr = EpisodeTracker(EpisodeConfig(early_confirm_ttc_s=2.5))
    assert _update(tr, 0.0, {AB: WARNING}, ttc=3.0) == []
    assert _update(tr, 0.1, {AB: WARNING}, ttc=2.9, partial=True) == []  # still pending
    assert tr.watched() == {"veh-a", "veh-b"}
    assert _update(tr, 0.2, {AB: WARNING}, ttc=2.8) == [("veh-a", WARNING)]
    # gone at the partial assessment: the streak breaks as at any assessment
    tr = EpisodeTracker()
    _update(tr, 0.0, {AB: WARNING}, ttc=1.0)
    assert _update(tr, 0.1, {}, ttc=1.0, partial=True) == []
    assert _update(tr, 0.2, {AB: WARNING}, ttc=0.8) == []
    with pytest.raises(ConfigError):
        EpisodeConfig(early_confirm_ttc_s=-1.0)


def test_watched_are_the_unconfirmed_pairs_and_their_vehicles_open_episodes():
    tr = EpisodeTracker()
    feed(tr, [{AB: CRITICAL, CD: WARNING}, {AB: CRITICAL, CD: WARNING}])  # both open
    assert tr.watched() == set()  # nothing awaits confirmation: no partial assessment
    be = ("veh-b", "veh-e")  # e runs into the wreck of a and b
    tr.update(T0 + 2 * DT, [AB, be, CD], conflicts([CRITICAL, WARNING, WARNING]))
    # e's pending pair, and a: the other vehicle of b's open episode; not c and d
    assert tr.watched() == {"veh-a", "veh-b", "veh-e"}


@pytest.mark.parametrize("order", ["c-d first", "b-c first"])
def test_watched_do_not_depend_on_the_order_conflicts_were_found(order):
    """A restore from a changelog rebuilds the unconfirmed conflicts in another order than
    they were found: the watched vehicles (what a partial assessment looks at) must not
    change with it, or a restarted processor alerts differently."""
    tr = EpisodeTracker()
    feed(tr, [{AB: CRITICAL}, {AB: CRITICAL}])  # a and b: an open episode
    bc = ("veh-b", "veh-c")
    new = [CD, bc] if order == "c-d first" else [bc, CD]
    tr.update(T0 + 2 * DT, [AB, *new], conflicts([CRITICAL, WARNING, WARNING]))
    # the vehicles of both unconfirmed pairs, and a: the other vehicle of b's open episode
    assert tr.watched() == {"veh-a", "veh-b", "veh-c", "veh-d"}
